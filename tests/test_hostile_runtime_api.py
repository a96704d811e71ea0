"""Hostile handlers against their own Runtime API (169.254.100.1:9001 inside the environment, as on Lambda).

A function may open connections without end, send a request line, headers or body without end, or half a
request and then nothing. Each costs that environment (refused or closed connections, and past a few, the
environment itself), never the server's descriptors or memory, and never another function.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adversarial import Bystander
from tests.conftest import ROLE, Server, make_zip, unique

# The handler keeps what it opened in HELD, so whatever the server did not close is still open after the invoke.
ATTACKER = r'''
import os, socket, time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
HELD = []
PREFIX = b"/2018-06-01/runtime/"


def connect():
    s = socket.socket()
    s.settimeout(1.0)
    s.connect((HOST, int(PORT)))
    return s


def closed_by_server(s):
    """True if the server has closed (or reset) this connection."""
    s.setblocking(False)
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def flood(attempts, seconds):
    deadline, refused = time.monotonic() + seconds, 0
    for _ in range(attempts):
        if time.monotonic() > deadline:
            break
        try:
            HELD.append(connect())
        except OSError:
            refused += 1
    time.sleep(0.3)
    return {"opened": len(HELD), "refused": refused, "closed": sum(closed_by_server(s) for s in HELD)}


def endless(first, piece, total, seconds):
    """Send ``first`` then ``piece`` until ``total`` bytes or the server closes; the socket stays open."""
    s = connect()
    HELD.append(s)
    sent, deadline = 0, time.monotonic() + seconds
    try:
        s.sendall(first)
        while sent < total and time.monotonic() < deadline:
            sent += s.send(piece)
    except OSError:
        return sent
    return sent


def handler(event, context):
    kind = event.get("kind")
    if kind == "flood":
        return flood(event["attempts"], event["seconds"])
    if kind == "url":
        return {"sent": endless(b"GET " + PREFIX + b"invocation/next?", b"a" * 65536, event["total"], 5)}
    if kind == "header":
        return {"sent": endless(b"GET " + PREFIX + b"invocation/next HTTP/1.1\r\nX-Big: ", b"a" * 65536,
                                event["total"], 5)}
    if kind == "body":  # bodies of (nearly) 6 MB to this very invoke's /response, never finished
        head = b"POST %sinvocation/%s/response HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (
            PREFIX, context.aws_request_id.encode(), 6_100_000)
        return {"sent": [endless(head, b"b" * 65536, 6_000_000, 3) for _ in range(event["connections"])]}
    if kind == "pipeline":  # requests for nothing, sent back to back on connections whose answers are never read
        sent = []
        for _ in range(event["connections"]):
            sent.append(endless(b"", b"GET /nothing HTTP/1.1\r\n\r\n" * 2048, event["total"], 2))
        return {"sent": sent}
    if kind == "slowloris":
        for _ in range(event["connections"]):
            s = connect()
            s.sendall(b"POST " + PREFIX + b"invocation/x/response HTTP/1.1\r\nContent-Len")
            HELD.append(s)
        return {"held": len(HELD)}
    if kind == "check":
        return {"held": len(HELD), "closed": sum(closed_by_server(s) for s in HELD)}
    return {"ok": True}
'''


@pytest.fixture(scope="module", autouse=True)
def started(hostile_server: Server) -> Iterator[None]:
    """Let the server finish starting (it forks a zygote per runtime) before the bystander's baseline is taken."""
    time.sleep(2)
    yield


def after_attack() -> None:
    """Let the work an attack leaves to Kindling itself (tearing down the failed environment, a new one's
    template) finish, so that the bystander's check measures the server, not that."""
    time.sleep(1)


