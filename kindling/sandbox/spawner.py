"""The sandbox spawner: a small root process that makes isolated execution environments.

Kindling starts it once (``python -m kindling.sandbox.spawner FD``) and talks to
it over a SOCK_SEQPACKET socket: JSON messages, file descriptors alongside.
Forking this lean process costs far less than forking the server, and it keeps
a pool of *shells* ready: processes already in a fresh cgroup and in their own
mount, PID, network, IPC and UTS namespaces, with their root assembled,
loopback up and the Runtime API socket open. Those steps (joining a cgroup can
wait ~10 ms for an RCU grace period here) are off the cold-start path; a spawn
only binds the code in, mounts /tmp, pivots, drops privileges, loads seccomp
and execs.

Templates (issue 4's fast cold starts): ``{"op": "template"}`` starts an
initialized runtime in its own user namespace (where it holds the capabilities
to make namespaces, and nothing outside it); ``{"op": "clone"}`` forks an
environment from it (see kindling/runtimes/python/kindling_template.py). The
template always sits in the cgroup its next clone will get, so a clone is in
its own cgroup from its first instruction without waiting on the kernel.

Requests:  {"req": n, "op": "spawn", "argv", "env", "task_root", "memory_mb", "tmp_mb"} + [output fd]
           {"req": n, "op": "template", "template", ...as spawn} + [output fd of the template's init]
           {"req": n, "op": "clone", "template", "env", "tmp_mb"} + [output fd]
           {"req": n, "op": "drop", "template"}
Answers:   {"req": n, "ok": true, "pid", "cgroup"} + [Runtime API listener fd]  |  {"req": n, "ok": false, "error"}
Events:    {"exit": pid, "code": exit code or -signal}
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import uuid

import pyseccomp

from kindling.sandbox import linux, seccomp, verify
from kindling.sandbox.cgroups import Cgroup
from kindling.sandbox.verify import REJECTED

RUNTIME_API = ("127.0.0.1", 9001)
TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
ETC_BINDS = ("/etc/ld.so.cache", "/etc/ssl", "/etc/alternatives", "/etc/ca-certificates")
DEVICES = ("null", "zero", "full", "random", "urandom")
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nsbx_user1051:x:{uid}:{gid}::/tmp:/sbin/nologin\n"
GROUP = "root:x:0:\nsbx_user1051:x:{gid}:\n"
NS_FLAGS = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
RO = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
MSG = 1 << 16
QUIET = 0.05  # seconds without requests before preparing sandboxes ahead
CLONE_NEWUSER = 0x10000000
# CAP_SYS_ADMIN, CAP_NET_ADMIN: what a template needs, in its user namespace only, to make its clones'
# namespaces; CAP_SETPCAP so that a clone can empty its bounding set.
CAPS = (21, 12, 8)
TEMPLATE_FILTERS = 1  # seccomp filters a template's runtime starts with (its clones load the strict one on top)
SHM_MB = 64  # each environment's own /dev/shm (its pages are charged to the environment's memory)
SPARE_DEADLINE = 3.0  # seconds a template has to make a clone that passes the check
DROP_WAIT = 1.0  # seconds a zygote's clone has, after "go", to drop its privileges and pass the check
WAKE = 0.2  # seconds a frozen template is thawed for, to reap a clone that exited
CHECK_GRACE = 0.25  # seconds a clone has to pass once it said it dropped (its template's helper may be exiting)
POLL = 0.002  # how often a clone that said it dropped its privileges is looked at again until it passes
MAX_WAITERS = 1024
MAX_FAILURES = 5  # environments of one template that may exit during their set-up before it is dropped
SETUP_FAILED = b"kindling: set-up failed: "
PR_SET_KEEPCAPS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE = 8, 47, 2


class Config:
    def __init__(self, doc: dict) -> None:
        self.mount_point: str = doc["mount_point"]  # an empty directory to build roots on (in private mounts)
        self.runtime_dir: str = doc["runtime_dir"]
        self.extra_ro: list[str] = doc["extra_ro"]
        self.uid: int = doc["uid"]
        self.gid: int = doc["gid"]
        self.pool: int = doc["pool"]
        self.instance: str = doc["instance"]
        self.unmapped: int = doc.get("unmapped", 100000)  # the host uid a template's root maps to


class Shell:
    """A pre-made sandbox waiting for its runtime."""

    def __init__(self, cfg: Config, sfilter: object) -> None:
        self.id = f"{cfg.instance}-{uuid.uuid4().hex[:16]}"
        self.cgroup = Cgroup(self.id)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            _shell_main(cfg, sfilter, self.cgroup, theirs)  # never returns
        theirs.close()
        self.ctl = ours
        self.ctl.settimeout(10)
        self.pid = 0
        self.listener = -1
        while self.pid == 0 or self.listener < 0:  # the intermediate reports the PID, the shell its socket
            msg, fds, _, _ = socket.recv_fds(self.ctl, MSG, 1)
            if msg.startswith(b"pid:"):
                self.pid = int(msg[4:])
            elif msg == b"api" and fds:
                self.listener = fds[0]
            else:
                self.cgroup.destroy()
                raise OSError(msg.decode(errors="replace") or "sandbox shell died during set-up")

    def go(self, spec: dict, out_fd: int) -> None:
        self.cgroup.set_memory(int(spec["memory_mb"]))
        socket.send_fds(self.ctl, [json.dumps(spec).encode()], [out_fd])
        self.ctl.close()

    def discard(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.ctl.close()
        _close(self.listener)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _sandbox(cfg: Config, cgroup: Cgroup, ctl: socket.socket) -> str:
    """In a fresh fork: join ``cgroup``, make the namespaces, become PID 1 of the new PID namespace (the
    intermediate process reports that PID and exits) and assemble the root; returns where it is."""
    signal.set_wakeup_fd(-1)
    for path in cgroup.procs:
        with open(path, "w") as f:
            f.write("0")
    linux.unshare(NS_FLAGS)
    pid = os.fork()
    if pid:
        ctl.send(f"pid:{pid}".encode())
        os._exit(0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _assemble_root(cfg, cfg.mount_point)
    return cfg.mount_point


def _shell_main(cfg: Config, sfilter: object, cgroup: Cgroup, ctl: socket.socket) -> None:
    """Inside the fork: join the cgroup, make namespaces, assemble the root, wait, then exec the runtime."""
    try:
        root = _sandbox(cfg, cgroup, ctl)
        linux.loopback_up()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(RUNTIME_API)
        listener.listen(16)
        socket.send_fds(ctl, [b"api"], [listener.fileno()])
        listener.close()
        ctl.settimeout(None)
        msg, fds, _, _ = socket.recv_fds(ctl, MSG, 1)
        if not msg:
            os._exit(0)  # discarded before use
        spec = json.loads(msg)
        _enter(cfg, root, spec, fds[0], sfilter)
    except BaseException as exc:
        try:
            ctl.send(f"{type(exc).__name__}: {exc}".encode()[:200])
        except OSError:
            pass
        os._exit(126)


def _bind(src: str, dst: str, writable: bool = False) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    linux.mount(src, dst, None, linux.MS_BIND | linux.MS_REC)
    if not writable:
        linux.mount(src, dst, None, RO)


def _assemble_root(cfg: Config, root: str) -> None:
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
    linux.mount("tmpfs", root, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=1m,mode=0755")
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            os.symlink(os.readlink(d), root + d)
        elif os.path.isdir(d):
            _bind(d, root + d)
    for d in cfg.extra_ro:
        _bind(d, root + d)
    _bind(cfg.runtime_dir, root + RUNTIME_DIR)
    for d in ("/opt", "/etc", "/dev", "/tmp", "/proc", TASK_ROOT):
        os.makedirs(root + d, exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
                       ("resolv.conf", ""), ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")):
        with open(f"{root}/etc/{name}", "w") as f:
            f.write(text.format(uid=cfg.uid, gid=cfg.gid))
    for path in ETC_BINDS:
        if os.path.exists(path):
            _bind(path, root + path)
    linux.mount("tmpfs", root + "/dev", "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "size=64k,mode=0755")
    for dev in DEVICES:
        _bind(f"/dev/{dev}", f"{root}/dev/{dev}", writable=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/dev/shm")
    linux.mount("tmpfs", root + "/dev/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, f"size={SHM_MB}m,mode=1777")
    linux.mount("none", root + "/dev", None, RO | linux.MS_NOEXEC)  # a zygote's clones must not share a writable /dev
    linux.mount("proc", root + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


def _enter(cfg: Config, root: str, spec: dict, out_fd: int, sfilter: object) -> None:
    """Bind the code, mount /tmp, pivot into the root, become the function's user, exec the runtime."""
    _pivot(cfg, root, spec, out_fd)
    os.closerange(3, 65536)
    linux.drop_bounding_set()
    os.setgroups([])
    os.setresgid(cfg.gid, cfg.gid, cfg.gid)
    os.setresuid(cfg.uid, cfg.uid, cfg.uid)
    _exec(spec, sfilter)


