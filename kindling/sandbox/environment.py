"""One execution environment: a runtime process, its own Runtime API, its log stream.

Lifecycle as Lambda's: ``start`` spawns the runtime (init runs once, ending at
its first ``/next``); ``invoke`` hands one event to it and waits for its
response, error, exit or timeout; an environment serves one invoke at a time
and is reused while warm; ``shutdown`` sends SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import signal
import time
import uuid
from typing import Any, Protocol

from kindling.images.run import ImageRun
from kindling.network import endpoints
from kindling.observability.log_format import LogFormat
from kindling.observability.logs import LogStore, LogStream, stream_name
from kindling.runtime_api import server as runtime_api
from kindling.runtime_api.server import Invocation
from kindling.runtimes import layout
from kindling.sandbox import Backend, Sandbox

INIT_TIMEOUT = 10.0  # Lambda's limit for the init phase of an on-demand environment
SHUTDOWN_GRACE = 0.5
TAIL_BYTES = 4096
READ_CHUNK = 4096  # bytes of an environment's output read at once (at most 2,048 lines of work per turn)
TURN_BUDGET = 262144  # log-rate cost of the output taken per event-loop turn (at least one read): a flood
#                       cannot hold the loop; the rest is read on the next turn
DRAIN_BUDGET = 16 << 20  # ... and when an invoke ends (the runtime flushed: all it wrote is in the pipe)
ERROR_SETTLE = 0.2  # seconds a runtime has, after a function error, to ask for its next event or exit before it
#                    is frozen and kept (kindling.sandbox.environment.ExecutionEnvironment._ready_or_gone)
OUTPUT_PAUSE = 0.1  # seconds an environment's output rests when it is over its log rate (its writes wait)


# What an environment does not see of its configuration: changes to these alone keep its environments
_NOT_RUN = frozenset(("RevisionId", "State", "StateReason", "StateReasonCode", "LastUpdateStatus",
                      "LastUpdateStatusReason", "LastUpdateStatusReasonCode"))


@dataclasses.dataclass(frozen=True)
class FunctionVersion:
    """Everything an environment needs to know about the code it runs."""

    name: str
    version: str
    arn: str
    config: dict[str, Any]
    task_root: str  # the extracted code on the host
    argv: tuple[str, ...]  # the runtime's command, with paths as the environment sees them
    # What its environments may reach, for a function in a VPC (kindling.network.vpc): a list of egress
    # rules {"cidr", "protocol", "from_port", "to_port"}; None: the server's default policy.
    egress: list[dict[str, Any]] | None = None
    # Where its runtime's files come from (kindling.runtimes.layout.spec: /var/lang, the system root, os-release).
    layout: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    entrypoint_error: str | None = None  # why its runtime cannot start (a custom runtime's missing bootstrap)
    image: ImageRun | None = None  # a container-image function's root, command and ENV (kindling.images.run)

    @functools.cached_property
    def key(self) -> tuple[str, str, str]:
        """Environments of one key run the same code and configuration: the RevisionId alone would not do, as
        tagging moves it (as on AWS) and must not cost a cold start."""
        significant = {k: v for k, v in self.config.items() if k not in _NOT_RUN}
        return self.name, self.version, hashlib.sha256(json.dumps(significant, sort_keys=True).encode()).hexdigest()


class CredentialSource(Protocol):
    """Temporary credentials of a function's execution role for an environment (kindling.iam.service.IAM)."""

    def environment_credentials(self, role_arn: str, function_name: str, owner: str) -> dict[str, str]: ...
    def share_credentials(self, owner: str, other: str) -> None: ...
    def release_credentials(self, owner: str) -> None: ...


@dataclasses.dataclass
class InvokeRequest:
    payload: bytes
    invoked_arn: str
    client_context: str | None = None  # base64 JSON, as the Invoke API carries it
    trace_id: str | None = None
    request_id: str = dataclasses.field(default_factory=lambda: str(uuid.uuid4()))


@dataclasses.dataclass
class InvokeResult:
    payload: bytes
    function_error: str | None = None
    log_tail: str | None = None  # base64 of the invoke's last 4 KB of log
    duration_ms: float = 0.0
    init_duration_ms: float | None = None  # set on the invoke that ended a new environment's init (a cold start)


