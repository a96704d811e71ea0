"""Node.js runtimes (nodejs20.x): Kindling's own runtime client as a Lambda user meets it.

Handlers of every kind (CommonJS, ES modules, nested paths, async, callbacks), the context object, Lambda's error
shapes (the recorded ones), console logging in Text and JSON, timeouts, the exec wrapper, crashes, the environment
against the recorded introspection, the AWS SDK for JavaScript, AWS's own runtime interface client in a custom
runtime, and hostile handlers (with a bystander).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial import Bystander
from tests.conftest import ROLE, Server, delete_functions, make_zip, unique
from tests.recorded import assert_like, recorded

RUNTIME = "nodejs20.x"
ROOT = Path(__file__).resolve().parents[1]


def _node_major() -> int | None:
    node = shutil.which("node")
    if node is None:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout
    return int(out.strip().lstrip("v").split(".")[0])


pytestmark = pytest.mark.skipif(_node_major() != 20, reason="needs node v20 on PATH (this host's nodejs20.x)")


@pytest.fixture
def node_function(lam):  # noqa: ANN001, ANN201
    """node_function(files, handler=..., **CreateFunction args): a nodejs20.x function deleted after the test."""
    made: list[str] = []

    def create(files: dict[str, str | bytes], handler: str = "index.handler", **kwargs: object) -> str:
        name = unique("node")
        args: dict[str, Any] = {"FunctionName": name, "Runtime": RUNTIME, "Role": ROLE, "Handler": handler,
                                "Code": {"ZipFile": make_zip(files, kwargs.pop("modes", None))}}  # type: ignore[arg-type]
        args.update(kwargs)
        lam.create_function(**args)
        made.append(name)
        return name

    yield create
    delete_functions(lam, made)


def invoke(lam: Any, name: str, payload: Any = None, **kwargs: Any) -> tuple[Any, str | None, str]:
    """(decoded payload, FunctionError, log tail)."""
    out = lam.invoke(FunctionName=name, Payload=json.dumps({} if payload is None else payload).encode(),
                     LogType="Tail", **kwargs)
    body = out["Payload"].read()
    return json.loads(body) if body else None, out.get("FunctionError"), base64.b64decode(out["LogResult"]).decode()


ECHO_CONTEXT = """
exports.handler = async (event, context) => ({
  event, remaining: context.getRemainingTimeInMillis(), waits: context.callbackWaitsForEmptyEventLoop,
  ctx: Object.fromEntries(['functionName', 'functionVersion', 'invokedFunctionArn', 'memoryLimitInMB',
    'awsRequestId', 'logGroupName', 'logStreamName', 'identity', 'clientContext']
    .map((k) => [k, context[k] === undefined ? '<undefined>' : context[k]])),
  trace: process.env._X_AMZN_TRACE_ID,
});
"""


# ------------------------------------------------------------------------------------------- handlers --


def test_commonjs_async_handler_gets_event_and_context(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": ECHO_CONTEXT}, MemorySize=256, Timeout=7)
    body, error, _ = invoke(lam, name, {"hello": "node"})
    assert error is None, body
    assert body["event"] == {"hello": "node"}
    ctx = body["ctx"]
    assert ctx["functionName"] == name and ctx["functionVersion"] == "$LATEST"
    assert ctx["invokedFunctionArn"].endswith(f":function:{name}")
    assert ctx["memoryLimitInMB"] == "256"  # a string, as on Lambda
    assert re.fullmatch(r"[0-9a-f-]{36}", ctx["awsRequestId"])
    assert ctx["logGroupName"] == f"/aws/lambda/{name}" and "[$LATEST]" in ctx["logStreamName"]
    assert ctx["identity"] == "<undefined>" and ctx["clientContext"] == "<undefined>"
    assert 5000 < body["remaining"] <= 7000 and body["waits"] is True
    assert body["trace"].startswith("Root=")


def test_client_context_reaches_the_handler(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": ECHO_CONTEXT})
    cc = base64.b64encode(json.dumps({"custom": {"k": "v"}, "env": {"e": "1"}}).encode()).decode()
    body, error, _ = invoke(lam, name, ClientContext=cc)
    assert error is None and body["ctx"]["clientContext"]["custom"] == {"k": "v"}, body


@pytest.mark.parametrize("files, handler", [
    ({"index.mjs": "export const handler = async (e) => ({kind: 'mjs', e});"}, "index.handler"),
    ({"index.js": "export const handler = async (e) => ({kind: 'type-module', e});",
      "package.json": '{"type": "module"}'}, "index.handler"),
    ({"app.cjs": "module.exports.handler = async (e) => ({kind: 'cjs', e});"}, "app.handler"),
    ({"src/handlers/deep.js": "exports.nested = {fn: async (e) => ({kind: 'nested', e})};"},
     "src/handlers/deep.nested.fn"),
    ({"lib/esm/h.mjs": "export async function handler(e) { return {kind: 'nested-mjs', e}; }"}, "lib/esm/h.handler"),
], ids=["mjs", "type-module", "cjs", "nested-commonjs", "nested-mjs"])
def test_module_kinds(lam, node_function, files, handler) -> None:  # noqa: ANN001
    name = node_function(files, handler=handler)
    body, error, _ = invoke(lam, name, {"n": 1})
    assert error is None, body
    assert body["e"] == {"n": 1} and body["kind"] in ("mjs", "type-module", "cjs", "nested", "nested-mjs")


CALLBACKS = """
exports.handler = (event, context, callback) => {
  context.callbackWaitsForEmptyEventLoop = event.wait;
  setTimeout(() => console.log('timer fired'), 300);
  callback(null, {answered: Date.now()});
};
"""


def test_callback_waits_for_the_empty_event_loop(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": CALLBACKS})
    start = time.time()
    body, error, log = invoke(lam, name, {"wait": True})
    assert error is None and "timer fired" in log, (body, log)
    assert time.time() - start >= 0.3
    # The timer ran before the response went out: its line is in this invoke's log, before END.
    assert log.index("timer fired") < log.index("END RequestId")


def test_callback_without_waiting_answers_at_once(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": CALLBACKS})
    invoke(lam, name, {"wait": True})  # the cold start out of the way
    start = time.time()
    body, error, log = invoke(lam, name, {"wait": False})
    assert error is None and "answered" in body
    assert time.time() - start < 0.3 and "timer fired" not in log.split("START")[-1].split("END")[0]


@pytest.mark.parametrize("code, expected", [
    ("exports.handler = (e, c) => { c.succeed({via: 'succeed'}); };", {"via": "succeed"}),
    ("exports.handler = (e, c) => { c.done(null, {via: 'done'}); };", {"via": "done"}),
    ("exports.handler = (e, c, cb) => { cb(null, 1); cb(null, 2); };", 1),
    ("exports.handler = () => {};", None),  # a sync handler that never answers: null, as on Lambda
    ("exports.handler = async () => undefined;", None),
], ids=["succeed", "done", "first-callback-wins", "sync-no-answer", "async-undefined"])
def test_answer_styles(lam, node_function, code, expected) -> None:  # noqa: ANN001
    name = node_function({"index.js": code})
    body, error, _ = invoke(lam, name)
    assert error is None and body == expected


# --------------------------------------------------------------------------------------------- errors --


def test_uncaught_exception_as_recorded(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async () => { throw new Error('Error: some_error_msg'); };"})
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    result = {"ExecutedVersion": out["ExecutedVersion"], "FunctionError": out["FunctionError"],
              "Payload": json.loads(out["Payload"].read()), "StatusCode": out["StatusCode"],
              "ResponseMetadata": out["ResponseMetadata"]}
    expected = recorded("lambda_runtimes_common", f"test_uncaught_exception_invoke[{RUNTIME}]", "error_result")
    assert_like(result, expected)
    trace = result["Payload"]["trace"]
    assert trace[0] == "Error: Error: some_error_msg" and "/var/task/index.js" in trace[1]


@pytest.mark.parametrize("files, handler, error_type, message", [
    ({"index.js": "exports.other = 1;"}, "missing.handler", "Runtime.ImportModuleError",
     "Error: Cannot find module 'missing'\nRequire stack:\n- /var/runtime/index.mjs"),
    ({"index.js": "exports.other = 1;"}, "index.handler", "Runtime.HandlerNotFound",
     "index.handler is undefined or not exported"),
    ({"index.js": "exports.handler = 42;"}, "index.handler", "Runtime.HandlerNotFound",
     "index.handler is not a function"),
    ({"index.js": "exports.handler = async () => {;"}, "index.handler", "Runtime.UserCodeSyntaxError",
     "SyntaxError: Unexpected end of input"),
    ({"index.js": "exports.handler = 1;"}, "nodots", "Runtime.MalformedHandlerName", "Bad handler"),
    ({"index.js": "throw new TypeError('init went wrong');"}, "index.handler", "TypeError", "init went wrong"),
    ({"index.js": "require('not-installed-anywhere'); exports.handler = 1;"}, "index.handler",
     "Runtime.ImportModuleError", "Error: Cannot find module 'not-installed-anywhere'"),
], ids=["import", "not-exported", "not-a-function", "syntax", "malformed", "init-throws", "missing-dependency"])
def test_init_errors(lam, node_function, files, handler, error_type, message) -> None:  # noqa: ANN001
    name = node_function(files, handler=handler)
    body, error, log = invoke(lam, name)
    assert error == "Unhandled", body
    assert body["errorType"] == error_type, body
    assert body["errorMessage"].startswith(message), body
    assert isinstance(body["trace"], list)
    # Lambda's log line for it: the request id is not known yet during init.
    assert re.search(r"\tundefined\tERROR\tUncaught Exception \t\{\"errorType\":\"" + re.escape(error_type), log), log


def test_unhandled_rejection_during_an_invoke(lam, node_function) -> None:  # noqa: ANN001
    code = """
