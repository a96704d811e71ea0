"""Policy documents: parsed, checked as IAM checks them (MalformedPolicyDocument), normalized for evaluation.

Three grammars share one parser: identity policies (Action and Resource; no Principal), trust policies
(Principal and Action; no Resource) and resource-based policies (Principal, Action and Resource). Sizes are
counted as IAM counts them, without whitespace.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from kindling import errors
from kindling.iam import conditions

VERSIONS = ("2012-10-17", "2008-10-17")
_ACTION = re.compile(r"[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+|\*")
_TOP = {"Version", "Id", "Statement"}
_FIELDS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Principal", "NotPrincipal",
           "Condition"}
MAX_STATEMENTS = 1000
MAX_ITEMS = 5000  # actions, resources, principals or condition values in one document


@dataclasses.dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    actions: tuple[str, ...]  # lower case
    not_action: bool
    resources: tuple[str, ...] | None  # None: a trust policy's statement (no resource)
    not_resource: bool
    principals: dict[str, tuple[str, ...]] | None  # "AWS"/"Service"/"Federated"/"*" -> ids; None: identity policy
    not_principal: bool
    condition: dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Policy:
    text: str  # the document as given
    statements: tuple[Statement, ...]


def size(text: str) -> int:
    """Characters IAM counts against its policy size quotas (whitespace is not counted)."""
    return sum(1 for c in text if not c.isspace())


def malformed(message: str) -> errors.LambdaError:
    return errors.MalformedPolicyDocument(message)


def parse(text: str, trust: bool = False, resource_based: bool = False) -> Policy:
    """The policy in ``text``, or MalformedPolicyDocument saying what is wrong with it."""
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise malformed("Syntax errors in policy.") from None
    if not isinstance(doc, dict) or not set(doc) <= _TOP:
        raise malformed("Syntax errors in policy.")
    version = doc.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise malformed("The policy failed legacy parsing")
    raw = doc.get("Statement")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, dict) else None
    if not items or len(items) > MAX_STATEMENTS:
        raise malformed("Syntax errors in policy.")
    budget = [MAX_ITEMS]
    return Policy(text, tuple(_statement(s, trust, budget, resource_based) for s in items))


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _strings(value: Any, budget: list[int]) -> tuple[str, ...] | None:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) for v in items):
        return None
    budget[0] -= len(items)
    if budget[0] < 0:
        raise malformed("Syntax errors in policy.")
    return tuple(items)


def _statement(s: Any, trust: bool, budget: list[int], resource_based: bool = False) -> Statement:
    if not isinstance(s, dict) or not set(s) <= _FIELDS:
        raise malformed("Syntax errors in policy.")
    sid = r"[A-Za-z0-9_. -]*" if resource_based else r"[A-Za-z0-9 ]*"  # Lambda's statement ids have - _ .
    if "Sid" in s and not (isinstance(s["Sid"], str) and re.fullmatch(sid, s["Sid"])):
        raise malformed("Statement IDs (SID) must be alpha-numeric. Check that your input satisfies the regular "
                        "expression [0-9A-Za-z]*")
    effect = s.get("Effect")
    if effect is None:
        raise malformed("Missing required field Effect")
    if effect not in ("Allow", "Deny"):
        raise malformed(f"Invalid effect: {str(effect)[:128]}")
    action_key = _one_of(s, "Action", "NotAction")
    if action_key is None:
        raise malformed("Policy statement must contain actions.")
    actions = _strings(s[action_key], budget)
    if actions is None:
        raise malformed("Syntax errors in policy.")
    for a in actions:
        if not _ACTION.fullmatch(a):
            raise malformed("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
    resources: tuple[str, ...] | None = None
    resource_key = _one_of(s, "Resource", "NotResource")
    principal_key = _one_of(s, "Principal", "NotPrincipal")
    principals: dict[str, tuple[str, ...]] | None = None
    if trust:
        if resource_key is not None:
            raise malformed(f"Has prohibited field {resource_key}")
        if principal_key is None:
            raise malformed("Missing required field Principal")
        principals = _principals(s[principal_key], budget)
    else:
        if principal_key is not None and not resource_based:
            raise malformed("Policy document should not specify a principal.")
        if principal_key is None and resource_based:
            raise malformed("Missing required field Principal")
        if principal_key is not None:
            principals = _principals(s[principal_key], budget)
        if resource_key is None:
            raise malformed("Policy statement must contain resources.")
        resources = _strings(s[resource_key], budget)
        if resources is None:
            raise malformed("Syntax errors in policy.")
        for r in resources:
            if r != "*" and not r.startswith("arn:"):
                raise malformed(f"Resource {r[:256]} must be in ARN format or \"*\".")
    return Statement(effect, tuple(a.lower() for a in actions), action_key == "NotAction", resources,
                     resource_key == "NotResource", principals, principal_key == "NotPrincipal",
                     _condition(s.get("Condition", {}), budget))


def _one_of(s: dict[str, Any], key: str, not_key: str) -> str | None:
    if key in s and not_key in s:
        raise malformed("Syntax errors in policy.")
    return key if key in s else not_key if not_key in s else None


def _principals(value: Any, budget: list[int]) -> dict[str, tuple[str, ...]]:
    if value == "*":
        return {"*": ("*",)}
    if not isinstance(value, dict) or not value:
        raise malformed("Syntax errors in policy.")
    out: dict[str, tuple[str, ...]] = {}
    for kind, ids in value.items():
        if kind not in ("AWS", "Service", "Federated", "CanonicalUser"):
            raise malformed(f"Invalid principal in policy: \"{str(kind)[:128]}\"")
        got = _strings(ids, budget)
        if got is None:
            raise malformed("Syntax errors in policy.")
        for p in got:
            if kind == "AWS" and not (p == "*" or re.fullmatch(r"\d{12}", p) or p.startswith("arn:aws:")):
                raise malformed(f"Invalid principal in policy: \"AWS\":\"{p[:256]}\"")
        out[kind] = got
    return out


def _condition(value: Any, budget: list[int]) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise malformed("Syntax errors in policy.")
    for op, keys in value.items():
        if not conditions.known(op):
            raise malformed(f"Invalid Condition type : {str(op)[:128]}.")
        if not isinstance(keys, dict) or not keys:
            raise malformed("Syntax errors in policy.")
        for v in keys.values():
            items = v if isinstance(v, list) else [v]
            if not all(isinstance(x, (str, bool, int, float)) for x in items):
                raise malformed("Syntax errors in policy.")
            budget[0] -= len(items)
            if budget[0] < 0:
                raise malformed("Syntax errors in policy.")
    return value
