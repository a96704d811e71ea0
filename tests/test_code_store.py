"""The code store: content addressing, safe extraction, and rejection of hostile zips."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import threading
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from kindling import errors
from kindling.store import code
from kindling.store.code import CodeStore

UNZIP_FAILED = "Could not unzip uploaded file. Please check your file, then try to upload again."
TOO_BIG_UNZIPPED = "Unzipped size must be smaller than 262144000 bytes"


def make_zip(*entries: tuple[str, bytes | str, int], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """Entries are (name, content, unix mode incl. file type bits)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = mode << 16
            info.compress_type = method
            zf.writestr(info, content)
    return buf.getvalue()


def link(name: str, target: str) -> tuple[str, str, int]:
    return (name, target, stat.S_IFLNK | 0o777)


def file(name: str, content: bytes | str = b"x", mode: int = 0o644) -> tuple[str, bytes | str, int]:
    return (name, content, stat.S_IFREG | mode)


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """300 MB of zeros in one deflated entry, written in 1 MB pieces: ~300 KB of zip."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("zeros", "w") as f:
        chunk = bytes(1 << 20)
        for _ in range(300):
            f.write(chunk)
    return buf.getvalue()


def reject(store: CodeStore, data: bytes, message: str = UNZIP_FAILED) -> None:
    with pytest.raises(errors.InvalidParameterValueException) as exc:
        store.put(data)
    assert exc.value.message == message
    assert os.listdir(store.root) == [], "a rejected upload left files behind"


# -- content addressing -------------------------------------------------------------------------


def test_code_sha256_is_base64_of_digest(store: CodeStore) -> None:
    data = make_zip(file("index.py", "def handler(e, c): return 1\n"))
    info = store.put(data)
    assert info.sha256 == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert info.key == hashlib.sha256(data).hexdigest()
    assert info.size == len(data)
    assert store.zip_path(info.key).read_bytes() == data
    assert (store.task_root(info.key) / "index.py").read_text() == "def handler(e, c): return 1\n"
    assert store.keys() == {info.key}


def test_put_is_idempotent(store: CodeStore) -> None:
    data = make_zip(file("a.txt", "a"), file("dir/b.txt", "b"))
    first = store.put(data)
    root_inode = store.task_root(first.key).stat().st_ino
    assert store.put(data) == first
    assert store.task_root(first.key).stat().st_ino == root_inode  # not re-extracted
    assert sorted(os.listdir(store.root)) == sorted([first.key, first.key + ".zip"])


def test_put_heals_a_half_stored_key(store: CodeStore) -> None:
    data = make_zip(file("a.txt"))
    info = store.put(data)
    store.zip_path(info.key).unlink()  # as if we crashed between the two renames
    assert store.put(data) == info
    assert store.zip_path(info.key).read_bytes() == data
    assert sorted(os.listdir(store.root)) == sorted([info.key, info.key + ".zip"])


def test_concurrent_puts_of_same_content(store: CodeStore) -> None:
    data = make_zip(*(file(f"f{i}.txt", os.urandom(10_000)) for i in range(20)))
    barrier = threading.Barrier(8)
    results: list[code.CodeInfo] = []
    failures: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(store.put(data))
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            failures.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(set(results)) == 1
    key = results[0].key
    assert sorted(os.listdir(store.root)) == sorted([key, key + ".zip"])
    assert len(os.listdir(store.task_root(key))) == 20


def test_delete_and_keys(store: CodeStore) -> None:
    a = store.put(make_zip(file("bin/run", mode=0o755), file("x/y/z.txt")))
    b = store.put(make_zip(file("other.txt")))
    assert store.keys() == {a.key, b.key}
    store.delete(a.key)
    assert store.keys() == {b.key}
    assert not store.task_root(a.key).exists() and not store.zip_path(a.key).exists()
    store.delete(a.key)  # already gone: fine
    store.delete(b.key)
    assert os.listdir(store.root) == []


def test_bad_keys_are_refused(store: CodeStore) -> None:
    for key in ("../etc", "", "A" * 64, "0" * 63):
        with pytest.raises(ValueError):
            store.task_root(key)


# -- the extracted tree -------------------------------------------------------------------------


def test_exec_bit_preserved_and_tree_read_only(store: CodeStore) -> None:
    info = store.put(make_zip(file("bootstrap", "#!/bin/sh\n", 0o755), file("lib/data.txt", "d", 0o666)))
    root = store.task_root(info.key)
    assert stat.S_IMODE((root / "bootstrap").stat().st_mode) == 0o555
    assert stat.S_IMODE((root / "lib/data.txt").stat().st_mode) == 0o444
    assert stat.S_IMODE((root / "lib").stat().st_mode) == 0o555
    assert stat.S_IMODE(root.stat().st_mode) == 0o555
    assert stat.S_IMODE(store.zip_path(info.key).stat().st_mode) == 0o400


def test_zip_without_unix_modes(store: CodeStore) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/b.txt", "b")  # no external_attr mode, no explicit directory entry
    root = store.task_root(store.put(buf.getvalue()).key)
    assert (root / "a/b.txt").read_text() == "b"
    assert stat.S_IMODE((root / "a/b.txt").stat().st_mode) == 0o444


def test_symlinks_inside_the_root_are_kept(store: CodeStore) -> None:
    data = make_zip(
        file("lib/libx.so.1", "elf"),
        link("lib/libx.so", "libx.so.1"),
        file("node_modules/foo/cli.js", "js"),
        link("node_modules/.bin/foo", "../foo/cli.js"),
        link("here", "."),
    )
    root = store.task_root(store.put(data).key)
    assert os.readlink(root / "lib/libx.so") == "libx.so.1"
    assert (root / "node_modules/.bin/foo").read_text() == "js"
    assert (root / "here").is_symlink()


def test_put_small_zip_is_fast(store: CodeStore) -> None:
    data = make_zip(*(file(f"f{i}.bin", os.urandom(256 * 1024)) for i in range(4)))
    assert len(data) > 1_000_000
    start = time.perf_counter()
    store.put(data)
    assert time.perf_counter() - start < 0.2  # a few ms in practice; generous for loaded CI machines


# -- rejections: each leaves the root empty -----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"not a zip at all",
        b"",
        make_zip(file("a.txt", "hello world" * 100))[:-30],  # truncated central directory
    ],
    ids=["garbage", "empty", "truncated"],
)
def test_not_a_zip(store: CodeStore, data: bytes) -> None:
    reject(store, data)


def test_bad_crc(store: CodeStore) -> None:
    data = bytearray(make_zip(file("a.txt", b"A" * 1000), method=zipfile.ZIP_STORED))
    data[data.index(b"A" * 1000)] = ord("B")
    reject(store, bytes(data))


def test_unsupported_compression(store: CodeStore) -> None:
    reject(store, make_zip(file("a.txt", "a" * 100), method=zipfile.ZIP_BZIP2))


def test_encrypted_entry(store: CodeStore) -> None:
    data = bytearray(make_zip(file("a.txt", "secret")))
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the 'encrypted' flag bit
        at = data.index(sig) + flag_at
        data[at] |= 0x1
    reject(store, bytes(data))


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/x", "a/..\\..\\evil"])
def test_path_traversal(store: CodeStore, name: str) -> None:
    reject(store, make_zip(file("ok.txt"), file(name, "pwned")))


@pytest.mark.parametrize(
    "entries",
    [
        [link("passwd", "/etc/passwd")],
        [link("up", "../../etc/passwd")],
        [link("a/up", ".."), link("a/esc", "up/..")],  # each fine lexically; together they escape
        [file("a/b/.keep"), link("a/b/out", "../../..")],
        [link("x/d", "../q"), file("q/.keep"), link("x/y/l", "../d/../..")],  # x/d later redirects l
    ],
    ids=["absolute", "relative-escape", "chained-escape", "deep-escape", "redirected"],
)
def test_symlinks_out_of_the_root(store: CodeStore, entries: list[tuple[str, str, int]]) -> None:
    reject(store, make_zip(*entries))


def test_never_writes_through_a_symlink(store: CodeStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"  # the tree is extracted in <tmp_path>/code/.tmp-*/
    outside.mkdir()
    reject(store, make_zip(link("sub", "../../outside"), file("sub/evil", "pwned")))
    reject(store, make_zip(link("sub", "../../outside"), ("sub/dir/", b"", stat.S_IFDIR | 0o755)))
    reject(store, make_zip(link("sub", "inner"), file("inner/.keep"), file("sub/evil", "pwned")))
    assert list(outside.iterdir()) == []


def test_duplicate_names(store: CodeStore) -> None:
    with pytest.warns(UserWarning):  # zipfile warns about writing duplicates
        data = make_zip(file("a.txt", "1"), file("a.txt", "2"))
    reject(store, data)


def test_file_and_directory_name_clash(store: CodeStore) -> None:
    reject(store, make_zip(file("a", "file"), file("a/b", "under a file")))


def test_too_many_entries(store: CodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code, "MAX_ENTRIES", 10)
    reject(store, make_zip(*(file(f"f{i}") for i in range(11))))
    store.put(make_zip(*(file(f"f{i}") for i in range(10))))


def test_entry_count_checked_before_parsing(store: CodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """zipfile spends ~0.5 KB per entry parsing; the zip64 end record's count is read first."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(0xFFFF + 2):  # past 65535 entries, so the count lives in the zip64 record
            zf.writestr(str(i), b"")
    assert code._declared_entries(buf.getvalue()) == 0xFFFF + 2
    monkeypatch.setattr(code, "MAX_ENTRIES", 0xFFFF)

    def no_parsing(*args: object, **kwargs: object) -> None:
        raise AssertionError("parsed the central directory")

    monkeypatch.setattr(code.zipfile, "ZipFile", no_parsing)
    reject(store, buf.getvalue())


