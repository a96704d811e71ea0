"""Hostile tenants against the control plane: bursts, private data dir, heavy uploads, io_uring, templates' memory.

Each attack runs against ``hostile_server`` and ends with ``bystander.check()``: the server is healthy and a
different function still answers within 2x its p50 (tests/adversarial.py).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import HELLO, ROLE, Server, make_zip, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="the isolated sandbox needs root (CI runs as root)")


def _invoke_raw(server: Server, name: str) -> tuple[int, dict]:
    """One signed Invoke over its own connection: (HTTP status, body as JSON)."""
    req = server.signed_request("POST", f"/2015-03-31/functions/{name}/invocations", b'{"name": "burst"}')
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _burst(server: Server, names: list[str]) -> list[tuple[int, dict]]:
    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(lambda n: _invoke_raw(server, n), names))


# -- 1. bursts answer 200 or Lambda's throttle, never a 5xx ---------------------------------------------------
BURST = 100
REASONS = {"ConcurrentInvocationLimitExceeded", "ReservedFunctionConcurrentInvocationLimitExceeded",
           "FunctionInvocationRateLimitExceeded"}


def test_bursts_of_concurrent_invokes_never_answer_5xx(hostile_server: Server, bystander) -> None:  # noqa: ANN001
    # Given a hundred functions nobody has invoked yet, and one more
    lam = hostile_server.client()
    zipped = make_zip({"app.py": HELLO})
    names = [unique("burst") for _ in range(BURST)]
    one = unique("burst-one")
    for name in [*names, one]:
        lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                            Code={"ZipFile": zipped})
    try:
        # When bursts of 100 concurrent invokes hit them: new functions, one function, new functions again
        results = _burst(hostile_server, names) + _burst(hostile_server, [one] * BURST)
        results += _burst(hostile_server, names[::-1])
        # Then every invoke ran or got Lambda's throttle error, with AWS's Reason
        for status, body in results:
            assert status in (200, 429), (status, body)
            if status == 200:
                assert body == {"hello": "burst"}, body
            else:
                assert body.get("Reason") in REASONS, body
        assert sum(1 for s, _ in results if s == 200) >= BURST, "most of a burst should run"
    finally:
        for name in [*names, one]:
            lam.delete_function(FunctionName=name)
    bystander.check()


# -- 4. io_uring is refused ------------------------------------------------------------------------------------
IO_URING = r'''
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def handler(event, context):
    params = ctypes.create_string_buffer(120)  # struct io_uring_params, zeroed
    out = {}
    for name, number, args in (("io_uring_setup", 425, (8, params)), ("io_uring_enter", 426, (0, 1, 0, 0, None, 0)),
                               ("io_uring_register", 427, (0, 0, None, 0))):
        rc = libc.syscall(number, *args)
        out[name] = "allowed" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
    return out
'''


def test_io_uring_is_refused(hostile_server: Server, bystander) -> None:  # noqa: ANN001
    # Given a function that tries to set up an io_uring (a way around seccomp's view of system calls)
    lam = hostile_server.client()
    name = unique("uring")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": IO_URING})})
    try:
        # When it calls io_uring_setup, io_uring_enter and io_uring_register (x86-64 numbers 425-427)
        out = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
        # Then each is refused with EPERM
        assert out == {"io_uring_setup": "EPERM", "io_uring_enter": "EPERM", "io_uring_register": "EPERM"}, out
    finally:
        lam.delete_function(FunctionName=name)
    bystander.check()
