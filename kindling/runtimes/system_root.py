"""The system a custom runtime (provided.al2, provided.al2023) runs on: what Amazon Linux's minimal image has.

Lambda's provided.* runtimes are Amazon Linux with little more than bash (also as /bin/sh), coreutils, curl,
glibc and the CA certificates: AWS's tutorial ``bootstrap`` (``set -euo pipefail``, curl) runs there, and there
is no Python. The host's /usr is Debian's (dash as /bin/sh, its own python3), so custom runtimes get their own
/usr instead, assembled once from the host's own files: those programs and the libraries they need (read from
their ELF dynamic sections, as ``ldd`` would say), copied with their symlinks into ``.system-root/usr`` of the
code store.

Why a copy, there: the code store is a filesystem of its own (kindling.store.code_volume), so a bind from it
shows no host path in /proc/self/mountinfo, and it persists with the data dir, so this is done once (~30 MB, a
fraction of a second; later starts only compare the sources' sizes and times). A read-only bind of the host's
/usr with /bin/sh bound over and Python hidden would cost a mount per hidden file on every cold start instead.
At "go" the spawner binds it over /usr (two mount calls; kindling.sandbox.layout): /bin, /lib, /lib64 and /sbin
are symlinks into /usr on a merged-/usr host such as Debian 12, so they follow.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import struct
import subprocess
from pathlib import Path

log = logging.getLogger("kindling.runtimes")

NAME = ".system-root"  # in the code store (its keys are hex digests: no clash)
MARKER = ".kindling-system-root.json"  # written last: what it was built from
COREUTILS = (
    "[ arch b2sum base32 base64 basename basenc cat chcon chgrp chmod chown cksum comm cp csplit cut date dd df dir "
    "dircolors dirname du echo env expand expr factor false fmt fold groups head hostid id install join link ln "
    "logname ls md5sum mkdir mkfifo mknod mktemp mv nice nl nohup nproc numfmt od paste pathchk pinky pr printenv "
    "printf ptx pwd readlink realpath rm rmdir runcon seq sha1sum sha224sum sha256sum sha384sum sha512sum shred shuf "
    "sleep sort split stat stdbuf stty sum sync tac tail tee test timeout touch tr true truncate tsort tty uname "
    "unexpand uniq unlink users vdir wc who whoami yes").split()
PROGRAMS = ("bash", *COREUTILS, "curl", "grep", "sed", "tar", "gzip", "gunzip", "zcat", "find", "xargs")
# All of glibc (not only what those programs load), and the C and C++ runtime support libraries: native code a
# custom runtime brings (say awslambdaric's C++ extension) needs them, and Amazon Linux has them.
LIBRARIES = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
             "libresolv.so.2", "libanl.so.1", "libnss_files.so.2", "libnss_dns.so.2", "libmvec.so.1",
             "libBrokenLocale.so.1", "libthread_db.so.1", "libcrypt.so.1", "libz.so.1", "libgcc_s.so.1",
             "libstdc++.so.6")
TREES = ("/usr/lib/locale/C.utf8", "/usr/share/ca-certificates")  # C.UTF-8; what /etc/ssl/certs links point to


def build(code_root: Path) -> str | None:
    """The system root's host path (made or brought up to date now); None where it cannot be made (logged)."""
    dest = Path(code_root) / NAME
    try:
        programs = [p for name in PROGRAMS if (p := shutil.which(name, path="/usr/bin:/bin"))]
        if not any(p.endswith("/bash") for p in programs):
            raise OSError("no bash on this host")
        try:  # up to date: the same programs, and every file it was made from unchanged (a few hundred stats)
            marker = json.loads((dest / MARKER).read_text())
            if marker["programs"] == programs and all(_stamp(p) == tuple(s) for p, s in marker["sources"].items()):
                return str(dest)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        cache = _ld_cache()
        extra = [p for name in LIBRARIES if (p := cache.get(name))]
        needed = _closure(programs + extra, cache)
        tmp = Path(code_root) / f".tmp-system-root-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "usr" / "bin").mkdir(parents=True)
        for path in needed:
            _take(path, tmp)
        os.symlink("bash", tmp / "usr" / "bin" / "sh")  # /bin/sh is bash, as on Amazon Linux
        for tree in TREES:
            if os.path.isdir(tree):
                shutil.copytree(tree, str(tmp) + tree, symlinks=True, dirs_exist_ok=True)
        for d, _, _ in os.walk(tmp):
            os.chmod(d, 0o755)
        sources = {p: _stamp(p) for p in needed + [t for t in TREES if os.path.isdir(t)]}
        (tmp / MARKER).write_text(json.dumps({"programs": programs, "sources": sources}))
        os.chmod(tmp / MARKER, 0o644)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
        log.info("custom runtimes' system root assembled (%d programs and their libraries)", len(programs))
        return str(dest)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("no minimal system root for provided.* runtimes (%s): they see the host's /usr", exc)
        return None


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


ARCH_TAG = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")


def _ld_cache() -> dict[str, str]:
    """Library name → path, as the dynamic loader finds it (``ldconfig -p``: one process, a few ms)."""
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=30, check=False).stdout
    found: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        tags, _, path = rest.partition(") => ")
        if path and name not in found and (ARCH_TAG in tags.split(",") or not ARCH_TAG):
            found[name] = path.strip()
    return found


def _closure(files: list[str], cache: dict[str, str]) -> list[str]:
    """``files``, their ELF interpreter and every shared library they need, transitively (read from their dynamic
    sections: running ``ldd`` on a hundred programs takes seconds)."""
    seen: set[str] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        interp, needed = _elf_needs(path)
        for dep in ([interp] if interp else []) + [cache[n] for n in needed if n in cache]:
            if dep not in seen:
                todo.append(dep)
    return sorted(seen)


def _elf_needs(path: str) -> tuple[str | None, list[str]]:
    """(PT_INTERP, DT_NEEDED names) of a 64-bit little-endian ELF file; (None, []) for anything else (scripts)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x7fELF\x02\x01":
        return None, []
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dynamic, interp = [], None, None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dynamic = (p_offset, p_filesz)
        elif p_type == 3:
            interp = data[p_offset:p_offset + p_filesz].split(b"\0")[0].decode()
    if dynamic is None:
        return interp, []
    names, strtab = [], 0
    for at in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, val = struct.unpack_from("<qQ", data, at)
        if tag == 0:
            break
        if tag == 1:
            names.append(val)
        elif tag == 5:
            strtab = next((off + val - vaddr for vaddr, off, size in loads if vaddr <= val < vaddr + size), 0)
    return interp, [data[strtab + n:data.index(b"\0", strtab + n)].decode() for n in names]


def _take(path: str, dest: Path, depth: int = 0) -> None:
    """Copy ``path`` under ``dest`` at its place in /usr (its directory's symlinks resolved: /lib is /usr/lib
    here); a symlink stays one, and what it points to comes too. Set-id bits never come."""
    real_dir = os.path.realpath(os.path.dirname(path))
    full = os.path.join(real_dir, os.path.basename(path))
    if depth > 8 or not full.startswith("/usr/"):
        return  # not in /usr (a host whose /lib is not merged into it keeps its own): the host's is bound
    target = str(dest) + full
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if os.path.islink(full):
        link = os.readlink(full)
        os.symlink(link, target)
        _take(os.path.join(real_dir, link), dest, depth + 1)
    else:
        shutil.copyfile(full, target)
        os.chmod(target, os.stat(full).st_mode & 0o755)
