"""Template mode of Kindling's Python runtime: an initialized runtime that execution environments fork from.

The bootstrap imports the handler (init) and, when it finds the spawner's control
socket at fd 3 (fd 4: a zygote, before init), calls ``serve``: the
``snapshot_restore_py`` before-snapshot hooks run, and the process waits on
its control socket. For each request it forks a clone in a new PID namespace;
the clone makes its own mount, network, IPC and UTS
namespaces, mounts its own /tmp and /proc, opens its Runtime API socket
(169.254.100.1:9001; the spawner gives its network namespace that address and
its veth from outside) and hands it over (with its credentials, so the spawner learns its host PID), mounts
its own /dev/shm, drops every capability (the bounding set too), sets
no_new_privs, loads the strict seccomp filter and says "dropped"; the spawner
then checks all of that from outside before the clone is used (none of this
code is trusted: init code may have replaced it). At "go" it reseeds randomness,
runs the after-restore hooks and returns into the runtime's loop.

Stdlib only (ctypes), for every python3.x runtime. The template itself holds
capabilities only inside its own user namespace, which it needs to make the
clones' namespaces.
"""

import ctypes
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, PR_CAPBSET_DROP = 47, 4, 24


def _check(rc, what):
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                       ctypes.c_ulong(flags), data.encode() if data else None), "mount " + target)


def _hooks(name):
    module = sys.modules.get("snapshot_restore_py")
    if module is None:
        return
    for func, args, kwargs in list(getattr(module, "get_" + name)()):
        func(*args, **kwargs)


def serve(fd, zygote=False):
    """Run as the template until a fork: returns only in a clone, ready for its first invoke.

    A zygote is a template taken before any init: its clones get their function's code, variables,
    /tmp and memory when they are put to use, and run init themselves."""
    ctl = socket.socket(fileno=fd)
    if not zygote:
        _hooks("before_snapshot")
    import gc
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()  # keep the heap's pages shared with the clones
    sys.stdout.flush()
    sys.stderr.flush()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    ctl.send(b"ready")
    middles = set()
    while True:
        ready, _, _ = select.select([ctl, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 512)
            _reap(ctl, middles)
        if ctl in ready:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 16, 1)
            if not msg:
                os._exit(0)
            spec = json.loads(msg)
            middle = os.fork()
            if middle == 0:
                # A new PID namespace can be made once per process: this short-lived one makes it,
                # forks the clone as its PID 1, reports it and exits; the template adopts the clone.
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                try:
                    _check(_libc.unshare(CLONE_NEWPID), "unshare")
                    pid = os.fork()
                except OSError as exc:
                    os.write(2, f"kindling: could not fork an environment: {exc}\n".encode())
                    os._exit(1)
                if pid == 0:
                    os.close(wake_r)
                    os.close(wake_w)
                    ctl.close()
                    _become_clone(spec, fds[0], zygote)
                    return
                ctl.send(json.dumps({"cloned": pid}).encode())
                os._exit(0)
            middles.add(middle)
            for f in fds:
                os.close(f)


def _reap(ctl, middles):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in middles:
            middles.discard(pid)
            continue
        code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (
            -(status & 0x7F) if status & 0x7F else status >> 8)
        ctl.send(json.dumps({"exit": pid, "code": code}).encode())


def _become_clone(spec, report_fd, zygote=False):
    """Make this process an environment's, hand over its Runtime API socket, then wait to be used.

    Clones are made ahead of need: everything but the environment's own log pipe and variables (and
    for a zygote's clone, its code, /tmp and privileges) is done before the wait, so a cold start only
    sends "go"."""
    report = socket.socket(fileno=report_fd)
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        if not zygote and not spec.get("tmp_outside"):  # else the spawner attaches its /tmp from outside
            _mount_tmp(spec["tmp_mb"])
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        # Its own /dev/shm: the template's (or zygote's) would be shared with every other clone of it.
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
               f"size={int(spec.get('shm_mb', 64))}m,mode=1777")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]
            fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 0x1))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The Runtime API's address, 169.254.100.1, is put on the loopback by the spawner from outside (with
        # the clone's veth), maybe later: IP_FREEBIND binds before it exists.
        listener.setsockopt(socket.SOL_IP, 15, 1)
        listener.bind(("169.254.100.1", 9001))
        listener.listen(16)
        creds = struct.pack("iII", os.getpid(), os.getuid(), os.getgid())
        report.sendmsg([b"api"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", listener.fileno())),
                                  (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
        listener.close()
        if not zygote:
            _drop_privileges(bytes.fromhex(spec["seccomp"]))
            report.send(b"dropped")  # the spawner checks this process from outside before using it
        msg, fds, _, _ = socket.recv_fds(report, 1 << 16, 2)
        if not msg:
            os._exit(0)  # discarded unused
        go = json.loads(msg)
        if zygote:  # the function's code (and no one else's), its /tmp, then no privileges at all
            code = "/var/.kindling-code/" + go["code"]
            _mount(code, "/var/task", None, MS_BIND)
            _mount("none", "/var/task", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
            _mount("tmpfs", "/var/.kindling-code", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k")
            if len(fds) > 1:  # its own filesystem on disk (kindling.sandbox.tmp_storage)
                _check(_libc.syscall(429, fds[1], b"", -100, b"/tmp", 4), "move_mount /tmp")  # F_EMPTY_PATH
            else:
                _mount_tmp(go["tmp_mb"])
            _drop_privileges(bytes.fromhex(spec["seccomp"]))
            report.send(b"dropped")
        report.close()
        for extra in fds[1:]:
            os.close(extra)
        os.dup2(fds[0], 1)
        os.dup2(fds[0], 2)
        os.close(fds[0])
    except BaseException as exc:
        try:
            os.write(2, f"kindling: clone set-up failed: {exc}\n".encode())
        finally:
            os._exit(126)
    if zygote:  # its function's whole environment: nothing of the zygote's may remain (e.g. a variable it yields)
        os.environ.clear()
    os.environ.update(go["env"])
    if zygote:
        os.chdir("/var/task")
        time.tzset()
    if "random" in sys.modules:
        sys.modules["random"].seed()  # clones of one template must not share random state
    _hooks("after_restore")


def _mount_tmp(size_mb):
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(size_mb)}m,mode=0700,uid={os.getuid()},gid={os.getgid()}")


def _drop_privileges(bpf):
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):  # the bounding set too (CAP_SETPCAP, held until here, allows it)
        _check(_libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), "drop capability")
    header = struct.pack("Ii", 0x20080522, 0)
    _check(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(bytes(24))), "capset")
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    prog = ctypes.create_string_buffer(bpf)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(bpf) // 8, ctypes.cast(prog, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")
