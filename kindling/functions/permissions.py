"""Resource-based policies of functions: AddPermission, RemovePermission, GetPolicy, Get/Put/DeleteResourcePolicy,
and the policy's answer for a request (``decide``), as Lambda scopes it.

Scoping: the function's own policy (no qualifier) governs requests on the unqualified ARN and on $LATEST; a
version's or alias's policy governs only requests that name that qualified ARN (AWS: "If you use a qualifier, the
invoker must use the full ARN of that version or alias"). A change gives the policy a new RevisionId and the
version or alias the same one, as on AWS (GetFunction's RevisionId equals GetPolicy's right after AddPermission).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from typing import Any

from kindling import arns, errors
from kindling.functions import statements
from kindling.functions.service import FunctionService
from kindling.iam import document, evaluate
from kindling.iam.conditions import Context
from kindling.iam.service import IAM
from kindling.iam.sessions import Session
from kindling.store.functions import LATEST, Conflict
from kindling.store.permissions import PermissionStore, PolicyRecord

log = logging.getLogger("kindling.permissions")

MAX_POLICY = 20480  # bytes: Lambda's quota for a function's (or version's, alias's) resource-based policy
STALE = ("The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API to retrieve the "
         "latest Revision Id")
NO_RESOURCE = "The resource you requested does not exist."
NO_POLICY = "No policy is associated with the given resource."
_ALIAS = re.compile(r"[a-zA-Z0-9-_]+")


class Target:
    """The function, version or alias a policy belongs to."""

    def __init__(self, name: str, qualifier: str | None, arn: str, revision_id: str) -> None:
        self.name = name
        self.key = qualifier or LATEST  # the store's qualifier
        self.alias = qualifier is not None and not qualifier.isdigit()
        self.arn = arn
        self.revision_id = revision_id


class Permissions:
    def __init__(self, functions: FunctionService, store: PermissionStore, iam: IAM) -> None:
        self.functions = functions
        self.store = store
        self.iam = iam
        self.account = functions.settings.account_id
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], document.Policy | None] = {}  # parsed, for decide

    # -- targets ------------------------------------------------------------------------------------
    def _target(self, ident: str, qualifier: str | None, op: str) -> Target:
        name, qualifier = self.functions.resolve(ident, qualifier)
        if qualifier == LATEST:
            if op == "add":
                raise errors.InvalidParameterValueException("We currently do not support adding policies for $LATEST.")
            qualifier = None  # the function's own policy covers $LATEST
        fn = self.functions.store.get(name)
        if fn is None:
            raise errors.ResourceNotFoundException(
                NO_RESOURCE if op == "get" else f"No policy found for: {self.functions.arn(name)}" if op == "remove"
                else f"Function not found: {self.functions.arn(name)}")
        if qualifier is None:
            return Target(name, None, self.functions.arn(name), fn.revision_id)
        arn = self.functions.arn(name, qualifier)
        if qualifier.isdigit() or not _ALIAS.fullmatch(qualifier):
            rec = self.functions.store.get(name, qualifier) if qualifier.isdigit() else None
            if rec is None:
                raise errors.ResourceNotFoundException(NO_RESOURCE if op == "get" else f"Function not found: {arn}")
            return Target(name, qualifier, arn, rec.revision_id)
        alias = self.functions.aliases.get(name, qualifier)
        if alias is None:
            raise errors.ResourceNotFoundException(NO_RESOURCE if op == "get" else f"Cannot find alias arn: {arn}")
        return Target(name, qualifier, arn, alias.revision_id)

    def _arn_target(self, arn: str, op: str) -> Target:
        """Get/Put/DeleteResourcePolicy's ResourceArn: a function's, version's or alias's full ARN."""
        if ":function:" not in arn:
            raise errors.InvalidParameterValueException(
                f"Kindling keeps resource-based policies for functions only, not for {arn[:256]}.")
        return self._target(arn, None, op)

    @staticmethod
    def _check_revision(given: str | None, old: PolicyRecord | None, target: Target) -> None:
        if given and given != (old.revision_id if old else target.revision_id):
            raise errors.PreconditionFailedException(STALE)

    def _write(self, target: Target, old: PolicyRecord | None, doc: dict[str, Any] | None) -> str:
        """Store ``doc`` (None: no policy any more) in place of ``old``; the new RevisionId."""
        text = None if doc is None else json.dumps(doc, separators=(",", ":"))
        if text is not None and len(text.encode()) > MAX_POLICY:
            raise errors.PolicyLengthExceededException(
                f"The final policy size ({len(text.encode())}) is bigger than the limit ({MAX_POLICY}).")
        return self._write_text(target, old, text)

    def _write_text(self, target: Target, old: PolicyRecord | None, text: str | None) -> str:
        revision = str(uuid.uuid4())
        try:
            before = self.store.write(target.name, target.key, old, text, revision, target.alias)
        except Conflict:
            raise errors.ResourceConflictException(
                "The operation cannot be performed at this time. An update is in progress for resource: "
                f"{target.arn}") from None
        finally:
            self._forget(target.name)
        if before is None:  # the version or alias went meanwhile
            raise errors.ResourceNotFoundException(f"Function not found: {target.arn}")
        if not target.alias:
            if target.key == LATEST:  # no change a new version would be published for
                self.functions.versions.carry(target.name, before, revision)
            self.functions.store.invalidate(target.name)
        return revision

    @staticmethod
    def _document(old: PolicyRecord | None) -> dict[str, Any]:
        if old is None:
            return {"Version": "2012-10-17", "Id": "default", "Statement": []}
        doc = json.loads(old.document)
        if isinstance(doc.get("Statement"), dict):  # PutResourcePolicy takes a single statement too
            doc["Statement"] = [doc["Statement"]]
        return dict(doc)

    # -- AddPermission, RemovePermission, GetPolicy -------------------------------------------------
    def add(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(p["FunctionName"], p.get("Qualifier"), "add")
        st = statements.statement(p, target.arn)
        with self._lock:  # one writer per process; the store's compare-and-set guards across processes
            old = self.store.get(target.name, target.key)
            self._check_revision(p.get("RevisionId"), old, target)
            doc = self._document(old)
            if any(isinstance(s, dict) and s.get("Sid") == st["Sid"] for s in doc["Statement"]):
                raise errors.ResourceConflictException(
                    f"The statement id ({st['Sid']}) provided already exists. Please provide a new statement id, or "
                    "remove the existing statement.")
            doc["Statement"].append(st)
            self._write(target, old, doc)
        return {"Statement": json.dumps(st, separators=(",", ":"))}

    def remove(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(p["FunctionName"], p.get("Qualifier"), "remove")
        with self._lock:
            old = self.store.get(target.name, target.key)
            if old is None:
                raise errors.ResourceNotFoundException(NO_POLICY)
            doc = self._document(old)
            kept = [s for s in doc["Statement"] if not (isinstance(s, dict) and s.get("Sid") == p["StatementId"])]
            if len(kept) == len(doc["Statement"]):
                raise errors.ResourceNotFoundException(
                    f"Statement {p['StatementId']} is not found in resource policy.")
            self._check_revision(p.get("RevisionId"), old, target)
            self._write(target, old, {**doc, "Statement": kept} if kept else None)
        return {}

    def get(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._target(p["FunctionName"], p.get("Qualifier"), "get")
        old = self.store.get(target.name, target.key)
        if old is None:
            raise errors.ResourceNotFoundException(NO_RESOURCE)
        return {"Policy": old.document, "RevisionId": old.revision_id}

    # -- GetResourcePolicy, PutResourcePolicy, DeleteResourcePolicy ---------------------------------
    def get_resource_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._arn_target(p["ResourceArn"], "get")
        old = self.store.get(target.name, target.key)
        if old is None:
            raise errors.ResourceNotFoundException(NO_RESOURCE)
        return {"Policy": old.document, "RevisionId": old.revision_id}

    def put_resource_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._arn_target(p["ResourceArn"], "add")
        text: str = p["Policy"]
        if len(text.encode()) > MAX_POLICY:
            raise errors.PolicyLengthExceededException(
                f"The final policy size ({len(text.encode())}) is bigger than the limit ({MAX_POLICY}).")
        try:
            parsed = document.parse(text, resource_based=True)
        except errors.MalformedPolicyDocument as exc:
            raise errors.InvalidParameterValueException(f"The policy document is malformed: {exc.message}") from None
        for st in parsed.statements:
            if not all(a == "*" or a.startswith("lambda:") for a in st.actions):
                raise errors.InvalidParameterValueException(
                    "The policy document is malformed: a function's policy may only name lambda: actions.")
        with self._lock:
            old = self.store.get(target.name, target.key)
            self._check_revision(p.get("RevisionId"), old, target)
            revision = self._write_text(target, old, text)
        return {"Policy": text, "RevisionId": revision}

    def delete_resource_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        target = self._arn_target(p["ResourceArn"], "remove")
        with self._lock:
            old = self.store.get(target.name, target.key)
            if old is None:
                raise errors.ResourceNotFoundException(NO_POLICY)
            self._check_revision(p.get("RevisionId"), old, target)
            self._write_text(target, old, None)
        return {}

    # -- lifecycle ----------------------------------------------------------------------------------
    def version_changed(self, name: str, version: str | None) -> None:
        """FunctionService's version listener: a deleted version takes its policy with it (a deleted function
        takes all of them by cascade)."""
        if version is not None and version != LATEST and self.functions.store.get(name, version) is None:
            self.store.delete(name, version)
        self._forget(name)

    def alias_changed(self, name: str, alias: str) -> None:
        """AliasService's listener: a deleted alias takes its policy with it."""
        if self.functions.aliases.get(name, alias) is None:
            self.store.delete(name, alias)
        self._forget(name)

    def _forget(self, name: str) -> None:
        for key in [k for k in list(self._cache) if k[0] == name]:
            self._cache.pop(key, None)

    # -- evaluation ---------------------------------------------------------------------------------
    def _policy(self, name: str, key: str) -> document.Policy | None:
        if (name, key) in self._cache:
            return self._cache[name, key]
        rec = self.store.get(name, key)
        parsed = None
        if rec is not None:
            try:
                parsed = document.parse(rec.document, resource_based=True)
            except errors.LambdaError:
                log.warning("the resource-based policy of %s:%s does not parse; it allows nothing", name, key)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[name, key] = parsed
        return parsed

    def decide(self, function_name: str, qualifier: str | None, action: str, principal: evaluate.Principal,
               context: Context) -> str:
        """evaluate.ALLOW, EXPLICIT_DENY or IMPLICIT_DENY for ``principal`` doing ``action`` on the function
        (qualifier None or $LATEST: the function's own policy and unqualified ARN; else that version's or alias's
        policy and qualified ARN). ``Principal()`` (anonymous) matches only statements with Principal ``*``."""
        key = LATEST if qualifier in (None, LATEST) else str(qualifier)
        policy = self._policy(function_name, key)
        if policy is None:
            return evaluate.IMPLICIT_DENY
        resource = arns.function_arn(self.functions.settings.region, self.account, function_name,
                                     None if key == LATEST else key)
        return evaluate.decide_for(policy, principal, evaluate.Request(action, resource, context))

    def authorize(self, session: Session | None, action: str, resource: str, context: Context) -> None:
        """A request signed with role credentials, within the account: allowed when the role's identity policy or
        the function's resource-based policy allows it, denied by an explicit Deny in either."""
        if session is None:
            return
        target = self._function_of(resource)
        decision = evaluate.IMPLICIT_DENY
        if target is not None:
            who = evaluate.Principal(arn=session.arn(self.account), account=self.account, role_arn=session.role_arn)
            decision = self.decide(*target, action, who, {**context, **self.iam.context(session)})
        self.iam.authorize(session, action, resource, context, decision)

    def _function_of(self, resource: str) -> tuple[str, str | None] | None:
        prefix = f"arn:aws:lambda:{self.functions.settings.region}:{self.account}:function:"
        if not resource.startswith(prefix):
            return None
        name, _, qualifier = resource[len(prefix):].partition(":")
        return name, qualifier or None

