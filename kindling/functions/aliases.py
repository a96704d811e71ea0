"""Control-plane operations on aliases: CreateAlias, GetAlias, UpdateAlias, DeleteAlias, ListAliases.

An alias points at one version (FunctionVersion) and may send a share of invokes to one more
(RoutingConfig.AdditionalVersionWeights, 0 to 1). Invokes pick between them in invoke/routing.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from kindling import errors
from kindling.functions.service import STALE_REVISION, FunctionService
from kindling.store.aliases import AliasRecord
from kindling.store.functions import LATEST, AlreadyExists, Conflict


class AliasService:
    def __init__(self, functions: FunctionService) -> None:
        self.functions = functions
        self.store = functions.aliases
        self.listeners: list[Callable[[str, str], None]] = []  # (function, alias) after an update or delete

    def _check_targets(self, name: str, version: str, weights: dict[str, float]) -> None:
        """AWS's checks of an alias's versions, in AWS's order."""
        if len(weights) > 1:
            raise errors.InvalidParameterValueException(
                "Number of items in AdditionalVersionWeights cannot be greater than 1")
        if version in weights:
            raise errors.InvalidParameterValueException(
                f"Invalid function version {version}. Function version {version} is already included in routing "
                "configuration.")
        if weights and version == LATEST:
            raise errors.InvalidParameterValueException(
                "$LATEST is not supported for an alias pointing to more than 1 version", typed=False)
        for v in (version, *weights):
            if self.functions.store.get(name, v) is None:
                raise errors.ResourceNotFoundException(f"Function not found: {self.functions.arn(name, v)}")

    def _config(self, name: str, alias: str, version: str, description: str,
                weights: dict[str, float]) -> dict[str, Any]:
        config: dict[str, Any] = {"AliasArn": self.functions.arn(name, alias), "Name": alias,
                                  "FunctionVersion": version, "Description": description,
                                  "RevisionId": str(uuid.uuid4())}
        if weights:
            config["RoutingConfig"] = {"AdditionalVersionWeights": weights}
        return config

    def create(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self.functions.unqualified(p["FunctionName"])
        weights = dict((p.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})
        self._check_targets(name, p["FunctionVersion"], weights)
        config = self._config(name, p["Name"], p["FunctionVersion"], p.get("Description", ""), weights)
        try:
            self.store.create(name, config)
        except AlreadyExists:
            self.functions.existing(name)  # or it was deleted meanwhile
            raise errors.ResourceConflictException(f"Alias already exists: {config['AliasArn']}") from None
        return config

    def _alias(self, p: dict[str, Any], missing: str) -> tuple[str, AliasRecord]:
        name = self.functions.existing(p["FunctionName"])
        rec = self.store.get(name, p["Name"])
        if rec is None:
            raise errors.ResourceNotFoundException(f"{missing}: {self.functions.arn(name, p['Name'])}")
        return name, rec

    def get(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._alias(p, "Cannot find alias arn")[1].config

    def update(self, p: dict[str, Any]) -> dict[str, Any]:
        name, rec = self._alias(p, "Alias not found")
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        version = p.get("FunctionVersion") or rec.config["FunctionVersion"]
        weights = rec.weights
        if "RoutingConfig" in p:
            weights = dict((p["RoutingConfig"] or {}).get("AdditionalVersionWeights") or {})
        self._check_targets(name, version, weights)
        config = self._config(name, rec.name, version, p.get("Description", rec.config.get("Description", "")),
                              weights)
        try:
            self.store.update(rec, config)
        except Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{config['AliasArn']}") from None
        self._changed(name, rec.name)
        return config

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        """DeleteAlias: an alias that does not exist is already deleted (204), as on AWS."""
        name = self.functions.existing(p["FunctionName"])
        if self.store.delete(name, p["Name"]):
            self._changed(name, p["Name"])
        return {}

    def _changed(self, name: str, alias: str) -> None:
        for listener in self.listeners:
            listener(name, alias)

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self.functions.existing(p["FunctionName"])
        found = [a.config for a in self.store.all(name)
                 if not p.get("FunctionVersion") or a.config["FunctionVersion"] == p["FunctionVersion"]]
        if p.get("Marker"):
            found = [a for a in found if a["Name"] > p["Marker"]]
        limit = int(p.get("MaxItems") or 50)
        out: dict[str, Any] = {"Aliases": found[:limit]}
        if len(found) > limit:
            out["NextMarker"] = found[limit - 1]["Name"]
        return out
