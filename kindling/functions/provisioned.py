"""Put/Get/Delete/ListProvisionedConcurrencyConfigs: configs kept in the store, environments kept by the provisioner.

A config belongs to a published version or to an alias; an alias's config provisions the alias's
FunctionVersion (routing weights aside) and moves with it when the alias is updated. One version is
provisioned through one config only: its own or an alias's. A function's provisioned concurrency is
carved out of its reserved concurrency when it has one, else out of the account's unreserved pool,
which never drops below 100 (``Counter.unreserved_limit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kindling import arns, errors
from kindling.functions.service import FunctionService
from kindling.invoke.provisioned import IN_PROGRESS, Provisioner
from kindling.sandbox.environment import FunctionVersion
from kindling.scheduler.limits import UNRESERVED_MINIMUM
from kindling.scheduler.pool import Scheduler
from kindling.store.functions import LATEST, FunctionRecord
from kindling.store.provisioned import ProvisionedRecord, ProvisionedStore

UNPUBLISHED = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_A_VERSION = "The function resource provided must be an alias or a published version."
NOT_FOUND = "No Provisioned Concurrency Config found for this function"
ALIAS_ON_PROVISIONED_VERSION = ("Alias can't be used for Provisioned Concurrency configuration on an already "
                                "Provisioned version")
VERSION_OF_PROVISIONED_ALIAS = "Version is pointed by a Provisioned Concurrency alias"
ABOVE_RESERVED = ("Requested Provisioned Concurrency should not be greater than the reservedConcurrentExecution for "
                  "function")


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())  # as Lambda renders this LastModified


class ProvisionedService:
    def __init__(self, functions: FunctionService, store: ProvisionedStore, scheduler: Scheduler,
                 version_of: Callable[[FunctionRecord], FunctionVersion]) -> None:
        self.functions = functions
        self.store = store
        self.counter = scheduler.counter
        self._version_of = version_of
        self.provisioner = Provisioner(scheduler, self._environment_version)
        self.targets: dict[tuple[str, str], str] = {}  # (function, qualifier) → the version it provisions
        self.carried: dict[tuple[str, str], int] = {}  # an alias's Available while it moves to another version
        for name in {r.function_name for r in store.all()}:
            self._apply(name)  # the Counter hears of stored configs now, the environments come at start()

    def _environment_version(self, name: str, version: str) -> FunctionVersion | None:
        rec = self.functions.store.get(name, version)
        return self._version_of(rec) if rec is not None else None

    # -- qualifiers ---------------------------------------------------------------------------------
    def _resolve(self, p: dict[str, Any], latest: str) -> tuple[str, str, str]:
        """(function, qualifier, the version it provisions: itself, or its alias's FunctionVersion)."""
        name, qualifier = self.functions.resolve(p["FunctionName"], p.get("Qualifier"))
        if qualifier is None or qualifier == LATEST:
            raise errors.InvalidParameterValueException(latest)
        if arns.is_alias(qualifier):
            alias = self.functions.aliases.get(name, qualifier)
            if alias is None:
                raise errors.ResourceNotFoundException(f"Cannot find alias arn: {self.functions.arn(name, qualifier)}")
            return name, qualifier, str(alias.config["FunctionVersion"])
        if self.functions.store.get(name, qualifier) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.functions.arn(name, qualifier)}")
        return name, qualifier, qualifier

    def _config_target(self, rec: ProvisionedRecord) -> str | None:
        if not arns.is_alias(rec.qualifier):
            return rec.qualifier
        alias = self.functions.aliases.get(rec.function_name, rec.qualifier)
        version = alias.config["FunctionVersion"] if alias is not None else None
        return str(version) if version not in (None, LATEST) else None

    def _apply(self, name: str, handover: bool = False, again: tuple[str, ...] = ()) -> None:
        """Tell the provisioner how many environments each version of ``name`` should keep now."""
        counts: dict[str, int] = {}
        for key in [k for k in self.targets if k[0] == name]:
            del self.targets[key]
        for rec in self.store.all(name):
            version = self._config_target(rec)
            if version is not None:
                self.targets[name, rec.qualifier] = version
                counts[version] = counts.get(version, 0) + rec.requested
        self.provisioner.want(name, counts, handover, again)

    # -- operations ---------------------------------------------------------------------------------
    def put(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier, version = self._resolve(p, UNPUBLISHED)
        if version == LATEST:  # an alias of $LATEST
            raise errors.InvalidParameterValueException(UNPUBLISHED)
        requested = int(p["ProvisionedConcurrentExecutions"])
        others = [r for r in self.store.all(name) if r.qualifier != qualifier]
        if any(self._config_target(r) == version for r in others):  # one config per version
            raise errors.ResourceConflictException(
                ALIAS_ON_PROVISIONED_VERSION if arns.is_alias(qualifier) else VERSION_OF_PROVISIONED_ALIAS)
        self._check_limits(name, requested, sum(r.requested for r in others))
        rec = ProvisionedRecord(name, qualifier, requested, _timestamp())
        self.store.put(rec)
        self.carried.pop((name, qualifier), None)
        self._apply(name, again=(version,))
        return self._describe(rec)

    def _check_limits(self, name: str, requested: int, others: int) -> None:
        """Lambda's limits for ``requested`` more of ``name`` besides ``others`` (its other configs)."""
        reserved = self.counter.reserved.get(name)
        if reserved is not None:
            if others + requested > reserved:
                raise errors.InvalidParameterValueException(ABOVE_RESERVED)
            return
        unreserved = self.counter.unreserved_limit(without=name) - others
        if requested > unreserved:
            raise errors.InvalidParameterValueException(
                f"Specified ConcurrentExecutions for function is greater than account's unreserved concurrency "
                f"[{unreserved}].", typed=False)
        if unreserved - requested < UNRESERVED_MINIMUM:
            raise errors.InvalidParameterValueException(
                "Specified ConcurrentExecutions for function decreases account's UnreservedConcurrentExecution "
                f"below its minimum value of [{UNRESERVED_MINIMUM}].", typed=False)

    def _config(self, p: dict[str, Any]) -> tuple[str, str]:
        name, qualifier, _ = self._resolve(p, NOT_A_VERSION)
        return name, qualifier

    def get(self, p: dict[str, Any]) -> dict[str, Any]:
        rec = self.store.get(*self._config(p))
        if rec is None:
            raise errors.ProvisionedConcurrencyConfigNotFoundException(NOT_FOUND)
        return self._describe(rec)

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        """DeleteProvisionedConcurrencyConfig: the version runs on demand again. None there: already deleted."""
        name, qualifier = self._config(p)
        if self.store.delete(name, qualifier):
            self.carried.pop((name, qualifier), None)
            self._apply(name)
        return {}

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self.functions.existing(p["FunctionName"])
        found = [r for r in self.store.all(name) if not p.get("Marker") or r.qualifier > p["Marker"]]
        limit = int(p.get("MaxItems") or 50)
        out: dict[str, Any] = {"ProvisionedConcurrencyConfigs": [
            {"FunctionArn": self.functions.arn(name, r.qualifier), **self._describe(r)} for r in found[:limit]]}
        if len(found) > limit:
            out["NextMarker"] = found[limit - 1].qualifier
        return out

    def _describe(self, rec: ProvisionedRecord) -> dict[str, Any]:
        version = self.targets.get((rec.function_name, rec.qualifier))
        progress = self.provisioner.status(rec.function_name, version) if version else None
        status = progress.status if progress else IN_PROGRESS
        available = progress.available if progress else 0
        if status == IN_PROGRESS:  # an alias moving to another version: its old environments serve meanwhile
            available = max(available, self.carried.get((rec.function_name, rec.qualifier), 0))
        available = min(available, rec.requested)
        out: dict[str, Any] = {"RequestedProvisionedConcurrentExecutions": rec.requested,
                               "AvailableProvisionedConcurrentExecutions": available,
                               "AllocatedProvisionedConcurrentExecutions": available,
                               "Status": status, "LastModified": rec.last_modified}
        if progress is not None and progress.reason:
            out["StatusReason"] = progress.reason
        return out

    # -- what changes elsewhere ---------------------------------------------------------------------
    def version_changed(self, name: str, version: str | None) -> None:
        """FunctionService's version listener: a deleted version's config goes with it (a whole function's
        went by cascade). Published versions change only by being deleted; $LATEST is never provisioned."""
        if version is None:
            self.provisioner.forget(name)
            for key in [k for k in {*self.targets, *self.carried} if k[0] == name]:
                self.targets.pop(key, None)
                self.carried.pop(key, None)
        elif version != LATEST:
            self.store.delete(name, version)
            self.targets.pop((name, version), None)
            self.provisioner.forget(name, version)

    def alias_changed(self, name: str, alias: str) -> None:
        """AliasService's listener: a deleted alias's config goes with it; a moved alias's moves with it."""
        if self.store.get(name, alias) is None:
            return
        moved = self.functions.aliases.get(name, alias)
        if moved is None:
            self.store.delete(name, alias)
            self.carried.pop((name, alias), None)
            self._apply(name)
            return
        old = self.targets.get((name, alias))
        if old is not None and moved.config["FunctionVersion"] != old:
            self.carried[name, alias] = self.provisioner.status(name, old).available
        self._apply(name, handover=True)

    def start(self) -> None:
        self.provisioner.start()

    async def stop(self) -> None:
        await self.provisioner.stop()
