"""Invoke payload checks shared by synchronous and asynchronous invokes."""

from __future__ import annotations

import json

from kindling import errors

PREFIX = "Could not parse request body into json: Could not parse payload into json: "
# What Lambda's parser (Jackson's StreamReadConstraints) says of a document nested deeper than it takes; Python's
# parser gives up at about the same depth (its recursion limit) with a RecursionError.
TOO_DEEP = ("Document nesting depth exceeds the maximum allowed (1000, from "
            "`StreamReadConstraints.getMaxNestingDepth()`)")


def check_json(payload: bytes) -> None:
    """Lambda takes only JSON events: anything else is InvalidRequestContentException."""
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestContentException(f"{PREFIX}{exc}") from None
    except RecursionError:
        raise errors.InvalidRequestContentException(PREFIX + TOO_DEEP) from None
