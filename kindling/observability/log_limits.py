"""What one environment may log: a rate with a burst, and what one log group may hold.

A function that prints without end must cost only its own logs. Each execution environment's output passes
a token bucket (``log_rate_mb`` per second, ``log_burst_mb`` at once); what is over it is dropped before it
is parsed or written. Each log group holds at most ``log_group_max_mb``; lines past it are dropped. Either
way the stream gets one platform line saying how much was dropped and why, as Lambda's Telemetry API sends
``platform.logsDropped``.
"""

from __future__ import annotations

import dataclasses
import json
import time

from kindling.observability.log_format import iso_time

MB = 1 << 20


@dataclasses.dataclass(frozen=True)
class LogLimits:
    rate: float = 1.0 * MB  # bytes per second, per execution environment
    burst: float = 5.0 * MB  # bytes at once, per execution environment
    group_bytes: int = 1024 * MB  # bytes a log group holds at most; 0: no cap

    @classmethod
    def from_mb(cls, rate_mb: float, burst_mb: float, group_max_mb: float) -> LogLimits:
        """From the settings (MB); a rate or cap of 0 (or less) means none.

        The burst is at least 0.5 MB: what one read of output can cost at worst (4 KB of empty lines).
        """
        return cls(max(0.0, rate_mb * MB), max(burst_mb * MB, 0.5 * MB), max(0, int(group_max_mb * MB)))


class Bucket:
    """A token bucket of bytes: ``rate`` per second, up to ``burst``; starts full."""

    __slots__ = ("rate", "burst", "tokens", "_at")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self._at = time.monotonic()

    def take(self, n: int) -> bool:
        if self.rate <= 0:
            return True  # no limit
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now
        if self.tokens < n:
            return False
        self.tokens -= n
        return True


class Dropped:
    """Output dropped since the last notice: how much and why."""

    __slots__ = ("bytes", "records", "reason")

    def __init__(self) -> None:
        self.bytes = 0
        self.records = 0
        self.reason = ""

    def add(self, n_bytes: int, records: int, reason: str) -> None:
        self.bytes += n_bytes
        self.records += records
        self.reason = reason

    def notice(self, request_id: str | None, json_format: bool) -> str:
        """The platform line that says so (then counting starts again)."""
        if json_format:
            text = json.dumps({"time": iso_time(), "type": "platform.logsDropped",
                               "record": {"reason": self.reason, "droppedRecords": self.records,
                                          "droppedBytes": self.bytes}})
        else:
            text = (f"{iso_time()} {request_id or '-'} Logs dropped: {self.bytes} bytes ({self.records} lines) of "
                    f"log output were dropped: {self.reason}")
        self.bytes = self.records = 0
        return text


def rate_reason(limits: LogLimits) -> str:
    return (f"the execution environment logged more than {limits.rate / MB:g} MB/s "
            f"(burst {limits.burst / MB:g} MB; setting log_rate_mb)")


def cap_reason(limits: LogLimits) -> str:
    return (f"the log group reached its size cap of {limits.group_bytes / MB:g} MB (setting log_group_max_mb); "
            "older events go with its retention, or delete streams or the group")
