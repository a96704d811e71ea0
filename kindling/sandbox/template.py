"""Templates, and the spare clones they make ahead of need (issue 4's fast cold starts).

``{"op": "template"}`` starts an initialized runtime in its own user namespace
(where it holds the capabilities to make namespaces, and nothing outside it);
``{"op": "clone"}`` forks an environment from it (see
kindling/runtimes/python/kindling_template.py). The template always sits in the
cgroup its next clone will get, so a clone is in its own cgroup from its first
instruction without waiting on the kernel. Everything a template or a clone says
is parsed here strictly; the spawner (kindling.sandbox.spawner) decides what to
do with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
import uuid
from collections.abc import Callable

from kindling.sandbox import layout, linux, verify
from kindling.sandbox.cgroups import Cgroup
from kindling.sandbox.shell import MSG, SHM_MB, Config, _bind, _close, _exec, _pivot, _sandbox

CLONE_NEWUSER = 0x10000000
# CAP_SYS_ADMIN, CAP_NET_ADMIN: what a template needs, in its user namespace only, to make its clones'
# namespaces; CAP_SETPCAP so that a clone can empty its bounding set.
CAPS = (21, 12, 8)
TEMPLATE_FILTERS = 1  # seccomp filters a template's runtime starts with (its clones load the strict one on top)
SPARE_DEADLINE = 3.0  # seconds a template has to make a clone that passes the check
CHECK_GRACE = 0.25  # seconds a clone has to pass once it said it dropped (its template's helper may be exiting)
SETUP_FAILED = b"kindling: set-up failed: "
PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 47, 2
TEMPLATE_FD, ZYGOTE_FD = 3, 4  # where a template's (or a zygote's) runtime finds its control socket


class Spare:
    """A clone being made ahead of need, then waiting for "go" (a zygote's clone also while it drops)."""

    def __init__(self, cgroup: Cgroup, sock: socket.socket, deadline: float) -> None:
        self.cgroup = cgroup
        self.sock = sock  # to the clone: "api" (+ its socket and credentials), "dropped"; then "go"
        self.deadline = deadline  # to be made, checked, or (a zygote's) dropped after "go"
        self.host_pid = 0
        self.ns_pid = 0  # as the template names it
        self.listener = -1
        self.dropped = False
        self.moved = False  # the template has left its cgroup
        self.verified = False
        self.known: set[int] = set()  # tasks that passed the check
        self.ns: set[str] = set()  # their namespaces
        self.net = ""  # the network namespace the spawner configured (every task must be in it)
        self.go: tuple[int, dict] | None = None  # a zygote's clone after "go": the request to answer
        self.tmp_fd = -1  # a template's clone: its /tmp, attached by the spawner once it knows its PID

    def close(self) -> None:
        _close(self.listener)
        self.listener = -1
        _close(self.tmp_fd)
        self.tmp_fd = -1
        self.sock.close()


class Template:
    """An initialized runtime that environments of one function version are forked from.

    Tenant-controlled from its first instruction (init code runs in it, and its clones start as copies of
    it): everything it or a clone says is read without blocking, parsed strictly, and believed only as a
    hint; a clone is used only once the spawner has checked it from outside (kindling.sandbox.verify)."""

    def __init__(self, cfg: Config, tfilter: object, spec: dict, out_fd: int,
                 network: Callable[[int], None] = lambda pid: None, tmp_fd: int = -1) -> None:
        self.cfg = cfg
        self.id = spec["template"]
        self.egress: list[dict] | None = spec.get("egress")  # its version's egress rules (a VPC function)
        self.zygote = bool(spec.get("zygote"))  # taken before init: clones get their function at "go"
        self.code_root = os.path.dirname(spec.get("code_root", "") + "/")
        self.memory_mb = int(spec["memory_mb"])
        self.req = spec["req"]  # answered when the template is ready
        self.cgroup = Cgroup(f"{cfg.instance}-{uuid.uuid4().hex[:16]}")
        self.cgroup.set_memory(self.memory_mb)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _template_main(cfg, tfilter, self.cgroup, theirs, spec, out_fd, tmp_fd)  # never returns
        theirs.close()
        os.close(out_fd)
        self.ctl = ours
        self.ctl.settimeout(10)  # the set-up below is the spawner's own code, before the runtime's exec
        try:
            msg = self.ctl.recv(MSG)
            if not msg.startswith(b"pid:"):
                raise OSError(msg.decode(errors="replace") or "template set-up failed")
            self.pid = int(msg[4:])
            msg = self.ctl.recv(MSG)
            if msg != b"maps":
                raise OSError(msg.decode(errors="replace") or "template set-up failed")
            with open(f"/proc/{self.pid}/uid_map", "w") as f:
                f.write(f"0 {cfg.unmapped} 1\n{cfg.uid} {cfg.uid} 1\n")
            with open(f"/proc/{self.pid}/gid_map", "w") as f:
                f.write(f"0 {cfg.unmapped} 1\n{cfg.gid} {cfg.gid} 1\n")
            network(self.pid)  # its veth and Runtime API address, before its init runs
            self.ctl.send(b"ok")
        except BaseException:
            self.cgroup.destroy()
            self.ctl.close()
            raise
        self.ctl.setblocking(False)  # from here on, the runtime (and init code) answers
        self.ready = False
        self.next: Cgroup | None = None  # the cgroup the template sits in: its next clone's
        self.clones: dict[int, int] = {}  # PID in the template's namespace → host PID
        self.tmp_mb = int(spec["tmp_mb"])
        self.spare: Spare | None = None
        self.waiters: list[tuple[dict, int]] = []  # clone requests waiting for a spare
        self.want: verify.Expected | None = None
        self.awake_until = 0.0  # thawed until then so that it reaps an exited clone
        self.messages = 0
        self.failures = 0
        self.made = 0  # clones made: each explains a message or two

    def expected(self, taken: dict[str, int]) -> verify.Expected:
        if self.want is None:
            self.want = verify.Expected(uid=self.cfg.uid, gid=self.cfg.gid, filters=TEMPLATE_FILTERS + 1, cgroup="",
                                        template_ns=verify.namespaces(self.pid),
                                        template_dev=verify.devices(self.pid), v2=self.cgroup.v == 2)
        self.want.taken = taken
        return self.want

    def prepare_next(self) -> None:
        """Move the template into the cgroup its next clone will have (off the cold-start path), frozen and
        CPU-limited there until it is asked for a clone. What it forked (during init) stays behind, frozen."""
        first = self.next is None
        self.next = Cgroup(f"{self.cfg.instance}-{uuid.uuid4().hex[:16]}")
        self.next.set_memory(self.memory_mb)
        self.next.limit_cpu(self.memory_mb)
        self.next.freeze(True)  # a task moved into a frozen group is frozen
        for path in self.next.procs:
            with open(path, "w") as f:
                f.write(str(self.pid))
        if first:  # init's leftovers: frozen and limited for good (killed with the template)
            self.cgroup.limit_cpu(self.memory_mb)
            self.cgroup.freeze(True)

    def thaw(self, on: bool) -> None:
        assert self.next is not None
        try:
            self.next.freeze(not on)
        except OSError as exc:  # its group is gone: so is the template
            print(f"kindling spawner: template {self.id}: could not {'thaw' if on else 'freeze'} it: {exc}",
                  file=sys.stderr)

    def kill_spare(self, spare: Spare) -> Cgroup | None:
        """Kill a spare; returns its group to remove, unless it is still the template's own (the spare was
        being made: then only what is in the group besides the template is killed)."""
        spare.close()
        if spare.moved or spare.cgroup is not self.next:
            spare.cgroup.kill()
            return spare.cgroup
        for pid in verify.tasks(spare.cgroup.procs):
            if pid != self.pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return None

    def start_spare(self, strict_bpf: str, tmp_fd: int = -1) -> Spare:
        """Ask the template for the next environment, in the cgroup it sits in (unlimited while it is made).
        ``tmp_fd``: the clone's /tmp (kindling.sandbox.tmp_storage), attached by the spawner from outside once
        the clone is made (never handed to the template); -1: the clone mounts a tmpfs itself."""
        if self.next is None:
            self.prepare_next()
        assert self.next is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        self.spare = Spare(self.next, ours, time.monotonic() + SPARE_DEADLINE)
        self.spare.tmp_fd = tmp_fd
        self.next.limit_cpu(self.memory_mb, on=False)
        self.thaw(True)
        try:
            socket.send_fds(self.ctl, [json.dumps({"tmp_mb": self.tmp_mb, "shm_mb": SHM_MB, "tmp_outside": tmp_fd >= 0,
                                                   "seccomp": strict_bpf}).encode()], [theirs.fileno()])
        except BlockingIOError:
            raise verify.Rejected("it does not read its socket") from None
        finally:
            theirs.close()
        return self.spare

    def from_clone(self, spare: Spare) -> None:
        """The clone said something: "api" once (with its socket and credentials), then "dropped"."""
        try:
            msg, anc, flags, _ = spare.sock.recvmsg(MSG, socket.CMSG_SPACE(4) + socket.CMSG_SPACE(12))
        except BlockingIOError:
            return
        except OSError:
            msg, anc, flags = b"", [], 0
        fds, creds = [], b""
        for _level, kind, data in anc:
            if kind == socket.SCM_RIGHTS:
                fds += list(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
            elif kind == socket.SCM_CREDENTIALS:
                creds = data[:12]
        if msg == b"api" and not spare.host_pid and len(fds) == 1 and len(creds) == 12 and not flags:
            spare.host_pid = struct.unpack("iII", creds)[0]
            spare.listener = fds[0]
            return
        for fd in fds:
            os.close(fd)
        if msg == b"dropped" and spare.host_pid and not spare.dropped and (not self.zygote or spare.go):
            spare.dropped = True
            return
        if not msg and not flags and spare.dropped:
            return  # it closed its end: the check (or the deadline) decides
        raise verify.Rejected(f"unexpected message from a clone: {msg[:40]!r}" if msg else "a clone went away")

    def message(self) -> dict | bytes | None:
        """One message from the template, strictly parsed: b"ready", {"cloned": PID} or {"exit": PID,
        "code": int}; None if there is none yet. Anything else ends the template."""
        try:
            msg, _, flags, _ = self.ctl.recvmsg(MSG)
        except BlockingIOError:
            return None
        except OSError:
            msg, flags = b"", 0
        if not msg:
            raise OSError("it exited" if self.ready else "its init failed")
        if msg.startswith(SETUP_FAILED) and not self.ready and self.spare is None:
            raise OSError(msg[len(SETUP_FAILED):].decode(errors="replace"))
        self.messages += 1
        if msg == b"ready" and not self.ready and self.spare is None:
            return msg
        try:
            doc = json.loads(msg) if not flags and len(msg) < 200 else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and set(doc) == {"cloned"} and _is_int(doc["cloned"]) and doc["cloned"] > 0:
            if self.spare is not None and not self.spare.ns_pid and self.spare.go is None:
                return doc
        elif isinstance(doc, dict) and set(doc) == {"exit", "code"} and _is_int(doc["exit"]) \
                and _is_int(doc["code"]) and -64 < doc["code"] < 256:
            return doc
        raise verify.Rejected(f"unexpected message from the template: {msg[:40]!r}")

    def check(self, spare: Spare, taken: dict[str, int], again: bool = False) -> bool:
        """Check, from outside, every task of the spare's cgroup not checked yet; whether all passed.
        Raises Rejected once the deadline has passed (a task may still be on its way out or dropping).

        ``again``: the spare passed once; only tasks that appeared since are looked for, in one hierarchy. A
        checked task cannot change its groups (no cgroupfs in view, no capability), so every task that appears
        later is a descendant of checked ones, in the same group of every hierarchy. (Reading one tasks file
        instead of four keeps this look on the cold-start path to a few µs.)"""
        want = self.expected(taken)
        want.cgroup = "/kindling/" + spare.cgroup.name
        want.net = spare.net
        spare.deadline = min(spare.deadline, time.monotonic() + CHECK_GRACE)
        procs = spare.cgroup.procs[:1] if again else spare.cgroup.procs
        try:
            known, ns = verify.check(procs, want, spare.known)
        except verify.Rejected:
            if time.monotonic() > spare.deadline:
                raise
            return False
        except OSError as exc:
            raise verify.Rejected(f"could not check the environment: {exc}") from None
        spare.known |= known
        spare.ns |= ns
        return True

    def go(self, spare: Spare, spec: dict, out_fd: int, tmp_fd: int = -1) -> None:
        """Put a spare to use: its memory, its CPU at full speed for its init or restore, then "go".
        ``tmp_fd``: a zygote's clone's /tmp (it attaches it before any of its function's code runs)."""
        spare.cgroup.set_memory(int(spec.get("memory_mb", self.memory_mb)))
        spare.cgroup.limit_cpu(self.memory_mb, on=False)
        go_msg = {"env": spec["env"], "tmp_mb": spec["tmp_mb"]}
        if self.zygote:  # the function's code: the clone binds it from the code store, then hides the rest
            if os.path.dirname(spec["task_root"]) != self.code_root:
                raise OSError(f"{spec['task_root']} is not in the code store")
            go_msg["code"] = os.path.basename(spec["task_root"])
        try:
            socket.send_fds(spare.sock, [json.dumps(go_msg).encode()], [out_fd] if tmp_fd < 0 else [out_fd, tmp_fd])
        except OSError as exc:
            raise verify.Rejected(f"could not start a clone: {exc}") from None

    def discard(self) -> list[Cgroup]:
        try:
            os.kill(self.pid, signal.SIGKILL)  # PID 1 of its namespace: its clones go with it (once thawed)
        except ProcessLookupError:
            pass
        try:
            self.ctl.close()
        except OSError:
            pass
        groups = [self.cgroup, self.next]
        if self.spare is not None:
            self.spare.close()
            if self.spare.cgroup is not self.next:
                groups.append(self.spare.cgroup)
        for _, fd in self.waiters:
            _close(fd)
        self.waiters.clear()
        return [g for g in groups if g is not None]  # removed once their processes are reaped



def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)



def _template_main(cfg: Config, tfilter: object, cgroup: Cgroup, ctl: socket.socket, spec: dict,
                   out_fd: int, tmp_fd: int = -1) -> None:
    """Inside the fork: namespaces and the root as a shell, then a user namespace, then the runtime."""
    try:
        root = _sandbox(cfg, cgroup, ctl)
        if spec.get("zygote"):  # its clones bind their own code from here and hide the rest
            _bind(spec["code_root"], root + "/var/.kindling-code")
        _pivot(cfg, root, spec, out_fd, tmp_fd)
        # The clones' namespaces will be owned by this user namespace, where the template holds
        # CAP_SYS_ADMIN and CAP_NET_ADMIN; outside it, it is an unprivileged user like any environment.
        linux.unshare(CLONE_NEWUSER)
        ctl.send(b"maps")
        if ctl.recv(MSG) != b"ok":
            os._exit(126)
        linux.drop_bounding_set(keep=CAPS)
        # The runtime finds its control socket at a fixed descriptor, which also says what it is (no variable:
        # the function's code must see none of Kindling's own).
        keep = ZYGOTE_FD if spec.get("zygote") else TEMPLATE_FD
        fd = ctl.detach()
        if fd != keep:
            os.dup2(fd, keep)
            os.close(fd)
        ctl = socket.socket(fileno=keep)
        os.set_inheritable(keep, True)
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        layout.set_limits()
        linux.prctl(PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(cfg.gid, cfg.gid, cfg.gid)
        os.setresuid(cfg.uid, cfg.uid, cfg.uid)
        linux.capset(sum(1 << c for c in CAPS))
        for cap in CAPS:
            linux.prctl_ambient_raise(cap)
        _exec(spec, tfilter)
    except BaseException as exc:
        try:
            ctl.send(SETUP_FAILED + f"{type(exc).__name__}: {exc}".encode()[:200])
        except OSError:
            pass
        os._exit(126)
