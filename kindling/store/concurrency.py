"""Reserved concurrency per function (PutFunctionConcurrency), deleted with its function."""

from __future__ import annotations

from sqlalchemy import Column, Engine, ForeignKey, Integer, String, Table, delete, insert, select, update

from kindling.store.db import functions, metadata

function_concurrency = Table(
    "function_concurrency", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("reserved", Integer, nullable=False),
)


class ConcurrencyStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[function_concurrency])

    def all(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.function_name: r.reserved for r in conn.execute(select(function_concurrency))}

    def get(self, name: str) -> int | None:
        with self.engine.connect() as conn:
            return conn.execute(select(function_concurrency.c.reserved)
                                .where(function_concurrency.c.function_name == name)).scalar()

    def put(self, name: str, reserved: int) -> None:
        with self.engine.begin() as conn:
            if conn.execute(update(function_concurrency).where(function_concurrency.c.function_name == name)
                            .values(reserved=reserved)).rowcount == 0:
                conn.execute(insert(function_concurrency).values(function_name=name, reserved=reserved))

    def delete(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(function_concurrency).where(function_concurrency.c.function_name == name))
