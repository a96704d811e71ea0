"""The durable event queue: one row per accepted async event, in the same SQL store as the functions.

A row is written (and fsync'd: SQLite runs with synchronous=FULL) before the event is answered 202; it is
updated after each failed attempt and deleted once the event is done (run, or handed to its failure
destinations). Updates and deletes may be lost in a crash: the event then runs again, which at-least-once
delivery allows. ``lease_owner`` names the dispatcher that holds the event (the node that accepted it; on start
a node takes over every event of the embedded store).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)

from kindling.queue.envelope import Event, Policy
from kindling.store.db import metadata

events = Table(
    "async_events", metadata,
    Column("id", String(64), primary_key=True),  # the Invoke's request id
    Column("function_name", String(64), nullable=False),
    Column("qualifier", String(128)),
    Column("payload", LargeBinary, nullable=False),
    Column("trace_id", String(2048), nullable=False),
    Column("policy", JSON, nullable=False),  # retry policy and destinations, fixed at enqueue
    Column("enqueued_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("invokes", Integer, nullable=False, default=0),
    Column("errors", Integer, nullable=False, default=0),
    Column("throttles", Integer, nullable=False, default=0),
    Column("last_result", JSON),
    Column("lease_owner", String(64)),
)


@dataclasses.dataclass(frozen=True)
class Op:
    """One write the group-commit writer applies: insert, update (attempt bookkeeping) or delete."""

    kind: str  # "insert" | "update" | "delete"
    event: Event


def _row(ev: Event, owner: str) -> dict[str, Any]:
    return {"id": ev.id, "function_name": ev.function_name, "qualifier": ev.qualifier, "payload": ev.payload,
            "trace_id": ev.trace_id, "policy": ev.policy.to_json(), "enqueued_at": ev.enqueued_at,
            "next_attempt_at": ev.next_attempt_at, "invokes": ev.invokes, "errors": ev.errors,
            "throttles": ev.throttles, "last_result": ev.last_result, "lease_owner": owner}


def _event(row: Any, with_payload: bool = True) -> Event:
    return Event(row.id, row.function_name, row.qualifier, row.payload if with_payload else None, row.trace_id,
                 row.enqueued_at, Policy.from_json(row.policy), row.next_attempt_at, row.invokes, row.errors,
                 row.throttles, row.last_result)


class EventStore:
    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        metadata.create_all(engine, tables=[events])

    def apply(self, ops: Iterable[Op]) -> None:
        """Apply writes in one transaction: one commit, one fsync, however many events."""
        inserts, updates, deletes = [], [], []
        for op in ops:
            if op.kind == "insert":
                inserts.append(_row(op.event, self.owner))
            elif op.kind == "update":
                ev = op.event
                updates.append({"k_id": ev.id, "next_attempt_at": ev.next_attempt_at, "invokes": ev.invokes,
                                "errors": ev.errors, "throttles": ev.throttles, "last_result": ev.last_result})
            else:
                deletes.append(op.event.id)
        with self.engine.begin() as conn:
            if inserts:
                conn.execute(insert(events), inserts)
            if updates:
                conn.execute(update(events).where(events.c.id == bindparam("k_id")), updates)
            for i in range(0, len(deletes), 500):
                conn.execute(delete(events).where(events.c.id.in_(deletes[i:i + 500])))

    def take_over(self) -> Iterator[Event]:
        """Every queued event, now held by this node, oldest first; without payloads (``get`` loads one)."""
        with self.engine.begin() as conn:
            conn.execute(update(events).where(events.c.lease_owner.is_distinct_from(self.owner))
                         .values(lease_owner=self.owner))
            cols = [c for c in events.c if c.name != "payload"]
            rows = conn.execute(select(*cols).order_by(events.c.enqueued_at)).all()
        for row in rows:
            yield _event(row, with_payload=False)

    def payload(self, event_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            return conn.execute(select(events.c.payload).where(events.c.id == event_id)).scalar()

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(events)).scalar() or 0)
