"""The control plane of container-image functions (PackageType Image): checks, states and shapes as AWS.

CreateFunction resolves the ImageUri to its manifest digest in the request (CodeSha256; an image that does
not exist is refused at once) and answers while the function is Pending; the image is pulled and unpacked in
the background (kindling.images.store), and the function becomes Active, or Failed with StateReasonCode
ImageAccessDenied / InvalidImage. UpdateFunctionCode with a new ImageUri answers InProgress while the
last successful image keeps serving, and ends Successful (the new image in place) or Failed
(LastUpdateStatusReasonCode; the last successful image stays). The transitions are kindling.functions.updates'
own; ``prepare`` is its hook that waits for the image.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from kindling import errors
from kindling.functions import config as cfg
from kindling.functions import states
from kindling.functions.updates import UpdateFailed
from kindling.images.sources import parse
from kindling.images.store import PullFailed, code_key, is_image_key, split_key
from kindling.store.functions import LATEST, AlreadyExists, FunctionRecord

if TYPE_CHECKING:
    from kindling.functions.service import FunctionService

log = logging.getLogger("kindling.images")

NOT_WITH_IMAGE = ("Runtime", "Handler", "Layers")
MAX_IMAGE_CONFIG = 16384  # bytes of ImageConfig as JSON (they travel in the spawner's 64 KB messages)
REASONS = {"ImageAccessDenied": "Lambda does not have permission to access the ECR image. Check the ECR permissions.",
           "ImageDeleted": "The source image {uri} could not be found.",
           "InvalidImage": "The image manifest, config or layer media type for the source image {uri} is not "
                           "supported."}
_STATE_KEYS = ("StateReason", "StateReasonCode", "LastUpdateStatusReason", "LastUpdateStatusReasonCode")


def is_image(rec: FunctionRecord) -> bool:
    return is_image_key(rec.code_key)


def check_create(p: dict[str, Any]) -> None:
    if any(p.get(k) for k in NOT_WITH_IMAGE):
        raise errors.InvalidParameterValueException(
            "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.")
    code = p.get("Code") or {}
    if any(code.get(k) for k in ("ZipFile", "S3Bucket", "S3Key", "S3ObjectVersion")):
        raise errors.InvalidParameterValueException(
            "Please don't provide ZipFile or S3 location when the intended function PackageType is Image.")
    if not code.get("ImageUri"):
        raise errors.InvalidParameterValueException(
            "Please provide ImageUri when the intended function PackageType is Image.")
    check_image_config(p.get("ImageConfig"))


def check_image_config(image_config: dict[str, Any] | None) -> None:
    if len(json.dumps(image_config or {})) > MAX_IMAGE_CONFIG:
        raise errors.InvalidParameterValueException(
            f"ImageConfig is larger than Kindling's limit of {MAX_IMAGE_CONFIG} bytes (EntryPoint, Command and "
            "WorkingDirectory together).")


def check_zip(p: dict[str, Any], updating: bool = False) -> None:
    """A Zip function's request must not carry image members."""
    image_uri = p.get("ImageUri") if updating else (p.get("Code") or {}).get("ImageUri")
    if image_uri:
        raise errors.InvalidParameterValueException(
            "Please don't provide ImageUri when updating a function with packageType Zip." if updating else
            "Please don't provide ImageUri when the intended function PackageType is Zip.")
    if p.get("ImageConfig"):
        raise errors.InvalidParameterValueException(
            "ImageConfig is not supported for functions with PackageType Zip.")


def _architecture(p: dict[str, Any], current: dict[str, Any] | None = None) -> str:
    return (p.get("Architectures") or (current or {}).get("Architectures") or ["x86_64"])[0]


