"""Published versions of a function: numbered snapshots of $LATEST, listed and deleted one by one.

A published version is a row of the ``versions`` table like $LATEST, never updated. Version numbers
are never reused, even after the last one is deleted: ``publications`` keeps the last number given,
and $LATEST's RevisionId right after that publish, which tells whether $LATEST changed since.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Column, Engine, ForeignKey, Integer, String, Table, delete, insert, select, update

from kindling.store.db import functions, metadata, versions
from kindling.store.functions import LATEST, Conflict, FunctionRecord, version_order, version_rank

publications = Table(
    "publications", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("last_version", Integer, nullable=False),  # the last number given
    Column("latest_revision", String(36), nullable=False),  # $LATEST's RevisionId right after that publish
)


class VersionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[publications])

    def last_published(self, name: str) -> tuple[str, str] | None:
        """(last version number given, $LATEST's RevisionId right after it was published), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(select(publications.c.last_version, publications.c.latest_revision)
                               .where(publications.c.function_name == name)).first()
        return (str(row.last_version), row.latest_revision) if row else None

    def publish(self, latest: FunctionRecord, config_for: Callable[[str], dict[str, Any]]) -> FunctionRecord:
        """Publish ``latest`` as the next version, if $LATEST did not change since it was read.

        ``config_for(number)`` gives the version's configuration. $LATEST gets a new RevisionId, as on AWS.
        """
        rev = str(uuid.uuid4())
        with self.engine.begin() as conn:
            moved = conn.execute(update(versions).where(
                versions.c.function_name == latest.name, versions.c.version == LATEST,
                versions.c.revision_id == latest.revision_id,
            ).values(config={**latest.config, "RevisionId": rev}, revision_id=rev)).rowcount
            if moved != 1:
                raise Conflict(latest.name)
            last = conn.execute(select(publications.c.last_version)
                                .where(publications.c.function_name == latest.name)).scalar()
            number = (last or 0) + 1
            if last is None:
                conn.execute(insert(publications).values(function_name=latest.name, last_version=number,
                                                         latest_revision=rev))
            else:
                conn.execute(update(publications).where(publications.c.function_name == latest.name)
                             .values(last_version=number, latest_revision=rev))
            config = config_for(str(number))
            conn.execute(insert(versions).values(function_name=latest.name, version=str(number), config=config,
                                                 code_key=latest.code_key, revision_id=config["RevisionId"]))
        return FunctionRecord(latest.name, str(number), config, latest.code_key, config["RevisionId"], latest.tags)

    def carry(self, name: str, old: str, new: str) -> None:
        """$LATEST's RevisionId moved from ``old`` to ``new`` without a change worth a version (it became Active,
        or was tagged): if ``old`` was the one right after the last publish, ``new`` is now."""
        with self.engine.begin() as conn:
            conn.execute(update(publications).where(publications.c.function_name == name,
                                                    publications.c.latest_revision == old)
                         .values(latest_revision=new))

    def list_versions(self, name: str, marker: str | None, limit: int) -> tuple[list[FunctionRecord], str | None]:
        """$LATEST and the published versions of ``name`` in order, ``limit`` after the version ``marker``."""
        order = version_order(versions.c.version)
        q = (select(versions.c.version, versions.c.config, versions.c.code_key, versions.c.revision_id,
                    functions.c.tags)
             .join(functions, functions.c.name == versions.c.function_name)
             .where(versions.c.function_name == name).order_by(order).limit(limit + 1))
        if marker:
            q = q.where(order > version_rank(marker))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        records = [FunctionRecord(name, r.version, r.config, r.code_key, r.revision_id, r.tags) for r in rows[:limit]]
        return records, (records[-1].version if len(rows) > limit else None)

    def delete(self, name: str, version: str) -> bool:
        """Remove one published version; False if there was none."""
        if version == LATEST:
            raise ValueError("$LATEST goes only with its function")
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(versions).where(
                versions.c.function_name == name, versions.c.version == version)).rowcount)
