"""Hostile network clients against the API server (issue 8): slowloris, connection floods, huge anonymous uploads,
oversized heads, stalled bodies, deep JSON, junk on Kindling's own routes and WebSocket upgrades.

Every attack is bounded in count and time and targets loopback only. Attackers connect from their own loopback
addresses (127.0.0.2 and up), so that the per-address cap they run into is not the one the bystander (127.0.0.1)
has. After each attack the server must be healthy, the bystander as fast as before, and the server log free
of tracebacks.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import resource
import select
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Server

# The module's server runs with small limits, so that each attack shows them within seconds.
LIMITS = {"api_max_connections": 600, "api_max_connections_per_client": 64, "api_header_timeout": 2,
          "api_read_timeout": 2, "api_max_header_bytes": 65536, "api_unverified_body_mb": 64}
INVALID_TOKEN = "The security token included in the request is invalid."


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[Server]:
    """conftest's hostile_server (a server of this module's own), with the limits above."""
    with tempfile.TemporaryDirectory(prefix="kindling-hostile-") as tmp:
        srv = Server(Path(tmp) / "data", **{k: str(v) for k, v in LIMITS.items()}).start()
        yield srv
        srv.stop()


@pytest.fixture(autouse=True)
def no_traceback(hostile_server: Server) -> Iterator[None]:
    """The server log gains no traceback during the test."""
    start = hostile_server.log_path.stat().st_size
    yield
    assert_no_traceback(hostile_server, start)


def assert_no_traceback(server: Server, start: int = 0) -> None:
    with open(server.log_path, "rb") as f:
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text[-4000:]


@pytest.fixture(scope="module", autouse=True)
def enough_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or hard == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))


def _connect(server: Server, source: str, timeout: float = 5) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    return s


def _closed_by_server(s: socket.socket, wait: float = 0.0) -> bytes | None:
    """What the server sent before closing ``s`` (b"" for nothing), or None while it is still open."""
    data = b""
    deadline = time.monotonic() + wait
    poll = select.poll()  # not select(): the attacks' descriptors go past 1024
    poll.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        if not poll.poll(max(0.0, deadline - time.monotonic()) * 1000):
            return None
        try:
            chunk = s.recv(65536)
        except OSError:  # reset: closed with our bytes unread
            return data
        if not chunk:
            return data
        data += chunk


def _health_seconds(server: Server) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(server.endpoint + "/_kindling/health", timeout=5) as r:
        assert r.status == 200
    return time.perf_counter() - start


def _rss_kb(server: Server) -> int:
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _open_fds(server: Server) -> int:
    assert server.proc is not None
    return len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))


def test_slowloris_is_cut_off_and_cannot_fill_the_server(hostile_server, bystander):
    # Given 2,000 half-open connections from 40 addresses (50 each, under the per-address cap), each with an
    # unfinished request head that gets one more byte every half second
    conns: list[socket.socket] = []
    try:
        for i in range(2000):
            s = _connect(hostile_server, f"127.0.0.{2 + i % 40}")
            s.setblocking(False)
            try:
                s.send(b"GET /_kindling/health HTTP/1.1\r\nHost: x\r\n")
            except OSError:
                pass  # already refused
            conns.append(s)
        # When they are held for 5 s (the header timeout is 2 s)
        worst_health, most_fds = 0.0, 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for s in conns:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            worst_health = max(worst_health, _health_seconds(hostile_server))
            most_fds = max(most_fds, _open_fds(hostile_server))
            time.sleep(0.5)
        # Then the server answered others all along, never held more than its cap, and closed every one of them
        assert worst_health < 0.5, f"health took {worst_health:.2f} s during the attack"
        assert most_fds < LIMITS["api_max_connections"] + 300, most_fds
        still_open = sum(_closed_by_server(s) is None for s in conns)
        assert still_open == 0, f"{still_open} of 2000 half-open connections still held after 5 s"
    finally:
        for s in conns:
            s.close()
    bystander.check()


def test_connections_per_client_address_are_capped(hostile_server, bystander):
    cap = LIMITS["api_max_connections_per_client"]
    conns = [_connect(hostile_server, "127.0.0.99") for _ in range(cap + 20)]
    try:
        time.sleep(0.3)  # well within the header timeout (2 s)
        answers = [_closed_by_server(s) for s in conns]
        refused = [a for a in answers if a is not None]
        assert len(refused) == 20, f"{len(refused)} of {cap + 20} refused"
        assert all(a.startswith(b"HTTP/1.1 429 ") for a in refused), refused[:3]
        assert _health_seconds(hostile_server) < 0.5  # another address is not held up
    finally:
        for s in conns:
            s.close()
    # and the address may connect again once its connections are gone
    time.sleep(0.2)
    s = _connect(hostile_server, "127.0.0.99")
    try:
        s.sendall(b"GET /_kindling/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (_closed_by_server(s, wait=5) or b"").startswith(b"HTTP/1.1 200 ")
    finally:
        s.close()
    bystander.check()


def _parallel_uploads(server: Server, body: bytes, headers: dict[str, str]) -> tuple[list[tuple[int, str]], int]:
    """Ten uploads of ``body`` at once, each from its own address: their (status, error type), and the server's
    largest RSS growth (kB) meanwhile."""
    before = _rss_kb(server)
    peak = before
    results: list[tuple[int, str]] = []

    def upload(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60, source_address=(f"127.0.1.{i + 1}", 0))
        try:
            conn.request("POST", "/2015-03-31/functions", body, headers)
            resp = conn.getresponse()
            results.append((resp.status, resp.getheader("X-Amzn-ErrorType") or ""))
            resp.read()
        finally:
            conn.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss_kb(server))
        time.sleep(0.02)
    for t in threads:
        t.join(60)
    print(f"server RSS growth during the uploads: {(peak - before) >> 10} MB")
    return results, peak - before


def test_unsigned_uploads_are_refused_before_their_body_is_read(hostile_server, bystander):
    # Given ten anonymous clients that each upload 60 MB at once
    results, growth = _parallel_uploads(hostile_server, b"x" * (60 << 20), {"Content-Type": "application/json"})
    # Then each gets AWS's answer to an unsigned request, and the server never buffered their bodies
    assert results == [(403, "UnrecognizedClientException")] * 10
    assert growth < 100 << 10, f"server RSS grew by {growth >> 10} MB"
    bystander.check()


def test_forged_signatures_cannot_fill_memory_with_bodies(hostile_server, bystander):
    # Given a client that knows the access key id but not the secret, and signs 60 MB bodies with a wrong one
    body = b"x" * (60 << 20)
    forged = hostile_server.signed_request("POST", "/2015-03-31/functions", body,
                                           {"Content-Type": "application/json"},
                                           keys=(hostile_server.keys[0], "x" * 40))
    # When it sends ten of them at once
    results, growth = _parallel_uploads(hostile_server, body, dict(forged.headers))
    # Then each is refused (bad signature, or throttled while the server already holds its budget of such bodies)
    # and the server never held more than that budget (one body at a time here, and its copy while it is joined)
    assert len(results) == 10 and set(results) <= {(403, "InvalidSignatureException"),
                                                   (429, "TooManyRequestsException")}, results
    assert (403, "InvalidSignatureException") in results
    assert growth < 250 << 10, f"server RSS grew by {growth >> 10} MB"
    bystander.check()


def test_signed_declared_payload_hash_is_checked(hostile_server):
    data = b'{"name": "declared"}'
    declared = hashlib.sha256(data).hexdigest()
    # a request that declares the body's hash (as S3 clients do) is verified before its body, then the body
    ok = hostile_server.signed_request("GET", "/2015-03-31/functions/?MaxItems=1", b"",
                                       {"X-Amz-Content-SHA256": hashlib.sha256(b"").hexdigest()})
    with urllib.request.urlopen(ok, timeout=30) as r:
        assert r.status == 200
    req = hostile_server.signed_request("POST", "/2015-03-31/functions/nope/invocations", data,
                                        {"X-Amz-Content-SHA256": declared})
    conn = http.client.HTTPConnection("127.0.0.1", hostile_server.port, timeout=30)
    try:
        conn.request("POST", "/2015-03-31/functions/nope/invocations", data, dict(req.headers))
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("X-Amzn-ErrorType")) == (404, "ResourceNotFoundException"), resp.read()
        resp.read()
        conn.request("POST", "/2015-03-31/functions/nope/invocations", data.replace(b"declared", b"tampered"),
                     dict(req.headers))
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("X-Amzn-ErrorType")) == (403, "InvalidSignatureException")
        resp.read()
    finally:
        conn.close()


def test_oversized_request_head_is_refused(hostile_server, bystander):
    before = _rss_kb(hostile_server)
    s = _connect(hostile_server, "127.0.0.3")
    try:
        s.sendall(b"GET /" + b"a" * 100_000)
        answer = b""
        try:
            for _ in range(100):  # up to 10 MB of URL, for as long as the server takes it
                s.sendall(b"a" * 100_000)
        except OSError:
            pass  # closed by the server: what should happen
        answer = _closed_by_server(s, wait=3)  # type: ignore[assignment]
        assert answer is not None, "a 10 MB request line is still being taken"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    finally:
        s.close()
    assert _rss_kb(hostile_server) - before < 20 << 10
    # a large head within the cap is fine
    req = urllib.request.Request(hostile_server.endpoint + "/_kindling/health", headers={"X-Big": "b" * 40_000})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    bystander.check()


def test_stalled_body_is_cut_off(hostile_server, bystander):
    s = _connect(hostile_server, "127.0.0.4")
    try:
        s.sendall(b"POST /_kindling/health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        start = time.monotonic()
        answer = _closed_by_server(s, wait=LIMITS["api_read_timeout"] + 3)
        assert answer is not None, "a stalled body is waited for without end"
        assert time.monotonic() - start >= LIMITS["api_read_timeout"] - 0.5
    finally:
        s.close()
    bystander.check()


def test_deeply_nested_payload_is_invalid_request_content(hostile_server, bystander):
    lam = hostile_server.client()
    deep = b"[" * 200_000 + b"]" * 200_000
    for kind in ("RequestResponse", "Event"):
        with pytest.raises(lam.exceptions.InvalidRequestContentException) as exc:
            lam.invoke(FunctionName=bystander.name, InvocationType=kind, Payload=deep)
        err = exc.value.response
        assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert err["Error"]["Message"].startswith(
            "Could not parse request body into json: Could not parse payload into json: "), err["Error"]
    bystander.check()


@pytest.mark.parametrize("path", [
    "/_kindling/code/abc", "/_kindling/code/abc.zip", "/_kindling/code/%C2%B2.zip", "/_kindling/code/..%2Fx.zip",
    "/_kindling/code/" + "a" * 64 + ".zip?Expires=99999999999&Signature=x",
    "/_kindling/code/ab.zip?Expires=%C2%B2&Signature=%C3%A9", "/_kindling/code/ab.zip?Expires=" + "9" * 5000,
    "/_kindling/code/", "/_kindling/code/%00.zip",
])
def test_code_urls_without_a_valid_signature_are_access_denied(hostile_server, path):
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(hostile_server.endpoint + path, timeout=10)
    with exc.value:
        assert exc.value.code == 403
        assert b"<Code>AccessDenied</Code>" in exc.value.read()


def test_logs_route_with_a_bad_since_is_a_400(hostile_server, bystander):
    for since in ("abc", "%C2%B2", "9" * 5000, "1.5", "--1"):
        req = hostile_server.signed_request("GET", f"/_kindling/logs/{bystander.name}?since={since}")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=10)
        with exc.value:
            assert exc.value.code == 400, since
            assert exc.value.headers["X-Amzn-ErrorType"] == "InvalidParameterValueException"
    with urllib.request.urlopen(hostile_server.signed_request("GET", f"/_kindling/logs/{bystander.name}?since=0"),
                                timeout=10) as r:
        assert "events" in json.loads(r.read())


@pytest.mark.parametrize("path", ["/", "/_kindling/health", "/2015-03-31/functions/", "/_kindling/code/x.zip",
                                  "/metrics"])
def test_websocket_upgrade_is_a_clean_4xx(hostile_server, path):
    s = _connect(hostile_server, "127.0.0.5")
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  "\x81\x85junkjunk".encode("latin-1"))
        answer = _closed_by_server(s, wait=5)
        assert answer is not None, "the connection was neither answered nor closed"
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer[:300]
    finally:
        s.close()

