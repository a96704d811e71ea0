"""The spawner's check of a cloned environment, made from outside it before it gets its first invoke.

A clone of a template or zygote sets itself up (namespaces, mounts, privilege drop, seccomp) with code
that runs in a process tenant code may have rewritten, so none of that is believed: the spawner reads,
for every task in the environment's cgroup, what the kernel says about it in /proc. Capabilities
dropped from the bounding set, no_new_privs and seccomp filters can never be regained, so a task that
passes once stays safe, and so do the tasks it forks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

NAMESPACES = ("pid", "mnt", "net", "ipc", "uts")
CONTROLLERS = {"memory", "cpu", "pids", "freezer"}  # the v1 hierarchies an environment's group is made in
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
# What the spawner says in an answer when a clone failed this check; the server counts these.
REJECTED = "rejected by the spawner's check"


class Rejected(Exception):
    """A clone that must never be handed to Kindling."""


def namespaces(pid: int, names: tuple[str, ...] = NAMESPACES + ("user",)) -> dict[str, str]:
    return {name: os.readlink(f"/proc/{pid}/ns/{name}") for name in names}


def devices(pid: int, paths: tuple[str, ...] = ("/tmp", "/dev/shm")) -> dict[str, int]:
    """The filesystem (st_dev) behind each writable path, as the task sees it."""
    return {p: os.stat(f"/proc/{pid}/root{p}").st_dev for p in paths}


@dataclass
class Expected:
    uid: int
    gid: int
    filters: int  # seccomp filters: the template's own and the strict one on top
    cgroup: str  # the group's path in every hierarchy, e.g. /kindling/<name>
    template_ns: dict[str, str]  # a clone shares only the user namespace with its template
    template_dev: dict[str, int]  # and none of its writable filesystems
    v2: bool = False  # a unified hierarchy: the group is the "0::" line
    taken: dict[str, int] = field(default_factory=dict)  # namespaces of other live environments → one's PID
    net: str = ""  # the network namespace the spawner gave its interface to (kindling.network.plane), if known


def tasks(procs_files: list[str]) -> set[int]:
    """Every thread of every process in the group (the union over v1 hierarchies)."""
    out: set[int] = set()
    for path in procs_files:
        threads = os.path.join(os.path.dirname(path), "tasks")
        if not os.path.exists(threads):
            threads = os.path.join(os.path.dirname(path), "cgroup.threads")
        with open(threads) as f:
            out.update(int(x) for x in f.read().split())
    return out


def check_task(tid: int, want: Expected) -> dict[str, str] | None:
    """Raise Rejected unless ``tid`` is as ``want`` says; its namespaces, or None for a zombie (it runs
    no code; its parent reaps it)."""
    try:
        with open(f"/proc/{tid}/status") as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        ns = namespaces(tid)
        dev = devices(tid)
        with open(f"/proc/{tid}/cgroup") as f:
            groups = [line.split(":", 2) for line in f.read().splitlines()]
    except (FileNotFoundError, ProcessLookupError):
        return None  # gone since the group was listed
    if status.get("State", "").strip().startswith(("Z", "X")):
        return None
    ids = f"{want.uid}\t{want.uid}\t{want.uid}\t{want.uid}"
    gids = f"{want.gid}\t{want.gid}\t{want.gid}\t{want.gid}"
    problems = [name for name in CAP_FIELDS if int(status.get(name, "1"), 16) != 0]
    if status.get("NoNewPrivs", "").strip() != "1":
        problems.append("NoNewPrivs")
    if status.get("Seccomp", "").strip() != "2" or status.get("Seccomp_filters", "").strip() != str(want.filters):
        problems.append("Seccomp")
    if status.get("Uid", "").strip() != ids or status.get("Gid", "").strip() != gids:
        problems.append("Uid/Gid")
    if status.get("Groups", "").strip():
        problems.append("Groups")
    if ns["user"] != want.template_ns["user"]:
        problems.append("user namespace")
    problems += [f"{name} namespace" for name in NAMESPACES
                 if ns[name] == want.template_ns[name] or _still(want.taken.get(ns[name]), name, ns[name])]
    if want.net and ns["net"] != want.net:
        problems.append("network namespace (not the one the spawner configured)")
    problems += [path for path, dev_id in dev.items() if dev_id == want.template_dev.get(path)]
    problems += [f"cgroup {ctl or 'v2'}" for _, ctl, path in groups
                 if (set(ctl.split(",")) & CONTROLLERS if ctl else want.v2) and path != want.cgroup]
    if problems:
        raise Rejected(f"task {tid}: " + ", ".join(problems))
    return ns


def _still(pid: int | None, name: str, ns: str) -> bool:
    """Whether process ``pid`` is still in namespace ``ns``."""
    try:
        return pid is not None and os.readlink(f"/proc/{pid}/ns/{name}") == ns
    except OSError:
        return False


def check(procs_files: list[str], want: Expected, known: set[int]) -> tuple[set[int], set[str]]:
    """Check every task of the group not in ``known``; returns the tasks checked now and their namespaces.

    Raises Rejected if one fails, or if the group is empty (the clone died)."""
    found = tasks(procs_files)
    if not found:
        raise Rejected("no task left in the environment's cgroup")
    ns_ids: set[str] = set()
    for tid in found - known:
        ns = check_task(tid, want)
        if ns is not None:
            ns_ids.update(ns[name] for name in NAMESPACES)
    return found, ns_ids
