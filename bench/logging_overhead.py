"""Logging must not slow invokes: warm invoke p50 of a function printing 100 lines vs one printing none.

    .venv/bin/python bench/logging_overhead.py [--quick] [-- extra `kindling serve` flags]

Both functions run on one real `kindling serve`, interleaved request by request on twin keep-alive
connections, so the machine's noise hits both alike; the ratio is the figure. A third row does the same
with LogFormat JSON (every line is checked against ApplicationLogLevel), a fourth shows what 100 lines
cost in the function itself (a handler that writes them to /dev/null), so the platform's share is the
difference between the rows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from invoke_latency import ACCESS_KEY, REGION, ROLE, SECRET_KEY, Lean, make_zip, ms, start_server  # noqa: E402

SILENT = 'def handler(e, c):\n    return {"ok": True}\n'
CHATTY = ('def handler(e, c):\n    for i in range(100):\n        print("log line", i, "of a chatty function")\n'
          '    return {"ok": True}\n')
# The same prints through a stream that flushes every write (as the runtime's stdout does), to /dev/null.
DEVNULL = ('class Null:\n    def __init__(self):\n        self.f = open("/dev/null", "w")\n'
           '    def write(self, m):\n        n = self.f.write(m)\n        self.f.flush()\n        return n\n'
           'null = Null()\n'
           'def handler(e, c):\n    for i in range(100):\n'
           '        print("log line", i, "of a chatty function", file=null)\n    return {"ok": True}\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (~30 s)")
    ap.add_argument("serve_args", nargs="*", help="extra `kindling serve` flags, after --")
    args = ap.parse_args()
    n = 300 if args.quick else 1500
    kinds = {"silent": (SILENT, {}), "devnull": (DEVNULL, {}), "chatty": (CHATTY, {}),
             "chatty-json": (CHATTY, {"LogFormat": "JSON"})}
    labels = {"silent": "no output", "devnull": "100 lines to /dev/null (in-function cost)",
              "chatty": "100 lines to the log (Text)", "chatty-json": "100 lines to the log (LogFormat JSON)"}
    with tempfile.TemporaryDirectory(prefix="kindling-bench-") as tmp:
        proc, port, log = start_server(Path(tmp), args.serve_args)
        try:
            lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                               aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               config=Config(retries={"max_attempts": 1}))
            for memory in (1769, 128):  # one full vCPU (no CPU quota in the way), then Lambda's default size
                names = {f"{kind}-{memory}": kind for kind in kinds}
                for name, kind in names.items():
                    code, logging = kinds[kind]
                    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                        Code={"ZipFile": make_zip(code)}, MemorySize=memory,
                                        **({"LoggingConfig": logging} if logging else {}))
                conns = {name: Lean(port) for name in names}
                samples: dict[str, list[float]] = {name: [] for name in names}
                for i in range(100 + n):  # interleaved; the first 100 rounds warm up
                    for name, conn in conns.items():
                        dt = conn.invoke(name)[0]
                        if i >= 100:
                            samples[name].append(dt)
                base = ms(samples[f"silent-{memory}"], 0.5)
                print(f"\nMemorySize {memory} MB: warm invoke, {n} interleaved rounds")
                print(f"{'function':<44}{'p50 ms':>8}{'p99 ms':>8}{'vs silent':>11}")
                for name, kind in names.items():
                    xs = samples[name]
                    print(f"{labels[kind]:<44}{ms(xs, .5):>8.2f}{ms(xs, .99):>8.2f}{ms(xs, .5) / base:>10.2f}x")
                per_line = (ms(samples[f"chatty-{memory}"], .5) - ms(samples[f"devnull-{memory}"], .5)) / 100 * 1000
                print(f"platform's cost per line (Text - /dev/null): {per_line:.1f} µs")
        finally:
            proc.terminate()
            proc.wait(15)
            time.sleep(0.1)


if __name__ == "__main__":
    main()
