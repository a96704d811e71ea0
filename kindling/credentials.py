"""The access key pair Kindling accepts: given by the settings, else the one kept in the data dir.

On first start without KINDLING_ACCESS_KEY_ID / KINDLING_SECRET_ACCESS_KEY, a pair shaped like AWS's
(``AKIA`` + 16 characters, a 40-character secret) is created in ``<data-dir>/credentials.json``, mode 0600.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import string
from pathlib import Path

from kindling.settings import Settings

log = logging.getLogger("kindling.credentials")

FILE = "credentials.json"


class CredentialsError(Exception):
    """The configured or stored credentials are unusable."""


@dataclasses.dataclass(frozen=True)
class KeyPair:
    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)

    def exports(self) -> str:
        return f"export AWS_ACCESS_KEY_ID={self.access_key_id} AWS_SECRET_ACCESS_KEY={self.secret_access_key}"


def generate() -> KeyPair:
    upper = string.ascii_uppercase + string.digits
    alnum = string.ascii_letters + string.digits
    return KeyPair("AKIA" + "".join(secrets.choice(upper) for _ in range(16)),
                   "".join(secrets.choice(alnum) for _ in range(40)))


def path(settings: Settings) -> Path:
    return settings.data_path / FILE


def load(settings: Settings, create: bool = True) -> tuple[KeyPair, bool]:
    """The key pair to accept, and whether it was created just now.

    Raises CredentialsError when only one of the pair is set, the key id is not alphanumeric (it is the first
    element of a slash-delimited credential scope), or the stored file is missing (``create=False``) or broken.
    """
    if settings.access_key_id or settings.secret_access_key:
        if not (settings.access_key_id and settings.secret_access_key):
            raise CredentialsError("KINDLING_ACCESS_KEY_ID and KINDLING_SECRET_ACCESS_KEY must be set together")
        pair = KeyPair(settings.access_key_id, settings.secret_access_key)
        _check(pair, "KINDLING_ACCESS_KEY_ID")
        return pair, False
    file = path(settings)
    created = False
    if not file.exists():
        if not create:
            raise CredentialsError(f"No credentials in {file}: `kindling serve` creates them on first start")
        created = _create(file)
    try:
        data = json.loads(file.read_text())
        pair = KeyPair(data["access_key_id"], data["secret_access_key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"Cannot read credentials from {file}: {exc}") from exc
    _check(pair, str(file))
    if file.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", file)
    return pair, created


def _check(pair: KeyPair, where: str) -> None:
    if not (isinstance(pair.access_key_id, str) and pair.access_key_id.isalnum() and pair.access_key_id.isascii()):
        raise CredentialsError(f"{where}: the access key id must be ASCII letters and digits")
    if not (isinstance(pair.secret_access_key, str) and pair.secret_access_key):
        raise CredentialsError(f"{where}: the secret access key is empty")


def _create(file: Path) -> bool:
    """Write a new pair, mode 0600, without ever replacing one: False when another process got there first."""
    pair = generate()
    tmp = file.with_name(f".{FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dataclasses.asdict(pair), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, file)  # atomic, and fails rather than clobber a pair a concurrent start just wrote
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
