"""Unpack an OCI image's layers into one root file system. Layers are hostile input.

Each layer is a tar stream (plain or gzip). Every path is resolved inside the root the way a container
runtime resolves it (symlinks followed, but never above the root: ``..`` at the root stays there, an
absolute link target starts again at the root), one component at a time with ``O_NOFOLLOW`` and
directory file descriptors, so nothing is ever written outside the root. What the archive asks for and
Kindling does not give: device nodes and FIFOs are skipped, setuid/setgid bits are dropped, owners are
not kept (everything belongs to root; the environment's root is read-only anyway), extended attributes
(file capabilities among them) are ignored, hard links must name a regular file already in the root.
Whiteouts (``.wh.NAME``, ``.wh..wh..opq``) remove what lower layers put there, again only inside the root.
The stream is bounded: uncompressed bytes (the image size limit), entries and path lengths; a layer that
goes past any bound is an invalid image, not a full disk.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from typing import IO

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_ENTRIES = 1_000_000
MAX_LINK_HOPS = 40
MAX_DEPTH = 128  # directories deep (bounds the descriptors held and the recursion of removals)
CHUNK = 1 << 20
MOUNT_DIRS = ("dev", "proc", "tmp", "etc")  # where Kindling mounts its own: real directories
ETC_FILES = ("etc/resolv.conf", "etc/hosts")  # bound over by Kindling: regular files


class InvalidImage(Exception):
    """The image cannot be used; the message says why (shown as the function's StateReason)."""


class Budget:
    """What one image may cost while it is unpacked."""

    def __init__(self, max_bytes: int, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.entries = 0

    def read(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise InvalidImage(f"the image is larger than {self.max_bytes // (1 << 20)} MB uncompressed")

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise InvalidImage(f"the image has more than {self.max_entries} files")


class _Counted:
    """A decompressed stream whose every byte is counted against the budget (a decompression bomb stops at
    the image limit, whatever the tar inside says)."""

    def __init__(self, raw: IO[bytes], budget: Budget) -> None:
        self.raw = raw
        self.budget = budget

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n >= 0 else CHUNK)
        self.budget.read(len(data))
        return data


def open_layer(path: str, budget: Budget) -> IO[bytes]:
    """The layer blob at ``path`` as an uncompressed, counted stream (gzip or plain tar, by its magic)."""
    f = open(path, "rb")
    magic = f.read(4)
    f.seek(0)
    if magic[:2] == b"\x1f\x8b":
        raw: IO[bytes] = gzip.GzipFile(fileobj=f, mode="rb")  # type: ignore[assignment]
    elif magic == b"\x28\xb5\x2f\xfd":
        f.close()
        raise InvalidImage("zstd-compressed layers are not supported: push the image with gzip layers")
    else:
        raw = f
    return _Counted(raw, budget)  # type: ignore[return-value]


def _parts(name: str) -> list[str]:
    if "\x00" in name or len(name) > 4096:
        raise InvalidImage("a layer has an invalid path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidImage(f"a layer has a path that leaves the image: {name[:200]!r}")
    if any(len(p.encode()) > 255 for p in parts):
        raise InvalidImage("a layer has a file name longer than 255 bytes")
    return parts


class Root:
    """The root being built, with confined path resolution."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)

    def close(self) -> None:
        os.close(self.fd)

    def directory(self, parts: list[str], create: bool) -> int:
        """An fd of the directory ``parts`` names inside the root (symlinks resolved inside it; missing
        directories made 0755 when ``create``); the caller closes it."""
        stack = [os.dup(self.fd)]
        queue = list(parts)
        hops = 0
        try:
            while queue:
                name = queue.pop(0)
                if name in ("", "."):
                    continue
                if name == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                    continue
                here = stack[-1]
                try:
                    st = os.stat(name, dir_fd=here, follow_symlinks=False)
                except FileNotFoundError:
                    if not create:
                        raise InvalidImage("a hard link names a file that is not in the image") from None
                    os.mkdir(name, 0o755, dir_fd=here)
                    st = os.stat(name, dir_fd=here, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    hops += 1
                    if hops > MAX_LINK_HOPS:
                        raise InvalidImage("a layer has too many levels of symbolic links")
                    target = os.readlink(name, dir_fd=here)
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                    queue[:0] = target.split("/")
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise InvalidImage("a layer puts a file under something that is not a directory")
                if len(stack) > MAX_DEPTH:
                    raise InvalidImage(f"a layer has directories more than {MAX_DEPTH} deep")
                stack.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here))
            return stack.pop()
        finally:
            for fd in stack:
                os.close(fd)


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` (and all under it) from the directory ``dir_fd``, never following a link."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            _clear(fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _clear(dir_fd: int) -> None:
    for entry in os.listdir(dir_fd):
        _remove(dir_fd, entry)


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        try:
            member = tar.next()
        except tarfile.TarError as exc:
            raise InvalidImage(f"a layer is not a valid tar archive ({exc})") from None
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            if isinstance(exc, InvalidImage):
                raise
            raise InvalidImage(f"a layer is truncated or corrupt ({exc})") from None
        if member is None:
            return
        yield member


def apply_layer(root: Root, stream: IO[bytes], budget: Budget) -> dict[str, int]:
    """Unpack one layer over what is already in ``root``; returns counts of what was skipped."""
    skipped = {"devices": 0, "setuid": 0}
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")  # a stream: members in order, data read once
    except tarfile.TarError as exc:
        raise InvalidImage(f"a layer is not a valid tar archive ({exc})") from None
    try:
        with tar:
            _apply(root, tar, budget, skipped)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidImage(f"a layer is truncated or corrupt ({type(exc).__name__})") from None
    return skipped


def _apply(root: Root, tar: tarfile.TarFile, budget: Budget, skipped: dict[str, int]) -> None:
    for m in _members(tar):
        budget.entry()
        parts = _parts(m.name)
        if not parts:
            continue  # the root itself: its mode stays 0755
        *parent, name = parts
        if m.ischr() or m.isblk() or m.isfifo():
            skipped["devices"] += 1
            continue
        dir_fd = root.directory(parent, create=True)
        try:
            if name == OPAQUE:
                _clear(dir_fd)
            elif name.startswith(WHITEOUT):
                target = name[len(WHITEOUT):]
                if target in ("", ".", ".."):  # ".wh.." would empty the parent: above the root, for the root
                    raise InvalidImage(f"a layer has an invalid whiteout: {m.name[:200]!r}")
                _remove(dir_fd, target)
            else:
                if m.mode & (stat.S_ISUID | stat.S_ISGID):
                    skipped["setuid"] += 1
                _entry(root, tar, m, dir_fd, name, budget)
        finally:
            os.close(dir_fd)


def _entry(root: Root, tar: tarfile.TarFile, m: tarfile.TarInfo, dir_fd: int, name: str, budget: Budget) -> None:
    mode = m.mode & 0o1777  # no setuid, no setgid
    try:
        existing = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if m.isdir():
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            _remove(dir_fd, name)
            existing = None
        if existing is None:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return
    if existing is not None:
        _remove(dir_fd, name)
    if m.issym():
        if len(m.linkname) > 4096 or "\x00" in m.linkname:
            raise InvalidImage("a layer has an invalid symbolic link")
        os.symlink(m.linkname, name, dir_fd=dir_fd)  # resolved only inside the environment's own root
    elif m.islnk():
        *src_parent, src_name = _parts(m.linkname) or [""]
        src_fd = root.directory(src_parent, create=False)
        try:
            st = os.stat(src_name, dir_fd=src_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidImage("a hard link in a layer names something that is not a regular file")
            os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise InvalidImage("a hard link names a file that is not in the image") from None
        finally:
            os.close(src_fd)
    elif m.isreg():
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            src = tar.extractfile(m)
            assert src is not None
            while True:
                chunk = src.read(CHUNK)
                if not chunk:
                    break
                os.write(fd, chunk)
            os.fchmod(fd, mode)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise InvalidImage("the image does not fit in the space Kindling gives images") from None
            raise
        finally:
            os.close(fd)
    # anything else (GNU volume headers and the like) carries nothing to unpack


def finish(root: Root) -> None:
    """Make the places Kindling mounts over real directories and files of the root (a symlink there would
    point a mount somewhere else), whatever the image put there."""
    for d in MOUNT_DIRS:
        *parent, name = d.split("/")
        dir_fd = root.directory(parent, create=True)
        try:
            st = None
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            if st is not None and not stat.S_ISDIR(st.st_mode):
                _remove(dir_fd, name)
                st = None
            if st is None:
                os.mkdir(name, 0o755, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    etc = root.directory(["etc"], create=False)
    try:
        for path in ETC_FILES:
            name = path.split("/")[1]
            try:
                st = os.stat(name, dir_fd=etc, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    continue
                _remove(etc, name)
            except FileNotFoundError:
                pass
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=etc))
    finally:
        os.close(etc)
