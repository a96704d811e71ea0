"""AWS Signature Version 4 verification of API requests, with botocore's own signer.

The expected signature is computed by botocore's SigV4Auth from the request as received: method, raw path
(botocore's canonical URI encodes it once more, as it does when signing for Lambda), raw query string, the
headers named in SignedHeaders and the SHA-256 of the body. Both the Authorization header and presigned
query-string (X-Amz-Algorithm=...) requests are accepted. Error types and messages are AWS's.

Besides the operator's key pair, temporary credentials of role sessions (``ASIA...`` access key ids, see
kindling.iam.sessions) are accepted with their session token (``X-Amz-Security-Token``): a token that is
not genuine or not the key's answers UnrecognizedClientException, one whose session ended (its environment
is gone, or it expired) ExpiredTokenException.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from kindling import errors
from kindling.iam.sessions import Session, Sessions

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "lambda"
SERVICES = (SERVICE, "logs", "iam", "sts")  # Lambda, CloudWatch Logs, IAM and STS on the same endpoint
GLOBAL_REGION = "us-east-1"  # IAM is global: SDKs sign its requests for us-east-1 whatever their region
MAX_SKEW = 300  # seconds a signed request's X-Amz-Date may be off now
MAX_PRESIGN_EXPIRES = 604800
INVALID_TOKEN = "The security token included in the request is invalid."
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.")
_DATE = re.compile(r"\d{8}T\d{6}Z\Z", re.ASCII)


def required(path: str) -> bool:
    """Whether a request must be signed: all but the health check, /metrics and the (self-signed) code URLs."""
    return not (path in ("/_kindling/health", "/metrics") or path.startswith("/_kindling/code/"))


class _Headers(dict[str, str]):
    """The part of botocore's HTTPHeaders its canonical_headers uses, for one value per name (cheaper)."""

    def get_all(self, name: str) -> list[str]:
        return [self[name]]


class _Signer(SigV4Auth):
    """botocore's SigV4 signer, signing exactly the headers the client listed in SignedHeaders."""

    def headers_to_sign(self, request: AWSRequest) -> _Headers:
        return request.context["signed_headers"]  # type: ignore[no-any-return]


