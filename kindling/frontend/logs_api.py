"""The CloudWatch Logs API (awsJson1.1) on Kindling's endpoint, driven by botocore's ``logs`` model.

A request is ``POST /`` with ``X-Amz-Target: Logs_20140328.<Operation>`` and a JSON body, signed for
service ``logs``. Its members are validated against the model's constraints (reported as
InvalidParameterException, as CloudWatch Logs does), the operation runs on ``LogsService`` and the
result is JSON. Also Kindling's own ``/_kindling/logs/<function>`` (all of a function's lines, or one
invocation's with ``?requestId=``), which `kindling logs` uses.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import botocore.session
from botocore.model import ServiceModel

from kindling import errors
from kindling.core import Kindling
from kindling.frontend import validate
from kindling.observability.logs import Event
from kindling.observability.logs_service import LogsService

TARGET_PREFIX = "Logs_20140328."
CONTENT_TYPE = "application/x-amz-json-1.1"
SIGNING_SERVICE = "logs"

Response = tuple[int, list[tuple[str, str]], bytes]
Operation = Callable[[LogsService, dict[str, Any]], dict[str, Any]]
Authorize = Callable[[str, dict[str, Any]], None]  # (operation, members): AccessDeniedException if not allowed

OPERATIONS: dict[str, Operation] = {
    "DescribeLogGroups": LogsService.describe_log_groups,
    "CreateLogGroup": LogsService.create_log_group,
    "DeleteLogGroup": LogsService.delete_log_group,
    "PutRetentionPolicy": LogsService.put_retention_policy,
    "DeleteRetentionPolicy": LogsService.delete_retention_policy,
    "DescribeLogStreams": LogsService.describe_log_streams,
    "DeleteLogStream": LogsService.delete_log_stream,
    "GetLogEvents": LogsService.get_log_events,
    "FilterLogEvents": LogsService.filter_log_events,
}
# Operations that read many files run off the event loop, so invokes are never held up by a search.
_OFF_LOOP = frozenset({"GetLogEvents", "FilterLogEvents", "DescribeLogStreams"})


@cache
def service_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("logs")


def is_logs_request(method: str, path: str, headers: dict[str, str]) -> bool:
    return method == "POST" and path == "/" and headers.get("x-amz-target", "").startswith(TARGET_PREFIX)


async def handle(k: Kindling, headers: dict[str, str], body: bytes | None,
                 authorize: Authorize | None = None) -> Response:
    name = headers["x-amz-target"][len(TARGET_PREFIX):]
    operation = OPERATIONS.get(name)
    if operation is None:
        raise errors.LogsUnknownOperationException(f"Kindling does not implement the Logs operation {name}.")
    if body is None:
        raise errors.InvalidParameterException("The request is too large.")
    params = _params(name, body)
    if authorize is not None:  # signed with role credentials
        authorize(name, params)
    service = k.logs_service
    if name in _OFF_LOOP:
        result = await asyncio.to_thread(operation, service, params)
    else:
        result = operation(service, params)
    return 200, [("Content-Type", CONTENT_TYPE)], json.dumps(result).encode()


def _params(name: str, body: bytes) -> dict[str, Any]:
    """The request's members, each of its model type (SerializationException) and within its constraints."""
    try:
        doc = json.loads(body or b"{}", parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise errors.LogsSerializationException("Start of structure or map found where not expected.") from None
    if not isinstance(doc, dict):
        raise errors.LogsSerializationException("Start of structure or map found where not expected.")
    shape = service_model().operation_model(name).input_shape
    if shape is None:
        return {}
    try:
        params: dict[str, Any] = validate.conform(shape, doc, _blob)
    except validate.WrongType as exc:
        raise errors.LogsSerializationException(str(exc)) from None
    if found := validate.check(shape, params):
        raise errors.InvalidParameterException(validate.message(found))
    for ident in [params.get("logGroupIdentifier") or "", *params.get("logGroupIdentifiers", ())]:
        if ident.startswith("arn:") and ":log-group:" not in ident:
            raise errors.InvalidParameterException(f"Invalid log group ARN: {ident}")
    return params


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _blob(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise errors.LogsSerializationException("Base64 encoded value expected for a blob member") from None


def error(exc: errors.LambdaError) -> Response:
    """Any error answered to a Logs API request, in awsJson's shape (signature errors included)."""
    body = exc.body() if isinstance(exc, errors.LogsError) else {"__type": exc.code, "message": exc.message}
    return exc.status, [("Content-Type", CONTENT_TYPE), ("X-Amzn-ErrorType", exc.code)], json.dumps(body).encode()


def function_groups(k: Kindling, function: str) -> list[str]:
    """The groups a function writes to: its configured LogGroup, and the default one."""
    groups = [f"/aws/lambda/{function}"]
    try:
        rec = k.functions.store.get(function)
        if rec is not None:
            groups.insert(0, rec.config["LoggingConfig"]["LogGroup"])
    except Exception:  # noqa: BLE001 - a function being changed or deleted: the default group still answers
        pass
    return list(dict.fromkeys(groups))


async def internal(k: Kindling, function: str, query: dict[str, list[str]]) -> Response:
    """GET /_kindling/logs/<function>[?since=ms][&requestId=id]: events across the function's streams, in order."""
    request_id = query.get("requestId", [""])[0]
    groups = function_groups(k, function)
    if request_id:
        events: list[Event] = await asyncio.to_thread(k.logs_service.request_log, groups, request_id)
    else:
        raw = query.get("since", ["0"])[0] or "0"
        digits = raw.removeprefix("-")  # `kindling logs --since` takes any int
        if not (digits.isascii() and digits.isdigit() and len(digits) < 20):
            raise errors.InvalidParameterValueException(
                f"since must be milliseconds since the epoch, got '{raw[:64]}'.")
        since = int(raw)
        events = await asyncio.to_thread(
            lambda: sorted((e for g in groups for e in k.logs.events(g, since)),
                           key=lambda e: (e.timestamp, e.stream, e.n)))
    body = {"events": [{"timestamp": e.timestamp, "message": e.message, "logStreamName": e.stream,
                        "requestId": e.request_id, "eventId": e.event_id} for e in events]}
    return 200, [("Content-Type", "application/json")], json.dumps(body).encode()
