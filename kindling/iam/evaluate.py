"""IAM's policy evaluation logic for one request: an explicit Deny wins, then an Allow, else an implicit deny.

Identity policies (a role's inline and attached policies) are evaluated against (action, resource, context);
a role's trust policy against the principal that wants to assume it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from kindling.iam import conditions
from kindling.iam.document import Policy, Statement
from kindling.iam.wildcard import match

ALLOW, EXPLICIT_DENY, IMPLICIT_DENY = "Allow", "ExplicitDeny", "ImplicitDeny"


@dataclasses.dataclass(frozen=True)
class Request:
    action: str  # e.g. "lambda:InvokeFunction"
    resource: str  # an ARN, or "*"
    context: conditions.Context = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who asks to assume a role: an AWS principal (its ARN and account) or a service."""

    arn: str = ""  # arn:aws:sts::<acct>:assumed-role/<role>/<session> or arn:aws:iam::<acct>:root
    account: str = ""
    role_arn: str = ""  # the role of an assumed-role session
    service: str = ""  # e.g. "lambda.amazonaws.com"


def decide(policies: Iterable[Policy], request: Request) -> str:
    """ALLOW, EXPLICIT_DENY or IMPLICIT_DENY for ``request`` under every statement of ``policies``."""
    allowed = False
    action = request.action.lower()
    for policy in policies:
        for st in policy.statements:
            if st.effect == "Allow" and allowed:
                continue  # only a Deny can change the answer now
            if _applies(st, action, request.resource, request.context):
                if st.effect == "Deny":
                    return EXPLICIT_DENY
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


def _applies(st: Statement, action: str, resource: str, context: conditions.Context) -> bool:
    if any(match(a, action) for a in st.actions) == st.not_action:
        return False
    if st.resources is not None and any(match(r, resource) for r in st.resources) == st.not_resource:
        return False
    return conditions.holds(st.condition, context) if st.condition else True


def decide_for(policy: Policy, principal: Principal, request: Request) -> str:
    """A resource-based policy's answer for ``principal`` making ``request``: ALLOW, EXPLICIT_DENY or
    IMPLICIT_DENY (statements whose Principal or NotPrincipal leaves the principal out do not apply)."""
    allowed = False
    action = request.action.lower()
    for st in policy.statements:
        if st.effect == "Allow" and allowed:
            continue
        if _principal_matches(st.principals or {}, principal) == st.not_principal:
            continue
        if _applies(st, action, request.resource, request.context):
            if st.effect == "Deny":
                return EXPLICIT_DENY
            allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


def trusts(policy: Policy, principal: Principal, context: conditions.Context | None = None,
           action: str = "sts:AssumeRole") -> bool:
    """Whether a role's trust policy lets ``principal`` perform ``action`` (sts:AssumeRole) on it."""
    allowed = False
    for st in policy.statements:
        if any(match(a, action.lower()) for a in st.actions) == st.not_action:
            continue
        if _principal_matches(st.principals or {}, principal) == st.not_principal:
            continue
        if st.condition and not conditions.holds(st.condition, context or {}):
            continue
        if st.effect == "Deny":
            return False
        allowed = True
    return allowed


def _principal_matches(principals: dict[str, tuple[str, ...]], who: Principal) -> bool:
    if "*" in principals:
        return True
    if who.service:
        return who.service in principals.get("Service", ())
    for p in principals.get("AWS", ()):
        if p == "*" or p in (who.account, f"arn:aws:iam::{who.account}:root"):
            return bool(who.account)
        if p in (who.arn, who.role_arn) and p:
            return True
    return False
