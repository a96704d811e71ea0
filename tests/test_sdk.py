"""The AWS SDK inside functions (docs/sdk.md): the boto3 Python runtimes carry, the AWS_ENDPOINT_URL_<SERVICE>
variables that point it at Kindling and at the operator's endpoints (--service-endpoint), and recursive loop
detection with the real SDK.

End-to-end tests run boto3 *inside* isolated functions (the default sandbox, with the network plane), with no
endpoint and no keys in their code: the SDK finds Kindling at 169.254.100.2, the operator's S3 store (moto on the
host's loopback) at 169.254.100.2:<its port>, and signs with the execution role's credentials the environment holds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import ROLE, Server, delete_functions, free_port, make_zip, unique

from kindling.network import KINDLING_ADDRESS, exposed_ports
from kindling.network import endpoints as ep
from kindling.queue import recursion
from kindling.runtimes import sdk
from kindling.runtimes.registry import Runtimes

SDK_PINS = sdk.pins()
CURRENT = next(p for p in SDK_PINS["python3.10+"] if p.startswith("boto3==")).split("==")[1]
PY39 = next(p for p in SDK_PINS["python3.9"] if p.startswith("boto3==")).split("==")[1]


def test_variable_names_are_the_sdks() -> None:
    assert ep.env_name("s3") == "AWS_ENDPOINT_URL_S3"
    assert ep.env_name("logs") == "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"
    assert ep.env_name("lambda") == "AWS_ENDPOINT_URL_LAMBDA"
    assert ep.env_name("dynamodb") == "AWS_ENDPOINT_URL_DYNAMODB"
    assert ep.env_name("secretsmanager") == "AWS_ENDPOINT_URL_SECRETS_MANAGER"
    assert ep.env_name("*") == "AWS_ENDPOINT_URL"


def test_endpoints_are_parsed_and_seen_from_inside() -> None:
    given = ep.parse(["s3=http://127.0.0.1:5000, sqs=https://sqs.example.com/", "dynamodb=http://localhost:8000"])
    assert given == {"s3": "http://127.0.0.1:5000", "sqs": "https://sqs.example.com",
                     "dynamodb": "http://localhost:8000"}
    inside = ep.environment(given, "0.0.0.0", 9000, isolated=True)
    assert inside["AWS_ENDPOINT_URL_LAMBDA"] == inside["AWS_ENDPOINT_URL_STS"] == f"http://{KINDLING_ADDRESS}"
    assert inside["AWS_ENDPOINT_URL_CLOUDWATCH_LOGS"] == inside["AWS_ENDPOINT_URL_IAM"] == f"http://{KINDLING_ADDRESS}"
    assert inside["AWS_ENDPOINT_URL_S3"] == f"http://{KINDLING_ADDRESS}:5000"
    assert inside["AWS_ENDPOINT_URL_DYNAMODB"] == f"http://{KINDLING_ADDRESS}:8000"
    assert inside["AWS_ENDPOINT_URL_SQS"] == "https://sqs.example.com"
    assert "AWS_ENDPOINT_URL" not in inside  # no catch-all unless the operator asks for one (docs/sdk.md)
    host = ep.environment(given, "0.0.0.0", 9000, isolated=False)
    assert host["AWS_ENDPOINT_URL_LAMBDA"] == "http://127.0.0.1:9000"
    assert host["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:5000"
    assert exposed_ports("0.0.0.0", 9000, given) == {80: ("127.0.0.1", 9000), 5000: ("127.0.0.1", 5000),
                                                     8000: ("127.0.0.1", 8000)}
    assert exposed_ports("127.0.0.1", 9000) == {80: ("127.0.0.1", 9000)}
    assert ep.environment(ep.parse("*=http://127.0.0.1:4566"), "127.0.0.1", 9000, True)["AWS_ENDPOINT_URL"] == \
        f"http://{KINDLING_ADDRESS}:4566"


def test_a_functions_own_endpoint_variables_win() -> None:
    env = {"AWS_ENDPOINT_URL_S3": "http://kindling-given", "AWS_ENDPOINT_URL_LAMBDA": "http://k"}
    own = {"AWS_ENDPOINT_URL": "http://mine", "AWS_ENDPOINT_URL_LAMBDA": "http://my-lambda"}
    env.update(own)
    ep.yield_to(env, own)
    assert env == own  # its generic endpoint is not shadowed by Kindling's service variables


@pytest.mark.parametrize("spec, message", [
    ("s3", "expected SERVICE=URL"),
    ("=http://x", "expected SERVICE=URL"),
    ("nosuchservice=http://x", "unknown service"),
    ("S3=http://x", "unknown service"),
    ("../../etc=http://x", "unknown service"),
    ("lambda=http://x", "serves lambda itself"),
    ("logs=http://x", "serves logs itself"),
    ("s3=ftp://x", "http:// or https://"),
    ("s3=127.0.0.1:5000", "http:// or https://"),
    ("s3=http://", "no host"),
    ("s3=http://a b", "spaces"),
    ("s3=http://x\x00y", "control"),
    ("s3=http://h\u00e9", "non-ASCII"),
    ("s3=http://user:pw@h", "credentials"),
    ("s3=http://h/?a=1", "query"),
    ("s3=http://h#f", "query or fragment"),
    ("s3=http://h:99999", "not a valid URL"),
    ("s3=http://h:0", "port 0"),
    ("s3=http://[::1]:5000", "IPv6"),
    ("s3=http://127.0.0.1", "Kindling's API"),
    ("s3=http://127.0.0.1:80", "Kindling's API"),
    ("s3=http://127.0.0.1:5000,sqs=http://127.0.0.2:5000", "distinct ports"),
    ("s3=http://x,s3=http://y", "given twice"),
    ("s3=http://" + "a" * 5000, "longer than"),
    (",".join(f"s3=http://{'a' * 1000}" for _ in range(100)), "more than"),
])
def test_bad_endpoints_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ep.EndpointError, match=message) as caught:
        ep.parse(spec)
    assert len(str(caught.value)) < 400  # an oversized value is not echoed back whole


def test_the_flag_repeats_and_the_variable_takes_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    import click
    from click.testing import CliRunner

    from kindling.cli.main import _serve_options
    from kindling.settings import Settings

    @click.command()
    @_serve_options
    def show(**options: object) -> None:
        click.echo(Settings.from_env(**options).service_endpoints)

    monkeypatch.delenv("KINDLING_SERVICE_ENDPOINTS", raising=False)
    flags = ["--service-endpoint", "s3=http://127.0.0.1:5000", "--service-endpoint", "sqs=http://127.0.0.1:5001"]
    out = CliRunner().invoke(show, flags)
    assert out.output.strip() == "s3=http://127.0.0.1:5000,sqs=http://127.0.0.1:5001"
    assert ep.parse(out.output.strip()) == {"s3": "http://127.0.0.1:5000", "sqs": "http://127.0.0.1:5001"}
    monkeypatch.setenv("KINDLING_SERVICE_ENDPOINTS", "s3=http://127.0.0.1:5000,sqs=http://127.0.0.1:5001")
    assert CliRunner().invoke(show, []).output.strip() == "s3=http://127.0.0.1:5000,sqs=http://127.0.0.1:5001"
    monkeypatch.delenv("KINDLING_SERVICE_ENDPOINTS")
    assert CliRunner().invoke(show, []).output.strip() == ""


def test_server_refuses_to_start_with_a_bad_endpoint(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", sandbox="process", service_endpoints="s3=ftp://127.0.0.1:5000")
    with pytest.raises(RuntimeError, match="must start with http:// or https://"):
        srv.start()
    srv.stop()


# -- boto3 in the runtime ------------------------------------------------------------------------------------------
PROBE = """import inspect, os, sys, time
def handler(event, context):
    frames = [f.filename for f in inspect.stack()]
    t = time.monotonic()
    import boto3, botocore, urllib3
    took = time.monotonic() - t
    return {"boto3": boto3.__version__, "botocore": botocore.__version__, "file": boto3.__file__,
            "took": took, "urllib3": urllib3.__file__, "path": sys.path, "python": "%d.%d" % sys.version_info[:2],
            "frames": frames, "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL")}}
