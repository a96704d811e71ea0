"""Resource-based policies of functions: one document per function and qualifier, with its RevisionId.

The function's own policy (unqualified, which also covers $LATEST) is kept under the qualifier "$LATEST", a
version's or alias's under its name. Deleted with their function (cascade); a version's or alias's when it goes
(kindling.functions.permissions listens). A change is compare-and-set on the policy's RevisionId and, in the same
transaction, gives the version or alias it is attached to that RevisionId too, as Lambda does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Column, Engine, ForeignKey, String, Table, Text, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from kindling.store.aliases import aliases
from kindling.store.db import functions, metadata, versions
from kindling.store.functions import LATEST, Conflict

function_policies = Table(
    "function_policies", metadata,
    Column("function_name", String(64), ForeignKey(functions.c.name, ondelete="CASCADE"), primary_key=True),
    Column("qualifier", String(128), primary_key=True),  # "$LATEST" (the function's own), a version or an alias
    Column("document", Text, nullable=False),  # the policy as GetPolicy answers it (compact JSON)
    Column("revision_id", String(36), nullable=False),
)


@dataclasses.dataclass(frozen=True)
class PolicyRecord:
    function_name: str
    qualifier: str
    document: str
    revision_id: str


class PermissionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[function_policies])

    def get(self, name: str, qualifier: str = LATEST) -> PolicyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(function_policies.c.document, function_policies.c.revision_id).where(
                function_policies.c.function_name == name, function_policies.c.qualifier == qualifier)).first()
        return PolicyRecord(name, qualifier, row.document, row.revision_id) if row else None

    def write(self, name: str, qualifier: str, old: PolicyRecord | None, document: str | None,
              revision: str, alias: bool) -> str | None:
        """Replace ``old`` (None: there was no policy) by ``document`` (None: no policy any more) if nobody changed
        it since it was read, and give the version or alias ``revision`` as its RevisionId.

        Conflict if the policy moved meanwhile (or the function is gone). Returns the version's or alias's previous
        RevisionId (None if it no longer exists: the policy is then not written either).
        """
        where = (function_policies.c.function_name == name, function_policies.c.qualifier == qualifier)
        try:
            with self.engine.begin() as conn:
                # the policy row first: a write, so the transaction holds the write lock before it reads anything
                if old is None and document is not None:
                    conn.execute(insert(function_policies).values(function_name=name, qualifier=qualifier,
                                                                  document=document, revision_id=revision))
                else:
                    current = (*where, function_policies.c.revision_id == (old.revision_id if old else ""))
                    q = (delete(function_policies).where(*current) if document is None else
                         update(function_policies).where(*current).values(document=document, revision_id=revision))
                    if conn.execute(q).rowcount != 1:
                        raise Conflict(name)
                before = self._move_revision(conn, name, qualifier, revision, alias)
                if before is None:
                    raise _Gone()
        except IntegrityError as exc:  # a policy made meanwhile, or the function deleted
            raise Conflict(name) from exc
        except _Gone:
            return None
        return before

    @staticmethod
    def _move_revision(conn: Any, name: str, qualifier: str, revision: str, alias: bool) -> str | None:
        table = aliases if alias else versions
        key = (table.c.function_name == name, (aliases.c.name if alias else versions.c.version) == qualifier)
        row = conn.execute(select(table.c.config, table.c.revision_id).where(*key)).first()
        if row is None:
            return None
        conn.execute(update(table).where(*key).values(config={**row.config, "RevisionId": revision},
                                                      revision_id=revision))
        return str(row.revision_id)

    def delete(self, name: str, qualifier: str) -> bool:
        """Drop a version's or alias's policy (it went); whether there was one."""
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(function_policies).where(
                function_policies.c.function_name == name, function_policies.c.qualifier == qualifier)).rowcount)


class _Gone(Exception):
    """The version or alias went before its policy could be written: the transaction rolls back."""
