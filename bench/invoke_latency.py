"""Invoke latency, throughput and cold start of a real `kindling serve`, each beside a baseline from the same run.

`.venv/bin/python bench/invoke_latency.py [--quick] [-- serve flags]`. The machine is assumed shared and noisy, so
every row carries a baseline measured in the same run (interleaved where possible) and the ratio. See README.md.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import multiprocessing as mp
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from kindling.runtimes.registry import Runtimes

ACCESS_KEY = "AKIAKINDLINGBENCH000"
SECRET_KEY = "kindling/bench/secret/key/00000000000000"  # any 40 characters
REGION = "us-east-1"
ROLE = "arn:aws:iam::000000000000:role/lambda-role"
HELLO = 'def handler(e, c):\n    return {"ok": True}\n'
INIT_RE = re.compile(r"Init Duration: ([0-9.]+) ms")


def start_server(tmp: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port, log = int(s.getsockname()[1]), tmp / "server.log"
    env = {**os.environ, "KINDLING_ACCESS_KEY_ID": ACCESS_KEY, "KINDLING_SECRET_ACCESS_KEY": SECRET_KEY}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kindling.cli.main", "serve", "--port", str(port),
                                 "--data-dir", str(tmp / "data"), "--keep-alive", "3600", *extra],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"kindling serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_kindling/health", timeout=1):
                return proc, port, log
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit(f"kindling serve did not become healthy:\n{log.read_text()}")


class Lean:
    """One keep-alive HTTP/1.1 connection with TCP_NODELAY; requests are SigV4-signed by botocore."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[float, http.client.HTTPResponse, bytes]:
        """(seconds, response, body). Signing happens before the clock starts: the time is the round trip."""
        req = AWSRequest(method=method, url=self.base + path, data=body, headers=headers or {})
        self.signer.add_auth(req)
        t = time.perf_counter()
        self.conn.request(method, path, body, {k: str(v) for k, v in req.headers.items()})
        resp = self.conn.getresponse()
        data = resp.read()
        dt = time.perf_counter() - t
        if resp.status != 200 or resp.getheader("X-Amz-Function-Error"):
            raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
        return dt, resp, data

    def invoke(self, name: str, tail: bool = False) -> tuple[float, http.client.HTTPResponse, bytes]:
        headers = {"Content-Type": "application/json", **({"X-Amz-Log-Type": "Tail"} if tail else {})}
        return self.call("POST", f"/2015-03-31/functions/{name}/invocations", b"{}", headers)

    def health(self) -> float:
        return self.call("GET", "/_kindling/health")[0]


def ms(xs: list[float], q: float) -> float:
    """The q-quantile of samples in seconds, in ms."""
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] * 1000


