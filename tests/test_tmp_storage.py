"""/tmp is storage, not memory: each environment's own filesystem on disk, exactly EphemeralStorage in size.

Needs the isolated sandbox (root, loop devices): skipped elsewhere, run in CI (as root).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import ROLE, Server, make_zip, unique
from tests.test_templates import CODE, _files, _wait_for_template
from tests.test_templates import _invoke as invoke_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="/tmp on disk needs the isolated sandbox (root)")

PROBE = r'''
import errno, os, threading, uuid
ENV = uuid.uuid4().hex

def err(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

CHUNK = os.urandom(1 << 20)

def write(path, mb, sync=True):
    with open(path, "wb") as f:
        for _ in range(mb):
            f.write(CHUNK)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    return mb

def read(path):
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if chunk != CHUNK:
                return "differs"
            n += 1
    return n

def fill_threads(n):
    out = []
    def one(i):
        try:
            write(f"/tmp/race-{i}", 1000, sync=False)
            out.append("ok")
        except OSError as exc:
            out.append(errno.errorcode.get(exc.errno))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out

def tiny_files(limit):
    n, why = 0, "limit"
    os.makedirs("/tmp/tiny", exist_ok=True)
    try:
        while n < limit:
            open(f"/tmp/tiny/{n}", "w").close()
            n += 1
    except OSError as exc:
        why = errno.errorcode.get(exc.errno)
    return {"files": n, "stopped": why}

def handler(event, context):
    what = event["do"]
    st = os.statvfs("/tmp")
    out = {"env": ENV, "size_mb": st.f_blocks * st.f_frsize // (1 << 20), "files": sorted(os.listdir("/tmp"))}
    if what == "write":
        digest = write("/tmp/data", event["mb"])
        out.update(written=digest, read=read("/tmp/data"))
    elif what == "fill":
        out["fill"] = err(lambda: write("/tmp/fill", event["mb"]))
        os.remove("/tmp/fill")
    elif what == "mark":
        open("/tmp/mark", "w").write(ENV)
    elif what == "threads":
        out["threads"] = fill_threads(event["n"])
        for name in os.listdir("/tmp"):
            if name.startswith("race-"):
                os.remove("/tmp/" + name)
    elif what == "tiny":
        out.update(tiny_files(event["limit"]))
    elif what == "links":
        out["hardlink_out"] = err(lambda: os.link("/var/task/app.py", "/tmp/app.py"))
        out["hardlink_in"] = err(lambda: os.link("/tmp/mark", "/var/task/mark") if os.path.exists("/tmp/mark")
                                 else open("/tmp/mark", "w").close() or os.link("/tmp/mark", "/var/task/mark"))
        os.symlink("/etc/passwd", "/tmp/passwd-link")
        out["symlink_reads"] = open("/tmp/passwd-link").read().count("\n")
        out["symlink_write"] = err(lambda: open("/tmp/passwd-link", "a").write("evil"))
        out["mount_info"] = [line.split(" - ")[1].split()[0] for line in open("/proc/self/mountinfo")
                             if line.split()[4] == "/tmp"]
    return out
'''


def invoke(lam, name: str, **event: object) -> tuple[dict, str]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    body = json.loads(out["Payload"].read())
    assert "FunctionError" not in out, body
    return body, base64.b64decode(out["LogResult"]).decode()


def max_memory(log: str) -> int:
    return int(re.search(r"Max Memory Used: (\d+) MB", log).group(1))  # type: ignore[union-attr]


def test_a_128_mb_function_writes_300_mb_to_tmp(lam, create_function):
    name = create_function(PROBE, MemorySize=128, Timeout=60)["FunctionName"]
    got, log = invoke(lam, name, do="write", mb=300)
    # the bytes come back, the environment was not killed, and the page cache is not its memory
    assert got["written"] == got["read"] and got["size_mb"] == 512
    assert max_memory(log) < 128
    again, _ = invoke(lam, name, do="mark")
    assert again["env"] == got["env"] and again["files"] == ["data"]


def test_statfs_says_ephemeral_storage(lam, create_function):
    name = create_function(PROBE, EphemeralStorage={"Size": 1536})["FunctionName"]
    assert invoke(lam, name, do="mark")[0]["size_mb"] == 1536


def test_writing_past_ephemeral_storage_is_enospc_and_the_environment_lives_on(lam, create_function):
    name = create_function(PROBE, MemorySize=128, Timeout=60)["FunctionName"]
    first, _ = invoke(lam, name, do="mark")
    got, _ = invoke(lam, name, do="fill", mb=600)
    assert got["fill"] == "ENOSPC" and got["env"] == first["env"]
    after, _ = invoke(lam, name, do="write", mb=100)  # the space came back; the same environment
    assert after["env"] == first["env"] and after["written"] == after["read"]


def test_tmp_is_the_environments_own_and_goes_with_it(lam, create_function):
    name = create_function(PROBE)["FunctionName"]
    other = create_function(PROBE)["FunctionName"]
    first, _ = invoke(lam, name, do="mark")
    # kept across invokes of the environment
    assert invoke(lam, name, do="links")[0]["files"] == ["mark"]
    # never seen by another function's environment
    assert invoke(lam, other, do="mark")[0]["files"] == []
    # gone with the environment: a new configuration means new environments
    lam.update_function_configuration(FunctionName=name, Description="new environments")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 0.2})
    fresh, _ = invoke(lam, name, do="mark")
    assert fresh["env"] != first["env"] and fresh["files"] == []


def _ours(data: Path) -> list[str]:
    """Loop devices and mounts of ``data``'s server still on the host."""
    left = [line for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
            if str(data) in line]
    left += [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(data) in line]
    left += [str(p) for p in (data / "tmp-storage").glob("*")]
    return left


