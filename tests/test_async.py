"""Asynchronous invocation against the real server: 202 after a durable write, retries, event age, destinations
(a Kindling function, an SQS queue on moto's server), dead-letter queues, recursion and a kill -9 mid-load."""

from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any

import pytest

from tests.async_support import DELAY_SCALE, Sqs, async_server, log_messages, plain, sqs, wait_for  # noqa: F401
from tests.conftest import ROLE, Server, make_zip, unique
from tests.recorded import assert_like, recorded

SNAPSHOT = "lambda_destinations"

# The recorded tests' handler: returns the event and context, or raises on {"raise_error": 1} (at line 55 of
# handler.py, as the recorded stack trace says).
RECORDED_HANDLER = "\n" * 42 + '''import json
def handler(event, context):
    if not event.get("raise_error"):
        return {"event": event, "context": {
            "invoked_function_arn": context.invoked_function_arn, "function_version": context.function_version,
            "function_name": context.function_name, "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id, "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name, "client_context": context.client_context}}
    print("failing on purpose")
    print("now")
    print("and here")
    print("!")
    raise Exception("Test exception (this is intentional)")
'''
assert RECORDED_HANDLER.splitlines().index('    raise Exception("Test exception (this is intentional)")') == 54

FAILING = 'def handler(event, context):\n    raise Exception("intentional failure")\n'
DURABLE = 'import time\ndef handler(e, c):\n    time.sleep(0.02)\n    print("DONE", e["id"])\n'
TRACE = 'import os\ndef handler(event, context):\n    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}\n'


@pytest.fixture(scope="module")
def lam(async_server: Server):  # noqa: F811, ANN201 - a botocore client
    return async_server.client()


@pytest.fixture
def function(lam):  # noqa: ANN001, ANN201
    """create(code, **CreateFunction args) → name; deleted after the test."""
    made: list[str] = []

    def create(code: str | dict[str, str] = RECORDED_HANDLER, **kwargs: Any) -> str:
        files = {"handler.py": code} if isinstance(code, str) else code
        args: dict[str, Any] = {"FunctionName": unique("async"), "Runtime": "python3.12", "Role": ROLE,
                                "Handler": "handler.handler", "Code": {"ZipFile": make_zip(files)}}
        args.update(kwargs)
        lam.create_function(**args)
        made.append(args["FunctionName"])
        return str(args["FunctionName"])

    yield create
    for name in made:
        lam.delete_function(FunctionName=name)


def event(lam, name: str, payload: Any, trace: str | None = None, **kwargs: Any) -> str:  # noqa: ANN001
    """Invoke asynchronously; the request id (the event's id)."""
    hook = None
    if trace is not None:
        def hook(request: Any, **_: Any) -> None:
            request.headers["X-Amzn-Trace-Id"] = trace
        lam.meta.events.register("before-sign.lambda.Invoke", hook)
    try:
        out = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(payload).encode(), **kwargs)
    finally:
        if hook is not None:
            lam.meta.events.unregister("before-sign.lambda.Invoke", hook)
    assert out["StatusCode"] == 202 and out["Payload"].read() == b""
    return str(out["ResponseMetadata"]["RequestId"])


def destinations(lam, name: str, on_success: str | None = None, on_failure: str | None = None,  # noqa: ANN001
                 **kwargs: Any) -> dict:
    config = {k: {"Destination": v} for k, v in (("OnSuccess", on_success), ("OnFailure", on_failure)) if v}
    return lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig=config, **kwargs)


def body_like(message: dict, snapshot_test: str, key: str = "receive_message_result") -> None:
    expected = recorded(SNAPSHOT, snapshot_test, key)
    assert_like(message["Body"], expected["Messages"][0]["Body"] if "Messages" in expected else expected["Body"])


