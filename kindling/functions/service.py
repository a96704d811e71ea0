"""Control-plane operations on functions: typed calls, no HTTP.

Each method takes the already-validated request members and returns the
members of the answer. A changed or deleted version notifies listeners (the
scheduler), so warm execution environments of an old configuration are retired.
Published versions are never changed: only $LATEST is updated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kindling import arns, errors
from kindling.functions import config as cfg
from kindling.functions import images
from kindling.images.store import ImageStore, is_image_key
from kindling.network.vpc import Vpcs
from kindling.runtimes.registry import Runtimes
from kindling.settings import Settings
from kindling.store.aliases import AliasStore
from kindling.store.code import CodeInfo, CodeStore, CodeWorker
from kindling.store.functions import LATEST, AlreadyExists, Conflict, FunctionRecord, FunctionStore
from kindling.store.versions import VersionStore

ZIP_ONLY = ("S3Bucket", "S3Key", "S3ObjectVersion", "ImageUri")
STALE_REVISION = ("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API "
                  "to retrieve the latest Revision Id")
ONLY_LATEST = ("Current operation does not support versions other than $LATEST. Please set version to $LATEST or do "
               "not set a version in your request.")


class FunctionService:
    def __init__(self, settings: Settings, store: FunctionStore, code: CodeStore, runtimes: Runtimes) -> None:
        self.settings = settings
        self.store = store
        self.code = code
        self.runtimes = runtimes
        self.vpcs = Vpcs.load(settings.vpc_file)  # the operator's subnets and security groups (VpcConfig)
        self.versions = VersionStore(store.engine)
        self.aliases = AliasStore(store.engine)
        # (name, version) after that version's code or configuration changed or it was deleted; (name, None) after
        # the whole function was deleted. Environments belong to one version, so only its own are affected.
        self.version_listeners: list[Callable[[str, str | None], None]] = []
        # name after any of the above: the whole function's environments (kept until the scheduler listens per version)
        self.listeners: list[Callable[[str], None]] = []
        # Uploads are validated and extracted in a worker process, off the event loop. While one is in flight its
        # code is on disk before any version refers to it: garbage collection waits until none is.
        self.code_worker = CodeWorker(code)
        # Container images (PackageType Image): resolved, pulled and unpacked per digest (kindling.functions.images)
        self.images = ImageStore(code.root / ".images", settings.image_sources, settings.image_max_mb,
                                 settings.image_pull_timeout)
        self.image_settlers: set[Any] = set()  # background tasks that end a pull with the function's state
        self._uploading = 0
        self._garbage_waiting = False

    # -- names --------------------------------------------------------------------------------------
    def arn(self, name: str, qualifier: str | None = None) -> str:
        return arns.function_arn(self.settings.region, self.settings.account_id, name, qualifier)

    def resolve(self, ident: str, qualifier: str | None = None) -> tuple[str, str | None]:
        return arns.split_function(ident, self.settings.region, self.settings.account_id, qualifier)

    def lookup(self, name: str, qualifier: str | None) -> FunctionRecord | None:
        """The version a qualifier names ($LATEST when there is none; an alias's FunctionVersion), if it exists."""
        version = qualifier or LATEST
        if arns.is_alias(version):
            alias = self.aliases.get(name, version)
            if alias is None:
                return None
            version = alias.config["FunctionVersion"]
        return self.store.get(name, version)

    def record(self, ident: str, qualifier: str | None = None) -> FunctionRecord:
        """The stored record for a FunctionName (+ Qualifier), or Lambda's not-found error."""
        name, qualifier = self.resolve(ident, qualifier)
        rec = self.lookup(name, qualifier)
        if rec is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.arn(name, qualifier)}")
        return rec

    def unqualified(self, ident: str) -> str:
        """The name of a FunctionName for operations on the function or its $LATEST (no other qualifier)."""
        name, qualifier = self.resolve(ident)
        if qualifier not in (None, LATEST):
            raise errors.InvalidParameterValueException(ONLY_LATEST)
        return name

    def existing(self, ident: str) -> str:
        """The name of an existing function (unqualified FunctionName), or Lambda's not-found error."""
        name = self.unqualified(ident)
        if self.store.get(name) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        return name

    def _changed(self, name: str, version: str | None) -> None:
        for version_listener in self.version_listeners:
            version_listener(name, version)
        for listener in self.listeners:
            listener(name)

    # -- code ---------------------------------------------------------------------------------------
    def _store_code(self, code: dict[str, Any]) -> dict[str, Any]:
        return _code_members(self.code.put(_zip_bytes(code)))

    async def _upload(self, code: dict[str, Any]) -> dict[str, Any]:
        """_store_code in the code worker; the caller holds ``self._uploading`` until a version refers to it."""
        return _code_members(await self.code_worker.put(_zip_bytes(code)))

    def _uploaded(self) -> None:
        self._uploading -= 1
        if not self._uploading and self._garbage_waiting:
            self.collect_garbage()

    def collect_garbage(self) -> None:
        """Remove code no version refers to any more (in the code worker when serving, else now)."""
        if self._uploading:
            self._garbage_waiting = True  # an upload's code may not be referred to yet
            return
        self._garbage_waiting = False
        in_use = self.store.code_keys_in_use()
        self.images.collect({k.split(":")[1] for k in in_use if is_image_key(k)})
        garbage = self.code.keys() - in_use
        if not garbage:
            return
        try:
            self.code_worker.delete_later(garbage)
        except RuntimeError:  # no event loop: a direct caller
            for key in garbage:
                self.code.delete(key)

    # -- operations ---------------------------------------------------------------------------------
    def create(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("PackageType") == "Image":
            raise errors.InvalidParameterValueException("Container images are created through the API only.")
        name = self._check_create(p)
        return self._create(name, p, self._store_code(p["Code"]))

    async def create_async(self, p: dict[str, Any]) -> dict[str, Any]:
        """CreateFunction with the upload's extraction off the event loop."""
        if p.get("PackageType") == "Image":
            return await images.create(self, p)
        name = self._check_create(p)
        self._uploading += 1
        try:
            return self._create(name, p, await self._upload(p["Code"]))
        finally:
            self._uploaded()

    def _check_create(self, p: dict[str, Any]) -> str:
        name, qualifier = self.resolve(p["FunctionName"])
        if qualifier:
            raise errors.InvalidParameterValueException("Function name cannot contain a qualifier when creating.")
        if p.get("PackageType") == "Image":
            images.check_create(p)
        else:
            images.check_zip(p)
            runtime = p.get("Runtime")
            if runtime is None:
                raise errors.InvalidParameterValueException("Runtime and Handler are mandatory parameters for "
                                                            "functions created with deployment packages.")
            cfg.check_runtime(runtime, self.runtimes)
            cfg.check_handler(runtime, p.get("Handler"))
        cfg.check_environment(p.get("Environment"))
        if "VpcConfig" in p:
            p["VpcConfig"] = self.vpcs.vpc_config(p["VpcConfig"])  # with its VpcId, or InvalidParameterValue
        if self.store.get(name) is not None:  # before storing code: a conflict leaves nothing behind
            raise errors.ResourceConflictException(f"Function already exist: {name}")
        return name

    def _create(self, name: str, p: dict[str, Any], code: dict[str, Any]) -> dict[str, Any]:
        config = cfg.new_configuration(p, self.arn(name), code, self.settings.region)
        try:
            rec = self.store.create(name, config, code["key"], dict(p.get("Tags") or {}))
        except AlreadyExists:
            self.collect_garbage()
            raise errors.ResourceConflictException(f"Function already exist: {name}") from None
        version = self._publish(rec, None).version if p.get("Publish") else None
        return cfg.as_returned_after_create(config, version)

    def _read(self, p: dict[str, Any]) -> tuple[FunctionRecord, dict[str, Any]]:
        """The version a FunctionName + Qualifier names, and its configuration with the ARN as addressed."""
        name, qualifier = self.resolve(p["FunctionName"], p.get("Qualifier"))
        rec = self.record(name, qualifier)
        return rec, (cfg.as_addressed(rec.config, self.arn(name, qualifier)) if qualifier else rec.config)

    def get_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._read(p)[1]

    def get(self, p: dict[str, Any], code_url: Callable[[str], str]) -> dict[str, Any]:
        rec, config = self._read(p)
        code = images.code_location(rec) if images.is_image(rec) else {"RepositoryType": "S3",
                                                                        "Location": code_url(rec.code_key)}
        out: dict[str, Any] = {"Configuration": config, "Code": code}
        if rec.tags:
            out["Tags"] = rec.tags
        return out

    def list(self, p: dict[str, Any]) -> dict[str, Any]:
        """ListFunctions: every function's $LATEST, or with FunctionVersion=ALL every version too."""
        every = p.get("FunctionVersion") == "ALL"
        marker = None
        if p.get("Marker"):
            name, _, version = p["Marker"].partition(":")
            marker = (name, _checked_marker(version or LATEST))
        records, last = self.store.list_functions(marker, int(p.get("MaxItems") or 50), every)
        out: dict[str, Any] = {"Functions": [cfg.as_listed(r.config, self.arn(r.name, r.version) if every else None)
                                             for r in records]}
        if last:
            out["NextMarker"] = f"{last[0]}:{last[1]}" if every else last[0]
        return out

    def _update(self, p: dict[str, Any],
                change: Callable[[FunctionRecord], tuple[dict[str, Any], str]]) -> dict[str, Any]:
        rec = self.record(self.unqualified(p["FunctionName"]))
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        config, key = change(rec)
        try:
            new = self.store.update(rec, config, key)
        except Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{self.arn(rec.name)}") from None
        finally:
            self.collect_garbage()
        self._changed(rec.name, LATEST)
        if p.get("Publish"):  # UpdateFunctionCode answers with the new version, still Pending on AWS
            return cfg.as_pending(self._publish(new, None).config)
        return cfg.as_returned_after_update(new.config)

    def update_code(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._update(p, lambda rec: self._new_code(rec, p, self._store_code(p)))

    async def update_code_async(self, p: dict[str, Any]) -> dict[str, Any]:
        """UpdateFunctionCode with the upload's extraction off the event loop."""
        rec = self.record(self.unqualified(p["FunctionName"]))  # answer these before the upload is extracted
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        if images.is_image(rec):
            return await images.update_code(self, p, rec)
        images.check_zip(p, updating=True)
        self._uploading += 1
        try:
            code = await self._upload(p)
            return self._update(p, lambda rec: self._new_code(rec, p, code))
        finally:
            self._uploaded()

    @staticmethod
    def _new_code(rec: FunctionRecord, p: dict[str, Any], code: dict[str, Any]) -> tuple[dict[str, Any], str]:
        config = {**rec.config, "CodeSha256": code["CodeSha256"], "CodeSize": code["CodeSize"],
                  "LastModified": cfg.lambda_timestamp()}
        if p.get("Architectures"):
            config["Architectures"] = p["Architectures"]
        return config, code["key"]

    def update_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        def change(rec: FunctionRecord) -> tuple[dict[str, Any], str]:
            images.check_update_configuration(rec, p)
            if "Runtime" in p:
                cfg.check_runtime(p["Runtime"], self.runtimes)
            if "Environment" in p:
                cfg.check_environment(p["Environment"])
            if "VpcConfig" in p:
                p["VpcConfig"] = self.vpcs.vpc_config(p["VpcConfig"])
            config = cfg.updated_configuration(rec.config, p, self.settings.region)
            return images.updated_configuration(config, p), rec.code_key
        return self._update(p, change)

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self.resolve(p["FunctionName"], p.get("Qualifier"))
        if qualifier == LATEST:
            raise errors.InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function.")
        if self.store.get(name) is None:
            raise errors.ResourceNotFoundException(f"Function not found: {self.arn(name)}")
        if qualifier:
            self._delete_version(name, qualifier)
        else:
            self.store.delete(name)
            self.collect_garbage()
            self._changed(name, None)
        return {"StatusCode": 204}

    # -- versions -----------------------------------------------------------------------------------
    def publish(self, p: dict[str, Any]) -> dict[str, Any]:
        """PublishVersion: $LATEST as the next version, or the last version if $LATEST has not changed since."""
        rec = self.record(self.unqualified(p["FunctionName"]))
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        sha = rec.config["CodeSha256"]
        if p.get("CodeSha256") and p["CodeSha256"] != sha:
            raise errors.InvalidParameterValueException(
                f"CodeSHA256 ({p['CodeSha256']}) is different from current CodeSHA256 in $LATEST ({sha}). Please try "
                "again with the CodeSHA256 in $LATEST.")
        return self._publish(rec, p.get("Description")).config

    def _publish(self, latest: FunctionRecord, description: str | None) -> FunctionRecord:
        last = self.versions.last_published(latest.name)
        if last is not None and last[1] == latest.revision_id:  # nothing changed since: no new version, as AWS
            unchanged = self.store.get(latest.name, last[0])
            if unchanged is not None:
                return unchanged
        try:
            version = self.versions.publish(latest, lambda number: cfg.published_configuration(
                latest.config, number, self.arn(latest.name, number), description))
        except Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{self.arn(latest.name)}") from None
        self._changed(latest.name, LATEST)  # $LATEST has a new RevisionId
        return version

    def list_versions(self, p: dict[str, Any]) -> dict[str, Any]:
        name = self.existing(p["FunctionName"])
        marker = _checked_marker(p["Marker"]) if p.get("Marker") else None
        records, last = self.versions.list_versions(name, marker, int(p.get("MaxItems") or 50))
        out: dict[str, Any] = {"Versions": [cfg.as_listed(r.config, self.arn(name, r.version)) for r in records]}
        if last:
            out["NextMarker"] = last
        return out

    def _delete_version(self, name: str, version: str) -> None:
        """DeleteFunction with a Qualifier: that version only. One that does not exist is already deleted."""
        users = [a.name for a in self.aliases.all(name) if version in a.versions]
        if users:
            raise errors.ResourceConflictException(
                f"Unable to delete version because the following aliases reference it: [{', '.join(users)}]")
        if not arns.is_alias(version) and self.versions.delete(name, version):
            self.collect_garbage()
            self._changed(name, version)

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


def _zip_bytes(code: dict[str, Any]) -> bytes:
    if any(code.get(k) for k in ZIP_ONLY):
        raise errors.InvalidParameterValueException(
            "Kindling has no object storage yet: upload the code as ZipFile instead of S3Bucket/S3Key/ImageUri.")
    zip_bytes = code.get("ZipFile")
    if not zip_bytes:
        raise errors.InvalidParameterValueException("Please provide a source for function code.")
    return bytes(zip_bytes)


def _code_members(info: CodeInfo) -> dict[str, Any]:
    return {"CodeSha256": info.sha256, "CodeSize": info.size, "key": info.key}


def _checked_marker(version: str) -> str:
    if version != LATEST and not (version.isascii() and version.isdigit() and len(version) < 19):  # SQLite ints
        raise errors.InvalidParameterValueException(f"Invalid marker: {version}")
    return version
