"""The ASGI application: Lambda's REST API plus Kindling's own /_kindling routes.

HTTP stops here. A request is matched to a Lambda operation from botocore's
model, its members parsed and validated, and the handler called with plain
values; its result or LambdaError is rendered back in AWS's wire format.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from kindling import errors
from kindling.core import Kindling
from kindling.frontend import auth, iam_api, logs_api, presign, protocol, validate
from kindling.frontend.connections import MAX_REQUEST
from kindling.frontend.handlers import HANDLERS, SKIP_VALIDATION, Call
from kindling.iam import actions
from kindling.iam.conditions import Context
from kindling.iam.sessions import Session
from kindling.observability import metrics, tracing

log = logging.getLogger("kindling.frontend")

CODE_PREFIX = "/_kindling/code/"
ACCESS_DENIED = (b"<Error><Code>AccessDenied</Code><Message>Request has expired or its signature does not "
                 b"match</Message></Error>")

Scope = dict[str, Any]


class App:
    def __init__(self, kindling: Kindling) -> None:
        self.k = kindling
        self.verifier = auth.Verifier({kindling.credentials.access_key_id: kindling.credentials.secret_access_key},
                                      kindling.settings.region, kindling.iam.sessions)
        # Bodies read before their signature can be checked (no X-Amz-Content-SHA256): bytes held now, and the cap
        self.unverified = 0
        self.unverified_cap = kindling.settings.api_unverified_body_mb << 20

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] == "websocket":  # only when served with a WebSocket protocol (`kindling serve` has none)
            await receive()
            return await send({"type": "websocket.close", "code": 1008})  # answered 403 before the handshake
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        path: str = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        logs_request = logs_api.is_logs_request(scope["method"], path, headers)  # CloudWatch Logs (awsJson1.1)
        iam_service = iam_api.is_request(scope["method"], path, headers, query)  # IAM / STS (query protocol)
        try:
            # The signature's headers are checked before a byte of the body is read: an anonymous client's body
            # is never buffered (connections.py drops it as it arrives). The body then must hash to what was signed.
            # A request declared larger than Lambda takes is answered 413 first, signed or not, as AWS does.
            signed = self.verifier.check_headers(
                scope, headers, query, expected_service=logs_api.SIGNING_SERVICE if logs_request else
                iam_service or auth.SERVICE,
            ) if auth.required(path) and not _too_large(path, headers) else None
            body = await self._body(receive, headers, signed)
            if "websocket" in headers.get("upgrade", "").lower():
                raise errors.ValidationException("Kindling's API does not take WebSocket connections.")
            session = signed.session if signed is not None else None
            if session is not None and path.startswith("/_kindling/"):  # Kindling's own routes: the operator's
                raise errors.NotAuthorized(f"User: {session.arn(self.k.settings.account_id)} is not authorized "
                                           f"to perform: kindling:* on resource: {path[:256]}")
            if iam_service:
                assert signed is not None
                status, out_headers, payload = await iam_api.handle(
                    self.k, iam_service, session, signed.akid, body, query, self._context(scope), request_id)
            elif logs_request:
                status, out_headers, payload = await logs_api.handle(self.k, headers, body,
                                                                     self._authorizer(session, scope))
            elif path == "/metrics":  # Prometheus scrapes it unsigned
                content_type, payload = metrics.exposition()
                status, out_headers = 200, [("Content-Type", content_type)]
            elif path.startswith("/_kindling/logs/"):
                since = query.get("since", ["0"])[0] or "0"
                digits = since.removeprefix("-")
                if not (digits.isascii() and digits.isdigit() and len(digits) <= 15):
                    raise errors.InvalidParameterValueException(
                        f"since must be milliseconds since the epoch, got '{since[:64]}'.")
                status, out_headers, payload = await logs_api.internal(self.k, path[len("/_kindling/logs/"):], query)
            elif path.startswith("/_kindling/"):
                status, out_headers, payload = self._internal(path, query)
            else:
                status, out_headers, payload = await self._lambda(scope, path, query, headers, body, request_id,
                                                                  session)
        except errors.LambdaError as exc:
            status, out_headers, payload = (iam_api.error(exc, iam_service, request_id) if iam_service else
                                            logs_api.error(exc) if logs_request else _error(exc))
        except Exception:
            log.exception("request %s failed", request_id)
            status, out_headers, payload = _error(errors.ServiceException("An internal error occurred."))
        if "upgrade" in headers:
            out_headers.append(("Connection", "close"))  # nothing the client sends after it is HTTP any more
        out_headers.append(("x-amzn-RequestId", request_id))
        if status not in (204, 304):
            out_headers.append(("Content-Length", str(len(payload))))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers]})
        await send({"type": "http.response.body", "body": payload})

    async def _body(self, receive: Any, headers: dict[str, str], signed: auth.Signed | None) -> bytes | None:
        """The body (None: larger than Lambda takes), checked against the signature when there is one."""
        # a chunked body (no Content-Length) may be as large as any
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        reserve = MAX_REQUEST if chunked else _declared_size(headers)
        if signed is None or signed.declared_hash is not None or reserve < BIG_BODY:
            body = await _read_body(receive, headers, MAX_REQUEST)
        else:  # a large body whose signature only its hash can tell: a key id alone must not fill memory
            if self.unverified + reserve > self.unverified_cap:
                raise errors.TooManyRequestsException("Rate Exceeded.", Reason="CallerRateLimitExceeded")
            self.unverified += reserve
            try:
                body = await _read_body(receive, headers, MAX_REQUEST)
                await asyncio.to_thread(signed.check_body, body)  # hashing tens of MB: off the event loop
            finally:
                self.unverified -= reserve
            return body
        if signed is not None and (body is not None or signed.declared_hash is None):
            # None (too large to keep) cannot be checked: it passes only when the headers' check covered all
            signed.check_body(body)
        return body

    async def _lambda(self, scope: Scope, path: str, query: dict[str, list[str]], headers: dict[str, str],
                      body: bytes | None, request_id: str, session: Session | None = None,
                      ) -> tuple[int, list[tuple[str, str]], bytes]:
        matched = protocol.match(scope["method"], path, query)
        if matched is None:
            raise errors.UnknownOperationException(f"Unknown operation {scope['method']} {path}")
        op, labels = matched
        handler = HANDLERS.get(op.name)
        if handler is None:
            raise errors.UnknownOperationException(f"Kindling does not implement {op.name} yet.")
        if body is None:
            raise errors.RequestEntityTooLargeException(
                f"Request must be smaller than {MAX_REQUEST} bytes for the {op.name} operation")
        params = protocol.parse_request(op, labels, query, headers, body)
        if op.input_shape is not None:
            validate.validate(op.input_shape, params, skip=SKIP_VALIDATION.get(op.name, set()))
        self._authorize_lambda(op.name, params, session, scope)
        base_url = f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"
        with tracing.span(f"Lambda.{op.name}", headers.get("x-amzn-trace-id"), server=True):
            result = await HANDLERS[op.name](self.k, Call(params, request_id, base_url, headers.get("x-amzn-trace-id")))
        return protocol.render_response(op, result)

    # -- authorization of requests signed with role credentials (kindling.iam) ----------------------------
    def _context(self, scope: Scope) -> Context:
        """The request's own condition keys (the principal's are added by IAM)."""
        now = time.time()
        client = scope.get("client") or ("", 0)
        return {"aws:sourceip": [client[0]], "aws:securetransport": [str(scope.get("scheme") == "https").lower()],
                "aws:currenttime": [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))],
                "aws:epochtime": [str(int(now))], "aws:requestedregion": [self.k.settings.region]}

    def _authorizer(self, session: Session | None, scope: Scope) -> logs_api.Authorize | None:
        if session is None:
            return None  # the operator's key pair: never evaluated
        s = self.k.settings

        def check(op: str, params: dict[str, Any]) -> None:
            self.k.iam.authorize(session, *actions.logs_request(op, params, s.region, s.account_id),
                                 self._context(scope))
        return check

    def _authorize_lambda(self, op: str, params: dict[str, Any], session: Session | None, scope: Scope) -> None:
        """A Lambda operation signed with role credentials must be allowed by the role's policies; its Role,
        when it names one, must be one the role may pass (iam:PassRole) and, in enforce mode, trust Lambda."""
        role = params.get("Role") if op in ("CreateFunction", "UpdateFunctionConfiguration") else None
        if session is None:
            if isinstance(role, str):
                self.k.iam.check_function_role(role)
            return
        s = self.k.settings
        action, resource, extra = actions.lambda_request(op, params, s.region, s.account_id)
        context = {**self._context(scope), **extra}
        self.k.permissions.authorize(session, action, resource, context)  # identity OR resource-based policy
        if isinstance(role, str):
            self.k.iam.authorize(session, "iam:PassRole", role, {**context, "iam:passedtoservice": [
                "lambda.amazonaws.com"]})
            self.k.iam.check_function_role(role)

    def _internal(self, path: str, query: dict[str, list[str]]) -> tuple[int, list[tuple[str, str]], bytes]:
        if path == "/_kindling/health":
            return 200, [("Content-Type", "application/json")], b'{"status":"ok"}'
        if path.startswith(CODE_PREFIX):
            return self._code(path, query)
        return 404, [("Content-Type", "application/json")], b'{"message":"Not found"}'

    def _code(self, path: str, query: dict[str, list[str]]) -> tuple[int, list[tuple[str, str]], bytes]:
        """GET /_kindling/code/<key>.zip?Expires=..&Signature=..: GetFunction's Code.Location, like S3's presigned
        URLs: anything without a valid signature (whatever its key) is AccessDenied."""
        denied = 403, [("Content-Type", "application/xml")], ACCESS_DENIED
        if not presign.verify(self.k.url_secret, path, query.get("Expires", [""])[0],
                              query.get("Signature", [""])[0]) or not path.endswith(".zip"):
            return denied
        try:
            zip_path = self.k.code.zip_path(path[len(CODE_PREFIX):-len(".zip")])
        except ValueError:  # not a code key: only a URL Kindling did not make could say so, and it is not signed
            return denied
        if not zip_path.exists():
            return 404, [("Content-Type", "application/xml")], b"<Error><Code>NoSuchKey</Code></Error>"
        return 200, [("Content-Type", "application/zip")], zip_path.read_bytes()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.k.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.k.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


BIG_BODY = 1 << 20  # bodies from here on are hashed off the event loop and count in App.unverified


def _declared_size(headers: dict[str, str]) -> int:
    declared = headers.get("content-length", "")
    return int(declared) if declared.isascii() and declared.isdigit() else 0


def _too_large(path: str, headers: dict[str, str]) -> bool:
    return not path.startswith("/_kindling/") and _declared_size(headers) > MAX_REQUEST


async def _read_body(receive: Any, headers: dict[str, str], limit: int) -> bytes | None:
    """The request body, or None when it is larger than ``limit``: then it is read no further (what the
    client still sends is dropped by the connection, see connections.py)."""
    if _declared_size(headers) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(exc: errors.LambdaError) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("Content-Type", "application/json"), ("X-Amzn-ErrorType", exc.code)]
    return exc.status, headers, json.dumps(exc.body()).encode()