# -- size limits ---------------------------------------------------------------------------------


def test_oversize_zipped(store: CodeStore) -> None:
    with pytest.raises(errors.RequestEntityTooLargeException) as exc:
        store.put(bytes(code.MAX_ZIPPED + 1))
    assert exc.value.message == "Zipped size must be smaller than 52428800 bytes"
    assert os.listdir(store.root) == []


def test_zip_bomb_rejected_without_inflating(store: CodeStore, bomb: bytes) -> None:
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        reject(store, bomb, TOO_BIG_UNZIPPED)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 10_000_000


def test_zip_bomb_whose_header_lies(store: CodeStore, bomb: bytes) -> None:
    """Both headers declare 1000 bytes; the deflate stream holds 300 MB."""
    data = bytearray(bomb)
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = (1000).to_bytes(4, "little")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.infolist()[0].file_size == 1000  # the declared-size check cannot see the bomb
    tracemalloc.start()
    try:
        reject(store, bytes(data))  # inflation stops at the declared size; then the CRC fails
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_lie_with_matching_crc_extracts_only_declared_bytes(store: CodeStore, bomb: bytes) -> None:
    data = bytearray(bomb)
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    crc = zlib.crc32(bytes(1000)).to_bytes(4, "little")
    for at, crc_at, size_at in ((local, 14, 22), (central, 16, 24)):
        data[at + crc_at : at + crc_at + 4] = crc
        data[at + size_at : at + size_at + 4] = (1000).to_bytes(4, "little")
    root = store.task_root(store.put(bytes(data)).key)
    assert (root / "zeros").stat().st_size == 1000


def test_streamed_bytes_are_counted(tmp_path: Path) -> None:
    """Belt and braces: the extraction counter aborts past its budget whatever the headers say."""
    data = make_zip(file("a.bin", bytes(5000)))
    with zipfile.ZipFile(io.BytesIO(data)) as zf, pytest.raises(errors.InvalidParameterValueException) as exc:
        code._copy(zf, zf.infolist()[0], tmp_path / "a.bin", 0o444, budget=4096)
    assert exc.value.message == TOO_BIG_UNZIPPED


def test_many_files_within_declared_limit(store: CodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(code, "MAX_UNZIPPED", 10_000)
    too_big = "Unzipped size must be smaller than 10000 bytes"
    reject(store, make_zip(*(file(f"f{i}", bytes(1000)) for i in range(11))), too_big)
    store.put(make_zip(*(file(f"f{i}", bytes(1000)) for i in range(10))))
