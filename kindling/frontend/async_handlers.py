"""The asynchronous-invocation operations: event invoke configs and recursion configs (merged into HANDLERS)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kindling.core import Kindling

if TYPE_CHECKING:
    from kindling.frontend.handlers import Call

Handler = Callable[[Kindling, "Call"], Awaitable[dict[str, Any]]]


def _op(method: Callable[[Kindling, dict[str, Any]], dict[str, Any]]) -> Handler:
    async def handler(k: Kindling, call: Call) -> dict[str, Any]:
        return method(k, call.params)
    return handler


ASYNC_HANDLERS: dict[str, Handler] = {
    "PutFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.put(p)),
    "GetFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.get(p)),
    "UpdateFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.update(p)),
    "DeleteFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.delete(p)),
    "ListFunctionEventInvokeConfigs": _op(lambda k, p: k.events.configs.list(p)),
    "PutFunctionRecursionConfig": _op(lambda k, p: k.events.configs.put_recursion(p)),
    "GetFunctionRecursionConfig": _op(lambda k, p: k.events.configs.get_recursion(p)),
}
