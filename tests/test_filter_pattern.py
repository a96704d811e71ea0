"""CloudWatch Logs filter patterns: the subset Kindling supports (docs/logs.md)."""

from __future__ import annotations

import pytest

from kindling.observability.filter_pattern import PatternError, compile_pattern

CASES = [
    ("", "anything", True),
    ("ERROR", "[ERROR] boom", True),
    ("ERROR", "error, lower case", False),
    ("ERROR Exception", "ERROR ValueError Exception", True),
    ("ERROR Exception", "ERROR only", False),
    ('"Task timed out"', "2024 abc Task timed out after 3.00 seconds", True),
    ('"Task timed out"', "Task out timed", False),
    ("?ERROR ?WARN", "WARN disk", True),
    ("?ERROR ?WARN", "INFO fine", False),
    ("ERROR -Exiting", "ERROR retrying", True),
    ("ERROR -Exiting", "ERROR Exiting now", False),
    ("-DEBUG", "INFO x", True),
    ("%ERR(OR)?:\\s+\\d+%", "ERR: 42", True),
    ("%ERR(OR)?:\\s+\\d+%", "ERROR: none", False),
    ('"quote \\" inside"', 'a quote " inside b', True),
    ('{ $.level = "ERROR" }', '{"level": "ERROR", "message": "x"}', True),
    ('{ $.level = "ERROR" }', '{"level": "INFO"}', False),
    ('{ $.level = "ERROR" }', "ERROR but not JSON", False),
    ('{ $.level != "ERROR" }', '{"level": "INFO"}', True),
    ('{ $.level != "ERROR" }', '{"other": 1}', False),  # a missing field matches no comparison
    ("{ $.level = ERR* }", '{"level": "ERROR"}', True),
    ("{ $.latency > 100 }", '{"latency": 150}', True),
    ("{ $.latency > 100 }", '{"latency": 50}', False),
    ("{ $.latency <= 100 }", '{"latency": 100}', True),
    ("{ $.code = 42 }", '{"code": 42.0}', True),
    ("{ $.code != 42 }", '{"code": 7}', True),
    ('{ $.user.id = "u1" && $.ok IS TRUE }', '{"user": {"id": "u1"}, "ok": true}', True),
    ('{ $.user.id = "u1" && $.ok IS TRUE }', '{"user": {"id": "u1"}, "ok": false}', False),
    ('{ ($.a = 1 || $.b = 2) && $.c NOT EXISTS }', '{"b": 2}', True),
    ('{ ($.a = 1 || $.b = 2) && $.c NOT EXISTS }', '{"b": 2, "c": 0}', False),
    ("{ $.items[1].id = \"b\" }", '{"items": [{"id": "a"}, {"id": "b"}]}', True),
    ("{ $.reason IS NULL }", '{"reason": null}', True),
    ("{ $.reason EXISTS }", '{"reason": null}', True),
]


@pytest.mark.parametrize(("pattern", "message", "expected"), CASES)
def test_pattern(pattern: str, message: str, expected: bool):
    assert compile_pattern(pattern)(message) is expected


@pytest.mark.parametrize("pattern", ["[ip, user, status]", '{ $.a = "x"', "{ $.a > \"x\" }", "{ $.a = }", '"open',
                                     "{ level = 1 }", "%(unclosed%"])
def test_unsupported_or_broken_patterns_are_refused(pattern: str):
    with pytest.raises(PatternError):
        compile_pattern(pattern)
