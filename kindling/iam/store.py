"""IAM's roles, their inline policies, customer managed policies and attachments, in Kindling's store.

Role names are unique regardless of case, as in IAM (the key column is the lower-cased name). A role's
policies reference it with foreign keys, so a DeleteRole racing a PutRolePolicy or AttachRolePolicy can
never leave orphans: the database refuses one of them (DeleteConflict or NoSuchEntity). Quotas are checked
after the write, inside its transaction, so concurrent writers cannot both slip under them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import JSON, Column, Engine, ForeignKey, Integer, String, Table, Text, delete, func, insert, select
from sqlalchemy.exc import IntegrityError

from kindling.store.db import metadata

roles = Table(
    "iam_roles", metadata,
    Column("key", String(64), primary_key=True),  # lower-cased name
    Column("name", String(64), nullable=False),
    Column("role_id", String(32), nullable=False),
    Column("path", String(512), nullable=False),
    Column("created", String(32), nullable=False),  # ISO 8601, as IAM answers it
    Column("trust", Text, nullable=False),  # AssumeRolePolicyDocument as given
    Column("description", String(1000), nullable=False, default=""),
    Column("max_session", Integer, nullable=False, default=3600),
    Column("tags", JSON, nullable=False, default=list),
)
role_policies = Table(
    "iam_role_policies", metadata,
    Column("role_key", String(64), ForeignKey(roles.c.key), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("document", Text, nullable=False),
    Column("size", Integer, nullable=False),
)
policies = Table(
    "iam_policies", metadata,
    Column("arn", String(2048), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("policy_id", String(32), nullable=False),
    Column("path", String(512), nullable=False),
    Column("document", Text, nullable=False),
    Column("description", String(1000), nullable=False, default=""),
    Column("created", String(32), nullable=False),
)
attachments = Table(
    "iam_attachments", metadata,
    Column("role_key", String(64), ForeignKey(roles.c.key), primary_key=True),
    Column("policy_arn", String(2048), primary_key=True),
)


class AlreadyExists(Exception):
    pass


class Missing(Exception):
    pass


class InUse(Exception):
    pass


class OverQuota(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    role_id: str
    path: str
    created: str
    trust: str
    description: str
    max_session: int
    tags: list[dict[str, str]]

    @property
    def key(self) -> str:
        return self.name.lower()


class IamStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine, tables=[roles, role_policies, policies, attachments])

    # -- roles --------------------------------------------------------------------------------------
    def create_role(self, role: Role) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(roles).values(key=role.key, **dataclasses.asdict(role)))
        except IntegrityError:
            raise AlreadyExists(role.name) from None

    def get_role(self, name: str) -> Role | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(roles).where(roles.c.key == name.lower())).first()
        return _role(row._mapping) if row else None

    def list_roles(self) -> list[Role]:
        with self.engine.connect() as conn:
            return [_role(r._mapping) for r in conn.execute(select(roles).order_by(roles.c.key))]

    def delete_role(self, name: str) -> None:
        """Delete a role that has no policies (InUse otherwise, Missing if there is none)."""
        key = name.lower()
        try:
            with self.engine.begin() as conn:
                if conn.execute(delete(roles).where(roles.c.key == key)).rowcount != 1:
                    raise Missing(name)
        except IntegrityError:
            raise InUse(name) from None

    # -- inline policies ----------------------------------------------------------------------------
    def put_role_policy(self, role: str, name: str, document: str, size: int, cap: int) -> None:
        key = role.lower()
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(role_policies).where(role_policies.c.role_key == key,
                                                         role_policies.c.name == name))
                conn.execute(insert(role_policies).values(role_key=key, name=name, document=document, size=size))
                total = conn.execute(select(func.sum(role_policies.c.size)).where(
                    role_policies.c.role_key == key)).scalar_one()
                if total > cap:
                    raise OverQuota(role)  # rolls back
        except IntegrityError:
            raise Missing(role) from None

    def get_role_policy(self, role: str, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(role_policies.c.document).where(
                role_policies.c.role_key == role.lower(), role_policies.c.name == name)).scalar_one_or_none()

    def delete_role_policy(self, role: str, name: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(role_policies).where(
                role_policies.c.role_key == role.lower(), role_policies.c.name == name)).rowcount)

    def list_role_policies(self, role: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(role_policies.c.name).where(
                role_policies.c.role_key == role.lower()).order_by(role_policies.c.name)).scalars())

    # -- managed policies ---------------------------------------------------------------------------
    def create_policy(self, values: dict[str, Any]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(policies).values(**values))
        except IntegrityError:
            raise AlreadyExists(values["name"]) from None

    def get_policy(self, arn: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(policies).where(policies.c.arn == arn)).first()
        return dict(row._mapping) if row else None

    def attach(self, role: str, policy_arn: str, cap: int) -> None:
        key = role.lower()
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(select(attachments.c.role_key).where(
                    attachments.c.role_key == key, attachments.c.policy_arn == policy_arn)).first()
                if exists:
                    return
                conn.execute(insert(attachments).values(role_key=key, policy_arn=policy_arn))
                n = conn.execute(select(func.count()).select_from(attachments).where(
                    attachments.c.role_key == key)).scalar_one()
                if n > cap:
                    raise OverQuota(role)
        except IntegrityError:
            raise Missing(role) from None

    def detach(self, role: str, policy_arn: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(attachments).where(
                attachments.c.role_key == role.lower(), attachments.c.policy_arn == policy_arn)).rowcount)

    def attached(self, role: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(attachments.c.policy_arn).where(
                attachments.c.role_key == role.lower()).order_by(attachments.c.policy_arn)).scalars())

    def documents(self, role: str) -> list[str]:
        """Every identity policy document of a role: inline ones, then customer managed ones attached."""
        key = role.lower()
        with self.engine.connect() as conn:
            inline = list(conn.execute(select(role_policies.c.document).where(
                role_policies.c.role_key == key)).scalars())
            joined = select(policies.c.document).join(attachments, attachments.c.policy_arn == policies.c.arn)
            managed = list(conn.execute(joined.where(attachments.c.role_key == key)).scalars())
        return inline + managed


def _role(row: Any) -> Role:
    return Role(row["name"], row["role_id"], row["path"], row["created"], row["trust"], row["description"],
                row["max_session"], list(row["tags"] or []))