# -- accepted means durable, then run ---------------------------------------------------------------------
def test_event_answers_202_and_success_record_matches_aws(lam, function, sqs: Sqs):  # noqa: F811
    name = function()
    url, arn = sqs.queue()
    put = destinations(lam, name, on_success=arn, on_failure=arn)
    assert_like(plain(put), recorded(SNAPSHOT, "test_assess_lambda_destination_invocation[Success-payload0]",
                              "put_function_event_invoke_config"))
    request_id = event(lam, name, {})
    [message] = sqs.receive(url)
    body_like(message, "test_assess_lambda_destination_invocation[Success-payload0]")
    body = message["Body"]
    # the function ran with the Invoke's request id, and the record says so
    assert body["requestContext"]["requestId"] == body["responsePayload"]["context"]["aws_request_id"] == request_id
    assert body["requestContext"]["functionArn"].endswith(f":function:{name}:$LATEST")


def test_function_errors_are_retried_with_lambdas_spacing(lam, function, sqs: Sqs,  # noqa: F811
                                                         async_server: Server):  # noqa: F811
    name = function()
    url, arn = sqs.queue()
    destinations(lam, name, on_success=arn, on_failure=arn)  # MaximumRetryAttempts: the default, 2
    request_id = event(lam, name, {"raise_error": 1})
    [message] = sqs.receive(url)
    body_like(message, "test_lambda_destination_default_retries")
    assert message["Body"]["requestContext"]["requestId"] == request_id
    starts = [e["timestamp"] / 1000 for e in log_messages(async_server, name)
              if e["message"].startswith(f"START RequestId: {request_id}")]
    assert len(starts) == 3, starts
    # ~1 minute, then ~2 minutes on Lambda: scaled by async_delay_scale here
    assert starts[1] - starts[0] >= 60 * DELAY_SCALE * 0.95
    assert starts[2] - starts[1] >= 120 * DELAY_SCALE * 0.95


def test_no_retries_when_maximum_retry_attempts_is_0(lam, function, sqs: Sqs):  # noqa: F811
    name = function()
    url, arn = sqs.queue()
    put = destinations(lam, name, on_success=arn, on_failure=arn, MaximumRetryAttempts=0)
    assert_like(plain(put), recorded(SNAPSHOT, "test_assess_lambda_destination_invocation[payload1]",
                              "put_function_event_invoke_config"))
    event(lam, name, {"raise_error": 1})
    [message] = sqs.receive(url)
    body_like(message, "test_assess_lambda_destination_invocation[payload1]")


@pytest.mark.parametrize(("max_age", "key"), [(60, "no_retry_failure_message"),
                                              (120, "single_retry_failure_message")])
def test_maximum_event_age(lam, function, sqs: Sqs, max_age: int, key: str):  # noqa: F811
    # Given retries 60 s and 120 s apart (scaled), an event older than MaximumEventAgeInSeconds when a retry is due
    name = function({"handler.py": "\n" * 5 + FAILING})
    url, arn = sqs.queue()
    destinations(lam, name, on_failure=arn, MaximumEventAgeInSeconds=max_age, MaximumRetryAttempts=2)
    # When it keeps failing
    event(lam, name, {"message": "m-1"})
    # Then it goes to the on-failure destination as EventAgeExceeded, after 1 run (60 s) or 2 runs (120 s)
    [message] = sqs.receive(url)
    assert_like(message["Body"], recorded(SNAPSHOT, "test_maxeventage", key)["Body"])


def test_dead_letter_queue(lam, function, sqs: Sqs):  # noqa: F811
    url, arn = sqs.queue()
    name = function(DeadLetterConfig={"TargetArn": arn}, Timeout=30)
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": arn}
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    request_id = event(lam, name, {"raise_error": 1})
    [message] = sqs.receive(url)
    expected = recorded(SNAPSHOT, "test_dead_letter_queue", "receive_result")["Messages"][0]
    assert_like({k: message[k] for k in expected}, expected)
    assert message["MessageAttributes"]["RequestID"]["StringValue"] == request_id
    # an empty TargetArn removes it
    lam.update_function_configuration(FunctionName=name, DeadLetterConfig={"TargetArn": ""})
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=name)


