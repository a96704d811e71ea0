"""The one settings table: it drives `kindling serve` flags, KINDLING_* variables and docs.

Each row is (name, default, type, help). ``--data-dir`` on the command line and
``KINDLING_DATA_DIR`` in the environment both set ``data_dir``. A test checks
that docs/settings.md lists every row (``kindling settings-doc`` writes it).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    type: type
    help: str
    repeatable: bool = False  # a flag given once per value (named in the singular); its values joined with ","

    @property
    def envvar(self) -> str:
        return "KINDLING_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + (self.name.removesuffix("s") if self.repeatable else self.name).replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", str, "Address the API listens on."),
    Setting("port", 9000, int, "Port the API listens on."),
    Setting("api_max_connections", 4096, int,
            "Open API connections at most; past it a new connection is answered 503 and closed at once. Kept "
            "below half the open-file limit (ulimit -n) of the server."),
    Setting("api_max_connections_per_client", 256, int,
            "Open API connections at most from one client address; past it a new one is answered 429 and closed."),
    Setting("api_header_timeout", 10.0, float,
            "Seconds a client has to send a request's line and headers, from its first byte (or from connecting); "
            "then the connection is closed (against slowloris)."),
    Setting("api_read_timeout", 30.0, float,
            "Seconds a request's body may pause (no byte arriving) before the connection is closed."),
    Setting("api_max_header_bytes", 65536, int,
            "Largest request line plus headers the API takes; a larger one is answered 431 and closed."),
    Setting("api_unverified_body_mb", 300, int,
            "Megabytes of request bodies the API holds at once before their signature can be checked (requests "
            "without X-Amz-Content-SHA256, as boto3 sends them); past it a request is answered 429 "
            "TooManyRequestsException before its body is read."),
    Setting("data_dir", ".kindling", str, "Directory for the SQLite store, code and logs."),
    Setting("region", "us-east-1", str, "Region written into ARNs and AWS_REGION."),
    Setting("account_id", "000000000000", str, "Account id written into ARNs."),
    Setting("keep_alive", 300.0, float, "Seconds an idle execution environment is kept warm before it is reclaimed."),
    Setting("runtimes", "", str,
            "Interpreter paths per runtime, e.g. 'python3.12=/usr/bin/python3.12,python3.11=/opt/py/bin/python3'. "
            "Unlisted python3.x runtimes are looked up on PATH and under ~/.pyenv/versions; nodejsNN.x ones as a "
            "`node` (or `nodeNN`) of that major version on PATH or under ~/.nvm/versions/node."),
    Setting("sandbox", "auto", str,
            "How execution environments are made: 'isolated' (namespaces, cgroups, seccomp; needs root), "
            "'process' (plain child processes, no isolation), or 'auto' (isolated where possible)."),
    Setting("sandbox_uid", 993, int, "Unprivileged user id functions run as in isolated environments."),
    Setting("sandbox_gid", 990, int, "Group id functions run as in isolated environments."),
    Setting("sandbox_pool", 2, int, "Isolated sandboxes kept ready ahead of cold starts."),
    Setting("network", "internet", str,
            "What isolated execution environments may reach (docs/network.md): 'internet' (outbound traffic, "
            "NATed through the host's routes, as on Lambda without a VPC), 'kindling-only' (only Kindling's API "
            "at http://169.254.100.2), or 'none' (loopback and the Runtime API only). Never reachable in any mode: "
            "other environments, the host's own services and addresses, the rest of 169.254.0.0/16 (instance "
            "metadata). Needs root and nft; without them, 'none'."),
    Setting("templates", "on", str,
            "Cold starts forked from initialized templates (SnapStart): 'on' for $LATEST and SnapStart published "
            "versions, 'snapstart' for those versions only, 'off' (also no per-runtime zygotes). Needs the "
            "isolated sandbox."),
    Setting("concurrency_limit", 1000, int, "Account concurrency limit: invokes in flight across all functions."),
    Setting("memory_budget_mb", 0, int,
            "Memory the execution environments of this node may take (sum of MemorySize); 0: 80% of the machine."),
    Setting("async_delay_scale", 1.0, float,
            "Multiplies every asynchronous-invocation timing: retry delays after function errors (~60 s, ~120 s), "
            "throttle backoff (1 s to 5 min) and MaximumEventAgeInSeconds. Tests use e.g. 0.01."),
    Setting("async_max_in_flight", 32, int, "Asynchronous events the dispatcher runs at once, across all functions."),
    Setting("sqs_endpoint", "", str,
            "SQS-compatible endpoint that SQS destinations and dead-letter queues are sent to, e.g. "
            "http://127.0.0.1:5000. Empty: records for SQS targets count as delivery failures."),
    Setting("service_endpoints", "", str,
            "Endpoints the AWS SDKs inside functions use for services Kindling does not serve, as SERVICE=URL with "
            "the SDK's client name, e.g. 's3=http://127.0.0.1:5000' (repeat the flag, or separate with commas; "
            "'*=URL' for every other service). Set in environments as AWS_ENDPOINT_URL_<SERVICE>; an endpoint on "
            "the host's loopback is reached inside isolated environments at 169.254.100.2:PORT (docs/sdk.md).",
            repeatable=True),
    Setting("sqs_access_key_id", "test", str, "Access key id for the SQS-compatible endpoint."),
    Setting("sqs_secret_access_key", "test", str, "Secret access key for the SQS-compatible endpoint."),
    Setting("log_retention_days", 30, int,
            "Days function logs are kept in log groups without a retention policy (PutRetentionPolicy); 0: forever."),
    Setting("log_rate_mb", 1.0, float,
            "Log output each execution environment may write, in MB per second (stdout and stderr); what is over it "
            "is dropped, with a platform line saying so. 0: no limit."),
    Setting("log_burst_mb", 5.0, float, "Log output an execution environment may write at once, in MB (at least "
            "0.5), before --log-rate-mb applies."),
    Setting("log_group_max_mb", 1024.0, float,
            "Size a log group may reach, in MB; lines past it are dropped, with a platform line saying so, until "
            "retention or deletes make room. 0: no cap."),
    Setting("otlp_endpoint", "", str,
            "OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318) Kindling sends OpenTelemetry spans to; empty: no "
            "traces. Needs the 'otlp' extra."),
    Setting("vpc_file", "", str,
            "TOML or JSON file defining the VPCs, subnets and security groups (egress rules) that functions' "
            "VpcConfig may name (docs/vpc.md); read at start. Empty: none, so any SubnetIds are unknown."),
    Setting("image_sources", "", str,
            "Where container-image functions (PackageType Image) come from: PREFIX=SOURCE, once per flag. An "
            "ImageUri PREFIX/REPO:TAG is read from SOURCE: http(s)://host:port (an OCI registry, e.g. Debian's "
            "docker-registry) or oci:/dir (OCI image layouts: /dir/REPO, TAG its reference). PREFIX is a registry "
            "host such as 123456789012.dkr.ecr.us-east-1.amazonaws.com, or * for any (docs/runtimes-images.md).",
            repeatable=True),
    Setting("image_max_mb", 10240, int,
            "Largest container image Kindling unpacks, in MB uncompressed (Lambda's limit: 10 GB); a larger one "
            "leaves its function Failed (InvalidImage)."),
    Setting("image_pull_timeout", 600.0, float, "Seconds a container image's pull and unpack may take."),
    Setting("log_level", "info", str, "Log level of Kindling's own log (debug, info, warning, error)."),
    Setting("iam", "local", str,
            "IAM mode (docs/iam.md): 'local' authorizes role sessions by the policies of roles that exist in "
            "Kindling and lets a role it does not know do anything (functions may name any role ARN, with a "
            "warning); 'enforce' also denies those, and a function's Role must exist and trust lambda.amazonaws.com."),
    Setting("access_key_id", "", str,
            "Access key id of the key pair every API request must be SigV4-signed with. Empty: the pair kept in "
            "credentials.json in the data dir, created on first start (`kindling credentials` prints it)."),
    Setting("secret_access_key", "", str,
            "Secret access key that goes with --access-key-id; both or neither. Prefer the environment variable."),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 9000
    api_max_connections: int = 4096
    api_max_connections_per_client: int = 256
    api_header_timeout: float = 10.0
    api_read_timeout: float = 30.0
    api_max_header_bytes: int = 65536
    api_unverified_body_mb: int = 300
    data_dir: str = ".kindling"
    region: str = "us-east-1"
    account_id: str = "000000000000"
    keep_alive: float = 300.0
    runtimes: str = ""
    sandbox: str = "auto"
    sandbox_uid: int = 993
    sandbox_gid: int = 990
    sandbox_pool: int = 2
    network: str = "internet"
    templates: str = "on"
    concurrency_limit: int = 1000
    memory_budget_mb: int = 0
    async_delay_scale: float = 1.0
    async_max_in_flight: int = 32
    sqs_endpoint: str = ""
    service_endpoints: str = ""
    sqs_access_key_id: str = "test"
    sqs_secret_access_key: str = dataclasses.field(default="test", repr=False)
    log_retention_days: int = 30
    log_rate_mb: float = 1.0
    log_burst_mb: float = 5.0
    log_group_max_mb: float = 1024.0
    otlp_endpoint: str = ""
    vpc_file: str = ""
    image_sources: str = ""
    image_max_mb: int = 10240
    image_pull_timeout: float = 600.0
    log_level: str = "info"
    iam: str = "local"
    access_key_id: str = ""
    secret_access_key: str = dataclasses.field(default="", repr=False)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then KINDLING_* variables, then explicit overrides (CLI flags)."""
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = os.environ.get(s.envvar)
            if raw is not None:
                values[s.name] = s.type(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
assert all(getattr(Settings(), s.name) == s.default for s in SETTINGS)


def markdown() -> str:
    """docs/settings.md, generated from the table."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    rows += [f"| `{s.flag}` | `{s.envvar}` | `{s.default!s}` | {s.help} |" for s in SETTINGS]
    head = "# Settings\n\nGenerated by `kindling settings-doc` from `kindling/settings.py`.\n\n"
    return head + "\n".join(rows) + "\n"
