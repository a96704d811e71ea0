"""The CloudWatch Logs operations Kindling serves, over the log store: plain dicts in and out.

Members and results are named as in botocore's ``logs`` model; errors are CloudWatch Logs' own
(``errors.LogsError``). Paging tokens are opaque base64 JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from kindling import errors
from kindling.observability.filter_pattern import PatternError, compile_pattern
from kindling.observability.logs import Event, LogStore

# The values PutRetentionPolicy takes, as CloudWatch Logs lists them.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                  3288, 3653)
FILTER_LIMIT = 10000  # events per FilterLogEvents / GetLogEvents page, AWS's maximum
FILTER_BYTES = 1048576  # ... and at most 1 MB of messages, as AWS pages them
NO_GROUP = "The specified log group does not exist."
NO_STREAM = "The specified log stream does not exist."


def _token(doc: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()


def _untoken(token: str, valid: Callable[[Any], bool]) -> Any:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, RecursionError):
        doc = None
    if doc is None or not valid(doc):  # a token of ours decodes to what _token encoded, and nothing else
        raise errors.InvalidParameterException("The specified nextToken is invalid.")
    return doc


def _is_position(doc: Any) -> bool:
    return (isinstance(doc, list) and len(doc) == 3 and isinstance(doc[1], str)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in (doc[0], doc[2])))


class LogsService:
    def __init__(self, store: LogStore, region: str, account_id: str) -> None:
        self.store = store
        self.region = region
        self.account_id = account_id

    def group_arn(self, group: str) -> str:
        return f"arn:aws:logs:{self.region}:{self.account_id}:log-group:{group}"

    def _group(self, p: dict[str, Any]) -> str:
        """The group a request names by logGroupName or logGroupIdentifier (a name or an ARN); it must exist."""
        name, ident = p.get("logGroupName"), p.get("logGroupIdentifier")
        if name and ident:
            raise errors.InvalidParameterException(
                "LogGroup name and LogGroup ARN are mutually exclusive parameters.")
        if ident:
            name = ident.split(":log-group:", 1)[1].removesuffix(":*") if ident.startswith("arn:") else ident
        if not name:
            raise errors.InvalidParameterException("Either logGroupName or logGroupIdentifier must be specified.")
        if not self.store.group_exists(name):
            raise errors.LogsResourceNotFoundException(NO_GROUP)
        return str(name)

    # -- groups -------------------------------------------------------------------------------------
    def describe_log_groups(self, p: dict[str, Any]) -> dict[str, Any]:
        names = self.store.group_names()
        if p.get("logGroupNamePrefix") and p.get("logGroupNamePattern"):
            raise errors.InvalidParameterException(
                "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.")
        if prefix := p.get("logGroupNamePrefix"):
            names = [n for n in names if n.startswith(prefix)]
        if pattern := p.get("logGroupNamePattern"):
            names = [n for n in names if pattern.lower() in n.lower()]
        if idents := p.get("logGroupIdentifiers"):
            wanted = {i.split(":log-group:", 1)[1].removesuffix(":*") if i.startswith("arn:") else i for i in idents}
            names = [n for n in names if n in wanted]
        if token := p.get("nextToken"):
            after = _untoken(token, lambda d: isinstance(d, str))
            names = [n for n in names if n > after]
        limit = int(p.get("limit") or 50)
        page, more = names[:limit], len(names) > limit
        out: dict[str, Any] = {"logGroups": [self._describe_group(n) for n in page]}
        if more:
            out["nextToken"] = _token(page[-1])
        return out

    def _describe_group(self, name: str) -> dict[str, Any]:
        info = self.store.group_info(name)
        arn = self.group_arn(name)
        out: dict[str, Any] = {"logGroupName": name, "creationTime": info.creation_time, "metricFilterCount": 0,
                               "arn": arn + ":*", "storedBytes": info.stored_bytes, "logGroupClass": "STANDARD",
                               "logGroupArn": arn}
        days = info.retention_days if info.retention_days is not None else self.store.default_retention_days
        if days:
            out["retentionInDays"] = days
        return out

    def create_log_group(self, p: dict[str, Any]) -> dict[str, Any]:
        if not self.store.create_group(p["logGroupName"]):
            raise errors.LogsResourceAlreadyExistsException("The specified log group already exists")
        return {}

    def delete_log_group(self, p: dict[str, Any]) -> dict[str, Any]:
        if not self.store.delete_group(p["logGroupName"]):
            raise errors.LogsResourceNotFoundException(NO_GROUP)
        return {}

    def put_retention_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        days = p["retentionInDays"]
        if days not in RETENTION_DAYS:
            listed = ", ".join(map(str, RETENTION_DAYS))
            raise errors.InvalidParameterException(
                f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: "
                f"Member must satisfy enum value set: [{listed}]")
        self.store.set_retention(self._group(p), days)
        return {}

    def delete_retention_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        self.store.set_retention(self._group(p), None)
        return {}

    # -- streams ------------------------------------------------------------------------------------
    def describe_log_streams(self, p: dict[str, Any]) -> dict[str, Any]:
        group = self._group(p)
        order = p.get("orderBy") or "LogStreamName"
        prefix = p.get("logStreamNamePrefix")
        if prefix and order == "LastEventTime":
            raise errors.InvalidParameterException("Cannot order by LastEventTime with a logStreamNamePrefix.")
        infos = [i for s in self.store.streams(group) if not prefix or s.startswith(prefix)
                 if (i := self.store.stream_info(group, s)) is not None]
        if order == "LastEventTime":
            infos.sort(key=lambda i: (i.last_event or 0, i.name))
        if p.get("descending"):
            infos.reverse()
        start = _untoken(p["nextToken"], lambda d: type(d) is int and d >= 0) if p.get("nextToken") else 0
        limit = int(p.get("limit") or 50)
        page = infos[start:start + limit]
        arn = self.group_arn(group)
        out: dict[str, Any] = {"logStreams": []}
        for i in page:
            doc: dict[str, Any] = {"logStreamName": i.name, "creationTime": i.creation_time,
                                   "arn": f"{arn}:log-stream:{i.name}", "storedBytes": i.stored_bytes}
            if i.first_event is not None:
                doc["firstEventTimestamp"] = i.first_event
            if i.last_event is not None:
                doc.update(lastEventTimestamp=i.last_event, lastIngestionTime=i.last_event)
            out["logStreams"].append(doc)
        if start + limit < len(infos):
            out["nextToken"] = _token(start + limit)
        return out

    def delete_log_stream(self, p: dict[str, Any]) -> dict[str, Any]:
        group = self._group(p)
        if not self.store.delete_stream(group, p["logStreamName"]):
            raise errors.LogsResourceNotFoundException(NO_STREAM)
        return {}

    # -- events -------------------------------------------------------------------------------------
    def get_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        """One stream's events; tokens are f/<index> and b/<index> into its time-ordered events."""
        group = self._group(p)
        stream = p["logStreamName"]
        if not self.store.stream_exists(group, stream):
            raise errors.LogsResourceNotFoundException(NO_STREAM)
        start, end = p.get("startTime"), p.get("endTime")
        events = [e for e in self.store.stream_events(group, stream)
                  if (start is None or e.timestamp >= start) and (end is None or e.timestamp < end)]
        limit = int(p.get("limit") or FILTER_LIMIT)
        token = p.get("nextToken")
        if token:
            direction, _, raw = token.partition("/")
            if direction not in ("f", "b") or not (raw.isascii() and raw.isdigit() and len(raw) <= 64):
                raise errors.InvalidParameterException("The specified nextToken is invalid.")
            at = min(int(raw), len(events))
            lo, hi = (at, min(len(events), at + limit)) if direction == "f" else (max(0, at - limit), at)
        elif p.get("startFromHead"):
            lo, hi = 0, min(len(events), limit)
        else:
            lo, hi = max(0, len(events) - limit), len(events)
        return {"events": [{"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.timestamp}
                           for e in events[lo:hi]],
                "nextForwardToken": f"f/{hi:056d}", "nextBackwardToken": f"b/{lo:056d}"}

    def filter_log_events(self, p: dict[str, Any]) -> dict[str, Any]:
        """Matching events across a group's streams, oldest first, paged after the last event returned."""
        group = self._group(p)
        names, prefix = p.get("logStreamNames"), p.get("logStreamNamePrefix")
        if names and prefix:
            raise errors.InvalidParameterException(
                "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.")
        try:
            match = compile_pattern(p.get("filterPattern"))
        except PatternError as exc:
            raise errors.InvalidParameterException(str(exc)) from None
        except RecursionError:
            raise errors.InvalidParameterException("Invalid filter pattern: it is nested too deeply") from None
        streams = self.store.streams(group)
        if names:
            streams = [s for s in streams if s in set(names)]
        elif prefix:
            streams = [s for s in streams if s.startswith(prefix)]
        start, end = p.get("startTime") or 0, p.get("endTime")
        after: tuple[int, str, int] | None = None
        if p.get("nextToken"):
            ts, stream, n = _untoken(p["nextToken"], _is_position)
            after = (int(ts), str(stream), int(n))
            start = max(start, after[0])
        limit = int(p.get("limit") or FILTER_LIMIT)
        out: list[Event] = []
        size = 0
        more = False
        for e in self.store.events(group, start, streams):
            if end is not None and e.timestamp >= end:
                break
            if after is not None and (e.timestamp, e.stream, e.n) <= after:
                continue
            if not match(e.message):
                continue
            if len(out) >= limit or size + len(e.message) > FILTER_BYTES:
                more = True
                break
            out.append(e)
            size += len(e.message)
        result: dict[str, Any] = {
            "events": [{"logStreamName": e.stream, "timestamp": e.timestamp, "message": e.message,
                        "ingestionTime": e.timestamp, "eventId": e.event_id} for e in out],
            "searchedLogStreams": [{"logStreamName": s, "searchedCompletely": not more} for s in streams],
        }
        if more and out:
            last = out[-1]
            result["nextToken"] = _token([last.timestamp, last.stream, last.n])
        return result

    # -- Kindling's own -----------------------------------------------------------------------------
    def request_log(self, groups: list[str], request_id: str) -> list[Event]:
        """Every line of one invocation (START to REPORT, platform errors included) across streams, in order."""
        out: list[Event] = []
        for group in dict.fromkeys(groups):
            if self.store.group_exists(group):
                out.extend(self.store.events(group, request_id=request_id))
        out.sort(key=lambda e: (e.timestamp, e.stream, e.n))
        return out
