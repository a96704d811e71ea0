"""Aliases of a function: a name pointing at a version, optionally sharing invokes with a second one.

Deleted with their function (cascade). Updates are compare-and-set on the alias's RevisionId.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import JSON, Column, Engine, ForeignKey, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from kindling.store.db import functions, metadata
from kindling.store.functions import AlreadyExists, Conflict

aliases = Table(
    "aliases", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("config", JSON, nullable=False),  # the AliasConfiguration as AWS renders it
    Column("revision_id", String(36), nullable=False),
)


@dataclasses.dataclass(frozen=True)
class AliasRecord:
    function_name: str
    name: str
    config: dict[str, Any]
    revision_id: str

    @property
    def weights(self) -> dict[str, float]:
        """AdditionalVersionWeights: version → share of invokes it takes from FunctionVersion."""
        return dict((self.config.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})

    @property
    def versions(self) -> set[str]:
        """Every version this alias can route to."""
        return {self.config["FunctionVersion"], *self.weights}


class AliasStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[aliases])

    def create(self, function_name: str, config: dict[str, Any]) -> AliasRecord:
        """Store a new alias; AlreadyExists if the name is taken (or the function is gone)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(aliases).values(function_name=function_name, name=config["Name"], config=config,
                                                    revision_id=config["RevisionId"]))
        except IntegrityError as exc:
            raise AlreadyExists(config["Name"]) from exc
        return AliasRecord(function_name, config["Name"], config, config["RevisionId"])

    def get(self, function_name: str, name: str) -> AliasRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(aliases.c.config, aliases.c.revision_id).where(
                aliases.c.function_name == function_name, aliases.c.name == name)).first()
        return AliasRecord(function_name, name, row.config, row.revision_id) if row else None

    def all(self, function_name: str) -> list[AliasRecord]:
        """Every alias of the function, in name order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(aliases.c.name, aliases.c.config, aliases.c.revision_id)
                                .where(aliases.c.function_name == function_name).order_by(aliases.c.name)).all()
        return [AliasRecord(function_name, r.name, r.config, r.revision_id) for r in rows]

    def update(self, record: AliasRecord, config: dict[str, Any]) -> AliasRecord:
        """Replace the alias's configuration if nobody changed it since ``record`` was read."""
        with self.engine.begin() as conn:
            n = conn.execute(update(aliases).where(
                aliases.c.function_name == record.function_name, aliases.c.name == record.name,
                aliases.c.revision_id == record.revision_id,
            ).values(config=config, revision_id=config["RevisionId"])).rowcount
        if n != 1:
            raise Conflict(record.name)
        return dataclasses.replace(record, config=config, revision_id=config["RevisionId"])

    def delete(self, function_name: str, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(aliases).where(
                aliases.c.function_name == function_name, aliases.c.name == name)).rowcount)
