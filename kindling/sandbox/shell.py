"""A sandbox shell, and the root-side steps that make any sandbox: mounts, root assembly, pivot, exec.

A *shell* is a process the spawner (kindling.sandbox.spawner) forks ahead of need:
already in a fresh cgroup and in its own mount, PID, network, IPC and UTS
namespaces, with its root assembled, loopback up and the Runtime API socket open.
Those steps (joining a cgroup can wait ~10 ms for an RCU grace period here) are
off the cold-start path; a spawn only binds the code in, mounts /tmp, pivots,
drops privileges, loads seccomp and execs. Templates (kindling.sandbox.template)
start with the same steps.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import uuid

from kindling.network import RUNTIME_API_ADDRESS, RUNTIME_API_PORT
from kindling.sandbox import image_root, layout, linux
from kindling.sandbox.cgroups import Cgroup
from kindling.sandbox.layout import GROUP, PASSWD, RUNTIME_DIR, SYSTEM_DIRS, TASK_ROOT
from kindling.sandbox.tmp_storage import attach as attach_tmp

RUNTIME_API = (RUNTIME_API_ADDRESS, RUNTIME_API_PORT)  # on the environment's loopback (kindling.network.veth)
IP_FREEBIND = 15  # bind to the Runtime API's address before the spawner has put it on the loopback
ETC_BINDS = ("/etc/ld.so.cache", "/etc/ssl", "/etc/alternatives", "/etc/ca-certificates")
DEVICES = ("null", "zero", "full", "random", "urandom")
NS_FLAGS = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWNET | linux.CLONE_NEWIPC | linux.CLONE_NEWUTS
RO = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
MSG = 1 << 16
SHM_MB = 64  # each environment's own /dev/shm (its pages are charged to the environment's memory)


class Config:
    def __init__(self, doc: dict) -> None:
        self.mount_point: str = doc["mount_point"]  # an empty directory to build roots on (in private mounts)
        self.runtime_dir: str = doc["runtime_dir"]
        self.extra_ro: list[str] = doc["extra_ro"]
        self.langs: list[str] = doc.get("langs", [])  # interpreter prefixes a spec may bind at /var/lang
        self.system_roots: list[str] = doc.get("system_roots", [])  # custom runtimes' system roots Kindling made
        self.lang_mounts: dict[str, str] = {}  # prefix → its overlay (kindling.sandbox.layout.mount_langs)
        self.uid: int = doc["uid"]
        self.gid: int = doc["gid"]
        self.pool: int = doc["pool"]
        self.instance: str = doc["instance"]
        self.unmapped: int = doc.get("unmapped", 100000)  # the host uid a template's root maps to
        self.network: str = doc.get("network", "none")  # kindling.network.plane.MODES
        self.exposed: dict[int, tuple[str, int]] = {int(port): (host, int(to))
                                                    for port, (host, to) in doc.get("exposed", {}).items()}
        self.nameservers: list[str] = doc.get("nameservers", [])  # the environments' /etc/resolv.conf
        self.images_dir: str = doc.get("images_dir", "")  # unpacked container images (kindling.sandbox.image_root)
        # where environments' /tmp images are made (kindling.sandbox.tmp_storage)
        self.tmp_dir: str = doc.get("tmp_dir") or os.path.join(os.path.dirname(self.mount_point), "tmp-storage")


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

    def go(self, spec: dict, out_fd: int, tmp_fd: int = -1) -> None:
        """Start the runtime; ``tmp_fd``: its /tmp, a detached mount (kindling.sandbox.tmp_storage), or -1."""
        self.cgroup.set_memory(int(spec["memory_mb"]))
        socket.send_fds(self.ctl, [json.dumps(spec).encode()], [out_fd] if tmp_fd < 0 else [out_fd, tmp_fd])
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
    out_fd = -1
    try:
        root = _sandbox(cfg, cgroup, ctl)
        linux.loopback_up()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        listener.bind(RUNTIME_API)
        listener.listen(16)
        socket.send_fds(ctl, [b"api"], [listener.fileno()])
        listener.close()
        ctl.settimeout(None)
        msg, fds, _, _ = socket.recv_fds(ctl, MSG, 2)
        if not msg:
            os._exit(0)  # discarded before use
        spec = json.loads(msg)
        out_fd = fds[0]
        _enter(cfg, root, spec, out_fd, sfilter, fds[1] if len(fds) > 1 else -1)
    except BaseException as exc:
        why = f"{type(exc).__name__}: {exc}".encode()[:200]
        if out_fd >= 0:  # after "go" no one reads the control socket: say it in the environment's log
            for fd in (out_fd, 2):  # (closed by then, out_fd is also fd 2)
                try:
                    os.write(fd, b"kindling: sandbox set-up failed: " + why + b"\n")
                    break
                except OSError:
                    pass
        try:
            ctl.send(why)
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
    for d in ("/opt", "/etc", "/dev", "/tmp", "/proc", TASK_ROOT, layout.LANG_DIR):
        os.makedirs(root + d, exist_ok=True)
    for name, text in (("passwd", PASSWD), ("group", GROUP), ("hosts", "127.0.0.1 localhost\n::1 localhost\n"),
                       ("resolv.conf", "".join(f"nameserver {ns}\n" for ns in cfg.nameservers)),
                       ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n")):
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


def _enter(cfg: Config, root: str, spec: dict, out_fd: int, sfilter: object, tmp_fd: int = -1) -> None:
    """Bind the code, mount /tmp, pivot into the root, become the function's user, exec the runtime."""
    if "image_root" in spec:  # a container-image function: the image is the root (kindling.sandbox.image_root)
        image_root.pivot(cfg.images_dir, root, spec, out_fd,
                         lambda at: _mount_tmp(cfg, at, int(spec["tmp_mb"]), tmp_fd))
    else:
        _pivot(cfg, root, spec, out_fd, tmp_fd)
    os.closerange(3, 65536)
    layout.set_limits()
    linux.drop_bounding_set()
    os.setgroups([])
    os.setresgid(cfg.gid, cfg.gid, cfg.gid)
    os.setresuid(cfg.uid, cfg.uid, cfg.uid)
    _exec(spec, sfilter)


def _pivot(cfg: Config, root: str, spec: dict, out_fd: int, tmp_fd: int = -1) -> None:
    layout.check(spec, cfg.langs, cfg.system_roots)
    layout.put_in(root, spec, _bind, cfg.lang_mounts)
    _bind(spec["task_root"], root + TASK_ROOT)
    _mount_tmp(cfg, root + "/tmp", int(spec["tmp_mb"]), tmp_fd)
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


def _mount_tmp(cfg: Config, at: str, size_mb: int, tmp_fd: int) -> None:
    """/tmp: the environment's own filesystem on disk (kindling.sandbox.tmp_storage); where the spawner
    has none to give, a tmpfs of EphemeralStorage's size charged to the environment's memory."""
    if tmp_fd >= 0:
        attach_tmp(tmp_fd, at)
        os.close(tmp_fd)
    else:
        linux.mount("tmpfs", at, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                    f"size={size_mb}m,mode=0700,uid={cfg.uid},gid={cfg.gid}")


def _exec(spec: dict, sfilter: object) -> None:
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    sfilter.load()  # type: ignore[attr-defined]
    os.chdir(spec.get("cwd") or TASK_ROOT)  # an image's WorkingDirectory
    try:
        os.execve(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as exc:
        os.write(2, f"exec {spec['argv'][0]}: {exc.strerror}\n".encode())
        os._exit(126 if exc.errno == errno.EACCES else 127)

