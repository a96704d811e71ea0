"""Request validation with AWS's own ``ValidationException`` messages, from botocore's model.

Each broken constraint (required, length, range, pattern, enum) reads
``Value 'r1' at 'role' failed to satisfy constraint: Member must ...``, worded as
in the recorded AWS responses: paths are member names with the first letter
lower-cased, dotted when nested (``name.N.member`` inside lists); values print
as Java does (``'[a, b]'``, ``'{k=v}'``, ``'2.0'``, ``null``; sensitive: none); a
list or map reports its elements once, naming all of the element's constraints
in brackets; members come in reverse alphabetical order (``qualifier`` before
``functionName``) and enum values in Java HashSet order (``[Terminate, Allow]``).
"""

from __future__ import annotations

import math
import operator
import re
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

from botocore.model import Shape

from kindling.errors import ValidationException

Test = Callable[[Any], bool]  # True when the value breaks the constraint
NOT_NULL = "Member must not be null"
# List shapes whose elements AWS's own model leaves nullable (botocore cannot tell).
_NULLABLE_ITEMS = frozenset({"SubnetIds", "SecurityGroupIds"})
# Strings longer than this are reported as not matching their pattern without running it: a regex over a
# 70 MB member takes seconds of the event loop, and every patterned member of the models is far shorter.
PATTERN_CAP = 65536
# Java's \p{..} classes, which Python's re lacks; \w stands in for letters and digits.
_PROPS = {"L": r"\w", "N": r"\w", "Z": r"\u0020\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"}


@dataclass(eq=False)
class _Elem:
    """How a list reports its members, or a map its keys or values."""

    node: _Node
    text: str  # the bracketed constraint, "" when there is nothing to check
    not_null: bool

    def fails(self, value: Any) -> bool:
        return self.not_null if value is None else any(bad(value) for bad, _ in self.node.rules)


@dataclass(eq=False)
class _Node:
    kind: str  # structure, list, map or a scalar type name
    rules: list[tuple[Test, str]]
    sensitive: bool
    members: list[tuple[str, str, _Node, bool]] = field(default_factory=list)  # name, path, node, required
    item: _Elem | None = None  # list member or map value
    key: _Elem | None = None


_CACHE: weakref.WeakKeyDictionary[Shape, _Node] = weakref.WeakKeyDictionary()


def check(shape: Shape, params: dict[str, Any], skip: Iterable[str] = ()) -> list[str]:
    """Every constraint ``params`` breaks, worded and ordered as AWS does.

    ``skip`` names top-level members the caller checks itself (e.g. ``Runtime``,
    which Lambda reports as InvalidParameterValueException).
    """
    node = _CACHE.get(shape)
    if node is None:
        node = _CACHE[shape] = _compile(shape, {})
    out: list[str] = []
    _members(node, params, "", out, frozenset(skip))
    return out


def validate(shape: Shape, params: dict[str, Any], skip: Iterable[str] = ()) -> None:
    """Raise ValidationException when ``params`` break the model's constraints."""
    if found := check(shape, params, skip):
        raise ValidationException(message(found))


def message(found: list[str]) -> str:
    """``N validation error(s) detected: a; b`` (for callers merging in checks of their own)."""
    return f"{len(found)} validation error{'s' if len(found) > 1 else ''} detected: {'; '.join(found)}"


def _compile(shape: Shape, memo: dict[str, _Node]) -> _Node:
    if shape.name in memo:  # recursive shapes
        return memo[shape.name]
    node = memo[shape.name] = _Node(shape.type_name, _rules(shape), bool(shape.metadata.get("sensitive")))
    if shape.type_name == "structure":
        required = set(shape.required_members)
        members = [(n, n[:1].lower() + n[1:], _compile(m, memo), n in required) for n, m in shape.members.items()]
        node.members = sorted(members, key=lambda m: m[1], reverse=True)
    elif shape.type_name == "list":
        node.item = _elem(_compile(shape.member, memo), "Member must", shape.name not in _NULLABLE_ITEMS)
    elif shape.type_name == "map":
        node.key = _elem(_compile(shape.key, memo), "Map keys must", False)
        node.item = _elem(_compile(shape.value, memo), "Map value must", True)
    return node


def _elem(node: _Node, lead: str, not_null: bool) -> _Elem:
    texts = [text for _, text in node.rules] + [NOT_NULL] * not_null
    return _Elem(node, f"{lead} satisfy constraint: [{', '.join(texts)}]" if texts else "", not_null)


