"""Control groups for execution environments, on cgroup v1 hierarchies or a unified v2 tree.

One group per environment, named ``kindling/<id>``, with memory = MemorySize,
CPU proportional to memory (1,769 MB = one vCPU, as Lambda), a pids limit,
and a freezer that stops the environment between invokes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
MB_PER_VCPU = 1769
PIDS_MAX = 1024  # Lambda's per-environment process/thread limit


def version() -> int:
    """2 on a unified hierarchy, 1 where v1 controllers are mounted separately (0: none usable)."""
    if (ROOT / "cgroup.controllers").exists():
        return 2
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        return 1
    return 0


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


class Cgroup:
    """One environment's group. ``procs`` is the file a process writes itself into to join."""

    def __init__(self, name: str, create: bool = True) -> None:
        self.v = version()
        self.name = name
        self._freezer: int | None = None
        if self.v == 2:
            self.dirs = {"all": ROOT / "kindling" / name}
        else:
            self.dirs = {c: ROOT / c / "kindling" / name for c in ("memory", "cpu", "pids", "freezer")}
        if not create:
            return
        if self.v == 2:
            _enable_v2_controllers()
        for d in self.dirs.values():
            d.mkdir(parents=True)
        _write(self._file("pids", "pids.max"), str(PIDS_MAX))
        if self.v == 2:
            _write(self.dirs["all"] / "memory.swap.max", "0")
        else:
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", str(CPU_PERIOD_US))

    def _file(self, controller: str, name: str) -> Path:
        return self.dirs["all" if self.v == 2 else controller] / name

    def set_memory(self, memory_mb: int) -> None:
        """memory = MemorySize, no swapping past it; CPU in proportion, applied by ``limit_cpu``."""
        limit = str(memory_mb * 1024 * 1024)
        if self.v == 2:
            _write(self.dirs["all"] / "memory.max", limit)
        else:
            memsw = self.dirs["memory"] / "memory.memsw.limit_in_bytes"
            _write(self.dirs["memory"] / "memory.limit_in_bytes", limit)
            if memsw.exists():
                _write(memsw, limit)

    def _cpu(self, memory_mb: int) -> tuple[Path, str, str]:
        quota = max(1000, CPU_PERIOD_US * memory_mb // MB_PER_VCPU)
        if self.v == 2:
            return self.dirs["all"] / "cpu.max", f"{quota} {CPU_PERIOD_US}", f"max {CPU_PERIOD_US}"
        return self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota), "-1"

    @property
    def procs(self) -> list[str]:
        """Every cgroup.procs file a process must be written into (one per v1 hierarchy)."""
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    def limit_cpu(self, memory_mb: int, on: bool = True) -> None:
        """CPU proportional to memory; off during init, which Lambda runs at full speed."""
        path, limited, unlimited = self._cpu(memory_mb)
        _write(path, limited if on else unlimited)

    def freeze(self, frozen: bool) -> None:
        """Stop (or resume) every process in the group. The file stays open: this runs around every invoke."""
        if self._freezer is None:
            path = self.dirs["all"] / "cgroup.freeze" if self.v == 2 else self.dirs["freezer"] / "freezer.state"
            self._freezer = os.open(path, os.O_WRONLY)
        if self.v == 2:
            os.write(self._freezer, b"1" if frozen else b"0")
        else:
            os.write(self._freezer, b"FROZEN" if frozen else b"THAWED")

    def release(self) -> None:
        """Close the freezer file kept open by ``freeze`` (another process takes the group over)."""
        if self._freezer is not None:
            os.close(self._freezer)
            self._freezer = None

    def peak_memory_mb(self) -> int:
        if self.v == 2:
            peak = _read_int(self.dirs["all"] / "memory.peak") or _read_int(self.dirs["all"] / "memory.current")
        else:
            peak = _read_int(self.dirs["memory"] / "memory.max_usage_in_bytes")
        return -(-peak // (1024 * 1024))

    def out_of_memory(self) -> bool:
        """Whether the kernel's OOM killer acted in this group."""
        path = self.dirs["all"] / "memory.events" if self.v == 2 else self.dirs["memory"] / "memory.oom_control"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return False
        return any(line.startswith("oom_kill ") and int(line.split()[1]) > 0 for line in lines)

    def destroy(self) -> None:
        """Kill what is left in the group and remove it."""
        if self._freezer is not None:
            os.close(self._freezer)
            self._freezer = None
        for d in self.dirs.values():
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self._kill_all(d)
                    time.sleep(0.002)

    def _kill_all(self, d: Path) -> None:
        try:
            if self.v == 1 and (self.dirs.get("freezer") is not None):
                _write(self.dirs["freezer"] / "freezer.state", "THAWED")  # a frozen task dies only once thawed
            elif self.v == 2:
                _write(d / "cgroup.freeze", "0")
            if self.v == 2 and (d / "cgroup.kill").exists():
                _write(d / "cgroup.kill", "1")
                return
            pids = (d / "cgroup.procs").read_text().split()
        except OSError:
            return
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass

    def try_remove(self) -> bool:
        """Remove the group if nothing is left in it (not even a zombie); whether it is gone."""
        gone = True
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                gone = False
        if gone and self._freezer is not None:
            os.close(self._freezer)
            self._freezer = None
        return gone

    def kill(self) -> None:
        """Thaw and SIGKILL every process in the group (their parent still has to reap them)."""
        for d in self.dirs.values():
            self._kill_all(d)


def remove_stale(prefix: str) -> None:
    """Remove groups named ``prefix*`` that a previous Kindling on the same data dir left behind, and
    empty groups of any Kindling that are over a minute old (a Kindling killed outright leaves those)."""
    parents = [ROOT / "kindling"] if version() == 2 else [ROOT / c / "kindling" for c in ("memory", "cpu", "pids",
                                                                                          "freezer")]
    old = time.time() - 60
    for parent in parents:
        for d in parent.iterdir() if parent.exists() else ():
            if not d.is_dir():
                continue
            if d.name.startswith(prefix):
                Cgroup(d.name, create=False).destroy()
                continue
            try:
                if d.stat().st_mtime < old and not (d / "cgroup.procs").read_text().strip():
                    d.rmdir()
            except OSError:
                pass


def _enable_v2_controllers() -> None:
    parent = ROOT / "kindling"
    if not parent.exists():
        parent.mkdir()
        _write(ROOT / "cgroup.subtree_control", "+memory +cpu +pids")
        _write(parent / "cgroup.subtree_control", "+memory +cpu +pids")
