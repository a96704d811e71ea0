"""Hostile logs: a function that prints without end, log names that try to leave their folder, and a log group
deleted under a warm environment (issue 8, "Safe to share"; tests/adversarial.py).

The module's hostile server caps log groups at GROUP_CAP_MB (the default is 1 GB) so that one bounded flood
meets both the rate limit and the cap; the rate and burst are the defaults.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kindling.core import Kindling
from kindling.settings import Settings
from tests.adversarial import NOISE_FLOOR
from tests.conftest import ROLE, Server, make_zip, unique

GROUP_CAP_MB = 8
RATE_MB, BURST_MB = 1.0, 5.0  # the defaults (kindling/settings.py)
MB = 1 << 20

FLOOD = ('def handler(event, context):\n    line = "x" * {size}\n    while True:\n        print(line)\n')
SLEEPY = ('import time\n'
          'def handler(event, context):\n    print("line of", context.aws_request_id)\n'
          '    time.sleep(event.get("sleep", 0))\n    return {"ok": True}\n')


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[Server]:
    """As conftest's, with a small log group cap (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="kindling-hostile-") as tmp:
        srv = Server(Path(tmp) / "data", log_group_max_mb=str(GROUP_CAP_MB)).start()
        yield srv
        srv.stop()


def _function(lam: Any, code: str, **kwargs: Any) -> str:
    name = unique("hostile-logs")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})}, **kwargs)
    return name


def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["out"] = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def _messages(logs: Any, group: str, pattern: str = "") -> list[str]:
    out: list[str] = []
    token = None
    for _ in range(20):
        kw = {"nextToken": token} if token else {}
        page = logs.filter_log_events(logGroupName=group, filterPattern=pattern, **kw)
        out += [e["message"] for e in page["events"]]
        token = page.get("nextToken")
        if not token:
            break
    return out


@pytest.mark.parametrize("line_size", [1000, 1])
def test_a_function_printing_without_end_is_rate_limited_and_capped(hostile_server, bystander, line_size):
    # Given a function that prints lines (1 KB, or 1 byte) without end, with a whole vCPU, for a 6 s timeout
    lam, logs = hostile_server.client(), hostile_server.client("logs")
    timeout = 6
    name = _function(lam, FLOOD.format(size=line_size), Timeout=timeout, MemorySize=1769)
    group = f"/aws/lambda/{name}"
    # When it is invoked, while the bystander keeps invoking
    started = time.monotonic()
    flood, box = _in_thread(lam.invoke, FunctionName=name, Payload=b"{}", LogType="Tail")
    time.sleep(1.0)
    during = statistics.median(bystander.invoke() for _ in range(15))
    flood.join(timeout + 30)
    took = time.monotonic() - started
    # Then the invoke answers (timed out), having written at most about burst + rate x time, under the group's cap
    assert not flood.is_alive() and "error" not in box, box
    assert json.loads(box["out"]["Payload"].read())["errorType"] == "Sandbox.Timedout"
    stored = sum(p.stat().st_size for p in (hostile_server.data_dir / "logs").rglob("*.jsonl")
                 if name in str(p))
    by_rate = (BURST_MB + RATE_MB * took) * MB * 1.2  # + the JSON around each line
    assert stored <= min(by_rate, GROUP_CAP_MB * MB + 64 * 1024), f"{stored} bytes stored in {took:.1f} s"
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert described["storedBytes"] <= GROUP_CAP_MB * MB + 64 * 1024
    # And platform lines say what was dropped and why (over the rate, at the cap: which first depends on how
    # fast the function got to print on this machine)
    dropped = _messages(logs, group, '"Logs dropped:"')
    assert dropped and all("MB/s" in m or "size cap" in m for m in dropped), dropped[:3]
    assert "Task timed out" in base64.b64decode(box["out"]["LogResult"]).decode()  # past the cap: in the tail only
    # And the bystander kept its latency during the flood, and after it
    limit = max(2 * bystander.baseline, bystander.baseline + NOISE_FLOOR)
    assert during <= limit, f"bystander p50 during the flood {during * 1000:.2f} ms > {limit * 1000:.2f} ms"
    bystander.check()


