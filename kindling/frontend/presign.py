"""Expiring signed URLs for what Kindling hands out (GetFunction's Code.Location), like S3 presigned URLs."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

EXPIRES_IN = 600  # seconds, as Lambda's presigned code URLs


def load_secret(data_dir: Path) -> bytes:
    """A per-installation signing key, created on first start and kept in the data dir."""
    path = data_dir / "url-signing.key"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        os.replace(tmp, path)
    return path.read_bytes()


def sign(secret: bytes, path: str, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + EXPIRES_IN)
    mac = hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{path}?Expires={expires}&Signature={mac}"


def verify(secret: bytes, path: str, expires: str, signature: str) -> bool:
    """Whether the URL was signed by ``sign`` and has not expired; any other text (non-ASCII digits, a number
    too long for int(), a non-ASCII signature) is simply not a valid signature."""
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12) or int(expires) < time.time():
        return False
    mac = hmac.new(secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac.encode(), signature.encode("utf-8", "surrogateescape"))