class ExecutionEnvironment:
    credentials: CredentialSource | None = None  # set by Kindling: each environment gets its role's credentials

    def __init__(self, fn: FunctionVersion, base_env: dict[str, str], logs: LogStore, backend: Backend) -> None:
        self.fn = fn
        self.backend = backend
        self.id = uuid.uuid4().hex
        self.base_env = base_env
        self.log_group = fn.config["LoggingConfig"]["LogGroup"]
        self.log_format = LogFormat(fn.config.get("LoggingConfig"))  # Text or JSON, and the levels kept
        self.log: LogStream = logs.open_stream(self.log_group, stream_name(fn.version), self.log_format.json)
        self.process: Sandbox | None = None
        self.server: runtime_api.RuntimeAPI | None = None
        self.dead = False
        self.busy = False
        self.last_used = time.monotonic()
        self.init_duration_ms: float | None = None  # reported once, on the first invoke
        self.template: str | None = None  # made from this initialized template (snap-start), if set
        self.pinned = False  # kept initialized for provisioned concurrency: never reaped for idleness
        self.zygote: str | None = None  # forked from this runtime's zygote (before init), if set
        self.initialization_type = "on-demand"
        self._init_reported = False
        self._started = 0.0
        self.initialized = asyncio.Event()
        self._pending: asyncio.Future[Invocation] | None = None
        self._current: InvokeRequest | None = None
        self._result: asyncio.Future[InvokeResult] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._invoke_started = 0.0
        self._arrived = 0.0  # when the current invoke came in
        self._started_current = False  # START written for the current invoke
        self._init_error: str | None = None  # the error type of an init that failed during the current invoke
        self._tail = ""
        self._partial = b""
        self._asked: asyncio.Event | None = None  # set when the runtime asks for its next event or exits

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        c = self.fn.config
        self._started = time.monotonic()
        memory, tmp = int(c["MemorySize"]), int(c["EphemeralStorage"]["Size"])
        if self.template is not None:
            self.initialization_type = "snap-start"
            own = {"AWS_LAMBDA_LOG_STREAM_NAME": self.log.name, "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
                   **self._credentials()}
            if self.credentials is not None:  # clients its template's init made keep the template's session
                self.credentials.share_credentials(self.template, self.id)
            self.process = await self.backend.clone(  # type: ignore[attr-defined]
                self.template, own, memory, tmp, egress=self.fn.egress)
        elif self.zygote is not None:  # a runtime forked before init: init runs here, as on-demand
            self.process = await self.backend.clone(  # type: ignore[attr-defined]
                self.zygote, self._environment(), memory, tmp, self.fn.task_root, egress=self.fn.egress)
        elif self.fn.image is not None:  # no templates or zygotes for images: their runtime is the image's own
            self.process = await self.backend.spawn(self.id, list(self.fn.argv), self._environment(),
                                                    self.fn.task_root, memory, tmp, egress=self.fn.egress,
                                                    image=self.fn.image.spawn_spec())  # type: ignore[call-arg]
        else:
            self.process = await self.backend.spawn(self.id, list(self.fn.argv), self._environment(),
                                                    self.fn.task_root, memory, tmp, egress=self.fn.egress,
                                                    layout=self.fn.layout)
        loop.add_reader(self.process.output_fd, self._read_output)
        self.process.watch(loop, self._exited)
        self.server = await runtime_api.serve(self.process.listener, self,
                                              f"{self.fn.name}:{self.fn.version} environment {self.id[:8]}")

    def _environment(self) -> dict[str, str]:
        c = self.fn.config
        task_root = self.backend.task_root or self.fn.task_root
        env = dict(self.base_env)
        if self.fn.image is not None:  # an image's ENV, under Lambda's
            env.update(self.fn.image.env)
            env.update({"LAMBDA_TASK_ROOT": task_root, "LAMBDA_RUNTIME_DIR": self.backend.runtime_dir})
        else:
            env.update(layout.variables(c["Runtime"], task_root, self.backend.runtime_dir))
        env.update({
            "_HANDLER": c.get("Handler") or "",
            "AWS_LAMBDA_FUNCTION_NAME": self.fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": self.fn.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(c["MemorySize"]),
            "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log.name,
            "AWS_LAMBDA_INITIALIZATION_TYPE": self.initialization_type,
        })
        env.update(self.log_format.environment())
        env.update(self._credentials())
        own = (c.get("Environment") or {}).get("Variables") or {}
        env.update(own)
        endpoints.yield_to(env, own)  # the function's own AWS_ENDPOINT_URL wins over Kindling's service variables
        return env if self.fn.image is None else self.fn.image.environment(env)

    def _credentials(self) -> dict[str, str]:
        """A new session of the function's execution role, held by this environment until it ends (a function's
        own variables of the same names win)."""
        if self.credentials is None:
            return {}
        own = (self.fn.config.get("Environment") or {}).get("Variables") or {}
        issued = self.credentials.environment_credentials(self.fn.config.get("Role") or "", self.fn.name, self.id)
        return {k: v for k, v in issued.items() if k not in own}

    def shutdown(self) -> None:
        """SIGTERM now, SIGKILL after a grace period; frees the Runtime API."""
        if self.credentials is not None:
            self.credentials.release_credentials(self.id)  # its credentials are refused from now on
        if self.dead and self.process is None:
            return
        self.dead = True
        proc = self.process
        if proc is not None and proc.returncode is None:
            proc.freeze(False)
            proc.signal(signal.SIGTERM)
            asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, proc.kill)
        if self.server is not None:
            self.server.close()
            self.server = None

    def _exited(self, code: int) -> None:
        self._drain()
        self.dead = True
        if self._asked is not None:
            self._asked.set()
        if self.credentials is not None:
            self.credentials.release_credentials(self.id)
        loop = asyncio.get_running_loop()
        proc = self.process
        if proc is not None:
            proc.kill()  # whatever the runtime left behind in its process group
            loop.remove_reader(proc.output_fd)
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._current is not None:
            if not self.initialized.is_set():
                self._init_failed("Runtime.OutOfMemory" if proc is not None and proc.out_of_memory()
                                  else "Runtime.ExitError")
            if proc is not None and proc.out_of_memory():
                self._fail("Runtime.OutOfMemory",
                           f"RequestId: {self._current.request_id} Error: Runtime exited with error: signal: killed")
            elif code == 0:
                reason = "Runtime exited without providing a reason"
            elif code < 0:
                reason = f"Runtime exited with error: signal: {signal.Signals(-code).name.removeprefix('SIG').lower()}"
                reason = reason.replace("signal: kill", "signal: killed")
            else:
                reason = f"Runtime exited with error: exit status {code}"
            if self.fn.entrypoint_error and not self.initialized.is_set():  # its exec failed, as Lambda says it
                self._fail("Runtime.InvalidEntrypoint",
                           f"RequestId: {self._current.request_id} Error: {self.fn.entrypoint_error}")
            elif not (proc is not None and proc.out_of_memory()):
                self._fail("Runtime.ExitError", f"RequestId: {self._current.request_id} Error: {reason}")
        if proc is not None:
            proc.close()
        self.log.close()  # a late line opens it again

    # -- invoke -------------------------------------------------------------------------------------
    async def invoke(self, req: InvokeRequest, timeout: float) -> InvokeResult:
        loop = asyncio.get_running_loop()
        self.busy = True
        if self.process is not None:
            self.process.freeze(False)
        self._current = req
        self._tail = ""
        self._arrived = time.monotonic()
        self._started_current = False
        self._result = loop.create_future()
        if self._pending is not None and not self._pending.done():
            self._deliver()
        if not self.initialized.is_set():
            self._timer = loop.call_later(INIT_TIMEOUT + timeout, self._timed_out, timeout)
        try:
            result = await self._result
            if result.function_error and not self.dead:
                await self._ready_or_gone()
            return result
        finally:
            if self.process is not None and not self.dead:
                self.process.freeze(True)  # no CPU between invokes, as on Lambda
            self.busy = False
            self.last_used = time.monotonic()
            self._current = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _ready_or_gone(self) -> None:
        """After a function error, until the runtime asks for its next event or exits (bounded): a runtime that
        exits after reporting an uncaught error (Node's does) must not be frozen alive and handed the next
        invoke, which would then fail; as on Lambda, that invoke gets a new environment."""
        if self._pending is not None and not self._pending.done():
            return
        self._asked = asyncio.Event()
        try:
            await asyncio.wait_for(self._asked.wait(), ERROR_SETTLE)
        except TimeoutError:
            pass
        finally:
            self._asked = None

    def _deliver(self) -> None:
        req = self._current
        assert req is not None and self._pending is not None
        self._invoke_started = time.monotonic()
        self._started_current = True
        if self._timer is not None:
            self._timer.cancel()
        timeout = float(self.fn.config["Timeout"])
        self._timer = asyncio.get_running_loop().call_later(timeout, self._timed_out, timeout)
        self._write_platform(self.log_format.start(req.request_id, self.fn.version))
        deadline = int((time.time() + timeout) * 1000)
        headers = {"Lambda-Runtime-Deadline-Ms": str(deadline),
                   "Lambda-Runtime-Invoked-Function-Arn": req.invoked_arn,
                   "Lambda-Runtime-Trace-Id": req.trace_id or _trace_id()}
        if req.client_context:
            try:
                headers["Lambda-Runtime-Client-Context"] = base64.b64decode(req.client_context).decode()
            except ValueError:
                pass
        self._pending.set_result(Invocation(req.request_id, req.payload, headers))
        self._pending = None

    def _finish(self, result: InvokeResult, status: str | None = None, last_line: str | None = None) -> None:
        """Write END and REPORT (after ``last_line``, e.g. the timeout's), attach the log tail, and answer the
        waiting invoke."""
        req = self._current
        if req is None or self._result is None or self._result.done():
            return
        self._drain()
        if last_line is not None:  # after what the runtime wrote, so the tail ends with it as on Lambda
            self._write_line(last_line)
        duration = (time.monotonic() - self._invoke_started) * 1000 if self._invoke_started else 0.0
        self._write_platform(self.log_format.end(req.request_id, duration, status or "success"))
        max_memory = self.process.peak_memory_mb() if self.process else 0
        error_type, self._init_error = self._init_error, None
        report = (f"REPORT RequestId: {req.request_id}\tDuration: {duration:.2f} ms\t"
                  f"Billed Duration: {max(1, math.ceil(duration))} ms\t"
                  f"Memory Size: {self.fn.config['MemorySize']} MB\t"
                  f"Max Memory Used: {max_memory} MB\t")
        result.duration_ms = duration
        if self.init_duration_ms is not None and not self._init_reported:
            result.init_duration_ms = self.init_duration_ms
            if self.pinned:
                pass  # init ran ahead of any invoke: Lambda reports no Init Duration for it
            elif self.template is not None:  # as SnapStart reports a restore
                report += (f"Restore Duration: {self.init_duration_ms:.2f} ms\t"
                           f"Billed Restore Duration: {math.ceil(self.init_duration_ms)} ms\t")
            else:
                report += f"Init Duration: {self.init_duration_ms:.2f} ms\t"
            self._init_reported = True
        if status:
            report += f"Status: {status}\t"
        if error_type:
            report += f"Error Type: {error_type}\t"
        self._write_platform(self.log_format.report(report, req.request_id, duration, int(self.fn.config["MemorySize"]),
                                                    max_memory, result.init_duration_ms, self.template is not None,
                                                    status, error_type))
        self.log.flush()
        result.log_tail = base64.b64encode(self._tail.encode()[-TAIL_BYTES:]).decode()
        self._result.set_result(result)

    def _fail(self, error_type: str, message: str, status: str = "error", last_line: str | None = None) -> None:
        if message.startswith("RequestId:") and error_type != "Sandbox.Timedout":  # the timeout has its own line
            self._write_line(f"{message}\n{error_type}")  # a platform error, logged as Lambda logs it
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        self._finish(InvokeResult(body, "Unhandled"), status, last_line)

    def _init_failed(self, error_type: str | None, status: str = "error") -> None:
        """An init that failed (raised, exited, timed out) during an invoke, logged as Lambda logs it: the
        runtime's own lines, INIT_REPORT with the init's real duration, then START; the invoke's END and
        REPORT (its Duration counts the init, its Status and Error Type say what failed) follow."""
        req = self._current
        if req is None or self._started_current:
            return
        self._drain()
        now = time.monotonic()
        self._write_platform(self.log_format.init_report((now - self._started) * 1000, status, error_type))
        self._invoke_started = self._arrived or now
        self._started_current = True
        self._init_error = error_type
        self._init_reported = True  # its REPORT has no Init Duration: the invoke's Duration counts it
        self._write_platform(self.log_format.start(req.request_id, self.fn.version))

    def _timed_out(self, timeout: float) -> None:
        req = self._current
        if req is None:
            return
        if not self.initialized.is_set():
            self._init_failed(None, "timeout")
        self._fail("Sandbox.Timedout", f"RequestId: {req.request_id} Error: Task timed out after {timeout:.2f} seconds",
                   status="timeout",
                   last_line=f"{_iso_now()} {req.request_id} Task timed out after {timeout:.2f} seconds")
        self.shutdown()

    # -- Runtime API handler ------------------------------------------------------------------------
    async def next_invocation(self) -> Invocation:
        if not self.initialized.is_set():
            self.init_duration_ms = (time.monotonic() - self._started) * 1000
            self.initialized.set()
            if self.process is not None:
                self.process.limit_cpu()  # init ran at full speed, invokes get CPU in proportion to memory
        pending = self._pending = asyncio.get_running_loop().create_future()
        if self._asked is not None:
            self._asked.set()
        if self._current is not None and self._result is not None and not self._result.done():
            self._deliver()
        return await pending

    def _is_current(self, request_id: str) -> bool:
        return self._current is not None and self._current.request_id == request_id and self._result is not None \
            and not self._result.done()

    def invocation_response(self, request_id: str, body: bytes, too_large: bool) -> bool:
        if not self._is_current(request_id):
            return False
        if too_large:
            self._fail("Function.ResponseSizeTooLarge",
                       f"Response payload size exceeded maximum allowed payload size ({runtime_api.RESPONSE_LIMIT} "
                       "bytes).")
        else:
            self._finish(InvokeResult(body))
        return True

    def invocation_error(self, request_id: str, body: bytes, error_type: str | None) -> bool:
        if not self._is_current(request_id):
            return False
        self._finish(InvokeResult(_error_body(body, error_type), "Unhandled"), "error")
        return True

    def init_error(self, body: bytes, error_type: str | None) -> None:
        self.initialized.set()
        if self._current is not None:
            self._init_failed(error_type or "Runtime.Unknown")
            self._finish(InvokeResult(_error_body(body, error_type), "Unhandled"), "error")
        self.shutdown()

    def limits_exceeded(self, reason: str) -> None:
        """The runtime kept breaking its Runtime API's limits: fail its invoke as a crash would, and discard it."""
        self._write_line(f"{_iso_now()} Runtime API limits exceeded ({reason}): the execution environment is "
                         "discarded")
        if self._current is not None:  # now, not once its exit is seen
            self._fail("Runtime.ExitError",
                       f"RequestId: {self._current.request_id} Error: Runtime exited with error: signal: killed")
        self.shutdown()
        if self.process is not None:
            self.process.kill()

    # -- logs ---------------------------------------------------------------------------------------
    def _read_output(self, budget: int = TURN_BUDGET) -> None:
        assert self.process is not None
        fd = self.process.output_fd
        try:
            while budget > 0:
                if not (chunk := os.read(fd, READ_CHUNK)):
                    asyncio.get_running_loop().remove_reader(fd)  # end of file: every writer has gone
                    return
                if not (cost := self.log.admit(chunk)):  # over the log rate: dropped (and said so), the pipe rests
                    self._partial = b""
                    self._rest_output(fd)
                    return
                self._lines(chunk)
                budget -= cost
        except BlockingIOError:
            pass

    def _rest_output(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        loop.call_later(OUTPUT_PAUSE, self._resume_output, fd)

    def _resume_output(self, fd: int) -> None:
        if not self.dead and self.process is not None and self.process.output_fd == fd:
            asyncio.get_running_loop().add_reader(fd, self._read_output)

    def _drain(self) -> None:
        """Take what the runtime already wrote: it flushes before it posts a result."""
        if self.process is not None and not self.dead:
            with contextlib.suppress(OSError):  # whatever happens to its output, the invoke answers
                self._read_output(DRAIN_BUDGET)

    def _lines(self, chunk: bytes) -> None:
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        if len(self._partial) > 256 * 1024:  # a line that never ends is still logged
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            text = line.decode("utf-8", "replace")
            if self.log_format.keeps(text):  # ApplicationLogLevel, for JSON
                self._write_line(text)

    def _write_platform(self, text: str | None) -> None:
        if text is not None:  # None: below SystemLogLevel
            self._write_line(text)

    def _write_line(self, text: str) -> None:
        self.log.write(text, self._current.request_id if self._current else None)
        if self._current is not None:
            self._tail = (self._tail + text + "\n")[-2 * TAIL_BYTES:]


def _error_body(body: bytes, error_type: str | None) -> bytes:
    try:
        doc = json.loads(body)
        if isinstance(doc, dict):
            return body
    except ValueError:
        pass
    message = body.decode("utf-8", "replace")
    return json.dumps({"errorType": error_type or "Runtime.Unknown", "errorMessage": message}).encode()


def _trace_id() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
