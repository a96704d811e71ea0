"""Provisioned concurrency configs: how many environments to keep initialized per version or alias.

Deleted with their function (cascade); a deleted version's or alias's configs are removed by
``kindling.functions.provisioned``. Only what was asked is stored: the environments themselves,
and so the Status, are rebuilt at start.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import Column, Engine, ForeignKey, Integer, String, Table, delete, insert, select, update

from kindling.store.db import functions, metadata

provisioned_concurrency = Table(
    "provisioned_concurrency", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("qualifier", String(128), primary_key=True),  # a published version or an alias
    Column("requested", Integer, nullable=False),  # ProvisionedConcurrentExecutions
    Column("last_modified", String(32), nullable=False),  # as Lambda renders it
)


@dataclasses.dataclass(frozen=True)
class ProvisionedRecord:
    function_name: str
    qualifier: str
    requested: int
    last_modified: str


class ProvisionedStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[provisioned_concurrency])

    def all(self, function_name: str | None = None) -> list[ProvisionedRecord]:
        """Every config (of one function), in function and qualifier order."""
        t = provisioned_concurrency
        query = select(t).order_by(t.c.function_name, t.c.qualifier)
        if function_name is not None:
            query = query.where(t.c.function_name == function_name)
        with self.engine.connect() as conn:
            return [ProvisionedRecord(r.function_name, r.qualifier, r.requested, r.last_modified)
                    for r in conn.execute(query)]

    def get(self, function_name: str, qualifier: str) -> ProvisionedRecord | None:
        t = provisioned_concurrency
        with self.engine.connect() as conn:
            r = conn.execute(select(t).where(t.c.function_name == function_name, t.c.qualifier == qualifier)).first()
        return ProvisionedRecord(r.function_name, r.qualifier, r.requested, r.last_modified) if r else None

    def put(self, record: ProvisionedRecord) -> None:
        t = provisioned_concurrency
        values = {"requested": record.requested, "last_modified": record.last_modified}
        with self.engine.begin() as conn:
            if conn.execute(update(t).where(t.c.function_name == record.function_name,
                                            t.c.qualifier == record.qualifier).values(**values)).rowcount == 0:
                conn.execute(insert(t).values(function_name=record.function_name, qualifier=record.qualifier,
                                              **values))

    def delete(self, function_name: str, qualifier: str) -> bool:
        t = provisioned_concurrency
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(t).where(t.c.function_name == function_name,
                                                     t.c.qualifier == qualifier)).rowcount)