def test_destination_is_another_function(lam, function, async_server: Server):  # noqa: F811
    # Given a target function that logs the record it gets, as its destination on success and on failure
    target = function('import json\ndef handler(event, context):\n    print("RECORD " + json.dumps(event))\n')
    name = function()
    arn = lam.get_function(FunctionName=target)["Configuration"]["FunctionArn"]
    destinations(lam, name, on_success=arn, on_failure=arn, MaximumRetryAttempts=0)
    # When one event succeeds and one fails
    ok, failed = event(lam, name, {"n": 1}), event(lam, name, {"raise_error": 1})

    def records() -> dict[str, dict]:
        got = [json.loads(e["message"][len("RECORD "):]) for e in log_messages(async_server, target)
               if e["message"].startswith("RECORD ")]
        return {r["requestContext"]["requestId"]: r for r in got} if len(got) >= 2 else {}
    got = wait_for(records, what="two records in the target's log")
    # Then the target got Lambda's record for each
    assert got[ok]["requestContext"]["condition"] == "Success"
    assert got[ok]["requestPayload"] == {"n": 1} and got[ok]["responsePayload"]["event"] == {"n": 1}
    assert got[failed]["requestContext"]["condition"] == "RetriesExhausted"
    assert got[failed]["responseContext"]["functionError"] == "Unhandled"


def test_payload_limit_is_1_mb(lam, function):
    name = function()
    fits = b'"' + b"a" * (1048576 - 2) + b'"'
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=fits)["StatusCode"] == 202
    with pytest.raises(lam.exceptions.RequestTooLargeException) as exc:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=fits[:-1] + b'a"')
    assert exc.value.response["Error"]["Message"] == \
        "Request must be smaller than 1048576 bytes for the InvokeFunction operation"


def test_events_wait_for_reserved_concurrency(lam, function, async_server: Server):  # noqa: F811
    # Given a function with one execution environment at most, each run taking 0.2 s
    name = function("import time\ndef handler(event, context):\n    t = time.time()\n    time.sleep(0.2)\n"
                    "    print('RAN', event['n'], t, time.time())\n")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # When six events arrive at once
    for n in range(6):
        event(lam, name, {"n": n})

    # Then all run, one at a time: a throttle means later, not an error
    def runs() -> list[list[str]]:
        return [e["message"].split()[1:] for e in log_messages(async_server, name) if e["message"].startswith("RAN")]
    ran = wait_for(lambda: len(runs()) == 6 and runs(), what="six runs")
    assert sorted(int(r[0]) for r in ran) == list(range(6))
    spans = sorted((float(r[1]), float(r[2])) for r in ran)
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))  # never two at once


def test_reserved_concurrency_0_fails_events_at_once(lam, function, sqs: Sqs):  # noqa: F811
    name = function()
    url, arn = sqs.queue()
    destinations(lam, name, on_failure=arn)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    request_id = event(lam, name, {"n": 1})
    [message] = sqs.receive(url)
    assert message["Body"]["requestContext"]["requestId"] == request_id
    assert message["Body"]["requestContext"]["approximateInvokeCount"] == 0
    assert message["Body"]["responseContext"]["statusCode"] == 429


# -- recursive loop detection -------------------------------------------------------------------------
def chain(lam, name: str, hops: int) -> str:  # noqa: ANN001
    """Invoke ``name`` ``hops`` times, each with the trace header the previous run saw, as an AWS SDK inside the
    function would send it (functions here cannot reach the API: they have no network)."""
    trace = None
    for _ in range(hops):
        trace = invoke_sync(lam, name, trace)["trace"]
    assert trace is not None
    return trace


def invoke_sync(lam, name: str, trace: str | None) -> dict:  # noqa: ANN001
    def hook(request: Any, **_: Any) -> None:
        if trace is not None:
            request.headers["X-Amzn-Trace-Id"] = trace
    lam.meta.events.register("before-sign.lambda.Invoke", hook)
    try:
        return json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    finally:
        lam.meta.events.unregister("before-sign.lambda.Invoke", hook)


