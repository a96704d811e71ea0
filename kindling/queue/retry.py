"""When an event is tried again: the one place that knows Lambda's retry timings."""

from __future__ import annotations

FUNCTION_ERROR_DELAYS = (60.0, 120.0)  # after the first and the second function error, as Lambda spaces them
BACKOFF_FIRST = 1.0  # throttles and system errors: 1 s, doubling ...
BACKOFF_MAX = 300.0  # ... up to 5 minutes


def delay(function_errors: int, throttles: int, scale: float = 1.0) -> float:
    """Seconds until the next attempt of an event.

    ``function_errors`` > 0 with ``throttles`` == 0: the event's last run was a function error (the n-th);
    otherwise it was throttled or met a system error ``throttles`` times in a row. ``scale`` is the
    ``async_delay_scale`` setting (1.0 in production, small in tests).
    """
    if throttles:
        return min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (throttles - 1)) * scale
    index = min(max(function_errors, 1), len(FUNCTION_ERROR_DELAYS)) - 1
    return FUNCTION_ERROR_DELAYS[index] * scale
