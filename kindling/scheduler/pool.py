"""Warm pools of execution environments, one per function version, within the node's memory.

An invoke is admitted by the Counter, then takes an idle environment of its
version (the most recently used, so the rest can go cold) or waits for one.
Cold starts coalesce: a version starts a new environment only while it has
more waiting invokes than environments starting, and whichever environment
comes free first (a new one, or a warm one finishing) serves the oldest
waiter. New environments must fit in the memory budget (the sum of their
MemorySize, plus each template's MemorySize and ZYGOTE_MB per zygote); idle
environments and idle templates are reclaimed least recently used first to make
room (zygotes last), and an invoke that cannot get room is throttled rather than
left waiting. A template is made only when it fits without reclaiming anything,
and at most TEMPLATES_MAKING at once.
A changed version bumps its generation: idle environments of the old one are
shut down at once, busy ones as soon as they finish. Environments idle past the
keep-alive are reclaimed by a periodic reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator

from kindling.observability.logs import LogStore
from kindling.sandbox import Backend
from kindling.sandbox.environment import INIT_TIMEOUT, SHUTDOWN_GRACE, ExecutionEnvironment, FunctionVersion
from kindling.scheduler.limits import Counter, ScaleRate, throttled
from kindling.scheduler.templates import Templates

log = logging.getLogger("kindling.scheduler")

Key = tuple[str, str, str]
# What a zygote (a runtime before any init, with the spare clone forked from it) is counted as: it runs no
# tenant code and holds 3-8 MB; it is limited by its own cgroup, not by a function's MemorySize.
ZYGOTE_MB = 32
# Templates made at once, in the background: each runs its function's init in the spawner, ahead of cold starts.
TEMPLATES_MAKING = 2


class VersionPool:
    def __init__(self) -> None:
        self.idle: list[ExecutionEnvironment] = []
        self.waiters: deque[asyncio.Future[ExecutionEnvironment]] = deque()
        self.starting = 0


class Scheduler:
    def __init__(self, logs: LogStore, base_env: dict[str, str], keep_alive: float, backend: Backend,
                 counter: Counter | None = None, memory_budget_mb: int = 0, templates: str = "off") -> None:
        self.logs = logs
        self.backend = backend
        self.base_env = base_env
        self.keep_alive = keep_alive
        self.counter = counter or Counter(1000)
        self.memory_budget_mb = memory_budget_mb or _default_budget_mb()
        self.scale = ScaleRate()
        self.templates = Templates(backend, logs, base_env, templates)
        self.pools: dict[Key, VersionPool] = defaultdict(VersionPool)
        self.environments: set[ExecutionEnvironment] = set()
        self.generation: dict[tuple[str, str], int] = defaultdict(int)  # per (function, version)
        self._born: dict[ExecutionEnvironment, int] = {}
        self.provisioned: dict[tuple[str, str], int] = {}
        self._reaper: asyncio.Task[None] | None = None
        self.cold_starts = 0
        self._template_mb: dict[Key, int] = {}  # templates made or being made: the MemorySize they count as
        self._template_used: dict[Key, float] = {}  # when each last made an environment

    # -- the invoke path ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def environment(self, fn: FunctionVersion) -> AsyncIterator[ExecutionEnvironment]:
        """An environment of ``fn`` for one invoke, counted against its concurrency while in use."""
        self.counter.admit(fn.name, fn.version)
        try:
            env = await self.acquire(fn)
            try:
                yield env
            finally:
                self.release(env)
        finally:
            self.counter.done(fn.name, fn.version)

    async def acquire(self, fn: FunctionVersion) -> ExecutionEnvironment:
        pool = self.pools[fn.key]
        while pool.idle:
            env = pool.idle.pop()
            if not env.dead:
                return env
            self._forget(env)
        waiter: asyncio.Future[ExecutionEnvironment] = asyncio.get_running_loop().create_future()
        pool.waiters.append(waiter)
        try:
            if pool.starting < len(pool.waiters):
                self._start(fn, pool)
            return await waiter
        except BaseException:
            if waiter in pool.waiters:
                pool.waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # handed over just as this invoke gave up
            raise

    def _start(self, fn: FunctionVersion, pool: VersionPool) -> None:
        """Start one environment for ``pool``'s waiters, or throttle the newest waiter if there is no room."""
        try:
            self.scale.take(fn.name)
            self._make_room(int(fn.config["MemorySize"]))
        except Exception as exc:
            pool.waiters.pop().set_exception(exc)
            return
        env = ExecutionEnvironment(fn, self.base_env, self.logs, self.backend)
        env.template = self.templates.get(fn)
        if env.template is None:
            env.zygote = self.templates.zygote(fn)
        else:
            self._template_used[fn.key] = time.monotonic()
        self.environments.add(env)
        self._born[env] = self.generation[fn.name, fn.version]
        pool.starting += 1
        self.cold_starts += 1
        asyncio.get_running_loop().create_task(self._boot(env, pool))

    async def _boot(self, env: ExecutionEnvironment, pool: VersionPool) -> None:
        try:
            try:
                await env.start()
            except OSError:
                if env.template is None and env.zygote is None:
                    raise
                log.warning("template of %s failed to make an environment; starting a fresh one", env.fn.name)
                if env.template is not None:
                    self.templates.forget(env.fn.key)
                if env.zygote is not None:
                    self.templates.forget_zygote(env.zygote)
                env.template = env.zygote = None
                await env.start()
        except Exception as exc:
            log.exception("could not start an execution environment for %s", env.fn.name)
            pool.starting -= 1
            self._forget(env)
            env.shutdown()
            if pool.waiters:
                pool.waiters.popleft().set_exception(exc)
            return
        pool.starting -= 1
        self._hand_over(env, pool)

    def _hand_over(self, env: ExecutionEnvironment, pool: VersionPool) -> None:
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                waiter.set_result(env)
                return
        pool.idle.append(env)

    def release(self, env: ExecutionEnvironment) -> None:
        pool = self.pools[env.fn.key]
        if env.dead or self._born.get(env) != self.generation[env.fn.name, env.fn.version]:
            env.shutdown()
            self._forget(env)
            if pool.waiters and pool.starting < len(pool.waiters):
                self._start(env.fn, pool)
        else:
            self._hand_over(env, pool)
            if env.template is None:
                self._ensure_template(env.fn)  # init has run: later cold starts can fork from a template

    def _ensure_template(self, fn: FunctionVersion) -> None:
        """Have a template of ``fn`` made if it fits in the memory left: a template never displaces anything."""
        key, need = fn.key, int(fn.config["MemorySize"])
        if key in self.templates.ready or key in self.templates.pending:
            return
        if len(self.templates.pending) >= TEMPLATES_MAKING:
            return  # a later release tries again: a burst of new functions must not queue an init each
        if self.memory_budget_mb - self.memory_in_use_mb() < need:
            return
        self.templates.ensure(fn)
        if key in self.templates.pending:
            self._template_mb[key] = need
            self._template_used[key] = time.monotonic()

    # -- provisioned concurrency --------------------------------------------------------------------
    async def provision(self, fn: FunctionVersion, count: int) -> int:
        """Keep ``count`` environments of ``fn`` initialized ahead of invokes; returns how many are ready.

        They are made with AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency, run init now, are
        never reaped for idleness nor reclaimed for memory, and serve their version's invokes first.
        """
        pool = self.pools[fn.key]
        self.provisioned[fn.name, fn.version] = count
        pinned = [e for e in self.environments if e.pinned and e.fn.key == fn.key and not e.dead]
        for env in pinned[count:]:  # fewer than before
            if not env.busy:
                self._retire_pinned(env, pool)
        missing = count - min(count, len(pinned))
        results = await asyncio.gather(*(self._provision_one(fn) for _ in range(missing)),
                                       return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("provisioned concurrency for %s:%s: %s", fn.name, fn.version, failed[0])
        return min(count, len(pinned)) + missing - len(failed)

    async def _provision_one(self, fn: FunctionVersion) -> None:
        self._make_room(int(fn.config["MemorySize"]))
        env = ExecutionEnvironment(fn, self.base_env, self.logs, self.backend)
        env.initialization_type = "provisioned-concurrency"
        env.pinned = True
        self.environments.add(env)
        self._born[env] = self.generation[fn.name, fn.version]
        try:
            await env.start()
            await asyncio.wait_for(env.initialized.wait(), INIT_TIMEOUT)
        except BaseException:
            env.shutdown()
            self._forget(env)
            raise
        if env.dead:
            self._forget(env)
            raise OSError("the provisioned environment's init failed")
        self._hand_over(env, self.pools[fn.key])  # looked up again: the reaper drops empty pools meanwhile

    def unprovision(self, name: str, version: str) -> None:
        """Stop keeping environments of this version ahead: idle ones go now, busy ones when done."""
        self.provisioned.pop((name, version), None)
        for env in [e for e in self.environments if e.pinned and e.fn.name == name and e.fn.version == version]:
            if not env.busy:
                self._retire_pinned(env, self.pools[env.fn.key])
            else:
                env.pinned = False  # an ordinary environment from now on: reaped when idle

    def _retire_pinned(self, env: ExecutionEnvironment, pool: VersionPool) -> None:
        if env in pool.idle:
            pool.idle.remove(env)
        env.shutdown()
        self._forget(env)

    def provisioned_available(self, fn: FunctionVersion) -> int:
        """Provisioned environments of ``fn`` whose init has finished."""
        return sum(1 for e in self.environments
                   if e.pinned and e.fn.key == fn.key and not e.dead and e.initialized.is_set())

    # -- memory -------------------------------------------------------------------------------------
    def memory_in_use_mb(self) -> int:
        """What the budget holds: environments, templates (made or being made) and zygotes."""
        return self.environments_mb() + self.templates_mb()

    def environments_mb(self) -> int:
        return sum(int(e.fn.config["MemorySize"]) for e in self.environments)

    def templates_mb(self) -> int:
        t = self.templates
        made = sum(self._template_mb.get(k, 0) for k in t.ready.keys() | t.pending)
        return made + ZYGOTE_MB * len(t.zygotes)

    def _make_room(self, need_mb: int) -> None:
        """Reclaim idle environments and templates, least recently used first, then zygotes, until ``need_mb``
        fits; else throttle."""
        free = self.memory_budget_mb - self.memory_in_use_mb()
        if free >= need_mb:
            return
        idle: list[tuple[float, ExecutionEnvironment | Key]] = [
            (e.last_used, e) for p in self.pools.values() for e in p.idle if not e.pinned]
        idle += [(self._template_used.get(k, 0.0), k) for k in self.templates.ready]
        for _, what in sorted(idle, key=lambda item: item[0]):
            if free >= need_mb:
                break
            if isinstance(what, ExecutionEnvironment):
                self.pools[what.fn.key].idle.remove(what)
                what.shutdown()
                self._forget(what)
                free += int(what.fn.config["MemorySize"])
                log.info("reclaimed idle environment %s of %s to make room", what.id, what.fn.name)
            else:
                self.templates.reclaim(what)
                free += self._template_mb.pop(what, 0)
                self._template_used.pop(what, None)
                log.info("reclaimed the template of %s:%s to make room: its cold starts start from a zygote",
                         what[0], what[1])
        for runtime, tid in list(self.templates.zygotes.items()):
            if free >= need_mb:
                break
            self.templates.forget_zygote(tid)
            free += ZYGOTE_MB
            log.info("reclaimed the zygote of %s to make room: its first cold starts start fresh", runtime)
        if free < need_mb:
            raise throttled("ConcurrentInvocationLimitExceeded")

    # -- changes and reaping ------------------------------------------------------------------------
    def function_changed(self, name: str, version: str | None = None) -> None:
        """Retire the environments of one version of ``name`` (of all, when ``version`` is None): its code
        or configuration changed, or it is gone. Other versions' environments keep serving."""
        keys = {k[:2] for k in self.pools if k[0] == name} | {k for k in self.generation if k[0] == name}
        if version is not None:
            keys = {k for k in keys if k[1] == version} | {(name, version)}
        for key in keys:
            self.generation[key] += 1
            self.provisioned.pop(key, None)
        self.templates.function_changed(name, version)
        for pool_key in [k for k in self.pools if k[:2] in keys]:
            pool = self.pools[pool_key]
            for env in pool.idle:
                env.shutdown()
                self._forget(env)
            pool.idle.clear()
            if not pool.waiters and not pool.starting:
                del self.pools[pool_key]

    def _forget(self, env: ExecutionEnvironment) -> None:
        self.environments.discard(env)
        self._born.pop(env, None)

    def reap(self) -> int:
        """Shut down environments idle longer than the keep-alive; returns how many."""
        cutoff = time.monotonic() - self.keep_alive
        reaped = 0
        for pool in self.pools.values():
            for env in [e for e in pool.idle if e.dead or (e.last_used <= cutoff and not e.pinned)]:
                pool.idle.remove(env)
                env.shutdown()
                self._forget(env)
                reaped += 1
        for key in [k for k, p in self.pools.items() if not (p.idle or p.waiters or p.starting)]:
            del self.pools[key]
        for key in [k for k in self._template_mb if k not in self.templates.ready and k not in self.templates.pending]:
            del self._template_mb[key]  # dropped by a change or a failure
            self._template_used.pop(key, None)
        return reaped

    async def _reap_forever(self) -> None:
        interval = max(0.05, min(self.keep_alive / 4, 10.0))
        while True:
            await asyncio.sleep(interval)
            if n := self.reap():
                log.info("reclaimed %d idle execution environment(s)", n)

    def start(self) -> None:
        self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def stop(self) -> None:
        """Lambda's shutdown phase for every environment: SIGTERM, a grace period, SIGKILL."""
        if self._reaper is not None:
            self._reaper.cancel()
        envs = list(self.environments)
        for env in envs:
            env.shutdown()
        if envs:
            await asyncio.sleep(SHUTDOWN_GRACE)
        for env in envs:
            if env.process is not None and env.process.returncode is None:
                env.process.kill()


def _default_budget_mb() -> int:
    """80% of the machine's memory."""
    try:
        with open("/proc/meminfo") as f:
            total_kb = int(f.readline().split()[1])
        return total_kb * 8 // 10 // 1024
    except (OSError, ValueError, IndexError):
        return 16384
