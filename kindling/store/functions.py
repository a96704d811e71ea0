"""Functions and their versions in the store. No HTTP, no validation: records in, records out."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Engine, Integer, and_, case, cast, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from kindling.store.db import functions, last_successful, versions

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
        self._running: dict[tuple[str, str], FunctionRecord | None] = {}  # last successful, while updating

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
        for key in [k for k in self._running if k[0] == name]:
            del self._running[key]

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

    def update(self, record: FunctionRecord, config: dict[str, Any], code_key: str,
               remember: FunctionRecord | None = None, forget: bool = False) -> FunctionRecord:
        """Replace ``record``'s configuration if nobody changed it since it was read.

        ``remember``: keep that record as the version's last successful one (what invokes run while the update is
        in progress), unless one is kept already; ``forget``: drop the kept one (the update is done).
        """
        rev = str(uuid.uuid4())
        config = {**config, "RevisionId": rev}
        key = (last_successful.c.function_name == record.name, last_successful.c.version == record.version)
        with self.engine.begin() as conn:
            n = conn.execute(update(versions).where(
                versions.c.function_name == record.name, versions.c.version == record.version,
                versions.c.revision_id == record.revision_id,
            ).values(config=config, code_key=code_key, revision_id=rev)).rowcount
            if n != 1:
                raise Conflict(record.name)  # nothing written: the transaction rolls back
            if forget:
                conn.execute(delete(last_successful).where(*key))
            elif remember is not None and conn.execute(select(last_successful.c.version).where(*key)).first() is None:
                conn.execute(insert(last_successful).values(function_name=record.name, version=record.version,
                                                            config=remember.config, code_key=remember.code_key))
        self.invalidate(record.name)
        return dataclasses.replace(record, config=config, code_key=code_key, revision_id=rev)

    def last_successful(self, name: str, version: str) -> FunctionRecord | None:
        """The configuration and code invokes of a version run while its update is in progress or failed."""
        if (name, version) in self._running:
            return self._running[name, version]
        q = (select(last_successful.c.config, last_successful.c.code_key, functions.c.tags)
             .join(functions, functions.c.name == last_successful.c.function_name)
             .where(last_successful.c.function_name == name, last_successful.c.version == version))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        rec = None if row is None else FunctionRecord(name, version, row.config, row.code_key,
                                                      row.config["RevisionId"], row.tags)
        self._running[name, version] = rec
        return rec

    def in_transition(self, is_busy: Callable[[dict[str, Any]], bool]) -> list[tuple[str, str]]:
        """(name, version) of every version whose configuration ``is_busy`` (read once, at start)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(versions.c.function_name, versions.c.version, versions.c.config)).all()
        return [(r.function_name, r.version) for r in rows if is_busy(r.config)]

    def set_tags(self, name: str, tags: dict[str, str]) -> tuple[str, str] | None:
        """Replace the function's tags; $LATEST gets a new RevisionId, as on AWS. Returns (old, new) RevisionId."""
        rev = str(uuid.uuid4())
        where = (versions.c.function_name == name, versions.c.version == LATEST)
        with self.engine.begin() as conn:
            conn.execute(update(functions).where(functions.c.name == name).values(tags=tags))
            row = conn.execute(select(versions.c.config, versions.c.revision_id).where(*where)).first()
            if row is not None:
                conn.execute(update(versions).where(*where).values(config={**row.config, "RevisionId": rev},
                                                                    revision_id=rev))
        self.invalidate(name)
        return (row.revision_id, rev) if row is not None else None

    def delete(self, name: str) -> list[str]:
        """Remove the function with all its versions (and, by cascade, what else belongs to it);
        returns the code keys they used."""
        with self.engine.begin() as conn:
            keys = conn.execute(select(versions.c.code_key).where(versions.c.function_name == name)).scalars().all()
            conn.execute(delete(versions).where(versions.c.function_name == name))
            conn.execute(delete(last_successful).where(last_successful.c.function_name == name))
            conn.execute(delete(functions).where(functions.c.name == name))
        self.invalidate(name)
        return list(keys)

    def code_keys_in_use(self) -> set[str]:
        with self.engine.connect() as conn:
            return (set(conn.execute(select(versions.c.code_key).distinct()).scalars().all())
                    | set(conn.execute(select(last_successful.c.code_key).distinct()).scalars().all()))

    def count(self) -> tuple[int, int]:
        """(number of functions, total code size of all versions)."""
        with self.engine.connect() as conn:
            configs = conn.execute(select(versions.c.config)).scalars().all()
            n = len(conn.execute(select(functions.c.name)).all())
        return n, sum(int(c.get("CodeSize", 0)) for c in configs)
