"""OpenTelemetry traces, configured the standard way; nothing at all when they are not asked for.

A process exports spans when ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) is
set and ``OTEL_SDK_DISABLED`` is not ``true``. Everything else is the SDK's own reading of the
``OTEL_*`` variables (the protocol, the sampler, the batch delays, the resource); only the
service name has a default of ours, one per process (``walrus-gateway``, ``walrus-worker``,
``walrus-beat``). These are the one group of variables read outside ``Settings``: their names
and meaning are OpenTelemetry's, shared with every other service an operator traces.

When tracing is off no OpenTelemetry module is imported and every function here returns at its
first line (``_tracer is None``): the hot path pays one attribute test.

A run keeps its trace context: ``submit()`` stores the accepting span's W3C ``traceparent`` on
the run, and the worker's spans continue from it whichever task, worker or drain executes the
run (docs/design.md, "Traces follow the run").
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from walrus_tasks.models import trace_id_of

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

GATEWAY, WORKER, BEAT = "walrus-gateway", "walrus-worker", "walrus-beat"
"""The default ``service.name`` of each process (``OTEL_SERVICE_NAME`` overrides it)."""

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI content switch: messages and tool arguments go on spans only when it is ``true``."""

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_capture = False
_next_ids = threading.local()
"""Ids the next span must take (``span``'s ``span_id``/``trace_id``): see ``_Ids``."""


def configured(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables ask this process to export traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(env)
    if exporters:
        return exporters != ["none"]
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def enabled() -> bool:
    """Whether this process exports spans (``setup`` found them asked for)."""
    return _tracer is not None


def capture_content() -> bool:
    """Whether message content may go on spans (``CAPTURE_CONTENT`` is ``true``)."""
    return _capture


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    return [n.strip().lower() for n in raw.split(",") if n.strip()]


def setup(service: str) -> bool:
    """Install the tracer provider of this process when tracing is asked for; whether it is.

    Call once per process, after any fork (a prefork pool's children call it from
    ``worker_process_init``): the batch processor's export thread is the process's own.
    """
    global _tracer, _provider, _capture
    if _tracer is not None:
        return True
    if not configured():
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource, id_generator=_ids())
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider, _tracer = provider, provider.get_tracer("walrus_tasks")
    _capture = os.environ.get(CAPTURE_CONTENT, "").strip().lower() == "true"
    return True


def _exporters() -> list[Any]:
    names = _exporter_names(os.environ) or ["otlp"]
    out: list[Any] = []
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        out.append(ConsoleSpanExporter())
    if "otlp" in names:
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol.strip().lower() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        out.append(OTLPSpanExporter())
    return out