"""


@pytest.mark.parametrize("runtime, version", [("python3.12", CURRENT), ("python3.9", PY39)])
def test_boto3_imports_in_an_isolated_environment_with_nothing_in_the_zip(lam, create_function,  # noqa: ANN001
                                                                         server: Server, runtime: str,
                                                                         version: str) -> None:
    if not Runtimes().available(runtime):
        pytest.skip(f"no {runtime} interpreter here")
    fn = create_function(PROBE, Runtime=runtime, MemorySize=1024, Timeout=30)  # the import at 1/2 a vCPU
    out = lam.invoke(FunctionName=fn["FunctionName"])
    assert "FunctionError" not in out, out["Payload"].read()
    got = json.loads(out["Payload"].read())
    assert got["boto3"] == got["botocore"] == version
    assert got["file"] == f"/var/runtime/sdk/{runtime}/boto3/__init__.py"
    assert got["urllib3"].startswith(f"/var/runtime/sdk/{runtime}/")
    here = str(Path(__file__).resolve().parents[1])
    assert not any(here in p for p in got["path"]), got["path"]  # no host path of Kindling's
    assert not any(here in f for f in got["frames"]), got["frames"]  # nor in the runtime's code
    assert got["path"][:3] == ["/var/task", "/var/runtime", f"/var/runtime/sdk/{runtime}"]
    assert got["env"]["AWS_ENDPOINT_URL_LAMBDA"] == f"http://{KINDLING_ADDRESS}"


# -- end to end, through Kindling's API and an S3-compatible store -------------------------------------------------
@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """moto's server on the host's loopback: an S3-compatible store the test started."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def host_server(moto: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="kindling-sdk-") as tmp:
        srv = Server(Path(tmp) / "data", service_endpoints=f"s3={moto}",
                     async_delay_scale="0.01").start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture
