"""Synchronous invoke of Python functions in real execution environments, through boto3."""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import HELLO, Server, make_zip
from tests.recorded import assert_like, recorded


def call(lam, name: str, event: object = None, **kwargs: object) -> tuple[dict, object]:
    args: dict = {"FunctionName": name, **kwargs}
    if event is not None:
        args["Payload"] = json.dumps(event).encode()
    out = lam.invoke(**args)
    return out, json.loads(out["Payload"].read() or b"null")


def test_hello_world(lam, create_function):
    fn = create_function()
    out, body = call(lam, fn["FunctionName"], {"name": "kindling"})
    assert body == {"hello": "kindling"}
    assert out["StatusCode"] == 200 and out["ExecutedVersion"] == "$LATEST" and "FunctionError" not in out
    # no payload at all: the event is {}
    out, body = call(lam, fn["FunctionName"])
    assert body == {"hello": "world"}


@pytest.mark.parametrize("runtime", ["python3.9", "python3.10", "python3.11", "python3.12", "python3.13"])
def test_every_python_runtime(lam, create_function, runtime):
    code = "import sys\ndef handler(event, context):\n    return list(sys.version_info[:2])\n"
    fn = create_function(code, Runtime=runtime)
    _, body = call(lam, fn["FunctionName"], {})
    assert body == [3, int(runtime.split(".")[1])]


CONTEXT = '''
import os
def handler(event, context):
    return {
        "function_name": context.function_name, "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn, "memory_limit_in_mb": context.memory_limit_in_mb,
        "aws_request_id": context.aws_request_id, "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name, "remaining": context.get_remaining_time_in_millis(),
        "client_custom": context.client_context.custom if context.client_context else None,
        "identity": context.identity.cognito_identity_id if context.identity else "none",
        "env": dict(os.environ),
    }
'''


def test_context_and_environment(lam, create_function):
    fn = create_function(CONTEXT, MemorySize=256, Timeout=7, Environment={"Variables": {"TEST_KEY": "TEST_VAL"}})
    name = fn["FunctionName"]
    client_context = base64.b64encode(json.dumps({"custom": {"foo": "bar"}, "env": {}, "client": {}}).encode())
    out, ctx = call(lam, name, {}, ClientContext=client_context.decode())
    assert out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"] == ctx["aws_request_id"]
    assert ctx["function_name"] == name and ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == fn["FunctionArn"]
    assert int(ctx["memory_limit_in_mb"]) == 256
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert ctx["log_stream_name"].startswith(time.strftime("%Y/%m/%d/", time.gmtime()) + "[$LATEST]")
    assert 5000 < ctx["remaining"] <= 7000
    assert ctx["client_custom"] == {"foo": "bar"}
    env = ctx["env"]
    # Every variable AWS sets in a python3.12 environment (AWS's recorded introspection), minus
    # credentials and X-Ray, which Kindling does not provide.
    aws_env = recorded("lambda_runtimes_common", "test_introspection_invoke[python3.12]",
                       "invocation_result_payload")["environment"]
    missing = {k for k in aws_env if k not in env} - {
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_ADDRESS", "_AWS_XRAY_DAEMON_PORT"}
    assert not missing
    assert env["TEST_KEY"] == "TEST_VAL" and env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name and env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12" and env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == ctx["log_stream_name"] and env["TZ"] == ":UTC"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    # the qualified ARN reaches the function as it was invoked
    _, ctx = call(lam, name, {}, Qualifier="$LATEST")
    assert ctx["invoked_function_arn"] == fn["FunctionArn"] + ":$LATEST"


WARM = '''
import os, uuid
COUNT = 0
ENV_ID = uuid.uuid4().hex
def handler(event, context):
    global COUNT
    COUNT += 1
    path = "/tmp/kindling-" + ENV_ID
    if event.get("write"):
        with open(path, "w") as f:
            f.write(event["write"])
    data = open(path).read() if os.path.exists(path) else None
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    return {"count": COUNT, "env": ENV_ID, "tmp": data}
'''


def test_warm_reuse_keeps_globals_and_tmp(lam, create_function):
    fn = create_function(WARM)
    name = fn["FunctionName"]
    _, first = call(lam, name, {"write": "kept"})
    _, second = call(lam, name, {})
    assert second["env"] == first["env"]
    assert (first["count"], second["count"]) == (1, 2)
    assert second["tmp"] == "kept"


def test_concurrent_invokes_start_a_second_environment(lam, create_function):
    fn = create_function(WARM)
    name = fn["FunctionName"]
    results: list[dict] = []

    def run() -> None:
        results.append(call(lam, name, {"sleep": 1.0})[1])

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["env"] for r in results}) == 2
    assert all(r["count"] == 1 for r in results)


