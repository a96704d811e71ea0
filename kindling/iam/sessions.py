"""Temporary credentials: role sessions, for execution environments and for sts:AssumeRole.

A session is stateless to check: its token carries (access key id, role, session name, expiry, owned) and
an HMAC under the server's key, and its secret key is an HMAC of its access key id. So issuing one costs
two HMACs and 10 random bytes (microseconds on the cold-start path), and any node holding the key can check
a token. An environment's sessions are also *owned*: valid only while an owner holds them. The registry of
live owned access key ids is in memory (a cluster will keep it in the shared store); an environment's end
releases its sessions, after which their tokens answer "expired". A clone also holds its template's session
(clients made during the template's init keep it), which ends with the last of them.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import secrets
import string
import threading
import time

from kindling import errors

INVALID = "The security token included in the request is invalid."
EXPIRED = "The security token included in the request is expired"
_ALPHABET = string.ascii_uppercase + "234567"
MAX_TOKEN = 4096


@dataclasses.dataclass(frozen=True)
class Session:
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    token: str = dataclasses.field(repr=False)
    role_arn: str
    session_name: str
    expires: float  # epoch seconds; 0: while its owners live
    issued: float

    @property
    def role_name(self) -> str:
        return self.role_arn.rsplit("/", 1)[-1]

    def arn(self, account: str) -> str:
        return f"arn:aws:sts::{account}:assumed-role/{self.role_name}/{self.session_name}"

    def environment(self) -> dict[str, str]:
        """The variables Lambda sets in an execution environment for its execution role."""
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_SESSION_TOKEN": self.token}


class Sessions:
    def __init__(self, key: bytes) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._holders: dict[str, set[str]] = {}  # owned access key id -> owners holding it
        self._owned: dict[str, set[str]] = {}  # owner -> access key ids it holds

    def issue(self, role_arn: str, session_name: str, ttl: float = 0, owner: str | None = None) -> Session:
        """A new session of ``role_arn``: valid for ``ttl`` seconds, or while ``owner`` holds it."""
        akid = "ASIA" + base64.b32encode(secrets.token_bytes(10)).decode()  # 16 of A-Z, 2-7
        now = time.time()
        expires = now + ttl if owner is None else 0
        claims = {"a": akid, "r": role_arn, "s": session_name, "e": expires, "i": int(now), "o": owner is not None}
        body = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
        token = f"{body}.{self._mac(b'token:' + body.encode())}"
        if owner is not None:
            with self._lock:
                self._holders[akid] = {owner}
                self._owned.setdefault(owner, set()).add(akid)
        return Session(akid, self._secret(akid), token, role_arn, session_name, expires, now)

    def share(self, owner: str, other: str) -> None:
        """``other`` holds every session ``owner`` holds (a clone, its template's)."""
        with self._lock:
            for akid in self._owned.get(owner, ()):
                self._holders[akid].add(other)
                self._owned.setdefault(other, set()).add(akid)

    def release(self, owner: str) -> None:
        """``owner`` is gone: sessions nobody else holds end now."""
        with self._lock:
            for akid in self._owned.pop(owner, ()):
                holders = self._holders.get(akid)
                if holders is not None:
                    holders.discard(owner)
                    if not holders:
                        del self._holders[akid]

    def live(self) -> int:
        with self._lock:
            return len(self._holders)

    def secret(self, akid: str) -> str | None:
        """The secret key of a session access key id (None: not one of ours in shape)."""
        if not (len(akid) == 20 and akid.startswith("ASIA") and all(c in _ALPHABET for c in akid[4:])):
            return None
        return self._secret(akid)

    def check(self, akid: str, token: str | None, now: float | None = None) -> Session:
        """The session ``token`` proves for ``akid``: UnrecognizedClientException if it is not genuine or not
        this key's, ExpiredTokenException if it was but has ended."""
        if not token or len(token) > MAX_TOKEN or token.count(".") != 1:
            raise errors.UnrecognizedClientException(INVALID)
        body, mac = token.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(b"token:" + body.encode()).encode()):
            raise errors.UnrecognizedClientException(INVALID)
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            if claims["a"] != akid:
                raise errors.UnrecognizedClientException(INVALID)  # a token of another session
            session = Session(akid, self._secret(akid), token, str(claims["r"]), str(claims["s"]),
                              float(claims["e"]), float(claims["i"]))
            owned = bool(claims["o"])
        except (ValueError, KeyError, TypeError):
            raise errors.UnrecognizedClientException(INVALID) from None
        now = time.time() if now is None else now
        if owned:
            with self._lock:
                alive = akid in self._holders
            if not alive:
                raise errors.ExpiredTokenException(EXPIRED)
        elif session.expires <= now:
            raise errors.ExpiredTokenException(EXPIRED)
        return session

    def _secret(self, akid: str) -> str:
        digest = hmac.digest(self._key, b"secret:" + akid.encode(), "sha256")
        return base64.b64encode(digest).decode()[:40].replace("+", "A").replace("/", "B")

    def _mac(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(hmac.digest(self._key, data, "sha256")).decode().rstrip("=")