def host_lam(host_server: Server):  # noqa: ANN201
    return host_server.client()


@pytest.fixture
def make_fn(host_server: Server, host_lam) -> Iterator:  # noqa: ANN001
    made: list[str] = []

    def create(code: str | dict[str, str | bytes], env: dict[str, str] | None = None, **kwargs: object) -> str:
        files = {"app.py": code} if isinstance(code, str) else code
        name = kwargs.pop("FunctionName", None) or unique("sdk")
        variables = dict(env or {})
        kwargs.setdefault("Runtime", "python3.12")
        host_lam.create_function(FunctionName=name, Role=ROLE, Handler="app.handler", Code={"ZipFile": make_zip(files)},
                                 Timeout=60, Environment={"Variables": variables}, **kwargs)
        made.append(name)
        return name

    yield create
    delete_functions(host_lam, made)


def invoke(lam, name: str, event: object = None) -> dict:  # noqa: ANN001
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    body = out["Payload"].read()
    assert "FunctionError" not in out, body
    return json.loads(body)


CALLER = """import json
import boto3
def handler(event, context):
    out = boto3.client("lambda").invoke(FunctionName=event["target"], Payload=json.dumps({"name": "sdk"}))
    return {"status": out["StatusCode"], "payload": json.loads(out["Payload"].read())}
"""
HELLO = 'def handler(event, context):\n    return {"hello": event.get("name", "world")}\n'


@pytest.mark.parametrize("runtime", ["python3.12", "python3.9"])
def test_a_function_invokes_another_through_boto3(host_lam, make_fn, runtime: str) -> None:  # noqa: ANN001
    if not Runtimes().available(runtime):
        pytest.skip(f"no {runtime} interpreter here")
    target = make_fn(HELLO)
    caller = make_fn(CALLER, Runtime=runtime)
    assert invoke(host_lam, caller, {"target": target}) == {"status": 200, "payload": {"hello": "sdk"}}


LOG_READER = """import time
import boto3
def handler(event, context):
    if "say" in event:
        print(event["say"])
        return {}
    logs = boto3.client("logs")
    for _ in range(50):
        found = logs.filter_log_events(logGroupName=context.log_group_name, filterPattern=event["find"])["events"]
        if found:
            return {"messages": [e["message"].strip() for e in found]}
        time.sleep(0.1)
    return {"messages": []}
"""


def test_a_function_reads_its_own_logs_through_boto3(host_lam, make_fn) -> None:  # noqa: ANN001
    fn = make_fn(LOG_READER)
    marker = f"marker-{uuid.uuid4().hex}"
    invoke(host_lam, fn, {"say": marker})
    assert invoke(host_lam, fn, {"find": marker}) == {"messages": [marker]}


S3_USER = """import boto3
def handler(event, context):
    s3 = boto3.client("s3")
    s3.put_object(Bucket=event["bucket"], Key="from-function", Body=b"written inside")
    return {"read": s3.get_object(Bucket=event["bucket"], Key="given")["Body"].read().decode(),
            "keys": sorted(o["Key"] for o in s3.list_objects_v2(Bucket=event["bucket"])["Contents"])}
"""


def test_a_function_uses_the_operators_s3_store(host_lam, make_fn, moto: str) -> None:  # noqa: ANN001
    store = boto3.client("s3", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="test",
                         aws_secret_access_key="test")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    store.create_bucket(Bucket=bucket)
    store.put_object(Bucket=bucket, Key="given", Body=b"from the test")
    fn = make_fn(S3_USER)
    assert invoke(host_lam, fn, {"bucket": bucket}) == {"read": "from the test", "keys": ["from-function", "given"]}
    assert store.get_object(Bucket=bucket, Key="from-function")["Body"].read() == b"written inside"


