"""The asynchronous-invocation operations: event invoke configs and recursion configs (merged into HANDLERS)."""

from __future__ import annotations

from kindling.frontend.call import Handler
from kindling.frontend.call import sync as _op

ASYNC_HANDLERS: dict[str, Handler] = {
    "PutFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.put(p)),
    "GetFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.get(p)),
    "UpdateFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.update(p)),
    "DeleteFunctionEventInvokeConfig": _op(lambda k, p: k.events.configs.delete(p)),
    "ListFunctionEventInvokeConfigs": _op(lambda k, p: k.events.configs.list(p)),
    "PutFunctionRecursionConfig": _op(lambda k, p: k.events.configs.put_recursion(p)),
    "GetFunctionRecursionConfig": _op(lambda k, p: k.events.configs.get_recursion(p)),
}
