"""Each execution environment's /tmp: a filesystem of its own on disk, exactly EphemeralStorage in size.

Lambda's /tmp is storage, not memory. Here each environment gets a small ext4 filesystem of its own: a
sparse image file in the data dir (``tmp-storage/``), a copy of the blocks that hold anything (~0.5 ms)
of a *master* image that ``mkfs.ext4`` made once per size, attached to a loop device with direct I/O and
*autoclear*, and unlinked at once; mounted with the new mount API (``fsopen`` /
``fsmount``) as a *detached* mount that lives in no mount namespace, only in a file descriptor. The
spawner makes a few ahead of need (off the cold-start path) and gives one to each environment, which
attaches it at /tmp with ``move_mount`` (~0.1 ms). So:

- Its size is exact: the image is made so that statfs (``df /tmp``) says EphemeralStorage (the overhead of
  ext4's own metadata is added), and writing past it gives the function ENOSPC, never an OOM kill. Its
  inodes are bounded too (one per 16 KiB, ext4's default).
- Its pages are ordinary page cache: charged to the environment's cgroup like any file cache, reclaimable
  (written back to disk under pressure), not resident memory. The loop device's direct I/O keeps a second
  copy out of the host's cache.
- It is the environment's alone: the mount is in that environment's mount namespace and nowhere else (not in
  the server's, the spawner's, nor a template's or zygote's: a template's clone gets its /tmp attached by the
  spawner from outside, a zygote's clone in its "go" message, before any of its function's code runs).
- It goes with the environment, however that ends: when the last process of its mount namespace is gone
  the filesystem is unmounted, the loop device detaches itself, and the (already unlinked) image is freed.
  Nothing is left on the host to clean up, not even after a crash; an image a crash caught between its
  mkfs and its unlink is removed at the next start.

Why not one image with a project quota per environment (the first design considered): this kernel is built
without the quota formats ext4 needs (and without XFS quotas), and a quota says EDQUOT where Lambda says
ENOSPC. A filesystem per environment costs one mkfs each, made ahead.

Where this cannot be done (not root, no mkfs.ext4, no loop devices, a kernel without fsmount), /tmp stays a
tmpfs charged to the environment's memory, as Kindling's before, and the spawner says so once at start.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import struct
import subprocess
import uuid
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)

# Syscall numbers of the new mount API: the same on every architecture (added after the tables were unified).
SYS_MOVE_MOUNT, SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 429, 430, 431, 432
FSOPEN_CLOEXEC = FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_FLAG, FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE = 0, 1, 6
MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x2, 0x4
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
CLONE_NEWNS = 0x00020000
LOOP_CTL_GET_FREE, LOOP_CONFIGURE = 0x4C82, 0x4C0A
LO_FLAGS_AUTOCLEAR, LO_FLAGS_DIRECT_IO = 4, 16
BLOCK = 4096
MIN_MB, MAX_MB = 512, 10240
SIZES_KEPT = 8  # sizes a spare is kept ready for (the default's and the last few asked for)
MKFS = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-m", "0", "-T", "default",
        # no journal: /tmp does not outlive a crash; no resize inode: it never grows. lazy_itable_init and
        # the mount's noinit_itable: inode tables are never written until used (the image stays sparse)
        "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard"]
MOUNT_FLAGS = ("noinit_itable",)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc


def attach(mount_fd: int, target: str) -> None:
    """Attach a detached mount (from ``TmpStorage.take``) at ``target`` in this process's mount namespace."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount {target}")


def attach_in(pidfd: int, mount_fd: int, target: str = "/tmp") -> None:
    """Attach a detached mount at ``target`` in the mount namespace of the process ``pidfd`` refers to (a
    template's clone; a pidfd, so never another process that got its PID), from outside: this
    (single-threaded, root) process enters that namespace for the one call and comes back. Only that
    namespace changes, whatever its owner did to it: "/" is its root, and a ``target`` that is a symlink is
    not followed (nor is one that is not a directory mounted on)."""
    home = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _setns(pidfd)
        try:
            attach(mount_fd, target)
        finally:
            _setns(home)  # back in its own namespace (at its root: the spawner's is the host's "/")
            os.fchdir(cwd)
    finally:
        os.close(home)
        os.close(cwd)


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNS), "setns")


