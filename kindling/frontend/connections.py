"""Limits on the API's HTTP connections against hostile clients: caps on connections, header and idle timeouts.

uvicorn alone holds any number of connections that never finish their headers (a slowloris), buffers an URL or
header of any length, and reads a stalled body forever. Its ``limit_concurrency`` answers 503 only once a
request's headers are complete, so it does not help there. The simplest robust place for these limits is
the connection itself: this subclass of uvicorn's httptools protocol (passed as ``http=`` to uvicorn) sees
every connection from ``connection_made`` on, before a byte is read, and runs on the event loop with no lock
and no extra task per connection. A middleware (ASGI) would only see requests whose headers are complete.

- At most ``max_connections`` open connections and ``max_per_client`` per client address: the excess is
  answered (503, 429) and closed at once, not queued. At ``max_connections``, a new connection first evicts the
  oldest one that is still sending its request line and headers: half-open connections cannot keep others out.
- A request's line and headers must arrive within ``header_timeout`` seconds of its first byte (one deadline,
  not reset by each byte, so a trickle cannot hold it) and be at most ``max_header_bytes`` long (431 past it).
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
        # connections waiting for a request's head, oldest first (dicts keep insertion order)
        self.waiting: dict[LimitedHttpToolsProtocol, None] = {}
        self._unlogged: Counter[str] = Counter()
        self._logged_at = 0.0

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
        self._head_timer: asyncio.TimerHandle | None = None
        self._read_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
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
            oldest = next(iter(limits.waiting), None)
            if oldest is None:
                return self._refuse(503, b"Service Unavailable", "max_connections")
            oldest._close("evicted")
        limits.per_client[address] += 1
        self._address = address
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
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

    def _close(self, why: str) -> None:
        self._cancel_timers()
        if not self.transport.is_closing():
            self.limits.count(why)
            self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._read_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._read_timer = None
        self.limits.waiting.pop(self, None)

    # request line and headers: one deadline from the first byte, and a size cap
    def _start_head(self) -> None:
        self._head_bytes = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._close, "header_timeout")
            self.limits.waiting[self] = None

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        if self._head_timer is None and not self._in_body and (self.cycle is None or self.cycle.response_complete):
            self._start_head()  # bytes on an idle connection (even blank lines, which begin no message)
        if self._in_body and self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_stalled)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._discarded = 0
        self._start_head()

    def _head(self, size: int) -> bool:
        """Count ``size`` more bytes of the request head; False (and the connection answered 431 and closed)
        once the head is too large."""
        self._head_bytes += size
        if self._head_bytes <= self.limits.max_header_bytes:
            return True
        if not self.transport.is_closing():
            self.limits.count("header_size")
            self.transport.write(_answer(431, b"Request Header Fields Too Large",
                                         f"The request line and headers must be at most "
                                         f"{self.limits.max_header_bytes} bytes."))
            self._cancel_timers()
            self.transport.close()
        return False

    def on_url(self, url: bytes) -> None:
        if self._head(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head(len(name) + len(value) + 4):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.transport.is_closing():
            return
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.limits.waiting.pop(self, None)
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
            self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_stalled)

    # body: idle timeout while it is read; an unread rest is dropped, up to MAX_DISCARD
    def on_body(self, body: bytes) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_complete:
            self._discarded += len(body)
            if self._discarded > MAX_DISCARD:
                self._close("discard")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
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

    def _read_stalled(self) -> None:
        """No byte of the body for read_timeout seconds: close, unless it is this side that stopped reading
        (flow control while the application has not taken what came)."""
        if self.flow is not None and self.flow.read_paused:
            self._read_timer = self.loop.call_later(self.limits.read_timeout, self._read_stalled)
        else:
            self._close("read_timeout")

    def _unsupported_upgrade_warning(self) -> None:
        """A WebSocket upgrade is answered by the application (400); no warning per request (ws is off)."""


def protocol_class(max_connections: int, max_per_client: int, header_timeout: float, read_timeout: float,
                   max_header_bytes: int) -> type[LimitedHttpToolsProtocol]:
    """A LimitedHttpToolsProtocol class with these limits, for ``uvicorn.run(http=...)``."""
    class Limited(LimitedHttpToolsProtocol):
        limits = _Limits(max_connections, max_per_client, header_timeout, read_timeout, max_header_bytes)

    return Limited
