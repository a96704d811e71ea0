"""`kindling stats NAME`: a function's metrics, read from /metrics, as one row per version and alias.

Percentiles are estimated from the Duration histogram's buckets by linear interpolation within the
bucket, as Prometheus' histogram_quantile does; the maximum is exact.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

Resource = tuple[str, str]  # (version, alias)


@dataclasses.dataclass
class Row:
    invocations: float = 0.0
    errors: float = 0.0
    throttles: float = 0.0
    duration_sum: float = 0.0
    duration_count: float = 0.0
    duration_max: float = 0.0
    buckets: dict[float, float] = dataclasses.field(default_factory=dict)  # le → cumulative count
    cold_starts: float = 0.0
    init_sum: float = 0.0
    init_count: float = 0.0

    def quantile(self, q: float) -> float | None:
        """Estimated from the buckets, never past the (exact) maximum."""
        est = quantile(q, self.buckets)
        return min(est, self.duration_max) if est is not None and self.duration_max else est


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram ({upper bound: count at or below})."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] == 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # past the largest finite bucket: its bound is the best estimate
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = le, count
    return lower


def summarize(text: str, function: str) -> dict[Resource, Row]:
    rows: dict[Resource, Row] = defaultdict(Row)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("function") != function or "version" not in s.labels:
                continue
            row = rows[(s.labels["version"], s.labels.get("alias", ""))]
            name, v = s.name, s.value
            if name == "kindling_invocations_total":
                row.invocations = v
            elif name == "kindling_errors_total":
                row.errors = v
            elif name == "kindling_throttles_total":
                row.throttles = v
            elif name == "kindling_duration_milliseconds_sum":
                row.duration_sum = v
            elif name == "kindling_duration_milliseconds_count":
                row.duration_count = v
            elif name == "kindling_duration_milliseconds_bucket":
                row.buckets[float(s.labels["le"])] = v
            elif name == "kindling_duration_max_milliseconds":
                row.duration_max = v
            elif name == "kindling_cold_starts_total":
                row.cold_starts = v
            elif name == "kindling_init_duration_milliseconds_sum":
                row.init_sum = v
            elif name == "kindling_init_duration_milliseconds_count":
                row.init_count = v
    return dict(rows)


def concurrency(text: str, function: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kindling_concurrent_executions" and s.labels.get("function") == function:
                return s.value
    return 0.0


def table(text: str, function: str) -> str:
    rows = summarize(text, function)
    head = ("resource", "invocations", "errors", "throttles", "avg ms", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "cold", "init avg ms")
    lines: list[tuple[str, ...]] = [head]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    for (version, alias), r in sorted(rows.items()):
        name = f"{function}:{alias}" if alias else f"{function}:{version}"
        avg = r.duration_sum / r.duration_count if r.duration_count else None
        init = r.init_sum / r.init_count if r.init_count else None
        lines.append((name, f"{r.invocations:.0f}", f"{r.errors:.0f}", f"{r.throttles:.0f}", ms(avg),
                      ms(r.quantile(0.5)), ms(r.quantile(0.9)), ms(r.quantile(0.99)),
                      ms(r.duration_max if r.duration_count else None), f"{r.cold_starts:.0f}", ms(init)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
           for line in lines]
    if len(lines) == 1:
        out.append(f"(no invocations of {function} since the server started)")
    out.append(f"concurrent executions now: {concurrency(text, function):.0f}")
    return "\n".join(out)
