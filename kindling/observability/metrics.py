"""Lambda's metrics per function, version and alias, as Prometheus metrics (served at /metrics).

Each metric is counted where its decision is made: invocations, errors, duration, cold starts and
throttles in the invoke path (``record_invoke`` / ``record_throttle``, from kindling.observability.invocation);
the async ones by the async queue in its own counters (kindling.queue.metrics), and concurrency by the
scheduler's Counter, both read when /metrics is scraped. Labels: ``function``, ``version`` (the executed
version) and ``alias`` ("" when not invoked through one); the async and concurrency ones are per function.
Durations are in milliseconds, as Lambda reports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

disable_created_metrics()  # no *_created series: they double the output and no Lambda metric has them
REGISTRY = CollectorRegistry(auto_describe=True)
LABELS = ("function", "version", "alias")
# Milliseconds: fine where warm invokes are (1–50 ms), coarse up to Lambda's 15-minute limit.
DURATION_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000,
                    3000, 5000, 7500, 10000, 15000, 30000, 60000, 120000, 300000, 900000)

INVOCATIONS = Counter("kindling_invocations", "Invocations of the function code (Lambda's Invocations): "
                      "successful or with a function error, not throttled ones.", LABELS, registry=REGISTRY)
ERRORS = Counter("kindling_errors", "Invocations that ended in a function error (Lambda's Errors).", LABELS,
                 registry=REGISTRY)
THROTTLES = Counter("kindling_throttles", "Invoke requests throttled with TooManyRequestsException "
                    "(Lambda's Throttles).", LABELS, registry=REGISTRY)
DURATION = Histogram("kindling_duration_milliseconds", "Time the function code spent on an invocation "
                     "(Lambda's Duration).", LABELS, buckets=DURATION_BUCKETS, registry=REGISTRY)
DURATION_MAX = Gauge("kindling_duration_max_milliseconds", "Longest invocation since the server started.",
                     LABELS, registry=REGISTRY)
COLD_STARTS = Counter("kindling_cold_starts", "Invocations served by a new execution environment.", LABELS,
                      registry=REGISTRY)
INIT_DURATION = Histogram("kindling_init_duration_milliseconds", "Init phase of new execution environments "
                          "(REPORT's Init Duration).", LABELS, buckets=DURATION_BUCKETS, registry=REGISTRY)
IN_FLIGHT = Gauge("kindling_invocations_in_flight", "Invokes in flight per function, version and alias (the "
                  "per-resource view of ConcurrentExecutions).", LABELS, registry=REGISTRY)
TEMPLATE_REJECTED = Counter("kindling_template_rejected", "Templates and zygotes killed by the sandbox spawner "
                            "because a clone failed its check or the template broke the protocol (cold starts "
                            "of the version then fall back to the zygote or fresh interpreters).",
                            registry=REGISTRY)
ProcessCollector(registry=REGISTRY)


class InFlight(Protocol):
    in_flight: dict[str, int]
    version_in_flight: dict[tuple[str, str], int]
    provisioned: dict[str, dict[str, int]]


class AsyncSnapshot(Protocol):
    def snapshot(self) -> dict[str, dict[str, Any]]: ...


class _Concurrency(Collector):
    """ConcurrentExecutions, read from the scheduler's Counter when scraped (the Counter is the authority)."""

    def __init__(self) -> None:
        self.counter: InFlight | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        per_function = GaugeMetricFamily("kindling_concurrent_executions",
                                         "Invokes in flight per function (Lambda's ConcurrentExecutions).",
                                         labels=["function"])
        total = GaugeMetricFamily("kindling_account_concurrent_executions",
                                  "Invokes in flight across all functions.")
        utilization = GaugeMetricFamily("kindling_provisioned_concurrency_utilization",
                                        "Provisioned environments busy, as a fraction of those provisioned "
                                        "(Lambda's ProvisionedConcurrencyUtilization).", labels=["function", "version"])
        counts = dict(self.counter.in_flight) if self.counter is not None else {}
        for name, n in sorted(counts.items()):
            per_function.add_metric([name], n)
        total.add_metric([], sum(counts.values()))
        if self.counter is not None:
            for name, versions in sorted(self.counter.provisioned.items()):
                for version, count in sorted(versions.items()):
                    busy = self.counter.version_in_flight.get((name, version), 0)
                    utilization.add_metric([name, version], min(busy, count) / count)
        yield per_function
        yield total
        yield utilization

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


