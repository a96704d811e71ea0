"""REPORT as Lambda writes it: Max Memory Used is the environment's peak memory, runtime included (fresh
environments, template clones, zygote clones alike), and an init that fails has INIT_REPORT, START and a
REPORT with the real duration, its status and error type."""

from __future__ import annotations

import base64
import json
import os
import re

import pytest

from tests.test_templates import _files, _wait_for_template

pytestmark = pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"),
                                reason="the isolated sandbox (cgroups) needs root")

ALLOCATES = '''
import os, sys
HELD = []
def handler(event, context):
    if event.get("mb"):
        HELD.append(bytearray(event["mb"] << 20))
    return {"zygote": "kindling_template" in sys.modules, "type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
'''


def _invoke(lam, name: str, **event: object) -> tuple[dict, str, dict]:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode(), LogType="Tail")
    return json.loads(out["Payload"].read()), base64.b64decode(out["LogResult"]).decode(), out


def _max_memory(log: str) -> int:
    return int(re.search(r"Max Memory Used: (\d+) MB", log).group(1))  # type: ignore[union-attr]


def test_max_memory_used_counts_what_the_function_holds(lam, create_function):
    name = create_function(ALLOCATES, MemorySize=512)["FunctionName"]
    got, log, _ = _invoke(lam, name)
    base = _max_memory(log)
    # a Python runtime holds 10-40 MB, whether it was started fresh or forked from its runtime's zygote
    assert 8 < base < 60, (got, log)
    _, log, _ = _invoke(lam, name, mb=100)
    assert base + 100 <= _max_memory(log) < base + 130
    _, log, _ = _invoke(lam, name)  # the environment's peak: it does not go down
    assert _max_memory(log) >= base + 100


def test_a_template_clone_reports_a_realistic_figure(lam, create_function):
    name = create_function(_files(), MemorySize=256, Timeout=10)["FunctionName"]
    _invoke(lam, name)
    clone, log = _wait_for_template(lam, name)[0]
    assert clone["type"] == "snap-start"
    assert 10 < _max_memory(log) < 80, log


def _init_failure(lam, create_function, code: str, **config: object) -> tuple[dict, str, list[str]]:
    name = create_function(code, **config)["FunctionName"]
    body, log, out = _invoke(lam, name)
    assert out["FunctionError"] == "Unhandled"
    return body, log, [line.split(" ")[0] for line in log.splitlines()]


def test_an_init_that_raises_is_reported_as_lambda_does(lam, create_function):
    body, log, _ = _init_failure(lam, create_function, "import time\ntime.sleep(0.2)\nraise ValueError('no')\n")
    init = re.search(r"INIT_REPORT Init Duration: ([\d.]+) ms\tPhase: invoke\tStatus: error\tError Type: (\S+)", log)
    assert init is not None, log
    assert float(init.group(1)) >= 200 and init.group(2) == body["errorType"]
    report = re.search(r"REPORT RequestId: \S+\tDuration: ([\d.]+) ms\t.*Status: error\tError Type: (\S+)", log)
    assert report is not None and float(report.group(1)) >= 200 and report.group(2) == body["errorType"], log
    assert "Init Duration" not in log.split("\nREPORT ")[1]
    # in Lambda's order: the runtime's error, INIT_REPORT, START, END, REPORT
    heads = [line.split(" ")[0] for line in log.splitlines() if line.split(" ")[0] in
             ("INIT_REPORT", "START", "END", "REPORT")]
    assert heads == ["INIT_REPORT", "START", "END", "REPORT"]
    assert log.index("ValueError") < log.index("INIT_REPORT")


def test_an_init_that_exits_is_reported_as_lambda_does(lam, create_function):
    body, log, _ = _init_failure(lam, create_function, "import sys\nsys.exit(3)\n")
    assert body["errorType"] == "Runtime.ExitError"
    assert re.search(r"INIT_REPORT Init Duration: [\d.]+ ms\tPhase: invoke\tStatus: error\t"
                     r"Error Type: Runtime.ExitError\n", log), log
    assert "Error: Runtime exited with error: exit status 3\nRuntime.ExitError" in log
    assert re.search(r"\nREPORT .*Status: error\tError Type: Runtime.ExitError", log), log
    assert log.index("INIT_REPORT") < log.index("START") < log.index("END") < log.index("\nREPORT")


def test_an_init_that_times_out_is_reported_as_lambda_does(lam, create_function):
    # init may take 10 s plus the function's timeout before it is cut off, as on Lambda
    body, log, _ = _init_failure(lam, create_function, "import time\ntime.sleep(60)\n", Timeout=1)
    assert body["errorType"] == "Sandbox.Timedout"
    init = re.search(r"INIT_REPORT Init Duration: ([\d.]+) ms\tPhase: invoke\tStatus: timeout\n", log)
    assert init is not None and float(init.group(1)) >= 10_000, log
    report = re.search(r"\nREPORT RequestId: \S+\tDuration: ([\d.]+) ms\t.*Status: timeout", log)
    assert report is not None and float(report.group(1)) >= 10_000, log
    assert log.index("INIT_REPORT") < log.index("START") < log.index("Task timed out") < log.index("\nREPORT")


def test_a_failed_init_in_json_log_format(lam, create_function):
    _, log, _ = _init_failure(lam, create_function, "raise ValueError('no')\n", LoggingConfig={"LogFormat": "JSON"})
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"type"' in line]
    init = next(r for r in records if r["type"] == "platform.initReport")
    assert init["record"]["phase"] == "invoke" and init["record"]["status"] == "error"
    assert init["record"]["errorType"] and init["record"]["metrics"]["durationMs"] > 0
    report = next(r for r in records if r["type"] == "platform.report")
    assert report["record"]["status"] == "error" and report["record"]["errorType"] == init["record"]["errorType"]
