"""Keeping provisioned concurrency: per version, a worker asks the scheduler for the environments wanted.

The control plane (``kindling.functions.provisioned``) says how many environments each version of a
function should keep initialized: the sum of the configs that point at it (the version's own, or an
alias's). The Counter hears it at once (admission), and one worker per version calls
``Scheduler.provision`` until the count it made is still the count wanted, so changes that overlap
converge instead of racing. A version's Status is IN_PROGRESS from a change until its worker is done,
then READY with every environment initialized, or FAILED when init failed. A keeper replaces
provisioned environments that died (a timed-out invoke, a crashed runtime), as Lambda does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable

from kindling.sandbox.environment import FunctionVersion
from kindling.scheduler.pool import Scheduler

log = logging.getLogger("kindling.provisioned")

IN_PROGRESS, READY, FAILED = "IN_PROGRESS", "READY", "FAILED"
INIT_FAILURE = "FUNCTION_ERROR_INIT_FAILURE"  # StatusReason when an environment's init failed
KEEP_INTERVAL = 2.0  # seconds between the keeper's checks for provisioned environments that died

Key = tuple[str, str]  # (function name, version)


@dataclasses.dataclass
class Progress:
    status: str = IN_PROGRESS
    available: int = 0  # initialized by the last finished round; while IN_PROGRESS, what there was before
    reason: str | None = None


class Provisioner:
    def __init__(self, scheduler: Scheduler, version_of: Callable[[str, str], FunctionVersion | None]) -> None:
        self.scheduler = scheduler
        self.counter = scheduler.counter
        self.version_of = version_of  # the environment description of a published version, None once deleted
        self.wanted: dict[Key, int] = {}
        self.progress: dict[Key, Progress] = {}
        self.workers: dict[Key, asyncio.Task[None]] = {}
        self.retiring: set[Key] = set()  # not wanted any more, kept serving until the function's workers finish
        self._keeper: asyncio.Task[None] | None = None
        self.running = False

    def want(self, name: str, counts: dict[str, int], handover: bool = False, again: Iterable[str] = ()) -> None:
        """Keep ``counts[version]`` environments of each version of ``name`` initialized, none of the others.

        ``handover``: versions no longer wanted keep their environments until the new ones are ready (an
        alias moved). ``again``: versions whose worker runs even when their count is unchanged (a Put).
        """
        again = set(again)
        for key in [k for k in self.wanted if k[0] == name and k[1] not in counts]:
            self._drop(key)
            if handover:
                self.retiring.add(key)
            else:
                self.scheduler.unprovision(*key)
        for version, count in counts.items():
            key = (name, version)
            self.retiring.discard(key)
            if self.wanted.get(key) == count and version not in again:
                continue
            self.wanted[key] = count
            self.counter.set_provisioned(name, version, count)
            progress = self.progress.setdefault(key, Progress())
            progress.status, progress.reason = IN_PROGRESS, None
            self._work(key)
        self._retire(name)

    def forget(self, name: str, version: str | None = None) -> None:
        """A version (or with None, the whole function) is gone; the scheduler has retired its environments."""
        for key in [k for k in {*self.wanted, *self.retiring} if k[0] == name and version in (None, k[1])]:
            self._drop(key)
            self.retiring.discard(key)

    def status(self, name: str, version: str) -> Progress:
        """The version's Status, with Available counting only environments still alive when READY."""
        progress = self.progress.get((name, version))
        if progress is None:
            return Progress()
        out = dataclasses.replace(progress)
        if out.status != IN_PROGRESS:
            fn = self.version_of(name, version)
            out.available = min(out.available, self.scheduler.provisioned_available(fn) if fn else 0)
        return out

    def _drop(self, key: Key) -> None:
        self.wanted.pop(key, None)
        self.progress.pop(key, None)
        self.counter.set_provisioned(key[0], key[1], None)
        worker = self.workers.pop(key, None)
        if worker is not None:
            worker.cancel()  # environments still initializing are shut down

    def _retire(self, name: str) -> None:
        if any(k[0] == name for k in self.workers):
            return
        for key in [k for k in self.retiring if k[0] == name]:
            self.retiring.discard(key)
            self.scheduler.unprovision(*key)

    # -- workers ------------------------------------------------------------------------------------
    def _work(self, key: Key) -> None:
        if self.running and key not in self.workers:
            self.workers[key] = asyncio.get_running_loop().create_task(self._provision(key))

    async def _provision(self, key: Key) -> None:
        try:
            while count := self.wanted.get(key, 0):
                fn = self.version_of(*key)
                if fn is None:
                    return
                try:
                    ready = await self.scheduler.provision(fn, count)
                except Exception:
                    log.exception("provisioned concurrency for %s:%s failed", *key)
                    ready = 0
                progress = self.progress.get(key)
                if self.wanted.get(key) == count and progress is not None:
                    progress.available = min(ready, count)
                    progress.status, progress.reason = (READY, None) if ready >= count else (FAILED, INIT_FAILURE)
                    log.info("provisioned concurrency for %s:%s: %d of %d environment(s) ready", *key, ready, count)
                    return
        finally:
            if self.workers.get(key) is asyncio.current_task():
                del self.workers[key]
            self._retire(key[0])

    async def _keep_forever(self) -> None:
        while True:
            await asyncio.sleep(KEEP_INTERVAL)
            for key, count in list(self.wanted.items()):
                progress = self.progress.get(key)
                if key in self.workers or progress is None or progress.status != READY:
                    continue
                fn = self.version_of(*key)
                alive = self.scheduler.provisioned_available(fn) if fn is not None else count
                if alive < count:
                    log.info("replacing provisioned environment(s) of %s:%s that stopped", *key)
                    progress.available = alive  # the replacements count once initialized
                    self._work(key)

    def start(self) -> None:
        """Provision every version wanted (the stored configs, at server start) and keep them provisioned."""
        self.running = True
        for key in self.wanted:
            self._work(key)
        self._keeper = asyncio.get_running_loop().create_task(self._keep_forever())

    async def stop(self) -> None:
        self.running = False
        tasks = [*self.workers.values(), *([self._keeper] if self._keeper else [])]
        self.workers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
