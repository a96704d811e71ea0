"""How log group and stream names map to files, so that no name can leave its folder.

A group is a folder under ``<data-dir>/logs``, a stream a ``.jsonl`` file in its group's folder. A name is
percent-encoded with nothing kept safe (so it holds no ``/``), and ``.`` and ``..`` (which CloudWatch's
patterns allow) are encoded too: an encoded name is always one ordinary path component. A name whose encoding
is longer than MAX_ENCODED (a 512-character stream name of multi-byte characters encodes to ~6 KB, far past
the 255 bytes a file name may have) is stored as ``%H`` + its SHA-256 instead, a form percent-encoding never
produces, and its real name is kept beside it: in the group's ``.group.json`` (``name``), in the stream's
``<file>.name``. Short names keep the layout Kindling always had, so existing data dirs read as before;
``migrate`` renames the few that change.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from urllib.parse import quote, unquote

log = logging.getLogger("kindling.logs")

MAX_ENCODED = 200  # bytes: room for ".jsonl.trim" / ".name" within NAME_MAX (255)
HASHED = "%H"
META = ".group.json"
SUFFIX = ".jsonl"
NAME_SUFFIX = ".name"


def _utf8(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")  # a JSON "\ud800" is a valid str, and a name to keep


def encode(name: str) -> str:
    """The file name (without suffix) a group or stream name is stored under."""
    encoded = quote(_utf8(name), safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    if len(encoded) > MAX_ENCODED:
        encoded = HASHED + hashlib.sha256(_utf8(name)).hexdigest()
    return encoded


def decode(encoded: str) -> str | None:
    """The name an encoded file name stands for; None for a hashed one (its name is kept beside it)."""
    if encoded.startswith(HASHED):
        return None
    return unquote(encoded, errors="surrogatepass")


def group_name(folder: Path) -> str | None:
    """The group a folder under logs/ holds (None: not one of ours, or a hashed one without its name)."""
    name = decode(folder.name)
    if name is not None:
        return name
    try:
        meta = json.loads((folder / META).read_text())
        kept = meta.get("name") if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, str) and encode(kept) == folder.name else None


def stream_name(path: Path) -> str | None:
    """The stream a ``.jsonl`` file holds (None: a hashed one whose name file is missing)."""
    stem = path.name[: -len(SUFFIX)]
    name = decode(stem)
    if name is not None:
        return name
    try:
        kept = path.with_name(stem + NAME_SUFFIX).read_bytes().decode("utf-8", "surrogatepass")
    except (OSError, ValueError):
        return None
    return kept if encode(kept) == stem else None


def keep_stream_name(folder: Path, name: str) -> None:
    """Write a hashed stream's real name beside its file (nothing for a short name)."""
    encoded = encode(name)
    if encoded.startswith(HASHED):
        (folder / (encoded + NAME_SUFFIX)).write_bytes(_utf8(name))


def migrate(root: Path) -> int:
    """Rename groups and streams stored under another encoding (older Kindlings); returns how many moved."""
    moved = 0
    if not root.is_dir():
        return 0
    for folder in list(root.iterdir()):
        if not folder.is_dir() or (name := group_name(folder)) is None:
            continue
        target = root / encode(name)
        if target != folder and not target.exists():
            folder.rename(target)
            _keep_group_name(target, name)
            moved += 1
        for path in list(target.glob("*" + SUFFIX)):
            if (stream := stream_name(path)) is None:
                continue
            to = target / (encode(stream) + SUFFIX)
            if to != path and not to.exists():
                keep_stream_name(target, stream)
                path.rename(to)
                moved += 1
    if moved:
        log.info("moved %d log groups and streams to the current file naming", moved)
    return moved


def _keep_group_name(folder: Path, name: str) -> None:
    meta_path = folder / META
    try:
        meta = json.loads(meta_path.read_text())
        meta = meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        meta = {}
    meta["name"] = name
    meta_path.write_text(json.dumps(meta))
