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
from kindling.functions import architecture, images, states
from kindling.functions import config as cfg
from kindling.functions.updates import UpdateFailed, Updates
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
IN_PROGRESS = "The operation cannot be performed at this time. An update is in progress for resource: {arn}"
IN_STATE = "The operation cannot be performed at this time. The function is currently in the following state: {state}"
NAME_TOO_LONG = ("1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: Member "
                 "must have length less than or equal to 64")
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
        self._uploading = 0
        self._garbage_waiting = False
        # creations, publications and updates finish in the background (Pending/InProgress → Active/Failed)
        self.updates = Updates(store, self._check_runnable)
        self.updates.listeners.append(self._settled)
        self.updates.preparers.append(lambda rec: images.prepare(self, rec))

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

    def runnable(self, name: str, version: str) -> FunctionRecord | None:
        """The record an invoke of ``name:version`` runs: while an update is in progress (or after it failed),
        the last successful configuration and code, as on Lambda. A version still Pending, or whose creation
        failed, cannot be invoked (ResourceConflictException, AWS's message)."""
        rec = self.store.get(name, version)
        if rec is None or states.settled(rec.config):
            return rec
        if rec.config.get("State") in ("Pending", "Failed"):
            raise errors.ResourceConflictException(IN_STATE.format(state=rec.config["State"]))
        return self.store.last_successful(name, version) or rec

    def _check_idle(self, rec: FunctionRecord) -> None:
        """Refuse to change a version while its creation or an update is under way, as AWS does."""
        if rec.config.get("State") == "Pending":
            raise errors.ResourceConflictException(IN_STATE.format(state="Pending"))
        if rec.config.get("LastUpdateStatus") == "InProgress":
            raise errors.ResourceConflictException(IN_PROGRESS.format(arn=self.arn(rec.name)))

    def _check_runnable(self, rec: FunctionRecord) -> None:
        """What finishing a creation or update checks (kindling.functions.updates): it can run on this host."""
        runtime = rec.config.get("Runtime")
        if rec.config.get("PackageType", "Zip") == "Zip":
            if runtime and not self.runtimes.available(runtime):
                raise UpdateFailed(f"The runtime {runtime} is not available on this Kindling host.", "InvalidRuntime")
            if not self.code.task_root(rec.code_key).is_dir():
                raise UpdateFailed("The function's code is missing from the code store.", "InvalidZipFileException")

    def _settled(self, before: FunctionRecord, after: FunctionRecord) -> None:
        """A version's creation or update completed: its environments are of the old configuration."""
        if after.version == LATEST:
            self.versions.carry(after.name, before.revision_id, after.revision_id)  # not a change to publish
        if before.config.get("State") == "Pending":
            return  # never invoked while being created: it has no environments yet
        self._changed(after.name, after.version)
        self.collect_garbage()  # the code the last successful configuration ran may be unused now

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
        if len(name) > 64:
            raise errors.InvalidParameterValueException(NAME_TOO_LONG.format(name=p["FunctionName"]))
        if qualifier:
            raise errors.InvalidParameterValueException("Function name cannot contain a qualifier when creating.")
        runtime = p.get("Runtime")
        if p.get("PackageType") == "Image":
            images.check_create(p)
        else:
            images.check_zip(p)
            if runtime is None:
                raise errors.InvalidParameterValueException("Runtime and Handler are mandatory parameters for "
                                                            "functions created with deployment packages.")
            cfg.check_runtime(runtime, self.runtimes)
            cfg.check_handler(runtime, p.get("Handler"))
        cfg.check_environment(p.get("Environment"))
        architecture.check(p.get("Architectures"), runtime)
        if len(p.get("Tags") or {}) > 50:
            raise errors.InvalidParameterValueException("Number of tags exceeds resource tag limit.")
        if "VpcConfig" in p:
            p["VpcConfig"] = self.vpcs.vpc_config(p["VpcConfig"])  # with its VpcId, or InvalidParameterValue
        if self.store.get(name) is not None:  # before storing code: a conflict leaves nothing behind
            raise errors.ResourceConflictException(f"Function already exist: {name}")
        return name

    def _create(self, name: str, p: dict[str, Any], code: dict[str, Any]) -> dict[str, Any]:
        config = states.pending(cfg.new_configuration(p, self.arn(name), code, self.settings.region))
        try:
            rec = self.store.create(name, config, code["key"], dict(p.get("Tags") or {}))
        except AlreadyExists:
            self.collect_garbage()
            raise errors.ResourceConflictException(f"Function already exist: {name}") from None
        version = self._publish(rec, None, pending=True).version if p.get("Publish") else None
        self.updates.start(name, LATEST)
        return {**config, "Version": version or LATEST}  # the answer names the version published, if any

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
        self._check_idle(rec)
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        config, key = change(rec)
        # invokes run the last successful configuration until this one is Successful (kindling.functions.updates)
        remember = rec if states.settled(rec.config) else None
        try:
            new = self.store.update(rec, states.in_progress(config), key, remember=remember)
        except Conflict:  # another update won the race since ``rec`` was read
            raise errors.ResourceConflictException(IN_PROGRESS.format(arn=self.arn(rec.name))) from None
        finally:
            self.collect_garbage()
        version = self._publish(new, None, pending=True) if p.get("Publish") else None
        self.updates.start(rec.name, LATEST)
        if version is not None:  # UpdateFunctionCode answers with the new version, still Pending on AWS
            return version.config
        return new.config

    def update_code(self, p: dict[str, Any]) -> dict[str, Any]:
        return self._update(p, lambda rec: self._new_code(rec, p, self._store_code(p)))

    async def update_code_async(self, p: dict[str, Any]) -> dict[str, Any]:
        """UpdateFunctionCode with the upload's extraction off the event loop."""
        rec = self.record(self.unqualified(p["FunctionName"]))  # answer these before the upload is extracted
        if images.is_image(rec):
            return await images.update_code(self, p, rec)
        self._check_idle(rec)
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
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
            architecture.check(p["Architectures"], rec.config.get("Runtime"))
            config["Architectures"] = p["Architectures"]
        return config, code["key"]

    def update_configuration(self, p: dict[str, Any]) -> dict[str, Any]:
        removed_dlq: dict[str, Any] = {}

        def change(rec: FunctionRecord) -> tuple[dict[str, Any], str]:
            images.check_update_configuration(rec, p)
            if "Runtime" in p:
                cfg.check_runtime(p["Runtime"], self.runtimes)
            if "Environment" in p:
                cfg.check_environment(p["Environment"])
            if "VpcConfig" in p:
                p["VpcConfig"] = self.vpcs.vpc_config(p["VpcConfig"])
            new = images.updated_configuration(cfg.updated_configuration(rec.config, p, self.settings.region), p)
            if "DeadLetterConfig" in rec.config and "DeadLetterConfig" not in new:
                removed_dlq.update(rec.config["DeadLetterConfig"])
            return new, rec.code_key
        answer = self._update(p, change)
        if removed_dlq:  # AWS's answer to the update that removes it still shows it (recorded)
            answer = {**answer, "DeadLetterConfig": removed_dlq}
        return answer

    def delete(self, p: dict[str, Any]) -> dict[str, Any]:
        name, qualifier = self.resolve(p["FunctionName"], p.get("Qualifier"))
        if qualifier == LATEST:
            raise errors.InvalidParameterValueException(
                "$LATEST version cannot be deleted without deleting the function.")
        if qualifier and arns.is_alias(qualifier):  # before looking the function up, as recorded on AWS
            raise errors.InvalidParameterValueException("Deletion of aliases is not currently supported.")
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
        self._check_idle(rec)
        if p.get("RevisionId") and p["RevisionId"] != rec.revision_id:
            raise errors.PreconditionFailedException(STALE_REVISION)
        sha = rec.config["CodeSha256"]
        if p.get("CodeSha256") and p["CodeSha256"] != sha:
            raise errors.InvalidParameterValueException(
                f"CodeSHA256 ({p['CodeSha256']}) is different from current CodeSHA256 in $LATEST ({sha}). Please try "
                "again with the CodeSHA256 in $LATEST.")
        return self._publish(rec, p.get("Description")).config

    def _publish(self, latest: FunctionRecord, description: str | None, pending: bool = False) -> FunctionRecord:
        last = self.versions.last_published(latest.name)
        if last is not None and last[1] == latest.revision_id:  # nothing changed since: no new version, as AWS
            unchanged = self.store.get(latest.name, last[0])
            if unchanged is not None:
                return unchanged
        try:
            version = self.versions.publish(latest, lambda number: cfg.published_configuration(
                latest.config, number, self.arn(latest.name, number), description, pending))
        except Conflict:
            raise errors.ResourceConflictException(IN_PROGRESS.format(arn=self.arn(latest.name))) from None
        self._changed(latest.name, LATEST)  # $LATEST has a new RevisionId
        if pending:
            self.updates.start(latest.name, version.version)  # Pending, then Active
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
        self._set_tags(rec.name, tags)
        return {}

    def untag(self, p: dict[str, Any]) -> dict[str, Any]:
        rec = self._tag_target(p["Resource"])
        self._set_tags(rec.name, {k: v for k, v in rec.tags.items() if k not in set(p["TagKeys"])})
        return {}

    def _set_tags(self, name: str, tags: dict[str, str]) -> None:
        """Tags change $LATEST's RevisionId, as on AWS; they are no change a new version would be published for,
        nor one its environments see (they stay warm: FunctionVersion.key)."""
        moved = self.store.set_tags(name, tags)
        if moved is not None:
            self.versions.carry(name, *moved)

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
