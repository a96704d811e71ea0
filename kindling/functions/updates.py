"""Finishing creations, publications and updates, as Lambda does: in the background, right after answering.

CreateFunction / PublishVersion store a version ``Pending`` and UpdateFunctionCode / UpdateFunctionConfiguration
store $LATEST ``InProgress`` (kindling/functions/states.py); then ``Updates.start`` checks in a task that the
version can run here (its runtime is installed, its code is in the store) and runs the ``preparers`` (hooks for
slower work, e.g. pulling a container image), and marks it Active/Successful, or Failed with a reason. The common
case completes before the client's next request arrives. State lives in the database, so versions a stopped
Kindling left under way are finished by ``resume`` when it starts again.

Other parts call ``finish`` / ``fail`` directly to settle a version their own way, and ``preparers`` may raise
``UpdateFailed(reason, code)`` to fail one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from kindling.functions import states
from kindling.store.functions import Conflict, FunctionRecord, FunctionStore

log = logging.getLogger(__name__)
Preparer = Callable[[FunctionRecord], Awaitable[None] | None]
_ATTEMPTS = 8  # compare-and-set rounds against concurrent writers (tags, publish) before giving up


class UpdateFailed(Exception):
    """Raised by a check or preparer: the version becomes Failed with this reason and reason code."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


class Updates:
    def __init__(self, store: FunctionStore, check: Callable[[FunctionRecord], None]) -> None:
        self.store = store
        self.check = check  # raises UpdateFailed when a version cannot run here
        self.preparers: list[Preparer] = []
        # (before, after) once a version became Active/Successful: its new configuration is the one invokes run
        self.listeners: list[Callable[[FunctionRecord, FunctionRecord], None]] = []
        self._under_way: dict[tuple[str, str], asyncio.Task[None]] = {}

    def start(self, name: str, version: str) -> None:
        """Finish ``name:version`` in the background (at once when no event loop runs: direct callers)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._settle_now(name, version)
            return
        if (name, version) not in self._under_way:
            self._under_way[name, version] = loop.create_task(self._complete(name, version))

    def resume(self) -> int:
        """Finish every version a previous run left Pending or InProgress; returns how many."""
        left = self.store.in_transition(states.busy)
        for name, version in left:
            log.info("finishing the update of %s:%s left under way by the last run", name, version)
            self.start(name, version)
        return len(left)

    async def stop(self) -> None:
        tasks = list(self._under_way.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _complete(self, name: str, version: str) -> None:
        try:
            rec = self.store.get(name, version)
            if rec is None or not states.busy(rec.config):
                return
            try:
                self.check(rec)
                for prepare in self.preparers:
                    result = prepare(rec)
                    if inspect.isawaitable(result):
                        await result
            except UpdateFailed as exc:
                self.fail(name, version, exc.reason, exc.code)
                return
            self.finish(name, version)
        except Exception:  # never leave a version under way for good
            log.exception("finishing the update of %s:%s failed", name, version)
            try:
                self.fail(name, version, "An internal error occurred while updating the function.", "InternalError")
            except Exception:  # the store itself fails: the next start finishes it (resume)
                log.exception("could not mark %s:%s failed; it is finished when Kindling starts again", name, version)
        finally:
            self._under_way.pop((name, version), None)

    def _settle_now(self, name: str, version: str) -> None:
        rec = self.store.get(name, version)
        if rec is None or not states.busy(rec.config):
            return
        try:
            self.check(rec)
        except UpdateFailed as exc:
            self.fail(name, version, exc.reason, exc.code)
            return
        self.finish(name, version)

    def finish(self, name: str, version: str) -> FunctionRecord | None:
        """Mark ``name:version`` Active / Successful: invokes run its configuration from now on."""
        return self._settle(name, version, states.succeeded, done=True)

    def fail(self, name: str, version: str, reason: str, code: str) -> FunctionRecord | None:
        """Mark ``name:version`` Failed with ``reason`` / ``code``; invokes keep running its last successful
        configuration (a version that never had one cannot be invoked)."""
        log.warning("the update of %s:%s failed: %s (%s)", name, version, reason, code)
        return self._settle(name, version, lambda config: states.failed(config, reason, code), done=False)

    def _settle(self, name: str, version: str, settle: Callable[[dict], dict], done: bool) -> FunctionRecord | None:
        for _ in range(_ATTEMPTS):
            rec = self.store.get(name, version)
            if rec is None or not states.busy(rec.config):
                return rec
            try:
                new = self.store.update(rec, settle(rec.config), rec.code_key, forget=done)
            except Conflict:  # tagged or published meanwhile: read it again
                continue
            if done:
                for listener in self.listeners:
                    listener(rec, new)
            return new
        log.error("could not settle %s:%s: it kept changing", name, version)
        return None