def make_zip(code: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo("app.py")
        info.external_attr = 0o100644 << 16
        zf.writestr(info, code)
    return buf.getvalue()


def _client_proc(port: int, what: str, warm_until: float, end: float, out: mp.Queue) -> None:
    lean, count, errors, lat = Lean(port), 0, 0, []
    call = lean.health if what == "health" else lambda: lean.invoke(what)[0]
    while (now := time.monotonic()) < end:
        try:
            dt = call()
        except (RuntimeError, OSError, http.client.HTTPException):  # a throttle, say: count it, go on
            errors, lean = errors + (now >= warm_until), Lean(port)
            continue
        if now >= warm_until:
            lat.append(dt)
            count += 1
    out.put((count, now - warm_until, lat, errors))


def throughput(port: int, what: str, clients: int, seconds: float) -> tuple[float, list[float], int]:
    """Requests/s of ``clients`` processes, each with its own connection, after a short warm-up."""
    ctx, q = mp.get_context("fork"), mp.get_context("fork").Queue()
    warm_until = time.monotonic() + 0.3 + 0.05 * clients
    procs = [ctx.Process(target=_client_proc, args=(port, what, warm_until, warm_until + seconds, q))
             for _ in range(clients)]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    lat = [x for r in results for x in r[2]]
    return sum(r[0] for r in results) / max(r[1] for r in results), lat, sum(r[3] for r in results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, shorter runs (~40 s)")
    ap.add_argument("serve_args", nargs="*", help="extra `kindling serve` flags, after --, e.g. -- --sandbox process")
    args = ap.parse_args()
    n_warm, n_cold, seconds = (500, 10, 2.0) if args.quick else (2000, 20, 5.0)
    interp = Runtimes().interpreter("python3.12") or sys.exit("python3.12 not found: the benchmark needs it")
    rows: list[tuple[str, ...]] = []

    def row(name: str, xs: list[float], base: str, bs: list[float], target: str = "") -> None:
        rows.append((name, f"{ms(xs, .5):.2f}", f"{ms(xs, .99):.2f}", base, f"{ms(bs, .5):.2f}",
                     f"{ms(xs, .5) / ms(bs, .5):.2f}x", target))

    def rate(name: str, x: float, base: str, b: float) -> None:
        rows.append((name, f"{x:.0f}/s", "-", base, f"{b:.0f}/s", f"{x / b:.2f}x", ""))

    with tempfile.TemporaryDirectory(prefix="kindling-bench-") as tmp:
        proc, port, log = start_server(Path(tmp), args.serve_args)
        print(next((ln for ln in log.read_text().splitlines() if ln.startswith("Kindling")), "?"), *args.serve_args)
        try:
            lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                               aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               config=Config(retries={"max_attempts": 1}, read_timeout=120))

            def create(name: str, memory: int = 128) -> None:
                lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                    Code={"ZipFile": make_zip(HELLO)}, MemorySize=memory)

            create("bench-hello")
            create("bench-hello-1vcpu", 1769)  # Lambda's one full vCPU: no CPU quota in the way

            # 1. warm round trip, interleaved with the health baseline on a twin connection
            inv, hc = Lean(port), Lean(port)
            assert inv.invoke("bench-hello")[2] == b'{"ok": true}'
            warm, health, warm_idle, health_idle = [], [], [], []
            for i in range(200 + n_warm):
                if i == 200:  # the first 200 are warm-up
                    warm, health = [], []
                health.append(hc.health())
                warm.append(inv.invoke("bench-hello")[0])
            for _ in range(n_warm // 4):  # sporadic traffic: 5 ms of idle before each request
                time.sleep(0.005)
                health_idle.append(hc.health())
                time.sleep(0.005)
                warm_idle.append(inv.invoke("bench-hello")[0])
            row("health GET (lean)", health, "-", health)
            row("warm invoke (lean)", warm, "health GET", health, "p50 <= 2 ms")
            rows.append(("warm invoke mean", f"{sum(warm) / len(warm) * 1000:.2f}", "-", "health mean",
                         f"{sum(health) / len(health) * 1000:.2f}", f"{sum(warm) / sum(health):.2f}x", ""))
            row("warm, 5 ms idle before", warm_idle, "health, 5 ms idle", health_idle)
            b3 = []
            for i in range(100 + n_warm // 2):
                t = time.perf_counter()
                lam.invoke(FunctionName="bench-hello", Payload=b"{}")["Payload"].read()
                if i >= 100:
                    b3.append(time.perf_counter() - t)
            row("warm invoke (boto3)", b3, "warm invoke (lean)", warm)

            # 2. throughput: client processes, invokes vs health GETs at the same concurrency
            rate_1 = 0.0
            for c in (1, 4, 16):
                rate_h, _, _ = throughput(port, "health", c, seconds)
                rate_i, lat, err = throughput(port, "bench-hello", c, seconds)
                rate_1 = rate_1 or rate_i
                rate(f"invoke/s C={c}", rate_i, f"health/s C={c}", rate_h)
                row(f"  latency C={c}", lat, "warm invoke (lean)", warm, f"{err} failed" if err else "")
            rate_v, lat, err = throughput(port, "bench-hello-1vcpu", 1, seconds)
            rate("invoke/s C=1 1769 MB", rate_v, "invoke/s C=1 128 MB", rate_1)
            row("  latency C=1 1769 MB", lat, "warm invoke (lean)", warm, f"{err} failed" if err else "")

            # 3+4. cold start of a fresh function, interleaved with bare interpreter starts
            bare, bare_si, cold, init = [], [], [], []
            inv = Lean(port)  # uvicorn drops connections idle for 5 s
            for i in range(n_cold + 1):  # the first round warms page cache and the bootstrap's .pyc
                t0 = time.perf_counter()
                subprocess.run([interp, "-c", "pass"], check=True)
                t1 = time.perf_counter()
                subprocess.run([interp, "-S", "-I", "-c", "pass"], check=True)
                b, bsi = t1 - t0, time.perf_counter() - t1
                name = f"bench-cold-{uuid.uuid4().hex[:8]}"
                create(name)
                time.sleep(0.05)
                dt, resp, _ = inv.invoke(name, tail=True)
                tail = base64.b64decode(resp.getheader("X-Amz-Log-Result") or "").decode(errors="replace")
                lam.delete_function(FunctionName=name)
                time.sleep(0.1)  # let the environment's teardown finish before the next sample
                if i:
                    bare.append(b)
                    bare_si.append(bsi)
                    cold.append(dt)
                    init += [float(m.group(1)) / 1000 for m in INIT_RE.finditer(tail)]
            row("bare python3.12 -c pass", bare, "-", bare)
            row("bare python3.12 -S -I", bare_si, "python -c pass", bare)
            row("cold first invoke", cold, "python -c pass", bare, "<= 1.5x bare")
            row("cold first invoke", cold, "python -S -I", bare_si)
            if init:
                row(f"Init Duration ({len(init)})", init, "python -c pass", bare)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
            if errors := [ln for ln in log.read_text().splitlines() if "Traceback" in ln or "ERROR" in ln]:
                kept = Path(tempfile.gettempdir()) / f"kindling-bench-server-{port}.log"
                kept.write_bytes(log.read_bytes())
                print(f"server log has {len(errors)} error line(s), e.g. {errors[0]!r}; kept at {kept}")

    head = ("figure", "p50 ms", "p99 ms", "baseline", "base p50", "ratio", "target")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    for r in (head, tuple("-" * w for w in widths), *rows):
        cells = zip(r, widths, strict=True)
        print("  ".join(c.ljust(w) if i in (0, 3, 6) else c.rjust(w) for i, (c, w) in enumerate(cells)).rstrip())
    w, h, c, b = ms(warm, .5), ms(health, .5), ms(cold, .5), ms(bare, .5)
    print(f"\noverhead = warm p50 - health p50 = {w:.2f} - {h:.2f} = {w - h:.2f} ms (warm/health = {w / h:.2f}x)")
    print(f"{'PASS' if w <= 2.0 else 'MISS'} warm p50 <= 2 ms: {w:.2f} ms (health GET {h:.2f} ms)")
    print(f"{'PASS' if c <= 1.5 * b else 'MISS'} cold p50 <= 1.5x bare interpreter: {c:.2f} ms / {b:.2f} ms "
          f"= {c / b:.2f}x")


if __name__ == "__main__":
    main()
