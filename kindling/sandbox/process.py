"""The process sandbox backend: an execution environment's process tree.

The runtime runs in its own session and process group (so the whole tree is
signalled at once), with stdin closed and stdout+stderr on one pipe (so the log
keeps the order the function wrote in). Its exit is watched through a pidfd,
which needs no SIGCHLD handler and no polling.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable


class SandboxProcess:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str) -> None:
        read_fd, write_fd = os.pipe()
        try:
            self.popen = subprocess.Popen(
                argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                start_new_session=True, close_fds=True)
        except OSError:
            os.close(read_fd)
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

    def peak_rss_mb(self) -> int:
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