def _loop_device(image: str) -> int:
    """A free loop device backed by ``image`` (direct I/O, detached by the kernel once no one uses it)."""
    for _ in range(16):  # another process may take the free device between the two calls
        ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
        try:
            n = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
        finally:
            os.close(ctl)
        dev = os.open(f"/dev/loop{n}", os.O_RDWR | os.O_CLOEXEC)
        backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
        # struct loop_config { u32 fd, block_size; struct loop_info64 info; u64 reserved[8] }
        info = struct.pack("QQQQQIIII64s64s32sQQ", 0, 0, 0, 0, 0, 0, 0, 0,
                           LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO, b"", b"", b"", 0, 0)
        try:
            fcntl.ioctl(dev, LOOP_CONFIGURE, struct.pack("II", backing, BLOCK) + info + bytes(64))
            return dev
        except OSError as exc:
            os.close(dev)
            if exc.errno != 16:  # EBUSY: taken meanwhile
                raise
        finally:
            os.close(backing)
    raise OSError("no free loop device")


def _fsmount(dev_fd: int) -> int:
    fs = _check(_libc.syscall(SYS_FSOPEN, b"ext4", FSOPEN_CLOEXEC), "fsopen ext4")
    try:
        _check(_libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_SET_STRING, b"source", f"/proc/self/fd/{dev_fd}".encode(),
                             0), "fsconfig source")
        for flag in MOUNT_FLAGS:
            _check(_libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_SET_FLAG, flag.encode(), None, 0), f"fsconfig {flag}")
        _check(_libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0), "mount ext4")
        return _check(_libc.syscall(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV),
                      "fsmount")
    finally:
        os.close(fs)


def _identity(fd: int) -> tuple[int, int]:
    try:
        st = os.fstat(fd)
    except OSError:
        return (-1, -1)
    return st.st_dev, st.st_ino


