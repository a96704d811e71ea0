"""The Lambda Runtime API 2018-06-01, served to one execution environment.

Each environment gets its own listening socket, so one function can never
answer another's invocation. The HTTP is parsed by httptools (the parser under
uvicorn); this module is only the protocol's few routes. Every response is one
write on a TCP_NODELAY socket, so no round trip waits on Nagle.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Protocol

import httptools

PREFIX = b"/2018-06-01/runtime/"
RESPONSE_LIMIT = 6291556  # Lambda's synchronous response limit (6 MB + 100 bytes)


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


def _response(status: int, reason: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


_ACCEPTED = _response(202, "Accepted", b'{"status":"OK"}')


def _error(status: int, reason: str, error_type: str, message: str) -> bytes:
    return _response(status, reason, json.dumps({"errorMessage": message, "errorType": error_type}).encode())


class RuntimeAPIProtocol(asyncio.Protocol):
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.waiting: asyncio.Task[None] | None = None

    # -- asyncio ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._send(_error(400, "Bad Request", "InvalidRequest", "Malformed HTTP request"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting is not None:
            self.waiting.cancel()
        self.transport = None

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.url, self.headers, self.body, self.size = b"", {}, [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size <= RESPONSE_LIMIT:
            self.body.append(body)

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        if not path.startswith(PREFIX):
            return self._send(_error(404, "Not Found", "InvalidRequest", "Not found"))
        parts = path[len(PREFIX):].decode("latin-1").strip("/").split("/")
        body = b"".join(self.body)
        error_type = self.headers.get(b"lambda-runtime-function-error-type")
        etype = error_type.decode("latin-1") if error_type else None
        if method == b"GET" and parts == ["invocation", "next"]:
            self.waiting = asyncio.ensure_future(self._next())
        elif method == b"POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
            too_large = self.size > RESPONSE_LIMIT
            if not self.handler.invocation_response(parts[1], body, too_large):
                return self._send(_error(400, "Bad Request", "InvalidRequestID", "Invalid request ID"))
            if too_large:
                return self._send(_error(413, "Request Entity Too Large", "RequestEntityTooLarge",
                                         f"Exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes)."))
            self._send(_ACCEPTED)
        elif method == b"POST" and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "error":
            if not self.handler.invocation_error(parts[1], body, etype):
                return self._send(_error(400, "Bad Request", "InvalidRequestID", "Invalid request ID"))
            self._send(_ACCEPTED)
        elif method == b"POST" and parts == ["init", "error"]:
            self.handler.init_error(body, etype)
            self._send(_ACCEPTED)
        else:
            self._send(_error(404, "Not Found", "InvalidRequest", "Not found"))

    # -- helpers ------------------------------------------------------------------------------------
    async def _next(self) -> None:
        inv = await self.handler.next_invocation()
        self.waiting = None
        headers = {"Lambda-Runtime-Aws-Request-Id": inv.request_id, **inv.headers}
        self._send(_response(200, "OK", inv.payload, headers))

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve(sock: socket.socket, handler: Handler) -> asyncio.Server:
    """Serve the Runtime API on an already bound, listening socket."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: RuntimeAPIProtocol(handler), sock=sock)
