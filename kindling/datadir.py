"""The data dir is private to the user Kindling runs as.

It holds functions' code and environment variables (the database), their logs and Kindling's keys. From
the server's start every file it creates is 0600 and every folder 0700 (umask 077), and a data dir left
by an older Kindling or loosened by hand is tightened at start, with a log line saying what changed.

The extracted code trees under ``code/`` are exempt, because environments read them through bind mounts
(where only the mounted folder's own mode counts, not the data dir's above it): 0555 folders, 0444 files,
reachable only through ``code/`` itself (0710 for the sandbox's group), as is the empty task root a zygote
starts in (``code/.empty``, 0755). Mount points are not walked into (``code/`` is one, see code_volume.py).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("kindling.datadir")

UMASK = 0o077


def make_private(data: Path) -> list[tuple[str, int, int]]:
    """Tighten ``data`` and everything under it (not following links, not into mounts); returns what changed
    as (path relative to ``data``, old mode, new mode)."""
    os.umask(UMASK)
    data.mkdir(parents=True, exist_ok=True)
    changed: list[tuple[str, int, int]] = []

    def tighten(path: str, want: int | None = None) -> None:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        old = stat.S_IMODE(st.st_mode)
        new = want if want is not None else old & ~UMASK
        if new != old:
            os.chmod(path, new)
            changed.append((os.path.relpath(path, data), old, new))

    top = str(data)
    tighten(top, 0o700)
    code = os.path.join(top, "code")
    for folder, dirs, files in os.walk(top):
        if folder == code:
            dirs.clear()  # extracted trees keep their read-only modes: code/ itself is what guards them
        for name in list(dirs):
            path = os.path.join(folder, name)
            if os.path.ismount(path):
                dirs.remove(name)
            elif folder == top and name == "code":  # the code store sets its mode: 0710 for the sandbox's group
                tighten(path, stat.S_IMODE(os.lstat(path).st_mode) & 0o710)
            else:
                tighten(path, 0o700)
        for name in files:
            tighten(os.path.join(folder, name))
    if changed:
        path, old, new = changed[0]
        log.warning("the data dir %s was readable by other users: tightened %d file(s) and folder(s) "
                    "(e.g. %s %o -> %o)", data, len(changed), path, old, new)
    return changed
