"""Reading stream files: their events, and the first and last of them, without loading what is not needed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple


class Event(NamedTuple):
    timestamp: int
    stream: str
    n: int
    message: str
    request_id: str | None

    @property
    def event_id(self) -> str:
        """Stable and unique within a group: the stream's digest, then the event's number in it."""
        return f"{_stream_key(self.stream)}{self.n:012d}"


def _stream_key(stream: str) -> str:
    return str(int(hashlib.sha1(stream.encode()).hexdigest()[:12], 16)).zfill(15)


def next_n(path: Path) -> int:
    """The number the next event of an existing stream file gets: one past its last."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 65536))
            lines = f.read().split(b"\n")[:-1]
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["n"]) + 1
        except (ValueError, KeyError, TypeError):
            continue
    return count_lines(path)


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def read_stream(path: Path, stream: str, since_ms: int = 0, request_id: str | None = None) -> list[Event]:
    """A stream file's complete events at or after ``since_ms``, in file order (only those of ``request_id``)."""
    out: list[Event] = []
    needle = f'"requestId": {json.dumps(request_id)}' if request_id is not None else None
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return out
    with f:
        for index, line in enumerate(f):
            if not line.endswith("\n") or (needle is not None and needle not in line):
                continue  # a line being written right now, or another request's
            try:
                doc = json.loads(line)
                ts = int(doc["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue
            if ts >= since_ms:
                rid = doc.get("requestId")
                if request_id is None or rid == request_id:
                    out.append(Event(ts, stream, int(doc.get("n", index)), str(doc.get("message", "")), rid))
    return out


def first_last(path: Path) -> tuple[int | None, int | None]:
    """Timestamps of a stream file's first and last complete lines."""
    try:
        with open(path, "rb") as f:
            first_line = f.readline()
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - 65536))
            tail = f.read().split(b"\n")
    except OSError:
        return None, None
    first = _stamp(first_line) if first_line.endswith(b"\n") else None
    last = next((t for t in (_stamp(x) for x in reversed(tail[:-1])) if t is not None), None)
    return first, last


def _stamp(line: bytes) -> int | None:
    try:
        return int(json.loads(line)["timestamp"])
    except (ValueError, KeyError, TypeError):
        return None
