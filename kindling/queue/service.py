"""EventQueue: what ``InvocationType=Event`` calls, and the parts of the queue wired together."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from kindling import errors
from kindling.functions.service import FunctionService
from kindling.invoke.payload import check_json
from kindling.queue import recursion
from kindling.queue.destinations import Destinations
from kindling.queue.dispatcher import Dispatcher
from kindling.queue.envelope import Event
from kindling.queue.invoke_config import EventInvokeConfigs
from kindling.queue.metrics import AsyncMetrics
from kindling.queue.store import EventStore
from kindling.queue.writer import GroupCommitWriter
from kindling.scheduler.limits import Counter
from kindling.settings import Settings
from kindling.store.event_invoke_configs import EventInvokeConfigStore
from kindling.store.functions import LATEST

if TYPE_CHECKING:
    from kindling.invoke.service import InvokeService

log = logging.getLogger("kindling.queue")

ASYNC_PAYLOAD_LIMIT = 1048576  # 1 MB, Lambda's limit for asynchronous invocation


class EventQueue:
    def __init__(self, settings: Settings, engine: Engine, functions: FunctionService, invoker: InvokeService,
                 counter: Counter) -> None:
        self.functions = functions
        self.metrics = AsyncMetrics()
        self.configs = EventInvokeConfigs(functions, EventInvokeConfigStore(engine))
        self.store = EventStore(engine, owner=uuid.uuid4().hex)
        self.writer = GroupCommitWriter(self.store)
        self.destinations = Destinations(settings, self.metrics)
        self.destinations.invoker = invoker
        self.dispatcher = Dispatcher(invoker, self.store, self.writer, self.destinations, self.metrics, counter,
                                     settings.async_max_in_flight, settings.async_delay_scale)
        self.guard = recursion.RecursionGuard(self.configs.recursive_loop)
        functions.listeners.append(self.configs.function_changed)

    async def accept(self, name: str, qualifier: str | None, payload: bytes, request_id: str,
                     trace_id: str | None) -> dict[str, Any]:
        """Queue one event; return Invoke's 202 answer once it is on disk."""
        if len(payload) > ASYNC_PAYLOAD_LIMIT:
            raise errors.RequestTooLargeException(
                f"Request must be smaller than {ASYNC_PAYLOAD_LIMIT} bytes for the InvokeFunction operation")
        dead_letter = self._target(name, qualifier)
        if payload:
            check_json(payload)
        else:
            payload = b"{}"
        now = time.time()
        ev = Event(request_id, name, qualifier, payload, trace_id or recursion.new_trace(), now,
                   self.configs.policy(name, qualifier, dead_letter), next_attempt_at=now)
        await self.writer.insert(ev)
        self.metrics[name].events_received += 1
        self.dispatcher.submit(ev, accepted=True)
        return {"StatusCode": 202, "Payload": b""}

    def _target(self, name: str, qualifier: str | None) -> str | None:
        """Check that ``name:qualifier`` exists (Lambda's not-found error if not); its DeadLetterConfig target.
        Which version an alias runs is picked when the event runs."""
        rec = self.functions.lookup(name, qualifier)
        if rec is None:
            raise errors.ResourceNotFoundException(
                f"Function not found: {self.functions.arn(name, qualifier or LATEST)}")
        return (rec.config.get("DeadLetterConfig") or {}).get("TargetArn") or None

    def lineage(self, name: str, trace_id: str | None) -> str:
        """The trace header an invoke of ``name`` runs with (one more hop), or RecursiveInvocationException."""
        return self.guard(name, self.functions.arn(name), trace_id)

    async def start(self) -> None:
        """Take over the events queued before (a restart, a crash), then accept and run new ones."""
        self.writer.start()
        n = 0
        for ev in self.store.take_over():
            self.dispatcher.submit(ev)
            n += 1
        if n:
            log.info("%d queued async event(s) from before the start will run", n)
        self.dispatcher.start()

    async def stop(self) -> None:
        await self.dispatcher.stop()
        await self.writer.stop()