def _pivot(cfg: Config, root: str, spec: dict, out_fd: int) -> None:
    _bind(spec["task_root"], root + TASK_ROOT)
    linux.mount("tmpfs", root + "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"size={int(spec['tmp_mb'])}m,mode=0700,uid={cfg.uid},gid={cfg.gid}")
    os.makedirs(root + "/.old")
    linux.pivot_root(root, root + "/.old")
    os.chdir("/")
    linux.umount("/.old", linux.MNT_DETACH)
    os.rmdir("/.old")
    linux.mount("none", "/", None, RO)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    linux.sethostname("localhost")


def _exec(spec: dict, sfilter: object) -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    sfilter.load()  # type: ignore[attr-defined]
    os.chdir(TASK_ROOT)
    try:
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        os.write(2, f"exec {spec['argv'][0]}: {exc.strerror}\n".encode())
        os._exit(126 if exc.errno == errno.EACCES else 127)


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
        self.go: tuple[int, dict] | None = None  # a zygote's clone after "go": the request to answer

    def close(self) -> None:
        _close(self.listener)
        self.listener = -1
        self.sock.close()


class Template:
    """An initialized runtime that environments of one function version are forked from.

    Tenant-controlled from its first instruction (init code runs in it, and its clones start as copies of
    it): everything it or a clone says is read without blocking, parsed strictly, and believed only as a
    hint; a clone is used only once the spawner has checked it from outside (kindling.sandbox.verify)."""

    def __init__(self, cfg: Config, tfilter: object, spec: dict, out_fd: int) -> None:
        self.cfg = cfg
        self.id = spec["template"]
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
            _template_main(cfg, tfilter, self.cgroup, theirs, spec, out_fd)  # never returns
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

    def start_spare(self, strict_bpf: str) -> Spare:
        """Ask the template for the next environment, in the cgroup it sits in (unlimited while it is made)."""
        if self.next is None:
            self.prepare_next()
        assert self.next is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        self.spare = Spare(self.next, ours, time.monotonic() + SPARE_DEADLINE)
        self.next.limit_cpu(self.memory_mb, on=False)
        self.thaw(True)
        try:
            socket.send_fds(self.ctl, [json.dumps({"tmp_mb": self.tmp_mb, "shm_mb": SHM_MB,
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

    def check(self, spare: Spare, taken: dict[str, int]) -> bool:
        """Check, from outside, every task of the spare's cgroup not checked yet; whether all passed.
        Raises Rejected once the deadline has passed (a task may still be on its way out or dropping)."""
        want = self.expected(taken)
        want.cgroup = "/kindling/" + spare.cgroup.name
        spare.deadline = min(spare.deadline, time.monotonic() + CHECK_GRACE)
        try:
            known, ns = verify.check(spare.cgroup.procs, want, spare.known)
        except verify.Rejected:
            if time.monotonic() > spare.deadline:
                raise
            return False
        except OSError as exc:
            raise verify.Rejected(f"could not check the environment: {exc}") from None
        spare.known |= known
        spare.ns |= ns
        return True

    def go(self, spare: Spare, spec: dict, out_fd: int) -> None:
        """Put a spare to use: its memory, its CPU at full speed for its init or restore, then "go"."""
        spare.cgroup.set_memory(int(spec.get("memory_mb", self.memory_mb)))
        spare.cgroup.limit_cpu(self.memory_mb, on=False)
        go_msg = {"env": spec["env"], "tmp_mb": spec["tmp_mb"]}
        if self.zygote:  # the function's code: the clone binds it from the code store, then hides the rest
            if os.path.dirname(spec["task_root"]) != self.code_root:
                raise OSError(f"{spec['task_root']} is not in the code store")
            go_msg["code"] = os.path.basename(spec["task_root"])
        try:
            socket.send_fds(spare.sock, [json.dumps(go_msg).encode()], [out_fd])
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


def _sooner(wait: float | None, other: float) -> float:
    return max(0.0, other if wait is None else min(wait, other))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _pid_one(pid: int) -> bool:
    """Whether ``pid`` is PID 1 of the innermost PID namespace it is in (NSpid's last field)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:")).split()
    except (OSError, StopIteration):
        return False
    return len(nspid) > 2 and nspid[-1] == "1"


def _exit_code(pid: int) -> int | None:
    """The exit status of a process that has exited but is not reaped yet (/proc/PID/stat's exit_code)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] != b"Z" or len(fields) < 50:
        return None
    try:
        return os.waitstatus_to_exitcode(int(fields[49]))
    except ValueError:
        return None


def _template_main(cfg: Config, tfilter: object, cgroup: Cgroup, ctl: socket.socket, spec: dict,
                   out_fd: int) -> None:
    """Inside the fork: namespaces and the root as a shell, then a user namespace, then the runtime."""
    try:
        root = _sandbox(cfg, cgroup, ctl)
        if spec.get("zygote"):  # its clones bind their own code from here and hide the rest
            _bind(spec["code_root"], root + "/var/.kindling-code")
        _pivot(cfg, root, spec, out_fd)
        # The clones' namespaces will be owned by this user namespace, where the template holds
        # CAP_SYS_ADMIN and CAP_NET_ADMIN; outside it, it is an unprivileged user like any environment.
        linux.unshare(CLONE_NEWUSER)
        ctl.send(b"maps")
        if ctl.recv(MSG) != b"ok":
            os._exit(126)
        linux.drop_bounding_set(keep=CAPS)
        keep = ctl.fileno()
        os.set_inheritable(keep, True)
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        linux.prctl(PR_SET_KEEPCAPS, 1)
        os.setgroups([])
        os.setresgid(cfg.gid, cfg.gid, cfg.gid)
        os.setresuid(cfg.uid, cfg.uid, cfg.uid)
        linux.capset(sum(1 << c for c in CAPS))
        for cap in CAPS:
            linux.prctl_ambient_raise(cap)
        mode = "_KINDLING_ZYGOTE_FD" if spec.get("zygote") else "_KINDLING_TEMPLATE_FD"
        spec = {**spec, "env": {**spec["env"], mode: str(keep)}}
        _exec(spec, tfilter)
    except BaseException as exc:
        try:
            ctl.send(SETUP_FAILED + f"{type(exc).__name__}: {exc}".encode()[:200])
        except OSError:
            pass
        os._exit(126)


class Spawner:
    def __init__(self, server: socket.socket, cfg: Config) -> None:
        self.server = server
        self.cfg = cfg
        self.filter = seccomp.build()
        self.template_filter = seccomp.build(template=True)
        # A template makes namespaces for its clones, never a user namespace: then a clone that dropped every
        # capability is as confined by the template's filter as by the strict one on top (see verify.py).
        self.template_filter.add_rule(pyseccomp.ERRNO(errno.EPERM), "unshare",
                                      pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        self.strict_bpf = seccomp.bpf(self.filter).hex()
        self.pool: list[Shell] = []
        self.templates: dict[str, Template] = {}
        self.retired: dict[str, Template] = {}  # dropped, frozen until their last clone exits
        self.rejected: dict[str, str] = {}  # template → why it was killed (asked for by the clones Kindling wants)
        self.runtimes: dict[int, Cgroup] = {}
        self.taken: dict[int, set[str]] = {}  # a live clone's host PID → its namespaces
        self.pidfds: dict[int, int] = {}  # a clone's host PID → a pidfd that says when it exits
        self.unreported: dict[int, float] = {}  # exited clones whose status their template has yet to say
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sel = selectors.DefaultSelector()
        self.last_request = 0.0
        self.leftover: list[Cgroup] = []  # groups to remove once what was in them is reaped

    def answer(self, req: int, doc: dict, fds: list[int] | None = None) -> None:
        self.notify({"req": req, **doc}, fds)

    def notify(self, doc: dict, fds: list[int] | None = None) -> None:
        try:
            socket.send_fds(self.server, [json.dumps(doc).encode()], fds or [])
        except OSError:  # Kindling has gone: so does everything it ran
            self.shutdown()
            raise SystemExit(0) from None

    def short(self) -> list[Template | None]:
        """What to prepare ahead: a template lacking its spare clone, or None for a shell."""
        out: list[Template | None] = [t for t in self.templates.values() if t.ready and t.spare is None]
        return out + [None] * (self.cfg.pool - len(self.pool))

    def fill(self) -> None:
        """Prepare one thing ahead (one at a time, so requests never wait long), once requests have
        paused: preparing competes for the CPU with the environment that was just started."""
        short = self.short()
        if not short or time.monotonic() - self.last_request < QUIET:
            return
        if short[0] is not None:
            self.begin_spare(short[0])
            return
        try:
            self.pool.append(Shell(self.cfg, self.filter))
        except Exception as exc:
            print(f"kindling spawner: could not prepare a sandbox: {exc!r}", file=sys.stderr)

    def spawn(self, spec: dict, out_fd: int) -> None:
        shell = self.pool.pop(0) if self.pool else Shell(self.cfg, self.filter)
        shell.go(spec, out_fd)
        self.runtimes[shell.pid] = shell.cgroup
        self.answer(spec["req"], {"ok": True, "pid": shell.pid, "cgroup": shell.id}, [shell.listener])
        os.close(shell.listener)

    # -- templates: everything they say is checked, nothing they do is waited on ---------------------------
    def template(self, spec: dict, out_fd: int) -> None:
        old = self.templates.pop(spec["template"], None)
        if old is not None:
            self.drop_template(old)
        t = Template(self.cfg, self.template_filter, spec, out_fd)
        self.templates[t.id] = t
        self.sel.register(t.ctl, selectors.EVENT_READ, t)

    def clone(self, spec: dict, out_fd: int) -> None:
        """Answered now from a checked spare, or once one is made and checked (or the template is rejected)."""
        t = self.templates.get(spec["template"])
        if t is None or not t.ready:
            why = self.rejected.get(spec["template"])
            raise OSError(f"template {spec['template']} {REJECTED}: {why}" if why else
                          f"no ready template {spec['template']}")
        if len(t.waiters) >= MAX_WAITERS:
            raise OSError(f"too many environments waiting for template {t.id}")
        t.waiters.append((spec, os.dup(out_fd)))
        if t.spare is None:
            self.begin_spare(t)
        elif t.spare.verified and t.spare.go is None:
            self.serve_waiter(t, t.spare)

    def begin_spare(self, t: Template) -> None:
        try:
            spare = t.start_spare(self.strict_bpf)
        except verify.Rejected as exc:
            self.reject(t, str(exc))
            return
        except OSError as exc:
            self.reject(t, f"could not make an environment: {exc}", hostile=False)
            return
        self.sel.register(spare.sock, selectors.EVENT_READ, ("clone", t, spare))

    def advance(self, t: Template, spare: Spare) -> None:
        """Take a spare one step further: out of the template's cgroup, checked, then ready or handed out."""
        if spare.host_pid and spare.ns_pid and not spare.moved:
            if not _pid_one(spare.host_pid):
                raise verify.Rejected(f"process {spare.host_pid} is not the first of its own PID namespace")
            t.clones[spare.ns_pid] = spare.host_pid
            t.made += 1
            try:
                self.pidfds[spare.host_pid] = fd = os.pidfd_open(spare.host_pid)
            except OSError as exc:
                raise verify.Rejected(f"its clone went away: {exc}") from None
            self.sel.register(fd, selectors.EVENT_READ, ("exit", t, spare.host_pid))
            t.prepare_next()  # the template leaves the spare's cgroup (frozen until it is asked again)
            spare.moved = True
        if not spare.moved or spare.verified:
            return
        if t.zygote and spare.go is None:
            spare.verified = True  # only Kindling's code has run in it so far: it is checked after it drops
        elif spare.dropped:
            spare.verified = t.check(spare, self.taken_namespaces(spare.host_pid))
        if not spare.verified:
            return
        if spare.go is not None:  # a zygote's clone, checked after it dropped: answer its request
            req, _ = spare.go
            self.hand_out(t, spare, req)
        elif not t.ready:
            t.ready = True
            self.answer(t.req, {"ok": True, "template": t.id})
        if t.spare is spare and t.waiters:
            self.serve_waiter(t, spare)

    def serve_waiter(self, t: Template, spare: Spare) -> None:
        spec, out_fd = t.waiters.pop(0)
        try:
            if not t.zygote:  # anything it forked since it was checked
                spare.deadline = 0.0
                t.check(spare, self.taken_namespaces(spare.host_pid))
            t.go(spare, spec, out_fd)
        except verify.Rejected as exc:
            self.answer(spec["req"], {"ok": False, "error": f"template {t.id} {REJECTED}: {exc}"})
            self.reject(t, str(exc))
            return
        except OSError as exc:  # not in the code store: that request fails, the spare stays
            self.answer(spec["req"], {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        finally:
            os.close(out_fd)
        if t.zygote:  # its clone binds its code and drops now: answered once it says so and passes the check
            spare.go = (spec["req"], spec)
            spare.verified = False
            spare.deadline = time.monotonic() + DROP_WAIT
            return
        self.hand_out(t, spare, spec["req"])

    def hand_out(self, t: Template, spare: Spare, req: int) -> None:
        self.sel.unregister(spare.sock)
        spare.sock.close()
        spare.cgroup.release()
        t.spare = None
        self.runtimes[spare.host_pid] = spare.cgroup
        self.taken[spare.host_pid] = spare.ns
        self.answer(req, {"ok": True, "pid": spare.host_pid, "cgroup": spare.cgroup.name}, [spare.listener])
        _close(spare.listener)
        if t.waiters:
            self.begin_spare(t)

    def taken_namespaces(self, pid: int) -> dict[str, int]:
        """The namespaces of other live clones (the check looks again at one it finds in common: the
        kernel reuses the number of a namespace that is gone)."""
        return {ns: host for host, names in self.taken.items() if host != pid for ns in names}

    def reject(self, t: Template, reason: str, hostile: bool = True) -> None:
        """Kill a template that broke the rules; cold starts of its version fall back (Templates.forget)."""
        kind = "zygote" if t.zygote else "template"
        print(f"kindling spawner: {kind} {t.id} {REJECTED if hostile else 'failed'} ({reason}): it is killed, "
              f"and cold starts of its {'runtime' if t.zygote else 'version'} start "
              f"{'fresh interpreters' if t.zygote else 'from the zygote or fresh interpreters'}",
              file=sys.stderr) if hostile or t.ready else None  # a failed init is Kindling's to report
        error = f"{kind} {t.id} {REJECTED if hostile else 'failed'}: {reason}"
        if hostile:
            self.rejected[t.id] = reason
            while len(self.rejected) > 1000:
                self.rejected.pop(next(iter(self.rejected)))
        if self.templates.get(t.id) is t:
            del self.templates[t.id]
        self.drop_template(t, error)

    def drop_template(self, t: Template, error: str = "") -> None:
        """Stop using a template: requests waiting on it fail, its spare and what its init left running are
        killed. The template itself (PID 1 of the PID namespace its clones' namespaces are nested in: they
        would die with it) stays frozen until its last clone has exited (``retired``)."""
        waiting = [spec["req"] for spec, _ in t.waiters]
        if t.spare is not None and t.spare.go is not None:
            waiting.append(t.spare.go[0])
        if not t.ready:
            waiting.append(t.req)
        for sock in (t.ctl, t.spare.sock if t.spare is not None else None):
            try:
                self.sel.unregister(sock)  # type: ignore[arg-type]
            except (KeyError, ValueError):
                pass
        live = [host for host in t.clones.values() if host in self.pidfds]
        if t.spare is not None:
            if t.spare.host_pid in live:
                live.remove(t.spare.host_pid)
            if (group := t.kill_spare(t.spare)) is not None:
                self.leftover.append(group)
            t.spare = None
        if live and t.next is not None:
            for _, fd in t.waiters:
                _close(fd)
            t.waiters.clear()
            t.cgroup.kill()
            self.leftover.append(t.cgroup)
            t.thaw(False)
            t.awake_until = 0.0
            self.retired[t.id] = t
        else:
            for group in t.discard():
                group.kill()
                self.leftover.append(group)
        for req in waiting:
            self.answer(req, {"ok": False, "error": error or f"template {t.id} was dropped"})

    def from_template(self, t: Template) -> None:
        """A template said something: ready, a clone's PID in its namespace, or a clone's exit status."""
        doc = t.message()
        if doc is None:
            return
        if t.messages > 64 + 4 * t.made:
            raise verify.Rejected("too many messages")
        if doc == b"ready":
            self.begin_spare(t)  # answered once its first clone has passed the check
        elif isinstance(doc, dict) and "cloned" in doc:
            assert t.spare is not None
            t.spare.ns_pid = doc["cloned"]
            self.advance(t, t.spare)
        elif isinstance(doc, dict):
            host = t.clones.pop(doc["exit"], 0)
            if host:
                self.exited(host, doc["code"])

    def from_clone(self, t: Template, spare: Spare) -> None:
        t.from_clone(spare)
        self.advance(t, spare)

    def clone_gone(self, t: Template, host: int) -> None:
        """A clone's pidfd: it has exited. Its status is read while it is a zombie (its template, frozen,
        has not reaped it); then the template is thawed a moment to reap it."""
        fd = self.pidfds.pop(host)
        self.sel.unregister(fd)
        os.close(fd)
        self.taken.pop(host, None)
        code = _exit_code(host)
        if code is not None:
            self.exited(host, code)
        elif host in self.runtimes:
            self.unreported[host] = time.monotonic() + WAKE
        if self.retired.get(t.id) is t:
            if not [h for h in t.clones.values() if h in self.pidfds]:  # its last clone: it can go now
                del self.retired[t.id]
                for group in t.discard():
                    group.kill()
                    self.leftover.append(group)
                return
        elif self.templates.get(t.id) is not t:
            return
        spare = t.spare
        if spare is not None and spare.host_pid == host:  # the environment being made, or set up, exited
            self.sel.unregister(spare.sock)
            if (dead := t.kill_spare(spare)) is not None:
                self.leftover.append(dead)
            t.spare = None
            t.failures += 1
            if spare.go is not None:  # e.g. its function's code was deleted meanwhile: that request fails
                self.answer(spare.go[0], {"ok": False, "error": "the environment exited during its set-up"})
            if t.failures > MAX_FAILURES:
                self.reject(t, f"{t.failures} environments exited during their set-up", hostile=False)
                return
            if t.waiters:
                self.begin_spare(t)
        if t.next is not None and (t.spare is None or t.spare.moved):
            t.thaw(True)
            t.awake_until = time.monotonic() + WAKE

    def exited(self, host: int, code: int) -> None:
        self.unreported.pop(host, None)
        if self.runtimes.pop(host, None) is not None:
            self.notify({"exit": host, "code": code})

    def tick(self) -> float | None:
        """Deadlines: spares not made or checked in time, templates to freeze again, exits not reported.
        Returns how soon to look again."""
        now, wait = time.monotonic(), None
        for t in list(self.retired.values()):
            if t.awake_until and now >= t.awake_until:
                t.awake_until = 0.0
                t.thaw(False)
            elif t.awake_until:
                wait = _sooner(wait, t.awake_until - now)
        for t in list(self.templates.values()):
            spare = t.spare
            if spare is not None and not spare.verified:
                try:
                    if now > spare.deadline and not (spare.moved and spare.dropped):  # else the check says why
                        raise verify.Rejected("no checked environment in time" if spare.go is None else
                                              "its clone did not drop its privileges in time")
                    self.advance(t, spare)
                except verify.Rejected as exc:
                    self.reject(t, str(exc))
                    continue
                except Exception as exc:  # noqa: BLE001 - that template is dropped, not the spawner
                    self.reject(t, f"{type(exc).__name__}: {exc}", hostile=False)
                    continue
                if not spare.verified:  # a clone that said it dropped is looked at often; else its deadline
                    wait = _sooner(wait, POLL if spare.dropped else spare.deadline - now)
            if t.awake_until and (t.spare is None or t.spare.moved):
                if now >= t.awake_until:
                    t.awake_until = 0.0
                    t.thaw(False)
                else:
                    wait = _sooner(wait, t.awake_until - now)
        for host, deadline in list(self.unreported.items()):
            if now >= deadline:
                self.exited(host, -signal.SIGKILL)  # its template did not say: reported as killed
            else:
                wait = _sooner(wait, deadline - now)
        return wait

    def request(self) -> bool:
        self.last_request = time.monotonic()
        try:
            msg, fds, _, _ = socket.recv_fds(self.server, MSG, 2)
        except OSError:  # reset: Kindling was killed with requests unread
            msg, fds = b"", []
        if not msg:  # Kindling has gone: so does everything it ran
            self.shutdown()
            return False
        spec = json.loads(msg)
        try:
            if spec["op"] == "spawn":
                self.spawn(spec, fds[0])
            elif spec["op"] == "template":
                self.template(spec, fds[0])
            elif spec["op"] == "clone":
                self.clone(spec, fds[0])
            elif spec["op"] == "drop":
                t = self.templates.pop(spec["template"], None)
                if t is not None:
                    self.drop_template(t)
                self.rejected.pop(spec["template"], None)
                self.answer(spec["req"], {"ok": True})
        except Exception as exc:  # answered as an error; the spawner goes on
            self.answer(spec["req"], {"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            if spec["op"] in ("spawn", "clone"):
                for fd in fds:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        return True

    def shutdown(self) -> None:
        """Kill everything this spawner made, reap it, and only then remove the cgroups (a cgroup with
        a zombie in it cannot be removed)."""
        groups = list(self.runtimes.values()) + [shell.cgroup for shell in self.pool] + self.leftover
        for t in list(self.templates.values()) + list(self.retired.values()):
            groups += t.discard()
        for shell in self.pool:
            shell.discard()
        for cgroup in groups:
            cgroup.kill()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.005)
        for cgroup in groups:
            cgroup.destroy()

    def reap(self) -> None:
        self.leftover = [g for g in self.leftover if not g.try_remove()]
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.runtimes:
                self.exited(pid, os.waitstatus_to_exitcode(status))

    def run(self) -> None:
        self.sel.register(self.server, selectors.EVENT_READ, "server")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.fill()
        while True:
            try:
                wait = self.tick()
            except Exception as exc:  # noqa: BLE001 - a bug here must not stop every cold start
                print(f"kindling spawner: {exc!r}; it goes on", file=sys.stderr)
                wait = 0.1
            if self.short():
                ahead = max(0.0, QUIET - (time.monotonic() - self.last_request))
                wait = ahead if wait is None else min(wait, ahead)
            if self.leftover:
                wait = 0.1 if wait is None else min(wait, 0.1)
            for key, _ in self.sel.select(timeout=wait):
                if key.data == "signal":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                    self.reap()
                elif key.data == "server":
                    if not self.request():
                        return
                else:
                    self.event(key.data)
            self.reap()
            self.fill()

    def event(self, data: Template | tuple) -> None:
        """Something from a template or one of its clones; one template's trouble never stops the spawner."""
        t: Template = data if isinstance(data, Template) else data[1]
        try:
            if isinstance(data, Template):
                self.from_template(data)
            elif data[0] == "clone":
                if self.templates.get(t.id) is t and t.spare is not None and t.spare is data[2]:
                    self.from_clone(t, t.spare)
            else:
                self.clone_gone(t, data[2])
        except verify.Rejected as exc:
            if self.templates.get(t.id) is t:
                self.reject(t, str(exc))
        except Exception as exc:  # noqa: BLE001 - anything else: that template is dropped, not the spawner
            if self.templates.get(t.id) is t:
                self.reject(t, f"{type(exc).__name__}: {exc}", hostile=False)


def main() -> None:
    server = socket.socket(fileno=int(sys.argv[1]))
    msg = server.recv(MSG)
    Spawner(server, Config(json.loads(msg))).run()


if __name__ == "__main__":
    main()
