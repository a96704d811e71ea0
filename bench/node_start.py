"""Node.js starts: bare `node -e 0`, a fresh start of Kindling's Node runtime, and Kindling's Node cold and warm
invokes, in one run, beside the Python figures.

    .venv/bin/python bench/node_start.py [--quick]

- bare `node -e 0`: spawn to exit (the interpreter's own floor), and `python3.12 -S -c pass` beside it; and a bare
  node that loads `net` and connects to a socket: spawn to the connect (what the runtime does before its first
  GET /next, without the runtime);
- the runtime alone: `node [Lambda's flags] index.cjs` against a stub Runtime API in this process: spawn to its
  first GET /next (ready), and to the hello handler's response (a first invoke), with no sandbox;
- Kindling: a real `kindling serve` with idle environments reclaimed 50 ms after use, so every sampled invoke is a
  cold start (the whole invoke round trip through the HTTP API), for nodejs20.x (a fresh `node` in a fresh isolated
  environment: Node has no fork, so no zygote or template) and python3.12 (its fast path, a zygote's clone) and
  python3.12 with templates off (a fresh interpreter); then warm invokes of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from invoke_latency import ACCESS_KEY, REGION, ROLE, SECRET_KEY, Lean, ms, start_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kindling.runtimes import node as node_runtime  # noqa: E402
from kindling.runtimes.registry import Runtimes  # noqa: E402

NODE_HELLO = "exports.handler = async () => ({ ok: true });\n"
PY_HELLO = 'def handler(e, c):\n    return {"ok": True}\n'


# What an environment has (no NODE_OPTIONS, no NODE_EXTRA_CA_CERTS: a host that sets the latter makes every node
# start read a CA bundle, tens of ms, which environments never pay)
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC"}


def spawn_to_exit(argv: list[str], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(argv, check=True, env=CLEAN_ENV)
        samples.append(time.perf_counter() - t)
    return samples


class StubApi:
    """A Runtime API that gives one invoke and notes when the runtime asked for it and when it answered."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.settimeout(30)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]

    def serve_one(self, marks: dict[str, float]) -> None:
        """(The connection stays open, in marks["conn"], until the runtime is killed: closed, it would reconnect.)"""
        conn, _ = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        marks["conn"] = conn  # type: ignore[assignment]
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"  # (closed: nothing more will come)
        marks["next"] = time.perf_counter()
        body = b"{}"
        conn.sendall(b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: 00000000-0000-0000-0000-000000000001\r\n"
                     b"Lambda-Runtime-Deadline-Ms: %d\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:"
                     b"us-east-1:000000000000:function:f\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (int(time.time() * 1000) + 60000, len(body), body))
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536) or b"\r\n\r\n"  # (closed: nothing more will come)
        marks["response"] = time.perf_counter()


def bare_connect(node: str, n: int) -> list[float]:
    """Spawn of a bare node that connects to a socket (loading `net`, as the runtime does) until it connects."""
    samples = []
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv.settimeout(30)
        script = f"require('net').connect({srv.getsockname()[1]}, '127.0.0.1')"
        for _ in range(n):
            t = time.perf_counter()
            proc = subprocess.Popen([node, "-e", script], env=CLEAN_ENV)
            conn, _ = srv.accept()
            samples.append(time.perf_counter() - t)
            proc.kill()
            proc.wait()
            conn.close()
    return samples


def runtime_alone(node: str, n: int) -> tuple[list[float], list[float]]:
    """Spawn of `node index.cjs` to its first GET /next, and to its first response, with a stub Runtime API."""
    ready, answered = [], []
    api = StubApi()
    with tempfile.TemporaryDirectory() as task:
        Path(task, "index.js").write_text(NODE_HELLO)
        env = {**CLEAN_ENV, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}", "_HANDLER": "index.handler",
               "LAMBDA_TASK_ROOT": task, "LAMBDA_RUNTIME_DIR": str(node_runtime.CLIENT.parent),
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "AWS_LAMBDA_FUNCTION_NAME": "f"}
        argv = node_runtime.command(node, str(node_runtime.CLIENT.parent), 128)
        for _ in range(n):
            marks: dict[str, float] = {}
            server = threading.Thread(target=api.serve_one, args=(marks,))
            server.start()
            t = time.perf_counter()
            proc = subprocess.Popen(argv, env=env, cwd=task, stdout=subprocess.DEVNULL)
            server.join(30)
            proc.kill()
            proc.wait()
            marks["conn"].close()  # type: ignore[attr-defined]
            ready.append(marks["next"] - t)
            answered.append(marks["response"] - t)
    api.sock.close()
    return ready, answered


def create(lean: Lean, runtime: str) -> str:
    import boto3

    from kindling.runtimes.node import CLIENT  # noqa: F401 - (the runtime client is copied at serve start)

    code = NODE_HELLO if runtime.startswith("nodejs") else PY_HELLO
    name = f"start-{runtime.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    client = boto3.client("lambda", endpoint_url=lean.base, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("index.js" if runtime.startswith("nodejs") else "app.py")
        info.external_attr = 0o100644 << 16
        zf.writestr(info, code)
    client.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, MemorySize=1024, Timeout=30,
                           Handler="index.handler" if runtime.startswith("nodejs") else "app.handler",
                           Code={"ZipFile": buf.getvalue()})
    client.close()
    return name


