"""Lambda's layout and environment inside Kindling's execution environments (issue 13), against the recorded
introspection of real Lambda (``test_introspection_invoke[<runtime>]``), field by field.

Checked for a fresh interpreter (a server with templates off), a zygote's clone (a function's first cold start)
and a template's clone (later cold starts); a provided.al2023 function runs AWS's tutorial bootstrap verbatim;
a wrapper script; and hostile zips (set-id and world-writable modes, symlinks out, a missing or non-executable
bootstrap).
"""

from __future__ import annotations

import base64
import io
import json
import re
import resource
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REGION, ROLE, Server, make_zip, unique
from tests.recorded import recorded

SNAPSHOT = "lambda_runtimes_common"


def _recorded_env(runtime: str) -> dict[str, str]:
    got = recorded(SNAPSHOT, f"test_introspection_invoke[{runtime}]", "invocation_result_payload")
    return dict(got["environment"])


# Values that are placeholders in the recording compare by shape.
SHAPES = {
    "AWS_ACCESS_KEY_ID": r"[A-Z0-9]{16,128}",
    "AWS_SECRET_ACCESS_KEY": r"\S{16,}",
    "AWS_SESSION_TOKEN": r"\S{16,}",
    "AWS_DEFAULT_REGION": re.escape(REGION),
    "AWS_REGION": re.escape(REGION),
    "AWS_LAMBDA_LOG_STREAM_NAME": r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}",
    "_X_AMZN_TRACE_ID": r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01](;Lineage=\S+)?",
}
# Documented exceptions (docs/runtimes.md):
# - AWS_ENDPOINT_URL_<SERVICE>: Kindling's own, so that the SDKs inside call Kindling, not AWS;
# - AWS_LAMBDA_INITIALIZATION_TYPE is "snap-start" in a template's clone (docs/templates.md);
# - provided.al2's recording has AWS_LAMBDA_RUNTIME_API 127.0.0.1:9001 and the X-Ray daemon at 169.254.79.129
#   (an older Lambda); Kindling serves every runtime at 169.254.100.1 as the newer recordings have it.
EXTRA = re.compile(r"AWS_ENDPOINT_URL(_[A-Z0-9_]+)?")
# - _X_AMZN_TRACE_ID in a custom runtime is its runtime client's to set (from the Lambda-Runtime-Trace-Id header),
#   as the recorded one did; AWS's tutorial bootstrap does not.
AL2_OLD = {"AWS_LAMBDA_RUNTIME_API", "AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_ADDRESS"}


def compare_environment(runtime: str, got: dict[str, str], name: str, init_type: str = "on-demand") -> None:
    want = _recorded_env(runtime)
    for key, value in want.items():
        if key == "_X_AMZN_TRACE_ID" and runtime.startswith("provided"):
            continue
        assert key in got, f"{key} missing (Lambda has {value!r})"
        if key in SHAPES:
            assert re.fullmatch(SHAPES[key], got[key]), (key, got[key])
        elif key == "AWS_LAMBDA_INITIALIZATION_TYPE":
            assert got[key] == init_type
        elif runtime == "provided.al2" and key in AL2_OLD:
            assert got[key].startswith("169.254.100.1"), (key, got[key])
        else:
            expected = value.replace("<function-name:1>", name)
            assert got[key] == expected, (key, got[key], expected)
    extra = {k for k in got if k not in want and not EXTRA.fullmatch(k)}
    assert not extra, f"variables Lambda does not set: {sorted(extra)}"