def test_code_update_gives_a_fresh_environment(lam, create_function):
    fn = create_function(WARM)
    name = fn["FunctionName"]
    _, first = call(lam, name, {})
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"XX": "1"}})
    _, second = call(lam, name, {})
    assert second["env"] != first["env"] and second["count"] == 1


def test_logs_tail_and_report(lam, create_function, server):
    fn = create_function('def handler(event, context):\n    print("hello from the function")\n    return {}\n')
    name = fn["FunctionName"]
    out = lam.invoke(FunctionName=name, LogType="Tail")
    tail = base64.b64decode(out["LogResult"]).decode()
    request_id = out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    lines = tail.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert "hello from the function" in lines
    assert lines[-2] == f"END RequestId: {request_id}"
    expected = recorded("lambda_behavior", "test_invocation_with_logs[python3.10]", "logs")["logs"][3]
    assert_like(lines[-1] + "\n", expected.replace("Memory Size: 128 MB", "Memory Size: <m> MB"))
    # the second invoke is warm: no Init Duration
    out = lam.invoke(FunctionName=name, LogType="Tail")
    assert "Init Duration" not in base64.b64decode(out["LogResult"]).decode()
    # and everything is in the function's log group, kept by `kindling logs`
    import subprocess
    import sys
    printed = subprocess.run([sys.executable, "-m", "kindling.cli.main", "logs", name, "--endpoint-url",
                              server.endpoint], capture_output=True, text=True, check=True).stdout
    assert printed.count("hello from the function") == 2 and printed.count("REPORT RequestId") == 2


def test_dry_run(lam, create_function):
    fn = create_function()
    out = lam.invoke(FunctionName=fn["FunctionName"], InvocationType="DryRun")
    assert out["StatusCode"] == 204 and out["Payload"].read() == b""


def test_invoke_missing_function(lam):
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName="doesnotexist")
    expected = recorded("lambda_behavior", "test_invoke_exceptions", "invoke_function_doesnotexist")
    got = exc.value.response
    assert got["Error"]["Code"] == expected["Error"]["Code"] and got["Type"] == "User"
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert got["Error"]["Message"] == "Function not found: arn:aws:lambda:us-east-1:000000000000:function:" \
                                      "doesnotexist:$LATEST"


def test_invalid_json_payload(lam, create_function):
    fn = create_function()
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=fn["FunctionName"], Payload=b"n\x87r")
    assert exc.value.response["Error"]["Code"] == "InvalidRequestContentException"
    assert exc.value.response["Error"]["Message"].startswith(
        "Could not parse request body into json: Could not parse payload into json:")


# -- errors ---------------------------------------------------------------------------------------
def _error_invoke(lam, create_function, code: str | dict, **kwargs: object) -> tuple[dict, dict]:
    fn = create_function(code, **kwargs)
    out, body = call(lam, fn["FunctionName"], {})
    assert out["FunctionError"] == "Unhandled" and out["StatusCode"] == 200
    return out, body


def test_handler_exception(lam, create_function):
    code = 'def handler(event, context):\n    raise Exception("Handler fails")\n'
    _, body = _error_invoke(lam, create_function, code)
    expected = recorded("lambda_behavior", "test_lambda_handler_error", "invocation_error")["Payload"]
    assert_like(body, {**expected, "stackTrace": [
        '  File "<path>app.py", line 2, in handler\n    raise Exception("Handler fails")\n']})


def test_a_huge_error_message_is_still_the_functions_error(lam, create_function):
    # Its X-Ray cause would make a request head over the Runtime API's 64 KiB: the runtime leaves the cause out
    code = 'def handler(event, context):\n    raise ValueError("x" * 200_000)\n'
    _, body = _error_invoke(lam, create_function, code)
    assert body["errorType"] == "ValueError" and len(body["errorMessage"]) == 200_000