def _sparse_copy(src: str, dst: str, size: int) -> None:
    """Copy the parts of ``src`` that hold data (an empty ext4 is a few hundred KB of them); the rest stays
    holes."""
    with open(src, "rb") as s, open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as d:
        d.truncate(size)
        at = 0
        while True:
            try:
                start = os.lseek(s.fileno(), at, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past ``at``
                return
            at = os.lseek(s.fileno(), start, os.SEEK_HOLE)
            while start < at:
                copied = os.copy_file_range(s.fileno(), d.fileno(), at - start, start, start)
                if copied <= 0:
                    raise OSError(f"could not copy {src}")
                start += copied


class TmpStorage:
    """Detached /tmp filesystems, made ahead by size. ``available`` is False where they cannot be made."""

    def __init__(self, folder: Path, uid: int, gid: int, depth: int = 1) -> None:
        self.folder = folder
        self.depth = depth  # spares kept ready of each size
        self.uid, self.gid = uid, gid
        self.blocks: dict[int, int] = {}  # EphemeralStorage (MB) → image size (blocks) whose statfs says it
        self.masters: dict[int, str] = {}  # image size (blocks) → an empty filesystem of that size, to copy
        self.spares: dict[int, list[int]] = {MIN_MB: []}  # size → detached mounts ready
        self.why = self._unavailable()
        self.available = not self.why
        # Every process the spawner forks (shells, templates) would hold a copy of each of these until it execs;
        # the last close of one that an environment has since finished with is that filesystem's unmount and
        # its loop device's teardown (~10-20 ms), which would then land on a later cold start. So a child drops
        # them at once (cheap: the spawner still holds them), each checked to be the same file (not a number
        # reused since).
        self.lent: dict[int, tuple[int, int]] = {}  # every mount descriptor made and not yet released
        os.register_at_fork(after_in_child=self._forget)
        if self.available:
            try:
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
                for leftover in folder.iterdir():  # images a crash caught before they were unlinked
                    leftover.unlink()
                self.release(self.make(MIN_MB))  # the whole way once: says now if this kernel cannot
            except OSError as exc:
                self.available, self.why = False, str(exc)

    @staticmethod
    def _unavailable() -> str:
        if os.geteuid() != 0:
            return "not root"
        if not shutil.which(MKFS[0]) or not shutil.which("debugfs"):
            return "no mkfs.ext4 or debugfs (Debian's e2fsprogs)"
        if not os.path.exists("/dev/loop-control"):
            return "no loop devices"
        return ""

    def take(self, size_mb: int, inherited: bool = False) -> int:
        """A detached mount of an empty filesystem of ``size_mb`` MB for one environment (the caller owns the
        descriptor: ``release`` it once handed over; the mount is then the environment's), or -1 for a tmpfs.
        ``inherited``: for the next process forked, which keeps it (a template's own /tmp)."""
        if not self.available:
            return -1
        size_mb = max(MIN_MB, min(MAX_MB, int(size_mb)))
        ready = self.spares.pop(size_mb, None)
        if ready is None:
            ready = []
            while len(self.spares) >= SIZES_KEPT:  # the size asked for longest ago stops being kept
                old = next(k for k in self.spares if k != MIN_MB)
                for fd in self.spares.pop(old):
                    self.release(fd)
        self.spares[size_mb] = ready  # the most recently asked for last
        for fd, known in list(self.lent.items()):  # released by someone else (a spare clone killed)
            if _identity(fd) != known:
                del self.lent[fd]
        fd = ready.pop(0) if ready else self.make(size_mb)
        if inherited:
            self.lent.pop(fd, None)
        return fd

    def release(self, fd: int) -> None:
        """Close a descriptor ``take`` gave (once handed over)."""
        if fd >= 0:
            self.lent.pop(fd, None)
            os.close(fd)

    def short(self, urgent: bool = False) -> int | None:
        """A size lacking spares (``urgent``: none is left of it), if any."""
        if not self.available:
            return None
        want = 1 if urgent else self.depth
        return next((size for size, ready in self.spares.items() if len(ready) < want), None)

    def fill(self) -> bool:
        """Make one spare where one is lacking (none left of a size first); whether there was anything to do."""
        size = self.short(urgent=True)
        size = self.short() if size is None else size
        if size is None:
            return False
        self.spares[size].append(self.make(size))
        return True

    def _forget(self) -> None:
        for fd, known in self.lent.items():
            if _identity(fd) == known:
                os.close(fd)
        self.lent = {}
        self.spares = {}

    def close(self) -> None:
        for ready in self.spares.values():
            for fd in ready:
                self.release(fd)
            ready.clear()
        for master in self.masters.values():
            try:
                os.unlink(master)
            except OSError:
                pass
        self.masters.clear()

    def make(self, size_mb: int) -> int:
        blocks = self.blocks.get(size_mb)
        if blocks is None:
            blocks = self.blocks[size_mb] = self._exact(size_mb)
        fd = self._make(blocks, copy=True)[0]
        self.lent[fd] = _identity(fd)
        return fd

    def _exact(self, size_mb: int) -> int:
        """The image size (blocks) whose filesystem statfs says is ``size_mb`` MB: ext4 reports its size less
        its own metadata, which grows with the size. Found by trying (a few mkfs, once per size)."""
        want = blocks = size_mb * (1 << 20) // BLOCK
        for _ in range(8):
            fd, reported = self._make(blocks)
            os.close(fd)
            if reported == want:
                return blocks
            blocks += want - reported
        return blocks

    def _mkfs(self, image: str, blocks: int, master: bool = False) -> None:
        try:
            with open(os.open(image, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:  # private, as the
                f.truncate(blocks * BLOCK)                                                       # whole data dir
            subprocess.run([*MKFS, "-E", f"root_owner={self.uid}:{self.gid}", image, str(blocks)], check=True,
                           timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            if master:  # as a tmpfs /tmp was: the function's user's alone, and empty (no lost+found)
                subprocess.run(["debugfs", "-w", "-f", "-", image], input=b"rmdir lost+found\nsif / mode 040700\n",
                               check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except subprocess.CalledProcessError as exc:
            raise OSError(f"mkfs.ext4: {exc.stderr.decode(errors='replace').strip()}") from None
        except subprocess.SubprocessError as exc:
            raise OSError(str(exc)) from None

    def _make(self, blocks: int, copy: bool = False) -> tuple[int, int]:
        """An empty filesystem of ``blocks``, mounted detached; (its mount descriptor, the size statfs says).
        ``copy``: copied from that size's master (made the first time), else made by mkfs."""
        image = str(self.folder / f"{uuid.uuid4().hex}.img")
        try:
            if not copy:
                self._mkfs(image, blocks)
            else:
                if blocks not in self.masters:
                    master = str(self.folder / f"master-{blocks}.img")
                    self._mkfs(master, blocks, master=True)
                    self.masters[blocks] = master
                _sparse_copy(self.masters[blocks], image, blocks * BLOCK)
            dev = _loop_device(image)
        finally:
            try:
                os.unlink(image)  # the loop device holds it: freed when the filesystem is gone
            except FileNotFoundError:
                pass
        try:
            mount = _fsmount(dev)
        finally:
            os.close(dev)  # the filesystem holds it now (or, if it failed, the device detaches)
        if copy:  # its size was found when its master was made
            return mount, blocks
        try:
            stat = os.statvfs(f"/proc/self/fd/{mount}")
        except OSError:
            os.close(mount)
            raise
        return mount, stat.f_blocks * stat.f_frsize // BLOCK
