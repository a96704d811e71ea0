"""Control-plane operations on functions: typed calls, no HTTP.

Each method takes the already-validated request members and returns the
members of the answer. Configuration changes notify listeners (the scheduler),
so warm execution environments of an old configuration are retired.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kindling import arns, errors
from kindling.functions import config as cfg
from kindling.runtimes.registry import Runtimes
from kindling.settings import Settings
from kindling.store.code import CodeStore
from kindling.store.functions import LATEST, AlreadyExists, Conflict, FunctionRecord, FunctionStore

ZIP_ONLY = ("S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri")


class FunctionService:
    def __init__(self, settings: Settings, store: FunctionStore, code: CodeStore, runtimes: Runtimes) -> None:
        self.settings = settings
        self.store = store
        self.code = code
        self.runtimes = runtimes
        self.listeners: list[Callable[[str], None]] = []  # called with a function name after it changed

    # -- names --------------------------------------------------------------------------------------
    def arn(self, name: str, qualifier: str | None = None) -> str:
        return arns.function_arn(self.settings.region, self.settings.account_id, name, qualifier)

    def resolve(self, ident: str, qualifier: str | None = None) -> tuple[str, str | None]:
        return arns.split_function(ident, self.settings.region, self.settings.account_id, qualifier)

    def record(self, ident: str, qualifier: str | None = None) -> FunctionRecord:
        """The stored record for a FunctionName (+ Qualifier), or Lambda's not-found error."""
        name, qualifier = self.resolve(ident, qualifier)
        rec = self.store.get(name, qualifier or LATEST)
        if rec is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.arn(name, qualifier)}")
        return rec

    def _changed(self, name: str) -> None:
        for listener in self.listeners:
            listener(name)

    # -- code ---------------------------------------------------------------------------------------
    def _store_code(self, code: dict[str, Any]) -> dict[str, Any]:
        if any(code.get(k) for k in ZIP_ONLY):
            raise errors.InvalidParameterValueException(
                "Kindling has no object storage yet: upload the code as ZipFile instead of S3Bucket/S3Key/ImageUri.")
        zip_bytes = code.get("ZipFile")
        if not zip_bytes:
            raise errors.InvalidParameterValueException("Please provide a source for function code.")
        info = self.code.put(zip_bytes)
        return {"CodeSha256": info.sha256, "CodeSize": info.size, "key": info.key}

    def collect_garbage(self) -> None:
        """Remove code no version refers to any more."""
        for key in self.code.keys() - self.store.code_keys_in_use():
            self.code.delete(key)

    # -- operations ---------------------------------------------------------------------------------
    def create(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self.resolve(p["FunctionName"])
        if qualifier:
            raise errors.InvalidParameterValueException("Function name cannot contain a qualifier when creating.")
        if p.get("PackageType", "Zip") != "Zip":
            raise errors.InvalidParameterValueException("Kindling runs Zip packages only; PackageType Image is not "
                                                        "supported yet.")
        runtime = p.get("Runtime")
        if runtime is None:
            raise errors.InvalidParameterValueException("Runtime and Handler are mandatory parameters for functions "
                                                        "created with deployment packages.")
        cfg.check_runtime(runtime, self.runtimes)
        cfg.check_handler(runtime, p.get("Handler"))
        cfg.check_environment(p.get("Environment"))
        if self.store.get(name) is not None:  # before storing code: a conflict leaves nothing behind
            raise errors.ResourceConflictException(f"Function already exist: {name}")
        code = self._store_code(p["Code"])
        config = cfg.new_configuration(p, self.arn(name), code, self.settings.region)
        try:
            self.store.create(name, config, code["key"], dict(p.get("Tags") or {}))
        except AlreadyExists:
            self.collect_garbage()
            raise errors.ResourceConflictException(f"Function already exist: {name}") from None
        return cfg.as_returned_after_create(config)

    def get_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        return self.record(p["FunctionName"], p.get("Qualifier")).config

    def get(self, p: dict[str, Any], code_url: Callable[[str], str]) -> dict[str, Any]:
        rec = self.record(p["FunctionName"], p.get("Qualifier"))
        out: dict[str, Any] = {"Configuration": rec.config,
                               "Code": {"RepositoryType": "S3", "Location": code_url(rec.code_key)}}
        if rec.tags:
            out["Tags"] = rec.tags
        return out

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        records, next_marker = self.store.list_latest(p.get("Marker"), int(p.get("MaxItems") or 50))
        out: dict[str, Any] = {"Functions": [r.config for r in records]}
        if next_marker:
            out["NextMarker"] = next_marker
        return out

    def _update(self, p: dict[str, Any],
                change: Callable[[FunctionRecord], tuple[dict[str, Any], str]]) -> dict[str, Any]:
        rec = self.record(p["FunctionName"])
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API "
                "to retrieve the latest Revision Id")
        config, key = change(rec)
        try:
            new = self.store.update(rec, config, key)
        except Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{self.arn(rec.name)}") from None
        finally:
            self.collect_garbage()
        self._changed(rec.name)
        return cfg.as_returned_after_update(new.config)

    def update_code(self, p: dict[str, Any]) -> dict[str, Any]:
        def change(rec: FunctionRecord) -> tuple[dict[str, Any], str]:
            code = self._store_code(p)
            config = {**rec.config, "CodeSha256": code["CodeSha256"], "CodeSize": code["CodeSize"],
                      "LastModified": cfg.lambda_timestamp()}
            if p.get("Architectures"):
                config["Architectures"] = p["Architectures"]
            return config, code["key"]
        return self._update(p, change)

    def update_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        def change(rec: FunctionRecord) -> tuple[dict[str, Any], str]:
            if "Runtime" in p:
                cfg.check_runtime(p["Runtime"], self.runtimes)
            if "Environment" in p:
                cfg.check_environment(p["Environment"])
            return cfg.updated_configuration(rec.config, p, self.settings.region), rec.code_key
        return self._update(p, change)

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self.resolve(p["FunctionName"], p.get("Qualifier"))
        if qualifier == LATEST:
            raise errors.InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function.")
        if self.store.get(name) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        self.store.delete(name)
        self.collect_garbage()
        self._changed(name)
        return {"StatusCode": 204}

    # -- tags ---------------------------------------------------------------------------------------
    def _tag_target(self, resource: str) -> FunctionRecord:
        name, qualifier = self.resolve(resource)
        if qualifier:
            raise errors.InvalidParameterValueException(
                "Tags on function aliases and versions are not supported. Please specify a function ARN.")
        return self.record(name)

    def tag(self, p: dict[str, Any]) -> dict[str, Any]:
        rec = self._tag_target(p["Resource"])
        if not p.get("Tags"):
            raise errors.InvalidParameterValueException("An error occurred and the request cannot be processed.")
        tags = {**rec.tags, **p["Tags"]}
        if len(tags) > 50:
            raise errors.InvalidParameterValueException(
                "Number of tags exceeds resource tag limit.")
        self.store.set_tags(rec.name, tags)
        return {}

    def untag(self, p: dict[str, Any]) -> dict[str, Any]:
        rec = self._tag_target(p["Resource"])
        self.store.set_tags(rec.name, {k: v for k, v in rec.tags.items() if k not in set(p["TagKeys"])})
        return {}

    def list_tags(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Tags": self._tag_target(p["Resource"]).tags}

    def account_settings(self, concurrency_limit: int) -> dict[str, Any]:
        count, total = self.store.count()
        return {
            "AccountLimit": {"TotalCodeSize": 80530636800, "CodeSizeUnzipped": 262144000,
                             "CodeSizeZipped": 52428800, "ConcurrentExecutions": concurrency_limit,
                             "UnreservedConcurrentExecutions": concurrency_limit},
            "AccountUsage": {"TotalCodeSize": total, "FunctionCount": count},
        }
