"""Limits on the API's HTTP connections against hostile clients: caps on connections, header and idle timeouts.

uvicorn alone holds any number of connections that never finish their headers (a slowloris), buffers an URL or
header of any length, and reads a stalled body forever. Its ``limit_concurrency`` answers 503 only once a
request's headers are complete, so it does not help there. The simplest robust place for these limits is
the connection itself: this subclass of uvicorn's httptools protocol (passed as ``http=`` to uvicorn) sees
every connection from ``connection_made`` on, before a byte is read, and runs on the event loop with no lock
and no extra task per connection. A middleware (ASGI) would only see requests whose headers are complete.
Deadlines are not a timer per request (uvloop's call_later and cancel cost ~6 us, twice per request): each
connection sits in an ordered dict while it sends a head or a body, and one sweep every SWEEP seconds closes
the expired ones from the front (they expire in the order they went in).

- At most ``max_connections`` open connections and ``max_per_client`` per client address: the excess is
  answered (503, 429) and closed at once, not queued. At ``max_connections``, a new connection first evicts the
  oldest one that is still sending its request line and headers: half-open connections cannot keep others out.
- A request's line and headers must arrive within ``header_timeout`` seconds of its first byte (one deadline,
  not reset by each byte, so a trickle cannot hold it) and be at most ``max_header_bytes`` long (431 past it;
  counted per chunk read, so it may pass by one chunk).
- While a request's body is being read, a pause of ``read_timeout`` seconds closes the connection.
- The rest of a body the application answered without reading (a 403 before the body) is discarded as it
  arrives, never buffered, and at most ``MAX_DISCARD`` bytes of it: past that the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from prometheus_client import Counter as PromCounter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from kindling.observability import metrics

log = logging.getLogger("kindling.frontend.connections")

# The largest request Lambda takes (CreateFunction with a 50 MB zip, base64 in JSON).
MAX_REQUEST = 70167211
# A client whose request is answered before its body is read (unsigned, too large) may still send that body;
# it is read and dropped up to here, so that an honest client gets to read the answer, then the connection ends.
MAX_DISCARD = 2 * MAX_REQUEST
LOG_EVERY = 10.0  # seconds between two log lines about refused or timed-out connections
SWEEP = 0.5  # seconds between two looks for expired deadlines: a timeout fires up to this much late

REFUSED = PromCounter("kindling_api_connections_refused", "API connections closed by a limit against hostile "
                      "clients (reason: max_connections, max_per_client, evicted, header_timeout, "
                      "header_size, read_timeout, discard).", ["reason"], registry=metrics.REGISTRY)


class _Limits:
    """The caps and the per-address counts, shared by every connection of one server."""

    def __init__(self, max_connections: int, max_per_client: int, header_timeout: float, read_timeout: float,
                 max_header_bytes: int) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.header_timeout = header_timeout
        self.read_timeout = read_timeout
        self.max_header_bytes = max_header_bytes
        self.per_client: Counter[str] = Counter()
        # connections sending a request's head → its deadline, and sending a body → when its last byte came;
        # both oldest first (dicts keep insertion order; a body's connection moves to the end on each byte)
        self.heads: dict[LimitedHttpToolsProtocol, float] = {}
        self.bodies: dict[LimitedHttpToolsProtocol, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._unlogged: Counter[str] = Counter()
        self._logged_at = 0.0

    def start_sweeping(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for conn, deadline in list(self.heads.items()):
            if deadline > now:
                break
            conn.close_for("header_timeout")
        stalled = now - self.read_timeout
        for conn, last in list(self.bodies.items()):
            if last > stalled:
                break
            if conn.flow is not None and conn.flow.read_paused:  # this side stopped reading: not the client
                self.bodies.pop(conn)
                self.bodies[conn] = now
            else:
                conn.close_for("read_timeout")
        self._sweeper = loop.call_later(SWEEP, self._sweep, loop)

    def count(self, reason: str) -> None:
        """Count a closed connection, and say so in the log at most every LOG_EVERY seconds (not once per
        connection: a flood must not become a flood of log lines)."""
        REFUSED.labels(reason).inc()
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY:
            self._logged_at = now
            summary = ", ".join(f"{n} by {r}" for r, n in sorted(self._unlogged.items()))
            self._unlogged.clear()
            log.warning("API connections closed by a limit against hostile clients: %s. Later ones are "
                        "counted in kindling_api_connections_refused and summed up here every %.0f s.",
                        summary, LOG_EVERY)


_REFUSAL = (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\nretry-after: 1\r\n"
            b"content-length: %d\r\n\r\n%s")


def _answer(status: int, reason: bytes, message: str) -> bytes:
    body = b'{"message":"%s"}' % message.encode()
    return _REFUSAL % (status, reason, len(body), body)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; ``limits`` is set by ``protocol_class``."""

    limits: _Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None  # counted in limits.per_client while set
        self._refused = False
        self._head_bytes = 0  # of the request head being received
        self._in_body = False
        self._discarded = 0
        self._close_after_body = False

    # connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        others = len(self.connections)
        super().connection_made(transport)
        limits = self.limits
        address = self.client[0] if self.client else ""
        if limits.per_client[address] >= limits.max_per_client:
            return self._refuse(429, b"Too Many Requests", "max_per_client")
        if others >= limits.max_connections:
            oldest = next(iter(limits.heads), None)
            if oldest is None:
                return self._refuse(503, b"Service Unavailable", "max_connections")
            oldest.close_for("evicted")
        limits.per_client[address] += 1
        self._address = address
        limits.start_sweeping(self.loop)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        if self._address is not None:
            per_client = self.limits.per_client
            per_client[self._address] -= 1
            if per_client[self._address] <= 0:
                del per_client[self._address]
            self._address = None
        super().connection_lost(exc)

    def _refuse(self, status: int, reason: bytes, why: str) -> None:
        self._refused = True
        self.limits.count(why)
        self.transport.write(_answer(status, reason, "Too many connections; try again later."))
        self.transport.close()

    def close_for(self, why: str) -> None:
        """Close this connection because of limit ``why`` (counted)."""
        self._forget()
        if not self.transport.is_closing():
            self.limits.count(why)
            self.transport.close()

    def _forget(self) -> None:
        self.limits.heads.pop(self, None)
        self.limits.bodies.pop(self, None)

    # request line and headers: one deadline from the first byte, and a size cap
    def _start_head(self) -> None:
        heads = self.limits.heads
        if self not in heads:
            self._head_bytes = 0
            heads[self] = self.loop.time() + self.limits.header_timeout

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        limits = self.limits
        if self._in_body:
            limits.bodies.pop(self, None)
            limits.bodies[self] = self.loop.time()
        elif self.cycle is None or self.cycle.response_complete:
            self._start_head()  # bytes on an idle connection (even blank lines, which begin no message)
        if self in limits.heads:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in a head after this chunk and past the cap: the head (line, headers) is too large. Counted per
        # chunk, not per parser callback (cheaper), so it may pass the cap by one chunk before it is refused.
        if self._head_bytes > limits.max_header_bytes and self in limits.heads and not self.transport.is_closing():
            limits.count("header_size")
            self.transport.write(_answer(431, b"Request Header Fields Too Large",
                                         f"The request line and headers must be at most "
                                         f"{limits.max_header_bytes} bytes."))
            self._forget()
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._discarded = 0
        self._start_head()

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        self.limits.heads.pop(self, None)
        super().on_headers_complete()
        self._close_after_body = False
        if self.cycle is not None and self.cycle.more_body:
            self._in_body = True
            # A client that asked for "Connection: close" (or HTTP/1.0) and is answered before its body is read
            # would get a reset while it still sends, and never read the answer: keep the connection until the
            # body is in (dropped, up to MAX_DISCARD), then close it.
            if not self.cycle.keep_alive and any(
                    name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0"))
                    for name, value in self.headers):
                self._close_after_body = True
                self.cycle.keep_alive = True
            self.limits.bodies[self] = self.loop.time()

    # body: idle timeout while it is read; an unread rest is dropped, up to MAX_DISCARD
    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)
            if self._discarded > MAX_DISCARD:
                self.close_for("discard")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self.limits.bodies.pop(self, None)
        if not self.transport.is_closing():
            super().on_message_complete()
            if self._close_after_body and self.cycle.response_complete:
                self.transport.close()

    def on_response_complete(self) -> None:
        if self._close_after_body and not self._in_body:
            self.server_state.total_requests += 1
            self.transport.close()
        else:
            super().on_response_complete()

    def _unsupported_upgrade_warning(self) -> None:
        """A WebSocket upgrade is answered by the application (400); no warning per request (ws is off)."""


def protocol_class(max_connections: int, max_per_client: int, header_timeout: float, read_timeout: float,
                   max_header_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """A LimitedHttpToolsProtocol class with these limits, for ``uvicorn.run(http=...)``."""
    class Limited(LimitedHttpToolsProtocol):
        limits = _Limits(max_connections, max_per_client, header_timeout, read_timeout, max_header_bytes)

    return Limited
