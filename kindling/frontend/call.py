"""What a handler gets: the call's parameters and the little it may know of the HTTP request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kindling.core import Kindling


class Call:
    """What a handler may know of the HTTP request, and nothing more."""

    def __init__(self, params: dict[str, Any], request_id: str, base_url: str, trace_id: str | None) -> None:
        self.params = params
        self.request_id = request_id
        self.base_url = base_url
        self.trace_id = trace_id


Handler = Callable[[Kindling, Call], Awaitable[dict[str, Any]]]


def sync(method: Callable[[Kindling, dict[str, Any]], dict[str, Any]]) -> Handler:
    """A handler for an operation that is a plain call on the request's members."""
    async def handler(k: Kindling, call: Call) -> dict[str, Any]:
        return method(k, call.params)
    return handler
