"""Concurrency as Lambda does it: reserved concurrency, the account limit, memory, coalesced cold starts."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from kindling.scheduler.limits import ScaleRate
from tests.conftest import ROLE, Server, make_zip, unique
from tests.recorded import assert_like, recorded

SLOW = '''
import os, time, uuid
ENV = uuid.uuid4().hex
time.sleep(float(os.environ.get("INIT_SLEEP", "0")))
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return ENV
'''


def invoke(lam, name: str, **event: object) -> str:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert "FunctionError" not in out
    return json.loads(out["Payload"].read())


def concurrently(*calls, gap: float = 0.02) -> list:  # noqa: ANN002
    """Start the calls ``gap`` seconds apart (an ordering test gives the first call time to be in flight, cold
    start included, before the next is sent) and return their results or ClientErrors."""
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except ClientError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
        time.sleep(gap)
    for t in threads:
        t.join()
    return results


def test_reserved_concurrency_lifecycle_matches_aws(lam, create_function):
    name = create_function()["FunctionName"]
    rec = "test_function_concurrency"
    assert_like(lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0),
                recorded("lambda_api", rec, "put_function_concurrency_with_reserved_0"))
    assert_like(lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1),
                recorded("lambda_api", rec, "put_function_concurrency_with_reserved_1"))
    assert_like(lam.get_function_concurrency(FunctionName=name),
                recorded("lambda_api", rec, "get_function_concurrency"))
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 1}
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 999
    assert_like(lam.delete_function_concurrency(FunctionName=name), recorded("lambda_api", rec, "delete_response"))
    assert_like(lam.get_function_concurrency(FunctionName=name),
                recorded("lambda_api", rec, "get_function_concurrency_after_delete"))
    assert "Concurrency" not in lam.get_function(FunctionName=name)


def test_reserved_concurrency_errors_match_aws(lam, create_function):
    fn = create_function()
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fn["FunctionArn"] + ":$LATEST", ReservedConcurrentExecutions=1)
    assert exc.value.response["Error"] == recorded("lambda_api", "test_function_concurrency_exceptions",
                                                   "put_function_concurrency_with_qualified_arn")["Error"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as exc:
        lam.put_function_concurrency(FunctionName="doesnotexist", ReservedConcurrentExecutions=1)
    assert exc.value.response["Error"]["Message"].endswith(":function:doesnotexist:$LATEST")
    # the unreserved pool never drops below 100
    with pytest.raises(ClientError) as exc:
        lam.put_function_concurrency(FunctionName=fn["FunctionName"], ReservedConcurrentExecutions=901)
    expected = recorded("lambda_api", "test_function_concurrency_limits",
                        "put_function_concurrency_account_limit_exceeded")
    assert_like(exc.value.response["Error"], expected["Error"])
    assert "100" in exc.value.response["Error"]["Message"]
    assert lam.get_function_concurrency(FunctionName=fn["FunctionName"]).get("ReservedConcurrentExecutions") is None


def test_reserved_zero_throttles_every_invoke(lam, create_function):
    name = create_function()["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as exc:
        lam.invoke(FunctionName=name)
    assert_like(exc.value.response,
                recorded("lambda_behavior", "test_reserved_concurrency", "exc_no_cap_requestresponse"))


def test_reserved_one_throttles_the_second_concurrent_invoke(lam, create_function):
    name = create_function(SLOW, Timeout=10)["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    # (the first call has 1 s to be in flight, cold start included, before the second: a loaded machine needs it)
    first, second = concurrently(lambda: invoke(lam, name, sleep=2.5), lambda: invoke(lam, name), gap=1.0)
    assert isinstance(first, str)
    assert isinstance(second, ClientError)
    assert second.response["Error"]["Code"] == "TooManyRequestsException"
    assert second.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert isinstance(invoke(lam, name), str)  # and the slot is free again


def test_account_limit_and_memory_budget(tmp_path: Path):
    # templates off: no zygotes or templates, which count in the budget too (test_hostile_control.py)
    srv = Server(tmp_path / "data", concurrency_limit="2", memory_budget_mb="384", templates="off").start()
    try:
        lam = srv.client()
        names = []
        for _ in range(3):
            name = unique()
            lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": SLOW})}, MemorySize=128, Timeout=10)
            names.append(name)
        a, b, c = names
        # account limit 2: a third invoke in flight is throttled
        results = concurrently(lambda: invoke(lam, a, sleep=1.0), lambda: invoke(lam, b, sleep=1.0),
                               lambda: invoke(lam, c))
        assert isinstance(results[0], str) and isinstance(results[1], str)
        assert isinstance(results[2], ClientError)
        assert results[2].response["Reason"] == "ConcurrentInvocationLimitExceeded"
        # memory 384 MB = three 128 MB environments: a fourth reclaims the least recently used idle one
        env_a, env_b, env_c = invoke(lam, a), invoke(lam, b), invoke(lam, c)
        assert (env_a, env_b) == (results[0], results[1])  # still warm
        lam.update_function_configuration(FunctionName=c, MemorySize=256)  # c's next environment needs 256 MB
        time.sleep(0.2)
        env_c2 = invoke(lam, c)  # 256 MB more: room is made by reclaiming one idle environment
        assert env_c2 != env_c
        assert invoke(lam, b) == env_b  # b was used more recently than a: kept warm
        assert invoke(lam, a) != env_a  # a, the least recently used, was the one reclaimed
    finally:
        srv.stop()


def test_no_room_is_throttled_not_queued(tmp_path: Path):
    srv = Server(tmp_path / "data", memory_budget_mb="256").start()
    try:
        lam = srv.client()
        lam.create_function(FunctionName="big", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": make_zip({"app.py": SLOW})}, MemorySize=256, Timeout=10)
        started = time.monotonic()
        first, second = concurrently(lambda: invoke(lam, "big", sleep=1.5), lambda: invoke(lam, "big"), gap=0.3)
        assert isinstance(first, str) and isinstance(second, ClientError)
        assert second.response["Error"]["Code"] == "TooManyRequestsException"
        assert time.monotonic() - started < 5
    finally:
        srv.stop()


def test_cold_starts_coalesce(lam, create_function):
    # Given a function whose environments take 1.5 s to initialize, and one warm environment
    name = create_function(SLOW, Timeout=10, Environment={"Variables": {"INIT_SLEEP": "1.5"}})["FunctionName"]
    warm = invoke(lam, name)
    # When three invokes arrive at once
    started = time.monotonic()
    results = concurrently(*[lambda: invoke(lam, name) for _ in range(3)])
    # Then the warm environment, free again in a millisecond, serves them all before any cold start is ready
    assert results == [warm, warm, warm]
    assert time.monotonic() - started < 1.2
    # and N simultaneous invokes on a cold function start N environments at most
    cold = create_function(SLOW, Timeout=10)["FunctionName"]
    results = concurrently(*[lambda: invoke(lam, cold, sleep=0.5) for _ in range(4)])
    assert len(set(results)) == 4


def test_scale_out_rate_is_a_token_bucket():
    rate = ScaleRate(burst=3, window=1.0)
    for _ in range(3):
        rate.take("f")
    with pytest.raises(Exception) as exc:
        rate.take("f")
    assert getattr(exc.value, "extra", {}).get("Reason") == "FunctionInvocationRateLimitExceeded"
    rate.take("other")  # per function
    time.sleep(0.4)
    rate.take("f")  # refilled


def test_provisioned_concurrency_is_set_aside_from_the_unreserved_pool():
    from kindling import errors
    from kindling.scheduler.limits import Counter

    counter = Counter(3)
    counter.set_provisioned("warm", "1", 1)
    assert counter.unreserved_limit() == 2
    counter.admit("warm", "1")  # its provisioned slot
    counter.admit("other")
    counter.admit("other")  # the two unreserved slots
    for name, version in (("other", "$LATEST"), ("warm", "1")):
        with pytest.raises(errors.TooManyRequestsException):
            counter.admit(name, version)
    counter.done("warm", "1")
    counter.admit("warm", "1")  # its slot again, although the unreserved pool is full
