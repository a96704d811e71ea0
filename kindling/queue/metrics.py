"""Counters of asynchronous invocation, per function, counted where each decision is made.

Names are Lambda's CloudWatch metrics, so the logs-and-metrics work can expose them as they are:
``AsyncMetrics.snapshot()`` → ``{function name: {"AsyncEventsReceived": n, "AsyncEventAge": {...}, ...}}``.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any

from prometheus_client import Counter

from kindling.observability.metrics import REGISTRY

# Faults of Kindling itself while handling an event (not function errors or throttles): each is also logged with
# what happens next. Label ``function`` is "" for a fault of the dispatcher's own loop.
DISPATCHER_FAULTS = Counter("kindling_async_dispatcher_faults", "Unexpected failures of the async dispatcher "
                            "while handling an event (Kindling's own faults, not function errors).", ["function"],
                            registry=REGISTRY)


@dataclasses.dataclass
class FunctionAsyncMetrics:
    events_received: int = 0  # AsyncEventsReceived: events queued (answered 202)
    event_age_count: int = 0  # AsyncEventAge: time from queueing to each invoke of the event ...
    event_age_sum_ms: float = 0.0
    event_age_max_ms: float = 0.0
    events_dropped: int = 0  # AsyncEventsDropped: events given up without a successful run
    destination_delivery_failures: int = 0  # DestinationDeliveryFailures
    dead_letter_errors: int = 0  # DeadLetterErrors

    def as_metrics(self) -> dict[str, Any]:
        return {
            "AsyncEventsReceived": self.events_received,
            "AsyncEventAge": {"SampleCount": self.event_age_count, "Sum": self.event_age_sum_ms,
                              "Maximum": self.event_age_max_ms, "Unit": "Milliseconds"},
            "AsyncEventsDropped": self.events_dropped,
            "DestinationDeliveryFailures": self.destination_delivery_failures,
            "DeadLetterErrors": self.dead_letter_errors,
        }


class AsyncMetrics:
    def __init__(self) -> None:
        self.functions: dict[str, FunctionAsyncMetrics] = defaultdict(FunctionAsyncMetrics)

    def __getitem__(self, function_name: str) -> FunctionAsyncMetrics:
        return self.functions[function_name]

    def event_age(self, function_name: str, age_ms: float) -> None:
        m = self.functions[function_name]
        m.event_age_count += 1
        m.event_age_sum_ms += age_ms
        m.event_age_max_ms = max(m.event_age_max_ms, age_ms)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: m.as_metrics() for name, m in self.functions.items()}
