"""Cold starts: a fresh interpreter vs a fork of an initialized template, beside the bare-fork floor.

    .venv/bin/python bench/cold_start.py [--quick]

Three real `kindling serve` processes in the same run: isolated with templates off, isolated with templates
on, and unisolated (`--sandbox process`) as the baseline for what isolation costs. Idle environments are
reclaimed 50 ms after use, so every sampled invoke is a cold start; the time is the whole invoke round trip
through the HTTP API. The floor is the bare fork of a
pre-imported Python process (the child replies over a pipe), measured in this run. Also: a heavy init
(boto3 imported at module level), a burst of 100 concurrent invokes on a cold function, and the memory
(PSS) of idle warm environments.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

from invoke_latency import ACCESS_KEY, REGION, ROLE, SECRET_KEY, Lean, make_zip, ms, start_server

HELLO = 'def handler(e, c):\n    return {"ok": True}\n'
HEAVY = 'import boto3\nCLIENT = boto3.client("s3", region_name="us-east-1")\n' + HELLO


def floor(n: int) -> list[float]:
    """Fork of a pre-imported Python process whose child answers over a pipe."""
    import boto3  # noqa: F401 - make the parent as heavy as an initialized template

    samples = []
    for _ in range(n):
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            os._exit(0)
        os.read(r, 1)
        samples.append(time.perf_counter() - t)
        os.waitpid(pid, 0)
        os.close(r)
        os.close(w)
    return samples


def heavy_zip() -> bytes:
    """A function that imports boto3 (shipped in the zip, as pip --target would)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("app.py", HEAVY)
        for dist in ("boto3", "botocore", "jmespath", "s3transfer", "urllib3", "python-dateutil", "six"):
            for f in importlib.metadata.files(dist) or []:
                if "__pycache__" not in str(f) and ".dist-info" not in str(f) and not str(f).startswith(".."):
                    zf.write(str(f.locate()), str(f))
    return buf.getvalue()


def create(lean: Lean, code: bytes, memory: int = 256) -> str:
    import boto3

    name = f"cold-{uuid.uuid4().hex[:8]}"
    client = boto3.client("lambda", endpoint_url=lean.base, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                           MemorySize=memory, Timeout=30, Code={"ZipFile": code})
    return name


def cold_starts(lean: Lean, name: str, n: int, settle: float = 0.25) -> list[float]:
    """n invokes, each after the previous environment was reclaimed (keep-alive 50 ms): all cold."""
    lean = Lean(int(lean.base.rsplit(":", 1)[1]))  # a fresh connection: the server closes idle ones after 5 s
    lean.invoke(name)  # the first cold start: its init is what a template is made from
    time.sleep(1.5)  # the template is made in the background
    samples = []
    for _ in range(n):
        time.sleep(settle)
        samples.append(lean.invoke(name)[0])
    return samples


def burst(port: int, name: str, n: int) -> float:
    """Seconds until n simultaneous invokes of a cold function have all answered."""
    leans = [Lean(port) for _ in range(n)]
    start = threading.Barrier(n + 1)
    def run(lean: Lean) -> None:
        start.wait()
        lean.invoke(name)
    threads = [threading.Thread(target=run, args=(lean,)) for lean in leans]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def idle_pss_mb(data_dir: Path) -> list[float]:
    """PSS of every process in this server's environment cgroups, per cgroup, in MB."""
    import hashlib

    instance = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    base = Path("/sys/fs/cgroup/memory/kindling")
    if not base.exists():
        base = Path("/sys/fs/cgroup/kindling")
    out = []
    for group in base.glob(f"{instance}-*"):
        total = 0
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        if total:
            out.append(total / 1024)
    return out