INTROSPECT = r'''
import grp, json, os, pwd, resource, sys, traceback

LIMITS = {n: getattr(resource, n) for n in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_MEMLOCK",
                                            "RLIMIT_STACK")}


def _owner(path):
    st = os.lstat(path)
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = None
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = None
    return {"user": user, "group": group, "mode": oct(st.st_mode & 0o7777)}


def _stale_bytecode():
    """Modules loaded from /var/lang or /var/runtime whose cached bytecode did not match their source (so they were
    compiled at import: environments cannot write caches), and the bootstrap's own code cache."""
    import importlib.util, struct
    import boto3  # noqa: F401 - the SDK the runtime carries, compiled ahead by Kindling
    stale = []
    for m in list(sys.modules.values()):
        src = getattr(m, "__file__", None) or ""
        if not src.endswith(".py") or not src.startswith(("/var/lang/", "/var/runtime/")) or \
                m.__name__ in ("__main__", "kindling_template"):  # (imported by a zygote, off the cold start)
            continue
        try:
            with open(importlib.util.cache_from_source(src), "rb") as f:
                flags, mtime, size = struct.unpack("<III", f.read(16)[4:])
            st = os.stat(src)
            if flags or mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF:
                stale.append(src)
        except OSError:
            stale.append(src)
    st = os.stat("/var/runtime/bootstrap.py")
    with open(importlib.util.cache_from_source("/var/runtime/bootstrap.body.py"), "rb") as f:
        if f.read(64)[len(importlib.util.MAGIC_NUMBER):].split(b"\n")[0] != b"%d:%d" % (st.st_mtime_ns, st.st_size):
            stale.append("bootstrap body")
    return stale


def handler(event, context):
    try:
        json.loads("{")
    except ValueError as e:
        frames = [f.filename for f in traceback.extract_tb(e.__traceback__)]
    me = pwd.getpwuid(os.getuid())
    return {
        "environ": dict(os.environ), "executable": sys.executable, "prefix": sys.prefix,
        "base_prefix": sys.base_prefix, "path": sys.path, "frames": frames,
        "module_files": [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())],
        "code": {n: _owner("/var/task/" + n) for n in sorted(os.listdir("/var/task"))},
        "me": [me.pw_name, me.pw_dir, me.pw_shell], "home": os.path.expanduser("~"),
        "os_release": open("/etc/os-release").read(),
        "limits": {n: list(resource.getrlimit(v)) for n, v in LIMITS.items()},
        "mountinfo": open("/proc/self/mountinfo").read(), "cmdline": open("/proc/self/cmdline").read(),
        "zygote": "kindling_template" in sys.modules, "stale_bytecode": _stale_bytecode(),
    }
'''
AL2023 = 'NAME="Amazon Linux"\nVERSION="2023"'
UNLIMITED = -1  # resource.RLIM_INFINITY
# Lambda's limits (docs/runtimes.md): 1,024 descriptors, 8 MB stack, 64 KiB locked memory. Deliberately
# different: no core dumps; RLIMIT_NPROC unlimited (a host-wide per-user count; the pids cgroup holds 1,024).
# (A host that caps RLIMIT_NPROC without granting CAP_SYS_RESOURCE, as a container may, keeps its cap.)
NPROC = resource.getrlimit(resource.RLIMIT_NPROC)[1]
LIMITS = {"RLIMIT_NOFILE": [1024, 1024], "RLIMIT_STACK": [8 << 20, UNLIMITED], "RLIMIT_MEMLOCK": [65536, 65536],
          "RLIMIT_CORE": [0, 0], "RLIMIT_NPROC": [NPROC, NPROC]}