ENV_PROBE = """import os
def handler(event, context):
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL")}
"""


def test_endpoint_variables_and_a_functions_own_win(host_lam, make_fn, host_server: Server,  # noqa: ANN001
                                                    moto: str) -> None:
    plain = invoke(host_lam, make_fn(ENV_PROBE))
    kindling = f"http://{KINDLING_ADDRESS}"  # as an isolated environment reaches Kindling, and moto on loopback
    assert plain == {"AWS_ENDPOINT_URL_LAMBDA": kindling, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": kindling,
                     "AWS_ENDPOINT_URL_IAM": kindling, "AWS_ENDPOINT_URL_STS": kindling,
                     "AWS_ENDPOINT_URL_S3": f"{kindling}:{urllib.parse.urlsplit(moto).port}"}
    own = invoke(host_lam, make_fn(ENV_PROBE, env={"AWS_ENDPOINT_URL_S3": "http://198.18.0.1:1"}))
    assert own["AWS_ENDPOINT_URL_S3"] == "http://198.18.0.1:1"
    generic = invoke(host_lam, make_fn(ENV_PROBE, env={"AWS_ENDPOINT_URL": "http://198.18.0.1:2"}))
    assert generic == {"AWS_ENDPOINT_URL": "http://198.18.0.1:2"}


FAKE_BOTO3 = {"app.py": "import boto3\ndef handler(event, context):\n    return {'v': boto3.__version__, "
                        "'file': boto3.__file__}\n",
              "boto3/__init__.py": "__version__ = '0.0.0-bundled'\n"}


def test_a_zips_own_boto3_wins(host_lam, make_fn) -> None:  # noqa: ANN001
    got = invoke(host_lam, make_fn(FAKE_BOTO3))
    assert got["v"] == "0.0.0-bundled" and got["file"].endswith("/boto3/__init__.py")
    assert "/sdk/" not in got["file"]


# -- recursive loops, with the real SDK ------------------------------------------------------------------------------
SELF_SYNC = """import json, os
import boto3
from botocore.config import Config
def handler(event, context):
    depth = event.get("depth", 0) + 1
    client = boto3.client("lambda", config=Config(retries={"max_attempts": 1}, read_timeout=120))
    try:
        out = client.invoke(FunctionName=context.function_name, Payload=json.dumps({"depth": depth}))
    except client.exceptions.RecursiveInvocationException as e:
        return {"stopped_after": depth, "error": e.response["Error"]["Code"], "message": e.response["Error"]["Message"]}
    return json.loads(out["Payload"].read())
"""