exports.handler = async () => {
  Promise.reject(new Error('nobody caught me'));
  await new Promise((r) => setTimeout(r, 200));
  return 'unreachable';
};"""
    name = node_function({"index.js": code})
    body, error, log = invoke(lam, name)
    assert error == "Unhandled"
    assert body["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert body["errorMessage"] == "Error: nobody caught me"
    assert "Unhandled Promise Rejection" in log
    # The runtime exits after posting it (as AWS's client does): the next invoke runs in a new environment, never
    # in the exiting one (Kindling waits for the runtime's next /next or its exit before keeping it)
    for _ in range(3):
        body, error, _ = invoke(lam, name)
        assert body["errorType"] == "Runtime.UnhandledPromiseRejection", body


def test_promise_never_settled_with_nothing_left_to_run(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async () => new Promise(() => {});"})
    start = time.time()
    body, error, _ = invoke(lam, name)
    assert error == "Unhandled" and body["errorType"] == "Runtime.NodeJsExit", body
    assert time.time() - start < 2.5  # answered when the event loop emptied, not at the timeout


@pytest.mark.parametrize("thrown, error_type, message", [
    ("'a plain string'", "string", "a plain string"),
    ("42", "number", "42"),
    ("(() => { const o = {a: 1}; o.self = o; return o; })()", "object", "[object Object]"),
    ("{toString() { throw new Error('no'); }}", "handled",
     "callback called with Error argument, but there was a problem while retrieving one or more of its message, "
     "name, and stack"),
], ids=["string", "number", "circular", "unprintable"])
def test_non_error_values_thrown(lam, node_function, thrown, error_type, message) -> None:  # noqa: ANN001
    name = node_function({"index.js": f"exports.handler = async () => {{ throw {thrown}; }};"})
    body, error, _ = invoke(lam, name)
    assert error == "Unhandled" and body["errorType"] == error_type and body["errorMessage"] == message, body


def test_rejecting_with_null_and_throwing_null(lam, node_function) -> None:  # noqa: ANN001
    async_null = node_function({"index.js": "exports.handler = async () => { throw null; };"})
    body, error, _ = invoke(lam, async_null)
    assert error == "Unhandled" and body == {"errorType": "string", "errorMessage": "handled", "trace": []}
    sync_null = node_function({"index.js": "exports.handler = (e, c, cb) => { throw null; };"})
    body, error, _ = invoke(lam, sync_null)  # callback(null): a success with no result, as the RIC does it
    assert error is None and body is None


def test_unserializable_result(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async () => ({big: 10n});"})
    body, error, _ = invoke(lam, name)
    assert error == "Unhandled" and body["errorType"] == "Error"
    assert body["errorMessage"] == "Unable to stringify response body"


def test_crash_mid_invoke(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async (e) => { if (e.crash) process.exit(3); return 'ok'; };"})
    body, error, log = invoke(lam, name, {"crash": True})
    assert error == "Unhandled" and body["errorType"] == "Runtime.ExitError", body
    assert "exit status 3" in body["errorMessage"]
    assert invoke(lam, name)[0] == "ok"


def test_timeout(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async (e) => { if (e.hang) await new Promise(() => "
                                      "setInterval(() => {}, 1000)); return 'ok'; };"}, Timeout=1)
    body, error, log = invoke(lam, name, {"hang": True})
    assert error == "Unhandled" and "Task timed out after 1.00 seconds" in body["errorMessage"], body
    assert invoke(lam, name)[0] == "ok"


# -------------------------------------------------------------------------------------------- logging --

LOGS = """
exports.handler = async () => {
  console.log('info line', {a: 1});
  console.debug('debug line');
  console.warn('warn line');
  console.error('error line', new Error('shown'));
  console.log('multi\\nline');
  return 'ok';
};
"""


def test_text_log_format(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": LOGS})
    _, error, log = invoke(lam, name)
    rid = re.search(r"START RequestId: (\S+)", log).group(1)  # type: ignore[union-attr]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.search(rf"^{stamp}\t{rid}\tINFO\tinfo line {{ a: 1 }}$", log, re.M), log
    assert re.search(rf"^{stamp}\t{rid}\tDEBUG\tdebug line$", log, re.M)
    assert re.search(rf"^{stamp}\t{rid}\tWARN\twarn line$", log, re.M)
    assert re.search(rf"^{stamp}\t{rid}\tERROR\terror line Error: shown\r    at ", log, re.M)
    assert f"\t{rid}\tINFO\tmulti\rline\n" in log  # one record per call: newlines become \r


def test_json_log_format_and_level(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": LOGS}, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"})
    _, error, log = invoke(lam, name)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    app = [r for r in records if "level" in r]
    assert [r["level"] for r in app] == ["WARN", "ERROR"], records
    warn, err = app
    assert warn["message"] == "warn line" and re.fullmatch(r"[0-9a-f-]{36}", warn["requestId"])
    assert err["errorType"] == "Error" and err["errorMessage"] == "shown" and err["stackTrace"][0] == "Error: shown"


def test_error_logged_in_text_as_lambda_does(lam, node_function) -> None:  # noqa: ANN001
    name = node_function({"index.js": "exports.handler = async () => { const e = new Error('bad'); e.code = 'E1';"
                                      " throw e; };"})
    _, _, log = invoke(lam, name)
    line = next(x for x in log.splitlines() if "\tERROR\tInvoke Error" in x)
    shown = json.loads(line.split("Invoke Error \t", 1)[1])
    assert shown["errorType"] == "Error" and shown["errorMessage"] == "bad" and shown["code"] == "E1"
    assert shown["stack"][0] == "Error: bad"


# --------------------------------------------------------------------------------- environment, wrapper --


def test_environment_matches_the_recorded_introspection(lam, node_function) -> None:  # noqa: ANN001
    expected = recorded("lambda_runtimes_common", f"test_introspection_invoke[{RUNTIME}]", "invocation_result_payload")
    name = node_function({"index.js": "exports.handler = async () => ({environment: process.env});"},
                         MemorySize=1024, Environment={"Variables": {"TEST_KEY": "TEST_VAL"}})
    body, error, _ = invoke(lam, name)
    ours = body["environment"]
    # Documented differences (docs/runtimes.md): Kindling adds its service endpoints (AWS_ENDPOINT_URL_*); nothing else
    missing = set(expected["environment"]) - set(ours)
    extra = {k for k in set(ours) - set(expected["environment"]) if not k.startswith("AWS_ENDPOINT_URL")}
    assert not missing, missing
    assert not extra, extra
    same = {k: v for k, v in expected["environment"].items() if k in ours}
    assert_like({k: ours[k] for k in same}, same)


def test_exec_wrapper(lam, node_function) -> None:  # noqa: ANN001
    # AWS's documented pattern: a script that adds to the environment and to node's options, then execs the rest.
    wrapper = ('#!/bin/sh\nexport WRAPPED="by the wrapper"\nnode="$1"\nshift\n'
               'exec "$node" --require /var/task/preload.js "$@" --ignored-argument\n')
    name = node_function({"index.js": "exports.handler = async () => ({wrapped: process.env.WRAPPED, "
                                      "preloaded: globalThis.PRELOADED, execArgv: process.execArgv});",
                          "preload.js": "globalThis.PRELOADED = 'yes';",
                          "environment_wrapper": wrapper}, modes={"environment_wrapper": 0o755},
                         Environment={"Variables": {"AWS_LAMBDA_EXEC_WRAPPER": "/var/task/environment_wrapper"}},
                         MemorySize=512)
    body, error, _ = invoke(lam, name)
    assert error is None, body
    assert body["wrapped"] == "by the wrapper" and body["preloaded"] == "yes"
    # Lambda's node flags reach node through the wrapper's "$@"
    assert body["execArgv"] == ["--require", "/var/task/preload.js", "--expose-gc", "--max-http-header-size", "81920",
                                "--max-semi-space-size=25", "--max-old-space-size=461"]


# ------------------------------------------------------------------------------------ SDK and the RIC --

SDK_DIR = ROOT / "kindling" / "runtimes" / "python" / "node_modules" / "@aws-sdk" / "client-lambda"


SDK_CJS = """
const { LambdaClient, GetFunctionCommand } = require('@aws-sdk/client-lambda');
exports.handler = async (event) => {
  const fn = await new LambdaClient({}).send(new GetFunctionCommand({FunctionName: event.name}));
  return {name: fn.Configuration.FunctionName, runtime: fn.Configuration.Runtime,
          where: require.resolve('@aws-sdk/client-lambda')};
};"""
# An ES module importing the runtime's SDK: Lambda's node resolves ES imports through NODE_PATH too.
SDK_ESM = """
import { LambdaClient, GetFunctionCommand } from '@aws-sdk/client-lambda';
export const handler = async (event) => {
  const fn = await new LambdaClient({}).send(new GetFunctionCommand({FunctionName: event.name}));
  return {name: fn.Configuration.FunctionName, runtime: fn.Configuration.Runtime,
          where: '/var/runtime/node_modules/@aws-sdk/client-lambda/', url: import.meta.url};
};"""


@pytest.mark.skipif(not SDK_DIR.is_dir(), reason="the AWS SDK for JavaScript is not installed (make; needs npm)")
@pytest.mark.parametrize("files", [{"index.js": SDK_CJS}, {"index.mjs": SDK_ESM}], ids=["require", "import"])
def test_sdk_v3_calls_kindling_with_the_role(lam, node_function, files) -> None:  # noqa: ANN001
    name = node_function(files, Timeout=15, MemorySize=256)
    body, error, log = invoke(lam, name, {"name": name})
    assert error is None, (body, log)
    assert body["name"] == name and body["runtime"] == RUNTIME
    assert body["where"].startswith("/var/runtime/node_modules/@aws-sdk/client-lambda/")


RIC = ROOT / "build" / "aws-lambda-ric-3.3.0" / "node_modules"


@pytest.mark.skipif(not (RIC / "aws-lambda-ric" / "dist" / "rapid-client.node").exists(),
                    reason="aws-lambda-ric is not built (make .venv/.test-installed builds it: cmake, autoconf, g++)")
def test_official_aws_lambda_ric_in_a_custom_runtime(lam, node_function) -> None:  # noqa: ANN001
    """AWS's own Node runtime interface client, unmodified, in provided.al2023 with the function's own node."""
    files: dict[str, str | bytes] = {
        "bootstrap": "#!/bin/sh\ncd \"$LAMBDA_TASK_ROOT\"\nexec ./bin/node ./node_modules/aws-lambda-ric/bin/index.mjs "
                     "\"$_HANDLER\"\n",
        "index.mjs": "export const handler = async (event, context) => ({ric: true, event, id: context.awsRequestId});",
        "bin/node": Path(shutil.which("node") or "/usr/bin/node").resolve().read_bytes(),
    }
    modes = {"bootstrap": 0o755, "bin/node": 0o755}
    ric = RIC / "aws-lambda-ric"
    for sub in ("package.json", "bin", "dist"):
        for path in ([ric / sub] if sub == "package.json" else sorted((ric / sub).rglob("*"))):
            if path.is_file():
                key = f"node_modules/aws-lambda-ric/{path.relative_to(ric)}"
                files[key] = path.read_bytes()
                if path.stat().st_mode & 0o111:
                    modes[key] = 0o755
    name = node_function(files, Runtime="provided.al2023", modes=modes, Timeout=10)
    body, error, log = invoke(lam, name, {"via": "ric"})
    assert error is None, (body, log)
    assert body["ric"] is True and body["event"] == {"via": "ric"} and re.fullmatch(r"[0-9a-f-]{36}", body["id"])
    assert "Executing 'index.handler' in function directory '/var/task'" in log


# ---------------------------------------------------------------------------------------- the registry --


def test_registry_finds_node_by_major_version() -> None:
    from kindling.runtimes.registry import Runtimes

    node = str(Path(shutil.which("node") or "node").resolve())
    assert Runtimes().interpreter("nodejs20.x") == node
    assert Runtimes(f"nodejs20.x={node}").interpreter("nodejs20.x") == node
    assert Runtimes(f"nodejs22.x={node}").interpreter("nodejs22.x") is None  # named, but it is node 20
    assert "nodejs20.x" in Runtimes().found()
    argv = Runtimes().command("nodejs20.x", "/var/task", "/var/runtime", memory_mb=2048)
    assert argv == [node, "--expose-gc", "--max-http-header-size", "81920", "--max-semi-space-size=102",
                    "--max-old-space-size=1844", "/var/runtime/index.cjs"]
    # Seen through the layout's /var/lang, behind a wrapper:
    argv = Runtimes().command("nodejs20.x", "/var/task", "/var/runtime", "/var/lang", "/var/task/w", 128)
    assert argv[:2] == ["/var/task/w", "/var/lang/bin/node"] and argv[-1] == "/var/runtime/index.cjs"


def test_serve_says_which_runtimes_it_found(server: Server, lam) -> None:  # noqa: ANN001
    lines = [x for x in server.log_path.read_text().splitlines() if x.startswith("Runtimes: ")]
    assert lines and "nodejs20.x" in lines[0].split(": ", 1)[1].split(", ") and "python3.12" in lines[0]


# -------------------------------------------------------------------------------------------- hostile --


def test_runtime_missing_on_the_host_is_refused_as_aws_does(lam) -> None:  # noqa: ANN001
    if shutil.which("node18") or _node_major() == 18:
        pytest.skip("this host has node 18")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as info:
        lam.create_function(FunctionName=unique("node18"), Runtime="nodejs18.x", Role=ROLE, Handler="index.handler",
                            Code={"ZipFile": make_zip({"index.js": "exports.handler = async () => 1;"})})
    assert "nodejs18.x is not available on this Kindling host" in str(info.value)


HOSTILE = """
exports.handler = async (event) => {
  switch (event.kind) {
    case 'block': for (;;) {}
    case 'flood': for (let i = 0; ; i++) console.log('x'.repeat(1000) + i);
    case 'forever': return new Promise(() => setInterval(() => {}, 1000));
    case 'huge': throw new Error('m'.repeat(8 * 1024 * 1024));
    case 'big': throw new Error('b'.repeat(200 * 1024));
    case 'huge-string': throw 's'.repeat(8 * 1024 * 1024);
    case 'deep': { let o = {}; const root = o; for (let i = 0; i < 100000; i++) { o.n = {}; o = o.n; } throw root; }
    case 'stdout': for (;;) process.stdout.write('y'.repeat(65536));
  }
  return 'fine';
};
"""


@pytest.mark.parametrize("kind, expect", [
    ("block", "Task timed out"), ("flood", "Task timed out"), ("forever", "Task timed out"),
    ("huge", "mmmm"), ("big", "bbbb"), ("huge-string", "ssss"), ("deep", "[object Object]"),
    ("stdout", "Task timed out"),
])
def test_hostile_handlers_are_bounded(hostile_server: Server, bystander: Bystander, kind: str, expect: str) -> None:
    lam = hostile_server.client()
    name = unique("node-hostile")
    lam.create_function(FunctionName=name, Runtime=RUNTIME, Role=ROLE, Handler="index.handler", MemorySize=1024,
                        Timeout=1 if expect == "Task timed out" else 3,
                        Code={"ZipFile": make_zip({"index.js": HOSTILE})})
    try:
        start = time.time()
        out = lam.invoke(FunctionName=name, Payload=json.dumps({"kind": kind}).encode())
        body = out["Payload"].read()
        assert time.time() - start < 15
        assert out.get("FunctionError") == "Unhandled"
        assert len(body) <= 6291556 + 1024
        assert expect in body[:100000].decode("utf-8", "replace"), body[:300]
        bystander.check()
        again = lam.invoke(FunctionName=name, Payload=b'{"kind": "none"}')  # the function itself recovers
        assert json.loads(again["Payload"].read()) == "fine"
    finally:
        lam.delete_function(FunctionName=name)
