"""Recursive loop detection, as Lambda's: the call chain travels in the trace header's ``Lineage``.

Every invoke of a function runs with the X-Amzn-Trace-Id it arrived with, plus one more count for that
function in ``Lineage=<hash>:<count>|<hash>:<count>...`` (the hash names the function: 8 hex digits of the
SHA-256 of its unqualified ARN). The function sees it as ``_X_AMZN_TRACE_ID``, and an AWS SDK calling Kindling
from inside it sends it back as the X-Amzn-Trace-Id header, so the next invoke of the chain counts on from there.
An invoke that arrives when its function already ran MAX_INVOCATIONS times in the chain is stopped (unless the
function's RecursiveLoop is Allow): a synchronous one answers RecursiveInvocationException, an asynchronous
one goes to the on-failure destination / dead-letter queue.
"""

from __future__ import annotations

import hashlib
import time
import urllib.parse
import uuid
from collections.abc import Callable

from prometheus_client import Counter

from kindling import errors
from kindling.observability.metrics import REGISTRY

MAX_INVOCATIONS = 16
LINEAGE = "Lineage"
# Lambda's RecursiveInvocationsDropped, counted where the invoke is stopped (sync and async alike)
DROPPED = Counter("kindling_recursive_invocations_dropped", "Invokes stopped because the function was part of a "
                  "recursive loop (Lambda's RecursiveInvocationsDropped).", ["function"], registry=REGISTRY)


def lineage_key(function_arn: str) -> str:
    return hashlib.sha256(function_arn.encode()).hexdigest()[:8]


def new_trace() -> str:
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


def _split(trace: str) -> tuple[list[str], dict[str, int]]:
    """(the header's other parts, Lineage as {hash: count})."""
    parts, lineage = [], {}
    for part in trace.split(";"):
        key, _, value = part.strip().partition("=")
        if key != LINEAGE:
            if part.strip():
                parts.append(part.strip())
            continue
        # botocore percent-encodes the header it copies from _X_AMZN_TRACE_ID, '|' included (%7C)
        for entry in urllib.parse.unquote(value).split("|"):
            h, _, n = entry.partition(":")
            if h and n.isdigit():
                lineage[h] = int(n)
    return parts, lineage


def count(trace: str | None, function_arn: str) -> int:
    """How many times the function already ran in this call chain."""
    return _split(trace)[1].get(lineage_key(function_arn), 0) if trace else 0


def advanced(trace: str | None, function_arn: str) -> str:
    """The trace header one invoke of the function runs with: its count one higher (a new Root if none came)."""
    parts, lineage = _split(trace or new_trace())
    key = lineage_key(function_arn)
    lineage[key] = lineage.get(key, 0) + 1
    return ";".join([*parts, LINEAGE + "=" + "|".join(f"{h}:{n}" for h, n in lineage.items())])


class RecursionGuard:
    """Called on every invoke with the function's name, unqualified ARN and incoming trace header."""

    def __init__(self, recursive_loop: Callable[[str], str]) -> None:
        self.recursive_loop = recursive_loop  # function name → "Terminate" | "Allow"

    def __call__(self, name: str, function_arn: str, trace: str | None) -> str:
        if count(trace, function_arn) >= MAX_INVOCATIONS and self.recursive_loop(name) != "Allow":
            DROPPED.labels(name).inc()
            raise errors.RecursiveInvocationException(
                f"Recursive invocation detected: {function_arn} was invoked more than {MAX_INVOCATIONS} times "
                "by the same chain of requests, and its recursive loop detection is set to Terminate.")
        return advanced(trace, function_arn)