def dropped(server: Server, name: str) -> float:
    with urllib.request.urlopen(server.signed_request("GET", "/metrics"), timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f'kindling_recursive_invocations_dropped_total{{function="{name}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_self_recursion_through_boto3_is_stopped_after_16(host_lam, make_fn, host_server: Server) -> None:  # noqa: ANN001
    fn = make_fn(SELF_SYNC, MemorySize=128)
    got = invoke(host_lam, fn)
    assert got["stopped_after"] == 16 and got["error"] == "RecursiveInvocationException", got
    assert "Recursive invocation detected" in got["message"]
    assert dropped(host_server, fn) == 1


SELF_ASYNC = """import json
import boto3
def handler(event, context):
    depth = event.get("depth", 0) + 1
    print("HOP", depth)
    if depth < event.get("stop", 10 ** 6):
        boto3.client("lambda").invoke(FunctionName=context.function_name, InvocationType="Event",
                                      Payload=json.dumps({"depth": depth, "stop": event.get("stop", 10 ** 6)}))
    return {}
"""


def hops(host_server: Server, fn: str) -> list[int]:
    logs = host_server.client("logs")
    events = logs.filter_log_events(logGroupName=f"/aws/lambda/{fn}", filterPattern='"HOP"')["events"]
    return sorted(int(e["message"].split()[1]) for e in events)


def wait_hops(host_server: Server, fn: str, want: int, settle: float) -> list[int]:
    deadline, seen, last_change = time.monotonic() + 60, [], time.monotonic()
    while time.monotonic() < deadline:
        now = hops(host_server, fn)
        if now != seen:
            seen, last_change = now, time.monotonic()
        if len(seen) >= want and time.monotonic() - last_change > settle:
            return seen
        time.sleep(0.2)
    return seen


def test_async_self_recursion_through_boto3_stops_at_16_unless_allowed(host_lam, make_fn,  # noqa: ANN001
                                                                        host_server: Server) -> None:
    looping = make_fn(SELF_ASYNC, MemorySize=128)
    host_lam.invoke(FunctionName=looping, InvocationType="Event", Payload=b"{}")
    assert wait_hops(host_server, looping, 16, settle=2.0) == list(range(1, 17))
    deadline = time.monotonic() + 10
    while dropped(host_server, looping) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dropped(host_server, looping) == 1

    allowed = make_fn(SELF_ASYNC, MemorySize=128)
    host_lam.put_function_recursion_config(FunctionName=allowed, RecursiveLoop="Allow")
    host_lam.invoke(FunctionName=allowed, InvocationType="Event", Payload=json.dumps({"stop": 20}).encode())
    assert wait_hops(host_server, allowed, 20, settle=0.5) == list(range(1, 21))
    assert dropped(host_server, allowed) == 0


LOOP_A = """def handler(event, context):
    depth = event.get("depth", 0) + 1
    print("HOP", depth)
    return {"depth": depth}
"""
LOOP_B = """import json
import boto3
def handler(event, context):  # A's on-success destination: invokes A again through the SDK
    boto3.client("lambda").invoke(FunctionName=event["requestContext"]["functionArn"].split(":")[6],
                                  InvocationType="Event", Payload=json.dumps(event["responsePayload"]))
"""


def test_a_loop_through_a_destination_and_the_sdk_stops_at_16(host_lam, make_fn,  # noqa: ANN001
                                                                host_server: Server) -> None:
    a, b = make_fn(LOOP_A, MemorySize=128), make_fn(LOOP_B, MemorySize=128)
    b_arn = host_lam.get_function(FunctionName=b)["Configuration"]["FunctionArn"]
    host_lam.put_function_event_invoke_config(FunctionName=a, DestinationConfig={"OnSuccess": {"Destination": b_arn}})
    host_lam.invoke(FunctionName=a, InvocationType="Event", Payload=b"{}")
    assert wait_hops(host_server, a, 16, settle=2.0) == list(range(1, 17))
    assert dropped(host_server, a) == 1


def test_a_hostile_trace_header_costs_only_its_caller(host_server: Server, host_lam, make_fn) -> None:  # noqa: ANN001
    """Oversized and malformed X-Amzn-Trace-Id / Lineage (what a function's SDK would send back): a clean answer,
    never a 5xx, and a bystander keeps answering."""
    fn, bystander = make_fn(HELLO), make_fn(HELLO)
    invoke(host_lam, bystander)
    path = f"/2015-03-31/functions/{fn}/invocations"
    traces = ["Root=1-00000000-000000000000000000000000;Lineage=" + "|".join(f"{i:08x}:1" for i in range(4000)),
              "Lineage=" + "%7C" * 5000, "Lineage=::::|||;;;===", "Lineage=aaaaaaaa:99999999999999999999999",
              "Root=" + "x" * 30000]
    for trace in traces:
        for invocation_type in ("RequestResponse", "Event"):
            req = host_server.signed_request("POST", path, b"{}", {"X-Amzn-Trace-Id": trace,
                                                                  "X-Amz-Invocation-Type": invocation_type})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            assert status < 500, (trace[:60], invocation_type, status)
        started = time.monotonic()
        assert invoke(host_lam, bystander) == {"hello": "world"}
        assert time.monotonic() - started < 2


def test_lineage_as_botocore_quotes_it_is_counted() -> None:
    """botocore percent-encodes the X-Amzn-Trace-Id it copies from _X_AMZN_TRACE_ID ('|' as %7C)."""
    a, b = "arn:aws:lambda:us-east-1:000000000000:function:a", "arn:aws:lambda:us-east-1:000000000000:function:b"
    trace = recursion.advanced(recursion.advanced(recursion.advanced(None, a), b), a)
    quoted = urllib.parse.quote(trace, safe="-=;:+&[]{}\"',")
    assert "%7C" in quoted
    assert (recursion.count(quoted, a), recursion.count(quoted, b)) == (2, 1)


def test_sdk_trees_are_not_imported_by_the_runtime_itself() -> None:
    """Cold start: the bootstrap only puts the tree on sys.path; boto3 is imported when the function does."""
    bootstrap = (Path(sdk.__file__).parent / "python" / "bootstrap.py").read_text()
    assert "import boto3" not in bootstrap and "import botocore" not in bootstrap
    for runtime in ("python3.9", "python3.12"):
        link = sdk.SDK_DIR / runtime
        assert (link / sdk.MARKER).exists(), f"run `make` (python -m kindling.runtimes.sdk): {link} is missing"
        assert os.readlink(link) == sdk.tree_name(SDK_PINS["python3.9" if runtime == "python3.9" else "python3.10+"])