class Verifier:
    def __init__(self, keys: dict[str, str], region: str, sessions: Sessions | None = None) -> None:
        self.region = region
        self.sessions = sessions
        self._signers = {(akid, service): _Signer(Credentials(akid, secret), service, region)
                         for akid, secret in keys.items() for service in SERVICES}

    def verify(self, scope: dict[str, Any], headers: dict[str, str], query: dict[str, list[str]],
               body: bytes | None, now: float | None = None, expected_service: str = SERVICE) -> str:
        """The access key id that signed the request, or a LambdaError. ``headers`` has lower-case names;
        ``expected_service``: the service the credential must be scoped to (``logs`` for the Logs API)."""
        signed = self.check_headers(scope, headers, query, now, expected_service)
        signed.check_body(body)
        return signed.akid

    def check_headers(self, scope: dict[str, Any], headers: dict[str, str], query: dict[str, list[str]],
                      now: float | None = None, expected_service: str = SERVICE) -> Signed:
        """Everything about the signature that does not need the body, checked before a byte of it is read, or
        a LambdaError: a known access key id, the date, the credential's scope, the signed headers. When the
        client declared the body's hash (X-Amz-Content-SHA256, covered by the signature), the signature
        itself is checked here too; ``Signed.check_body`` then checks the body against what was signed."""
        now = time.time() if now is None else now
        raw_query = scope.get("query_string", b"").decode("latin-1")
        authorization = headers.get("authorization")
        if authorization is not None:
            credential, signed, signature = _parse_header(authorization)
            stamp = headers.get("x-amz-date") or _http_date(headers.get("date"))
            if not stamp:
                raise errors.IncompleteSignatureException("Authorization header requires existence of either a "
                                                   f"'X-Amz-Date' or a 'Date' header. Authorization={authorization}")
            expires = MAX_SKEW
        elif "X-Amz-Algorithm" in query:
            credential, signed, signature, stamp, expires = _parse_query(query)
            raw_query = "&".join(p for p in raw_query.split("&") if not p.startswith("X-Amz-Signature="))
        else:
            raise errors.UnrecognizedClientException(INVALID_TOKEN)

        parts = credential.split("/")
        if len(parts) != 5:
            raise errors.IncompleteSignatureException("Credential must have exactly 5 slash-delimited elements, e.g. "
                                               f"keyid/date/region/service/term, got '{credential}'")
        akid, day, region, service, _ = parts
        signer = self._signers.get((akid, expected_service))
        session: Session | None = None
        if signer is None:
            secret = self.sessions.secret(akid) if self.sessions is not None else None
            if secret is None:
                raise errors.UnrecognizedClientException(INVALID_TOKEN)
            token = headers.get("x-amz-security-token") or query.get("X-Amz-Security-Token", [""])[0]
            session = self.sessions.check(akid, token, now)  # type: ignore[union-attr]
            signer = _Signer(Credentials(akid, secret), expected_service, self.region)
        signed_at = _epoch(stamp)
        if signed_at is None:
            raise errors.IncompleteSignatureException(f"Date must be in ISO-8601 'basic format'. Got '{stamp}'. "
                                               "See http://en.wikipedia.org/wiki/ISO_8601")
        _check_time(stamp, signed_at, now, expires, presigned=authorization is None)
        if day != stamp[:8]:
            raise errors.InvalidSignatureException(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
                f"'{day}' != '{stamp[:8]}', from '{stamp}'.")
        if service != expected_service:
            raise errors.InvalidSignatureException(
                f"Credential should be scoped to correct service: '{expected_service}'. ")
        if region != self.region and not (service == "iam" and region == GLOBAL_REGION):
            raise errors.InvalidSignatureException(f"Credential should be scoped to a valid region, not '{region}'. ")
        if "host" not in signed:
            raise errors.InvalidSignatureException("'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                                                   "Authorization.")
        if any(name not in headers for name in signed):
            raise errors.InvalidSignatureException(MISMATCH)

        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        request = AWSRequest(method=scope["method"], url=f"http://kindling{raw_path}?{raw_query}")
        request.context.update(timestamp=stamp, signed_headers=_Headers((name, headers[name]) for name in signed))
        if region != self.region:
            signer = _Signer(signer.credentials, service, region)
        out = Signed(akid, signer, request, signature, headers.get("x-amz-content-sha256"), session)
        if out.declared_hash is not None:
            out.check_signature(out.declared_hash)
        return out


class Signed:
    """A request whose signature headers passed ``Verifier.check_headers``; its body is still to be checked."""

    def __init__(self, akid: str, signer: _Signer, request: AWSRequest, signature: str,
                 declared_hash: str | None, session: Session | None = None) -> None:
        self.akid = akid
        self.session = session  # the role session of temporary credentials; None: the operator's key pair
        self._signer = signer
        self._request = request
        self._signature = signature
        self.declared_hash = declared_hash

    def check_body(self, body: bytes | None) -> None:
        """The body is the one that was signed, or InvalidSignatureException."""
        if body is None:
            raise errors.InvalidSignatureException(MISMATCH)
        payload_hash = hashlib.sha256(body).hexdigest()
        if self.declared_hash is None:
            self.check_signature(payload_hash)
        elif not hmac.compare_digest(self.declared_hash.encode(), payload_hash.encode()):
            raise errors.InvalidSignatureException(MISMATCH)  # the signature does not cover this body

    def check_signature(self, payload_hash: str) -> None:
        # botocore takes the payload hash from this header when present (the body need not be handed over)
        request, signer = self._request, self._signer
        request.headers["X-Amz-Content-SHA256"] = payload_hash
        canonical = signer.canonical_request(request)
        string_to_sign = signer.string_to_sign(request, canonical)
        if not hmac.compare_digest(signer.signature(string_to_sign, request).encode(), self._signature.encode()):
            raise errors.InvalidSignatureException(
                f"{MISMATCH}\n\nThe Canonical String for this request should have been\n'{canonical}'\n\n"
                f"The String-to-Sign should have been\n'{string_to_sign}'\n")


def _parse_header(authorization: str) -> tuple[str, list[str], str]:
    algorithm, _, rest = authorization.partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq and algorithm == ALGORITHM:
            raise errors.IncompleteSignatureException(
                f"'{part.strip()}' not a valid key=value pair (missing equal-sign) in Authorization header: "
                f"'{authorization}'.")
        fields[key] = value
    missing = [k for k in ("Credential", "Signature", "SignedHeaders") if not fields.get(k)]
    if algorithm != ALGORITHM or missing:
        raise errors.IncompleteSignatureException("".join(f"Authorization header requires '{k}' parameter. "
                                                   for k in missing or ("Credential", "Signature", "SignedHeaders"))
                                           + f"Authorization={authorization}")
    return fields["Credential"], fields["SignedHeaders"].lower().split(";"), fields["Signature"]


def _parse_query(query: dict[str, list[str]]) -> tuple[str, list[str], str, str, int]:
    values = {k: query.get(f"X-Amz-{k}", [""])[0] for k in ("Algorithm", "Credential", "SignedHeaders",
                                                           "Signature", "Date", "Expires")}
    missing = [k for k, v in values.items() if not v]
    if values["Algorithm"] != ALGORITHM or missing:
        raise errors.IncompleteSignatureException("".join(f"AWS query-string parameters must include 'X-Amz-{k}'. "
                                                   for k in missing) + "Re-examine the query-string parameters.")
    expires = int(values["Expires"]) if values["Expires"].isdigit() else -1
    if not 0 < expires <= MAX_PRESIGN_EXPIRES:
        raise errors.IncompleteSignatureException(
            f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds, got '{values['Expires']}'.")
    return (values["Credential"], values["SignedHeaders"].lower().split(";"), values["Signature"], values["Date"],
            expires)


def _http_date(value: str | None) -> str:
    try:
        return _fmt(parsedate_to_datetime(value).timestamp()) if value else ""
    except (TypeError, ValueError):
        return ""


def _epoch(stamp: str) -> int | None:
    """Seconds since the epoch of an X-Amz-Date (YYYYMMDDTHHMMSSZ), None when it is not one."""
    if not _DATE.match(stamp):
        return None
    try:
        when = datetime.datetime(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]), int(stamp[9:11]),
                                 int(stamp[11:13]), int(stamp[13:15]))
    except ValueError:
        return None
    return calendar.timegm(when.timetuple())


def _check_time(stamp: str, signed_at: int, now: float, window: int, presigned: bool) -> None:
    if signed_at < now - window:
        unit = f"{window} sec." if presigned else f"{window // 60} min."
        raise errors.InvalidSignatureException(
            f"Signature expired: {stamp} is now earlier than {_fmt(now - window)} ({_fmt(now)} - {unit})")
    if signed_at > now + MAX_SKEW:
        raise errors.InvalidSignatureException(f"Signature not yet current: {stamp} is still later than "
                                               f"{_fmt(now + MAX_SKEW)} ({_fmt(now)} + 5 min.)")


def _fmt(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))
