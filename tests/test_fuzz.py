"""Fuzzing: correctly signed but mutated requests for every operation Kindling serves never fail the server.

The generator is bench/fuzz_api.py's (built from botocore's ``lambda`` and ``logs`` models): wrong JSON types,
huge numbers, long and empty strings, odd unicode and lone surrogates, invalid UTF-8, deep nesting,
percent-encoded junk in URI labels, bad query strings and headers. Seeded and bounded (a few thousand
requests, about a minute); `bench/fuzz_api.py --seconds 600` runs the same generator for longer.

Oracle: no 5xx, no traceback in the server's log, no request without an answer within its timeout; afterwards
the functions and log groups the server said it created (and not deleted) are exactly those it lists, a
function the fuzzer only read still reads and invokes as before, and the bystander answers within 2x its p50.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import HELLO, ROLE, make_zip, unique

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz_api  # noqa: E402  (bench/ is no package)

SEED = 8
REQUESTS = 5000
SECONDS = 60  # the bound; a run on a quiet machine takes ~10 s
TIMEOUT = 30  # per request: a request unanswered by then is a hang


def test_fuzzed_requests_get_no_5xx_no_traceback_no_hang_and_leave_state_consistent(hostile_server, bystander):
    # Given a function the fuzzer only reads and invokes, and the bystander's baseline
    lam = hostile_server.client()
    keep = unique("fuzz-keep")
    lam.create_function(FunctionName=keep, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    lam.invoke(FunctionName=keep, Payload=b"{}")
    fuzzer = fuzz_api.Fuzzer(hostile_server.endpoint, hostile_server.keys, hostile_server.log_path, SEED, keep,
                             timeout=TIMEOUT)

    # When a few thousand mutated, correctly signed requests hit every served operation
    report = fuzzer.run(REQUESTS, SECONDS)

    # Then none failed the server, and what it said it did is what it holds
    assert report.requests >= 1000, report.summary()
    assert not report.failures, report.summary(limit=10)
    lambda_ops, logs_ops = fuzz_api.served()
    assert len(report.by_operation) == len(lambda_ops) + len(logs_ops)
    assert report.statuses[400] > report.requests // 4  # most mutations are refused, as they should be
    assert sum(n for code, n in report.statuses.items() if 200 <= code < 300) > report.requests // 20
    fuzz_api.check_state(lam, hostile_server.client("logs"), fuzzer.tracker, keep)
    bystander.check()


def _lambda(method: str, path: str, doc: Any = None, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> fuzz_api.Request:
    data = body if body is not None else b"" if doc is None else json.dumps(doc).encode()
    return fuzz_api.Request("lambda", "", method, path, "", headers or {}, data, "")


def _logs(operation: str, doc: Any = None, body: bytes | None = None) -> fuzz_api.Request:
    headers = {"X-Amz-Target": fuzz_api.LOGS_TARGET + operation, "Content-Type": "application/x-amz-json-1.1"}
    return fuzz_api.Request("logs", operation, "POST", "/", "", headers,
                            body if body is not None else json.dumps(doc).encode(), "")


FN = "/2015-03-31/functions/{}"
DEEP = 200_000
# (request, error type): each crashed deep in a service or store before its type was checked (HTTP 500)
WRONG_TYPES = {
    "tags-list": (lambda f: _lambda("POST", f"/2017-03-31/tags/{ARN}{f}", {"Tags": ["a"]}), "SerializationException"),
    "tags-value": (lambda f: _lambda("POST", f"/2017-03-31/tags/{ARN}{f}", {"Tags": {"k": 1}}),
                   "SerializationException"),
    "alias-name": (lambda f: _lambda("POST", FN.format(f) + "/aliases", {"Name": ["a"], "FunctionVersion": "1"}),
                   "SerializationException"),
    "alias-weights": (lambda f: _lambda("POST", FN.format(f) + "/aliases", {
        "Name": "a", "FunctionVersion": "$LATEST", "RoutingConfig": {"AdditionalVersionWeights": {"1": "x"}}}),
        "SerializationException"),
    "concurrency-string": (lambda f: _lambda("PUT", f"/2017-10-31/functions/{f}/concurrency",
                                             {"ReservedConcurrentExecutions": "5"}), "SerializationException"),
    "concurrency-huge": (lambda f: _lambda("PUT", f"/2017-10-31/functions/{f}/concurrency",
                                           {"ReservedConcurrentExecutions": 2**64}), "SerializationException"),
    "provisioned-float": (lambda f: _lambda("PUT", f"/2019-09-30/functions/{f}/provisioned-concurrency?Qualifier=1",
                                            {"ProvisionedConcurrentExecutions": 1.5}), "SerializationException"),
    "event-config-destination": (lambda f: _lambda("PUT", f"/2019-09-25/functions/{f}/event-invoke-config", {
        "DestinationConfig": {"OnFailure": "arn:aws:sqs:us-east-1:000000000000:q"}}), "SerializationException"),
    "event-config-age": (lambda f: _lambda("PUT", f"/2019-09-25/functions/{f}/event-invoke-config",
                                           {"MaximumEventAgeInSeconds": [60]}), "SerializationException"),
    "config-environment": (lambda f: _lambda("PUT", FN.format(f) + "/configuration",
                                             {"Environment": {"Variables": ["A=1"]}}), "SerializationException"),
    "config-memory-bool": (lambda f: _lambda("PUT", FN.format(f) + "/configuration", {"MemorySize": True}),
                           "SerializationException"),
    "config-surrogate": (lambda f: _lambda("PUT", FN.format(f) + "/configuration", {"Description": "\ud800"}),
                         "SerializationException"),
    "code-blob-number": (lambda f: _lambda("PUT", FN.format(f) + "/code", {"ZipFile": 5}), "SerializationException"),
    "code-blob-object": (lambda f: _lambda("POST", "/2015-03-31/functions", {
        "FunctionName": f + "x", "Role": ROLE, "Runtime": "python3.12", "Handler": "app.handler",
        "Code": {"ZipFile": {"a": 1}}}), "SerializationException"),
    "list-max-items-huge": (lambda f: _lambda("GET", "/2015-03-31/functions?MaxItems=99999999999999999999"),
                            "InvalidParameterValueException"),
    "deep-body": (lambda f: _lambda("PUT", FN.format(f) + "/configuration", body=b"[" * DEEP + b"]" * DEEP),
                  "InvalidRequestContentException"),
    "deep-member": (lambda f: _lambda("PUT", FN.format(f) + "/configuration",
                                      body=b'{"Description": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
                    "InvalidRequestContentException"),
    # base64 of b"\xd1\xaf\x75": a character no Runtime API header can carry (the invoke waited for its timeout)
    "client-context-not-latin1": (lambda f: _lambda("POST", FN.format(f) + "/invocations", {}, headers={
        "X-Amz-Client-Context": "0a91"}), "InvalidRequestContentException"),
    "client-context-list": (lambda f: _lambda("POST", FN.format(f) + "/invocations", {}, headers={
        "X-Amz-Client-Context": "W10="}), "InvalidRequestContentException"),
    "logs-group-list": (lambda f: _logs("CreateLogGroup", {"logGroupName": ["a"]}), "SerializationException"),
    "logs-limit-string": (lambda f: _logs("DescribeLogGroups", {"limit": "5"}), "SerializationException"),
    "logs-start-huge": (lambda f: _logs("GetLogEvents", {"logGroupName": f"/aws/lambda/{f}", "logStreamName": "s",
                                                         "startTime": 10**30}), "SerializationException"),
    "logs-retention-float": (lambda f: _logs("PutRetentionPolicy", {"logGroupName": f"/aws/lambda/{f}",
                                                                    "retentionInDays": 1.5}),
                             "SerializationException"),
    "logs-names-object": (lambda f: _logs("FilterLogEvents", {"logGroupName": f"/aws/lambda/{f}",
                                                              "logStreamNames": {"a": 1}}), "SerializationException"),
    "logs-token-shape": (lambda f: _logs("DescribeLogStreams", {"logGroupName": f"/aws/lambda/{f}", "nextToken":
                                                                base64.urlsafe_b64encode(b"[1]").decode()}),
                         "InvalidParameterException"),
    "logs-arn-not-a-group": (lambda f: _logs("DescribeLogStreams", {"logGroupIdentifier": f"{ARN}{f}"}),
                             "InvalidParameterException"),
    "logs-deep-pattern": (lambda f: _logs("FilterLogEvents", {"logGroupName": f"/aws/lambda/{f}",
                                                              "filterPattern": "{ " + "(" * 450 + "$.a = 1" + ")" * 450
                                                              + " }"}), "InvalidParameterException"),
    "logs-pattern-escape": (lambda f: _logs("FilterLogEvents", {"logGroupName": f"/aws/lambda/{f}",
                                                                "filterPattern": '{ $.a = "\\u" }'}),
                            "InvalidParameterException"),
    "logs-deep-body": (lambda f: _logs("DescribeLogGroups", body=b'{"limit": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
                       "SerializationException"),
}
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def test_wrong_types_and_deep_nesting_answer_aws_errors_not_500(hostile_server, bystander):
    # Given a function whose log group exists (an invoke wrote to it)
    lam = hostile_server.client()
    name = unique("typed")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HELLO})})
    lam.invoke(FunctionName=name, Payload=b"{}")
    client = fuzz_api.Client(hostile_server.endpoint, hostile_server.keys, timeout=TIMEOUT)
    offset = hostile_server.log_path.stat().st_size

    # When each area gets a member of the wrong type, or a body nested 200,000 deep
    answers = {case: client.send(make(name)) for case, (make, _) in WRONG_TYPES.items()}
    client.close()

    # Then each answers AWS's 400 error for it, and the function is as it was
    got = {case: (out.status, json.loads(out.body).get("__type") or out.headers.get("x-amzn-errortype"))
           for case, out in answers.items()}
    assert got == {case: (400, error) for case, (_, error) in WRONG_TYPES.items()}
    assert "Traceback" not in hostile_server.log_path.read_bytes()[offset:].decode(errors="replace")
    config = lam.get_function_configuration(FunctionName=name)
    assert (config["MemorySize"], config.get("Description", "")) == (128, "")
    assert lam.list_tags(Resource=ARN + name)["Tags"] == {}
    bystander.check()
