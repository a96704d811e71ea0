"""Traces: every invoke carries an X-Ray trace id, and the platform's work becomes OpenTelemetry spans.

The client's ``X-Amzn-Trace-Id`` (``Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1``) reaches the runtime
as ``Lambda-Runtime-Trace-Id`` / ``_X_AMZN_TRACE_ID``. When ``--otlp-endpoint`` is set, spans for the
frontend, the scheduler, environment init and invoke (and whatever else calls ``span``) are exported over
OTLP/HTTP (protobuf) to ``<endpoint>/v1/traces``, in the trace the X-Ray id names (its Root is the
OpenTelemetry trace id), and an invoke without an X-Amzn-Trace-Id gets one made from its span, so the
runtime, the spans and the logs agree. Without an endpoint every call here is a cheap no-op and the
OpenTelemetry packages (the ``otlp`` extra) are never imported.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("kindling.tracing")

_tracer: Any = None  # an opentelemetry Tracer once configured
_provider: Any = None
_XRAY = re.compile(r"Root=1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})(?:;Parent=([0-9a-fA-F]{16}))?(?:;Sampled=([01]))?")


def configure(endpoint: str, service_name: str = "kindling", delay_ms: int = 1000) -> None:
    """Export spans to an OTLP/HTTP collector at ``endpoint`` (e.g. http://127.0.0.1:4318)."""
    global _tracer, _provider
    if not endpoint:
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("--otlp-endpoint needs the OpenTelemetry packages: pip install 'kindling[otlp]'") from exc
    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    _provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url), schedule_delay_millis=delay_ms))
    _tracer = _provider.get_tracer("kindling")
    log.info("exporting spans to %s", url)


def use(provider: Any) -> None:
    """Use an already made TracerProvider (tests: one with an in-memory exporter); None turns tracing off."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer("kindling") if provider is not None else None


def shutdown() -> None:
    """Export what is pending, then stop."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    return _tracer is not None


def _parent_context(trace_header: str | None) -> Any:
    """An OpenTelemetry context whose remote parent is the X-Ray header's Root/Parent, or None."""
    m = _XRAY.search(trace_header or "")
    if m is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id = int(m.group(1) + m.group(2), 16)
    span_id = int(m.group(3), 16) if m.group(3) else trace_id & 0xFFFFFFFFFFFFFFFF or 1
    parent = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def span(name: str, trace_header: str | None = None, server: bool = False,
         attributes: dict[str, Any] | None = None) -> Iterator[Any]:
    """A span around the block: the current span's child, else the X-Ray header's (an async event's invoke
    runs in the trace of the request that queued it); None when tracing is off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    current = trace.get_current_span().get_span_context().is_valid
    with _tracer.start_as_current_span(name, context=None if current else _parent_context(trace_header), kind=kind,
                                       attributes=_clean(attributes or {})) as s:
        yield s


def start(name: str, attributes: dict[str, Any] | None = None) -> Any:
    """A span started now, as a child of the current one; end it with ``end``. None when tracing is off."""
    if _tracer is None:
        return None
    return _tracer.start_span(name, attributes=_clean(attributes or {}))


def end(s: Any, end_ns: int | None = None) -> None:
    if s is not None and s.is_recording():
        s.end(end_time=end_ns)


def record(name: str, start_ns: int, end_ns: int, attributes: dict[str, Any] | None = None) -> None:
    """A span that already happened (e.g. an environment's init, measured by the environment)."""
    if _tracer is not None:
        s = _tracer.start_span(name, start_time=start_ns, attributes=_clean(attributes or {}))
        s.end(end_time=end_ns)


def trace_header(incoming: str | None) -> str | None:
    """The X-Amzn-Trace-Id an invoke carries: the client's; else, when tracing, one naming the current span."""
    if incoming or _tracer is None:
        return incoming
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    tid = f"{ctx.trace_id:032x}"
    return f"Root=1-{tid[:8]}-{tid[8:]};Parent={ctx.span_id:016x};Sampled=1"


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}
