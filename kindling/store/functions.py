"""Functions and their versions in the store. No HTTP, no validation: records in, records out."""

from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Any

from sqlalchemy import ColumnElement, Engine, Integer, and_, case, cast, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from kindling.store.db import functions, versions

LATEST = "$LATEST"


@dataclasses.dataclass(frozen=True)
class FunctionRecord:
    name: str
    version: str
    config: dict[str, Any]
    code_key: str
    revision_id: str
    tags: dict[str, str]


def version_order(column: Any) -> ColumnElement[int]:
    """Versions in Lambda's order: $LATEST first, then by number (so "10" comes after "9")."""
    return case((column == LATEST, -1), else_=cast(column, Integer))


def version_rank(version: str) -> int:
    return -1 if version == LATEST else int(version)


class AlreadyExists(Exception):
    pass


class Conflict(Exception):
    """The record changed since it was read (its RevisionId moved)."""


class FunctionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str], FunctionRecord] = {}

    def create(self, name: str, config: dict[str, Any], code_key: str, tags: dict[str, str]) -> FunctionRecord:
        rev = config["RevisionId"]
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(functions).values(name=name, created=int(time.time() * 1000), tags=tags))
                conn.execute(insert(versions).values(
                    function_name=name, version=LATEST, config=config, code_key=code_key, revision_id=rev))
        except IntegrityError as exc:
            raise AlreadyExists(name) from exc
        return FunctionRecord(name, LATEST, config, code_key, rev, tags)

    def invalidate(self, name: str) -> None:
        """Forget cached records of ``name``: called on every change to the function (writes here, and
        FunctionService's listeners for the version and alias stores). One process owns the cache: a
        cluster of frontends would need a shared invalidation, as the design notes say."""
        for key in [k for k in self._cache if k[0] == name]:
            del self._cache[key]

    def get(self, name: str, version: str = LATEST) -> FunctionRecord | None:
        """The record of one version; cached, since every invoke reads it (records are immutable)."""
        cached = self._cache.get((name, version))
        if cached is not None:
            return cached
        q = (select(versions.c.config, versions.c.code_key, versions.c.revision_id, functions.c.tags)
             .join(functions, functions.c.name == versions.c.function_name)
             .where(versions.c.function_name == name, versions.c.version == version))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return None
        rec = FunctionRecord(name, version, row.config, row.code_key, row.revision_id, row.tags)
        self._cache[name, version] = rec
        return rec

    def list_functions(self, marker: tuple[str, str] | None, limit: int,
                       all_versions: bool = False) -> tuple[list[FunctionRecord], tuple[str, str] | None]:
        """Functions' $LATEST (or every version) in name then version order, ``limit`` at a time.

        The marker is the (name, version) of the last record seen.
        """
        order = version_order(versions.c.version)
        q = (select(versions.c.function_name, versions.c.version, versions.c.config, versions.c.code_key,
                    versions.c.revision_id, functions.c.tags)
             .join(functions, functions.c.name == versions.c.function_name)
             .order_by(versions.c.function_name, order).limit(limit + 1))
        if not all_versions:
            q = q.where(versions.c.version == LATEST)
        if marker:
            name, version = marker
            q = q.where(or_(versions.c.function_name > name,
                            and_(versions.c.function_name == name, order > version_rank(version))))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        records = [FunctionRecord(r.function_name, r.version, r.config, r.code_key, r.revision_id, r.tags)
                   for r in rows[:limit]]
        last = records[-1] if len(rows) > limit else None
        return records, ((last.name, last.version) if last else None)

    def update(self, record: FunctionRecord, config: dict[str, Any], code_key: str) -> FunctionRecord:
        """Replace ``record``'s configuration if nobody changed it since it was read."""
        rev = str(uuid.uuid4())
        config = {**config, "RevisionId": rev}
        with self.engine.begin() as conn:
            n = conn.execute(update(versions).where(
                versions.c.function_name == record.name, versions.c.version == record.version,
                versions.c.revision_id == record.revision_id,
            ).values(config=config, code_key=code_key, revision_id=rev)).rowcount
        if n != 1:
            raise Conflict(record.name)
        self.invalidate(record.name)
        return dataclasses.replace(record, config=config, code_key=code_key, revision_id=rev)

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(functions).where(functions.c.name == name).values(tags=tags))
        self.invalidate(name)

    def delete(self, name: str) -> list[str]:
        """Remove the function with all its versions (and, by cascade, what else belongs to it);
        returns the code keys they used."""
        with self.engine.begin() as conn:
            keys = conn.execute(select(versions.c.code_key).where(versions.c.function_name == name)).scalars().all()
            conn.execute(delete(versions).where(versions.c.function_name == name))
            conn.execute(delete(functions).where(functions.c.name == name))
        self.invalidate(name)
        return list(keys)

    def code_keys_in_use(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(select(versions.c.code_key).distinct()).scalars().all())

    def count(self) -> tuple[int, int]:
        """(number of functions, total code size of all versions)."""
        with self.engine.connect() as conn:
            configs = conn.execute(select(versions.c.config)).scalars().all()
            n = len(conn.execute(select(functions.c.name)).all())
        return n, sum(int(c.get("CodeSize", 0)) for c in configs)
