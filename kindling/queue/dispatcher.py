"""The dispatcher: runs each queued event at least once, through the same invoke path as synchronous invokes.

An asyncio task holds the events of this node: those due now in ``ready``, the rest in a heap by time. It runs
up to ``async_max_in_flight`` at once; an event of a function at its reserved concurrency waits for one of
that function's runs to end instead of being throttled. Each attempt's outcome decides what happens next:

- success → OnSuccess destination, done;
- function error → retried after ~1 then ~2 minutes (MaximumRetryAttempts), then OnFailure / dead-letter queue
  with condition RetriesExhausted;
- throttle or system error → retried with backoff (1 s doubling to 5 min), not counted as a retry;
- older than MaximumEventAgeInSeconds when due → OnFailure / dead-letter queue with EventAgeExceeded;
- recursive loop stopped, or reserved concurrency 0 → OnFailure / dead-letter queue at once;
- function gone → dropped.
- a fault of Kindling itself (an unexpected exception) → counted (kindling_async_dispatcher_faults), logged with
  what happens next, retried with backoff up to LOCAL_FAULT_RETRIES times in a row, then handled as a function
  error (retries per MaximumRetryAttempts, then OnFailure / dead-letter queue): never an endless silent loop.

Every change of an event is written through the group-commit writer; a crash at any point leaves the event
queued (or re-queued), so it runs again: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kindling import errors
from kindling.queue import retry
from kindling.queue.destinations import Destinations, next_trace, record
from kindling.queue.envelope import Event
from kindling.queue.metrics import DISPATCHER_FAULTS, AsyncMetrics
from kindling.queue.store import EventStore
from kindling.queue.writer import GroupCommitWriter
from kindling.scheduler.limits import Counter

if TYPE_CHECKING:
    from kindling.invoke.service import InvokeService

log = logging.getLogger("kindling.queue")

KEEP_PAYLOAD = 65536  # payloads up to this size stay in memory while queued; larger ones are read back to run
KEEP_EVENTS = 50000  # past this many queued events, new ones keep only their id in memory
# Overload: more events due than this while events keep arriving (within the last 0.1 s). Accepting then goes
# first: runs start at OVERLOAD_LAUNCHES per second until the arrivals stop, and the backlog drains after. As on
# Lambda, whose frontends accept at their own rate and which "reduces the rate at which it reads events from the
# queue" when the queue is long; the 202s stay fast and every event is on disk, waiting its turn.
OVERLOAD_BACKLOG = 200
OVERLOAD_LAUNCHES = 100.0
LOCAL_FAULT_RETRIES = 3  # unexpected failures in a row an event is retried after (1 s, 2 s, 4 s) before they count


class Dispatcher:
    def __init__(self, invoker: InvokeService, store: EventStore, writer: GroupCommitWriter,
                 destinations: Destinations, metrics: AsyncMetrics, counter: Counter, max_in_flight: int,
                 scale: float) -> None:
        self.invoker = invoker
        self.store = store
        self.writer = writer
        self.destinations = destinations
        self.metrics = metrics
        self.counter = counter
        self.max_in_flight = max(1, max_in_flight)
        self.scale = scale
        self.ready: deque[Event] = deque()
        self.later: list[tuple[float, int, Event]] = []
        self.parked: dict[str, deque[Event]] = defaultdict(deque)  # by function: waiting for reserved concurrency
        self.in_flight = 0
        self.done = 0  # events finished (run or given up), for tests and the benchmark
        self._unadmitted: dict[str, int] = defaultdict(int)  # runs launched, not yet counted by the Counter
        self._seq = itertools.count()
        self._last_accept = 0.0
        self._tokens, self._refilled = OVERLOAD_LAUNCHES, time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempts: set[asyncio.Task[None]] = set()
        self._faults: dict[str, int] = {}  # event id → unexpected failures in a row

    # -- intake -------------------------------------------------------------------------------------
    def submit(self, ev: Event, accepted: bool = False) -> None:
        """Hold ``ev`` until it is due; ``accepted``: it was just queued by an invoke (not a retry)."""
        if accepted:
            self._last_accept = time.monotonic()
        if ev.payload is not None and (len(ev.payload) > KEEP_PAYLOAD or len(self.ready) > KEEP_EVENTS):
            ev.payload = None
        if ev.next_attempt_at <= time.time():
            self.ready.append(ev)
        else:
            heapq.heappush(self.later, (ev.next_attempt_at, next(self._seq), ev))
        self._wake.set()

    def pending(self) -> int:
        return len(self.ready) + len(self.later) + sum(len(q) for q in self.parked.values()) + self.in_flight

    # -- the loop -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for t in list(self._attempts):
            t.cancel()
        await asyncio.gather(*[t for t in (self._task, *self._attempts) if t is not None], return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:  # never stop dispatching: count, log, pause, go on
                DISPATCHER_FAULTS.labels("").inc()
                log.exception("the async dispatcher failed; it goes on in 1 s")
                await asyncio.sleep(1)

    async def _step(self) -> None:
        """Start what is due and allowed, then wait for a new event, a finished run or the next due time."""
        now = time.time()
        while self.later and self.later[0][0] <= now:
            self.ready.append(heapq.heappop(self.later)[2])
        self._unpark()
        rationed = False
        while self.ready and self.in_flight < self.max_in_flight:
            if self.overloaded() and not self._token():
                rationed = True
                break
            ev = self.ready.popleft()
            if self._at_reserved_limit(ev.function_name):
                self.parked[ev.function_name].append(ev)
                continue
            self._launch(ev)
        timeout = None
        if self.later:
            timeout = max(0.0, self.later[0][0] - time.time())
        if rationed:  # the next launch token
            timeout = min(timeout, 0.01) if timeout is not None else 0.01
        elif any(self.parked.values()):  # sync invokes free reserved slots without telling: look again soon
            timeout = min(timeout, 0.05) if timeout is not None else 0.05
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass

    def overloaded(self) -> bool:
        return len(self.ready) > OVERLOAD_BACKLOG and time.monotonic() - self._last_accept < 0.1

    def _token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(OVERLOAD_LAUNCHES / 10, self._tokens + (now - self._refilled) * OVERLOAD_LAUNCHES)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _at_reserved_limit(self, name: str) -> bool:
        reserved = self.counter.reserved.get(name)
        if not reserved:
            return False
        return self.counter.in_flight.get(name, 0) + self._unadmitted.get(name, 0) >= reserved

    def _unpark(self) -> None:
        for name, waiting in list(self.parked.items()):
            while waiting and not self._at_reserved_limit(name) and self.in_flight < self.max_in_flight:
                self._launch(waiting.popleft())
            if not waiting:
                del self.parked[name]

    def _launch(self, ev: Event) -> None:
        self.in_flight += 1
        self._unadmitted[ev.function_name] += 1
        task = asyncio.get_running_loop().create_task(self._attempt(ev))
        self._attempts.add(task)
        task.add_done_callback(self._attempts.discard)

    # -- one attempt --------------------------------------------------------------------------------
    async def _attempt(self, ev: Event) -> None:
        admitted = False

        def admit() -> None:  # the invoke about to start counts against the function's concurrency from now
            nonlocal admitted
            if not admitted:
                admitted = True
                self._unadmitted[ev.function_name] -= 1
                if not self._unadmitted[ev.function_name]:
                    del self._unadmitted[ev.function_name]
        try:
            try:
                await self._run_once(ev, admit)
                self._faults.pop(ev.id, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a fault of ours: counted, surfaced, bounded (_local_fault)
                await self._local_fault(ev, exc)
        finally:
            admit()
            self.in_flight -= 1
            self._wake.set()

    async def _run_once(self, ev: Event, admit: Callable[[], None]) -> None:
        now = time.time()
        if now - ev.enqueued_at > ev.policy.max_age * self.scale:
            return await self._fail(ev, "EventAgeExceeded")
        if ev.payload is None:
            ev.payload = await asyncio.to_thread(self.store.payload, ev.id)
            if ev.payload is None:  # finished meanwhile (a duplicate of a restart)
                return
        params = {"FunctionName": ev.function_name, "Qualifier": ev.qualifier, "Payload": ev.payload,
                  "InvocationType": "RequestResponse"}
        self.metrics.event_age(ev.function_name, (now - ev.enqueued_at) * 1000)
        admit()  # invoke() is admitted by the Counter before it first waits
        try:
            out = await self.invoker.invoke(params, ev.id, ev.trace_id)
        except errors.TooManyRequestsException as exc:
            ev.last_result = ev.last_result or _error_result(429, exc)
            if self.counter.reserved.get(ev.function_name) == 0:  # Lambda fails such events at once
                return await self._fail(ev, "RetriesExhausted")
            return self._again(ev, retry.delay(0, ev.throttles + 1, self.scale), throttled=True)
        except errors.RecursiveInvocationException as exc:
            log.warning("async event %s of %s stopped: %s", ev.id, ev.function_name, exc.message)
            ev.last_result = _error_result(exc.status, exc)
            return await self._fail(ev, "RetriesExhausted")
        except errors.ResourceNotFoundException:
            log.warning("async event %s dropped: function %s no longer exists", ev.id, ev.function_name)
            self.metrics[ev.function_name].events_dropped += 1
            return self._finish(ev)
        except errors.LambdaError as exc:
            if exc.status < 500:  # the event can never run (e.g. its qualifier went away)
                log.warning("async event %s of %s dropped: %s %s", ev.id, ev.function_name, exc.code, exc.message)
                self.metrics[ev.function_name].events_dropped += 1
                return self._finish(ev)
            ev.last_result = ev.last_result or _error_result(exc.status, exc)
            return self._again(ev, retry.delay(0, ev.throttles + 1, self.scale), throttled=True)
        ev.invokes += 1
        ev.throttles = 0
        ev.last_result = {"statusCode": out.get("StatusCode", 200), "executedVersion": out.get("ExecutedVersion"),
                          "functionError": out.get("FunctionError"),
                          "payload": (out.get("Payload") or b"null").decode("utf-8", "replace")}
        if not out.get("FunctionError"):
            return await self._succeed(ev)
        ev.errors += 1
        if ev.errors > ev.policy.max_retries:
            return await self._fail(ev, "RetriesExhausted")
        self._again(ev, retry.delay(ev.errors, 0, self.scale))

    async def _local_fault(self, ev: Event, exc: Exception) -> None:
        """An unexpected failure while handling ``ev``: retried with backoff a few times, then a function error."""
        DISPATCHER_FAULTS.labels(ev.function_name).inc()
        faults = self._faults[ev.id] = self._faults.get(ev.id, 0) + 1
        ev.last_result = {"statusCode": 500, "functionError": None,
                          "payload": json.dumps({"errorType": "ServiceException",
                                                 "errorMessage": f"{type(exc).__name__}: {exc}"})}
        if faults <= LOCAL_FAULT_RETRIES:
            delay = retry.delay(0, faults, self.scale)
            log.error("async event %s of %s: unexpected failure %d of at most %d in a row; it will be tried again "
                      "in %.2f s", ev.id, ev.function_name, faults, LOCAL_FAULT_RETRIES, delay, exc_info=exc)
            return self._again(ev, delay)
        del self._faults[ev.id]
        ev.errors += 1
        if ev.errors <= ev.policy.max_retries:
            delay = retry.delay(ev.errors, 0, self.scale)
            log.error("async event %s of %s: unexpected failure %d in a row; it counts as a function error (%d of "
                      "%d retries) and will be tried again in %.2f s", ev.id, ev.function_name, faults, ev.errors,
                      ev.policy.max_retries, delay, exc_info=exc)
            return self._again(ev, delay)
        log.error("async event %s of %s: unexpected failure %d in a row; its retries are exhausted and it goes to "
                  "its failure destinations", ev.id, ev.function_name, faults, exc_info=exc)
        try:
            await self._fail(ev, "RetriesExhausted")
        except Exception:  # noqa: BLE001 - keep the event: it is tried again later, never lost, never hot-looped
            DISPATCHER_FAULTS.labels(ev.function_name).inc()
            delay = retry.BACKOFF_MAX * self.scale
            log.exception("async event %s of %s could not be handed to its failure destinations; it is kept and "
                          "tried again in %.2f s", ev.id, ev.function_name, delay)
            self._again(ev, delay)

    def _again(self, ev: Event, delay: float, throttled: bool = False) -> None:
        if throttled:
            ev.throttles += 1
        ev.next_attempt_at = time.time() + delay
        self.writer.update(ev)
        self.submit(ev)

    def _finish(self, ev: Event) -> None:
        self._faults.pop(ev.id, None)
        self.writer.delete(ev)
        self.done += 1

    # -- endings ------------------------------------------------------------------------------------
    def _arns(self, ev: Event) -> tuple[str, str]:
        """(the function's unqualified ARN, the ARN the record names: qualified, $LATEST when it was not)"""
        functions = self.invoker.functions
        return functions.arn(ev.function_name), functions.arn(ev.function_name, ev.qualifier or "$LATEST")

    async def _succeed(self, ev: Event) -> None:
        if ev.policy.on_success:
            unqualified, arn = self._arns(ev)
            await self.destinations.deliver(ev, ev.policy.on_success, record(ev, arn, "Success"),
                                            next_trace(ev, unqualified))
        self._finish(ev)

    async def _fail(self, ev: Event, condition: str) -> None:
        log.info("async event %s of %s failed (%s after %d invoke(s))", ev.id, ev.function_name, condition,
                 ev.invokes)
        self.metrics[ev.function_name].events_dropped += 1
        if ev.payload is None:
            ev.payload = await asyncio.to_thread(self.store.payload, ev.id) or b"{}"
        if ev.policy.on_failure:
            unqualified, arn = self._arns(ev)
            await self.destinations.deliver(ev, ev.policy.on_failure, record(ev, arn, condition),
                                            next_trace(ev, unqualified))
        if ev.policy.dead_letter:
            code, message = _dead_letter_error(ev, condition)
            await self.destinations.dead_letter(ev, ev.policy.dead_letter, code, message)
        self._finish(ev)


def _error_result(status: int, exc: errors.LambdaError) -> dict[str, Any]:
    return {"statusCode": status, "functionError": None,
            "payload": json.dumps({"errorType": exc.code, "errorMessage": exc.message})}


def _dead_letter_error(ev: Event, condition: str) -> tuple[str, str]:
    """(ErrorCode, ErrorMessage) of a dead-letter message: the last run's status and error message."""
    result = ev.last_result or {}
    try:
        message = json.loads(result.get("payload") or "{}").get("errorMessage") or ""
    except (ValueError, AttributeError):
        message = ""
    return str(result.get("statusCode", 200)), message or condition