def test_init_exception(lam, create_function):
    _, body = _error_invoke(lam, create_function, 'raise Exception("Runtime startup fails")\n')
    assert body["errorType"] == "Exception" and body["errorMessage"] == "Runtime startup fails"
    assert body["requestId"] == ""
    assert 'line 1, in <module>\n    raise Exception("Runtime startup fails")\n' in body["stackTrace"][-1]


def test_import_module_error(lam, create_function):
    _, body = _error_invoke(lam, create_function, HELLO, Handler="missing.handler")
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == "Unable to import module 'missing': No module named 'missing'"


def test_handler_not_found(lam, create_function):
    _, body = _error_invoke(lam, create_function, HELLO, Handler="app.nothere")
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'nothere' missing on module 'app'"


def test_marshal_error(lam, create_function):
    _, body = _error_invoke(lam, create_function, "def handler(event, context):\n    return {1, 2}\n")
    assert body["errorType"] == "Runtime.MarshalError"
    assert body["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"


def test_runtime_exit(lam, create_function):
    out, body = _error_invoke(lam, create_function, "import sys\ndef handler(event, context):\n    sys.exit(0)\n")
    assert_like(body, recorded("lambda_behavior", "test_lambda_handler_exit", "invocation_error")["Payload"])
    out, body = _error_invoke(lam, create_function, "import os\ndef handler(event, context):\n    os._exit(127)\n")
    assert_like(body, recorded("lambda_behavior", "test_lambda_runtime_wrapper_not_found",
                               "invocation_error")["Payload"])


def test_timeout_then_recovery(lam, create_function):
    code = WARM.replace("def handler(event, context):", "def handler(event, context):\n    import time\n"
                        "    if event.get('hang'): time.sleep(30)")
    fn = create_function(code, Timeout=1)
    name = fn["FunctionName"]
    _, before = call(lam, name, {"write": "x"})
    started = time.monotonic()
    out, body = call(lam, name, {"hang": True}, LogType="Tail")
    assert time.monotonic() - started < 5
    assert out["FunctionError"] == "Unhandled"
    assert_like(body, recorded("lambda_behavior", "test_lambda_invoke_with_timeout", "invoke-result")["Payload"])
    assert "Task timed out after 1.00 seconds" in base64.b64decode(out["LogResult"]).decode()
    # the environment was destroyed: the next invoke is cold and answers normally
    out, after = call(lam, name, {})
    assert "FunctionError" not in out and after["env"] != before["env"] and after["count"] == 1 and after["tmp"] is None


def test_failed_environment_never_poisons_the_next(lam, create_function):
    fn = create_function("import os\nCOUNT = 0\ndef handler(event, context):\n    global COUNT\n    COUNT += 1\n"
                         "    if event.get('die'): os._exit(1)\n    return COUNT\n")
    name = fn["FunctionName"]
    assert call(lam, name, {})[1] == 1
    out, _ = call(lam, name, {"die": True})
    assert out["FunctionError"] == "Unhandled"
    out, body = call(lam, name, {})
    assert "FunctionError" not in out and body == 1


# -- payload limits ------------------------------------------------------------------------------
def test_six_mb_boundaries(lam, create_function):
    fn = create_function("def handler(event, context):\n    return 'x' * event['n']\n", MemorySize=1024)
    name = fn["FunctionName"]
    # a request just under 6 MB is taken, one just over is refused
    pad = "p" * (6 * 1024 * 1024 - 100)
    out = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1, "pad": pad}).encode())
    assert out["Payload"].read() == b'"x"'
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1, "pad": pad + "p" * 200}).encode())
    assert exc.value.response["Error"]["Code"] == "RequestTooLargeException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    # a response of 6 MB passes, a larger one is a function error
    out, body = call(lam, name, {"n": 6 * 1024 * 1024 - 2})
    assert "FunctionError" not in out and len(body) == 6 * 1024 * 1024 - 2
    out, body = call(lam, name, {"n": 6 * 1024 * 1024 + 200})
    assert out["FunctionError"] == "Unhandled"
    assert body == recorded("lambda_behavior", "test_lambda_too_large_response", "invoke_result")["Payload"]


