"""Asynchronous invocation settings of functions: EventInvokeConfig per qualifier, RecursionConfig per function.

Both go with their function (cascade on delete). Records in, records out; the rules live in
``kindling.queue.invoke_config``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy import JSON, Column, Engine, Float, ForeignKey, String, Table, delete, select, update

from kindling.store.db import functions, metadata

event_invoke_configs = Table(
    "event_invoke_configs", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("qualifier", String(128), primary_key=True),  # "$LATEST", a version or an alias
    Column("config", JSON, nullable=False),  # MaximumRetryAttempts, MaximumEventAgeInSeconds, DestinationConfig
    Column("last_modified", Float, nullable=False),  # epoch seconds
    Column("created", Float, nullable=False),  # orders the list, kept when a config is overwritten
)

recursion_configs = Table(
    "recursion_configs", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("recursive_loop", String(16), nullable=False),  # "Terminate" | "Allow"
)


@dataclasses.dataclass(frozen=True)
class EventInvokeConfigRecord:
    function_name: str
    qualifier: str
    config: dict[str, Any]
    last_modified: float


class EventInvokeConfigStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[event_invoke_configs, recursion_configs])

    def put(self, function_name: str, qualifier: str, config: dict[str, Any]) -> EventInvokeConfigRecord:
        now = time.time()
        with self.engine.begin() as conn:
            n = conn.execute(update(event_invoke_configs).where(
                event_invoke_configs.c.function_name == function_name,
                event_invoke_configs.c.qualifier == qualifier).values(config=config, last_modified=now)).rowcount
            if not n:
                conn.execute(event_invoke_configs.insert().values(
                    function_name=function_name, qualifier=qualifier, config=config, last_modified=now, created=now))
        return EventInvokeConfigRecord(function_name, qualifier, config, now)

    def get(self, function_name: str, qualifier: str) -> EventInvokeConfigRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(event_invoke_configs).where(
                event_invoke_configs.c.function_name == function_name,
                event_invoke_configs.c.qualifier == qualifier)).first()
        return None if row is None else EventInvokeConfigRecord(function_name, qualifier, row.config,
                                                                row.last_modified)

    def list(self, function_name: str) -> list[EventInvokeConfigRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(event_invoke_configs)
                                .where(event_invoke_configs.c.function_name == function_name)
                                .order_by(event_invoke_configs.c.created)).all()
        return [EventInvokeConfigRecord(function_name, r.qualifier, r.config, r.last_modified) for r in rows]

    def delete(self, function_name: str, qualifier: str | None = None) -> bool:
        """Delete one qualifier's config, or with ``qualifier`` None all of the function's; whether any was."""
        q = delete(event_invoke_configs).where(event_invoke_configs.c.function_name == function_name)
        if qualifier is not None:
            q = q.where(event_invoke_configs.c.qualifier == qualifier)
        with self.engine.begin() as conn:
            return bool(conn.execute(q).rowcount)

    # -- recursion ----------------------------------------------------------------------------------
    def put_recursive_loop(self, function_name: str, value: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(update(recursion_configs).where(recursion_configs.c.function_name == function_name)
                                .values(recursive_loop=value)).rowcount:
                conn.execute(recursion_configs.insert().values(function_name=function_name, recursive_loop=value))

    def recursive_loops(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return {r.function_name: r.recursive_loop for r in conn.execute(select(recursion_configs)).all()}

    def delete_recursive_loop(self, function_name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(recursion_configs).where(recursion_configs.c.function_name == function_name))
