"""Lambda's restJson1 wire format, driven by botocore's service model.

Routes, request members (uri labels, query strings, headers, JSON body, blob
payloads) and response members are all read from the model, so every operation
is parsed and rendered exactly as boto3 expects, and handlers see plain dicts.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from functools import cache
from typing import Any
from urllib.parse import parse_qs, unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from kindling import errors
from kindling.frontend import validate


@cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("lambda")


@dataclasses.dataclass(frozen=True)
class Route:
    operation: OperationModel
    method: str
    pattern: re.Pattern[str]
    required_query: tuple[tuple[str, str], ...]  # literal "?List=ALL" parts of the requestUri


def _compile(uri: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...]]:
    path, _, query = uri.partition("?")
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{"):
            name = part[1:-1]
            greedy = name.endswith("+")
            regex += f"(?P<{name.rstrip('+')}>{'.+' if greedy else '[^/]+'})"
        else:
            regex += re.escape(part)
    literal = tuple((k, v[0]) for k, v in parse_qs(query, keep_blank_values=True).items())
    return re.compile(regex + "/?$"), literal


@cache
def routes() -> tuple[Route, ...]:
    model = service_model()
    out = []
    for name in model.operation_names:
        op = model.operation_model(name)
        pattern, literal = _compile(op.http["requestUri"])
        out.append(Route(op, op.http["method"], pattern, literal))
    # literal query parts first, so "?List=ALL" wins over the plain path
    return tuple(sorted(out, key=lambda r: -len(r.required_query)))


def match(method: str, path: str, query: dict[str, list[str]]) -> tuple[OperationModel, dict[str, str]] | None:
    for r in routes():
        if r.method != method:
            continue
        m = r.pattern.match(path)
        if m and all(query.get(k, [None])[0] == v for k, v in r.required_query):
            return r.operation, {k: unquote(v) for k, v in m.groupdict().items()}
    return None


_INTEGER = re.compile(r"-?[0-9]+")


def _scalar(shape: Shape, raw: str, where: str) -> Any:
    """A query string, header or URI label value as its member's type."""
    t = shape.type_name
    if t in validate.INT_RANGE:
        lo, hi = validate.INT_RANGE[t]
        if not (_INTEGER.fullmatch(raw) and len(raw) < 21 and lo <= int(raw) <= hi):
            raise errors.InvalidParameterValueException(f"Invalid value for {where}: {raw[:256]}")
        return int(raw)
    if t == "boolean":
        return raw.lower() == "true"
    try:
        return validate.text(raw)
    except validate.WrongType as exc:
        raise errors.SerializationException(str(exc)) from None


def _blob(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise errors.InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again.") from None


def _from_json(shape: Shape, value: Any) -> Any:
    """JSON body value → Python value of the member's type (blobs decoded): SerializationException otherwise."""
    try:
        return validate.conform(shape, value, _blob)
    except validate.WrongType as exc:
        raise errors.SerializationException(str(exc)) from None


def parse_request(op: OperationModel, labels: dict[str, str], query: dict[str, list[str]],
                  headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The operation's input members from one HTTP request, each of its model's type."""
    shape = op.input_shape
    if shape is None:
        return {}
    params: dict[str, Any] = {}
    payload = shape.serialization.get("payload")
    body_members = {}
    for name, member in shape.members.items():
        loc, wire = member.serialization.get("location"), member.serialization.get("name", name)
        if loc == "uri":
            if wire in labels:
                params[name] = _scalar(member, labels[wire], wire)
        elif loc == "querystring":
            if wire in query:
                vals = query[wire]
                params[name] = ([_scalar(member.member, v, wire) for v in vals]  # type: ignore[attr-defined]
                                if member.type_name == "list" else _scalar(member, vals[0], wire))
        elif loc == "header":
            if wire.lower() in headers:
                params[name] = _scalar(member, headers[wire.lower()], wire)
        elif name == payload:
            if member.type_name == "blob":
                params[name] = body
            elif body and (value := _json(body)) is not None:
                params[name] = _from_json(member, value)
        else:
            body_members[name] = member
    if body_members and body and not payload:
        doc = _json(body)
        if not isinstance(doc, dict):
            raise errors.InvalidRequestContentException("Could not parse request body into json: expected an object")
        for name, value in doc.items():
            if name in body_members and value is not None:
                params[name] = _from_json(body_members[name], value)
    return params


def _no_constant(name: str) -> Any:
    raise ValueError(f"Non-standard token '{name}'")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}") from None
    except RecursionError:
        raise errors.InvalidRequestContentException(  # Jackson's words for it (Python gives up at about 1000 too)
            "Could not parse request body into json: Could not parse payload into json: Document nesting depth "
            "exceeds the maximum allowed (1000, from `StreamReadConstraints.getMaxNestingDepth()`)") from None


def _to_json(shape: Shape, value: Any) -> Any:
    t = shape.type_name
    if t == "blob" and isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if t == "structure" and isinstance(value, dict):
        members = shape.members  # type: ignore[attr-defined]
        return {k: _to_json(members[k], v) if k in members else v for k, v in value.items() if v is not None}
    if t == "list" and isinstance(value, list):
        return [_to_json(shape.member, v) for v in value]  # type: ignore[attr-defined]
    return value


def render_response(op: OperationModel, result: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) for an operation's output members."""
    status = int(op.http.get("responseCode", 200))
    shape = op.output_shape
    if shape is None:
        return status, [], b""
    headers: list[tuple[str, str]] = []
    payload = shape.serialization.get("payload")
    doc: dict[str, Any] = {}
    body: bytes | None = None
    for name, value in result.items():
        member = shape.members.get(name)
        if member is None or value is None:
            continue
        loc = member.serialization.get("location")
        if loc == "statusCode":
            status = int(value)
        elif loc == "header":
            headers.append((member.serialization.get("name", name), str(value)))
        elif name == payload:
            body = value if isinstance(value, bytes) else json.dumps(_to_json(member, value)).encode()
        else:
            doc[name] = _to_json(member, value)
    if status in (204, 304):
        return status, headers, b""  # no content, whatever the operation's other members
    if body is None:
        body = json.dumps(doc).encode()
        headers.append(("Content-Type", "application/json"))
    return status, headers, body
