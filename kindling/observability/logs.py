"""Log groups and streams: one group per function, one stream per execution environment.

Each stream is a file of JSON lines ``{"timestamp": ms, "n": seq, "requestId": str|null,
"message": str}`` under ``<data-dir>/logs/<group>/``; ``n`` numbers the stream's
events from 0 and, with the stream's name, makes each event's stable ``eventId``.
A group's retention and creation time are kept beside its streams in
``.group.json``. Group and stream names are kept as Lambda writes them and
encoded only on disk (kindling.observability.log_names: no name can leave its
folder). Writes are buffered and flushed at the end of each invoke and at most
FLUSH_DELAY seconds after a line, so a reader (``aws logs tail --follow``) sees
a running invoke's lines too. Each stream has a rate limit and each group a
size cap (kindling.observability.log_limits).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Iterable
from json.encoder import encode_basestring  # the C encoder, as json.dumps(s, ensure_ascii=False) but ~5x cheaper
from pathlib import Path
from typing import IO

from kindling.observability import log_names
from kindling.observability.log_files import Event, count_lines, first_last, next_n, read_stream
from kindling.observability.log_limits import Bucket, Dropped, LogLimits, cap_reason, rate_reason

log = logging.getLogger("kindling.logs")

FLUSH_DELAY = 0.25
RETENTION_INTERVAL = 600.0  # seconds between two retention passes
NOTICE_INTERVAL = 1.0  # seconds: at most one "Logs dropped" line a second per stream
WRITE_BUFFER = 65536  # bytes a stream buffers before it writes
LINE_COST = 100  # bytes each line of output counts for, besides its own, against the log rate
_META = log_names.META
_SUFFIX = log_names.SUFFIX


def stream_name(version: str) -> str:
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{version}]{uuid.uuid4().hex}"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass
class GroupInfo:
    name: str
    creation_time: int
    retention_days: int | None  # None: the store's default applies
    stored_bytes: int


@dataclasses.dataclass
class StreamInfo:
    name: str
    creation_time: int
    first_event: int | None
    last_event: int | None
    stored_bytes: int


class _Usage:
    """Bytes a log group holds, shared by the streams written into it (counted as they write)."""

    __slots__ = ("bytes",)

    def __init__(self, n: int) -> None:
        self.bytes = n


class LogStream:
    """One environment's stream: its writes, its rate limit, and its group's cap.

    Writing never raises: a stream whose group was deleted meanwhile recreates the group and itself, as
    CloudWatch Logs does when Lambda writes next; any other failure (a full disk) drops the line and is
    logged, so an invoke always answers whatever happens to its logs.
    """

    def __init__(self, store: LogStore, group: str, name: str, json_notices: bool = False) -> None:
        self.store = store
        self.group = group
        self.name = name
        self.path = store._stream_path(group, name)
        self.n = next_n(self.path)
        self.file: IO[str] | None = None
        self.limits = store.limits
        self.bucket = Bucket(self.limits.rate, self.limits.burst)
        self.usage = store._usage_of(group)
        self.dropped = Dropped()
        self.json_notices = json_notices  # platform.logsDropped records, for LogFormat JSON
        self._noticed = 0.0
        self._cap_noted = False
        self._failures = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._rid: str | None = None
        self._rid_json = "null"

    def admit(self, chunk: bytes) -> int:
        """The cost of the environment's next ``chunk`` of output if it is within its log rate, else 0 (dropped).

        A chunk costs its bytes plus LINE_COST per line (about what each line adds as it is stored, and what
        bounds the work of many tiny lines).
        """
        lines = chunk.count(b"\n")
        cost = len(chunk) + LINE_COST * lines
        if self.bucket.take(cost):
            return cost
        self.dropped.add(len(chunk), lines, rate_reason(self.limits))
        return 0

    def write(self, message: str, request_id: str | None, timestamp: float | None = None) -> None:
        try:
            cap = self.limits.group_bytes
            if cap and self.usage.bytes >= cap:
                self.dropped.add(len(message) + 1, 1, cap_reason(self.limits))
                if not self._cap_noted:  # once, then quiet until the group has room again
                    self._cap_noted = True
                    self._notice(request_id, timestamp)
                return
            self._cap_noted = False
            if self.dropped.bytes and time.monotonic() - self._noticed >= NOTICE_INTERVAL:
                self._notice(request_id, timestamp)
            self._append(message, request_id, timestamp)
        except Exception as exc:  # noqa: BLE001 - logs must never fail an invoke
            self._failed("writing", exc)

    def _notice(self, request_id: str | None, timestamp: float | None) -> None:
        self._noticed = time.monotonic()
        self._append(self.dropped.notice(request_id, self.json_notices), request_id, timestamp)

    def _append(self, message: str, request_id: str | None, timestamp: float | None) -> None:
        ts = int((time.time() if timestamp is None else timestamp) * 1000)
        if request_id != self._rid:
            self._rid, self._rid_json = request_id, json.dumps(request_id)
        if self.file is None:
            self._open()
            assert self.file is not None
        line = (f'{{"timestamp": {ts}, "n": {self.n}, "requestId": {self._rid_json}, '
                f'"message": {encode_basestring(message)}}}\n')
        self.file.write(line)
        self.usage.bytes += len(line) if line.isascii() else len(line.encode("utf-8", "replace"))
        self.n += 1
        if self._flush_timer is None:
            try:
                self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            except RuntimeError:  # no event loop (tools, tests): the caller flushes
                pass

    def _open(self) -> None:
        """Open the stream's file to append, recreating its group and itself if they were deleted."""
        if not self.path.exists():  # new, or deleted meanwhile (DeleteLogStream, DeleteLogGroup)
            if self.store.create_group(self.group):
                log.info("log group %s was deleted under a running environment: recreated for its stream %s, as "
                         "CloudWatch Logs does", self.group, self.name)
            log_names.keep_stream_name(self.path.parent, self.name)
        self.file = open(self.path, "a", encoding="utf-8", buffering=WRITE_BUFFER)
        self.store._open[self.path] = self
        self.usage = self.store._usage_of(self.group)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._failures += 1
        if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            log.warning("%s log stream %s of %s failed (%d time(s)): %s; its lines are dropped until it works "
                        "again", what, self.name, self.group, self._failures, exc)
        with contextlib.suppress(Exception):
            if self.file is not None:
                self.file.close()
        self.file = None

    def flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self.file is not None:
            try:
                self.file.flush()
            except Exception as exc:  # noqa: BLE001 - as in write
                self._failed("flushing", exc)

    def close(self) -> None:
        """Flush and close the file; a later write opens it again."""
        self.flush()
        if self.file is not None:
            with contextlib.suppress(Exception):
                self.file.close()
            self.file = None


