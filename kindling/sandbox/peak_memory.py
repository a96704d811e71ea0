"""REPORT's Max Memory Used: the environment's peak memory as Lambda reports it, runtime included.

Not the cgroup's memory high-water mark: that counts the page cache of /tmp (on disk, kindling.sandbox.
tmp_storage) and of every file read, and for a clone of a template or zygote it misses the pages it shares
with its template (charged to the template's cgroup: a Python clone would say 3 MB). What Lambda reports is
the memory the function's processes held: here, each process's peak resident set (``VmHWM`` in
/proc/PID/status: anonymous and mapped pages, shared ones included, never the page cache of files it only
read or wrote), summed over the processes of the environment's cgroup, and kept as the environment's
highest so far (Lambda's figure never goes down between invokes). Summed, not the largest: a function's
helper processes use memory of the environment too (a forked child's shared pages count twice, which is
why the sum is capped at MemorySize, the most the environment can hold). A process that exited between two
reports is not counted.

Cost per REPORT: two preads of files kept open (the group's process list, then each process's status),
~20 µs for the usual single runtime process.
"""

from __future__ import annotations

import os


class PeakMemory:
    def __init__(self, procs: str) -> None:
        self.procs_path = procs  # the cgroup.procs file of the environment's memory group
        self.procs = -1
        self.status: dict[int, int] = {}  # PID → its /proc/PID/status, open (a reused PID is another file)
        self.peak_kb = 0

    def mb(self, limit_mb: int) -> int:
        """The environment's peak memory so far, in MB, at most ``limit_mb``."""
        try:
            if self.procs < 0:
                self.procs = os.open(self.procs_path, os.O_RDONLY | os.O_CLOEXEC)
            pids = [int(p) for p in os.pread(self.procs, 65536, 0).split()]
        except (OSError, ValueError):
            pids = []
        total = 0
        for pid in pids:
            fd = self.status.get(pid)
            try:
                if fd is None:
                    fd = self.status[pid] = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
                total += _hwm_kb(os.pread(fd, 4096, 0))
            except OSError:
                pass
        for pid in [p for p in self.status if p not in pids]:
            os.close(self.status.pop(pid))
        self.peak_kb = max(self.peak_kb, total)
        return min(limit_mb, -(-self.peak_kb // 1024))

    def close(self) -> None:
        for fd in [self.procs, *self.status.values()]:
            if fd >= 0:
                os.close(fd)
        self.procs = -1
        self.status.clear()


def _hwm_kb(status: bytes) -> int:
    at = status.find(b"\nVmHWM:")
    if at < 0:  # a kernel thread, or a zombie
        return 0
    end = status.find(b"\n", at + 1)
    return int(status[at + 7:end].split()[0])
