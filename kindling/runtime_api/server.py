"""The Lambda Runtime API 2018-06-01, served to one execution environment.

Each environment gets its own listening socket, so one function can never
answer another's invocation. The HTTP is parsed by httptools (the parser under
uvicorn); this module is only the protocol's few routes. Every response is one
write on a TCP_NODELAY socket, so no round trip waits on Nagle. What one
environment may take from the server (connections, bytes, time) is capped by
``limits``; accepting is a few connections per turn of the loop, so a flood on
one environment's socket never delays another's.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Protocol

import httptools

from kindling.runtime_api.limits import (
    ACCEPT_BATCH,
    BODY_LIMIT,
    HEAD_LIMIT,
    MAX_CONNECTIONS,
    REQUEST_TIMEOUT,
    RESPONSE_LIMIT,
    EnvironmentLimits,
    log,
)

__all__ = ["RESPONSE_LIMIT", "Handler", "Invocation", "RuntimeAPI", "serve"]

PREFIX = b"/2018-06-01/runtime/"
SLICE = 32 * 1024  # bytes handed to the parser at once, so a head is measured before it can grow past HEAD_LIMIT
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST and leaves no TIME_WAIT


class Invocation:
    """One invoke as the runtime sees it: an id, the event, and the headers of /next."""

    __slots__ = ("request_id", "payload", "headers")

    def __init__(self, request_id: str, payload: bytes, headers: dict[str, str]) -> None:
        self.request_id = request_id
        self.payload = payload
        self.headers = headers


class Handler(Protocol):
    """What the environment provides to its Runtime API."""

    async def next_invocation(self) -> Invocation: ...
    def invocation_response(self, request_id: str, body: bytes, too_large: bool) -> bool: ...
    def invocation_error(self, request_id: str, body: bytes, error_type: str | None) -> bool: ...
    def init_error(self, body: bytes, error_type: str | None) -> None: ...
    def limits_exceeded(self, reason: str) -> None: ...


def _response(status: int, reason: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def _error(status: int, reason: str, error_type: str, message: str) -> bytes:
    return _response(status, reason, json.dumps({"errorMessage": message, "errorType": error_type}).encode())


_ACCEPTED = _response(202, "Accepted", b'{"status":"OK"}')
_NOT_FOUND = _error(404, "Not Found", "InvalidRequest", "Not found")
_INVALID_ID = _error(400, "Bad Request", "InvalidRequestID", "Invalid request ID")


class _Breach(Exception):
    """Raised in a parser callback to stop parsing a request that broke a limit."""

    def __init__(self, status: int, phrase: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.phrase, self.reason = status, phrase, reason


class RuntimeAPIProtocol(asyncio.Protocol):
    def __init__(self, api: RuntimeAPI) -> None:
        self.api = api
        self.handler = api.handler
        self.limits = api.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0  # body bytes of the current request
        self.held = 0  # of which kept (and taken from the environment's budget)
        self.head = 0  # bytes of the current head (request line and headers, or chunk framing and trailers)
        self.in_body = False  # in a body: since its first bytes, up to the next chunk header or request
        self.in_request = False
        self.breach: _Breach | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.waiting: asyncio.Task[None] | None = None

    # -- asyncio ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.api.connections.add(self)
        if self.api.closed:
            transport.abort()  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        try:
            if len(data) <= SLICE:  # a whole request, usually
                self._feed(data)
            else:
                view = memoryview(data)
                for start in range(0, len(data), SLICE):
                    if self.transport is None or self.transport.is_closing():
                        return  # closed by what the last slice held (its environment failed): drop the rest
                    self._feed(view[start:start + SLICE])
        except _Breach as b:
            self._breached(b)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
            cause = self.breach or e.__context__
            self._breached(cause if isinstance(cause, _Breach) else
                           _Breach(400, "Bad Request", "a malformed HTTP request"))
        else:
            if self.in_request and self.timer is None:
                self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._timed_out)

    def _feed(self, data: bytes | memoryview) -> None:
        """Parse ``data``; bytes that arrive outside a body count towards the current head's HEAD_LIMIT."""
        if self.in_body:
            self.parser.feed_data(data)
            return
        self.head += len(data)
        self.parser.feed_data(data)
        if not self.in_body and self.head > HEAD_LIMIT:
            raise _Breach(431, "Request Header Fields Too Large",
                          f"a request line and headers of more than {HEAD_LIMIT} bytes")

    def pause_writing(self) -> None:  # the runtime does not read its answers: read no more requests
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        self._end_request()
        self.transport = None
        self.api.connections.discard(self)
        self.limits.connections -= 1

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.waiting is not None or (self.transport is not None and self.transport.get_write_buffer_size()):
            # pipelined: answers would pile up here for a runtime that does not read them
            raise _Breach(400, "Bad Request", "a request sent before the previous one was answered")
        self.url, self.headers, self.body, self.size = b"", {}, [], 0
        self.in_request, self.in_body, self.head = True, False, 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_chunk_header(self) -> None:
        self.in_body, self.head = False, 0  # a chunk's size line (and, after the last, the trailers) is head

    def on_body(self, body: bytes) -> None:
        self.in_body = True
        self.size += len(body)
        if self.size > BODY_LIMIT:
            parts = self._parts()
            if parts is not None and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
                self.handler.invocation_response(parts[1], b"", True)  # the invoke fails as for any too large one
            self.breach = _Breach(413, "Request Entity Too Large", f"a request body of more than {BODY_LIMIT} bytes")
            raise self.breach
        if self.size > RESPONSE_LIMIT:  # too large for Lambda: answered 413 at its end, nothing more is kept
            self._release()
        elif self.limits.hold(len(body)):
            self.held += len(body)
            self.body.append(body)
        else:
            self.breach = _Breach(413, "Request Entity Too Large", "request bodies in flight of more than "
                                  "the environment's budget")
            raise self.breach

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        body = b"".join(self.body)
        self._end_request()
        parts = self._parts()
        if parts is None:
            return self._refuse(_NOT_FOUND, "a request for a path it does not serve")
        error_type = self.headers.get(b"lambda-runtime-function-error-type")
        etype = error_type.decode("latin-1") if error_type else None
        if method == b"GET" and parts == ["invocation", "next"]:
            self.waiting = asyncio.ensure_future(self._next())
        elif method == b"POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
            too_large = self.size > RESPONSE_LIMIT
            if not self.handler.invocation_response(parts[1], body, too_large):
                return self._refuse(_INVALID_ID, "a response for a request ID that is not the current invoke's")
            if too_large:
                return self._send(_error(413, "Request Entity Too Large", "RequestEntityTooLarge",
                                         f"Exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes)."))
            self._send(_ACCEPTED)
        elif method == b"POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
            if not self.handler.invocation_error(parts[1], body, etype):
                return self._refuse(_INVALID_ID, "an error for a request ID that is not the current invoke's")
            self._send(_ACCEPTED)
        elif method == b"POST" and parts == ["init", "error"]:
            self.handler.init_error(body, etype)
            self._send(_ACCEPTED)
        else:
            self._refuse(_NOT_FOUND, "a request for a path it does not serve")

    # -- helpers ------------------------------------------------------------------------------------
    def _parts(self) -> list[str] | None:
        """The request's path below /2018-06-01/runtime/, split at "/"; None if it is not below it."""
        path = self.url.split(b"?", 1)[0]
        if not path.startswith(PREFIX):
            return None
        return path[len(PREFIX):].decode("latin-1").strip("/").split("/")

    async def _next(self) -> None:
        inv = await self.handler.next_invocation()
        self.waiting = None
        headers = {"Lambda-Runtime-Aws-Request-Id": inv.request_id, **inv.headers}
        self._send(_response(200, "OK", inv.payload, headers))

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _refuse(self, answer: bytes, reason: str) -> None:
        """Answer a request that serves no invoke; each one is a strike (a runtime never needs to send one)."""
        self._send(answer)
        self.limits.strike(reason)

    def _release(self) -> None:
        if self.held:
            self.limits.release(self.held)
            self.held, self.body = 0, []

    def _end_request(self) -> None:
        self._release()
        self.in_request, self.in_body, self.head = False, False, 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        self._breached(_Breach(408, "Request Timeout", f"a request not sent within {REQUEST_TIMEOUT:g} s"))

    def _breached(self, breach: _Breach) -> None:
        """Answer the breach, close this connection, and count it against the environment."""
        self._end_request()
        if self.transport is None or self.transport.is_closing():
            return
        self._send(_error(breach.status, breach.phrase, "RequestLimitExceeded", breach.reason))
        self.transport.abort()  # now, not once a runtime that may never read has read the answer
        self.limits.strike(breach.reason)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class RuntimeAPI:
    """One environment's Runtime API: its listening socket, its connections and their limits."""

    def __init__(self, sock: socket.socket, handler: Handler, name: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.handler = handler
        self.limits = EnvironmentLimits(name, self._fail)
        self.connections: set[RuntimeAPIProtocol] = set()
        self.closed = False
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):  # the rest waits for the next turn of the loop, after the others
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors or memory: the host's state, not this environment's doing
                log.warning("Runtime API could not accept a connection (%s); trying again in 0.1 s", e)
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(0.1, self._resume)
                return
            if self.limits.connections >= MAX_CONNECTIONS:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                conn.close()
                self.limits.strike(f"more than {MAX_CONNECTIONS} connections at once")
                if self.closed:
                    return
                continue
            self.limits.connections += 1
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            self.loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: RuntimeAPIProtocol(self), conn)
        except OSError:
            conn.close()
            self.limits.connections -= 1

    def _resume(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _fail(self, reason: str) -> None:
        self.close()
        self.handler.limits_exceeded(reason)

    def close(self) -> None:
        """Stop accepting and drop every connection (the listening socket itself belongs to the sandbox)."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        for conn in list(self.connections):
            conn.abort()


async def serve(sock: socket.socket, handler: Handler, name: str = "an execution environment") -> RuntimeAPI:
    """Serve the Runtime API on an already bound, listening socket; ``name`` is the environment in log lines."""
    return RuntimeAPI(sock, handler, name)