def test_recursive_loop_is_stopped_after_16_invocations(lam, function, sqs: Sqs):  # noqa: F811
    name = function(TRACE)
    trace = chain(lam, name, 16)
    assert re.search(r"Lineage=[0-9a-f]{8}:16", trace), trace
    # the 17th synchronous invoke of the chain is refused
    with pytest.raises(lam.exceptions.RecursiveInvocationException):
        invoke_sync(lam, name, trace)
    # an asynchronous one goes to the on-failure destination without running
    url, arn = sqs.queue()
    destinations(lam, name, on_failure=arn)
    request_id = event(lam, name, {"hop": 17}, trace=trace)
    [message] = sqs.receive(url)
    ctx = message["Body"]["requestContext"]
    assert ctx["requestId"] == request_id and ctx["approximateInvokeCount"] == 0
    assert message["Body"]["responsePayload"]["errorType"] == "RecursiveInvocationException"
    # with RecursiveLoop Allow the chain goes on
    lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert "Lineage=" in invoke_sync(lam, name, trace)["trace"]


def test_a_chain_through_destinations_is_stopped(lam, function, sqs: Sqs,  # noqa: F811
                                                 async_server: Server):  # noqa: F811
    # Given two functions that are each other's on-success destination: an endless loop
    a, b = function(TRACE), function(TRACE)
    url, arn = sqs.queue()
    arn_of = {n: lam.get_function(FunctionName=n)["Configuration"]["FunctionArn"] for n in (a, b)}
    destinations(lam, a, on_success=arn_of[b], on_failure=arn)
    destinations(lam, b, on_success=arn_of[a], on_failure=arn)
    # When one event starts it
    event(lam, a, {})
    # Then it stops after 16 runs of each, and the stopped event goes to the on-failure destination
    [message] = sqs.receive(url, timeout=60)
    assert message["Body"]["responsePayload"]["errorType"] == "RecursiveInvocationException"
    runs = {n: sum(e["message"].startswith("START") for e in log_messages(async_server, n)) for n in (a, b)}
    assert runs == {a: 16, b: 16}


# -- durability ---------------------------------------------------------------------------------------------
def test_no_accepted_event_is_lost_when_the_server_is_killed(tmp_path):
    # Given a server answering 202s to concurrent clients faster than the function runs them (a backlog)
    settings = {"async_delay_scale": str(DELAY_SCALE)}
    server = Server(tmp_path / "data", **settings).start()
    lam = server.client()
    name = unique("durable")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": DURABLE})})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    acked: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        c = server.client()
        try:
            while not stop.is_set():
                ident = uuid.uuid4().hex
                try:
                    out = c.invoke(FunctionName=name, InvocationType="Event",
                                   Payload=json.dumps({"id": ident}).encode())
                except Exception:
                    return  # the server is gone
                if out["StatusCode"] == 202:
                    acked.add(ident)
        finally:
            c.close()  # its pooled connections to the killed server (else an unraisable ResourceWarning later)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    # When it is killed with -9 while answering
    wait_for(lambda: len(acked) >= 300, timeout=30, what="300 accepted events")
    server.stop(kill=True)
    stop.set()
    for t in threads:
        t.join(30)
    lam.close()
    ran_before = {e["message"].split()[1] for e in log_messages(server, name) if e["message"].startswith("DONE ")}
    assert len(acked - ran_before) > 0, "no backlog at the kill: the restart path was not exercised"
    # and started again on the same data dir
    server = Server(tmp_path / "data", **settings).start()
    try:
        # Then every event that got a 202 runs, at least once
        def processed() -> set[str]:
            return {e["message"].split()[1] for e in log_messages(server, name) if e["message"].startswith("DONE ")}
        wait_for(lambda: acked <= processed(), timeout=60,
                 what=f"all {len(acked)} accepted events to run (missing {len(acked - processed())})")
        runs = [e for e in log_messages(server, name) if e["message"].startswith("DONE ")]
        print(f"{len(acked)} accepted, {len(acked - ran_before)} not yet run at the kill, {len(processed())} "
              f"distinct ran, {len(runs)} runs ({len(runs) - len(processed())} duplicates)")
    finally:
        server.stop()
