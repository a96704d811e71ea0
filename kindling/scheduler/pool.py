"""Warm pools of execution environments, one pool per function version.

An invoke takes an idle environment of its version (the most recently used, so
the rest can go cold and be reclaimed) or starts a new one. A changed function
bumps its generation: idle environments of the old one are shut down at once,
busy ones as soon as they finish. Environments idle past the keep-alive are
reclaimed by a periodic reaper.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from kindling.observability.logs import LogStore
from kindling.sandbox import Backend
from kindling.sandbox.environment import SHUTDOWN_GRACE, ExecutionEnvironment, FunctionVersion

log = logging.getLogger("kindling.scheduler")


class Scheduler:
    def __init__(self, logs: LogStore, base_env: dict[str, str], keep_alive: float, backend: Backend) -> None:
        self.logs = logs
        self.backend = backend
        self.base_env = base_env
        self.keep_alive = keep_alive
        self.idle: dict[tuple[str, str, str], list[ExecutionEnvironment]] = defaultdict(list)
        self.environments: set[ExecutionEnvironment] = set()
        self.generation: dict[str, int] = defaultdict(int)
        self._born: dict[ExecutionEnvironment, int] = {}
        self._reaper: asyncio.Task[None] | None = None

    async def acquire(self, fn: FunctionVersion) -> ExecutionEnvironment:
        pool = self.idle.get(fn.key)
        while pool:
            env = pool.pop()
            if not env.dead:
                return env
        env = ExecutionEnvironment(fn, self.base_env, self.logs, self.backend)
        self.environments.add(env)
        self._born[env] = self.generation[fn.name]
        try:
            await env.start()
        except BaseException:
            self._forget(env)
            env.shutdown()
            raise
        log.debug("started environment %s for %s:%s", env.id, fn.name, fn.version)
        return env

    def release(self, env: ExecutionEnvironment) -> None:
        if env.dead or self._born.get(env) != self.generation[env.fn.name]:
            env.shutdown()
            self._forget(env)
        else:
            self.idle[env.fn.key].append(env)

    def function_changed(self, name: str) -> None:
        """Retire every environment of ``name``: its code or configuration changed, or it is gone."""
        self.generation[name] += 1
        for key in [k for k in self.idle if k[0] == name]:
            for env in self.idle.pop(key):
                env.shutdown()
                self._forget(env)

    def _forget(self, env: ExecutionEnvironment) -> None:
        self.environments.discard(env)
        self._born.pop(env, None)

    def reap(self) -> int:
        """Shut down environments idle longer than the keep-alive; returns how many."""
        cutoff = time.monotonic() - self.keep_alive
        reaped = 0
        for key, pool in list(self.idle.items()):
            keep = [e for e in pool if not e.dead and e.last_used > cutoff]
            for env in pool:
                if env not in keep:
                    env.shutdown()
                    self._forget(env)
                    reaped += 1
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
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
