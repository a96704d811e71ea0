"""Group commit: one writer thread applies every queued write, many events per commit.

``insert`` resolves only after the transaction holding the event committed (fsync'd), so each 202 still follows
its own durable commit; events arriving while a commit is in flight go together into the next one. Updates and
deletes ride along in the same transactions without being waited for. SQLite work runs on the writer's own
thread, so the event loop is not blocked by it.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from kindling.queue.envelope import Event
from kindling.queue.store import EventStore, Op

log = logging.getLogger("kindling.queue")

MAX_BATCH = 1000  # writes per transaction


class GroupCommitWriter:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._ops: list[Op] = []
        self._waiters: list[asyncio.Future[None] | None] = []  # one per op: who waits for its commit
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kindling-queue-writer")
        self.commits = 0  # transactions committed, for the benchmark
        self._idle = True  # no commit in flight

    async def insert(self, event: Event) -> None:
        """Return once ``event`` is committed to disk."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._add(Op("insert", event), done)
        await done

    def update(self, event: Event) -> None:
        self._add(Op("update", event), None)

    def delete(self, event: Event) -> None:
        self._add(Op("delete", event), None)

    def _add(self, op: Op, waiter: asyncio.Future[None] | None) -> None:
        self._ops.append(op)
        self._waiters.append(waiter)
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        self._wake = asyncio.Event()
        if self._ops:
            self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._idle = False
            while self._ops:
                ops, waiters = self._ops[:MAX_BATCH], self._waiters[:MAX_BATCH]
                del self._ops[:MAX_BATCH], self._waiters[:MAX_BATCH]
                try:
                    await loop.run_in_executor(self._thread, self.store.apply, ops)
                except Exception as exc:
                    log.exception("could not write %d queued event change(s); accepting events answers an error",
                                  len(ops))
                    for w in waiters:
                        if w is not None and not w.done():
                            w.set_exception(exc)
                    continue
                self.commits += 1
                for w in waiters:
                    if w is not None and not w.done():
                        w.set_result(None)
            self._idle = True

    async def stop(self) -> None:
        """Write what is pending, then stop."""
        if self._task is not None:
            for _ in range(1000):  # at most ~10 s
                if not self._ops and self._idle:
                    break
                await asyncio.sleep(0.01)
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._thread.shutdown(wait=True)
