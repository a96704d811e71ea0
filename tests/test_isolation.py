"""Adversarial functions, each contained, while other functions keep serving.

These need the isolated sandbox (root, cgroups): they are skipped where
Kindling runs unisolated, and fail in CI, which runs as root.
"""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from tests.conftest import HELLO

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="isolation needs root (CI runs as root)")

PROBE = r'''
import ctypes, errno, json, os, socket, sys, time, threading
libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn):
    try:
        fn()
        return "allowed"
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))

def syscall_result(rc):
    return "allowed" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")

def connect(port, host="127.0.0.1"):
    s = socket.socket()
    s.settimeout(1)
    try:
        return attempt(lambda: s.connect((host, port)))
    finally:
        s.close()

def write_big(path, mb):
    with open(path, "wb") as f:
        chunk = b"x" * (1 << 20)
        for _ in range(mb):
            f.write(chunk)
            f.flush()

def handler(event, context):
    what = event["probe"]
    if what == "files":
        return {"shadow": attempt(lambda: open("/etc/shadow").read()),
                "data_dir": os.path.exists(event["data_dir"]),
                "home": sorted(os.listdir("/root")) if os.path.exists("/root") else None,
                "task_write": attempt(lambda: open("/var/task/evil.py", "w").write("x")),
                "root_write": attempt(lambda: open("/evil", "w").write("x")),
                "etc": sorted(os.listdir("/etc")),
                "code_store": sorted(os.listdir("/var/.kindling-code")) if os.path.isdir("/var/.kindling-code") else []}
    if what == "processes":
        status = open("/proc/self/status").read()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        return {"pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                "kill_host": attempt(lambda: os.kill(event["host_pid"], 0)),
                "uid": os.getuid(), "gid": os.getgid(), "cap_eff": fields["CapEff"].strip(),
                "no_new_privs": fields["NoNewPrivs"].strip(), "seccomp": fields["Seccomp"].strip(),
                "ptrace": syscall_result(libc.ptrace(16, 1, 0, 0)),
                "mount": syscall_result(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
                "unshare": syscall_result(libc.unshare(0x40000000)),
                "hostname": socket.gethostname()}
    if what == "network":
        return {"kindling_api": connect(event["api_port"]), "other_port": connect(event["api_port"] + 1),
                "own_runtime_api": connect(9001, os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")[0])}
    if what == "forkbomb":
        children, error = [], None
        try:
            for _ in range(5000):
                pid = os.fork()
                if pid == 0:
                    os.execv("/bin/sleep", ["sleep", "30"])
                children.append(pid)
        except OSError as exc:
            error = errno.errorcode.get(exc.errno)
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        return {"forked": len(children), "error": error}
    if what == "memory":
        hog = []
        while True:
            hog.append(bytearray(16 << 20))
    if what == "tmp":
        return {"fill": attempt(lambda: write_big("/tmp/fill", event["mb"]))}
    if what == "ticker":
        global TICKS
        if "TICKS" not in globals():
            TICKS = [0]
            def tick():
                while True:
                    TICKS[0] += 1
                    time.sleep(0.01)
            threading.Thread(target=tick, daemon=True).start()
            time.sleep(0.1)
        return TICKS[0]
    if what == "alloc":
        hog = bytearray(event["mb"] << 20)
        return len(hog)
'''


@pytest.fixture
def probe(lam, create_function):
    """A probe function, and a hello function that must keep serving next to it."""
    fn = create_function(PROBE, MemorySize=256, Timeout=20)
    hello = create_function(HELLO)

    def run(**event):
        out = lam.invoke(FunctionName=fn["FunctionName"], Payload=json.dumps(event).encode(), LogType="Tail")
        body = json.loads(out["Payload"].read())
        assert json.loads(lam.invoke(FunctionName=hello["FunctionName"])["Payload"].read()) == {"hello": "world"}
        return out, body

    run.name = fn["FunctionName"]  # type: ignore[attr-defined]
    return run


def test_files_of_the_host_are_out_of_reach(probe, server):
    _, got = probe(probe="files", data_dir=str(server.data_dir))
    assert got["shadow"] == "ENOENT"
    assert got["data_dir"] is False
    assert got["home"] in (None, [".pyenv"])  # only the interpreters, read-only
    assert got["task_write"] in ("EROFS", "EACCES") and got["root_write"] in ("EROFS", "EACCES")
    assert "shadow" not in got["etc"] and "passwd" in got["etc"]
    assert got["code_store"] == []  # no other function's code


def test_processes_privileges_and_system_calls(probe, server):
    _, got = probe(probe="processes", host_pid=server.proc.pid)
    assert got["pids"] == [1]  # only itself: its own PID namespace
    assert got["kill_host"] == "ESRCH"
    assert (got["uid"], got["gid"]) == (993, 990)
    assert got["cap_eff"] == "0000000000000000" and got["no_new_privs"] == "1" and got["seccomp"] == "2"
    assert got["ptrace"] == "EPERM" and got["mount"] == "EPERM" and got["unshare"] == "EPERM"


def test_network_is_loopback_only(probe, server):
    _, got = probe(probe="network", api_port=server.port)
    assert got["kindling_api"] == "ECONNREFUSED" and got["other_port"] == "ECONNREFUSED"
    assert got["own_runtime_api"] == "allowed"


def test_fork_bomb_is_contained(lam, create_function):
    fn = create_function(PROBE, MemorySize=2048, Timeout=30)
    out = lam.invoke(FunctionName=fn["FunctionName"], Payload=b'{"probe": "forkbomb"}')
    got = json.loads(out["Payload"].read())
    assert got["error"] == "EAGAIN" and got["forked"] < 1024  # the pids limit, not the host, said no


def test_memory_past_memorysize_is_killed_and_the_next_invoke_is_clean(probe, lam):
    out, got = probe(probe="memory")
    assert out["FunctionError"] == "Unhandled"
    assert got["errorType"] == "Runtime.OutOfMemory"
    assert got["errorMessage"].endswith("Error: Runtime exited with error: signal: killed")
    out, got = probe(probe="alloc", mb=100)
    assert "FunctionError" not in out and got == 100 << 20
    report = base64.b64decode(out["LogResult"]).decode().splitlines()[-1]
    used = int(report.split("Max Memory Used: ")[1].split(" MB")[0])
    assert 100 <= used <= 256


def test_tmp_is_limited_to_ephemeral_storage(lam, create_function):
    fn = create_function(PROBE, MemorySize=1024, EphemeralStorage={"Size": 512}, Timeout=30)
    out = lam.invoke(FunctionName=fn["FunctionName"], Payload=json.dumps({"probe": "tmp", "mb": 600}).encode())
    assert json.loads(out["Payload"].read()) == {"fill": "ENOSPC"}


def test_environment_is_frozen_between_invokes(probe):
    _, first = probe(probe="ticker")
    time.sleep(1.0)
    _, second = probe(probe="ticker")
    # a thread ticking every 10 ms gets ~100 ticks per idle second unless the environment is frozen
    assert second - first < 30
