"""An async event as it is queued: a self-contained envelope whose retry policy is fixed when it is accepted."""

from __future__ import annotations

import dataclasses
from typing import Any

DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_AGE = 21600  # seconds: Lambda keeps an event up to 6 hours


@dataclasses.dataclass(frozen=True)
class Policy:
    """What happens to an event, taken from the function's EventInvokeConfig and DeadLetterConfig at enqueue."""

    max_retries: int = DEFAULT_MAX_RETRIES  # MaximumRetryAttempts: retries after function errors
    max_age: int = DEFAULT_MAX_AGE  # MaximumEventAgeInSeconds
    on_success: str | None = None  # destination ARNs
    on_failure: str | None = None
    dead_letter: str | None = None  # DeadLetterConfig.TargetArn

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Policy:
        return cls(**{f.name: doc[f.name] for f in dataclasses.fields(cls) if f.name in doc})


@dataclasses.dataclass
class Event:
    id: str  # the Invoke's request id: every attempt runs with it, as on Lambda
    function_name: str
    qualifier: str | None  # as invoked: None, a version or an alias
    payload: bytes | None  # None while only its id is held in memory (loaded from the store when it runs)
    trace_id: str  # the X-Amzn-Trace-Id the event arrived with (or one made for it): the call chain
    enqueued_at: float  # epoch seconds
    policy: Policy
    next_attempt_at: float = 0.0  # epoch seconds
    invokes: int = 0  # times the function ran it (approximateInvokeCount)
    errors: int = 0  # function errors so far, retried up to policy.max_retries
    throttles: int = 0  # throttles and system errors in a row, for the backoff
    last_result: dict[str, Any] | None = None  # responseContext + responsePayload of the latest run
