"""A container image's root for an environment: the spawner's side (runs as root, in the shell).

A shell has its root assembled for zip functions (kindling.sandbox.shell). For a spec with
``"image_root"`` (an unpacked image under Kindling's images dir, checked here: Kindling is trusted, but
the spawner does not take a path it was not made for), that image becomes the root instead: bound
read-only, nosuid and nodev; the shell's own ``/dev`` and ``/proc`` moved onto it; a fresh ``/tmp`` as
for zip functions; ``/etc/resolv.conf`` and ``/etc/hosts`` Kindling's. The image's mount points are real
directories and files (kindling.images.unpack.finish makes them so, and they are checked again here), so
no mount can be pointed elsewhere by a symlink in the image. Namespaces, cgroup, user, capabilities and
seccomp are the shell's, exactly as for zip functions.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from kindling.sandbox import linux

MS_MOVE = 8192
RO = linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
NEW_ROOT = "/.image"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def checked(images_dir: str, path: str) -> str:
    """``path`` if it is a directory inside ``images_dir`` (no links, no ``..``), else OSError."""
    base = os.path.realpath(images_dir) if images_dir else ""
    real = os.path.realpath(path)
    if not base or real != path or not real.startswith(base + os.sep) or not os.path.isdir(real):
        raise OSError(f"image root {path!r} is not in Kindling's images dir")
    return real


def _expect(path: str, kind: int) -> None:
    st = os.lstat(path)
    if stat.S_IFMT(st.st_mode) != kind:
        raise OSError(f"the image's {path.rsplit('/.image', 1)[-1]} is not a real directory or file")


def pivot(images_dir: str, root: str, spec: dict, out_fd: int, mount_tmp: Callable[[str], None]) -> None:
    """Like shell._pivot, into the image: mounts (``mount_tmp`` the environment's /tmp at the path given), pivot,
    the environment's stdio; resolves argv[0] on PATH."""
    image = checked(images_dir, spec["image_root"])
    new = root + NEW_ROOT
    os.mkdir(new)
    linux.mount(image, new, None, linux.MS_BIND)
    linux.mount(image, new, None, RO)
    for d in ("/dev", "/proc", "/tmp", "/etc"):
        _expect(new + d, stat.S_IFDIR)
    for f in ("/etc/resolv.conf", "/etc/hosts"):
        _expect(new + f, stat.S_IFREG)
    linux.mount(root + "/dev", new + "/dev", None, MS_MOVE)
    linux.mount(root + "/proc", new + "/proc", None, MS_MOVE)
    mount_tmp(new + "/tmp")
    for f in ("/etc/resolv.conf", "/etc/hosts"):
        linux.mount(root + f, new + f, None, linux.MS_BIND)
        linux.mount(root + f, new + f, None, RO)
    os.chdir(new)
    linux.pivot_root(".", ".")  # the old root ends up stacked on the new one: detach it
    linux.umount(".", linux.MNT_DETACH)
    os.chdir("/")
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_fd, 1)
    os.dup2(out_fd, 2)
    linux.sethostname("localhost")
    argv = spec["argv"]
    if argv and argv[0] and "/" not in argv[0]:  # as a container runtime does: the image's PATH
        for d in spec["env"].get("PATH", DEFAULT_PATH).split(":"):
            candidate = os.path.join(d or ".", argv[0])
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                argv[0] = candidate
                break