def row(name: str, xs: list[float], base_name: str, base: list[float], target: str) -> str:
    return (f"{name:<34} {ms(xs, .5):8.2f} {ms(xs, .99):8.2f}   {base_name:<26} {ms(base, .5):8.2f}"
            f"   {ms(xs, .5) / ms(base, .5):6.1f}x   {target}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    n = 10 if ap.parse_args().quick else 25
    with tempfile.TemporaryDirectory() as fresh_dir, tempfile.TemporaryDirectory() as tmpl_dir, \
            tempfile.TemporaryDirectory() as plain_dir:
        fresh_srv, fresh_port, _ = start_server(Path(fresh_dir), ["--keep-alive", "0.05", "--templates", "off"])
        tmpl_srv, tmpl_port, _ = start_server(Path(tmpl_dir), ["--keep-alive", "0.05"])
        plain_srv, plain_port, _ = start_server(Path(plain_dir), ["--keep-alive", "0.05", "--sandbox", "process"])
        try:
            fresh, tmpl, plain = Lean(fresh_port), Lean(tmpl_port), Lean(plain_port)
            bare = floor(n * 4)
            plain_cold = cold_starts(plain, create(plain, make_zip(HELLO)), n)
            fresh_cold = cold_starts(fresh, create(fresh, make_zip(HELLO)), n)
            tmpl_cold = cold_starts(tmpl, create(tmpl, make_zip(HELLO)), n)
            heavy = heavy_zip()
            fresh_heavy = cold_starts(fresh, create(fresh, heavy), max(5, n // 3))
            tmpl_heavy = cold_starts(tmpl, create(tmpl, heavy), n)
            bursts = {}
            for label, lean, port in (("fresh", fresh, fresh_port), ("template", tmpl, tmpl_port)):
                name = create(lean, make_zip(HELLO), memory=128)
                Lean(port).invoke(name)
                time.sleep(1.5)
                bursts[label] = burst(port, name, 100)
        finally:
            for srv in (fresh_srv, tmpl_srv, plain_srv):
                srv.terminate()
                srv.wait(15)
        # PSS of idle warm environments: a separate pair of servers that keep them
    with tempfile.TemporaryDirectory() as fresh_dir, tempfile.TemporaryDirectory() as tmpl_dir:
        pss = {}
        for label, d, extra in (("fresh", fresh_dir, ["--templates", "off"]), ("template", tmpl_dir, [])):
            srv, port, _ = start_server(Path(d), extra)
            try:
                lean = Lean(port)
                name = create(lean, make_zip(HELLO), memory=128)
                lean.invoke(name)
                time.sleep(1.5)
                burst(port, name, 10)
                time.sleep(0.5)
                pss[label] = idle_pss_mb(Path(d) / "data")
            finally:
                srv.terminate()
                srv.wait(15)
    print(f"\ncold starts, ms (n={n}; every figure beside a baseline measured in the same run)\n")
    print(f"{'':<34} {'p50':>8} {'p99':>8}   {'baseline':<26} {'p50':>8}   {'ratio':>7}   target")
    print(row("fresh interpreter, no isolation", plain_cold, "bare fork (floor)", bare, ""))
    print(row("fresh interpreter, hello", fresh_cold, "no isolation", plain_cold, "isolation costs <= 10 ms"))
    print(row("template, hello", tmpl_cold, "bare fork (floor)", bare, "p50 <= 10 ms, <= 5x floor"))
    print(row("template vs fresh, hello", tmpl_cold, "fresh interpreter", fresh_cold, ""))
    print(row("fresh interpreter, boto3 init", fresh_heavy, "bare fork (floor)", bare, ""))
    print(row("template, boto3 init", tmpl_heavy, "bare fork (floor)", bare, "p50 <= 15 ms"))
    print(f"\nburst of 100 concurrent invokes on a cold function: fresh {bursts['fresh']:.2f} s, "
          f"template {bursts['template']:.2f} s ({bursts['fresh'] / bursts['template']:.1f}x)")
    for label, xs in pss.items():
        if xs:
            print(f"idle warm environment PSS ({label}): median {sorted(xs)[len(xs) // 2]:.1f} MB over {len(xs)} "
                  f"cgroups (target <= 10 MB)")
    print()
    checks = [("isolation adds <= 10 ms to a fresh cold start", ms(fresh_cold, .5) - ms(plain_cold, .5) <= 10),
              ("template cold start p50 <= 10 ms", ms(tmpl_cold, .5) <= 10),
              ("template cold start <= 5x the floor", ms(tmpl_cold, .5) <= 5 * ms(bare, .5)),
              ("template cold start with boto3 p50 <= 15 ms", ms(tmpl_heavy, .5) <= 15)]
    if pss.get("template"):
        checks.append(("idle warm PSS <= 10 MB", sorted(pss["template"])[len(pss["template"]) // 2] <= 10))
    for label, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {label}")


if __name__ == "__main__":
    main()
