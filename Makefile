# Two commands do all set-up on a fresh machine: `make serve` and `make test`.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 9000
DATA_DIR ?= .kindling

.PHONY: serve test lint typecheck bench clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Kindling needs Python >= 3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	@# libseccomp for the sandbox's seccomp filter (Debian's package; usually already there)
	@dpkg -s libseccomp2 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q libseccomp2; } || true
	@# nftables for the function network plane (its `nft` tool; Debian's package)
	@command -v nft >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q nftables >/dev/null || { apt-get update -q && apt-get install -y -q nftables; }; } || true
	@# skopeo reads container images (PackageType Image) from registries and OCI layouts (Debian's package)
	@command -v skopeo >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -q skopeo >/dev/null || { apt-get update -q && apt-get install -y -q skopeo; }; } || true
	$(BIN)/pip install -q -e .
	@# the AWS SDK Python runtimes carry (pinned in pyproject.toml; kindling/runtimes/sdk.py)
	$(BIN)/python -m kindling.runtimes.sdk
	@# the AWS SDK for JavaScript Node.js runtimes carry (pinned in kindling/runtimes/node/sdk; needs npm)
	$(BIN)/python -m kindling.runtimes.node.sdk
	@touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	@# busybox-static (the test images' runtime) and docker-registry (a registry on loopback for the image tests;
	@# its system service, if the package starts one, is stopped: the tests start their own)
	@{ dpkg -s busybox-static >/dev/null 2>&1 && command -v docker-registry >/dev/null 2>&1; } || { [ "$$(id -u)" = 0 ] && { apt-get install -y -q busybox-static docker-registry >/dev/null || { apt-get update -q && apt-get install -y -q busybox-static docker-registry; }; } && { systemctl disable --now docker-registry >/dev/null 2>&1 || true; }; } || true
	$(BIN)/pip install -q -e '.[test]'
	@# AWS's own Node.js runtime interface client, for tests/test_node.py (built once; never fails the set-up)
	@$(MAKE) -s $(RIC) || echo "aws-lambda-ric could not be built: its test will be skipped" >&2
	@touch $@

# aws-lambda-ric from npm, built as its install scripts build it (aws-lambda-cpp and curl from source: cmake,
# autoconf, automake, libtool and g++; Debian's packages), with Node's headers from the host's node (no download).
RIC_VERSION := 3.3.0
RIC := build/aws-lambda-ric-$(RIC_VERSION)/node_modules/aws-lambda-ric/dist/rapid-client.node
$(RIC):
	@for t in cmake autoreconf libtoolize g++; do command -v $$t >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		apt-get install -y -q cmake autoconf automake libtool g++ >/dev/null; break; }; done
	rm -rf build/aws-lambda-ric-$(RIC_VERSION) && mkdir -p build/aws-lambda-ric-$(RIC_VERSION)
	cd build/aws-lambda-ric-$(RIC_VERSION) && echo '{"private":true}' > package.json && \
		npm install -q --no-audit --no-fund --ignore-scripts aws-lambda-ric@$(RIC_VERSION) && \
		cd node_modules/aws-lambda-ric && sh scripts/preinstall.sh >/dev/null && \
		../.bin/node-gyp rebuild --nodedir=$$(dirname $$(dirname $$(readlink -f $$(command -v node)))) >/dev/null && \
		mkdir -p dist && cp build/Release/rapid-client.node dist/ && rm -rf deps/artifacts build

serve: $(VENV)/.installed
	$(BIN)/kindling serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check kindling tests bench

typecheck: $(VENV)/.test-installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(BIN)/python bench/invoke_latency.py

clean:
	rm -rf $(VENV) .kindling .pytest_cache .mypy_cache .ruff_cache
