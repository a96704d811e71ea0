"""Log groups and streams: one group per function, one stream per execution environment.

Each stream is a file of JSON lines ``{"timestamp": ms, "message": str,
"requestId": str|null}`` under ``<data-dir>/logs/<group>/``; stream and group
names are kept as Lambda writes them and escaped only on disk.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote, unquote


def stream_name(version: str) -> str:
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{version}]{uuid.uuid4().hex}"


class LogStream:
    def __init__(self, path: Path, name: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.file: IO[str] = open(path, "a", encoding="utf-8")

    def write(self, message: str, request_id: str | None, timestamp: float | None = None) -> None:
        ts = int((time.time() if timestamp is None else timestamp) * 1000)
        self.file.write(json.dumps({"timestamp": ts, "message": message, "requestId": request_id}) + "\n")

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _group_dir(self, group: str) -> Path:
        return self.root / quote(group, safe="")

    def open_stream(self, group: str, stream: str) -> LogStream:
        return LogStream(self._group_dir(group) / (quote(stream, safe="") + ".jsonl"), stream)

    def streams(self, group: str) -> list[str]:
        d = self._group_dir(group)
        return sorted(unquote(p.name[: -len(".jsonl")]) for p in d.glob("*.jsonl")) if d.exists() else []

    def events(self, group: str, since_ms: int = 0) -> Iterator[dict[str, object]]:
        """All events of a group at or after ``since_ms``, oldest first, each with its stream name."""
        out: list[dict[str, object]] = []
        d = self._group_dir(group)
        for path in d.glob("*.jsonl") if d.exists() else ():
            stream = unquote(path.name[: -len(".jsonl")])
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # a line being written right now
                    if event["timestamp"] >= since_ms:
                        event["logStreamName"] = stream
                        out.append(event)
        out.sort(key=lambda e: e["timestamp"])  # type: ignore[arg-type, return-value]
        return iter(out)
