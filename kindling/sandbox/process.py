"""The process sandbox backend: an execution environment's process tree, without isolation.

Used where Kindling cannot isolate (not root, no cgroups) or when asked to.
The runtime runs in its own session and process group (so the whole tree is
signalled at once), with stdin closed and stdout+stderr on one pipe (so the log
keeps the order the function wrote in). Its exit is watched through a pidfd,
which needs no SIGCHLD handler and no polling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from collections.abc import Callable


class ProcessBackend:
    name = "process"
    task_root: str | None = None  # the host path: environments see the host's file system
    lang_dir: str | None = None  # interpreters at their host paths too
    system_root: str | None = None

    def __init__(self, host_runtime_dir: str) -> None:
        self.runtime_dir = host_runtime_dir

    async def spawn(self, env_id: str, argv: list[str], env: dict[str, str], host_task_root: str, memory_mb: int,
                    tmp_mb: int, egress: list[dict] | None = None, layout: dict | None = None) -> ProcessSandbox:
        # The host's network as it is: no plane, no egress rules (``egress`` is not enforced here).
        return ProcessSandbox(argv, env, host_task_root)

    def close(self) -> None:
        pass


class ProcessSandbox:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        host, port = self.listener.getsockname()
        self.runtime_api = f"{host}:{port}"
        env = {**env, "AWS_LAMBDA_RUNTIME_API": self.runtime_api}
        read_fd, write_fd = os.pipe()
        try:
            self.popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                start_new_session=True, close_fds=True)
        except OSError:
            os.close(read_fd)
            self.listener.close()
            raise
        finally:
            os.close(write_fd)
        self.pid = self.popen.pid
        self.output_fd = read_fd
        os.set_blocking(read_fd, False)
        self.pidfd = os.pidfd_open(self.pid)
        self.returncode: int | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int], None]) -> None:
        def ready() -> None:
            loop.remove_reader(self.pidfd)
            self.returncode = self.popen.wait()
            on_exit(self.returncode)
        loop.add_reader(self.pidfd, ready)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def freeze(self, frozen: bool) -> None:
        """Not available without cgroups: idle environments keep their CPU."""

    def limit_cpu(self) -> None:
        """Not available without cgroups."""

    def out_of_memory(self) -> bool:
        return False

    def peak_memory_mb(self) -> int:
        """Peak resident memory of the runtime process (VmHWM), in MB."""
        try:
            with open(f"/proc/{self.pid}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"VmHWM:"):
                        return int(line.split()[1]) // 1024 + 1
        except OSError:
            pass
        return 0

    def close(self) -> None:
        for fd in (self.output_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.listener.close()