def _ids() -> Any:
    """The SDK's random ids, except where the caller chose the next span's (``span``)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _Ids(RandomIdGenerator):
        def generate_span_id(self) -> int:
            chosen: int = getattr(_next_ids, "span_id", 0)
            return chosen or super().generate_span_id()

        def generate_trace_id(self) -> int:
            chosen: int = getattr(_next_ids, "trace_id", 0)
            return chosen or super().generate_trace_id()

    return _Ids()


def shutdown() -> None:
    """Export what is buffered and stop (a pool process that ends)."""
    if _provider is not None:
        _provider.shutdown()


def instrument_celery() -> None:
    """Spans for every task published and run in this process (Celery's instrumentation)."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    CeleryInstrumentor().instrument(tracer_provider=_provider)  # type: ignore[no-untyped-call]


def on_worker_process_init(service: str = WORKER) -> None:
    """Set up tracing in each prefork pool process as it starts, and flush it as it ends.

    Connected only when tracing is asked for, so a worker without it imports nothing.
    """
    if not configured():
        return
    from celery.signals import worker_process_init, worker_process_shutdown

    def init(**_: Any) -> None:
        if setup(service):
            instrument_celery()

    worker_process_init.connect(init, weak=False)
    worker_process_shutdown.connect(lambda **_: shutdown(), weak=False)


def asgi_middleware() -> Any:
    """The ASGI instrumentation's middleware class, or None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return OpenTelemetryMiddleware


def new_span_id() -> str:
    """A fresh span id (16 hex digits) for a span to be started later; '' when tracing is off."""
    if _tracer is None:
        return ""
    return f"{random.getrandbits(64) or 1:016x}"


def traceparent() -> str | None:
    """The current span's W3C ``traceparent``; None when off or no span is current."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags) & 0xFF:02x}"


def _parent(traceparent: str | None, run_id: str, parent_span: str) -> tuple[Context | None, int]:
    """The context a run's span continues from, and the trace id a root span must take.

    From the stored ``traceparent`` (its span, or ``parent_span`` of the same trace); a run
    stored without one (accepted where no span was current) is a trace of its own whose id is
    the run id, so its spans still meet in one trace.
    """
    from opentelemetry import trace

    parts = (traceparent or "").split("-")
    trace_hex = trace_id_of(traceparent)
    flags = int(parts[3], 16) if trace_hex else 1
    if trace_hex is None:
        try:
            trace_hex = f"{int(run_id, 16):032x}" if len(run_id) == 32 else None
        except ValueError:
            trace_hex = None
        if trace_hex is None or not parent_span:
            return None, int(trace_hex, 16) if trace_hex else 0
    span_hex = parent_span or parts[2]
    parent = trace.SpanContext(
        int(trace_hex, 16), int(span_hex, 16), is_remote=True, trace_flags=trace.TraceFlags(flags)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent)), 0


@contextmanager
def run_span(
    name: str,
    record: Mapping[str, str],
    attributes: Mapping[str, Any],
    *,
    kind: str = "internal",
    parent_span: str = "",
    span_id: str = "",
    links: Sequence[str] = (),
    start_ns: int | None = None,
) -> Iterator[Span | None]:
    """A span of the run ``record`` (its stored trace context), current while the block runs.

    ``parent_span``: a span id of the run's trace to parent it on instead of the accepting
    span (a tool call's step). ``span_id``: the id it must take (chosen beforehand and stored
    with the run). ``links``: span ids of the same trace it follows from (a lost attempt).
    Yields None when tracing is off.
    """
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    context, root_trace = _parent(record.get("traceparent"), record.get("run_id", ""), parent_span)
    trace_id = trace.get_current_span(context).get_span_context().trace_id or root_trace
    linked = [
        trace.Link(trace.SpanContext(trace_id, int(s, 16), is_remote=True))
        for s in links
        if s and trace_id
    ]
    _next_ids.span_id = int(span_id, 16) if span_id else 0
    _next_ids.trace_id = root_trace
    try:
        span = _tracer.start_span(
            name, context, kind=getattr(trace.SpanKind, kind.upper()), attributes=dict(attributes),
            links=linked, start_time=start_ns,
        )  # fmt: skip
    finally:
        _next_ids.span_id = _next_ids.trace_id = 0
    with trace.use_span(span, end_on_exit=True):
        yield span


@contextmanager
def child_span(
    name: str, attributes: Mapping[str, Any], kind: str = "internal"
) -> Iterator[Span | None]:
    """A span under the current one, current while the block runs; None when tracing is off."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace

    with _tracer.start_as_current_span(
        name, kind=getattr(trace.SpanKind, kind.upper()), attributes=dict(attributes)
    ) as span:
        yield span


def event(name: str, attributes: Mapping[str, Any]) -> None:
    """Add an event to the current span (nothing when tracing is off or no span records)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().add_event(name, dict(attributes))


def set_attributes(attributes: Mapping[str, Any]) -> None:
    """Set attributes of the current span."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(dict(attributes))


def set_error(description: str, error_type: str = "") -> None:
    """Mark the current span failed, with ``error.type`` (semantic conventions)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if error_type:
        span.set_attribute("error.type", error_type)
    span.set_status(trace.Status(trace.StatusCode.ERROR, description))
