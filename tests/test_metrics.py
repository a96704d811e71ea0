"""Metrics at /metrics (Prometheus), `kindling stats`, and traces (X-Amzn-Trace-Id, OpenTelemetry over OTLP)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kindling.observability import tracing
from kindling.observability.stats import quantile
from tests.conftest import ROLE, Server, make_zip, unique

CODE = '''
import os, time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"trace": os.environ.get("_X_AMZN_TRACE_ID")}
'''


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics (fetched unsigned, as Prometheus does), parsed with prometheus_client's parser."""
    with urllib.request.urlopen(server.endpoint + "/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def invoke(lam, name: str, event: dict | None = None, **kwargs: object) -> dict:
    out = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **kwargs)
    return {**out, "Body": json.loads(out["Payload"].read())}


def test_metrics_per_function_version_and_alias(server, lam, create_function):
    # Given a function invoked 3 times, once failing, once throttled
    name = create_function(CODE)["FunctionName"]
    for event in ({}, {}, {"fail": True}):
        invoke(lam, name, event)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as throttled:
        invoke(lam, name)
    attempts = throttled.value.response["ResponseMetadata"]["RetryAttempts"] + 1  # boto3 retries a throttle
    lam.delete_function_concurrency(FunctionName=name)
    # ... and through a published version and an alias of it
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    invoke(lam, name, Qualifier="live")
    invoke(lam, name, Qualifier="1")

    # ... and one invoke in flight while /metrics is scraped
    slow = threading.Thread(target=invoke, args=(lam, name, {"sleep": 1.0}))
    slow.start()
    time.sleep(0.5)
    during = scrape(server)
    slow.join()
    samples = scrape(server)

    # Then each resource counts its own
    latest = {"function": name, "version": "$LATEST", "alias": ""}
    assert value(samples, "kindling_invocations_total", **latest) == 4
    assert value(samples, "kindling_errors_total", **latest) == 1
    assert value(samples, "kindling_throttles_total", **latest) == attempts
    assert value(samples, "kindling_duration_milliseconds_count", **latest) == 4
    assert value(samples, "kindling_duration_milliseconds_sum", **latest) >= 1000  # the 1 s invoke
    assert value(samples, "kindling_duration_max_milliseconds", **latest) >= 1000
    assert value(samples, "kindling_duration_milliseconds_bucket", **latest, le="+Inf") == 4
    cold = value(samples, "kindling_cold_starts_total", **latest)
    assert cold is not None and 1 <= cold <= 2  # the slow invoke ran beside nothing else: warm
    assert value(samples, "kindling_init_duration_milliseconds_count", **latest) == cold
    alias = {"function": name, "version": "1", "alias": "live"}
    assert value(samples, "kindling_invocations_total", **alias) == 1
    assert value(samples, "kindling_invocations_total", function=name, version="1", alias="") == 1
    assert value(during, "kindling_concurrent_executions", function=name) == 1
    assert value(during, "kindling_invocations_in_flight", **latest) == 1
    assert value(samples, "kindling_invocations_in_flight", **latest) == 0
    assert value(samples, "kindling_concurrent_executions", function=name) is None  # none in flight
    assert value(samples, "kindling_account_concurrent_executions") is not None

    # And `kindling stats NAME` prints them as a table
    out = subprocess.run([sys.executable, "-m", "kindling.cli.main", "stats", name, "--endpoint-url",
                          server.endpoint], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:] if line.startswith(name)}
    assert rows[f"{name}:$LATEST"][1:4] == ["4", "1", str(attempts)]
    assert rows[f"{name}:live"][1] == "1" and rows[f"{name}:1"][1] == "1"
    p50, p99, peak = (float(x) for x in (rows[f"{name}:$LATEST"][5], rows[f"{name}:$LATEST"][7],
                                         rows[f"{name}:$LATEST"][8]))
    assert p50 <= p99 <= peak and peak >= 1000


