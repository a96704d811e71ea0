"""The system a custom runtime (provided.al2, provided.al2023) runs on: what Amazon Linux's minimal image has.

Lambda's provided.* runtimes are Amazon Linux with little more than bash (also as /bin/sh), coreutils, curl,
glibc and the CA certificates: AWS's tutorial ``bootstrap`` (``set -euo pipefail``, curl) runs there, and there
is no Python. The host's /usr is Debian's (dash as /bin/sh, its own python3), so custom runtimes get their own
/usr instead, assembled once from the host's own files: those programs and the libraries the dynamic loader says
they need (``ldd``), copied with their symlinks into ``.system-root/usr`` of the code store.

Why a copy, there: the code store is a filesystem of its own (kindling.store.code_volume), so a bind from it
shows no host path in /proc/self/mountinfo, and it persists with the data dir, so this is done once (~30 MB, a
fraction of a second; later starts only compare the sources' sizes and times). A read-only bind of the host's
/usr with /bin/sh bound over and Python hidden would cost a mount per hidden file on every cold start instead.
At "go" the spawner binds it over /usr (two mount calls; kindling.sandbox.layout): /bin, /lib, /lib64 and /sbin
are symlinks into /usr on a merged-/usr host such as Debian 12, so they follow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
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
        libs = _libraries(programs)
        libc_dir = next((os.path.dirname(p) for p in libs if os.path.basename(p) == "libc.so.6"), "/usr/lib")
        extra = [p for name in LIBRARIES if os.path.exists(p := os.path.join(libc_dir, name))]
        needed = sorted(set(programs) | libs | set(extra) | _libraries(extra))
        manifest = hashlib.sha256(json.dumps([(p, _stamp(p)) for p in needed + list(TREES)]).encode()).hexdigest()
        try:
            if json.loads((dest / MARKER).read_text())["manifest"] == manifest:
                return str(dest)
        except (OSError, ValueError, KeyError):
            pass
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
        (tmp / MARKER).write_text(json.dumps({"manifest": manifest, "programs": programs}))
        os.chmod(tmp / MARKER, 0o644)
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
        log.info("custom runtimes' system root assembled (%d programs and their libraries)", len(programs))
        return str(dest)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("no minimal system root for provided.* runtimes (%s): they see the host's /usr", exc)
        return None


def _stamp(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (0, 0)
    return (st.st_size, st.st_mtime_ns)


def _libraries(programs: list[str]) -> set[str]:
    """Every shared library (and the loader) the programs load, as the loader names them."""
    out = subprocess.run(["ldd", *programs], capture_output=True, text=True, timeout=30, check=False).stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1 and parts[parts.index("=>") + 1].startswith("/"):
            found.add(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/") and not parts[0].endswith(":"):
            found.add(parts[0])  # the loader: /lib64/ld-linux-x86-64.so.2
    return found


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
