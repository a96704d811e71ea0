"""CloudWatch Logs filter patterns: a subset of AWS's syntax, compiled to a predicate on a message.

Terms (case-sensitive, matched anywhere in the message):

- ``ERROR Exception``: every plain term must occur;
- ``"Task timed out"``: a quoted phrase is one term (``\\"`` and ``\\\\`` escape);
- ``?ERROR ?WARN``: at least one of the ``?`` terms must occur;
- ``ERROR -Exiting``: no ``-`` term may occur;
- ``%ERR(OR)?:\\s+\\d+%``: a regular expression between percent signs.

JSON (the message must be a JSON object): ``{ $.level = "ERROR" }``, ``{ $.user.id != 42 }``,
``{ $.latency >= 100 && ($.status = "5*" || $.retry IS TRUE) }``, ``{ $.items[0].id = "a" }``,
``{ $.error NOT EXISTS }``, ``{ $.reason IS NULL }``. Strings compare with ``=`` / ``!=`` (``*`` is a
wildcard), numbers with ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``; a missing field matches no
comparison. An empty pattern matches everything. Space-delimited ``[a, b, ...]`` patterns are not
supported and raise PatternError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[str], bool]
_MISSING = object()


class PatternError(ValueError):
    pass


def compile_pattern(pattern: str | None) -> Matcher:
    text = (pattern or "").strip()
    if not text:
        return lambda message: True
    if text.startswith("{"):
        if not text.endswith("}"):
            raise PatternError("Invalid filter pattern: a JSON pattern must end with '}'")
        return _json_matcher(text[1:-1])
    if text.startswith("["):
        raise PatternError("Space-delimited filter patterns ([a, b, ...]) are not supported by Kindling")
    return _term_matcher(text)


# -- terms ----------------------------------------------------------------------------------------
_TERM = re.compile(r'\s*([?-]?)(?:"((?:[^"\\]|\\.)*)"|%((?:[^%\\]|\\.)+)%|([^\s"]+))')


def _term_matcher(text: str) -> Matcher:
    required: list[Matcher] = []
    optional: list[Matcher] = []
    excluded: list[Matcher] = []
    pos = 0
    while pos < len(text):
        m = _TERM.match(text, pos)
        if m is None:
            if text[pos:].strip():
                raise PatternError(f"Invalid filter pattern: unbalanced quote in '{text}'")
            break
        pos = m.end()
        sign, quoted, regex, bare = m.groups()
        if regex is not None:
            try:
                test: Matcher = re.compile(regex.replace("\\%", "%")).search  # type: ignore[assignment]
            except re.error as exc:
                raise PatternError(f"Invalid regular expression in filter pattern: {exc}") from None
        else:
            term = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
            test = _contains(term)
        {"": required, "?": optional, "-": excluded}[sign].append(test)

    def match(message: str) -> bool:
        return (all(t(message) for t in required) and (not optional or any(t(message) for t in optional))
                and not any(t(message) for t in excluded))
    return match


def _contains(term: str) -> Matcher:
    return lambda message: term in message


# -- JSON -----------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""\s*(?:
    (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<selector>\$(?:\.[A-Za-z0-9_@$-]+|\[\d+\]|\.\*)*)
  | (?P<op>&&|\|\||!=|<=|>=|=|<|>|\(|\))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w*]))
  | (?P<word>[^\s()=!<>&|"]+)
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PatternError(f"Invalid filter pattern near '{text[pos:].strip()[:20]}'")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise PatternError("Invalid filter pattern: it ends too early")
        self.i += 1
        return tok

    def expr(self) -> Callable[[Any], bool]:
        left = self.conj()
        while self.peek() == ("op", "||"):
            self.take()
            left = _either(left, self.conj())
        return left

    def conj(self) -> Callable[[Any], bool]:
        left = self.atom()
        while self.peek() == ("op", "&&"):
            self.take()
            left = _both(left, self.atom())
        return left

    def atom(self) -> Callable[[Any], bool]:
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise PatternError("Invalid filter pattern: missing ')'")
            return inner
        if kind != "selector":
            raise PatternError(f"Invalid filter pattern: expected a $.selector, got '{value}'")
        path = _path(value)
        kind, op = self.take()
        if kind == "word" and op.upper() in ("IS", "NOT", "EXISTS"):
            return self.predicate(path, op.upper())
        if kind != "op" or op not in ("=", "!=", "<", "<=", ">", ">="):
            raise PatternError(f"Invalid filter pattern: expected a comparison after {value}, got '{op}'")
        kind, raw = self.take()
        if kind == "number":
            return _numeric(path, op, float(raw))
        if kind not in ("string", "word"):
            raise PatternError(f"Invalid filter pattern: expected a value after '{op}'")
        if op not in ("=", "!="):
            raise PatternError(f"Invalid filter pattern: strings compare with = or != only, not '{op}'")
        try:
            text = json.loads(raw) if kind == "string" else raw
        except ValueError:  # e.g. a bad \u escape
            raise PatternError(f"Invalid filter pattern: bad string {raw[:40]}") from None
        return _textual(path, op == "=", text)

    def predicate(self, path: list[str | int], word: str) -> Callable[[Any], bool]:
        if word == "EXISTS":
            return lambda doc: _get(doc, path) is not _MISSING
        if word == "NOT":
            if self.take()[1].upper() != "EXISTS":
                raise PatternError("Invalid filter pattern: expected NOT EXISTS")
            return lambda doc: _get(doc, path) is _MISSING
        what = self.take()[1].upper()
        expected = {"NULL": None, "TRUE": True, "FALSE": False}
        if what not in expected:
            raise PatternError("Invalid filter pattern: expected IS NULL, IS TRUE or IS FALSE")
        want = expected[what]
        return lambda doc: (v := _get(doc, path)) is not _MISSING and v is want


def _either(a: Callable[[Any], bool], b: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda doc: a(doc) or b(doc)


def _both(a: Callable[[Any], bool], b: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda doc: a(doc) and b(doc)


def _path(selector: str) -> list[str | int]:
    out: list[str | int] = []
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", selector[1:]):
        out.append(part[0] if part[0] else int(part[1]))
    return out


def _get(doc: Any, path: list[str | int]) -> Any:
    for key in path:
        if isinstance(key, int):
            if not isinstance(doc, list) or key >= len(doc):
                return _MISSING
        elif not isinstance(doc, dict) or key not in doc:
            return _MISSING
        doc = doc[key]
    return doc


def _numeric(path: list[str | int], op: str, want: float) -> Callable[[Any], bool]:
    compare = {"=": float.__eq__, "!=": float.__ne__, "<": float.__lt__, "<=": float.__le__,
               ">": float.__gt__, ">=": float.__ge__}[op]

    def test(doc: Any) -> bool:
        v = _get(doc, path)
        if isinstance(v, bool) or not isinstance(v, int | float):
            if isinstance(v, str):
                try:
                    v = float(v)
                except ValueError:
                    return False
            else:
                return False
        return bool(compare(float(v), want))
    return test


def _textual(path: list[str | int], equal: bool, want: str) -> Callable[[Any], bool]:
    if "*" in want:
        rx = re.compile(".*".join(re.escape(p) for p in want.split("*")), re.S)
        same: Callable[[str], bool] = lambda v: rx.fullmatch(v) is not None  # noqa: E731
    else:
        same = want.__eq__

    def test(doc: Any) -> bool:
        v = _get(doc, path)
        if v is _MISSING or v is None or isinstance(v, dict | list):
            return False
        text = v if isinstance(v, str) else json.dumps(v)
        return same(text) == equal
    return test


def _json_matcher(body: str) -> Matcher:
    parser = _Parser(_tokens(body))
    test = parser.expr()
    if parser.peek() is not None:
        raise PatternError(f"Invalid filter pattern near '{parser.peek()[1]}'")  # type: ignore[index]

    def match(message: str) -> bool:
        if not message.lstrip().startswith("{"):
            return False
        try:
            doc = json.loads(message)
        except (ValueError, RecursionError):  # a line nested too deeply is no JSON this pattern can match
            return False
        return isinstance(doc, dict) and test(doc)
    return match
