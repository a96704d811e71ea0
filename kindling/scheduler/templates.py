"""Initialized templates: SnapStart for every cold start, from a fork instead of a fresh interpreter.

Once a version's init has run in an ordinary environment, a template of it is
made in the background: a runtime that runs init (and the before-snapshot
hooks) once and then waits to be forked. Later cold starts of that version are
clones of it, each in its own namespaces, cgroup and /tmp, with
AWS_LAMBDA_INITIALIZATION_TYPE=snap-start and a Restore Duration in REPORT.
Templates apply to published versions whose SnapStart ApplyOn is
PublishedVersions, and to $LATEST unless ``--templates snapstart`` (``off``:
never). They need the isolated sandbox and Kindling's Python runtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from collections import defaultdict

from kindling.observability.logs import LogStore
from kindling.observability.metrics import TEMPLATE_REJECTED
from kindling.runtimes import layout
from kindling.sandbox import Backend
from kindling.sandbox.environment import INIT_TIMEOUT, ExecutionEnvironment, FunctionVersion
from kindling.sandbox.verify import REJECTED

log = logging.getLogger("kindling.templates")

Key = tuple[str, str, str]


class Templates:
    def __init__(self, backend: Backend, logs: LogStore, base_env: dict[str, str], mode: str = "on") -> None:
        self.backend = backend
        self.logs = logs
        self.base_env = base_env
        self.mode = mode
        self.ready: dict[Key, str] = {}
        self.pending: set[Key] = set()
        self.failed: set[Key] = set()
        self.generation: dict[tuple[str, str], int] = defaultdict(int)
        self.zygotes: dict[str, str] = {}  # runtime → a ready zygote: that runtime, before any init

    def start_zygotes(self, runtimes: dict[str, list[str]], empty_dir: str, code_root: str,
                      layouts: dict[str, dict] | None = None) -> None:
        """Start a zygote for each runtime (name → argv; ``layouts``: name → its spec's layout keys), in the
        background: first cold starts fork from them."""
        if self.mode == "off" or not hasattr(self.backend, "template"):
            return
        for runtime, argv in runtimes.items():
            where = (layouts or {}).get(runtime, {})
            asyncio.get_running_loop().create_task(self._make_zygote(runtime, argv, empty_dir, code_root, where))

    async def _make_zygote(self, runtime: str, argv: list[str], empty_dir: str, code_root: str,
                           where: dict) -> None:
        tid = f"zygote-{runtime}-{uuid.uuid4().hex[:8]}"
        env = {**self.base_env, **layout.variables(runtime, "/var/task", self.backend.runtime_dir)}
        try:
            with open(os.devnull, "wb") as null:
                await asyncio.wait_for(self.backend.template(  # type: ignore[attr-defined]
                    tid, argv, env, empty_dir, 10240, 512, os.dup(null.fileno()), zygote=True, code_root=code_root,
                    layout=where), INIT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            _count_rejection(exc)
            log.warning("no zygote for %s (%s): its first cold starts start fresh interpreters", runtime, exc)
            return
        self.zygotes[runtime] = tid
        log.info("zygote ready for %s", runtime)

    def zygote(self, fn: FunctionVersion) -> str | None:
        """A zygote for ``fn``'s runtime, unless templates are off for it."""
        if self.mode == "off" or layout.wrapper(fn.config):  # a wrapper starts its runtime: init as it says
            return None
        return self.zygotes.get(str(fn.config.get("Runtime")))

    def forget_zygote(self, tid: str, error: BaseException | None = None) -> None:
        """A zygote that could not make an environment (``error``, by default the exception being handled):
        if the spawner killed it or it is gone, first cold starts of its runtime start fresh interpreters; any
        other failure was that environment's own (its code deleted meanwhile, say) and the zygote stays."""
        error = error if error is not None else sys.exc_info()[1]
        if tid not in self.zygotes.values():
            return
        if error is not None and not any(s in str(error) for s in (REJECTED, "no ready template", "was dropped")):
            return
        _count_rejection(error)
        for runtime, zid in list(self.zygotes.items()):
            if zid == tid:
                del self.zygotes[runtime]
                asyncio.get_running_loop().create_task(self._drop(tid))

    def eligible(self, fn: FunctionVersion) -> bool:
        if self.mode == "off" or not hasattr(self.backend, "template"):
            return False
        if not str(fn.config.get("Runtime", "")).startswith("python"):
            return False  # a template is Kindling's own runtime, waiting after init
        if layout.wrapper(fn.config):
            return False  # AWS_LAMBDA_EXEC_WRAPPER: its runtime starts through the wrapper, fresh every time
        if fn.version == "$LATEST":
            return self.mode == "on"
        return (fn.config.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions"

    def get(self, fn: FunctionVersion) -> str | None:
        return self.ready.get(fn.key)

    def ensure(self, fn: FunctionVersion) -> None:
        """Make a template of ``fn`` in the background, once, if it is eligible."""
        key = fn.key
        if key in self.ready or key in self.pending or key in self.failed or not self.eligible(fn):
            return
        self.pending.add(key)
        asyncio.get_running_loop().create_task(self._make(fn))

    def forget(self, key: Key, error: BaseException | None = None) -> None:
        """A template that could not make an environment (``error``, by default the exception being handled):
        cold starts go back to the zygote or fresh interpreters."""
        if key in self.ready:
            _count_rejection(error if error is not None else sys.exc_info()[1])
        tid = self.ready.pop(key, None)
        self.failed.add(key)
        if tid is not None:
            asyncio.get_running_loop().create_task(self._drop(tid))

    def reclaim(self, key: Key) -> None:
        """Drop a ready template to free its memory for environments; it may be made again when there is room."""
        tid = self.ready.pop(key, None)
        if tid is not None:
            asyncio.get_running_loop().create_task(self._drop(tid))

    async def _make(self, fn: FunctionVersion) -> None:
        key, generation = fn.key, self.generation[fn.name, fn.version]
        # An environment object gives the template the same variables and a log stream for init's output.
        shape = ExecutionEnvironment(fn, self.base_env, self.logs, self.backend)
        shape.initialization_type = "snap-start"
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(read_fd, _copy, read_fd, shape)
        tid = uuid.uuid4().hex
        shape.id = tid  # the template's credentials are its own, released when it is dropped
        c = fn.config
        try:
            await asyncio.wait_for(self.backend.template(  # type: ignore[attr-defined]
                tid, list(fn.argv), shape._environment(), fn.task_root, int(c["MemorySize"]),
                int(c["EphemeralStorage"]["Size"]), write_fd, egress=fn.egress, layout=fn.layout), INIT_TIMEOUT)
        except (TimeoutError, OSError) as exc:
            _count_rejection(exc)
            log.info("no template for %s:%s (%s); its cold starts start fresh interpreters", fn.name, fn.version, exc)
            self.failed.add(key)
            await self._drop(tid)
            return
        finally:
            self.pending.discard(key)
            loop.call_later(1.0, _close_reader, loop, read_fd, shape)
        if self.generation[fn.name, fn.version] != generation:
            await self._drop(tid)  # the function changed while its template was being made
            return
        self.ready[key] = tid
        log.info("template ready for %s:%s", fn.name, fn.version)

    def function_changed(self, name: str, version: str | None = None) -> None:
        def hit(k: tuple[str, ...]) -> bool:
            return k[0] == name and (version is None or k[1] == version)
        for gen in [k for k in self.generation if hit(k)] + ([(name, version)] if version else []):
            self.generation[gen] += 1
        for key in [k for k in self.ready if hit(k)]:
            asyncio.get_running_loop().create_task(self._drop(self.ready.pop(key)))
        self.failed = {k for k in self.failed if not hit(k)}

    async def _drop(self, tid: str) -> None:
        if ExecutionEnvironment.credentials is not None:
            ExecutionEnvironment.credentials.release_credentials(tid)
        try:
            await self.backend.drop(tid)  # type: ignore[attr-defined]
        except OSError:
            pass


def _count_rejection(error: BaseException | None) -> None:
    """Count a template the sandbox spawner killed for breaking the rules (it says so in its answer)."""
    if error is not None and REJECTED in str(error):
        TEMPLATE_REJECTED.inc()
        log.warning("%s; it was killed and its cold starts fall back to the zygote or fresh interpreters", error)


def _copy(fd: int, shape: ExecutionEnvironment) -> None:
    """The template's init output, into its log stream."""
    try:
        while chunk := os.read(fd, 65536):
            shape._lines(chunk)
        asyncio.get_running_loop().remove_reader(fd)
    except BlockingIOError:
        pass
    shape.log.flush()


def _close_reader(loop: asyncio.AbstractEventLoop, fd: int, shape: ExecutionEnvironment) -> None:
    _copy(fd, shape)
    loop.remove_reader(fd)
    os.close(fd)
