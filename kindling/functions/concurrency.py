"""Put/Get/DeleteFunctionConcurrency: reserved concurrency, kept in the store and in the Counter."""

from __future__ import annotations

from typing import Any

from kindling import errors
from kindling.functions.service import FunctionService
from kindling.scheduler.limits import UNRESERVED_MINIMUM, Counter
from kindling.store.concurrency import ConcurrencyStore


class ConcurrencyService:
    def __init__(self, functions: FunctionService, store: ConcurrencyStore, counter: Counter) -> None:
        self.functions = functions
        self.store = store
        self.counter = counter
        self.counter.reserved = store.all()

    def _function(self, ident: str) -> str:
        name, qualifier = self.functions.resolve(ident)
        if qualifier:
            raise errors.InvalidParameterValueException(
                "This operation is permitted on Lambda functions only. Aliases and versions do not support this "
                "operation. Please specify either a function name or an unqualified function ARN.")
        if self.functions.store.get(name) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.functions.arn(name, '$LATEST')}")
        return name

    def put(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._function(p["FunctionName"])
        value = int(p["ReservedConcurrentExecutions"])
        if self.counter.unreserved_limit(without=name) - value < UNRESERVED_MINIMUM:
            raise errors.InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{UNRESERVED_MINIMUM}].")
        provisioned = sum(self.counter.provisioned.get(name, {}).values())  # the reservation must hold it
        if value < provisioned:
            raise errors.InvalidParameterValueException(
                f" ReservedConcurrentExecutions  {value} should not be lower than function's total provisioned "
                f"concurrency [{provisioned}].", typed=False)  # sic: AWS's spacing
        self.store.put(name, value)
        self.counter.set_reserved(name, value)
        return {"ReservedConcurrentExecutions": value}

    def get(self, p: dict[str, Any]) -> dict[str, Any]:
        value = self.store.get(self._function(p["FunctionName"]))
        return {} if value is None else {"ReservedConcurrentExecutions": value}

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self._function(p["FunctionName"])
        self.store.delete(name)
        self.counter.set_reserved(name, None)
        return {}

    def function_deleted(self, name: str) -> None:
        self.counter.set_reserved(name, None)  # the row went with the function (ON DELETE CASCADE)

    def account(self, settings: dict[str, Any]) -> dict[str, Any]:
        """GetAccountSettings with the account limit and what reservations and provisioned concurrency leave."""
        settings["AccountLimit"]["ConcurrentExecutions"] = self.counter.account_limit
        settings["AccountLimit"]["UnreservedConcurrentExecutions"] = self.counter.unreserved_limit()
        return settings
