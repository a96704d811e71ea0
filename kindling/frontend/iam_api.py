"""The IAM and STS APIs (query protocol) on Kindling's endpoint, driven by botocore's ``iam`` and ``sts`` models.

A request is ``POST /`` with a form-encoded body ``Action=<Operation>&Version=...&<members>``, signed for
service ``iam`` or ``sts`` (that is how it is told from Lambda's requests). Members are read from the flat
form as botocore's query serializer writes them (``Tags.member.1.Key``), validated against the model
(ValidationError), and the result is rendered as AWS's XML: ``<OpResponse><OpResult>...</OpResult>
<ResponseMetadata>``; errors as ``<ErrorResponse><Error><Type>Sender</Type><Code>...``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from kindling import errors
from kindling.core import Kindling
from kindling.frontend import validate
from kindling.iam import actions
from kindling.iam.conditions import Context
from kindling.iam.roles import Roles
from kindling.iam.sessions import Session

SERVICES = ("iam", "sts")
NAMESPACE = {"iam": "https://iam.amazonaws.com/doc/2010-05-08/", "sts": "https://sts.amazonaws.com/doc/2011-06-15/"}
MAX_FIELDS = 1000
Response = tuple[int, list[tuple[str, str]], bytes]

IAM_OPERATIONS: dict[str, Callable[[Roles, dict[str, Any]], dict[str, Any]]] = {
    "CreateRole": Roles.create_role,
    "GetRole": Roles.get_role,
    "ListRoles": Roles.list_roles,
    "DeleteRole": Roles.delete_role,
    "PutRolePolicy": Roles.put_role_policy,
    "GetRolePolicy": Roles.get_role_policy,
    "DeleteRolePolicy": Roles.delete_role_policy,
    "ListRolePolicies": Roles.list_role_policies,
    "CreatePolicy": Roles.create_policy,
    "GetPolicy": Roles.get_policy,
    "GetPolicyVersion": Roles.get_policy_version,
    "AttachRolePolicy": Roles.attach_role_policy,
    "DetachRolePolicy": Roles.detach_role_policy,
    "ListAttachedRolePolicies": Roles.list_attached_role_policies,
}
STS_OPERATIONS = ("GetCallerIdentity", "AssumeRole")

# What a signature or throttling error is called in the query protocol
_QUERY_CODES = {"UnrecognizedClientException": "InvalidClientTokenId", "InvalidSignatureException":
                "SignatureDoesNotMatch", "IncompleteSignatureException": "IncompleteSignature",
                "ExpiredTokenException": "ExpiredToken", "AccessDeniedException": "AccessDenied",
                "TooManyRequestsException": "Throttling", "ValidationException": "ValidationError",
                "InvalidParameterValueException": "ValidationError", "RequestEntityTooLargeException":
                "ValidationError", "ServiceException": "ServiceFailure"}


@cache
def service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def scope_service(headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
    """The service a request's credential is scoped to (``.../<region>/<service>/aws4_request``), if any."""
    credential = ""
    authorization = headers.get("authorization", "")
    if "Credential=" in authorization:
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
    elif "X-Amz-Credential" in query:
        credential = query["X-Amz-Credential"][0]
    parts = credential.split("/")
    return parts[3] if len(parts) == 5 else None


def is_request(method: str, path: str, headers: dict[str, str], query: dict[str, list[str]]) -> str | None:
    """"iam" or "sts" for a request to those APIs, None otherwise."""
    if path != "/" or method not in ("POST", "GET") or "x-amz-target" in headers:
        return None
    service = scope_service(headers, query)
    return service if service in SERVICES else None


async def handle(k: Kindling, service: str, session: Session | None, akid: str, body: bytes | None,
                 query: dict[str, list[str]], context: Context, request_id: str) -> Response:
    form = _form(body, query)
    name = form.get("Action", "")
    known = IAM_OPERATIONS if service == "iam" else STS_OPERATIONS
    if name not in known:
        raise errors.InvalidAction(f"Could not find operation {name[:128]} for version "
                                   f"{form.get('Version', '')[:32]}")
    op = service_model(service).operation_model(name)
    params = _params(op, form)
    iam = k.iam
    if service == "sts":
        result = (iam.get_caller_identity(session, akid) if name == "GetCallerIdentity"
                  else iam.assume_role(session, params, context))
    else:
        role_arn = None
        if session is not None and "RoleName" in params and (role := iam.store.get_role(params["RoleName"])):
            role_arn = iam.roles.role_arn(role)
        iam.authorize(session, *actions.iam_request(name, params, k.settings.account_id, role_arn), context)
        result = await asyncio.to_thread(IAM_OPERATIONS[name], iam.roles, params)
    return 200, [("Content-Type", "text/xml")], render(service, op, result, request_id)


