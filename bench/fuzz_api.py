"""Fuzz Kindling's API with correctly signed but mutated requests, generated from botocore's models.

Every Lambda operation Kindling serves (restJson1: URI labels, query string, headers, JSON body) and every
CloudWatch Logs operation (awsJson1.1) gets requests built from its input shape, then mutated: wrong JSON
types, huge numbers, long and empty strings, odd unicode, lone surrogates, invalid UTF-8, deep nesting,
percent-encoded junk in URI labels, bad query and header values. Each request is signed as boto3 signs it.

The oracle: no 5xx, no "Traceback" in the server's log, no request hanging past its timeout, and the state
still consistent afterwards (`Fuzzer.check_state`). tests/test_fuzz.py runs a few thousand requests of it;
this script runs it for longer against a `kindling serve` of its own:

    .venv/bin/python bench/fuzz_api.py --requests 100000 --seconds 600 [--seed 1]

and prints the status codes seen and every 5xx or traceback found (with the request that caused it).
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import http.client
import io
import json
import random
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.model import OperationModel, Shape

REGION = "us-east-1"
ACCOUNT = "000000000000"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-role"
HELLO = 'def handler(event, context):\n    return {"hello": event.get("name", "world")}\n'
LOGS_TARGET = "Logs_20140328."
FUNCTION_GROUPS = "/aws/lambda/"  # groups invokes create too: not tracked
# Names the fuzzer may create, change and delete; none is a substring of another.
POOL = [f"fz{i}q" for i in range(6)]
GROUPS = [f"/fz/g{i}q" for i in range(4)]
DEEP = (3, 50, 1000, 100_000)


def _quote(text: str, *_: Any) -> str:
    return quote(text, safe="", errors="surrogatepass")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", HELLO)
    return buf.getvalue()


ZIP_B64 = base64.b64encode(_zip()).decode()
ODD = ["", " ", "\x00", "a\x00b", "\u202e", "\ufeff", "e\u0301", "\uffff", "😀" * 3, "é" * 40, "..", "../..", "/",
       "%", "%2e%2e", "\\", "\n", "$LATEST", "*", ":", "arn:", "arn:aws:lambda:us-east-1:000000000000:function:",
       "1" * 30, "-1", "null", "{}", "[]", "\ud800", "a\udfffb"]
WRONG: list[Any] = [[], {}, "x", "", 0, -1, 1, 2**31, -(2**31) - 1, 2**63, 10**30, -(10**40), 1.5, 1e308, -0.0,
                    True, False, None, [["x"]], {"a": {"b": [1]}}, ["a", 1, None], {"k": None}, "\ud800"]
BAD_LABELS = ["%00", "%FF", "%C0%AF", "%2F", "%25", "%252F", "..", "%2e%2e", "%2e", "a%20b", "%E2%80%AE",
              "%F0%9F%98%80", "a" * 300, "%ED%A0%80", "fz0q%3A1", "fz0q:$LATEST", "fz0q:%24LATEST", "~", "%7E"]
FILTER_PATTERNS = ["", "ERROR", '{ $.a = "b" }', "?x ?y", "%a+%", '{ $.a = "\\u" }', '{ $.a = "\\ud800" }', "%(%",
                   "{ " + "(" * 450 + "$.a = 1" + ")" * 450 + " }", '{ $.a = 1e999 }', '"\\', "[a, b]", "{ $.a IS }",
                   "{ $.a[99999999999999999999] = 1 }", "{ $.a > \"x\" }", "-", "?", "%%"]
BAD_INTS = ["abc", "1e3", "-0", "99999999999999999999", " 1", "1_000", "\u0661", "", "-2147483649", "2147483648",
            "0x10", "1.5", "NaN"]


@dataclass
class Request:
    service: str  # "lambda" or "logs"
    operation: str
    method: str
    path: str  # raw, percent-encoded as sent
    query: str
    headers: dict[str, str]
    body: bytes
    mutation: str

    def describe(self) -> str:
        body = self.body[:300]
        return (f"{self.service}.{self.operation} [{self.mutation}] {self.method} {self.path}"
                f"{'?' + self.query if self.query else ''} headers={self.headers} body={body!r}"
                f"{'...' if len(self.body) > 300 else ''} ({len(self.body)} bytes)")


@dataclass
class Outcome:
    status: int
    body: bytes
    seconds: float
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names


@dataclass
class Tracker:
    """What the server said it did, to check its state against afterwards."""

    functions: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=set)


def served() -> tuple[list[OperationModel], list[OperationModel]]:
    """The Lambda and Logs operations Kindling serves (the frontend's own tables)."""
    from kindling.frontend import handlers, logs_api, protocol

    lam, logs = protocol.service_model(), logs_api.service_model()
    return ([lam.operation_model(n) for n in sorted(handlers.HANDLERS)],
            [logs.operation_model(n) for n in sorted(logs_api.OPERATIONS)])


class Generator:
    """Requests for one seed: valid-looking values from the model, then one to three mutations."""

    def __init__(self, seed: int, keep: str) -> None:
        self.rng = random.Random(seed)
        self.keep = keep  # a function only read and invoked (never changed), checked afterwards
        self.lambda_ops, self.logs_ops = served()

    # -- values ---------------------------------------------------------------------------------------
    def value(self, shape: Shape, name: str, depth: int = 0, readonly: bool = False) -> Any:
        r, t = self.rng, shape.type_name
        if t == "structure":
            out = {}
            required = set(shape.required_members)
            for member_name, member in shape.members.items():  # type: ignore[attr-defined]
                if member_name in required or (depth < 3 and r.random() < 0.35):
                    out[member_name] = self.value(member, member_name, depth + 1, readonly)
            return out
        if t == "list":
            return [self.value(shape.member, name, depth + 1, readonly)  # type: ignore[attr-defined]
                    for _ in range(r.choice((0, 1, 1, 2, 3)))]
        if t == "map":
            return {self.value(shape.key, "key", depth + 1): self.value(shape.value, name, depth + 1)  # type: ignore[attr-defined]
                    for _ in range(r.choice((0, 1, 2)))}
        if t == "string":
            return self.string(shape, name, readonly)
        if t in ("integer", "long"):
            lo, hi = int(shape.metadata.get("min", 0)), int(shape.metadata.get("max", 1000))
            return r.randint(lo, min(hi, lo + 1000))
        if t in ("float", "double"):
            return r.choice((0, 1, 2.5, 100))
        if t == "boolean":
            return r.random() < 0.5
        if t == "timestamp":
            return int(time.time()) - r.randint(0, 3600)
        if t == "blob":
            return ZIP_B64 if name in ("ZipFile", "Payload") or r.random() < 0.5 else base64.b64encode(
                r.randbytes(r.randint(0, 40))).decode()
        return None

    def function_name(self, readonly: bool) -> str:
        r = self.rng
        name = self.keep if readonly and r.random() < 0.5 else r.choice(POOL)
        return r.choice((name, name, f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}", f"{name}:$LATEST"
                         if not readonly or name != self.keep else name))

    def string(self, shape: Shape, name: str, readonly: bool) -> str:
        r = self.rng
        if enum := shape.metadata.get("enum"):
            return str(r.choice(enum))
        if name in ("FunctionName", "Resource"):
            fn = self.function_name(readonly)
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn.rsplit(':', 1)[-1]}" if name == "Resource" else fn
        known = {"Role": ROLE, "Runtime": "python3.12", "Handler": "app.handler",
                 "Qualifier": r.choice(("$LATEST", "1", "live", "2")), "Name": r.choice(("live", "beta")),
                 "FunctionVersion": r.choice(("$LATEST", "1", "ALL")), "logGroupName": r.choice(GROUPS),
                 "logGroupIdentifier": r.choice(GROUPS), "logStreamName": r.choice(("s1", "2024/01/01/[$LATEST]x")),
                 "filterPattern": r.choice(FILTER_PATTERNS),
                 "Description": "fuzz", "DestinationArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:q",
                 "logGroupNamePrefix": "/fz/", "Marker": r.choice(("", "x", self.token())),
                 "nextToken": self.token()}
        if name in known:
            return known[name]
        lo = int(shape.metadata.get("min", 0))
        return "".join(r.choice("abcdefghij0123456789") for _ in range(max(lo, r.randint(1, 12))))

    def token(self) -> str:
        """A paging token: base64 of some JSON (as Kindling's are), or not."""
        r = self.rng
        doc = r.choice([0, -1, 10**30, "fz", [1, "s", 2], [1, 2], {"a": 1}, None, [[[]]], "f/1", 1.5])
        raw = json.dumps(doc).encode() if r.random() < 0.9 else b"[" * 5000 + b"]" * 5000
        return r.choice((base64.urlsafe_b64encode(raw).decode(), "f/" + r.choice(("1", "\u00b2", "9" * 30)),
                         "b/0", "", "!!!"))

    def wrong(self) -> Any:
        r = self.rng
        kind = r.random()
        if kind < 0.55:
            return copy.deepcopy(r.choice(WRONG))
        if kind < 0.8:
            return r.choice(ODD) * r.choice((1, 1, 2, 100))
        if kind < 0.9:
            return "a" * r.choice((0, 64, 65, 256, 1025, 4097, 70_000))
        return self.nested(r.choice(DEEP[:2]))  # deeper ones are written as raw bodies

    def nested(self, depth: int) -> Any:
        value: Any = "x"
        for _ in range(depth):
            value = [value] if self.rng.random() < 0.5 else {"a": value}
        return value

    def mutate_tree(self, doc: Any) -> str:
        """Replace one value somewhere in ``doc`` (a dict) with a wrong one; the mutation's description."""
        path: list[Any] = []
        node = doc
        while True:
            keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node))) if isinstance(
                node, list) else []
            if not keys or (path and self.rng.random() < 0.4):
                break
            key = self.rng.choice(keys)
            if not isinstance(node[key], (dict, list)) or self.rng.random() < 0.5:
                node[key] = self.wrong()
                return f"type at {path + [key]}"
            path.append(key)
            node = node[key]
        if isinstance(node, dict):
            key = self.rng.choice(("x", "FunctionName", "Tags", "logGroupName", "limit"))
            node[key] = self.wrong()
            return f"added {key} at {path}"
        if isinstance(node, list):
            node.append(self.wrong())
            return f"element at {path}"
        return "none"

    # -- requests -------------------------------------------------------------------------------------
    def request(self) -> Request:
        r = self.rng
        if r.random() < 0.22:
            return self.logs_request(r.choice(self.logs_ops))
        if r.random() < 0.08:  # functions to work on: most operations need one that exists
            return self.lambda_request(next(op for op in self.lambda_ops if op.name == "CreateFunction"))
        return self.lambda_request(r.choice(self.lambda_ops))

    def lambda_request(self, op: OperationModel) -> Request:
        r = self.rng
        readonly = op.name.startswith(("Get", "List")) or op.name == "Invoke"
        shape = op.input_shape
        params = self.value(shape, op.name, readonly=readonly) if shape is not None else {}
        if op.name == "Invoke":
            params["Payload"] = json.dumps({"name": "fz"})
            params.pop("InvocationType", None) if r.random() < 0.6 else None
        mutations = []
        labels: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        body_doc: dict[str, Any] = {}
        raw_body: bytes | None = None
        payload = shape.serialization.get("payload") if shape is not None else None
        for name, member in (shape.members.items() if shape is not None else []):
            if name not in params:
                continue
            loc, wire = member.serialization.get("location"), member.serialization.get("name", name)
            v = params[name]
            if loc == "uri":
                labels[wire] = _quote(str(v))
            elif loc == "querystring":
                query.extend((wire, str(x)) for x in (v if isinstance(v, list) else [v]))
            elif loc == "header":
                headers[wire] = str(v)
            elif name == payload:
                raw_body = v.encode() if isinstance(v, str) else json.dumps(v).encode()
            else:
                body_doc[name] = v
        for _ in range(r.choice((0, 1, 1, 1, 2, 3))):
            where = r.random()
            if where < 0.5 and (body_doc or (raw_body is None and shape is not None)):
                mutations.append(self.mutate_tree(body_doc))
            elif where < 0.65 and labels:
                key = r.choice(list(labels))
                labels[key] = r.choice(BAD_LABELS) if r.random() < 0.7 else _quote(r.choice(ODD))
                mutations.append(f"label {key}")
            elif where < 0.8:
                member = r.choice([m for m in shape.members.values()] if shape is not None and shape.members else
                                  [None])
                wire = member.serialization.get("name", "MaxItems") if member is not None else "MaxItems"
                query.append((wire, r.choice(BAD_INTS + ODD[:6])))
                mutations.append(f"query {wire}")
            elif where < 0.9:
                headers[r.choice(("X-Amz-Invocation-Type", "X-Amz-Log-Type", "X-Amz-Client-Context",
                                  "Content-Type"))] = r.choice(("Event", "DryRun", "Tail", "x", "", "e30=", "%%%",
                                                                "bm90IGpzb24=", "W10=", "\u00e9", "0a91"))
                mutations.append("header")
            else:
                raw_body = self.raw_body(body_doc)
                mutations.append("raw body")
        path = op.http["requestUri"].partition("?")[0]
        literal = op.http["requestUri"].partition("?")[2]
        for name in re.findall(r"\{([^}]+)\}", path):
            path = path.replace("{" + name + "}", labels.get(name.rstrip("+"), "fz0q"))
        if literal:
            query.insert(0, tuple(literal.split("=", 1)))  # type: ignore[arg-type]
        body = raw_body if raw_body is not None else (json.dumps(body_doc).encode() if body_doc else b"")
        return Request("lambda", op.name, op.http["method"], path, urlencode(query, quote_via=_quote), headers, body,
                       ", ".join(mutations) or "none")

    def raw_body(self, doc: dict[str, Any]) -> bytes:
        r = self.rng
        text = json.dumps(doc, ensure_ascii=r.random() < 0.5).encode(errors="surrogatepass")
        kind = r.randrange(9)
        if kind == 0:
            return text[: r.randint(0, len(text))]
        if kind == 1:  # invalid UTF-8 inside a string or anywhere
            at = text.rfind(b'"', 0, max(1, len(text) - 1))
            return text[:max(at, 0)] + r.choice((b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80")) + text[max(at, 0):]
        if kind == 2:
            depth = r.choice(DEEP)
            return b"[" * depth + b"]" * depth if r.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
        if kind == 3:
            return r.choice((b"null", b"[]", b"1", b'"s"', b"true", b"NaN", b'{"MemorySize": NaN}', b"Infinity"))
        if kind == 4:
            return b'{"Timeout": ' + b"9" * r.choice((20, 400, 5000)) + b"}"
        if kind == 5:
            return b"\xef\xbb\xbf" + text
        if kind == 6:
            return text.replace(b"}", b', "FunctionName": 1}', 1)
        if kind == 7:
            depth = r.choice(DEEP)
            key = r.choice(list(doc)) if doc else "x"
            text = json.dumps({**doc, key: "@"}).encode(errors="surrogatepass")
            return text.replace(b'"@"', b"[" * depth + b"]" * depth)
        return text + b" trailing"

    def logs_request(self, op: OperationModel) -> Request:
        r = self.rng
        doc = self.value(op.input_shape, op.name) if op.input_shape is not None else {}
        mutations = []
        body: bytes | None = None
        for _ in range(r.choice((0, 1, 1, 2))):
            if r.random() < 0.8:
                mutations.append(self.mutate_tree(doc))
            else:
                body = self.raw_body(doc)
                mutations.append("raw body")
        if op.name == "FilterLogEvents" and r.random() < 0.1:
            doc["filterPattern"] = "{ " + "(" * r.choice((10, 300, 600)) + "$.a = 1" + ")" * 3 + " }"
            mutations.append("deep filterPattern")
        headers = {"X-Amz-Target": LOGS_TARGET + op.name, "Content-Type": "application/x-amz-json-1.1"}
        if body is None:
            body = json.dumps(doc).encode()
        return Request("logs", op.name, "POST", "/", "", headers, body, ", ".join(mutations) or "none")


class Client:
    """Signs and sends requests to one server, one connection, with a per-request timeout."""

    def __init__(self, endpoint: str, keys: tuple[str, str], timeout: float = 30) -> None:
        self.endpoint = endpoint
        self.host, _, port = endpoint.removeprefix("http://").partition(":")
        self.port = int(port)
        self.credentials = Credentials(*keys)
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def send(self, req: Request) -> Outcome:
        url = self.endpoint + req.path + (f"?{req.query}" if req.query else "")
        aws = AWSRequest(method=req.method, url=url, data=req.body, headers=dict(req.headers))
        SigV4Auth(self.credentials, req.service, REGION).add_auth(aws)
        headers = dict(aws.headers.items())
        start = time.monotonic()
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(req.method, req.path + (f"?{req.query}" if req.query else ""), body=req.body,
                                  headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return Outcome(resp.status, data, time.monotonic() - start,
                               {k.lower(): v for k, v in resp.getheaders()})
            except TimeoutError:
                self.close()
                raise
            except (ConnectionError, http.client.HTTPException):
                self.close()  # a kept-alive connection the server closed: once more on a new one
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Failure:
    what: str  # "HTTP 500 ...", "HANG ...", "CONNECTION ...", "TRACEBACK"
    request: Request
    traceback: str = ""  # what the server logged after the request, if it held a traceback

    def where(self) -> str:
        """The innermost Kindling frame of the traceback ("kindling/observability/logs.py"), or ""."""
        frames = re.findall(r'File "[^"]*/(kindling/[^"]+)"', self.traceback)
        return frames[-1] if frames else ""

    def __str__(self) -> str:
        return f"{self.what}: {self.request.describe()}" + (f"\n{self.traceback[-1500:]}" if self.traceback else "")


@dataclass
class Report:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    by_operation: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[Failure] = field(default_factory=list)  # 5xx, hangs, tracebacks: with the request
    requests: int = 0
    slowest: float = 0.0

    def summary(self, limit: int = 50) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        where = collections.Counter(f.where() or f.what.split(" ", 1)[0] for f in self.failures)
        lines = [f"{self.requests} requests; status codes {codes}; slowest {self.slowest:.2f} s; "
                 f"{len(self.failures)} failures {dict(where)}"]
        shown: collections.Counter[str] = collections.Counter()
        for f in self.failures:  # a few of each kind first, so a rare one is not hidden behind a common one
            shown[f.where()] += 1
            if shown[f.where()] <= 3 and len(lines) <= limit:
                lines.append(str(f))
        return "\n".join(lines)


class Fuzzer:
    """Sends generated requests to a server and checks the oracle after each; ``run`` bounds count and time."""

    def __init__(self, endpoint: str, keys: tuple[str, str], log_path: Path, seed: int, keep: str,
                 timeout: float = 30) -> None:
        self.client = Client(endpoint, keys, timeout)
        self.generator = Generator(seed, keep)
        self.log_path = log_path
        self.log_offset = log_path.stat().st_size if log_path.exists() else 0
        self.tracker = Tracker()
        self.report = Report()

    def run(self, requests: int, seconds: float, progress: Callable[[Report], None] | None = None) -> Report:
        deadline = time.monotonic() + seconds
        while self.report.requests < requests and time.monotonic() < deadline:
            req = self.generator.request()
            self.one(req)
            if progress is not None and self.report.requests % 1000 == 0:
                progress(self.report)
        self.client.close()
        return self.report

    def one(self, req: Request) -> None:
        rep = self.report
        rep.requests += 1
        rep.by_operation[req.operation] += 1
        what = ""
        try:
            out = self.client.send(req)
        except TimeoutError:
            rep.statuses[0] += 1
            what = f"HANG (no answer in {self.client.timeout} s)"
        except (ConnectionError, http.client.HTTPException) as exc:
            rep.statuses[-1] += 1
            what = f"CONNECTION {exc!r}"
        else:
            rep.statuses[out.status] += 1
            rep.slowest = max(rep.slowest, out.seconds)
            if out.status >= 500:
                what = f"HTTP {out.status} {out.body[:300]!r}"
            self.track(req, out)
        tb = self.new_tracebacks()
        if what or tb:
            rep.failures.append(Failure(what or "TRACEBACK", req, tb))

    def new_tracebacks(self) -> str:
        size = self.log_path.stat().st_size if self.log_path.exists() else 0
        if size <= self.log_offset:
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            text = f.read(size - self.log_offset).decode(errors="replace")
        self.log_offset = size
        return text if "Traceback" in text else ""

    def track(self, req: Request, out: Outcome) -> None:
        """Remember what the server said it created or deleted (pool names only)."""
        if req.operation == "CreateFunction" and out.status == 201:
            self.tracker.functions.add(json.loads(out.body)["FunctionName"])
        elif req.operation == "DeleteFunction" and out.status == 204:
            label = unquote(req.path.split("/")[3])  # /2015-03-31/functions/{FunctionName}
            name, _, qualifier = label.split(":function:", 1)[-1].partition(":")
            if not qualifier and not parse_qs(req.query).get("Qualifier", [""])[0]:
                self.tracker.functions.discard(name)  # the function, not one of its versions
        elif req.operation in ("CreateLogGroup", "DeleteLogGroup") and out.status == 200:
            group = json.loads(req.body)["logGroupName"]
            if not group.startswith(FUNCTION_GROUPS):
                (self.tracker.groups.add if req.operation == "CreateLogGroup" else self.tracker.groups.discard)(group)


def check_state(lam: Any, logs: Any, tracker: Tracker, keep: str) -> None:
    """The server's state matches what it answered: created functions and groups exist, deleted ones do not,
    and the kept function still reads and invokes as before."""
    names = {f["FunctionName"] for page in lam.get_paginator("list_functions").paginate()
             for f in page["Functions"]}
    fuzzed = {n for n in names if n in POOL}
    assert fuzzed == tracker.functions, f"functions {sorted(fuzzed)} != created {sorted(tracker.functions)}"
    assert keep in names
    assert lam.get_function(FunctionName=keep)["Configuration"]["Handler"] == "app.handler"
    out = lam.invoke(FunctionName=keep, Payload=b'{"name": "after"}')
    assert json.loads(out["Payload"].read()) == {"hello": "after"}, out
    pages = logs.get_paginator("describe_log_groups").paginate()
    groups = {g["logGroupName"] for page in pages for g in page["logGroups"]}
    # (a group deleted may be made again by an invoke of a function configured to log there, as on AWS)
    assert tracker.groups <= groups, f"groups {sorted(groups)} lack some created {sorted(tracker.groups)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--endpoint", help="fuzz a running server instead (its log is then not checked)")
    args = parser.parse_args()

    import boto3
    from botocore.config import Config
    from invoke_latency import ACCESS_KEY, SECRET_KEY, start_server  # one way to start the server

    with tempfile.TemporaryDirectory(prefix="kindling-fuzz-") as tmp:
        log_path = Path(tmp) / "server.log"
        proc = None
        endpoint = args.endpoint
        if endpoint is None:
            proc, port, log_path = start_server(Path(tmp), [])
            endpoint = f"http://127.0.0.1:{port}"
        try:
            cfg = Config(retries={"max_attempts": 1}, read_timeout=60)
            lam, logs = (boto3.client(s, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                                      aws_secret_access_key=SECRET_KEY, config=cfg) for s in ("lambda", "logs"))
            keep = "fuzz-keep"
            lam.create_function(FunctionName=keep, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": _zip()})
            fuzzer = Fuzzer(endpoint, (ACCESS_KEY, SECRET_KEY), log_path, args.seed, keep)
            start = time.monotonic()
            report = fuzzer.run(args.requests, args.seconds,
                                lambda r: print(f"  {r.requests} requests, {len(r.failures)} failures, "
                                                f"{time.monotonic() - start:.0f} s", flush=True))
            took = time.monotonic() - start
            print(report.summary())
            print(f"{report.requests / took:.0f} requests/s over {took:.0f} s (seed {args.seed})")
            try:
                check_state(lam, logs, fuzzer.tracker, keep)
                print("state: consistent")
            except AssertionError as exc:
                print(f"state: INCONSISTENT: {exc}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(15)


if __name__ == "__main__":
    main()