def cold_starts(port: int, name: str, n: int) -> tuple[float, list[float]]:
    """(the very first cold start, then n cold starts each after the previous environment was reclaimed)."""
    lean = Lean(port)
    first = lean.invoke(name)[0]
    samples = []
    for _ in range(n):
        time.sleep(0.5)  # the previous environment reclaimed (and its process gone) before the next invoke
        samples.append(lean.invoke(name)[0])
    return first, samples


def warm(port: int, names: list[str], n: int) -> list[list[float]]:
    """n warm invokes of each function, taking turns (so the machine's load hits them alike)."""
    leans = [Lean(port) for _ in names]
    for lean, name in zip(leans, names, strict=True):
        for _ in range(10):
            lean.invoke(name)
    out: list[list[float]] = [[] for _ in names]
    for _ in range(n):
        for samples, lean, name in zip(out, leans, names, strict=True):
            samples.append(lean.invoke(name)[0])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    n = 10 if ap.parse_args().quick else 30
    runtimes = Runtimes(os.environ.get("KINDLING_RUNTIMES", ""))
    node = runtimes.interpreter("nodejs20.x")
    python = runtimes.interpreter("python3.12")
    if node is None:
        sys.exit("no node v20 on this host")
    load = os.getloadavg()
    # interleaved, one of each per round, so that a change in the machine's load hits all of them alike
    bare_node, bare_ready, bare_py, ready, answered = [], [], [], [], []
    for _ in range(n):
        bare_node += spawn_to_exit([node, "-e", "0"], 1)
        bare_ready += bare_connect(node, 1)
        bare_py += spawn_to_exit([python or shutil.which("python3") or "python3", "-S", "-c", "pass"], 1)
        r, a = runtime_alone(node, 1)
        ready += r
        answered += a
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as off_dir:
        srv, port, _ = start_server(Path(d), ["--keep-alive", "0.05"])
        off, off_port, _ = start_server(Path(off_dir), ["--keep-alive", "0.05", "--templates", "off"])
        try:
            time.sleep(2)  # the Python zygotes
            node_fn, py_fn, py_off_fn = create(Lean(port), "nodejs20.x"), create(Lean(port), "python3.12"), \
                create(Lean(off_port), "python3.12")
            node_first, node_cold = cold_starts(port, node_fn, n)
            py_first, py_cold = cold_starts(port, py_fn, n)
            _, py_off_cold = cold_starts(off_port, py_off_fn, n)
        finally:
            for p in (srv, off):
                p.terminate()
                p.wait(15)
    with tempfile.TemporaryDirectory() as d:
        srv, port, _ = start_server(Path(d), [])
        try:
            node_fn, py_fn = create(Lean(port), "nodejs20.x"), create(Lean(port), "python3.12")
            node_warm, py_warm = warm(port, [node_fn, py_fn], n * 5)
        finally:
            srv.terminate()
            srv.wait(15)

    def row(label: str, xs: list[float], base_label: str, base: list[float]) -> None:
        print(f"{label:<46} {ms(xs, .5):8.2f} {ms(xs, .99):8.2f}   {base_label:<22} {ms(base, .5):8.2f} "
              f"{ms(xs, .5) / ms(base, .5):7.2f}x")

    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nNode.js starts, ms (n={n}; node {version}; load average at start {load[0]:.2f}, at the end "
          f"{os.getloadavg()[0]:.2f}; every ratio against a figure from this run)\n")
    print(f"{'':<46} {'p50':>8} {'p99':>8}   {'baseline':<22} {'p50':>8} {'ratio':>8}")
    row("bare node -e 0", bare_node, "bare python3.12 -S", bare_py)
    row("bare node: spawn to a TCP connect", bare_ready, "bare node -e 0", bare_node)
    row("runtime alone: spawn to first GET /next", ready, "bare node connect", bare_ready)
    row("runtime alone: spawn to first response", answered, "bare node -e 0", bare_node)
    row("Kindling nodejs20.x cold start (fresh node)", node_cold, "runtime alone, response", answered)
    row("Kindling nodejs20.x cold start", node_cold, "bare node -e 0", bare_node)
    row("Kindling python3.12 cold start (zygote clone)", py_cold, "bare python3.12 -S", bare_py)
    row("Kindling python3.12 cold start (fresh)", py_off_cold, "bare python3.12 -S", bare_py)
    row("Kindling nodejs20.x vs python3.12 cold start", node_cold, "python3.12 zygote", py_cold)
    row("Kindling nodejs20.x warm invoke", node_warm, "python3.12 warm", py_warm)
    print(f"\nfirst cold start of a new function: nodejs20.x {node_first * 1000:.1f} ms, "
          f"python3.12 {py_first * 1000:.1f} ms\n")


if __name__ == "__main__":
    main()