def image_config_response(image_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """ImageConfigResponse as AWS shows it: the members that were set, or nothing when none was."""
    ic = {k: v for k, v in (image_config or {}).items() if k in ("EntryPoint", "Command", "WorkingDirectory") and v}
    return {"ImageConfig": ic} if ic else None


def new_configuration(p: dict[str, Any], arn: str, code: dict[str, Any], region: str) -> dict[str, Any]:
    config = cfg.new_configuration({**p, "Runtime": "provided"}, arn, code, region)
    for k in ("Runtime", "Handler", "RuntimeVersionConfig", "LastUpdateStatus"):
        config.pop(k, None)
    config = states.pending({**config, "PackageType": "Image"})
    response = image_config_response(p.get("ImageConfig"))
    if response:
        config["ImageConfigResponse"] = response
    return config


def code_location(rec: FunctionRecord) -> dict[str, Any]:
    hex_digest, uri = split_key(rec.code_key)
    return {"RepositoryType": "ECR", "ImageUri": uri,
            "ResolvedImageUri": f"{parse(uri).repository_uri}@sha256:{hex_digest}"}


async def create(svc: FunctionService, p: dict[str, Any]) -> dict[str, Any]:
    """CreateFunction of an image function: answered Pending while the image is pulled in the background (the
    ``prepare`` hook of kindling.functions.updates settles it Active, or Failed with AWS's reason code)."""
    name = svc._check_create(p)
    uri = p["Code"]["ImageUri"]
    hex_digest, source = await svc.images.resolve(uri, _architecture(p))
    key = code_key(hex_digest, uri)
    config = new_configuration(p, svc.arn(name), {"CodeSha256": hex_digest, "CodeSize": 0, "key": key},
                               svc.settings.region)
    svc.images.pull(hex_digest, source, _architecture(p))  # held from garbage collection until prepared
    try:
        rec = svc.store.create(name, config, key, dict(p.get("Tags") or {}))
    except AlreadyExists:
        svc.images.release(hex_digest)
        raise errors.ResourceConflictException(f"Function already exist: {name}") from None
    version = svc._publish(rec, None, pending=True).version if p.get("Publish") else None
    svc.updates.start(name, LATEST)
    return {**config, "Version": version or LATEST}


async def update_code(svc: FunctionService, p: dict[str, Any], rec: FunctionRecord) -> dict[str, Any]:
    """UpdateFunctionCode of an image function. It answers InProgress with the new CodeSha256 while invokes go on
    running the last successful image (kindling.functions.updates); a failed pull leaves that image in place
    (LastUpdateStatus Failed), as on AWS. With Publish the pull happens in the request: the version published is
    always an image that unpacked."""
    if p.get("ZipFile") or p.get("S3Bucket") or not p.get("ImageUri"):
        raise errors.InvalidParameterValueException(
            "Please provide ImageUri when updating a function with packageType Image.")
    svc._check_idle(rec)  # (and svc._update checks RevisionId)
    uri = p["ImageUri"]
    architecture = _architecture(p, rec.config)
    hex_digest, source = await svc.images.resolve(uri, architecture)
    key = code_key(hex_digest, uri)
    pull = svc.images.pull(hex_digest, source, architecture)
    if p.get("Publish"):
        try:
            await asyncio.shield(pull)
        except PullFailed as exc:
            svc.images.release(hex_digest)
            raise errors.InvalidParameterValueException(_reason(exc, uri)) from None

    def change(current: FunctionRecord) -> tuple[dict[str, Any], str]:
        config = {k: v for k, v in current.config.items() if k not in _STATE_KEYS}
        config.update(CodeSha256=hex_digest, CodeSize=0, LastModified=cfg.lambda_timestamp())
        if p.get("Architectures"):
            config["Architectures"] = p["Architectures"]
        return config, key
    try:
        return svc._update(p, change)
    except BaseException:
        svc.images.release(hex_digest)
        raise


async def prepare(svc: FunctionService, rec: FunctionRecord) -> None:
    """A preparer of kindling.functions.updates: an image version is Active/Successful once its image is unpacked
    here (pulled again after a restart cut its pull off); else it fails with AWS's reason code."""
    if not is_image(rec):
        return
    hex_digest, uri = split_key(rec.code_key)
    try:
        if not svc.images.ready(hex_digest):
            source = svc.images.source(uri, hex_digest)
            await asyncio.shield(svc.images.pull(hex_digest, source, _architecture({}, rec.config)))
    except PullFailed as exc:
        raise UpdateFailed(_reason(exc, uri), exc.code) from None
    except errors.LambdaError as exc:  # the operator no longer maps its registry
        raise UpdateFailed(_reason(PullFailed("ImageDeleted", exc.message), uri), "ImageDeleted") from None
    finally:
        svc.images.release(hex_digest)  # the version refers to it from now on


def check_update_configuration(rec: FunctionRecord, p: dict[str, Any]) -> None:
    if is_image(rec):
        if any(k in p for k in NOT_WITH_IMAGE):
            raise errors.InvalidParameterValueException(
                "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.")
        check_image_config(p.get("ImageConfig"))
    elif "ImageConfig" in p:
        check_zip({"ImageConfig": p["ImageConfig"]})


def updated_configuration(config: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    if "ImageConfig" not in p:
        return config
    config = {k: v for k, v in config.items() if k != "ImageConfigResponse"}
    response = image_config_response(p["ImageConfig"])
    if response:
        config["ImageConfigResponse"] = response
    return config


def _reason(failure: PullFailed, uri: str) -> str:
    reason = REASONS.get(failure.code, "{uri}").format(uri=uri)
    return f"{reason} ({failure.reason})" if failure.reason else reason


async def ready(svc: FunctionService, rec: FunctionRecord) -> str:
    """The image of ``rec`` unpacked on this host (its digest), pulling it again if it went missing; or the
    error AWS answers an invoke of a function that is not Active."""
    state = rec.config.get("State")
    if state in ("Pending", "Failed"):
        raise errors.ResourceConflictException(
            f"The operation cannot be performed at this time. The function is currently in the following state: "
            f"{state}")
    hex_digest, uri = split_key(rec.code_key)
    if svc.images.ready(hex_digest):
        return hex_digest
    try:
        source = svc.images.source(uri, hex_digest)
        try:
            await asyncio.shield(svc.images.pull(hex_digest, source, _architecture({}, rec.config)))
        finally:
            svc.images.release(hex_digest)  # rec refers to it
    except (PullFailed, errors.LambdaError) as exc:
        raise errors.ResourceConflictException(
            "The operation cannot be performed at this time. The function's image could not be used: "
            f"{getattr(exc, 'reason', None) or exc}") from None
    return hex_digest


async def stop(svc: FunctionService) -> None:
    """Cut off pulls in flight (their worker is killed; the versions waiting on them finish when Kindling starts
    again: kindling.functions.updates.Updates.resume)."""
    tasks = list(svc.images.pulls.values())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
