"""Concurrency accounting and throttling, as Lambda's Counter service does it.

Every invoke in flight counts against its function: against the function's
reserved concurrency when it has one, otherwise against the account's
unreserved pool (the account limit less all reservations). A version's
provisioned concurrency is carved out of its function's reservation: invokes
of that version up to its provisioned count always fit, the rest of the
function shares what the reservation leaves. Going past either
answers 429 TooManyRequestsException with Lambda's Reason. Scale-out is rate
limited per function: 1,000 new execution environments per 10 seconds.
"""

from __future__ import annotations

import time
from collections import defaultdict

from kindling import errors

UNRESERVED_MINIMUM = 100  # the unreserved pool never drops below this, as AWS enforces
SCALE_BURST = 1000
SCALE_WINDOW = 10.0


def throttled(reason: str) -> errors.LambdaError:
    return errors.TooManyRequestsException("Rate Exceeded.", Reason=reason)


class Counter:
    def __init__(self, account_limit: int) -> None:
        self.account_limit = account_limit
        self.reserved: dict[str, int] = {}  # function name → ReservedConcurrentExecutions
        self.provisioned: dict[str, dict[str, int]] = defaultdict(dict)  # function → version → count
        self.in_flight: dict[str, int] = defaultdict(int)
        self.version_in_flight: dict[tuple[str, str], int] = defaultdict(int)

    def unreserved_limit(self, without: str | None = None) -> int:
        """UnreservedConcurrentExecutions: the account limit less every reservation and the provisioned
        concurrency of functions without one (a reservation already holds its function's), leaving out
        function ``without``."""
        reserved = sum(v for name, v in self.reserved.items() if name != without)
        provisioned = sum(sum(versions.values()) for name, versions in self.provisioned.items()
                          if name not in self.reserved and name != without)
        return self.account_limit - reserved - provisioned

    def _beyond_provisioned(self, reserved: bool, name: str | None = None) -> int:
        """Invokes in flight past their versions' provisioned concurrency: of ``name``, or of every
        function with (``reserved``) or without a reservation."""
        return sum(max(0, n - self.provisioned.get(f, {}).get(v, 0)) for (f, v), n in self.version_in_flight.items()
                   if (f == name if name else (f in self.reserved) == reserved))

    def admit(self, name: str, version: str = "$LATEST") -> None:
        """Count one more invoke of ``name`` in flight, or raise Lambda's throttle."""
        reserved = self.reserved.get(name)
        provisioned = self.provisioned.get(name) or {}
        if self.version_in_flight[name, version] < provisioned.get(version, 0):
            pass  # within the version's provisioned concurrency
        elif reserved is not None:
            if self._beyond_provisioned(True, name) >= reserved - sum(provisioned.values()):
                raise throttled("ReservedFunctionConcurrentInvocationLimitExceeded")
        elif self._beyond_provisioned(False) >= self.unreserved_limit():
            raise throttled("ConcurrentInvocationLimitExceeded")
        self.in_flight[name] += 1
        self.version_in_flight[name, version] += 1

    def done(self, name: str, version: str = "$LATEST") -> None:
        self.in_flight[name] -= 1
        self.version_in_flight[name, version] -= 1
        if not self.in_flight[name]:
            del self.in_flight[name]
        if not self.version_in_flight[name, version]:
            del self.version_in_flight[name, version]

    def set_provisioned(self, name: str, version: str, count: int | None) -> None:
        if count:
            self.provisioned[name][version] = count
        else:
            self.provisioned[name].pop(version, None)

    def set_reserved(self, name: str, value: int | None) -> None:
        if value is None:
            self.reserved.pop(name, None)
        else:
            self.reserved[name] = value


class ScaleRate:
    """A token bucket per function: SCALE_BURST new environments, refilled over SCALE_WINDOW seconds."""

    def __init__(self, burst: int = SCALE_BURST, window: float = SCALE_WINDOW) -> None:
        self.burst = burst
        self.rate = burst / window
        self.tokens: dict[str, tuple[float, float]] = {}

    def take(self, name: str) -> None:
        now = time.monotonic()
        tokens, last = self.tokens.get(name, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens < 1:
            raise throttled("FunctionInvocationRateLimitExceeded")
        self.tokens[name] = (tokens - 1, now)