def _form(body: bytes | None, query: dict[str, list[str]]) -> dict[str, str]:
    if body is None:
        raise errors.ValidationError("Request is too large.")
    flat = {k: v[0] for k, v in query.items() if not k.startswith("X-Amz-")}
    pairs = body.split(b"&", MAX_FIELDS) if body else []
    if len(pairs) > MAX_FIELDS:
        raise errors.ValidationError(f"The request has more than {MAX_FIELDS} parameters.")
    for pair in pairs:
        if pair:
            name, _, value = pair.partition(b"=")
            key = _unquote(name)
            flat.setdefault(key, _unquote(value))  # the first of a repeated name, as parse_qs's v[0]
    return flat


def _unquote(raw: bytes) -> str:
    """A form-encoded value (``+`` a space, ``%XX`` a byte, UTF-8) decoded at C speed: urllib's unquote is a
    Python loop over every escape, milliseconds for one large policy document on the event loop."""
    raw = raw.replace(b"+", b" ")
    if b"%" not in raw:
        decoded = raw
    else:  # %XX -> \xXX, decoded by the unicode_escape codec (each to the code point of that byte)
        try:
            escaped = raw.replace(b"\\", b"%5C").replace(b"%", b"\\x")
            decoded = escaped.decode("unicode_escape").encode("latin-1")
        except UnicodeDecodeError:  # a % not followed by two hex digits: read it as it stands, as parse_qs does
            return unquote(raw.decode("utf-8", "replace"))
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.ValidationError("The request body is not UTF-8.") from None


def _params(op: OperationModel, form: dict[str, str]) -> dict[str, Any]:
    shape = op.input_shape
    if shape is None:
        return {}
    params = _read(shape, form, "")
    if not isinstance(params, dict):
        params = {}
    if found := validate.check(shape, params):
        raise errors.ValidationError(validate.message(found))
    return params


def _read(shape: Shape, form: dict[str, str], prefix: str) -> Any:
    """The value of ``shape`` at ``prefix`` in the flat form (None when absent), as botocore's query
    serializer lays it out."""
    t = shape.type_name
    if t == "structure":
        out = {}
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            key = f"{prefix}.{member.serialization.get('name', name)}" if prefix else name
            if (value := _read(member, form, key)) is not None:
                out[name] = value
        return out if out or not prefix else None
    if t == "list":
        items = []
        for i in range(1, MAX_FIELDS + 1):
            value = _read(shape.member, form, f"{prefix}.member.{i}")  # type: ignore[attr-defined]
            if value is None:
                break
            items.append(value)
        return items if items or f"{prefix}" in form else None
    if t == "map":
        entries = {}
        for i in range(1, MAX_FIELDS + 1):
            key = form.get(f"{prefix}.entry.{i}.key")
            if key is None:
                break
            entries[key] = form.get(f"{prefix}.entry.{i}.value", "")
        return entries or None
    raw = form.get(prefix)
    if raw is None:
        return None
    if t in validate.INT_RANGE:
        lo, hi = validate.INT_RANGE[t]
        if not (raw.lstrip("-").isdigit() and len(raw) < 21 and lo <= int(raw) <= hi):
            raise errors.ValidationError(f"Invalid value for parameter {prefix}, value: {raw[:64]}, type: "
                                         f"{t}")
        return int(raw)
    if t == "boolean":
        return raw.lower() == "true"
    return raw


def render(service: str, op: OperationModel, result: dict[str, Any], request_id: str) -> bytes:
    name = op.name
    parts = [f'<{name}Response xmlns="{NAMESPACE[service]}">']
    if op.output_shape is not None:
        wrapper = op.output_shape.serialization.get("resultWrapper", f"{name}Result")
        parts.append(f"<{wrapper}>")
        _members(op.output_shape, result, parts)
        parts.append(f"</{wrapper}>")
    parts.append(f"<ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata></{name}Response>")
    return "".join(parts).encode()


def _members(shape: Shape, value: dict[str, Any], out: list[str]) -> None:
    for name, member in shape.members.items():  # type: ignore[attr-defined]
        if value.get(name) is not None:
            tag = member.serialization.get("name", name)
            out.append(f"<{tag}>")
            _value(member, value[name], out)
            out.append(f"</{tag}>")


def _value(shape: Shape, value: Any, out: list[str]) -> None:
    t = shape.type_name
    if t == "structure":
        _members(shape, value, out)
    elif t == "list":
        for item in value:
            out.append("<member>")
            _value(shape.member, item, out)  # type: ignore[attr-defined]
            out.append("</member>")
    elif t == "boolean":
        out.append("true" if value else "false")
    else:
        out.append(escape(str(value)))


def error(exc: errors.LambdaError, service: str, request_id: str) -> Response:
    code = exc.code if isinstance(exc, errors.IamError) else _QUERY_CODES.get(exc.code, exc.code)
    kind = "Receiver" if exc.status >= 500 else "Sender"
    body = (f'<ErrorResponse xmlns="{NAMESPACE.get(service, NAMESPACE["iam"])}"><Error><Type>{kind}</Type>'
            f"<Code>{escape(code)}</Code><Message>{escape(exc.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>")
    return exc.status, [("Content-Type", "text/xml")], body.encode()