def check_python_environment(got: dict, name: str, init_type: str = "on-demand") -> None:
    """Everything a python3.12 function sees, as on Lambda (host paths never)."""
    compare_environment("python3.12", got["environ"], name, init_type)
    assert got["executable"] == "/var/lang/bin/python3.12"
    assert got["prefix"] == got["base_prefix"] == "/var/lang"
    assert got["path"][0] == "/var/task" and "/var/runtime" in got["path"]
    assert "/var/lang/lib/python3.12" in got["path"]
    assert all(p.startswith(("/var/task", "/opt", "/var/runtime", "/var/lang")) for p in got["path"]), got["path"]
    assert got["frames"][0] == "/var/task/handler.py", got["stale_bytecode"]
    assert got["frames"][-1] == "/var/lang/lib/python3.12/json/decoder.py", got["frames"]
    assert all(f.startswith(("/var/", "<")) or not f for f in got["frames"] + got["module_files"]), got["frames"]
    assert "/var/lang/bin/python3.12" in got["cmdline"]
    for text in (json.dumps(got["environ"]), got["mountinfo"], got["cmdline"], json.dumps(got["path"])):
        assert "pyenv" not in text and "/root/" not in text
    # the code: the zip's modes (0o644 → 0o444: no write bit; executable kept), owned by a user it can name
    assert got["code"]["handler.py"]["mode"] == "0o444"
    assert got["code"]["run.sh"]["mode"] == "0o555"
    owner = got["code"]["handler.py"]
    assert owner["user"] in ("root", "nobody") and owner["group"] in ("root", "nobody")
    assert got["me"] == ["sbx_user1051", "/home/sbx_user1051", "/sbin/nologin"]
    assert got["os_release"].startswith(AL2023)
    assert got["limits"] == LIMITS
    assert got["stale_bytecode"] == []  # the precompiled stdlib, SDK and bootstrap caches hit


def _invoke(lam, name: str, **event: object) -> tuple[dict, str]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    body = json.loads(out["Payload"].read())
    log = base64.b64decode(out["LogResult"]).decode()
    assert "FunctionError" not in out, (body, log)
    return body, log


def _create(lam, files: dict[str, str | bytes], modes: dict[str, int] | None = None, runtime: str = "python3.12",
            handler: str = "app.handler", **kwargs: object) -> str:
    name = unique("layout")
    kwargs.setdefault("MemorySize", 1024)  # as recorded
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler, Timeout=10,
                        Code={"ZipFile": make_zip(files, modes)}, **kwargs)
    return name


INTROSPECT_FILES = {"handler.py": INTROSPECT, "run.sh": "#!/bin/sh\necho hi\n"}
INTROSPECT_MODES = {"handler.py": 0o644, "run.sh": 0o755}
TEST_KEY = {"Variables": {"TEST_KEY": "TEST_VAL"}}


@pytest.fixture(scope="module")
def fresh_server() -> Iterator[Server]:
    """Templates and zygotes off: every cold start a fresh interpreter."""
    with tempfile.TemporaryDirectory(prefix="kindling-layout-") as tmp:
        srv = Server(Path(tmp) / "data", templates="off").start()
        yield srv
        srv.stop()


def test_a_fresh_python_environment_is_lambdas(fresh_server: Server) -> None:
    lam = fresh_server.client()
    name = _create(lam, INTROSPECT_FILES, INTROSPECT_MODES, handler="handler.handler", Environment=TEST_KEY)
    got, _ = _invoke(lam, name)
    assert not got["zygote"]
    check_python_environment(got, name)
    assert got["code"]["handler.py"]["user"] == "root"  # no user namespace here: the host's root is root
    lam.delete_function(FunctionName=name)