def test_idle_environments_are_reclaimed(tmp_path: Path):
    srv = Server(tmp_path / "data", keep_alive="0.3").start()
    try:
        lam = srv.client()
        from tests.conftest import ROLE, make_zip
        lam.create_function(FunctionName="reaped", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": WARM})})
        _, first = call(lam, "reaped", {})
        _, second = call(lam, "reaped", {})
        assert second["env"] == first["env"]
        time.sleep(1.0)
        _, third = call(lam, "reaped", {})
        assert third["env"] != first["env"] and third["count"] == 1
    finally:
        srv.stop()


def _installed_package_files(*dists: str) -> dict[str, bytes]:
    """The files of installed distributions, to ship inside a function's zip as pip --target would."""
    import importlib.metadata

    files: dict[str, bytes] = {}
    for dist in dists:
        for f in importlib.metadata.files(dist) or []:
            if "__pycache__" in str(f) or ".dist-info" in str(f):
                continue
            files[str(f)] = Path(str(f.locate())).read_bytes()
    return files


def _python_files(version: str) -> dict[str, bytes]:
    """A Python a custom runtime brings in its zip (provided.* has none, as on Lambda): the interpreter, its
    shared library and its standard library (without tests and tools), under python/."""
    from kindling.runtimes.registry import Runtimes

    interpreter = Runtimes().interpreter(f"python{version}")
    assert interpreter is not None
    prefix = Path(interpreter).resolve().parent.parent
    skip = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "turtledemo", "__pycache__", "site-packages"}
    files = {f"python/bin/python{version}": Path(interpreter).read_bytes()}
    for lib in prefix.glob(f"lib/libpython{version}*.so*"):
        files[f"python/lib/{lib.name}"] = lib.read_bytes()
    stdlib = prefix / "lib" / f"python{version}"
    for path in stdlib.rglob("*"):
        rel = path.relative_to(stdlib)
        if path.is_file() and not skip & set(rel.parts) and not rel.parts[0].startswith("config-"):
            files[f"python/lib/python{version}/{rel}"] = path.read_bytes()
    return files


def test_awslambdaric_runs_unmodified_as_the_runtime_client(lam, create_function):
    # Given a custom runtime that brings its own Python, whose bootstrap starts the official runtime interface
    # client from PyPI
    version = f"3.{sys.version_info.minor}"
    bootstrap = ('#!/bin/sh\nexport PYTHONPATH="$LAMBDA_TASK_ROOT" LD_LIBRARY_PATH="$LAMBDA_TASK_ROOT/python/lib"\n'
                 f'exec "$LAMBDA_TASK_ROOT/python/bin/python{version}" -m awslambdaric "$_HANDLER"\n')
    files = {**_installed_package_files("awslambdaric", "simplejson", "snapshot-restore-py"), **_python_files(version),
             "bootstrap": bootstrap, "app.py": CONTEXT}
    modes = {"bootstrap": 0o755, f"python/bin/python{version}": 0o755}
    zip_bytes = make_zip(files, modes=modes)
    fn = create_function(Runtime="provided.al2023", Handler="app.handler", Code={"ZipFile": zip_bytes})
    name = fn["FunctionName"]
    # When it is invoked twice, Then it answers through Kindling's Runtime API with the right context
    out, ctx = call(lam, name, {"a": 1}, LogType="Tail")
    assert "FunctionError" not in out, base64.b64decode(out["LogResult"]).decode()
    assert ctx["function_name"] == name and ctx["invoked_function_arn"] == fn["FunctionArn"]
    assert ctx["aws_request_id"] == out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert 0 < ctx["remaining"] <= 3000
    _, again = call(lam, name, {})
    assert again["env"]["AWS_LAMBDA_LOG_STREAM_NAME"] == ctx["env"]["AWS_LAMBDA_LOG_STREAM_NAME"]  # warm
    # And a handler error comes back in AWS's shape
    lam.update_function_code(FunctionName=name, ZipFile=make_zip(
        {**files, "app.py": 'def handler(event, context):\n    raise ValueError("ric fails")\n'}, modes=modes))
    out, body = call(lam, name, {})
    assert out["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError" and body["errorMessage"] == "ric fails"
