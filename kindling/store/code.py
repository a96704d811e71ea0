"""Content-addressed storage for function code: the zip, and its read-only extracted task root.

Layout under ``root``: ``<hex-sha256>.zip`` and ``<hex-sha256>/``; ``.tmp-*`` entries exist only while a
put() or delete() is in flight. put() validates and extracts into a temporary directory, then renames
into place, so a rejected upload leaves nothing behind and racing puts of the same bytes are safe.

Zip rules (AWS's messages): at most 50 MB zipped and 250 MB (262144000 bytes) unzipped; the unzipped
limit is checked on the declared sizes before anything is inflated, and again on the bytes actually
streamed. At most ``MAX_ENTRIES`` entries; only stored/deflated, unencrypted entries. Names that are
absolute or contain ``..`` are rejected, as are duplicate names. Symlinks (Unix mode S_IFLNK) are kept
as symlinks when their target is relative and, once the whole tree is extracted, resolves inside the
task root; any other symlink rejects the zip. Nothing is ever written through a symlink. Files keep the
read and execute bits their zip gives them, plus read for everyone (as Lambda, which needs code readable), and
never set-id, sticky or write bits (``file_mode``); a file without Unix modes is 0o444. They are owned by root,
as on Lambda. Directories become 0o555: environments read the trees through bind mounts, while ``root``
(0710, or 0700) keeps everyone else out. Zips are 0400.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import io
import logging
import multiprocessing
import os
import re
import shutil
import signal
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from kindling import errors
from kindling.sandbox import linux

log = logging.getLogger("kindling.code")
MAX_ZIPPED = 52_428_800
MAX_UNZIPPED = 262_144_000
MAX_ENTRIES = 100_000
MAX_LINK_TARGET = 4096
WORKER_NICE = 10  # uploads are background work: invokes get the CPU first
_CHUNK = 1 << 20
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_KEY = re.compile(r"[0-9a-f]{64}")
_UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."
# Filesystem errors caused by the archive's contents (duplicate or conflicting names), not by the host.
_USER_ERRNOS = {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
_BAD_ZIP = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class CodeInfo:
    sha256: str  # base64 of the raw SHA-256 digest of the zip bytes: Lambda's CodeSha256
    size: int  # len(zip bytes): Lambda's CodeSize
    key: str  # hex sha256, the on-disk name


class CodeStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def make_private(self, group: int | None) -> None:
        """``group``: the group environments run as. Code reaches them through bind mounts of its trees, and a
        zygote's clones find theirs under a bind of ``root`` itself, so ``root`` is 0710 for that group (they
        may pass through, never list it); without a group (or the right to give it), 0700."""
        mode = 0o700
        if group is not None:
            try:
                os.chown(self.root, -1, group)
                mode = 0o710
            except PermissionError:
                pass
        os.chmod(self.root, mode)

    def put(self, zip_bytes: bytes) -> CodeInfo:
        """Validate, store and extract a zip; storing the same bytes again is a cheap no-op."""
        if len(zip_bytes) > MAX_ZIPPED:
            raise errors.RequestEntityTooLargeException(f"Zipped size must be smaller than {MAX_ZIPPED} bytes")
        digest = hashlib.sha256(zip_bytes).digest()
        info = CodeInfo(base64.b64encode(digest).decode(), len(zip_bytes), digest.hex())
        tree, zip_file = self.task_root(info.key), self.zip_path(info.key)
        if tree.is_dir() and zip_file.is_file():
            return info
        tmp_tree = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        tmp_zip: str | None = None
        try:
            try:
                _extract(zip_bytes, tmp_tree)
            except OSError as e:
                if e.errno in _USER_ERRNOS:
                    raise _bad() from e
                raise
            except _BAD_ZIP as e:
                raise _bad() from e
            fd, tmp_zip = tempfile.mkstemp(prefix=".tmp-", suffix=".zip", dir=self.root)
            with os.fdopen(fd, "wb") as f:
                f.write(zip_bytes)
                f.flush()
                os.fsync(f.fileno())
                os.fchmod(f.fileno(), 0o400)  # served by Kindling only, never read by an environment
            try:
                os.rename(tmp_tree, tree)
            except OSError:
                if not tree.is_dir():  # lost a race to an identical put: keep the winner's tree
                    raise
            os.replace(tmp_zip, zip_file)
            tmp_zip = None
            _fsync_dir(self.root)
        finally:
            _rmtree(tmp_tree)
            if tmp_zip:
                os.unlink(tmp_zip)
        return info

    def zip_path(self, key: str) -> Path:
        return self.root / f"{_check(key)}.zip"

    def task_root(self, key: str) -> Path:
        return self.root / _check(key)

    def delete(self, key: str) -> None:
        """Remove the zip and the extracted tree; missing parts are fine."""
        self.zip_path(key).unlink(missing_ok=True)
        tree = self.task_root(key)
        if tree.is_dir():  # rename first (same parent, so the read-only dir may move), then remove
            grave = self.root / f".tmp-del-{key}-{os.urandom(4).hex()}"
            os.rename(tree, grave)
            _rmtree(grave)

    def keys(self) -> set[str]:
        names = (n.removesuffix(".zip") for n in os.listdir(self.root))
        return {n for n in names if _KEY.fullmatch(n)}


def _worker_start() -> None:
    """In the worker: below the server's priority, and killed with the server (a worker that outlived a Kindling
    killed outright would keep its mount of the code store, kindling/store/code_volume.py, for ever)."""
    os.nice(WORKER_NICE)
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the server died before the line above
        os._exit(0)


class CodeWorker:
    """The code store's heavy work (hashing, validating and extracting uploads, removing trees) in one process
    beside the server, one job at a time and in order, so the event loop never waits on it (a 99,000-entry zip
    takes seconds) and N hostile uploads queue, each held by its own request, instead of taking N threads.

    In order matters: a tree removed as garbage and the same bytes uploaded again right after cannot cross."""

    def __init__(self, store: CodeStore) -> None:
        self.store = store
        self._pool: ProcessPoolExecutor | None = None
        self._deleting: set[asyncio.Task[None]] = set()

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:  # spawn: a fresh interpreter, nothing of the server's sockets or threads
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_start)
        return self._pool

    async def _run(self, job: Callable[..., object], *args: object) -> object:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor(), job, *args)
        except BrokenProcessPool:
            self._pool = None  # the worker died (killed, out of memory): the next job gets a new one
            log.error("the code store's worker process died; the next upload starts a new one")
            raise errors.ServiceException("An internal error occurred.") from None

    def start(self) -> None:
        """Start the worker ahead of the first upload (an interpreter takes a moment to start)."""
        self._executor().submit(os.getpid)

    async def put(self, zip_bytes: bytes) -> CodeInfo:
        info = await self._run(_put, str(self.store.root), zip_bytes)
        assert isinstance(info, CodeInfo)
        return info

    def delete_later(self, keys: set[str]) -> None:
        """Remove these keys' code in the worker, after every job already queued."""
        task = asyncio.get_running_loop().create_task(self._delete(sorted(keys)))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def _delete(self, keys: list[str]) -> None:
        try:
            await self._run(_delete, str(self.store.root), keys)
        except Exception:  # noqa: BLE001 - garbage left behind is collected next time
            log.exception("could not remove unused code %s", keys)

    def close(self) -> None:
        if self._pool is not None:  # waits for a job under way (seconds at most), so nothing is left half done
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _put(root: str, zip_bytes: bytes) -> CodeInfo:
    """CodeStore.put, in the worker process."""
    return CodeStore(Path(root)).put(zip_bytes)


