"""IAM's condition operators: a statement's Condition block against the request context.

Within a block every operator must hold, within an operator every key, and for one key any of the policy's
values may match. A key missing from the context makes a positive operator false and a negated one
(``StringNotEquals``, ``ArnNotLike``, ...) true; ``...IfExists`` makes any operator true for a missing key;
``Null`` tests presence. ``ForAnyValue:`` / ``ForAllValues:`` compare multivalued keys value by value.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable
from typing import Any

from kindling.iam.wildcard import match

Context = dict[str, list[str]]  # condition key (lower case) -> its values in this request
Test = Callable[[str, str], bool]  # (request value, policy value) -> matches


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _date(s: str) -> float | None:
    try:
        if s.isdigit():
            return float(s)
        return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):
        return None


def _numeric(op: Callable[[float, float], bool], parse: Callable[[str], float | None]) -> Test:
    def test(value: str, wanted: str) -> bool:
        a, b = parse(value), parse(wanted)
        return a is not None and b is not None and op(a, b)
    return test


def _ip(value: str, wanted: str) -> bool:
    try:
        return ipaddress.ip_address(value) in ipaddress.ip_network(wanted, strict=False)
    except ValueError:
        return False


def _arn_like(value: str, wanted: str) -> bool:
    """ARN matching: the six colon-delimited parts matched each with its wildcards (case-sensitive)."""
    got, want = value.split(":", 5), wanted.split(":", 5)
    return len(got) == len(want) == 6 and all(match(w, g) for w, g in zip(want, got, strict=True))


_EQ: Callable[[float, float], bool] = lambda a, b: a == b  # noqa: E731
_LT: Callable[[float, float], bool] = lambda a, b: a < b  # noqa: E731
_LE: Callable[[float, float], bool] = lambda a, b: a <= b  # noqa: E731
_GT: Callable[[float, float], bool] = lambda a, b: a > b  # noqa: E731
_GE: Callable[[float, float], bool] = lambda a, b: a >= b  # noqa: E731

# operator -> (test of one request value against one policy value, negated)
OPERATORS: dict[str, tuple[Test, bool]] = {
    "StringEquals": (lambda v, w: v == w, False),
    "StringNotEquals": (lambda v, w: v == w, True),
    "StringEqualsIgnoreCase": (lambda v, w: v.lower() == w.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, w: v.lower() == w.lower(), True),
    "StringLike": (lambda v, w: match(w, v), False),
    "StringNotLike": (lambda v, w: match(w, v), True),
    "NumericEquals": (_numeric(_EQ, _number), False),
    "NumericNotEquals": (_numeric(_EQ, _number), True),
    "NumericLessThan": (_numeric(_LT, _number), False),
    "NumericLessThanEquals": (_numeric(_LE, _number), False),
    "NumericGreaterThan": (_numeric(_GT, _number), False),
    "NumericGreaterThanEquals": (_numeric(_GE, _number), False),
    "DateEquals": (_numeric(_EQ, _date), False),
    "DateNotEquals": (_numeric(_EQ, _date), True),
    "DateLessThan": (_numeric(_LT, _date), False),
    "DateLessThanEquals": (_numeric(_LE, _date), False),
    "DateGreaterThan": (_numeric(_GT, _date), False),
    "DateGreaterThanEquals": (_numeric(_GE, _date), False),
    "Bool": (lambda v, w: v.lower() == w.lower(), False),
    "BinaryEquals": (lambda v, w: v == w, False),
    "IpAddress": (_ip, False),
    "NotIpAddress": (_ip, True),
    "ArnEquals": (_arn_like, False),
    "ArnLike": (_arn_like, False),
    "ArnNotEquals": (_arn_like, True),
    "ArnNotLike": (_arn_like, True),
}
SET_PREFIXES = ("ForAnyValue:", "ForAllValues:")


def known(operator: str) -> bool:
    """Whether a Condition operator is one IAM has (with its IfExists / set prefixes)."""
    base = operator
    for prefix in SET_PREFIXES:
        base = base.removeprefix(prefix)
    base = base.removesuffix("IfExists")
    return base in OPERATORS or operator == "Null"


def _values(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    return [str(v).lower() if isinstance(v, bool) else str(v) for v in items]


def holds(block: dict[str, dict[str, Any]], context: Context) -> bool:
    """Whether every operator of a statement's Condition block holds for ``context``."""
    return all(_operator(op, keys, context) for op, keys in block.items())


def _operator(op: str, keys: dict[str, Any], context: Context) -> bool:
    if op == "Null":
        return all((context.get(key.lower()) is None) == (_values(v)[0].lower() == "true")
                   for key, v in keys.items() if _values(v))
    qualifier = next((p for p in SET_PREFIXES if op.startswith(p)), None)
    base = op.removeprefix(qualifier or "")
    if_exists = base.endswith("IfExists")
    test, negated = OPERATORS[base.removesuffix("IfExists")]
    for key, raw in keys.items():
        wanted = _values(raw)
        present = context.get(key.lower())
        if present is None:
            if if_exists or qualifier == "ForAllValues:":
                continue
            if qualifier == "ForAnyValue:" or not negated:
                return False
            continue  # a negated operator holds for a missing key
        ok: bool
        if qualifier == "ForAllValues:":
            ok = all(any(test(v, w) for w in wanted) != negated for v in present)
        elif qualifier == "ForAnyValue:":
            ok = any(any(test(v, w) for w in wanted) != negated for v in present)
        else:
            hit = any(test(v, w) for v in present for w in wanted)
            ok = hit != negated
        if not ok:
            return False
    return True
