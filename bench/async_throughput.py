"""Asynchronous invocation: durable 202s per second with concurrent clients and end-to-end latency, beside the raw
SQLite commit rate measured in the same run.

    .venv/bin/python bench/async_throughput.py [--quick] [-- extra `kindling serve` flags]

Every 202 follows its own fsync'd commit (WAL, synchronous=FULL); group commit lets one commit carry many
events, so the durable 202 rate can pass the one-event-per-commit rate of the same disk, which is the baseline.
Client processes each keep one HTTP/1.1 connection and replay one SigV4-signed request (the server verifies every
signature as usual; signing once keeps the clients' CPU off this 2-core machine). End-to-end latency is measured
at low load: the time from sending an event to the function's handler starting, read from the function's log.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing as mp
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from invoke_latency import ACCESS_KEY, REGION, SECRET_KEY, start_server  # one way to start the server

ROLE = "arn:aws:iam::000000000000:role/lambda-role"
FUNCTION = "bench-async"
CODE = 'import time\ndef handler(e, c):\n    print("E2E", e.get("sent", 0), time.time())\n'
TARGET = 2000.0


def signed(port: int, body: bytes, function: str = FUNCTION) -> tuple[str, dict[str, str]]:
    path = f"/2015-03-31/functions/{function}/invocations"
    req = AWSRequest(method="POST", url=f"http://127.0.0.1:{port}{path}", data=body,
                     headers={"X-Amz-Invocation-Type": "Event", "Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(req)
    return path, {k: str(v) for k, v in req.headers.items()}


def connect(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _client(port: int, function: str, start: float, end: float, out: mp.Queue) -> None:
    conn = connect(port)
    path, headers = signed(port, b'{"load": true}', function)
    n, lat = 0, []
    while time.monotonic() < start:
        time.sleep(0.001)
    while (now := time.monotonic()) < end:
        conn.request("POST", path, b'{"load": true}', headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 202:
            raise SystemExit(f"invoke answered {resp.status}")
        n += 1
        lat.append(time.monotonic() - now)
    out.put((n, lat))


def accepted_per_second(port: int, clients: int, seconds: float,
                        function: str = FUNCTION) -> tuple[int, float, list[float]]:
    ctx = mp.get_context("fork")
    q: mp.Queue = ctx.Queue()
    start = time.monotonic() + 0.5 + 0.02 * clients
    procs = [ctx.Process(target=_client, args=(port, function, start, start + seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    n = sum(r[0] for r in results)
    return n, n / seconds, [x for r in results for x in r[1]]


def sqlite_commits_per_second(directory: Path, seconds: float) -> float:
    """One event per commit, as a store without group commit would do: the disk's durable-commit rate."""
    db = sqlite3.connect(directory / f"baseline-{time.monotonic_ns()}.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, payload BLOB)")
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        db.execute("BEGIN")
        db.execute("INSERT INTO events VALUES (?, ?)", (str(n), b'{"load": true}'))
        db.execute("COMMIT")
        n += 1
    db.close()
    return n / seconds


def ran(data: Path) -> tuple[list[float], list[float]]:
    """From the function's log: end-to-end latencies of timed events, and the run times of load events."""
    timed, load = [], []
    for path in (data / "logs").rglob("*.jsonl"):
        if FUNCTION not in str(path):
            continue
        for line in path.read_text().splitlines():
            try:
                parts = json.loads(line)["message"].split()
            except (ValueError, KeyError):
                continue
            if len(parts) == 3 and parts[0] == "E2E":
                if float(parts[1]) > 1e9:  # a timed event: its send time
                    timed.append(float(parts[2]) - float(parts[1]))
                elif float(parts[1]) == 0:  # a load event
                    load.append(float(parts[2]))
    return timed, load