def test_quantiles_from_buckets():
    buckets = {1.0: 50.0, 2.0: 90.0, 5.0: 99.0, 10.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == 1.0
    assert quantile(0.7, buckets) == pytest.approx(1.5)
    assert quantile(0.99, buckets) == pytest.approx(5.0)
    assert quantile(0.5, {float("inf"): 0.0}) is None


def test_trace_id_reaches_the_runtime(server, lam, create_function):
    name = create_function(CODE)["FunctionName"]
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    def add_header(request, **kwargs: object) -> None:
        request.headers["X-Amzn-Trace-Id"] = header

    lam.meta.events.register_first("before-sign.lambda.Invoke", add_header)
    try:
        body = invoke(lam, name)["Body"]
    finally:
        lam.meta.events.unregister("before-sign.lambda.Invoke", add_header)
    assert body["trace"].startswith(header)  # Lambda may add Lineage after it
    assert invoke(lam, name)["Body"]["trace"].startswith("Root=1-")  # one is made when none came


class _Collector(http.server.ThreadingHTTPServer):
    """An OTLP/HTTP receiver: keeps every ExportTraceServiceRequest posted to /v1/traces."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/traces":
                    collector.requests.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def spans(self) -> list[object]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = []
        for raw in self.requests:
            req = ExportTraceServiceRequest.FromString(raw)
            out += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out


@pytest.fixture
def collector() -> Iterator[_Collector]:
    c = _Collector()
    thread = threading.Thread(target=c.serve_forever, daemon=True)
    thread.start()
    yield c
    c.shutdown()
    c.server_close()


def test_spans_are_exported_over_otlp(collector: _Collector):
    # Given a server sending spans to an OTLP/HTTP endpoint
    with tempfile.TemporaryDirectory(prefix="kindling-otlp-") as tmp:
        srv = Server(Path(tmp) / "data", otlp_endpoint=f"http://127.0.0.1:{collector.server_address[1]}").start()
        try:
            lam = srv.client()
            name = unique()
            lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                                Code={"ZipFile": make_zip({"app.py": CODE})})
            header = "Root=1-6759e988-0d862e3fe1be46a994272793;Parent=63995c3f42cd8ad8;Sampled=1"

            def add_header(request, **kwargs: object) -> None:
                request.headers["X-Amzn-Trace-Id"] = header

            lam.meta.events.register_first("before-sign.lambda.Invoke", add_header)
            invoke(lam, name)  # cold
            lam.meta.events.unregister("before-sign.lambda.Invoke", add_header)
            untraced = invoke(lam, name)["Body"]["trace"]  # warm, no header: one is made from its span
        finally:
            srv.stop()  # flushes the spans not yet exported
    # Then the frontend, scheduler and environment spans arrived, in the trace the X-Ray id names
    spans = collector.spans()
    traced = [s for s in spans if s.trace_id.hex() == "6759e9880d862e3fe1be46a994272793"]  # type: ignore[attr-defined]
    names = {s.name for s in traced}  # type: ignore[attr-defined]
    assert {"Lambda.Invoke", "invoke", "scheduler.acquire", "environment.init", "environment.invoke"} <= names
    frontend = next(s for s in traced if s.name == "Lambda.Invoke")  # type: ignore[attr-defined]
    assert frontend.parent_span_id.hex() == "63995c3f42cd8ad8"  # type: ignore[attr-defined]
    root = untraced.split(";")[0].removeprefix("Root=1-").replace("-", "")
    later = {s.name for s in spans if s.trace_id.hex() == root}  # type: ignore[attr-defined]
    assert {"Lambda.Invoke", "environment.invoke"} <= later and "environment.init" not in later


def test_tracing_is_off_without_an_endpoint():
    # In-process: no endpoint, no spans and no OpenTelemetry work; with a provider, spans nest
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    assert not tracing.enabled()
    with tracing.span("nothing") as s:
        assert s is None
    assert tracing.trace_header(None) is None
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        with tracing.span("outer", "Root=1-00000001-000000000000000000000002;Parent=0000000000000003"):
            made = tracing.trace_header(None)
            with tracing.span("inner", "Root=1-ffffffff-ffffffffffffffffffffffff"):  # the current span wins
                pass
    finally:
        tracing.use(None)
    outer, inner = sorted(exporter.get_finished_spans(), key=lambda s: s.name, reverse=True)
    assert outer.context.trace_id == inner.context.trace_id == 2 + (1 << 96)
    assert outer.parent is not None and outer.parent.span_id == 3 and inner.parent.span_id == outer.context.span_id
    assert made is not None and made.startswith("Root=1-00000001-000000000000000000000002;Parent=")
