"""/tmp write throughput inside an execution environment, beside the same write to the data dir's disk.

    .venv/bin/python bench/tmp_write.py [--quick]

A real `kindling serve` (isolated when run as root); one python3.12 function (1,769 MB: one full vCPU,
EphemeralStorage 1,024 MB) whose handler writes 256 MB to /tmp in 1 MB chunks, fsyncs, and says how long
that took (then removes the file). The baseline, interleaved with it: this process writes the same 256 MB
the same way to a file in the server's data dir (the disk /tmp's images live on). Both in MB/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from invoke_latency import ACCESS_KEY, REGION, ROLE, SECRET_KEY, Lean, make_zip, start_server

MB = 256
WRITER = f'''
import os, time
CHUNK = os.urandom(1 << 20)
def handler(event, context):
    start = time.perf_counter()
    with open("/tmp/bench", "wb") as f:
        for _ in range({MB}):
            f.write(CHUNK)
        f.flush()
        os.fsync(f.fileno())
    took = time.perf_counter() - start
    os.remove("/tmp/bench")
    st = os.statvfs("/tmp")
    return {{"seconds": took, "tmp_mb": st.f_blocks * st.f_frsize >> 20}}
'''


def host_write(folder: Path) -> float:
    chunk = os.urandom(1 << 20)
    path = folder / "bench-write"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(MB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    took = time.perf_counter() - start
    path.unlink()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    n = 3 if ap.parse_args().quick else 7
    with tempfile.TemporaryDirectory() as tmp:
        srv, port, _ = start_server(Path(tmp), [])
        try:
            lean = Lean(port)
            client = boto3.client("lambda", endpoint_url=lean.base, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                                  aws_secret_access_key=SECRET_KEY)
            client.create_function(FunctionName="tmp-writer", Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                   MemorySize=1769, Timeout=120, EphemeralStorage={"Size": 1024},
                                   Code={"ZipFile": make_zip(WRITER)})
            client.close()
            inside, outside, size = [], [], 0
            for _ in range(n):
                _, _, data = lean.invoke("tmp-writer")
                doc = json.loads(data)
                inside.append(MB / doc["seconds"])
                size = doc["tmp_mb"]
                outside.append(MB / host_write(Path(tmp) / "data"))
        finally:
            srv.terminate()
            srv.wait(15)
    a, b = statistics.median(inside), statistics.median(outside)
    print(f"\n/tmp write throughput, MB/s (median of {n}; {MB} MB in 1 MB writes + fsync)\n")
    print(f"{'':<40} {'MB/s':>8}   {'baseline':<32} {'MB/s':>8}   {'ratio':>6}")
    print(f"{f'/tmp in an environment ({size} MB)':<40} {a:>8.0f}   {'data dir disk, from the host':<32} "
          f"{b:>8.0f}   {a / b:>5.2f}x")


if __name__ == "__main__":
    main()
