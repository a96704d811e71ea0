"""The seccomp filter of every execution environment, built with libseccomp (pyseccomp).

Everything a function may need is allowed; what it never needs is refused with
EPERM: mounting, tracing other processes, loading kernel code, keyrings,
rebooting, making or entering namespaces, io_uring, and the like.
"""

from __future__ import annotations

import errno

import pyseccomp as seccomp

DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr", "ptrace", "process_vm_readv", "process_vm_writev", "kexec_load", "kexec_file_load",
    "bpf", "init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key", "reboot",
    "unshare", "setns", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "perf_event_open", "open_by_handle_at", "name_to_handle_at", "userfaultfd", "syslog", "quotactl",
    "lookup_dcookie", "vhangup", "iopl", "ioperm", "sethostname", "setdomainname", "personality",
    # io_uring: a second way into the kernel that seccomp cannot look into; Docker's default profile refuses it
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)
# clone() with any CLONE_NEW* flag makes a namespace: refused. clone3 hides its flags in memory,
# so it answers ENOSYS and the C library falls back to clone().
CLONE_NEW_FLAGS = 0x7E020000


# A template makes its clones' namespaces and mounts (inside its own user namespace) before they
# drop every capability and load the strict filter on top; a zygote's clone attaches the /tmp the spawner
# made for it (a detached mount it was given: move_mount adds nothing mount(2) could not do there).
TEMPLATE_ALLOWED = ("mount", "unshare", "move_mount")


def build(template: bool = False) -> seccomp.SyscallFilter:
    f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED:
        if template and name in TEMPLATE_ALLOWED:
            continue
        try:
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture
    for bit in range(17, 31):
        flag = 1 << bit
        if flag & CLONE_NEW_FLAGS:
            f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return f


def bpf(f: seccomp.SyscallFilter) -> bytes:
    """The filter as a BPF program, for a process that loads it with prctl (no libseccomp there)."""
    import os

    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as out:
        f.export_bpf(out)
    with os.fdopen(read_fd, "rb") as inp:
        return inp.read()
