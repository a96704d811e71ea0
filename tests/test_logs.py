"""Logs a Lambda user can work with: the CloudWatch Logs API (boto3, `aws logs tail`), JSON format, request ids."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kindling.observability.logs import LogStore
from tests.conftest import Server, unique
from tests.recorded import assert_like, recorded

CHATTY = '''
import time
def handler(event, context):
    for i in range(event.get("lines", 3)):
        print(f"line {i} of {context.aws_request_id}")
    if event.get("json"):
        print('{"level": "ERROR", "message": "structured", "code": 42}')
    time.sleep(event.get("sleep", 0))
    return "ok"
'''


def invoke(lam, name: str, event: dict | None = None, **kwargs: object) -> str:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kwargs)
    out["Payload"].read()
    return str(out["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"])


@pytest.fixture
def logs(server: Server):  # noqa: ANN201 - a botocore client
    return server.client("logs")


def test_boto3_logs_client(lam, logs, create_function):
    # Given a function that has run twice in one environment
    name = create_function(CHATTY)["FunctionName"]
    group = f"/aws/lambda/{name}"
    first = invoke(lam, name, {"json": True})
    second = invoke(lam, name)

    # Then its group and stream are listed as CloudWatch Logs lists them
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["arn"].endswith(f":log-group:{group}:*") and groups[0]["retentionInDays"] == 30
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    assert len(streams) == 1 and streams[0]["logStreamName"].endswith("]" + streams[0]["logStreamName"][-32:])
    assert streams[0]["firstEventTimestamp"] <= streams[0]["lastEventTimestamp"]
    stream = streams[0]["logStreamName"]

    # GetLogEvents: the stream in order, from the head or the latest events, with tokens
    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    messages = [e["message"] for e in events]
    assert messages[0] == f"START RequestId: {first} Version: $LATEST"
    assert f"line 2 of {first}" in messages and messages[-1].startswith(f"REPORT RequestId: {second}\t")
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=2)
    assert [e["message"] for e in page["events"]] == messages[-2:]
    back = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=2, nextToken=page["nextBackwardToken"])
    assert [e["message"] for e in back["events"]] == messages[-4:-2]

    # FilterLogEvents: filter patterns, paging, stream selection
    def matching(pattern: str, **kw: object) -> list[str]:
        return [e["message"] for page in logs.get_paginator("filter_log_events").paginate(
            logGroupName=group, filterPattern=pattern, **kw) for e in page["events"]]

    assert matching(f'"line 1 of {second}"') == [f"line 1 of {second}"]
    assert matching("?START ?END") == [m for m in messages if m.startswith(("START", "END"))]
    assert matching(f"line -{first}") == [f"line {i} of {second}" for i in range(3)]
    assert matching("%^REPORT.*Init Duration%") == [messages[messages.index(f"END RequestId: {first}") + 1]]
    assert matching('{ $.level = "ERROR" && $.code >= 40 }') == ['{"level": "ERROR", "message": "structured", '
                                                                 '"code": 42}']
    assert matching('{ $.level != "ERROR" }') == []
    everything = matching("", limit=3)  # pages of 3, resumed by nextToken
    assert everything == messages
    assert matching("line", logStreamNames=[stream]) == [m for m in messages if "line" in m]
    ids = [e["eventId"] for e in logs.filter_log_events(logGroupName=group)["events"]]
    assert len(set(ids)) == len(messages)

    # Errors are CloudWatch Logs' own
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.filter_log_events(logGroupName="/aws/lambda/no-such-function")
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.filter_log_events(logGroupName=group, filterPattern="[ip, user]")
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName=group, logStreamName="no-such-stream")


def test_retention_policy(logs, lam, create_function):
    name = create_function()["FunctionName"]
    invoke(lam, name)
    group = f"/aws/lambda/{name}"
    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 7
    logs.delete_retention_policy(logGroupName=group)  # back to the server's default
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 30
    with pytest.raises(ClientError) as err:
        logs.put_retention_policy(logGroupName=group, retentionInDays=2)
    assert err.value.response["Error"]["Code"] == "InvalidParameterException"
    assert "Member must satisfy enum value set: [1, 3, 5, 7, 14" in err.value.response["Error"]["Message"]
    # a group of one's own, then gone
    logs.create_log_group(logGroupName=f"/custom/{name}")
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=f"/custom/{name}")
    logs.delete_log_group(logGroupName=f"/custom/{name}")
    assert logs.describe_log_groups(logGroupNamePrefix=f"/custom/{name}")["logGroups"] == []


def test_retention_trims_old_events(tmp_path: Path):
    # Given a stream with events from 40 days ago, 10 days ago and now, in a group kept 30 days
    store = LogStore(tmp_path, retention_days=30)
    now = time.time()
    stream = store.open_stream("/aws/lambda/f", "s1")
    for age_days, text in ((40, "old"), (10, "recent"), (0, "new")):
        stream.write(text, None, now - age_days * 86400)
    gone = store.open_stream("/aws/lambda/f", "s2")
    gone.write("ancient", None, now - 50 * 86400)
    stream.flush()
    gone.flush()
    # When retention runs
    assert store.apply_retention(now) == 2
    # Then the old events are gone, the stream keeps the rest (and its event numbers), an empty one goes
    assert [e.message for e in store.stream_events("/aws/lambda/f", "s1")] == ["recent", "new"]
    assert [e.n for e in store.stream_events("/aws/lambda/f", "s1")] == [1, 2]
    assert store.streams("/aws/lambda/f") == ["s1"]
    stream.write("later", None)  # the writer carries on in the trimmed file
    stream.flush()
    assert [e.message for e in store.stream_events("/aws/lambda/f", "s1")] == ["recent", "new", "later"]
    # A 1-day policy on the group wins over the default
    store.set_retention("/aws/lambda/f", 1)
    assert store.apply_retention(now + 0.5) == 1
    assert [e.message for e in store.stream_events("/aws/lambda/f", "s1")] == ["new", "later"]
    store.stop()


def test_aws_logs_tail(server, lam, create_function, tmp_path: Path):
    # Given the AWS CLI from PyPI (v1, with the logs tail plugin; v2 has `logs tail` built in)
    config = tmp_path / "aws-config"
    config.write_text("[plugins]\nlogs_tail = awscli_plugin_logs_tail\n")
    env = {**server.aws_env(), "PATH": "/usr/bin:/bin", "AWS_CONFIG_FILE": str(config), "PYTHONUNBUFFERED": "1"}
    name = create_function(CHATTY)["FunctionName"]
    group = f"/aws/lambda/{name}"
    first = invoke(lam, name)
    base = [sys.executable, "-m", "awscli", "logs", "tail", group, "--endpoint-url", server.endpoint,
            "--region", "us-east-1", "--since", "5m"]

    # aws logs tail: every line so far, with its stream
    out = subprocess.run(base, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"START RequestId: {first} Version: $LATEST" in out.stdout
    assert f"line 2 of {first}" in out.stdout and "[$LATEST]" in out.stdout

    # aws logs tail --follow: it polls FilterLogEvents (startTime, nextToken) and prints new lines once
    errors = tmp_path / "tail.err"
    lines: list[str] = []
    with open(errors, "w") as err, subprocess.Popen(base + ["--follow", "--format", "short"], stdout=subprocess.PIPE,
                                                    stderr=err, text=True, env=env) as proc:
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while not any(f"REPORT RequestId: {first}" in x for x in lines) and time.monotonic() < deadline:
                time.sleep(0.1)
            second = invoke(lam, name)  # after the first poll: the next one (5 s later) must find it
            while not any(f"REPORT RequestId: {second}" in x for x in lines) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            reader.join(10)
    text = "".join(lines)
    assert f"line 0 of {second}" in text, errors.read_text()
    assert text.count(f"START RequestId: {first}") == 1  # not printed again by later polls


def test_json_log_format_and_levels(lam, logs, create_function):
    code = '''
import logging
log = logging.getLogger()
def handler(event, context):
    log.debug("debug line")
    log.info("info line")
    log.warning("warn line")
    print('{"level": "DEBUG", "message": "raw debug"}')
    print("plain print")
    return "ok"
'''
    # Given a function logging in JSON at the default levels (INFO)
    fn = create_function(code, LoggingConfig={"LogFormat": "JSON"})
    name = fn["FunctionName"]
    assert fn["LoggingConfig"] == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO",
                                   "LogGroup": f"/aws/lambda/{name}"}
    rid = invoke(lam, name)
    group = f"/aws/lambda/{name}"

    events = logs.filter_log_events(logGroupName=group)["events"]
    lines = [e["message"] for e in events]
    docs = [json.loads(m) for m in lines if m.startswith("{")]
    # Then platform lines are AWS's JSON records and application lines carry timestamp, level, message, requestId
    start = next(d for d in docs if d.get("type") == "platform.start")
    assert start["record"] == {"requestId": rid, "version": "$LATEST"} and start["time"].endswith("Z")
    report = next(d for d in docs if d.get("type") == "platform.report")
    assert report["record"]["requestId"] == rid and report["record"]["status"] == "success"
    assert {"durationMs", "billedDurationMs", "memorySizeMB", "maxMemoryUsedMB", "initDurationMs"} <= set(
        report["record"]["metrics"])
    info = next(d for d in docs if d.get("message") == "info line")
    assert info["level"] == "INFO" and info["requestId"] == rid and info["timestamp"].endswith("Z")
    assert "plain print" in lines and not any("debug" in m for m in lines)
    assert not any(d.get("type") == "platform.runtimeDone" for d in docs)  # a DEBUG system record

    # When the levels change: application WARN, system DEBUG
    lam.update_function_configuration(FunctionName=name, LoggingConfig={"ApplicationLogLevel": "WARN",
                                                                        "SystemLogLevel": "DEBUG"})
    rid2 = invoke(lam, name)
    first_stream = events[0]["logStreamName"]  # the changed function runs in a new environment, a new stream
    lines2 = [e["message"] for e in logs.filter_log_events(logGroupName=group)["events"]
              if e["logStreamName"] != first_stream]
    kinds = [json.loads(m).get("type") or json.loads(m).get("level") for m in lines2 if m.startswith("{")]
    assert kinds == ["platform.start", "WARNING", "platform.runtimeDone", "platform.report"], lines2
    assert "plain print" not in lines2  # INFO, below WARN
    assert all(rid2 in m for m in lines2)

    # And switching back to Text drops the levels, as AWS does (recorded)
    out = lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "Text"})
    assert_like(out["LoggingConfig"], recorded("lambda_api", "test_advanced_logging_configuration_format_switch",
                                               "updated_config_v2")["LoggingConfig"])
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="LogLevel is not supported"):
        lam.update_function_configuration(FunctionName=name, LoggingConfig={"LogFormat": "Text",
                                                                            "ApplicationLogLevel": "DEBUG"})


def test_request_id_lookup_across_two_environments(server, lam, create_function):
    # Given two invokes running at the same time, so in two environments (two streams)
    name = create_function(CHATTY, Timeout=1)["FunctionName"]
    ids: list[str] = []
    threads = [threading.Thread(target=lambda: ids.append(invoke(lam, name, {"sleep": 0.5, "lines": 5})))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timed_out = invoke(lam, name, {"sleep": 3, "lines": 1})  # a platform error belongs to its request too

    def lookup(request_id: str) -> list[dict]:
        req = server.signed_request("GET", f"/_kindling/logs/{name}?requestId={request_id}")
        with urllib.request.urlopen(req) as resp:
            return list(json.load(resp)["events"])

    # Then the API returns all lines of each invocation, START to REPORT, and only those
    streams = set()
    for rid in ids:
        events = lookup(rid)
        messages = [e["message"] for e in events]
        assert messages[0] == f"START RequestId: {rid} Version: $LATEST"
        assert messages[1:6] == [f"line {i} of {rid}" for i in range(5)]
        assert messages[6] == f"END RequestId: {rid}" and messages[7].startswith(f"REPORT RequestId: {rid}\t")
        assert len(messages) == 8 and {e["requestId"] for e in events} == {rid}
        streams |= {e["logStreamName"] for e in events}
    assert len(streams) == 2
    messages = [e["message"] for e in lookup(timed_out)]
    assert any(m.endswith(f"{timed_out} Task timed out after 1.00 seconds") for m in messages)
    assert "Status: timeout" in messages[-1]

    # And so does `kindling logs NAME --request-id ID`
    out = subprocess.run([sys.executable, "-m", "kindling.cli.main", "logs", name, "--request-id", ids[1],
                          "--endpoint-url", server.endpoint], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    printed = [line.split(" ", 1)[1] for line in out.stdout.splitlines()]
    assert printed[0] == f"START RequestId: {ids[1]} Version: $LATEST" and printed[-1].startswith("REPORT")
    assert ids[0] not in out.stdout and len(printed) == 8


def test_log_group_override(server, lam, logs, create_function):
    group = f"/custom/{unique('group')}"
    name = create_function(CHATTY, LoggingConfig={"LogGroup": group})["FunctionName"]
    rid = invoke(lam, name, {"lines": 1})
    assert [e["message"] for e in logs.filter_log_events(logGroupName=group, filterPattern="line")["events"]] == [
        f"line 0 of {rid}"]
    req = server.signed_request("GET", f"/_kindling/logs/{name}?requestId={rid}")
    with urllib.request.urlopen(req) as resp:
        assert len(json.load(resp)["events"]) == 4  # START, the line, END, REPORT


def test_logs_api_is_signed_for_logs(server):
    # A Logs API request signed for service "lambda" is refused, as AWS refuses a wrongly scoped credential
    req = server.signed_request("POST", "/", b"{}", {"X-Amz-Target": "Logs_20140328.DescribeLogGroups",
                                                      "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    body = json.loads(err.value.read())
    assert err.value.code == 403 and body["__type"] == "InvalidSignatureException"
    assert "correct service: 'logs'" in body["message"]
    # and unsigned, as any API request
    plain = urllib.request.Request(server.endpoint + "/", data=b"{}", method="POST",
                                   headers={"X-Amz-Target": "Logs_20140328.DescribeLogGroups"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(plain)
    assert json.loads(err.value.read())["__type"] == "UnrecognizedClientException"