def server_pid(server: Server) -> int:
    assert server.proc is not None
    return server.proc.pid


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class FdWatch:
    """The most descriptors the server held while the block ran (sampled every 10 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, open_fds(pid), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, open_fds(self.pid))

    def __enter__(self) -> FdWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_attacker(server: Server) -> tuple[object, str]:
    lam = server.client()
    name = unique("runtime-api-attacker")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Timeout=30,
                        MemorySize=256, Code={"ZipFile": make_zip({"app.py": ATTACKER})})
    return lam, name


def invoke(lam: object, name: str, event: dict) -> tuple[dict, dict]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())  # type: ignore[attr-defined]
    return out, json.loads(out["Payload"].read())


def settle(pid: int, bound: int, seconds: float = 5.0) -> int:
    """The server's descriptor count once it is at most ``bound`` (or after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while (n := open_fds(pid)) > bound and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def test_connection_flood_is_refused_and_then_fails_only_its_environment(hostile_server: Server,
                                                                      bystander: Bystander) -> None:
    pid = server_pid(hostile_server)
    lam, name = make_attacker(hostile_server)
    # Given a function whose handler opens more connections than the cap, but not many more
    invoke(lam, name, {})
    base = open_fds(pid)
    out, body = invoke(lam, name, {"kind": "flood", "attempts": 40, "seconds": 3})
    # Then the excess is refused or reset at once, and the environment keeps working
    assert "FunctionError" not in out, body
    assert body["opened"] - body["closed"] <= 16, body
    assert body["refused"] + body["closed"] >= 24, body
    # When it opens thousands (bounded: 5,000 attempts in at most 5 s)
    with FdWatch(pid) as watch:
        out, body = invoke(lam, name, {"kind": "flood", "attempts": 5000, "seconds": 5})
    # Then the server's descriptors stay bounded, the environment is failed as if its runtime had crashed,
    assert watch.peak <= base + 64, f"server fds peaked at {watch.peak} (base {base})"
    assert out.get("FunctionError") == "Unhandled" and body["errorType"] == "Runtime.ExitError", body
    # its descriptors are given back, and the function's next invoke gets a fresh environment
    assert settle(pid, base + 4) <= base + 4
    assert invoke(lam, name, {})[1] == {"ok": True}
    after_attack()
    bystander.check()
    lam.delete_function(FunctionName=name)  # type: ignore[attr-defined]


def test_endless_request_line_headers_and_body_cost_no_server_memory(hostile_server: Server,
                                                                     bystander: Bystander) -> None:
    pid = server_pid(hostile_server)
    lam, name = make_attacker(hostile_server)
    invoke(lam, name, {})
    # a head is cut at 64 KiB; bodies in flight at 7 MiB per environment (a 6 MB response must fit), so 8 x 6 MB
    # may cost one of them; before these caps, each of the three grew the server by about 50 MB
    for event, growth_kb in (({"kind": "url", "total": 50 << 20}, 4096),
                             ({"kind": "header", "total": 50 << 20}, 4096),
                             ({"kind": "body", "connections": 8}, 16384)):
        before = rss_kb(pid)
        # When the handler sends up to 50 MB that never make a request the server may keep
        out, body = invoke(lam, name, event)
        assert "FunctionError" not in out, body
        # Then the server's memory does not follow
        grew = rss_kb(pid) - before
        assert grew <= growth_kb, f"{event['kind']}: server RSS grew {grew} kB ({body})"
    # and the connections it cut are closed on its side (the handler still holds its ends)
    assert invoke(lam, name, {"kind": "check"})[1]["closed"] >= 9
    after_attack()
    bystander.check()
    lam.delete_function(FunctionName=name)  # type: ignore[attr-defined]


def test_half_sent_requests_are_timed_out(hostile_server: Server, bystander: Bystander) -> None:
    pid = server_pid(hostile_server)
    lam, name = make_attacker(hostile_server)
    invoke(lam, name, {})
    base = open_fds(pid)
    # When the handler leaves 12 requests half sent (within the connection cap) and returns
    out, body = invoke(lam, name, {"kind": "slowloris", "connections": 12})
    assert body == {"held": 12}, body
    assert open_fds(pid) >= base + 10  # 12, give or take the server's own files
    # Then within the request timeout (10 s) the server closes them and gives back their descriptors
    assert settle(pid, base, seconds=15) <= base
    # and the environment, which only broke limits a few times, still answers
    assert invoke(lam, name, {"kind": "check"})[1] == {"held": 12, "closed": 12}
    after_attack()
    bystander.check()
    lam.delete_function(FunctionName=name)  # type: ignore[attr-defined]


def test_requests_that_serve_no_invoke_fail_the_environment(hostile_server: Server, bystander: Bystander) -> None:
    pid = server_pid(hostile_server)
    lam, name = make_attacker(hostile_server)
    invoke(lam, name, {})
    before = rss_kb(pid)
    # When the handler pipelines requests for nothing (8 connections, up to 5 MB each) and never reads the answers
    out, body = invoke(lam, name, {"kind": "pipeline", "connections": 8, "total": 5 << 20})
    # Then no answers pile up in the server, and the environment is failed as if its runtime had crashed
    grew = rss_kb(pid) - before
    assert grew <= 4096, f"server RSS grew {grew} kB"
    assert out.get("FunctionError") == "Unhandled" and body["errorType"] == "Runtime.ExitError", body
    assert invoke(lam, name, {})[1] == {"ok": True}
    after_attack()
    bystander.check()
    lam.delete_function(FunctionName=name)  # type: ignore[attr-defined]