def _rules(shape: Shape) -> list[tuple[Test, str]]:
    meta, rules = shape.metadata, []
    numeric = shape.type_name in ("integer", "long", "float", "double")
    show: Callable[[Any], str] = _double if shape.type_name in ("float", "double") else str
    for bound, word, op in (("max", "less", operator.gt), ("min", "greater", operator.lt)):
        if bound in meta:
            limit, what = meta[bound], "value" if numeric else "length"
            rules.append((_bound(numeric, op, limit), f"Member must have {what} {word} than or equal to {show(limit)}"))
    if "pattern" in meta and (regex := _regex(meta["pattern"])):
        matches, text = regex.fullmatch, f"Member must satisfy regular expression pattern: {_shown(meta['pattern'])}"
        rules.append((lambda v: isinstance(v, str) and (len(v) > PATTERN_CAP or matches(v) is None), text))
    if enum := meta.get("enum"):
        allowed, text = frozenset(enum), f"Member must satisfy enum value set: [{', '.join(_hash_order(enum))}]"
        rules.append((lambda v: isinstance(v, str) and v not in allowed, text))
    return rules


def _bound(numeric: bool, op: Callable[[Any, Any], bool], limit: Any) -> Test:
    if numeric:
        return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and op(v, limit)
    return lambda v: isinstance(v, (str, bytes, list, dict)) and op(len(v), limit)


@cache
def _regex(pattern: str) -> re.Pattern[str] | None:
    """The model's Java regex in Python's dialect; None (no check) if it cannot be translated."""
    try:
        return re.compile(re.sub(r"\\p\{(\w+)\}", lambda m: _PROPS.get(m[1], m[0]), pattern))
    except re.error:
        return None


def _shown(pattern: str) -> str:
    """The pattern as AWS prints it: botocore wraps ``(A)|(B)`` in a group AWS's model lacks."""
    if pattern[:2] == "((" and pattern[-2:] == "))" and ")|(" in pattern and _regex(pattern[1:-1]):
        return pattern[1:-1]  # the inner part is balanced, so the outer parentheses pair up
    return pattern


def _hash_order(values: list[str]) -> list[str]:
    """Java HashSet iteration order: by hash bucket, then insertion order."""
    size = 16
    while len(values) > size * 3 // 4:
        size *= 2

    def bucket(s: str) -> int:
        h, raw = 0, s.encode("utf-16-be")
        for i in range(0, len(raw), 2):
            h = (31 * h + (raw[i] << 8 | raw[i + 1])) & 0xFFFFFFFF
        return (h ^ (h >> 16)) & (size - 1)

    return sorted(values, key=bucket)


def _members(node: _Node, value: dict[str, Any], path: str, out: list[str], skip: frozenset[str]) -> None:
    for name, segment, child, required in node.members:
        where = f"{path}.{segment}" if path else segment
        if name in skip:
            continue
        if (v := value.get(name)) is not None:
            _walk(child, v, where, out)
        elif required:
            out.append(f"Value null at '{where}' failed to satisfy constraint: {NOT_NULL}")


def _walk(node: _Node, value: Any, path: str, out: list[str]) -> None:
    out.extend(_fail(node, value, path, text) for bad, text in node.rules if bad(value))
    if node.kind == "structure" and isinstance(value, dict):
        _members(node, value, path, out, frozenset())
    elif node.kind == "list" and isinstance(value, list) and node.item:
        _elements(node, node.item, value, enumerate(value, 1), path, path + ".{}.member", out)
    elif node.kind == "map" and isinstance(value, dict) and node.key and node.item:
        _elements(node, node.key, value, ((k, k) for k in value), path, path + ".{}", out)
        _elements(node, node.item, value, value.items(), path, path + ".{}", out)


def _elements(
    owner: _Node, elem: _Elem, whole: Any, items: Iterable[tuple[Any, Any]], path: str, sub: str, out: list[str]
) -> None:
    if elem.node.kind == "structure":  # reported member by member: 'fileSystemConfigs.1.member.arn'
        for label, v in items:
            if v is not None:
                _walk(elem.node, v, sub.format(label), out)
            elif elem.not_null:
                out.append(f"Value null at '{sub.format(label)}' failed to satisfy constraint: {NOT_NULL}")
    elif elem.text and any(elem.fails(v) for _, v in items):
        out.append(_fail(owner, whole, path, elem.text))


def _fail(node: _Node, value: Any, path: str, text: str) -> str:
    shown = " " if node.sensitive else f" '{_java(value)}' "
    return f"Value{shown}at '{path}' failed to satisfy constraint: {text}"