def _delete(root: str, keys: list[str]) -> None:
    store = CodeStore(Path(root))
    for key in keys:
        store.delete(key)


def _check(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a code key: {key!r}")
    return key


def _bad() -> errors.LambdaError:
    return errors.InvalidParameterValueException(_UNZIP_FAILED)


def _too_big() -> errors.LambdaError:
    return errors.InvalidParameterValueException(f"Unzipped size must be smaller than {MAX_UNZIPPED} bytes")


def _declared_entries(data: bytes) -> int:
    """Entry count from the end-of-central-directory record, before zipfile builds a ZipInfo for each."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if end < 0:
        raise _bad()
    count = int.from_bytes(data[end + 10 : end + 12], "little")
    if count == 0xFFFF and end >= 20 and data[end - 20 : end - 16] == b"PK\x06\x07":  # zip64
        record = int.from_bytes(data[end - 12 : end - 4], "little")
        count = int.from_bytes(data[record + 32 : record + 40], "little")
    return count


def _extract(data: bytes, dest: Path) -> None:
    if _declared_entries(data) > MAX_ENTRIES:
        raise _bad()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:  # BytesIO shares the bytes, no copy
        infos = zf.infolist()
        if len(infos) > MAX_ENTRIES:
            raise _bad()
        if sum(i.file_size for i in infos) > MAX_UNZIPPED:
            raise _too_big()
        dirs: set[str] = set()  # real directories we made; nothing else may become a parent
        links: list[Path] = []
        budget = MAX_UNZIPPED
        for info in infos:
            if info.flag_bits & 0x1 or info.compress_type not in _METHODS:
                raise _bad()
            rel = _safe_name(info.filename)
            mode = info.external_attr >> 16
            if info.filename.endswith(("/", "\\")) or stat.S_ISDIR(mode) or info.external_attr & 0x10:
                _mkdirs(dest, rel, dirs)
                continue
            if not rel:
                raise _bad()
            _mkdirs(dest, rel.rpartition("/")[0], dirs)
            path = dest / rel
            if info.create_system == 3 and stat.S_ISLNK(mode):
                os.symlink(_link_target(zf, info), path)
                links.append(path)
            else:
                budget -= _copy(zf, info, path, file_mode(mode if info.create_system == 3 else 0), budget)
    base = os.path.realpath(dest)
    for link in links:  # checked on the finished tree: a later link can redirect an earlier one
        if os.path.commonpath([base, os.path.realpath(link)]) != base:
            raise _bad()
    for d in dirs:
        os.chmod(dest / d, 0o555)
    os.chmod(dest, 0o555)


def file_mode(zip_mode: int) -> int:
    """A file's mode from its zip's: its read and execute bits kept (0o744 stays executable by its owner only, as
    on Lambda), read added for everyone; no write, set-id or sticky bit, whatever the zip says."""
    return (zip_mode & 0o555) | 0o444


def _safe_name(name: str) -> str:
    """The entry's relative path ('' for the root itself); absolute paths and '..' are rejected."""
    parts = name.replace("\\", "/").split("/")
    if (parts[0] == "" and len(parts) > 1) or ".." in parts:
        raise _bad()
    return "/".join(p for p in parts if p not in ("", "."))


def _mkdirs(dest: Path, rel: str, dirs: set[str]) -> None:
    parts = rel.split("/") if rel else []
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub not in dirs:
            os.mkdir(dest / sub, 0o700)  # EEXIST if a file or symlink holds the name: rejected
            dirs.add(sub)


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > MAX_LINK_TARGET:
        raise _bad()
    target = zf.read(info).decode()
    if not target or target.startswith("/") or "\0" in target:
        raise _bad()
    return target


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, mode: int, budget: int) -> int:
    """Stream one entry to a new file, never through a symlink; abort once past ``budget`` bytes."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            written += len(chunk)
            if written > budget:
                raise _too_big()
            out.write(chunk)
        os.fchmod(out.fileno(), mode)
    return written


def _rmtree(path: Path) -> None:
    """Remove a (possibly read-only) tree; symlinks inside are removed, never followed."""
    if not path.exists() or path.is_symlink():
        return
    for d, _, _ in os.walk(path):
        os.chmod(d, 0o700)
    shutil.rmtree(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
