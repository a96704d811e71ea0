"""The isolated sandbox backend, Kindling's side: asks the spawner for environments.

The spawner (kindling.sandbox.spawner, a separate root process) makes each
environment: its own mount, PID, network, IPC and UTS namespaces, a cgroup
(memory = MemorySize, CPU in proportion, pids), a private read-only root with
the code at /var/task and a size-limited /tmp, an unprivileged user without
capabilities, ``no_new_privs`` and a seccomp filter. The Runtime API socket is
opened inside the environment's network namespace and handed back here, so it
is reachable only from inside, at 169.254.100.1:9001 as on Lambda. The spawner
also gives each environment its network (kindling.network.plane): a veth on
this server's bridge, or loopback only with ``network=none``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kindling import network
from kindling.network.plane import nameservers
from kindling.sandbox.cgroups import Cgroup, remove_stale
from kindling.sandbox.layout import LANG_DIR
from kindling.sandbox.peak_memory import PeakMemory
from kindling.sandbox.spawner import MSG, RUNTIME_DIR, TASK_ROOT


def instance_of(data_dir: Path) -> str:
    """The name this data dir's cgroups start with."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def remove_leftovers(data_dir: Path) -> None:
    """Kill and remove what a Kindling on the same data dir left running when it was killed outright (frozen
    environments, templates): they would hold its mounts and memory for ever."""
    remove_stale(instance_of(data_dir) + "-")


class IsolatedBackend:
    name = "isolated"
    task_root: str | None = TASK_ROOT
    runtime_dir = RUNTIME_DIR
    lang_dir: str | None = LANG_DIR

    def __init__(self, data_dir: Path, host_runtime_dir: str, langs: list[str], uid: int, gid: int,
                 pool: int = 2, network_mode: str = "none", exposed: dict[int, tuple[str, int]] | None = None,
                 system_root: str | None = None) -> None:
        """``langs``: the interpreter prefixes environments may see at /var/lang; ``system_root``: the custom
        runtimes' system root (the spawner binds nothing else there)."""
        self.system_root = system_root
        instance = instance_of(data_dir)
        remove_stale(instance + "-")
        mount_point = data_dir / "sandbox-root"
        mount_point.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen([sys.executable, "-m", "kindling.sandbox.spawner", str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                        umask=0o022)  # what it writes into environments' roots is for them to read
        theirs.close()
        ours.send(json.dumps({"mount_point": str(mount_point), "runtime_dir": host_runtime_dir, "extra_ro": [],
                              "langs": sorted(set(langs)), "system_roots": [system_root] if system_root else [],
                              "uid": uid, "gid": gid, "pool": pool,
                              "instance": instance, "network": network_mode, "exposed": exposed or {},
                              "nameservers": nameservers() if network_mode == "internet" else [],
                              "images_dir": str(data_dir.resolve() / "code" / ".images"),
                              "tmp_dir": str(data_dir / "tmp-storage")}).encode())
        self.sock = ours
        self.sock.setblocking(False)
        self.waiting: dict[int, asyncio.Future[tuple[dict, list[int]]]] = {}
        self.requests = 0
        self.exits: dict[int, Callable[[int], None]] = {}
        self.early_exits: dict[int, int] = {}
        self.orphans: dict[int, Cgroup] = {}  # environments made for a request whose asker gave up: killed
        self.loop: asyncio.AbstractEventLoop | None = None
        self._writable: asyncio.Future[None] | None = None

    def _listen(self) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self.sock, MSG, 1)
            except BlockingIOError:
                return
            if not msg:
                assert self.loop is not None
                self.loop.remove_reader(self.sock.fileno())
                for fut in self.waiting.values():
                    if not fut.done():
                        fut.set_exception(OSError("the sandbox spawner exited"))
                self.waiting.clear()
                return
            doc = json.loads(msg)
            if "exit" in doc:
                callback = self.exits.pop(doc["exit"], None)
                if callback is not None:
                    callback(doc["code"])
                elif doc["exit"] in self.orphans:
                    self.orphans.pop(doc["exit"]).destroy()
                else:
                    self.early_exits[doc["exit"]] = doc["code"]
            else:
                fut = self.waiting.pop(doc["req"], None)  # type: ignore[arg-type]
                if fut is not None and not fut.done():
                    fut.set_result((doc, fds))
                else:
                    for fd in fds:
                        os.close(fd)
                    self._orphan(doc)

    def _orphan(self, doc: dict) -> None:
        """An environment made for a request nobody awaits any more (it was cancelled): kill it."""
        if not doc.get("ok") or "pid" not in doc:
            return
        pid, cgroup = doc["pid"], Cgroup(doc["cgroup"], create=False)
        try:
            cgroup.freeze(False)
            os.kill(pid, signal.SIGKILL)  # PID 1 of its namespace: the kernel kills the rest
        except OSError:
            pass
        if self.early_exits.pop(pid, None) is None:
            self.orphans[pid] = cgroup  # removed once the spawner has reaped it
        else:
            cgroup.destroy()

    async def _send(self, payload: bytes, fds: list[int]) -> None:
        """Send one message, waiting (without blocking the loop) while the spawner's socket is full."""
        while True:
            try:
                socket.send_fds(self.sock, [payload], fds)
                return
            except BlockingIOError:  # EAGAIN: the spawner has not read its backlog yet
                await asyncio.shield(self._until_writable())

    def _until_writable(self) -> asyncio.Future[None]:
        """One future, shared by every sender waiting, done when the socket can take a message again."""
        assert self.loop is not None
        if self._writable is None or self._writable.done():
            fut = self._writable = self.loop.create_future()

            def ready() -> None:
                assert self.loop is not None
                self.loop.remove_writer(self.sock.fileno())
                if not fut.done():
                    fut.set_result(None)
            self.loop.add_writer(self.sock.fileno(), ready)
        return self._writable

    async def _ask(self, spec: dict, fds: list[int]) -> tuple[dict, list[int]]:
        """Send one request to the spawner (the caller's fds are closed here) and await its answer.

        Nothing is left behind whatever fails or is cancelled: the waiting entry goes, and an environment the
        spawner makes for a request nobody awaits any more is killed when its answer comes."""
        self._listen()
        assert self.loop is not None
        self.requests += 1
        req = self.requests
        spec = {**spec, "req": req}
        fut: asyncio.Future[tuple[dict, list[int]]] = self.loop.create_future()
        self.waiting[req] = fut
        try:
            try:
                await self._send(json.dumps(spec).encode(), fds)
            finally:
                for fd in fds:
                    os.close(fd)
            doc, got = await fut
        except BaseException:
            self.waiting.pop(req, None)
            raise
        if not doc["ok"]:
            for fd in got:
                os.close(fd)
            raise OSError(f"could not make an execution environment: {doc['error']}")
        return doc, got

    async def _environment(self, spec: dict, memory_mb: int) -> IsolatedSandbox:
        read_fd, write_fd = os.pipe()
        try:
            doc, fds = await self._ask(spec, [write_fd])
        except BaseException:
            os.close(read_fd)
            raise
        return IsolatedSandbox(self, doc["pid"], Cgroup(doc["cgroup"], create=False), fds[0], read_fd, memory_mb)

    async def spawn(self, env_id: str, argv: list[str], env: dict[str, str], host_task_root: str, memory_mb: int,
                    tmp_mb: int, egress: list[dict] | None = None, layout: dict | None = None,
                    image: dict | None = None) -> IsolatedSandbox:
        """``layout``: /var/lang, the system root and /etc/os-release (kindling.runtimes.layout.spec); ``image``:
        a container image's root and working directory (image_root, cwd) instead."""
        env = {**env, "AWS_LAMBDA_RUNTIME_API": IsolatedSandbox.runtime_api}
        spec = {**(layout or {}), "op": "spawn", "argv": argv, "env": env, "task_root": host_task_root,
                "memory_mb": memory_mb, "tmp_mb": tmp_mb, "egress": egress, **(image or {})}
        return await self._environment(spec, memory_mb)

    async def template(self, template_id: str, argv: list[str], env: dict[str, str], host_task_root: str,
                       memory_mb: int, tmp_mb: int, output_fd: int, zygote: bool = False,
                       code_root: str = "", egress: list[dict] | None = None, layout: dict | None = None) -> None:
        """Start an initialized template (init runs now), or a zygote (a runtime before any init);
        returns once it is ready to be cloned."""
        env = {**env, "AWS_LAMBDA_RUNTIME_API": IsolatedSandbox.runtime_api}
        spec = {**(layout or {}), "op": "template", "template": template_id, "argv": argv, "env": env,
                "task_root": host_task_root,
                "memory_mb": memory_mb, "tmp_mb": tmp_mb, "zygote": zygote, "code_root": code_root, "egress": egress}
        await self._ask(spec, [output_fd])

    async def clone(self, template_id: str, env: dict[str, str], memory_mb: int, tmp_mb: int,
                    host_task_root: str | None = None, egress: list[dict] | None = None) -> IsolatedSandbox:
        """An environment forked from a ready template, with ``env`` updated in it (a zygote's clone also
        gets its code from ``host_task_root``)."""
        env = {**env, "AWS_LAMBDA_RUNTIME_API": IsolatedSandbox.runtime_api}
        spec = {"op": "clone", "template": template_id, "env": env, "tmp_mb": tmp_mb, "memory_mb": memory_mb,
                "task_root": host_task_root, "egress": egress}
        return await self._environment(spec, memory_mb)

    async def drop(self, template_id: str) -> None:
        await self._ask({"op": "drop", "template": template_id}, [])

    def close(self) -> None:
        self.sock.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()