def _snapshot(data_dir: Path) -> dict[str, tuple[int, ...]]:
    """Every file and folder of the data dir outside logs/: inode, and size and mtime but for the live database
    and the logs folder itself."""
    out: dict[str, tuple[int, ...]] = {}
    for root, dirs, files in os.walk(data_dir):
        rel = Path(root).relative_to(data_dir)
        if rel.parts[:1] in (("logs",), ("tmp-storage",)):  # (environments' /tmp images come and go)
            dirs[:] = []
            continue
        for entry in dirs + files:
            path = Path(root) / entry
            st = path.lstat()
            live = entry.startswith("kindling.db") or (rel == Path(".") and entry in ("logs", "tmp-storage"))
            out[str(rel / entry)] = (st.st_ino,) if live else (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


LONG_GROUP = "/x" * 256  # 512 characters, valid for CloudWatch; 1,024 once percent-encoded
LONG_STREAM = "\U0001d11e" * 512  # 512 four-byte characters: 6,144 once percent-encoded


def test_log_names_cannot_leave_the_logs_folder(hostile_server, bystander):
    # Given the data dir as it is, and the bystander's log group
    logs = hostile_server.client("logs")
    before = _snapshot(hostile_server.data_dir)
    own_group = f"/aws/lambda/{bystander.name}"
    # When every Logs operation is called with names that are paths, or long once encoded
    statuses: list[int] = []
    for group in ("..", ".", "../x", "./..", LONG_GROUP):
        for op, args in (
            ("create_log_group", {"logGroupName": group}),
            ("put_retention_policy", {"logGroupName": group, "retentionInDays": 1}),
            ("describe_log_streams", {"logGroupName": group}),
            ("describe_log_streams", {"logGroupName": group, "logStreamNamePrefix": ".."}),
            ("get_log_events", {"logGroupName": group, "logStreamName": ".."}),
            ("get_log_events", {"logGroupName": group, "logStreamName": LONG_STREAM}),
            ("filter_log_events", {"logGroupName": group, "logStreamNames": ["..", LONG_STREAM]}),
            ("delete_log_stream", {"logGroupName": group, "logStreamName": ".."}),
            ("delete_log_stream", {"logGroupName": group, "logStreamName": LONG_STREAM}),
            ("delete_retention_policy", {"logGroupName": group}),
            ("describe_log_groups", {"logGroupNamePrefix": group}),
            ("delete_log_group", {"logGroupName": group}),
        ):
            try:
                response = getattr(logs, op)(**args)
                statuses.append(response["ResponseMetadata"]["HTTPStatusCode"])
            except logs.exceptions.ClientError as exc:
                statuses.append(exc.response["ResponseMetadata"]["HTTPStatusCode"])
    # Then nothing answered a 5xx, nothing outside logs/ changed, and the other groups are all still there
    assert max(statuses) < 500, statuses
    assert _snapshot(hostile_server.data_dir) == before
    assert logs.describe_log_groups(logGroupNamePrefix=own_group)["logGroups"], "the bystander's group went"
    # And a group with a long name works like any other
    logs.create_log_group(logGroupName=LONG_GROUP)
    logs.put_retention_policy(logGroupName=LONG_GROUP, retentionInDays=7)
    found = logs.describe_log_groups(logGroupNamePrefix=LONG_GROUP)["logGroups"]
    assert [(g["logGroupName"], g["retentionInDays"]) for g in found] == [(LONG_GROUP, 7)]
    logs.delete_log_group(logGroupName=LONG_GROUP)
    bystander.check()


def test_a_function_logs_into_a_long_named_group(hostile_server, bystander):
    # Given a function whose LoggingConfig names a 512-character log group
    lam, logs = hostile_server.client(), hostile_server.client("logs")
    name = _function(lam, SLEEPY, LoggingConfig={"LogFormat": "Text", "LogGroup": LONG_GROUP[:-1] + "y"})
    # When it runs
    out = lam.invoke(FunctionName=name, Payload=b"{}")
    # Then it answers, and its lines are in that group
    assert json.loads(out["Payload"].read()) == {"ok": True}
    streams = logs.describe_log_streams(logGroupName=LONG_GROUP[:-1] + "y")["logStreams"]
    assert len(streams) == 1
    events = logs.get_log_events(logGroupName=LONG_GROUP[:-1] + "y", logStreamName=streams[0]["logStreamName"])
    assert any(e["message"].startswith("line of") for e in events["events"])
    bystander.check()


def _wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_logs_recreate_their_group_after_delete_log_group(hostile_server, bystander):
    # Given a function with a warm environment, whose log group is then deleted
    lam, logs = hostile_server.client(), hostile_server.client("logs")
    name = _function(lam, SLEEPY, Timeout=2)
    group = f"/aws/lambda/{name}"
    lam.invoke(FunctionName=name, Payload=b"{}")
    stream = logs.describe_log_streams(logGroupName=group)["logStreams"][0]["logStreamName"]
    logs.delete_log_group(logGroupName=group)
    # When it is invoked again, first normally, then into its timeout
    t, box = _in_thread(lam.invoke, FunctionName=name, Payload=b"{}")
    t.join(20)
    assert not t.is_alive() and "error" not in box, box
    assert json.loads(box["out"]["Payload"].read()) == {"ok": True}
    t, box = _in_thread(lam.invoke, FunctionName=name, Payload=json.dumps({"sleep": 5}).encode())
    t.join(20)
    # Then every invoke answers, and their lines land in the recreated group and stream, as on AWS
    assert not t.is_alive() and "error" not in box, box
    assert json.loads(box["out"]["Payload"].read())["errorType"] == "Sandbox.Timedout"
    assert [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]] == [stream]
    messages = _messages(logs, group)
    assert sum(m.startswith("START RequestId:") for m in messages) == 2, messages
    assert any("Task timed out after 2.00 seconds" in m for m in messages), messages
    bystander.check()


