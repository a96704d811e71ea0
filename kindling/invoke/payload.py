"""Invoke payload checks shared by synchronous and asynchronous invokes."""

from __future__ import annotations

import json

from kindling import errors

PREFIX = "Could not parse request body into json: Could not parse payload into json: "
# What Lambda's parser (Jackson's StreamReadConstraints) says of a document nested deeper than it takes; Python's
# parser gives up at about the same depth (its recursion limit) with a RecursionError.
TOO_DEEP = ("Document nesting depth exceeds the maximum allowed (1000, from "
            "`StreamReadConstraints.getMaxNestingDepth()`)")


# Where Lambda's parser says it stopped, after its message.
LOCATION = ("\n at [Source: REDACTED (`StreamReadFeature.INCLUDE_SOURCE_IN_LOCATION` disabled); "
            "line: {line}, column: {column}]")
EXPECTED_VALUE = ("expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false')")


def check_json(payload: bytes) -> None:
    """Lambda takes only JSON events: anything else is InvalidRequestContentException."""
    try:
        json.loads(payload)
    except UnicodeDecodeError as exc:
        raise errors.InvalidRequestContentException(PREFIX + not_utf8(payload, exc.start, exc.reason)) from None
    except ValueError as exc:
        raise errors.InvalidRequestContentException(f"{PREFIX}{exc}") from None
    except RecursionError:
        raise errors.InvalidRequestContentException(PREFIX + TOO_DEEP) from None


def not_utf8(payload: bytes, at: int, reason: str = "invalid start byte") -> str:
    """What Lambda's parser (Jackson) says of a payload that is not UTF-8, as recorded: a first byte it cannot
    start a value with is an unexpected character; a bad byte later is an invalid UTF-8 start or middle byte."""
    line = payload.count(b"\n", 0, at) + 1
    column = at - (payload.rfind(b"\n", 0, at) + 1)  # 0-based within its line
    bad = payload[at]
    if not payload[:at].strip():  # the document's first character
        shown = f"(CTRL-CHAR, code {bad})" if 0x80 <= bad <= 0x9F else f"'{chr(bad)}' (code {bad})"
        return f"Unexpected character ({shown}): {EXPECTED_VALUE}" + LOCATION.format(line=line, column=column + 1)
    if reason == "invalid continuation byte":  # a sequence's lead byte is fine, the byte after it is not
        after = payload[at + 1] if at + 1 < len(payload) else bad
        return f"Invalid UTF-8 middle byte 0x{after:x}" + LOCATION.format(line=line, column=column + 3)
    return f"Invalid UTF-8 start byte 0x{bad:x}" + LOCATION.format(line=line, column=column + 2)
