"""The resource-based policy operations (merged into HANDLERS): AddPermission, RemovePermission, GetPolicy and
Get/Put/DeleteResourcePolicy."""

from __future__ import annotations

from kindling.frontend.call import Handler
from kindling.frontend.call import sync as _op

PERMISSION_HANDLERS: dict[str, Handler] = {
    "AddPermission": _op(lambda k, p: k.permissions.add(p)),
    "RemovePermission": _op(lambda k, p: k.permissions.remove(p)),
    "GetPolicy": _op(lambda k, p: k.permissions.get(p)),
    "GetResourcePolicy": _op(lambda k, p: k.permissions.get_resource_policy(p)),
    "PutResourcePolicy": _op(lambda k, p: k.permissions.put_resource_policy(p)),
    "DeleteResourcePolicy": _op(lambda k, p: k.permissions.delete_resource_policy(p)),
}