class _Async(Collector):
    """The async queue's own counters (kindling.queue.metrics), per function, read when scraped."""

    def __init__(self) -> None:
        self.source: AsyncSnapshot | None = None

    def collect(self) -> Iterator[Any]:
        received = CounterMetricFamily("kindling_async_events_received", "Events accepted for asynchronous "
                                       "invocation (Lambda's AsyncEventsReceived).", labels=["function"])
        age = SummaryMetricFamily("kindling_async_event_age_milliseconds", "Time from accepting an asynchronous "
                                  "event to each invoke with it (Lambda's AsyncEventAge).", labels=["function"])
        age_max = GaugeMetricFamily("kindling_async_event_age_max_milliseconds", "Oldest asynchronous event "
                                    "invoked so far.", labels=["function"])
        dropped = CounterMetricFamily("kindling_async_events_dropped", "Asynchronous events dropped without a "
                                      "successful run (Lambda's AsyncEventsDropped).", labels=["function"])
        delivery = CounterMetricFamily("kindling_destination_delivery_failures", "Records that could not be "
                                       "sent to an on-success/on-failure destination.", labels=["function"])
        dead = CounterMetricFamily("kindling_dead_letter_errors", "Events that could not be sent to the "
                                   "dead-letter queue.", labels=["function"])
        snapshot = self.source.snapshot() if self.source is not None else {}
        for name, m in sorted(snapshot.items()):
            received.add_metric([name], m.get("AsyncEventsReceived", 0))
            a = m.get("AsyncEventAge") or {}
            age.add_metric([name], a.get("SampleCount", 0), a.get("Sum", 0.0))
            age_max.add_metric([name], a.get("Maximum", 0.0))
            dropped.add_metric([name], m.get("AsyncEventsDropped", 0))
            delivery.add_metric([name], m.get("DestinationDeliveryFailures", 0))
            dead.add_metric([name], m.get("DeadLetterErrors", 0))
        yield from (received, age, age_max, dropped, delivery, dead)

    def describe(self) -> Iterator[Any]:
        return iter(())


CONCURRENCY = _Concurrency()
ASYNC = _Async()
REGISTRY.register(ASYNC)
_longest: dict[tuple[str, str, str], float] = {}
REGISTRY.register(CONCURRENCY)


def labels(function: str, version: str, alias: str | None = None) -> tuple[str, str, str]:
    return function, version, alias or ""


def record_invoke(resource: tuple[str, str, str], duration_ms: float, function_error: bool,
                  init_duration_ms: float | None = None) -> None:
    """One invocation that ran (successfully or with a function error)."""
    INVOCATIONS.labels(*resource).inc()
    if function_error:
        ERRORS.labels(*resource).inc()
    DURATION.labels(*resource).observe(duration_ms)
    if duration_ms > _longest.get(resource, -1.0):
        _longest[resource] = duration_ms
        DURATION_MAX.labels(*resource).set(duration_ms)
    if init_duration_ms is not None:
        COLD_STARTS.labels(*resource).inc()
        INIT_DURATION.labels(*resource).observe(init_duration_ms)


def record_throttle(resource: tuple[str, str, str]) -> None:
    THROTTLES.labels(*resource).inc()


def watch(counter: InFlight | None, async_metrics: AsyncSnapshot | None = None) -> None:
    """Read ConcurrentExecutions from the scheduler's Counter and the async counters from the queue."""
    CONCURRENCY.counter = counter
    ASYNC.source = async_metrics


def exposition() -> tuple[str, bytes]:
    """(content type, body) of the Prometheus text format."""
    return CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