def test_async_invoke_runs_after_delete_log_group(hostile_server, bystander):
    # Given a function with a warm environment, whose log group is then deleted
    lam, logs = hostile_server.client(), hostile_server.client("logs")
    name = _function(lam, SLEEPY)
    group = f"/aws/lambda/{name}"
    lam.invoke(FunctionName=name, Payload=b"{}")
    logs.delete_log_group(logGroupName=group)
    # When it is invoked asynchronously
    accepted = lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    request_id = accepted["ResponseMetadata"]["RequestId"]
    assert accepted["StatusCode"] == 202

    # Then the event runs, and its lines appear in the recreated group
    def ran() -> bool:
        try:
            return any(m == f"line of {request_id}" for m in _messages(logs, group))
        except logs.exceptions.ResourceNotFoundException:
            return False
    assert _wait_for(ran, 15), "the async event did not run"
    bystander.check()


def test_a_fault_of_the_dispatcher_is_counted_backed_off_and_bounded(tmp_path: Path) -> None:
    # Given a function whose extracted code was taken from the data dir (a local fault: no function error),
    # on a Kindling in this process (to read its counters), retrying after 1/100 of Lambda's delays
    from kindling.observability import metrics

    settings = Settings(data_dir=str(tmp_path / "data"), sandbox="process", async_delay_scale=0.01,
                        access_key_id="AKIAKINDLINGTEST0000", secret_access_key="x" * 40)

    async def scenario() -> tuple[int, str, dict]:
        k = Kindling(settings)
        await k.start()
        try:
            code = {"ZipFile": make_zip({"app.py": "def handler(e, c):\n    return e\n"})}
            k.functions.create({"FunctionName": "faulty", "Runtime": "python3.12", "Role": ROLE,
                                "Handler": "app.handler", "Code": code})
            while k.functions.store.get("faulty").config["State"] == "Pending":  # (Active in a moment)
                await asyncio.sleep(0.01)
            k.events.configs.put({"FunctionName": "faulty", "MaximumRetryAttempts": 1, "DestinationConfig": {
                "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:failures"}}})
            for tree in k.functions.code.root.iterdir():
                if tree.is_dir():
                    shutil.rmtree(tree)
            # When it is invoked asynchronously
            out = await k.invoker.invoke({"FunctionName": "faulty", "InvocationType": "Event", "Payload": b"{}"},
                                         "request-faulty")
            assert out["StatusCode"] == 202
            deadline = time.monotonic() + 20
            while k.events.dispatcher.done < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return k.events.dispatcher.done, metrics.exposition()[1].decode(), k.events.metrics.snapshot()
        finally:
            await k.stop()

    done, exposition, snapshot = asyncio.run(scenario())
    # Then the event was retried a bounded number of times (3 local retries in a row, then as a function error
    # per MaximumRetryAttempts: 1), each fault counted, and it went to its failure destination
    assert done == 1, "the event is still being retried"
    assert 'kindling_async_dispatcher_faults_total{function="faulty"} 8.0' in exposition
    m = snapshot["faulty"]
    assert m["AsyncEventsDropped"] == 1 and m["DestinationDeliveryFailures"] == 1


def test_logs_of_an_older_data_dir_are_still_read(tmp_path: Path) -> None:
    # Given logs as older Kindlings stored them: names percent-encoded, one of them 230 bytes once encoded
    from urllib.parse import quote

    from kindling.observability.logs import LogStore

    group, short, longer = "/aws/lambda/old", "2026/01/01/[$LATEST]abc", "s" * 230
    folder = tmp_path / quote(group, safe="")
    folder.mkdir(parents=True)
    (folder / ".group.json").write_text(json.dumps({"creationTime": 1, "retentionInDays": 7}))
    for stream in (short, longer):
        line = {"timestamp": int(time.time() * 1000), "n": 0, "requestId": None, "message": f"in {stream[:5]}"}
        (folder / (quote(stream, safe="") + ".jsonl")).write_text(json.dumps(line) + "\n")
    # When a store opens them
    store = LogStore(tmp_path)
    # Then every group, stream and event reads as before (the long name moved to its hashed file)
    assert store.group_names() == [group] and store.retention_days(group) == 7
    assert sorted(store.streams(group)) == sorted([short, longer])
    assert [e.message for e in store.stream_events(group, longer)] == ["in sssss"]
    assert (folder / (quote(short, safe="") + ".jsonl")).exists()
    store.stop()
