"""The Lambda operations Kindling serves: operation name → typed call below the frontend."""

from __future__ import annotations

import base64
import json
from typing import Any

from kindling import errors
from kindling.core import Kindling
from kindling.frontend.call import Call, Handler
from kindling.frontend.call import sync as _sync


async def _get_function(k: Kindling, call: Call) -> dict[str, Any]:
    out = k.functions.get(call.params, lambda key: call.base_url + k.code_path(key))
    reserved = k.concurrency.store.get(out["Configuration"]["FunctionName"])
    if reserved is not None:
        out["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return out


async def _invoke(k: Kindling, call: Call) -> dict[str, Any]:
    if (context := call.params.get("ClientContext")) is not None:
        call.params["ClientContext"] = _client_context(context)
    return await k.invoker.invoke(call.params, call.request_id, call.trace_id)


def _client_context(value: str) -> str:
    """The ClientContext header, which must be base64 of a JSON object, re-encoded as ASCII JSON (the Runtime
    API hands it to the function in a header, where only latin-1 fits)."""
    try:
        doc = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        raise errors.InvalidRequestContentException("Client context must be a valid Base64-encoded JSON object.")
    return base64.b64encode(json.dumps(doc).encode()).decode()


HANDLERS: dict[str, Handler] = {
    "CreateFunction": lambda k, call: k.functions.create_async(call.params),  # extraction off the event loop
    "GetFunction": _get_function,
    "GetFunctionConfiguration": _sync(lambda k, p: k.functions.get_configuration(p)),
    "ListFunctions": _sync(lambda k, p: k.functions.list(p)),
    "UpdateFunctionCode": lambda k, call: k.functions.update_code_async(call.params),
    "UpdateFunctionConfiguration": _sync(lambda k, p: k.functions.update_configuration(p)),
    "DeleteFunction": _sync(lambda k, p: k.functions.delete(p)),
    "PublishVersion": _sync(lambda k, p: k.functions.publish(p)),
    "ListVersionsByFunction": _sync(lambda k, p: k.functions.list_versions(p)),
    "CreateAlias": _sync(lambda k, p: k.aliases.create(p)),
    "GetAlias": _sync(lambda k, p: k.aliases.get(p)),
    "UpdateAlias": _sync(lambda k, p: k.aliases.update(p)),
    "DeleteAlias": _sync(lambda k, p: k.aliases.delete(p)),
    "ListAliases": _sync(lambda k, p: k.aliases.list(p)),
    "GetAccountSettings": _sync(lambda k, p: k.concurrency.account(k.functions.account_settings(0))),
    "PutFunctionConcurrency": _sync(lambda k, p: k.concurrency.put(p)),
    "GetFunctionConcurrency": _sync(lambda k, p: k.concurrency.get(p)),
    "DeleteFunctionConcurrency": _sync(lambda k, p: k.concurrency.delete(p)),
    "TagResource": _sync(lambda k, p: k.functions.tag(p)),
    "UntagResource": _sync(lambda k, p: k.functions.untag(p)),
    "ListTags": _sync(lambda k, p: k.functions.list_tags(p)),
    "Invoke": _invoke,
}

# Members whose errors Lambda reports as InvalidParameterValueException, checked by the handlers.
SKIP_VALIDATION: dict[str, set[str]] = {
    "CreateFunction": {"Runtime"},
    "UpdateFunctionConfiguration": {"Runtime"},
}

from kindling.frontend.async_handlers import ASYNC_HANDLERS  # noqa: E402  (async invocation operations)

HANDLERS.update(ASYNC_HANDLERS)
from kindling.frontend.provisioned import PROVISIONED_HANDLERS  # noqa: E402  (provisioned concurrency)

HANDLERS.update(PROVISIONED_HANDLERS)
from kindling.frontend.permissions import PERMISSION_HANDLERS  # noqa: E402  (resource-based policies)

HANDLERS.update(PERMISSION_HANDLERS)
