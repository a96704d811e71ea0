"""Cold starts forked from initialized templates (SnapStart's contract), each fully isolated."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="templates need the isolated sandbox (root)")

CODE = '''
import os, random, uuid
from snapshot_restore_py import register_before_snapshot, register_after_restore
ORDER = ["init"]
ENV = uuid.uuid4().hex
register_before_snapshot(lambda: ORDER.append("before_snapshot"))

@register_after_restore
def restored():
    global ENV
    ORDER.append("after_restore")
    ENV = uuid.uuid4().hex

def handler(event, context):
    if event.get("write"):
        open("/tmp/mark", "w").write(ENV if event["write"] == "env" else event["write"])
    if event.get("sleep"):
        import time; time.sleep(event["sleep"])
    status = open("/proc/self/status").read()
    fields = dict(line.split(":\\t", 1) for line in status.splitlines() if ":\\t" in line)
    return {"env": ENV, "order": ORDER, "random": random.random(), "type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "tmp": open("/tmp/mark").read() if os.path.exists("/tmp/mark") else None,
            "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"], "pids": [p for p in os.listdir("/proc") if p.isdigit()],
            "uid": os.getuid(), "caps": fields["CapEff"].strip(), "seccomp": fields["Seccomp"].strip(),
            "no_new_privs": fields["NoNewPrivs"].strip()}
'''


def _files() -> dict[str, str | bytes]:
    hooks = importlib.metadata.files("snapshot-restore-py") or []
    src = next(f for f in hooks if str(f).endswith("snapshot_restore_py.py"))
    return {"app.py": CODE, "snapshot_restore_py.py": Path(str(src.locate())).read_bytes()}


def _invoke(lam, name: str, **event: object) -> tuple[dict, str]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    assert "FunctionError" not in out, out["Payload"].read()
    return json.loads(out["Payload"].read()), base64.b64decode(out["LogResult"]).decode()


def _burst(lam, name: str, n: int, **event: object) -> list[tuple[dict, str]]:
    results: list = [None] * n

    def run(i: int) -> None:
        results[i] = _invoke(lam, name, **event)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _wait_for_template(lam, name: str) -> list[tuple[dict, str]]:
    """Cold starts until one is made from the template (it is made after the first init)."""
    deadline, n = time.monotonic() + 45, 2
    while time.monotonic() < deadline:
        got = _burst(lam, name, n, sleep=0.3)  # one more than the warm environments: one cold start
        n += 1
        clones = [g for g in got if g[0]["type"] == "snap-start"]
        if clones:
            return clones
        time.sleep(0.3)
    raise AssertionError("no environment was made from a template")


def test_cold_starts_fork_from_an_initialized_template(lam, create_function):
    name = create_function(_files(), MemorySize=256, Timeout=10)["FunctionName"]
    first, log = _invoke(lam, name, write="first")
    assert first["type"] == "on-demand" and first["order"] == ["init"] and "Init Duration" in log
    clone, log = _wait_for_template(lam, name)[0]
    # SnapStart's contract: hooks ran in order, the initialization type and the REPORT say so
    assert clone["order"] == ["init", "before_snapshot", "after_restore"]
    assert "Restore Duration" in log and "Init Duration" not in log
    # each clone is a new environment: its own log stream, /tmp, and its own random state
    assert clone["stream"] != first["stream"] and clone["tmp"] is None
    again = _burst(lam, name, 3, sleep=0.5)
    clones = [g[0] for g in again if g[0]["type"] == "snap-start"]
    assert len({c["env"] for c in clones}) == len(clones)
    assert len({c["random"] for c in clones}) == len(clones)
    # and keeps all the isolation: own PID namespace, unprivileged, no capabilities, seccomp
    assert clone["pids"] == ["1"] and clone["uid"] == 993
    assert clone["caps"] == "0000000000000000" and clone["seccomp"] == "2" and clone["no_new_privs"] == "1"


def test_two_clones_do_not_share_tmp_or_randomness(lam, create_function):
    name = create_function(_files(), Timeout=10)["FunctionName"]
    _invoke(lam, name)
    _wait_for_template(lam, name)
    results = [g[0] for g in _burst(lam, name, 4, sleep=0.5, write="env")]
    clones = [r for r in results if r["type"] == "snap-start"]
    assert len(clones) >= 2
    assert len({c["random"] for c in clones}) == len(clones) and len({c["env"] for c in clones}) == len(clones)
    for r in (g[0] for g in _burst(lam, name, 4, sleep=0.3)):  # warm again: each sees only its own /tmp
        assert r["tmp"] == r["env"]


def test_a_changed_function_gets_a_new_template(lam, create_function):
    name = create_function(_files(), Timeout=10)["FunctionName"]
    _invoke(lam, name)
    _wait_for_template(lam, name)
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"GEN": "2"}})
    first, _ = _invoke(lam, name)
    assert first["type"] == "on-demand"  # the old template went with the old configuration


def test_first_cold_start_forks_the_runtimes_zygote(lam, create_function):
    # Given a brand-new function: no init has run yet, so no template of it exists
    code = ("import os, sys\nINIT = os.environ['AWS_LAMBDA_FUNCTION_NAME']\n"
            "def handler(event, context):\n"
            "    return {'zygote': 'kindling_template' in sys.modules, 'init': INIT, 'cwd': os.getcwd(),\n"
            "            'type': os.environ['AWS_LAMBDA_INITIALIZATION_TYPE'],\n"
            "            'task': sorted(os.listdir('/var/task')), 'code_store': os.listdir('/var/.kindling-code')}\n")
    code = code.replace("os.listdir('/var/.kindling-code')", "os.path.isdir('/var/.kindling-code') and "
                        "os.listdir('/var/.kindling-code')")
    deadline = time.monotonic() + 30  # the zygotes are made when the server starts
    while True:
        name = create_function({"app.py": code, "data.txt": "x"}, MemorySize=256)["FunctionName"]
        out = lam.invoke(FunctionName=name, LogType="Tail")
        got = json.loads(out["Payload"].read())
        assert "FunctionError" not in out, got
        if got["zygote"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    log = base64.b64decode(out["LogResult"]).decode()
    # Then it is a fork of its runtime's zygote, yet an ordinary on-demand cold start to the function:
    # init ran in it with its own variables, its code at /var/task, and no other function's code in view
    assert got["zygote"] is True and got["type"] == "on-demand" and "Init Duration" in log
    assert got["init"] == name and got["cwd"] == "/var/task" and got["task"] == ["app.py", "data.txt"]
    assert got["code_store"] == []