def test_zygote_and_template_clones_are_lambdas(lam) -> None:
    # Given a function whose first cold start is a clone of the runtime's zygote
    deadline = time.monotonic() + 30
    while True:
        name = _create(lam, INTROSPECT_FILES, INTROSPECT_MODES, handler="handler.handler", Environment=TEST_KEY)
        first, _ = _invoke(lam, name)
        if first["zygote"] or time.monotonic() > deadline:
            break
        lam.delete_function(FunctionName=name)
        time.sleep(0.3)
    assert first["zygote"], "no zygote clone"
    check_python_environment(first, name)
    # When later cold starts are clones of its template (made after the first init)
    clone = None
    deadline, n = time.monotonic() + 40, 2
    while clone is None and time.monotonic() < deadline:
        got: list = [None] * n

        def run(i: int, got: list = got) -> None:
            got[i] = _invoke(lam, name)[0]
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        clone = next((g for g in got if g and g["environ"]["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"), None)
        n += 1
    # Then they too see Lambda's layout and variables
    assert clone is not None, "no template clone"
    check_python_environment(clone, name, "snap-start")
    lam.delete_function(FunctionName=name)


# AWS's tutorial custom runtime (docs.aws.amazon.com/lambda/latest/dg/runtimes-walkthrough.html), verbatim.
TUTORIAL_BOOTSTRAP = r'''#!/bin/sh

set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")

  # Send the response
  curl "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response"  -d "$RESPONSE"
done
'''
TUTORIAL_FUNCTION = r'''function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
'''
# The same runtime, answering with what this environment looks like.
PROVIDED_INTROSPECT = r'''function handler () {
  python=$(command -v python3 python3.12 python 2>/dev/null || true)
  sh=$(readlink -f /bin/sh)
  env -0 | base64 -w0 > /tmp/env
  printf '{"python": "%s", "sh": "%s", "bash": "%s", "os": "%s", "env": "%s"}' "$python" "$sh" \
    "${BASH_VERSION:-}" "$(. /etc/os-release; echo $PRETTY_NAME)" "$(cat /tmp/env)"
}
'''


@pytest.mark.parametrize("runtime", ["provided.al2023", "provided.al2"])
def test_the_tutorial_custom_runtime_runs_verbatim(lam, runtime: str) -> None:
    # Given AWS's tutorial bootstrap, unchanged, and its function
    name = _create(lam, {"bootstrap": TUTORIAL_BOOTSTRAP, "function.sh": TUTORIAL_FUNCTION},
                   {"bootstrap": 0o755, "function.sh": 0o644}, runtime=runtime, handler="function.handler")
    # When it is invoked
    out = lam.invoke(FunctionName=name, Payload=b'{"text":"Hello"}')
    # Then it answers as in the tutorial
    assert "FunctionError" not in out
    assert out["Payload"].read() == b'Echoing request: \'{"text":"Hello"}\''
    lam.delete_function(FunctionName=name)


@pytest.mark.parametrize("runtime", ["provided.al2023", "provided.al2"])
def test_a_custom_runtime_sees_amazon_linux_minimal(lam, runtime: str) -> None:
    name = _create(lam, {"bootstrap": TUTORIAL_BOOTSTRAP, "function.sh": PROVIDED_INTROSPECT},
                   {"bootstrap": 0o755, "function.sh": 0o644}, runtime=runtime, handler="function.handler",
                   Environment=TEST_KEY)
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    assert "FunctionError" not in out
    got = json.loads(out["Payload"].read())
    # /bin/sh is bash, no Python anywhere on PATH, and the OS Lambda's runtime is based on
    assert got["sh"].endswith("/bash") and got["bash"].startswith("5.")
    assert got["python"] == ""
    assert got["os"] == ("Amazon Linux 2023" if runtime == "provided.al2023" else "Amazon Linux 2")
    env = dict(kv.split("=", 1) for kv in base64.b64decode(got["env"]).decode().split("\0") if kv)
    # bash's own (PWD, SHLVL, _) are the shell's, not the environment's
    for key in ("PWD", "SHLVL", "_", "OLDPWD"):
        env.pop(key, None)
    compare_environment(runtime, env, name)
    lam.delete_function(FunctionName=name)


WRAPPER = '''#!/bin/bash
args=("$@")
export WRAPPER_VAR=from-the-wrapper
echo "wrapper started: ${args[*]}"
exec "${args[@]}"
'''
WRAPPED = '''import os, sys
print("init in", sys.executable)
def handler(event, context):
    return {"var": os.environ.get("WRAPPER_VAR"), "type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "zygote": "kindling_template" in sys.modules}
'''


def test_an_exec_wrapper_starts_the_runtime(lam) -> None:
    # Given a function with AWS_LAMBDA_EXEC_WRAPPER naming a script in its code
    name = _create(lam, {"app.py": WRAPPED, "wrapper": WRAPPER}, {"wrapper": 0o755},
                   Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/wrapper"}})
    # When it is invoked (its first cold start, then a second, concurrent one)
    got, log = _invoke(lam, name)
    # Then the runtime started through the wrapper, given the runtime's start command, with what it exported;
    # never from a zygote or template (which started before any wrapper)
    assert got == {"var": "from-the-wrapper", "type": "on-demand", "zygote": False}
    assert "wrapper started: /var/lang/bin/python3.12 -s /var/runtime/bootstrap.py" in log
    assert "init in /var/lang/bin/python3.12" in log
    lam.delete_function(FunctionName=name)


# -- hostile zips -----------------------------------------------------------------------------------------------

HOSTILE_CHECK = r'''import os, stat
def handler(event, context):
    out = {}
    for n in ("suid", "sgid", "sticky", "writable", "exec_owner"):
        st = os.stat("/var/task/" + n)
        out[n] = oct(stat.S_IMODE(st.st_mode))
    try:
        open("/var/task/writable", "a").close()
        out["write"] = "written"
    except OSError as e:
        out["write"] = e.strerror
    out["link"] = os.path.islink("/var/task/out")
    return out
'''


def test_zip_modes_give_no_privilege_and_links_do_not_escape(lam) -> None:
    # Given a zip whose files carry setuid, setgid, sticky and world-writable modes
    files = {"app.py": HOSTILE_CHECK, "suid": "#!/bin/sh\nid\n", "sgid": "x", "sticky": "x", "writable": "x",
             "exec_owner": "x"}
    modes = {"suid": 0o4755, "sgid": 0o2755, "sticky": 0o1777, "writable": 0o666, "exec_owner": 0o744}
    name = _create(lam, files, modes)
    got, _ = _invoke(lam, name)
    # Then none of those bits survive, nothing is writable, read is added and execute kept as the zip says
    assert got["suid"] == got["sgid"] == "0o555" and got["sticky"] == "0o555"
    assert got["writable"] == "0o444" and got["exec_owner"] == "0o544"
    assert got["write"] in ("Read-only file system", "Permission denied")
    lam.delete_function(FunctionName=name)
    # And a symlink pointing out of the code is refused at upload, as before
    bio = io.BytesIO(make_zip({"app.py": HOSTILE_CHECK}))
    with zipfile.ZipFile(bio, "a") as zf:
        info = zipfile.ZipInfo("out")
        info.create_system = 3
        info.external_attr = (0o120777) << 16
        zf.writestr(info, "../../../etc")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.create_function(FunctionName=unique("layout"), Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": bio.getvalue()})


@pytest.mark.parametrize("case", ["missing", "not-executable"])
def test_a_bad_bootstrap_answers_lambdas_error(lam, case: str) -> None:
    files: dict[str, str | bytes] = {"function.sh": TUTORIAL_FUNCTION}
    modes = {}
    if case == "not-executable":
        files["bootstrap"] = TUTORIAL_BOOTSTRAP
        modes["bootstrap"] = 0o644
    name = _create(lam, files, modes, runtime="provided.al2023", handler="function.handler")
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(out["Payload"].read())
    assert out["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.InvalidEntrypoint", body
    lam.delete_function(FunctionName=name)


def test_the_spawner_refuses_paths_kindling_did_not_make() -> None:
    from kindling.sandbox import layout
    langs, roots = ["/x/lang"], ["/x/sys"]
    layout.check({"lang": "/x/lang", "system_root": "/x/sys", "os": "al2"}, langs, roots)
    for bad in ({"lang": "/"}, {"lang": "/x/lang/.."}, {"system_root": "/etc"}, {"os": "../../etc/shadow"}):
        with pytest.raises(layout.LayoutError):
            layout.check(bad, langs, roots)
