"""Kindling's IAM: roles and policies, role sessions, STS, and the authorization of role-signed requests.

Modes (setting ``iam``): ``enforce`` evaluates every role session by its role's policies, and a function's
Role must exist and trust lambda.amazonaws.com. ``local`` (the default) does the same for roles that exist
in Kindling, while a role Kindling does not know still works: functions may name it (a warning is logged
once per role) and its sessions may do anything, as the operator's key pair can, so a local setup with
made-up role ARNs just works. The operator's key pair is never evaluated: it may do anything.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

from sqlalchemy import Engine

from kindling import errors
from kindling.iam import document, evaluate
from kindling.iam.conditions import Context
from kindling.iam.roles import Roles
from kindling.iam.sessions import Session, Sessions
from kindling.iam.store import IamStore, Role

log = logging.getLogger("kindling.iam")

MODES = ("local", "enforce")
LAMBDA = evaluate.Principal(service="lambda.amazonaws.com")
CANNOT_ASSUME = "The role defined for the function cannot be assumed by Lambda."
SESSION_MIN, SESSION_DEFAULT = 900, 3600


class IAM:
    def __init__(self, engine: Engine, account: str, key: bytes, mode: str = "local") -> None:
        if mode not in MODES:
            raise ValueError(f"--iam must be one of {', '.join(MODES)}, not {mode!r}")
        self.account = account
        self.enforce = mode == "enforce"
        self.store = IamStore(engine)
        self.roles = Roles(self.store, account, self._changed)
        self.sessions = Sessions(key)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[Role, list[document.Policy]] | None] = {}
        self._warned: set[str] = set()

    def _changed(self) -> None:
        with self._lock:
            self._cache.clear()

    def role_name(self, role_arn: str) -> str | None:
        """The name of a role ARN of this account (None: another account's, or not a role ARN)."""
        prefix = f"arn:aws:iam::{self.account}:role/"
        return role_arn.rsplit("/", 1)[-1] if role_arn.startswith(prefix) else None

    def _role(self, role_arn: str) -> tuple[Role, list[document.Policy]] | None:
        """The role of an ARN with its parsed identity policies, None if Kindling has no such role."""
        with self._lock:
            if role_arn in self._cache:
                return self._cache[role_arn]
        name = self.role_name(role_arn)
        role = self.store.get_role(name) if name else None
        found = None
        if role is not None and self.roles.role_arn(role) == role_arn:
            found = role, [document.parse(d) for d in self.roles.policy_documents(role.name)]
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[role_arn] = found
        return found

    # -- authorization ------------------------------------------------------------------------------
    def context(self, session: Session) -> Context:
        """The condition keys a role session brings to every request."""
        role = self._role(session.role_arn)
        role_id = role[0].role_id if role else "AROAKINDLINGUNKNOWN"
        return {"aws:principalarn": [session.role_arn], "aws:principalaccount": [self.account],
                "aws:principaltype": ["AssumedRole"], "aws:userid": [f"{role_id}:{session.session_name}"],
                "aws:tokenissuetime": [_iso(session.issued)], "aws:multifactorauthpresent": ["false"]}

    def decision(self, session: Session, action: str, resource: str, context: Context) -> str:
        """What the session's identity policies say of ``action`` on ``resource`` (evaluate.ALLOW, ...)."""
        role = self._role(session.role_arn)
        if role is None:  # local mode: a role Kindling does not know may do anything
            return evaluate.IMPLICIT_DENY if self.enforce else evaluate.ALLOW
        return evaluate.decide(role[1], evaluate.Request(action, resource, {**context, **self.context(session)}))

    def authorize(self, session: Session | None, action: str, resource: str, context: Context,
                  resource_decision: str = evaluate.IMPLICIT_DENY) -> None:
        """Nothing if ``session`` (None: the operator's key pair) may do ``action`` on ``resource``;
        AccessDeniedException with IAM's message otherwise. ``resource_decision``: what the resource's own
        policy says (kindling.functions.permissions): within an account, either policy's Allow suffices and
        either's explicit Deny wins."""
        if session is None:
            return
        decision = self.decision(session, action, resource, context)
        if resource_decision == evaluate.EXPLICIT_DENY and decision != evaluate.EXPLICIT_DENY:
            why = "with an explicit deny in a resource-based policy"
        elif decision != evaluate.EXPLICIT_DENY and evaluate.ALLOW in (decision, resource_decision):
            return
        else:
            why = ("with an explicit deny in an identity-based policy" if decision == evaluate.EXPLICIT_DENY
                   else f"because no identity-based policy allows the {action} action")
        raise errors.NotAuthorized(
            f"User: {session.arn(self.account)} is not authorized to perform: {action} on resource: {resource} {why}")

    # -- execution roles ----------------------------------------------------------------------------
    def check_function_role(self, role_arn: str) -> None:
        """CreateFunction / UpdateFunctionConfiguration's Role: in enforce mode it must exist and trust Lambda."""
        role = self._role(role_arn)
        if role is not None:
            if not evaluate.trusts(document.parse(role[0].trust, trust=True), LAMBDA):
                raise errors.InvalidParameterValueException(CANNOT_ASSUME)
            return
        if self.enforce:
            raise errors.InvalidParameterValueException(CANNOT_ASSUME)
        if role_arn not in self._warned and len(self._warned) < 10000:
            self._warned.add(role_arn)
            log.warning("role %s does not exist in Kindling's IAM; functions using it run with sessions that may do "
                        "anything (--iam local). Create it, or serve with --iam enforce to refuse it.", role_arn)

    def environment_credentials(self, role_arn: str, function_name: str, owner: str) -> dict[str, str]:
        """AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN of a new session of the function's role,
        valid while ``owner`` (an execution environment or template) holds it."""
        return self.sessions.issue(role_arn, function_name, owner=owner).environment()

    def share_credentials(self, owner: str, other: str) -> None:
        self.sessions.share(owner, other)

    def release_credentials(self, owner: str) -> None:
        self.sessions.release(owner)

    # -- STS ----------------------------------------------------------------------------------------
    def get_caller_identity(self, session: Session | None, access_key_id: str) -> dict[str, Any]:
        if session is None:
            return {"UserId": self.account, "Account": self.account, "Arn": f"arn:aws:iam::{self.account}:root"}
        return {"UserId": self.context(session)["aws:userid"][0], "Account": self.account,
                "Arn": session.arn(self.account)}

    def assume_role(self, session: Session | None, p: dict[str, Any], context: Context) -> dict[str, Any]:
        role_arn = p["RoleArn"]
        caller_arn = session.arn(self.account) if session else f"arn:aws:iam::{self.account}:root"
        denied = errors.NotAuthorized(
            f"User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {role_arn}")
        if "Policy" in p or "PolicyArns" in p:
            raise errors.ValidationError("Kindling does not support session policies (Policy, PolicyArns).")
        self.authorize(session, "sts:AssumeRole", role_arn, context)
        found = self._role(role_arn)
        if found is None:
            raise denied
        role = found[0]
        if session is not None:  # the operator may assume any role; a session only one that trusts it
            who = evaluate.Principal(arn=session.arn(self.account), account=self.account, role_arn=session.role_arn)
            if not evaluate.trusts(document.parse(role.trust, trust=True), who, {**context, **self.context(session)}):
                raise denied
        duration = int(p.get("DurationSeconds", SESSION_DEFAULT))
        limit = SESSION_DEFAULT if session is not None else role.max_session  # role chaining: one hour at most
        if duration > limit:
            raise errors.ValidationError(
                f"The requested DurationSeconds exceeds the {'1 hour session limit for roles assumed by role chaining' if session is not None else 'MaxSessionDuration set for this role'}.")  # noqa: E501
        new = self.sessions.issue(role_arn, p["RoleSessionName"], ttl=max(duration, SESSION_MIN))
        return {"Credentials": {"AccessKeyId": new.access_key_id, "SecretAccessKey": new.secret_access_key,
                                "SessionToken": new.token, "Expiration": _iso(new.expires)},
                "AssumedRoleUser": {"AssumedRoleId": f"{role.role_id}:{new.session_name}",
                                    "Arn": new.arn(self.account)}}


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