def test_nothing_is_left_once_the_server_stops():
    with tempfile.TemporaryDirectory(prefix="kindling-tmp-") as tmp:
        data = Path(tmp) / "data"
        srv = Server(data).start()
        try:
            lam = srv.client()
            lam.create_function(FunctionName="writer", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": PROBE})})
            assert invoke(lam, "writer", do="write", mb=20)[0]["files"] == []
            lam.close()
        finally:
            srv.stop()
        deadline = time.monotonic() + 10
        while _ours(data) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ours(data) == []
        # and the host's backing files are gone: no loop device holds a deleted image of this data dir
        backing = [p.read_text() for p in Path("/sys/block").glob("loop*/loop/backing_file")]
        assert not [b for b in backing if str(data) in b]


# -- hostile: bounded, and a bystander keeps its speed ---------------------------------------------------------

def test_hostile_tmp_use_is_bounded(hostile_server, bystander):
    lam = hostile_server.client()
    name = unique("tmp-hostile")
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler", Timeout=60,
                        MemorySize=256, Code={"ZipFile": make_zip({"app.py": PROBE})})
    try:
        start = time.monotonic()
        # many threads racing to fill it: each gets ENOSPC, none an OOM kill
        got, _ = invoke(lam, name, do="threads", n=16)
        assert set(got["threads"]) == {"ENOSPC"}
        # links cannot leave /tmp (another filesystem), a symlink is only a path in its own view
        got, _ = invoke(lam, name, do="links")
        assert got["hardlink_out"] == "EXDEV" and got["hardlink_in"] in ("EXDEV", "EROFS")
        assert got["symlink_write"] in ("EACCES", "EROFS") and got["symlink_reads"] >= 2
        assert got["mount_info"][-1] == "ext4"  # on top (a zygote's clone's is over the zygote's own, hidden)
        # inodes run out before the disk does (ext4: one per 16 KiB), bounded
        got, _ = invoke(lam, name, do="tiny", limit=200_000)
        assert got["stopped"] == "ENOSPC" and 20_000 < got["files"] < 40_000 and time.monotonic() - start < 50
        bystander.check()
    finally:
        lam.delete_function(FunctionName=name)
        lam.close()


def test_a_template_clones_tmp_is_its_own_disk_of_the_right_size(lam, create_function):
    code = CODE.replace('"no_new_privs": fields["NoNewPrivs"].strip()}',
                        '"no_new_privs": fields["NoNewPrivs"].strip(), '
                        '"tmp_mb": os.statvfs("/tmp").f_blocks * os.statvfs("/tmp").f_frsize >> 20, '
                        '"tmp_fs": [l.split(" - ")[1].split()[0] for l in open("/proc/self/mountinfo") '
                        'if l.split()[4] == "/tmp"][-1]}')
    name = create_function({**_files(), "app.py": code}, Timeout=10, EphemeralStorage={"Size": 1024})["FunctionName"]
    first, _ = invoke_template(lam, name, write="init-env")
    clone = _wait_for_template(lam, name)[0][0]
    # its own filesystem on disk (not the template's, where the first environment wrote), of its size
    assert clone["type"] == "snap-start" and clone["tmp"] is None
    assert clone["tmp_mb"] == 1024 and clone["tmp_fs"] == "ext4" and first["tmp_fs"] == "ext4"


# -- the spawner's side, in this process (as root) ----------------------------------------------------------

@pytest.mark.parametrize("size_mb", [512, 2049, 10240])
def test_each_image_says_exactly_its_size_and_leaves_nothing(size_mb, tmp_path):
    from kindling.sandbox.tmp_storage import TmpStorage
    storage = TmpStorage(tmp_path / "tmp-storage", 993, 993)
    assert storage.available, storage.why
    fds = [storage.take(size_mb) for _ in range(2)]
    try:
        for fd in fds:
            st = os.statvfs(f"/proc/self/fd/{fd}")
            assert st.f_blocks * st.f_frsize == size_mb << 20
            assert os.listdir(f"/proc/self/fd/{fd}") == []  # no lost+found
            assert os.stat(f"/proc/self/fd/{fd}").st_uid == 993
        assert not [p for p in (tmp_path / "tmp-storage").iterdir() if not p.name.startswith("master-")]
    finally:
        for fd in fds:
            os.close(fd)
        storage.close()
    assert list((tmp_path / "tmp-storage").iterdir()) == []
    deadline = time.monotonic() + 5
    while _ours(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _ours(tmp_path) == []


def test_without_mkfs_it_falls_back_to_a_tmpfs(tmp_path, monkeypatch):
    from kindling.sandbox.tmp_storage import TmpStorage
    monkeypatch.setenv("PATH", str(tmp_path))
    storage = TmpStorage(tmp_path / "tmp-storage", 993, 993)
    assert not storage.available and "mkfs.ext4" in storage.why
    assert storage.take(512) == -1 and storage.short() is None