def e2e_latencies(port: int, data: Path, count: int) -> list[float]:
    conn = connect(port)
    for _ in range(count):
        body = json.dumps({"sent": time.time()}).encode()
        path, headers = signed(port, body)
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 202, resp.status
        time.sleep(0.01)
    deadline, got = time.monotonic() + 30, []
    while time.monotonic() < deadline:
        got = ran(data)[0]
        if len(got) >= count:
            break
        time.sleep(0.2)
    return got


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs")
    ap.add_argument("serve_args", nargs="*", help="extra `kindling serve` flags, after --")
    args = ap.parse_args()
    seconds = 2.0 if args.quick else 5.0
    rows: list[tuple[str, str, str, str]] = []
    best = 0.0
    with tempfile.TemporaryDirectory(prefix="kindling-bench-async-", dir=None) as tmp:
        base_before = sqlite_commits_per_second(Path(tmp), seconds / 2)
        proc, port, log = start_server(Path(tmp), ["--log-level", "warning", *args.serve_args])
        try:
            lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                               aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               config=Config(retries={"max_attempts": 1}))
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("app.py", CODE)
            lam.create_function(FunctionName=FUNCTION, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": buf.getvalue()})
            lam.invoke(FunctionName=FUNCTION, Payload=b'{"sent": 1}')  # warm
            e2e = e2e_latencies(port, Path(tmp) / "data", 50 if args.quick else 200)
            rows.append(("async end-to-end latency p50 (low load)", f"{pct(e2e, .5) * 1000:.2f} ms",
                         f"p99 {pct(e2e, .99) * 1000:.2f} ms", f"n={len(e2e)}"))
            total, started = 0, time.time()
            for clients in (1, 8, 32):
                cpu = cpu_seconds(proc.pid)
                n, rate, lat = accepted_per_second(port, clients, seconds)
                cpu = cpu_seconds(proc.pid) - cpu
                total += n
                best = max(best, rate)
                rows.append((f"durable 202/s, {clients} client(s)", f"{rate:.0f}/s",
                             f"p50 {pct(lat, .5) * 1000:.2f} ms, p99 {pct(lat, .99) * 1000:.2f} ms",
                             f"{rate / base_before:.2f}x SQLite commits/s; server CPU {cpu / n * 1e6:.0f} us/202"))
            accepted_until, deadline, load = time.time(), time.monotonic() + 300, []
            while time.monotonic() < deadline:  # every accepted event runs: how fast the backlog drains
                load = ran(Path(tmp) / "data")[1]
                if len(load) >= total:
                    break
                time.sleep(0.5)
            if load:
                last = max(load)
                rows.append(("events run (accepted above, all run)", f"{len(load)}/{total}",
                             f"{len(load) / (last - started):.0f}/s over the whole run",
                             f"backlog drained {max(0.0, last - accepted_until):.1f} s after the last 202"))
            # a burst to a function at its concurrency limit: the events wait on disk, nothing runs
            hold = io.BytesIO()
            with zipfile.ZipFile(hold, "w") as zf:
                zf.writestr("app.py", 'import time\ndef handler(e, c):\n    time.sleep(e.get("hold", 0))\n')
            lam.create_function(FunctionName="bench-waiting", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": hold.getvalue()}, Timeout=120)
            lam.put_function_concurrency(FunctionName="bench-waiting", ReservedConcurrentExecutions=1)
            lam.invoke(FunctionName="bench-waiting", InvocationType="Event", Payload=b'{"hold": 60}')
            time.sleep(1.0)  # that one runs and holds the only slot
            cpu = cpu_seconds(proc.pid)
            n, rate, lat = accepted_per_second(port, 32, seconds, "bench-waiting")
            cpu = cpu_seconds(proc.pid) - cpu
            best = max(best, rate)
            lam.delete_function(FunctionName="bench-waiting")  # its queued events are dropped as they come up
            rows.append(("durable 202/s, 32 clients, events only queued", f"{rate:.0f}/s",
                         f"p50 {pct(lat, .5) * 1000:.2f} ms, p99 {pct(lat, .99) * 1000:.2f} ms",
                         f"{rate / base_before:.2f}x SQLite commits/s; server CPU {cpu / n * 1e6:.0f} us/202"))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        base_after = sqlite_commits_per_second(Path(tmp), seconds / 2)
        errors = [ln for ln in log.read_text().splitlines() if "Traceback" in ln or "ERROR" in ln]
        if errors:
            print(f"server log has {len(errors)} error line(s), e.g. {errors[0]!r}")
    rows.insert(0, ("raw SQLite commits/s (1 row per commit, WAL, FULL)", f"{base_before:.0f}/s",
                    f"after the run: {base_after:.0f}/s", "baseline"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\n{'PASS' if best >= TARGET else 'MISS'} durable 202/s >= {TARGET:.0f}: best {best:.0f}/s "
          f"({best / base_before:.2f}x the raw one-commit-per-event rate)")


if __name__ == "__main__":
    main()
