"""Invoke: resolve the function and qualifier, check the payload, run it in an environment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kindling import errors
from kindling.functions import images
from kindling.functions.service import FunctionService
from kindling.images.run import ImageRun, image_run
from kindling.images.store import split_key
from kindling.invoke import routing
from kindling.invoke.payload import check_json
from kindling.observability import invocation, tracing
from kindling.runtimes import layout
from kindling.runtimes.registry import BOOTSTRAP
from kindling.sandbox.environment import FunctionVersion, InvokeRequest
from kindling.scheduler.pool import Scheduler
from kindling.store.functions import FunctionRecord

if TYPE_CHECKING:
    from kindling.queue.service import EventQueue

SYNC_PAYLOAD_LIMIT = 6291456  # 6 MB, each way
RUNTIME_DIR = str(BOOTSTRAP.parent)


class InvokeService:
    def __init__(self, functions: FunctionService, scheduler: Scheduler) -> None:
        self.functions = functions
        self.scheduler = scheduler
        self._versions: dict[tuple[str, str, str], FunctionVersion] = {}
        self.events: EventQueue | None = None  # InvocationType Event goes here (kindling.queue), set by Kindling

    def _version(self, rec: FunctionRecord) -> FunctionVersion:
        key = (rec.name, rec.version, rec.revision_id)
        fv = self._versions.get(key)
        if fv is None and images.is_image(rec):
            fv = self._image_version(rec)
        if fv is None:
            task_root = str(self.functions.code.task_root(rec.code_key))
            backend, runtimes, runtime = self.scheduler.backend, self.functions.runtimes, rec.config["Runtime"]
            argv = tuple(runtimes.command(runtime, backend.task_root or task_root, backend.runtime_dir,
                                          backend.lang_dir, layout.wrapper(rec.config), int(rec.config["MemorySize"])))
            where = layout.spec(runtime, runtimes.lang(runtime) if backend.lang_dir else None, backend.system_root)
            egress = self.functions.vpcs.egress(rec.config.get("VpcConfig"))  # None unless in a VPC
            fv = FunctionVersion(rec.name, rec.version, rec.config["FunctionArn"], rec.config, task_root, argv, egress,
                                 where, layout.entrypoint_error(runtime, task_root))
            self._versions = {k: v for k, v in self._versions.items() if k[:2] != key[:2]}
            self._versions[key] = fv
        return fv

    def _image_version(self, rec: FunctionRecord) -> FunctionVersion:
        """A container-image version: its root, command and ENV (kindling.images.run). One whose image is not
        unpacked (yet) gets no command, so an environment of it fails to start (never cached): invokes wait for
        the image first (images.ready), other callers (provisioned concurrency) see a failed start."""
        key = (rec.name, rec.version, rec.revision_id)
        hex_digest = split_key(rec.code_key)[0]
        root = str(self.functions.images.root(hex_digest) / "rootfs")
        egress = self.functions.vpcs.egress(rec.config.get("VpcConfig"))
        if not self.functions.images.ready(hex_digest):
            run = ImageRun(root, ("",), {}, "/", "")
            return FunctionVersion(rec.name, rec.version, rec.config["FunctionArn"], rec.config, root, run.argv,
                                   egress, image=run)
        run = image_run(root, self.functions.images.settings(hex_digest),
                        (rec.config.get("ImageConfigResponse") or {}).get("ImageConfig"))
        fv = FunctionVersion(rec.name, rec.version, rec.config["FunctionArn"], rec.config, root, run.argv, egress,
                             image=run)
        self._versions = {k: v for k, v in self._versions.items() if k[:2] != key[:2]}
        self._versions[key] = fv
        return fv

    async def invoke(self, p: dict[str, Any], request_id: str, trace_id: str | None = None) -> dict[str, Any]:
        payload: bytes = p.get("Payload") or b""
        if len(payload) > SYNC_PAYLOAD_LIMIT:
            raise errors.RequestTooLargeException(
                f"Request must be smaller than {SYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation")
        name, qualifier = self.functions.resolve(p["FunctionName"], p.get("Qualifier"))
        if p.get("InvocationType") == "Event" and self.events is not None:  # queued; kindling.queue checks the rest
            return await self.events.accept(name, qualifier, payload, request_id, tracing.trace_header(trace_id))
        rec = routing.target(self.functions, name, qualifier)  # an alias picks one of its versions
        if payload:
            check_json(payload)
        else:
            payload = b"{}"
        kind = p.get("InvocationType") or "RequestResponse"
        if kind == "DryRun":
            return {"StatusCode": 204, "Payload": b""}
        trace_id = tracing.trace_header(trace_id)  # when tracing, one naming this request's span
        if kind != "RequestResponse":
            raise errors.InvalidParameterValueException(f"Kindling does not run InvocationType {kind}.")
        if self.events is not None:  # the call chain, counted for recursive loop detection
            trace_id = self.events.lineage(name, trace_id)
        if images.is_image(rec):  # Pending / Failed answer AWS's conflict; an image gone from disk is pulled again
            if self.scheduler.backend.name != "isolated":
                raise errors.InvalidParameterValueException(
                    "Container-image functions need isolated sandboxes: run Kindling as root (--sandbox isolated).")
            await images.ready(self.functions, rec)
        fv = self._version(rec)
        invoked_arn = self.functions.arn(name, qualifier)
        req = InvokeRequest(payload, invoked_arn, p.get("ClientContext"), trace_id, request_id)
        async with invocation.observe(invocation.resource(name, rec.version, qualifier), request_id, trace_id) as seen:
            async with self.scheduler.environment(fv) as env:
                seen.acquired()
                result = await env.invoke(req, float(rec.config["Timeout"]))
            seen.done(result)  # Invocations, Errors, Duration, cold starts; throttles counted on the way out
        out: dict[str, Any] = {"StatusCode": 200, "Payload": result.payload, "ExecutedVersion": rec.version,
                               "FunctionError": result.function_error}
        if p.get("LogType") == "Tail":
            out["LogResult"] = result.log_tail
        return out



def base_environment(region: str) -> dict[str, str]:
    """What every environment of this server gets (its runtime's own variables: kindling.runtimes.layout)."""
    return {"AWS_REGION": region, "AWS_DEFAULT_REGION": region}
