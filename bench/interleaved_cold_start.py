"""Cold starts of two checkouts, interleaved sample by sample: a before/after that survives a busy machine.

    .venv/bin/python bench/interleaved_cold_start.py ../before [--samples 80] [--templates on|off|both]

Starts a `kindling serve` of each checkout (with its own .venv) per templates mode, side by side, and then, for
each sample, in a shuffled order: a new python3.12 function's first invoke on each server (templates on: a
clone of the runtime's zygote; off: a fresh interpreter), timed round trip, and its REPORT's Init Duration.
Load drifts hit both equally, unlike runs one after the other (bench/side_by_side.py).
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config
from invoke_latency import ACCESS_KEY, REGION, ROLE, SECRET_KEY, make_zip

HELLO = 'def handler(e, c):\n    return {"ok": True}\n'


def start(checkout: Path, templates: str) -> tuple[subprocess.Popen[bytes], object]:
    tmp = Path(tempfile.mkdtemp(prefix="kindling-interleaved-"))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "KINDLING_ACCESS_KEY_ID": ACCESS_KEY, "KINDLING_SECRET_ACCESS_KEY": SECRET_KEY}
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen([str(checkout / ".venv/bin/python"), "-m", "kindling.cli.main", "serve", "--port",
                                 str(port), "--data-dir", str(tmp / "data"), "--templates", templates,
                                 "--keep-alive", "0.05"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=checkout)
    lam = boto3.client("lambda", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION,
                       aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                       config=Config(retries={"max_attempts": 1}))
    for _ in range(300):
        try:
            lam.list_functions()
            break
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    return proc, lam


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("--samples", type=int, default=80)
    ap.add_argument("--templates", choices=("on", "off", "both"), default="both")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    modes = ("on", "off") if args.templates == "both" else (args.templates,)
    servers = {(name, t): start(path, t) for name, path in (("before", args.before.resolve()), ("after", here))
               for t in modes}
    time.sleep(4)  # the zygotes
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for i in range(args.samples):
            order = list(servers.items())
            random.shuffle(order)
            for (name, t), (_, lam) in order:
                fn = f"interleaved-{i}"
                lam.create_function(FunctionName=fn, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                    Code={"ZipFile": make_zip(HELLO)})
                time.sleep(0.05)
                t0 = time.perf_counter()
                out = lam.invoke(FunctionName=fn, LogType="Tail")
                took = (time.perf_counter() - t0) * 1000
                out["Payload"].read()
                init = re.search(r"Init Duration: ([\d.]+)", base64.b64decode(out["LogResult"]).decode())
                rows.setdefault((name, t), []).append((took, float(init.group(1)) if init else 0.0))
                lam.delete_function(FunctionName=fn)
                time.sleep(0.1)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(15)
    print(f"{'templates':9}  {'':6}  {'invoke p50':>10}  {'Init p50':>8}   (ms, {args.samples} samples each)")
    for t in modes:
        for name in ("before", "after"):
            v = rows[name, t]
            print(f"{t:9}  {name:6}  {statistics.median(x for x, _ in v):10.2f}  "
                  f"{statistics.median(y for _, y in v):8.2f}")


if __name__ == "__main__":
    main()
