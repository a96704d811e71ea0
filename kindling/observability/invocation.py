"""What the invoke path records about one invocation: its metrics and its spans, in one place.

    async with invocation.observe(resource, request_id, trace_id) as seen:
        async with scheduler.environment(fv) as env:
            seen.acquired()                      # the scheduler's part ends here
            result = await env.invoke(req, timeout)
        seen.done(result)                        # Invocations, Errors, Duration, cold start; init/invoke spans

A TooManyRequestsException leaving the block counts as a throttle (the Counter or the memory budget
decided it; both raise through here).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from kindling import errors
from kindling.observability import metrics, tracing

if TYPE_CHECKING:
    from kindling.sandbox.environment import InvokeResult


class Seen:
    def __init__(self, resource: tuple[str, str, str], request_id: str) -> None:
        self.resource = resource
        self.attributes = {"faas.name": resource[0], "faas.version": resource[1], "faas.invocation_id": request_id,
                           "kindling.alias": resource[2] or None}
        self._acquire = tracing.start("scheduler.acquire", self.attributes)

    def acquired(self) -> None:
        tracing.end(self._acquire)
        self._acquire = None

    def done(self, result: InvokeResult) -> None:
        metrics.record_invoke(self.resource, result.duration_ms, result.function_error is not None,
                              result.init_duration_ms)
        if tracing.enabled():
            end = time.time_ns()
            start = end - int(result.duration_ms * 1e6)
            if result.init_duration_ms is not None:
                tracing.record("environment.init", start - int(result.init_duration_ms * 1e6), start, self.attributes)
            tracing.record("environment.invoke", start, end,
                           {**self.attributes, "faas.coldstart": result.init_duration_ms is not None,
                            "kindling.function_error": result.function_error})


def resource(function: str, version: str, qualifier: str | None) -> tuple[str, str, str]:
    """Metric labels: the executed version, and the alias when the qualifier named one."""
    return metrics.labels(function, version, qualifier if qualifier not in (None, "", version, "$LATEST") else "")


@contextlib.asynccontextmanager
async def observe(res: tuple[str, str, str], request_id: str, trace_header: str | None = None) -> AsyncIterator[Seen]:
    in_flight = metrics.IN_FLIGHT.labels(*res)
    with tracing.span("invoke", trace_header, attributes={"faas.name": res[0], "faas.version": res[1]}):
        seen = Seen(res, request_id)
        in_flight.inc()
        try:
            yield seen
        except errors.TooManyRequestsException:
            metrics.record_throttle(res)
            raise
        finally:
            in_flight.dec()
            if seen._acquire is not None:
                seen.acquired()
