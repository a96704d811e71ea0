"""A function's LoggingConfig applied to its log lines, as Lambda's advanced logging controls do.

``LogFormat`` Text: START / END / REPORT lines as Lambda writes them, application lines as they come.
``LogFormat`` JSON: the platform writes AWS's JSON records (``platform.start``, ``platform.runtimeDone``,
``platform.report``), kept when their level reaches ``SystemLogLevel`` (start and report are INFO,
runtimeDone DEBUG); application lines are kept when their level reaches ``ApplicationLogLevel`` (a line
that is a JSON object with a ``level`` counts at that level, any other line at INFO), and the runtime is
told the format and level (AWS_LAMBDA_LOG_FORMAT, AWS_LAMBDA_LOG_LEVEL).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

LEVELS = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "WARN": 3, "WARNING": 3, "ERROR": 4, "FATAL": 5, "CRITICAL": 5}
_INFO = LEVELS["INFO"]


def iso_time(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class LogFormat:
    def __init__(self, logging_config: dict[str, Any] | None) -> None:
        c = logging_config or {}
        self.json = c.get("LogFormat") == "JSON"
        self.application_level = str(c.get("ApplicationLogLevel") or "INFO").upper()
        self._app_min = LEVELS.get(self.application_level, _INFO)
        self._system_min = LEVELS.get(str(c.get("SystemLogLevel") or "INFO").upper(), _INFO)

    def environment(self) -> dict[str, str]:
        """What the runtime is told, as Lambda tells it (nothing for Text)."""
        if not self.json:
            return {}
        return {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": self.application_level}

    # -- platform lines (None: filtered out) --------------------------------------------------------
    def _record(self, kind: str, level: int, record: dict[str, Any]) -> str | None:
        if level < self._system_min:
            return None
        return json.dumps({"time": iso_time(), "type": kind, "record": record})

    def start(self, request_id: str, version: str) -> str | None:
        if not self.json:
            return f"START RequestId: {request_id} Version: {version}"
        return self._record("platform.start", _INFO, {"requestId": request_id, "version": version})

    def end(self, request_id: str, duration_ms: float, status: str) -> str | None:
        if not self.json:
            return f"END RequestId: {request_id}"
        return self._record("platform.runtimeDone", LEVELS["DEBUG"], {
            "requestId": request_id, "status": status, "metrics": {"durationMs": round(duration_ms, 3)}})

    def init_report(self, duration_ms: float, status: str, error_type: str | None) -> str | None:
        """An init that failed during an invoke (Lambda's "suppressed init", phase invoke)."""
        if not self.json:
            return (f"INIT_REPORT Init Duration: {duration_ms:.2f} ms\tPhase: invoke\tStatus: {status}"
                    + (f"\tError Type: {error_type}" if error_type else ""))
        record: dict[str, Any] = {"initializationType": "on-demand", "phase": "invoke", "status": status,
                                  "metrics": {"durationMs": round(duration_ms, 3)}}
        if error_type:
            record["errorType"] = error_type
        return self._record("platform.initReport", _INFO, record)

    def report(self, text: str, request_id: str, duration_ms: float, memory_mb: int, max_memory_mb: int,
               init_duration_ms: float | None, restore: bool, status: str | None,
               error_type: str | None = None) -> str | None:
        """``text``: the REPORT line as the environment wrote it for Text; its JSON record otherwise."""
        if not self.json:
            return text
        metrics: dict[str, Any] = {"durationMs": round(duration_ms, 3),
                                   "billedDurationMs": max(1, math.ceil(duration_ms)),
                                   "memorySizeMB": memory_mb, "maxMemoryUsedMB": max_memory_mb}
        if init_duration_ms is not None:
            if restore:
                metrics.update(restoreDurationMs=round(init_duration_ms, 3),
                               billedRestoreDurationMs=math.ceil(init_duration_ms))
            else:
                metrics["initDurationMs"] = round(init_duration_ms, 3)
        record = {"requestId": request_id, "metrics": metrics, "status": status or "success"}
        if error_type:
            record["errorType"] = error_type
        return self._record("platform.report", _INFO, record)

    # -- application lines --------------------------------------------------------------------------
    def keeps(self, line: str) -> bool:
        """Whether an application line reaches ApplicationLogLevel (always, for Text)."""
        if not self.json or self._app_min == 0 or (self._app_min <= _INFO and not line.startswith("{")):
            return True
        level = _INFO
        if line.startswith("{"):
            try:
                doc = json.loads(line)
                if isinstance(doc, dict) and isinstance(doc.get("level"), str):
                    level = LEVELS.get(doc["level"].upper(), _INFO)
            except ValueError:
                pass
        return level >= self._app_min
