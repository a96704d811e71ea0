"""Compare Kindling's answers with the real AWS responses in ../shared/reference/aws-recorded.

Recorded values are normalised: ``<function-name:1>``, ``<uuid:2>``, ``date``...
A placeholder matches any text; everything else must be equal, and dicts must
have exactly the same keys (ResponseMetadata aside, whose status code is compared).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [ROOT.parent / "shared" / "reference" / "aws-recorded", ROOT / "tests" / "aws-recorded"]


@cache
def _snapshot(name: str) -> dict[str, Any]:
    for base in CANDIDATES:
        path = base / f"{name}.snapshot.json"
        if path.exists():
            return json.loads(path.read_text())  # type: ignore[no-any-return]
    raise FileNotFoundError(f"{name}.snapshot.json not found in {CANDIDATES}")


def recorded(snapshot: str, test: str, key: str) -> Any:
    data = _snapshot(snapshot)
    for test_id, entry in data.items():
        if test_id.split("::")[-1] == test:
            return entry["recorded-content"][key]
    raise KeyError(test)


_PLACEHOLDER = re.compile(r"<[^<>]+>")


def _text_matches(ours: str, expected: str) -> bool:
    if expected == "date":
        return True
    expected = expected.replace("111111111111", "<account>")  # the recording's account id
    pattern = ".+".join(re.escape(part) for part in _PLACEHOLDER.split(expected))
    return re.fullmatch(pattern, ours, re.S) is not None


def assert_like(ours: Any, expected: Any, path: str = "$") -> None:
    if isinstance(expected, dict):
        assert isinstance(ours, dict), f"{path}: expected an object, got {ours!r}"
        exp = {k: v for k, v in expected.items() if k != "ResponseMetadata"}
        got = {k: v for k, v in ours.items() if k != "ResponseMetadata"}
        assert set(got) == set(exp), f"{path}: keys differ: extra {set(got) - set(exp)}, missing {set(exp) - set(got)}"
        for k, v in exp.items():
            assert_like(got[k], v, f"{path}.{k}")
        if "ResponseMetadata" in expected and "ResponseMetadata" in ours:
            assert ours["ResponseMetadata"]["HTTPStatusCode"] == expected["ResponseMetadata"]["HTTPStatusCode"], \
                f"{path}: status {ours['ResponseMetadata']['HTTPStatusCode']} != " \
                f"{expected['ResponseMetadata']['HTTPStatusCode']}"
    elif isinstance(expected, list):
        assert isinstance(ours, list) and len(ours) == len(expected), f"{path}: {ours!r} != {expected!r}"
        for i, (a, b) in enumerate(zip(ours, expected, strict=True)):
            assert_like(a, b, f"{path}[{i}]")
    elif isinstance(expected, str) and isinstance(ours, str):
        assert _text_matches(ours, expected), f"{path}: {ours!r} does not match {expected!r}"
    elif expected == "<code-size>" or (isinstance(expected, str) and _PLACEHOLDER.fullmatch(expected)):
        return
    else:
        assert ours == expected, f"{path}: {ours!r} != {expected!r}"


def error_of(exc: Any) -> dict[str, Any]:
    """A botocore ClientError's response, as the recordings keep it."""
    return dict(exc.response)
