"""Sandbox backends: how an execution environment's process tree is made.

``isolated`` (namespaces, cgroups, private root, unprivileged user, seccomp)
is the default where Kindling runs as root with cgroups; ``process`` runs the
runtime as a plain child process and is what is left without privileges.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kindling.sandbox import cgroups

log = logging.getLogger("kindling.sandbox")


class Sandbox(Protocol):
    pid: int
    output_fd: int
    listener: socket.socket  # the Runtime API's listening socket, reachable only from inside
    runtime_api: str  # AWS_LAMBDA_RUNTIME_API as the runtime sees it
    returncode: int | None

    def watch(self, loop: asyncio.AbstractEventLoop, on_exit: Callable[[int], None]) -> None: ...
    def signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def freeze(self, frozen: bool) -> None: ...
    def limit_cpu(self) -> None: ...
    def out_of_memory(self) -> bool: ...
    def peak_memory_mb(self) -> int: ...
    def close(self) -> None: ...


class Backend(Protocol):
    name: str
    task_root: str | None  # where the code is seen inside; None: at its host path
    runtime_dir: str
    lang_dir: str | None  # where the interpreter's prefix is seen inside (/var/lang); None: at its host path
    system_root: str | None  # custom runtimes' minimal system root (kindling.runtimes.system_root), if any

    async def spawn(self, env_id: str, argv: list[str], env: dict[str, str], host_task_root: str, memory_mb: int,
                    tmp_mb: int, egress: list[dict] | None = None, layout: dict | None = None) -> Sandbox: ...

    def close(self) -> None: ...


def missing_for_isolation() -> list[str]:
    """Why this host cannot isolate environments (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not running as root (namespaces, mounts and cgroups need it)")
    if cgroups.version() == 0:
        missing.append("no usable cgroup hierarchy under /sys/fs/cgroup")
    try:
        import pyseccomp  # noqa: F401
    except (ImportError, OSError):
        missing.append("libseccomp is not available")
    return missing


def make_backend(mode: str, data_dir: Path, runtime_dir: str, interpreter_prefixes: list[str],
                 uid: int, gid: int, pool: int, network: str = "none",
                 exposed: dict[int, tuple[str, int]] | None = None,
                 system_root: Callable[[], str | None] = lambda: None) -> Backend:
    from kindling.sandbox.process import ProcessBackend

    if mode == "process":
        log.warning("sandbox=process: execution environments are NOT isolated from each other or the host")
        return ProcessBackend(runtime_dir)
    missing = missing_for_isolation()
    if missing:
        if mode == "isolated":
            raise SystemExit("sandbox=isolated is not possible here: " + "; ".join(missing))
        log.warning("Execution environments are NOT isolated: %s. Not in force: namespaces, private root, "
                    "cgroup limits (memory, CPU, pids), freezing between invokes, seccomp, unprivileged user.",
                    "; ".join(missing))
        return ProcessBackend(runtime_dir)
    from kindling.network.plane import MODES, unavailable
    from kindling.sandbox.isolated import IsolatedBackend

    if network not in MODES:
        raise SystemExit(f"network={network!r}: choose one of {', '.join(MODES)}")
    why = unavailable() if network != "none" else ""
    if why:
        log.warning("network=%s is not possible here (%s): execution environments get loopback and their "
                    "Runtime API only (network=none)", network, why)
        network = "none"
    return IsolatedBackend(data_dir, runtime_dir, interpreter_prefixes, uid, gid, pool, network, exposed,
                           system_root())
