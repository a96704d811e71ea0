"""The code store on a filesystem of its own, so no environment learns where the data dir is.

Each bind mount's line in /proc/self/mountinfo names its source by its path from the root of the
filesystem it is on (field 4). Bound from a plain folder of the data dir, every environment's /var/task
(and a zygote's view of the code store) would show the data dir's host path. So when Kindling runs as root
the code store is an ext4 image, ``code.img`` (sparse: it takes only what the code does), loop-mounted at
``code/`` once at start (~30 ms, never on a cold start), in a mount namespace of the server's own: binds
from it show ``/<key>``, and the mount goes away with the server, however it ends. The spawner and the
code worker, started after, share that namespace; other processes on the host see an empty ``code/``.

A data dir whose code store is a plain folder (an older Kindling's) has it copied into a new image at the
first start. Where this cannot be done (not root, no mkfs.ext4, no loop devices), the code store stays a
plain folder, and a log line says mountinfo shows its path.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from kindling.sandbox import linux

log = logging.getLogger("kindling.code")

IMAGE = "code.img"
IMAGE_BYTES = 80 << 30  # sparse; Lambda's code storage quota is 75 GB per region
# noinit_itable: no background zeroing of inode tables (a sparse file reads as zeros anyway), so the image
# grows only with the code. Not discard (removing a large tree would punch holes while others invoke): the
# space of deleted code goes back to the host by an fstrim at each start, at low priority.
MOUNT_OPTIONS = "nosuid,nodev,noinit_itable"


def mount(data: Path) -> bool:
    """Mount ``data``/code.img at ``data``/code, making the image first; returns False where it cannot."""
    if os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("mkfs.ext4", "losetup", "mount")):
        log.info("the code store is a plain folder: environments' mountinfo shows its path")
        return False
    if threading.active_count() != 1:  # a new mount namespace would be the calling thread's alone
        log.warning("the code store is a plain folder (threads already running at start)")
        return False
    code, image = data / "code", data / IMAGE
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing we mount reaches the host
        code.mkdir(mode=0o700, exist_ok=True)
        if not image.exists():
            _make_image(image)
        _wait_for_the_last_mount(image)
        if any(code.iterdir()):
            _move_into_image(code, image)
        _mount(image, code)
        if shutil.which("fstrim"):
            subprocess.Popen(["nice", "-n", "19", "fstrim", str(code)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("the code store is a plain folder (%s): environments' mountinfo shows its path", exc)
        return False
    return True


def _wait_for_the_last_mount(image: Path, seconds: float = 30.0) -> None:
    """Wait until no loop device backs ``image`` any more. A Kindling killed just before this one keeps its
    mount until the last process in its namespace (its spawner, an environment, the code worker) is gone;
    mounting the same ext4 a second time meanwhile would show this server a stale store (and corrupt it)."""
    deadline = time.monotonic() + seconds
    while True:
        attached = subprocess.run(["losetup", "--associated", str(image)], check=False, timeout=30,
                                  capture_output=True, text=True).stdout.strip()
        if not attached:
            return
        if time.monotonic() > deadline:
            raise OSError(f"{image} is still mounted by an earlier Kindling ({attached})")
        time.sleep(0.05)


def _make_image(image: Path) -> None:
    tmp = image.with_name(image.name + ".tmp")
    with open(tmp, "wb") as f:
        f.truncate(IMAGE_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                    str(tmp)], check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.rename(tmp, image)


def _mount(image: Path, at: Path) -> None:
    """A loop device with direct I/O (no second page cache of the image's bytes), mounted, then detached:
    the kernel frees it once the mount is gone."""
    dev = subprocess.run(["losetup", "--find", "--show", "--direct-io=on", str(image)], check=True, timeout=30,
                         capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, dev, str(at)], check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False, timeout=30, stderr=subprocess.DEVNULL)


def _move_into_image(code: Path, image: Path) -> None:
    """An older data dir's code folder: copied into the image, then removed."""
    staging = code.with_name(".code-moving")
    staging.mkdir(mode=0o700, exist_ok=True)
    _mount(image, staging)
    try:
        subprocess.run(["cp", "-a", f"{code}/.", f"{staging}/"], check=True, timeout=3600,
                       stderr=subprocess.PIPE)
        os.sync()
    finally:
        linux.umount(str(staging))
        staging.rmdir()
    old = code.with_name(".code-moved")
    os.rename(code, old)
    code.mkdir(mode=0o700)
    for folder, _, _ in os.walk(old):
        os.chmod(folder, 0o700)  # the trees are read-only
    shutil.rmtree(old)
    log.warning("moved the code store of %s into %s (a filesystem of its own)", code.parent, image.name)