class LogStore:
    def __init__(self, root: Path, retention_days: int = 0, limits: LogLimits | None = None) -> None:
        self.root = root
        self.default_retention_days = retention_days  # 0: keep forever
        self.limits = limits or LogLimits()
        self._open: weakref.WeakValueDictionary[Path, LogStream] = weakref.WeakValueDictionary()
        self._usage: dict[str, _Usage] = {}
        self._task: asyncio.Task[None] | None = None
        log_names.migrate(root)

    # -- layout -------------------------------------------------------------------------------------
    def _group_dir(self, group: str) -> Path:
        return self.root / log_names.encode(group)

    def _stream_path(self, group: str, stream: str) -> Path:
        return self._group_dir(group) / (log_names.encode(stream) + _SUFFIX)

    def _meta(self, group: str) -> dict[str, object]:
        d = self._group_dir(group)
        try:
            meta = json.loads((d / _META).read_text())
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            try:
                return {"creationTime": int(d.stat().st_mtime * 1000)}
            except OSError:
                return {}

    def _write_meta(self, group: str, meta: dict[str, object]) -> None:
        d = self._group_dir(group)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (_META + ".tmp")
        tmp.write_text(json.dumps({**meta, "name": group}))
        os.replace(tmp, d / _META)

    def _usage_of(self, group: str) -> _Usage:
        """The group's byte count, read from its files the first time it is written to."""
        usage = self._usage.get(group)
        if usage is None:
            usage = self._usage[group] = _Usage(self._stored_bytes(group))
        return usage

    def _stored_bytes(self, group: str) -> int:
        total = 0
        for p in self._group_dir(group).glob("*" + _SUFFIX):
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    # -- writing ------------------------------------------------------------------------------------
    def open_stream(self, group: str, stream: str, json_notices: bool = False) -> LogStream:
        if not self.group_exists(group):
            self.create_group(group)
        log_names.keep_stream_name(self._group_dir(group), stream)
        s = LogStream(self, group, stream, json_notices)
        self._open[s.path] = s
        return s

    def create_group(self, group: str) -> bool:
        """Create ``group``; False when it already exists."""
        if self.group_exists(group):
            return False
        self._write_meta(group, {"creationTime": now_ms()})
        return True

    def delete_group(self, group: str) -> bool:
        d = self._group_dir(group)
        if not d.is_dir():
            return False
        for path in list(d.iterdir()):
            self._forget(path)
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()
        usage = self._usage.pop(group, None)
        if usage is not None:
            usage.bytes = 0  # streams still holding it start again from nothing
        return True

    def delete_stream(self, group: str, stream: str) -> bool:
        path = self._stream_path(group, stream)
        if not path.exists():
            return False
        self._forget(path)
        self._unlink_stream(path)
        usage = self._usage.pop(group, None)
        if usage is not None:
            usage.bytes = self._stored_bytes(group)
        return True

    @staticmethod
    def _unlink_stream(path: Path) -> None:
        path.unlink(missing_ok=True)
        path.with_name(path.name[: -len(_SUFFIX)] + log_names.NAME_SUFFIX).unlink(missing_ok=True)

    def _forget(self, path: Path) -> None:
        s = self._open.pop(path, None)
        if s is not None:
            s.close()

    def set_retention(self, group: str, days: int | None) -> None:
        meta = self._meta(group)
        if days is None:
            meta.pop("retentionInDays", None)
        else:
            meta["retentionInDays"] = days
        self._write_meta(group, meta)

    def flush(self) -> None:
        for s in list(self._open.values()):
            s.flush()

    # -- reading ------------------------------------------------------------------------------------
    def group_exists(self, group: str) -> bool:
        return self._group_dir(group).is_dir()

    def group_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(n for p in self.root.iterdir() if p.is_dir() if (n := log_names.group_name(p)) is not None)

    def group_info(self, group: str) -> GroupInfo:
        meta = self._meta(group)
        size = sum(p.stat().st_size for p in self._group_dir(group).glob("*" + _SUFFIX))
        days = meta.get("retentionInDays")
        created = meta.get("creationTime")
        return GroupInfo(group, created if isinstance(created, int) else 0, days if isinstance(days, int) else None,
                         size)

    def retention_days(self, group: str) -> int:
        """The group's retention in days; 0 keeps events forever."""
        days = self._meta(group).get("retentionInDays")
        return int(days) if isinstance(days, int) else self.default_retention_days

    def streams(self, group: str) -> list[str]:
        d = self._group_dir(group)
        if not d.is_dir():
            return []
        return sorted(n for p in d.glob("*" + _SUFFIX) if (n := log_names.stream_name(p)) is not None)

    def stream_exists(self, group: str, stream: str) -> bool:
        return self._stream_path(group, stream).exists()

    def stream_info(self, group: str, stream: str) -> StreamInfo | None:
        """None when the stream went meanwhile (deleted, or trimmed away by retention)."""
        path = self._stream_path(group, stream)
        try:
            st = path.stat()
        except OSError:
            return None
        first, last = first_last(path)
        return StreamInfo(stream, first if first is not None else int(st.st_mtime * 1000), first, last, st.st_size)

    def stream_events(self, group: str, stream: str) -> list[Event]:
        events = read_stream(self._stream_path(group, stream), stream)
        events.sort(key=lambda e: (e.timestamp, e.n))
        return events

    def events(self, group: str, since_ms: int = 0, streams: Iterable[str] | None = None,
               request_id: str | None = None) -> list[Event]:
        """Events of a group at or after ``since_ms`` across its streams (or the named ones), oldest first."""
        names = list(streams) if streams is not None else self.streams(group)
        out: list[Event] = []
        for stream in names:
            path = self._stream_path(group, stream)
            try:
                if since_ms and path.stat().st_mtime * 1000 < since_ms - 1000:
                    continue  # nothing written since: cannot hold a newer event
            except OSError:
                continue
            out.extend(read_stream(path, stream, since_ms, request_id))
        out.sort(key=lambda e: (e.timestamp, e.stream, e.n))
        return out

    # -- retention ----------------------------------------------------------------------------------
    def apply_retention(self, now: float | None = None) -> int:
        """Delete events older than their group's retention; returns how many went."""
        now_ts = time.time() if now is None else now
        removed = 0
        for group in self.group_names():
            days = self.retention_days(group)
            if days <= 0:
                continue
            cutoff = int((now_ts - days * 86400) * 1000)
            for path in self._group_dir(group).glob("*" + _SUFFIX):
                removed += self._trim(path, cutoff)
            if (usage := self._usage.get(group)) is not None:
                usage.bytes = self._stored_bytes(group)
        return removed

    def _trim(self, path: Path, cutoff: int) -> int:
        first, last = first_last(path)
        if first is None or first >= cutoff:
            return 0
        stream = log_names.stream_name(path)
        if (open_stream := self._open.get(path)) is not None:
            open_stream.close()  # it opens the trimmed file again on its next write
        if last is not None and last < cutoff:
            removed = count_lines(path)
            self._unlink_stream(path)
            return removed
        tmp = path.with_name(path.name + ".trim")
        removed = 0
        with open(path, encoding="utf-8", errors="replace") as src, open(tmp, "w", encoding="utf-8") as dst:
            for line in src:
                try:
                    old = int(json.loads(line)["timestamp"]) < cutoff
                except (ValueError, KeyError, TypeError):
                    old = False
                if old:
                    removed += 1
                else:
                    dst.write(line)
        os.replace(tmp, path)
        log.debug("trimmed %d events from %s", removed, stream)
        return removed

    async def _retain_forever(self) -> None:
        while True:
            try:
                if n := self.apply_retention():
                    log.info("deleted %d log events past their retention", n)
            except Exception:
                log.exception("applying log retention failed; it will be tried again in %s s", RETENTION_INTERVAL)
            await asyncio.sleep(RETENTION_INTERVAL)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._retain_forever())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for s in list(self._open.values()):
            s.close()
        self._open.clear()
