"""The IAM operations Kindling serves: roles, inline and managed policies, attachments.

Each takes the request's members (botocore's ``iam`` model names, already validated against its
constraints) and returns the result's members. Errors, messages and quotas are IAM's.
"""

from __future__ import annotations

import datetime
import secrets
import string
import urllib.parse
from collections.abc import Callable
from typing import Any

from kindling import errors
from kindling.iam import document, managed
from kindling.iam.store import AlreadyExists, IamStore, InUse, Missing, OverQuota, Role

TRUST_MAX = 2048  # ACLSizePerRole
INLINE_MAX = 10240  # all of a role's inline policies together
MANAGED_MAX = 6144  # PolicySize
ATTACHED_MAX = 10  # PoliciesPerRole


def _id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(17))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quoted(doc: str) -> str:
    """A policy document as IAM answers it: URL-encoded (boto3 decodes it into a dict)."""
    return urllib.parse.quote(doc, safe="")


class Roles:
    def __init__(self, store: IamStore, account: str, changed: Callable[[], None]) -> None:
        self.store = store
        self.account = account
        self.changed = changed  # called after every write: cached evaluations are dropped

    def role_arn(self, role: Role) -> str:
        return f"arn:aws:iam::{self.account}:role{role.path}{role.name}"

    def _render(self, role: Role) -> dict[str, Any]:
        out: dict[str, Any] = {"Path": role.path, "RoleName": role.name, "RoleId": role.role_id,
                               "Arn": self.role_arn(role), "CreateDate": role.created,
                               "AssumeRolePolicyDocument": quoted(role.trust), "MaxSessionDuration": role.max_session}
        if role.description:
            out["Description"] = role.description
        if role.tags:
            out["Tags"] = role.tags
        return out

    def _role(self, name: str) -> Role:
        role = self.store.get_role(name)
        if role is None:
            raise errors.NoSuchEntity(f"The role with name {name} cannot be found.")
        return role

    # -- roles --------------------------------------------------------------------------------------
    def create_role(self, p: dict[str, Any]) -> dict[str, Any]:
        trust = p["AssumeRolePolicyDocument"]
        document.parse(trust, trust=True)
        if document.size(trust) > TRUST_MAX:
            raise errors.LimitExceeded(f"Cannot exceed quota for ACLSizePerRole: {TRUST_MAX}")
        role = Role(p["RoleName"], _id("AROA"), p.get("Path", "/"), _now(), trust, p.get("Description", ""),
                    int(p.get("MaxSessionDuration", 3600)), list(p.get("Tags", [])))
        try:
            self.store.create_role(role)
        except AlreadyExists:
            raise errors.EntityAlreadyExists(f"Role with name {role.name} already exists.") from None
        self.changed()
        return {"Role": self._render(role)}

    def get_role(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Role": {**self._render(self._role(p["RoleName"])), "RoleLastUsed": {}}}

    def list_roles(self, p: dict[str, Any]) -> dict[str, Any]:
        prefix = p.get("PathPrefix", "/")
        found = [r for r in self.store.list_roles() if r.path.startswith(prefix)]
        return _page([self._render(r) for r in found], p, "Roles")

    def delete_role(self, p: dict[str, Any]) -> dict[str, Any]:
        name = p["RoleName"]
        try:
            self.store.delete_role(name)
        except Missing:
            raise errors.NoSuchEntity(f"The role with name {name} cannot be found.") from None
        except InUse:
            if self.store.attached(name):
                raise errors.DeleteConflict("Cannot delete entity, must detach all policies first.") from None
            raise errors.DeleteConflict("Cannot delete entity, must delete policies first.") from None
        self.changed()
        return {}

    # -- inline policies ----------------------------------------------------------------------------
    def put_role_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        text = p["PolicyDocument"]
        document.parse(text)
        try:
            self.store.put_role_policy(p["RoleName"], p["PolicyName"], text, document.size(text), INLINE_MAX)
        except Missing:
            raise errors.NoSuchEntity(f"The role with name {p['RoleName']} cannot be found.") from None
        except OverQuota:
            raise errors.LimitExceeded(
                f"Maximum policy size of {INLINE_MAX} bytes exceeded for role {p['RoleName']}") from None
        self.changed()
        return {}

    def get_role_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        text = self.store.get_role_policy(role.name, p["PolicyName"])
        if text is None:
            raise errors.NoSuchEntity(f"The role policy with name {p['PolicyName']} cannot be found.")
        return {"RoleName": role.name, "PolicyName": p["PolicyName"], "PolicyDocument": quoted(text)}

    def delete_role_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        if not self.store.delete_role_policy(role.name, p["PolicyName"]):
            raise errors.NoSuchEntity(f"The role policy with name {p['PolicyName']} cannot be found.")
        self.changed()
        return {}

    def list_role_policies(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        return _page(self.store.list_role_policies(role.name), p, "PolicyNames")

    # -- managed policies ---------------------------------------------------------------------------
    def create_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        text = p["PolicyDocument"]
        document.parse(text)
        if document.size(text) > MANAGED_MAX:
            raise errors.LimitExceeded(f"Cannot exceed quota for PolicySize: {MANAGED_MAX}")
        path = p.get("Path", "/")
        arn = f"arn:aws:iam::{self.account}:policy{path}{p['PolicyName']}"
        values = {"arn": arn, "name": p["PolicyName"], "policy_id": _id("ANPA"), "path": path, "document": text,
                  "description": p.get("Description", ""), "created": _now()}
        try:
            self.store.create_policy(values)
        except AlreadyExists:
            raise errors.EntityAlreadyExists(
                f"A policy called {p['PolicyName']} already exists. Duplicate names are not allowed.") from None
        return {"Policy": self._render_policy(values)}

    def _policy(self, arn: str) -> dict[str, Any]:
        """A customer managed policy's row, or an AWS managed one's in the same shape."""
        if arn in managed.BY_ARN:
            name = managed.BY_ARN[arn]
            path, description, text = managed.MANAGED[name]
            return {"arn": arn, "name": name, "policy_id": "ANPA" + name.upper().replace("_", "")[:17].ljust(17, "X"),
                    "path": path, "document": text, "description": description, "created": managed.MANAGED_CREATED}
        row = self.store.get_policy(arn)
        if row is None:
            raise errors.NoSuchEntity(f"Policy {arn} does not exist or is not attachable.")
        return row

    @staticmethod
    def _render_policy(row: dict[str, Any]) -> dict[str, Any]:
        out = {"PolicyName": row["name"], "PolicyId": row["policy_id"], "Arn": row["arn"], "Path": row["path"],
               "DefaultVersionId": "v1", "AttachmentCount": 0, "PermissionsBoundaryUsageCount": 0,
               "IsAttachable": True, "CreateDate": row["created"], "UpdateDate": row["created"]}
        if row.get("description"):
            out["Description"] = row["description"]
        return out

    def get_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"Policy": self._render_policy(self._policy(p["PolicyArn"]))}

    def get_policy_version(self, p: dict[str, Any]) -> dict[str, Any]:
        row = self._policy(p["PolicyArn"])
        if p["VersionId"] != "v1":
            raise errors.NoSuchEntity(f"Policy {p['PolicyArn']} version {p['VersionId']} does not exist or is not "
                                      "attachable.")
        return {"PolicyVersion": {"Document": quoted(row["document"]), "VersionId": "v1", "IsDefaultVersion": True,
                                  "CreateDate": row["created"]}}

    def attach_role_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        self._policy(p["PolicyArn"])
        try:
            self.store.attach(role.name, p["PolicyArn"], ATTACHED_MAX)
        except Missing:
            raise errors.NoSuchEntity(f"The role with name {p['RoleName']} cannot be found.") from None
        except OverQuota:
            raise errors.LimitExceeded(f"Cannot exceed quota for PoliciesPerRole: {ATTACHED_MAX}") from None
        self.changed()
        return {}

    def detach_role_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        if not self.store.detach(role.name, p["PolicyArn"]):
            raise errors.NoSuchEntity(f"Policy {p['PolicyArn']} was not found.")
        self.changed()
        return {}

    def list_attached_role_policies(self, p: dict[str, Any]) -> dict[str, Any]:
        role = self._role(p["RoleName"])
        out = []
        for arn in self.store.attached(role.name):
            name = managed.BY_ARN.get(arn) or arn.rsplit("/", 1)[-1]
            out.append({"PolicyName": name, "PolicyArn": arn})
        return _page(out, p, "AttachedPolicies")

    def policy_documents(self, role_name: str) -> list[str]:
        """Every identity policy of a role: inline, customer managed and AWS managed attached."""
        docs = self.store.documents(role_name)
        docs += [managed.MANAGED[managed.BY_ARN[a]][2] for a in self.store.attached(role_name) if a in managed.BY_ARN]
        return docs


def _page(items: list[Any], p: dict[str, Any], key: str) -> dict[str, Any]:
    """IAM's Marker / MaxItems paging (a marker is the index of the next item)."""
    marker = p.get("Marker", "0")
    start = int(marker) if marker.isdigit() else 0
    size = int(p.get("MaxItems", 100))
    page = items[start:start + size]
    out: dict[str, Any] = {key: page, "IsTruncated": start + size < len(items)}
    if out["IsTruncated"]:
        out["Marker"] = str(start + size)
    return out


