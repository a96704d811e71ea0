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

from kindling.sandbox import linux, seccomp
from kindling.sandbox.cgroups import Cgroup

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
CAPS = (21, 12)  # CAP_SYS_ADMIN, CAP_NET_ADMIN: what a template needs, in its user namespace only
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
    linux.mount("tmpfs", root + "/dev/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64m,mode=1777")
    linux.mount("proc", root + "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)


def _enter(cfg: Config, root: str, spec: dict, out_fd: int, sfilter: object) -> None:
    """Bind the code, mount /tmp, pivot into the root, become the function's user, exec the runtime."""
    _pivot(cfg, root, spec, out_fd)
    os.closerange(3, 65536)
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


class Template:
    """An initialized runtime that environments of one function version are forked from."""

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
        self.ctl.settimeout(10)
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
        self.ready = False
        self.next: Cgroup | None = None
        self.clones: dict[int, int] = {}  # PID in the template's namespace → host PID
        self.exits: list[dict] = []  # clone exits read while waiting for something else
        self.tmp_mb = int(spec["tmp_mb"])
        self.spare: tuple[int, int, Cgroup, socket.socket] | None = None

    def prepare_next(self) -> None:
        """Move the template into the cgroup its next clone will have (off the cold-start path)."""
        self.next = Cgroup(f"{self.cfg.instance}-{uuid.uuid4().hex[:16]}")
        self.next.set_memory(self.memory_mb)
        for path in self.next.procs:
            with open(path, "w") as f:
                f.write(str(self.pid))

    def make_spare(self, strict_bpf: str) -> None:
        """Fork the next environment ahead of need: set up, in its own cgroup, waiting for "go"."""
        if self.next is None:
            self.prepare_next()
        assert self.next is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.settimeout(10)
        try:
            socket.send_fds(self.ctl, [json.dumps({"tmp_mb": self.tmp_mb, "seccomp": strict_bpf}).encode()],
                            [theirs.fileno()])
            theirs.close()
            msg, anc, _, _ = ours.recvmsg(MSG, socket.CMSG_SPACE(4) + socket.CMSG_SPACE(12))
            fds, host_pid = [], 0
            for _level, kind, data in anc:
                if kind == socket.SCM_RIGHTS:
                    fds = list(struct.unpack(f"{len(data) // 4}i", data[: len(data) // 4 * 4]))
                elif kind == socket.SCM_CREDENTIALS:
                    host_pid = struct.unpack("iII", data[:12])[0]
            if msg != b"api" or not fds or not host_pid:
                for fd in fds:
                    os.close(fd)
                raise OSError("the template could not make an environment")
            while True:  # the template names the clone's PID in its own namespace
                doc = json.loads(self.ctl.recv(MSG) or b"{}")
                if "cloned" in doc:
                    self.clones[doc["cloned"]] = host_pid
                    break
                if "exit" in doc:
                    self.exits.append(doc)
                else:
                    raise OSError("the template went away while making an environment")
        except BaseException:
            ours.close()
            raise
        self.spare = (host_pid, fds[0], self.next, ours)
        self.next = None
        self.prepare_next()  # the template leaves the spare's cgroup at once: freezing it must not stop us

    def clone(self, spec: dict, out_fd: int, strict_bpf: str) -> tuple[int, int, Cgroup]:
        """Put the spare environment to use (making one first if there is none)."""
        if self.spare is None:
            self.make_spare(strict_bpf)
        assert self.spare is not None
        host_pid, listener, cgroup, go = self.spare
        self.spare = None
        fds = [out_fd]
        try:
            cgroup.set_memory(int(spec.get("memory_mb", self.memory_mb)))
            go_msg = {"env": spec["env"], "tmp_mb": spec["tmp_mb"]}
            if self.zygote:  # the function's code: the clone binds it from the code store, then hides the rest
                if os.path.dirname(spec["task_root"]) != self.code_root:
                    raise OSError(f"{spec['task_root']} is not in the code store")
                go_msg["code"] = os.path.basename(spec["task_root"])
            socket.send_fds(go, [json.dumps(go_msg).encode()], fds)
        except BaseException:
            _close(listener)
            cgroup.destroy()
            raise
        finally:
            go.close()
            for fd in fds[1:]:
                os.close(fd)
        return host_pid, listener, cgroup

    def discard(self) -> list[Cgroup]:
        try:
            os.kill(self.pid, signal.SIGKILL)  # PID 1 of its namespace: its clones go with it
        except ProcessLookupError:
            pass
        try:
            self.ctl.close()
        except OSError:
            pass
        groups = [self.cgroup, self.next]
        if self.spare is not None:
            _close(self.spare[1])
            self.spare[3].close()
            groups.append(self.spare[2])
        return [g for g in groups if g is not None]  # removed once their processes are reaped


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
            ctl.send(f"{type(exc).__name__}: {exc}".encode()[:200])
        except OSError:
            pass
        os._exit(126)


class Spawner:
    def __init__(self, server: socket.socket, cfg: Config) -> None:
        self.server = server
        self.cfg = cfg
        self.filter = seccomp.build()
        self.template_filter = seccomp.build(template=True)
        self.strict_bpf = seccomp.bpf(self.filter).hex()
        self.pool: list[Shell] = []
        self.templates: dict[str, Template] = {}
        self.runtimes: dict[int, Cgroup] = {}
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
        try:
            if short[0] is None:
                self.pool.append(Shell(self.cfg, self.filter))
            else:
                short[0].make_spare(self.strict_bpf)
        except Exception as exc:
            print(f"kindling spawner: could not prepare a sandbox: {exc!r}", file=sys.stderr)
            if short[0] is not None:  # a template that cannot make clones is no use
                self.templates.pop(short[0].id, None)
                self.drop_template(short[0])

    def spawn(self, spec: dict, out_fd: int) -> None:
        shell = self.pool.pop(0) if self.pool else Shell(self.cfg, self.filter)
        shell.go(spec, out_fd)
        self.runtimes[shell.pid] = shell.cgroup
        self.answer(spec["req"], {"ok": True, "pid": shell.pid, "cgroup": shell.id}, [shell.listener])
        os.close(shell.listener)

    def template(self, spec: dict, out_fd: int) -> None:
        old = self.templates.pop(spec["template"], None)
        if old is not None:
            self.drop_template(old)
        t = Template(self.cfg, self.template_filter, spec, out_fd)
        self.templates[t.id] = t
        self.sel.register(t.ctl, selectors.EVENT_READ, t)

    def clone(self, spec: dict, out_fd: int) -> None:
        t = self.templates.get(spec["template"])
        if t is None or not t.ready:
            raise OSError(f"no ready template {spec['template']}")
        pid, listener, cgroup = t.clone(spec, out_fd, self.strict_bpf)
        self.runtimes[pid] = cgroup
        self.answer(spec["req"], {"ok": True, "pid": pid, "cgroup": cgroup.name}, [listener])
        os.close(listener)
        self.clone_exits(t)

    def drop_template(self, t: Template) -> None:
        try:
            self.sel.unregister(t.ctl)
        except (KeyError, ValueError):
            pass
        for group in t.discard():
            group.kill()
            self.leftover.append(group)

    def from_template(self, t: Template) -> None:
        """A template said something: ready, a clone's PID, a clone's exit, or it died."""
        try:
            msg = t.ctl.recv(MSG)
        except OSError:
            msg = b""
        if msg == b"ready":
            try:
                t.make_spare(self.strict_bpf)
                t.ready = True
                self.answer(t.req, {"ok": True, "template": t.id})
            except OSError as exc:
                self.answer(t.req, {"ok": False, "error": str(exc)})
            return
        if not msg or not msg.startswith(b"{"):  # the template exited (init failed, or killed) or failed set-up
            if not t.ready:
                reason = msg.decode(errors="replace") or "the template's init failed"
                self.answer(t.req, {"ok": False, "error": reason})
            self.templates.pop(t.id, None)
            self.drop_template(t)
            return
        t.exits.append(json.loads(msg))
        self.clone_exits(t)

    def clone_exits(self, t: Template) -> None:
        for doc in t.exits:
            host = t.clones.pop(doc["exit"], 0)
            if self.runtimes.pop(host, None) is not None:
                self.notify({"exit": host, "code": doc["code"]})
        t.exits.clear()

    def request(self) -> bool:
        self.last_request = time.monotonic()
        msg, fds, _, _ = socket.recv_fds(self.server, MSG, 2)
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
        for t in self.templates.values():
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
                del self.runtimes[pid]
                self.notify({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    def run(self) -> None:
        self.sel.register(self.server, selectors.EVENT_READ, "server")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "signal")
        self.fill()
        while True:
            wait = max(0.0, QUIET - (time.monotonic() - self.last_request)) if self.short() else None
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
                    try:
                        self.from_template(key.data)
                    except Exception as exc:  # one template's trouble must not stop the spawner
                        print(f"kindling spawner: template {key.data.id}: {exc!r}", file=sys.stderr)
                        self.templates.pop(key.data.id, None)
                        self.drop_template(key.data)
            self.reap()
            self.fill()


def main() -> None:
    server = socket.socket(fileno=int(sys.argv[1]))
    msg = server.recv(MSG)
    Spawner(server, Config(json.loads(msg))).run()


if __name__ == "__main__":
    main()
