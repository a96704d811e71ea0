"""The queue's parts in process: retry timings, lineage, group commit, and the async counters of a real Kindling."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from kindling import errors
from kindling.core import Kindling
from kindling.queue import recursion, retry
from kindling.queue.envelope import Event, Policy
from kindling.queue.store import EventStore
from kindling.queue.writer import GroupCommitWriter
from kindling.settings import Settings
from kindling.store.db import open_engine
from tests.conftest import ROLE, make_zip


def test_retry_delays_are_lambdas():
    assert [retry.delay(n, 0) for n in (1, 2)] == [60.0, 120.0]  # after function errors
    assert [retry.delay(0, n) for n in (1, 2, 3, 9, 10, 30)] == [1, 2, 4, 256, 300, 300]  # throttles: 1 s … 5 min
    assert retry.delay(1, 0, scale=0.01) == pytest.approx(0.6)


def test_lineage_counts_each_function_of_a_chain():
    a, b = "arn:aws:lambda:us-east-1:000000000000:function:a", "arn:aws:lambda:us-east-1:000000000000:function:b"
    trace = recursion.advanced(None, a)
    assert trace.startswith("Root=1-") and recursion.count(trace, a) == 1
    trace = recursion.advanced(recursion.advanced(trace, b), a)
    assert (recursion.count(trace, a), recursion.count(trace, b)) == (2, 1)
    assert recursion.advanced("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1", a).startswith(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1;Lineage=")
    guard = recursion.RecursionGuard(lambda name: "Allow" if name == "allowed" else "Terminate")
    for _ in range(recursion.MAX_INVOCATIONS):
        trace = guard("a", a, trace) if recursion.count(trace, a) < recursion.MAX_INVOCATIONS else trace
    with pytest.raises(errors.RecursiveInvocationException):
        guard("a", a, trace)
    assert recursion.count(guard("allowed", a, trace), a) == recursion.MAX_INVOCATIONS + 1


def test_group_commit_puts_concurrent_events_in_few_commits(tmp_path: Path):
    # Given a writer over a real SQLite store (synchronous=FULL)
    store = EventStore(open_engine(tmp_path), owner="test")

    async def accept_many(n: int) -> GroupCommitWriter:
        writer = GroupCommitWriter(store)
        writer.start()
        now = time.time()
        # When many events are accepted at once
        await asyncio.gather(*(writer.insert(Event(f"e{i}", "f", None, b"{}", "Root=1-x", now, Policy(),
                                                   next_attempt_at=now)) for i in range(n)))
        await writer.stop()
        return writer

    writer = asyncio.run(accept_many(500))
    # Then each is on disk when its insert returns, with far fewer commits than events
    assert store.count() == 500
    assert writer.commits < 100
    assert sorted(e.id for e in store.take_over())[:2] == ["e0", "e1"]


def test_async_counters(tmp_path: Path):
    settings = Settings(data_dir=str(tmp_path / "data"), sandbox="process", async_delay_scale=0.01,
                        access_key_id="AKIAKINDLINGTEST0000", secret_access_key="x" * 40)

    async def scenario() -> dict:
        k = Kindling(settings)
        await k.start()
        try:
            code = {"ZipFile": make_zip({"app.py": "def handler(e, c):\n    if e.get('fail'):\n"
                                                   "        raise Exception('no')\n    return e\n"})}
            k.functions.create({"FunctionName": "counted", "Runtime": "python3.12", "Role": ROLE,
                                "Handler": "app.handler", "Code": code,
                                "DeadLetterConfig": {"TargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq"}})
            # no SQS endpoint is configured: both the destination and the dead-letter queue fail to deliver
            k.events.configs.put({"FunctionName": "counted", "MaximumRetryAttempts": 0, "DestinationConfig": {
                "OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:failures"}}})
            for i, payload in enumerate((b"{}", b"{}", b'{"fail": 1}')):
                out = await k.invoker.invoke({"FunctionName": "counted", "InvocationType": "Event",
                                              "Payload": payload}, f"request-{i}")
                assert out["StatusCode"] == 202
            deadline = time.monotonic() + 30
            while k.events.dispatcher.done < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return k.events.metrics.snapshot()
        finally:
            await k.stop()

    m = asyncio.run(scenario())["counted"]
    assert m["AsyncEventsReceived"] == 3
    assert m["AsyncEventAge"]["SampleCount"] == 3 and m["AsyncEventAge"]["Unit"] == "Milliseconds"
    assert m["AsyncEventsDropped"] == 1
    assert m["DestinationDeliveryFailures"] == 1
    assert m["DeadLetterErrors"] == 1