class IsolatedSandbox:
    runtime_api = network.RUNTIME_API

    def __init__(self, backend: IsolatedBackend, pid: int, cgroup: Cgroup, listener_fd: int, output_fd: int,
                 memory_mb: int) -> None:
        self.backend = backend
        self.pid = pid
        self.cgroup = cgroup
        self.listener = socket.socket(fileno=listener_fd)
        self.output_fd = output_fd
        os.set_blocking(output_fd, False)
        self.memory_mb = memory_mb
        self.returncode: int | None = None
        self.peak = PeakMemory(str(cgroup.dirs["memory" if cgroup.v == 1 else "all"] / "cgroup.procs"))

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int], None]) -> None:
        def exited(code: int) -> None:
            self.returncode = code
            on_exit(code)
        if self.pid in self.backend.early_exits:
            loop.call_soon(exited, self.backend.early_exits.pop(self.pid))
        else:
            self.backend.exits[self.pid] = exited

    def signal(self, sig: int) -> None:
        if self.returncode is not None:
            return
        if sig == signal.SIGKILL:
            self.freeze(False)  # a frozen task dies only once thawed
        try:
            os.kill(self.pid, sig)  # PID 1 of its namespace: when it dies, the kernel kills the rest
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def freeze(self, frozen: bool) -> None:
        try:
            self.cgroup.freeze(frozen)
        except OSError:
            pass

    def limit_cpu(self) -> None:
        self.cgroup.limit_cpu(self.memory_mb)

    def peak_memory_mb(self) -> int:
        return self.peak.mb(self.memory_mb)

    def out_of_memory(self) -> bool:
        return self.cgroup.out_of_memory()

    def close(self) -> None:
        try:
            os.close(self.output_fd)
        except OSError:
            pass
        self.listener.close()
        self.peak.close()
        self.cgroup.destroy()
