"""The provisioned concurrency operations (merged into HANDLERS)."""

from __future__ import annotations

from kindling.frontend.call import Handler
from kindling.frontend.call import sync as _op

PROVISIONED_HANDLERS: dict[str, Handler] = {
    "PutProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.put(p)),
    "GetProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.get(p)),
    "DeleteProvisionedConcurrencyConfig": _op(lambda k, p: k.provisioned.delete(p)),
    "ListProvisionedConcurrencyConfigs": _op(lambda k, p: k.provisioned.list(p)),
}