def _java(value: Any) -> str:
    """A value as Java's toString prints it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return _double(value)
    if isinstance(value, (bytes, bytearray)):
        return f"java.nio.HeapByteBuffer[pos=0 lim={len(value)} cap={len(value)}]"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(map(_java, value))}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_java(k)}={_java(v)}" for k, v in value.items()) + "}"
    return str(value)


def _double(x: Any) -> str:
    """Java's Double.toString: ``2.0``, ``0.5``, ``1.0E7``."""
    x = float(x)
    if not math.isfinite(x) or x == 0 or 1e-3 <= abs(x) < 1e7:
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(x), repr(x))
    d = Decimal(repr(x))
    digits = "".join(map(str, d.as_tuple().digits)).rstrip("0") or "0"
    return f"{'-' if x < 0 else ''}{digits[0]}.{digits[1:] or '0'}E{d.adjusted()}"


# -- types -------------------------------------------------------------------------------------------------
# Before any constraint: every member must have its model type, as AWS's deserializer insists (Coral's words).
INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TYPE_WORD = {"string": "a String", "integer": "an Integer", "long": "a Long", "boolean": "a Boolean",
              "float": "a Float", "double": "a Double", "blob": "a ByteBuffer", "timestamp": "a Date",
              "structure": "a Structure", "map": "a Map", "list": "a List"}


class WrongType(ValueError):
    """A member whose JSON type is not its model type (the protocol answers it with its own error)."""


def conform(shape: Shape, value: Any, blob: Callable[[str], bytes]) -> Any:
    """``value`` (parsed JSON) checked against ``shape``'s types and made ready for the constraints.

    Structures lose unknown members and explicit nulls (an optional member sent as null is absent,
    as AWS reads it); blobs are decoded by ``blob``; numbers must fit their type; strings must be
    encodable (no lone surrogates). Raises WrongType for the first mismatch.
    """
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            raise WrongType(_mismatch(value, t))
        members = shape.members  # type: ignore[attr-defined]
        return {k: conform(members[k], v, blob) for k, v in value.items() if k in members and v is not None}
    if t == "list":
        if not isinstance(value, list):
            raise WrongType(_mismatch(value, t))
        member = shape.member  # type: ignore[attr-defined]
        return [None if v is None else conform(member, v, blob) for v in value]
    if t == "map":
        if not isinstance(value, dict):
            raise WrongType(_mismatch(value, t))
        key, val = shape.key, shape.value  # type: ignore[attr-defined]
        return {conform(key, k, blob): None if v is None else conform(val, v, blob) for k, v in value.items()}
    if t == "string":
        if not isinstance(value, str):
            raise WrongType(_mismatch(value, t))
        return text(value)
    if t in INT_RANGE:
        if not isinstance(value, int) or isinstance(value, bool):
            raise WrongType(_mismatch(value, t))
        lo, hi = INT_RANGE[t]
        if not lo <= value <= hi:
            raise WrongType(f"NUMBER_VALUE can not be converted to {_TYPE_WORD[t]}")
        return value
    if t in ("float", "double", "timestamp"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise WrongType(_mismatch(value, t))
        try:
            number = float(value)  # a JSON 2 for a double member is 2.0, as Java reads (and prints) it
        except OverflowError:
            raise WrongType(f"NUMBER_VALUE can not be converted to {_TYPE_WORD[t]}") from None
        if not math.isfinite(number):
            raise WrongType(f"NUMBER_VALUE can not be converted to {_TYPE_WORD[t]}")
        return value if t == "timestamp" else number
    if t == "boolean":
        if not isinstance(value, bool):
            raise WrongType(_mismatch(value, t))
        return value
    if t == "blob":
        if not isinstance(value, str):
            raise WrongType(_mismatch(value, t))
        return blob(value)
    raise WrongType(f"Kindling cannot read members of type {t}")


def text(value: str) -> str:
    """``value`` if it is encodable as UTF-8 (JSON's \\ud800 escapes can make lone surrogates)."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise WrongType("Invalid UTF-8 in a string member") from None
    return value


def _mismatch(value: Any, expected: str) -> str:
    if isinstance(value, dict):
        return "Start of structure or map found where not expected."
    if isinstance(value, list):
        return "Start of list found where not expected."
    if isinstance(value, bool):
        token = "TRUE_VALUE" if value else "FALSE_VALUE"
    elif isinstance(value, int):
        token = "NUMBER_VALUE"
    elif isinstance(value, float):
        token = "DECIMAL_VALUE"
    else:
        token = "STRING_VALUE"
    return f"{token} can not be converted to {_TYPE_WORD.get(expected, expected)}"
