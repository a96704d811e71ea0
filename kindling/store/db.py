"""The embedded default store: one SQLite file (PostgreSQL by URL for a cluster).

SQLAlchemy Core keeps the SQL the same on both. Writes that read-modify-write a
function use compare-and-set on its RevisionId, so two concurrent updates can
never interleave: the loser sees a conflict and retries or reports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
)

metadata = MetaData()

functions = Table(
    "functions", metadata,
    Column("name", String(64), primary_key=True),
    Column("created", Integer, nullable=False),  # ms since epoch; orders ListFunctions
    Column("tags", JSON, nullable=False, default=dict),
)

versions = Table(
    "versions", metadata,
    Column("function_name", String(64), primary_key=True),
    Column("version", String(16), primary_key=True),  # "$LATEST", "1", "2", ...
    Column("config", JSON, nullable=False),  # the FunctionConfiguration as AWS renders it
    Column("code_key", String(64), nullable=False),  # hex sha256 in the code store
    Column("revision_id", String(36), nullable=False),
)

# While a version's update is InProgress (or after it Failed), invokes run its last successful configuration and
# code, as Lambda's do: kept here, one row per such version (kindling/functions/updates.py).
last_successful = Table(
    "last_successful", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("code_key", String(64), nullable=False),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # accepted means durable
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def open_engine(data_dir: Path, url: str | None = None) -> Engine:
    """The engine for ``url``, or for ``<data_dir>/kindling.db`` by default, with tables created."""
    if url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{data_dir / 'kindling.db'}"
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    return engine
