"""Invoke payload checks shared by synchronous and asynchronous invokes."""

from __future__ import annotations

import json

from kindling import errors


def check_json(payload: bytes) -> None:
    """Lambda takes only JSON events: anything else is InvalidRequestContentException."""
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}") from None
