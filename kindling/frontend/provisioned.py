"""The provisioned concurrency operations (merged into HANDLERS)."""

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


PROVISIONED_HANDLERS: dict[str, Handler] = {
    "PutProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.put(p)),
    "GetProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.get(p)),
    "DeleteProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.delete(p)),
    "ListProvisionedConcurrencyConfigs": _op(lambda k, p: k.provisioned.list(p)),
}
