"""OpenTelemetry set-up shared by every service: one tracer and meter provider per process.

``setup_telemetry`` installs them process-wide, so the agent core's spans
(model calls, providers, actions), the bus middleware's (publish/consume,
with the trace context in NATS headers) and SQLAlchemy's all land in one
trace. Spans and metrics leave the process over OTLP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (Jaeger in the compose stack;
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks ``grpc``, the default, or
``http/protobuf``), are printed with ``OTEL_TRACES_EXPORTER=console``, and
otherwise exist only to carry the context from hop to hop.

Whatever leaves the process is scrubbed of the configured secrets first
(``RedactingSpanExporter``): an exception recorded on a span carries its
message, and a model server's 401 body may repeat the API key it refused.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from importlib.metadata import version
from typing import overload
from urllib.parse import urlsplit

from faststream import ContextRepo
from faststream.message import StreamMessage
from faststream.middlewares import BaseMiddleware
from faststream.response import PublishCommand
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, TraceState
from opentelemetry.util.types import Attributes, AttributeValue
from typing_extensions import override

from shared.bus_spans import HousekeepingSampler, bounded_bus_middleware

TRACER = "elizamesh"


def setup_telemetry(service: str) -> trace.TracerProvider:
    """Install the tracer and meter providers of ``service`` for this process; return the tracer's.

    When nothing exports traces (no ``OTEL_EXPORTER_OTLP_ENDPOINT``, no
    console exporter), root spans are not sampled: they keep valid trace ids
    but record nothing, and SQL statements are not instrumented (about a
    quarter of the CPU of a turn went to recording spans nobody exported).

    Calling it again in the same process (tests host several services) keeps
    the first providers: OpenTelemetry allows one global provider per process.
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    resource = Resource.create({"service.name": service, "service.version": package_version()})
    readers = [reader] if (reader := _metric_reader()) is not None else []
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    exporter = _span_exporter()
    console = os.environ.get("OTEL_TRACES_EXPORTER") == "console"
    if exporter is None and not console:
        # Trace ids stay valid (X-Trace-Id, propagation), nothing is recorded;
        # a trace sampled upstream by a service that exports stays sampled.
        quiet = QuietTracerProvider(resource=resource)
        trace.set_tracer_provider(quiet)
        return quiet
    provider = TracerProvider(resource=resource, sampler=ParentBased(HousekeepingSampler()))
    secrets = configured_secrets()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter, secrets)))
    else:
        provider.add_span_processor(
            # One JSON line per span, as the logs are: multi-line spans interleaved with them.
            SimpleSpanProcessor(
                RedactingSpanExporter(ConsoleSpanExporter(formatter=_one_line), secrets)
            )
        )
    trace.set_tracer_provider(provider)
    _instrument_sqlalchemy()
    return provider


def _one_line(span: ReadableSpan) -> str:
    return str(span.to_json(indent=None)) + os.linesep


# -- secrets stay out of traces -------------------------------------------------

REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(r"(API_KEYS?|PASSWORD|SECRET|TOKEN)$")
_URL_SETTINGS = ("NATS_URL", "DATABASE_URL")
_SHORTEST_SECRET = 4  # shorter values would scrub ordinary words


def configured_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secrets this process was given, longest first.

    Every ``*_API_KEY(S)``, ``*_PASSWORD``, ``*_SECRET`` and ``*_TOKEN``
    setting (comma-separated lists split) and the passwords inside
    ``NATS_URL`` and ``DATABASE_URL``.
    """
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if _SECRET_NAME.search(name.upper()):
            found.update(v.strip() for v in value.split(","))
    for name in _URL_SETTINGS:
        for url in env.get(name, "").split(","):
            with contextlib.suppress(ValueError):
                if password := urlsplit(url.strip()).password:
                    found.add(password)
    return tuple(sorted((s for s in found if len(s) >= _SHORTEST_SECRET), key=len, reverse=True))


@overload
def redact(value: str, secrets: Sequence[str]) -> str: ...
@overload
def redact(value: AttributeValue, secrets: Sequence[str]) -> AttributeValue: ...
def redact(value: AttributeValue, secrets: Sequence[str]) -> AttributeValue:
    """``value`` with every secret replaced by ``[REDACTED]`` (in strings and sequences)."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, tuple | list):
        return type(value)(redact(v, secrets) for v in value)
    return value


def _redacted_attributes(
    attributes: Mapping[str, AttributeValue] | None, secrets: Sequence[str]
) -> dict[str, AttributeValue]:
    return {k: redact(v, secrets) for k, v in (attributes or {}).items()}


class RedactingSpanExporter(SpanExporter):
    """Exports through ``inner`` copies of the spans with the secrets scrubbed.

    Scrubbed: the span's name, attributes, status description and every
    event's name and attributes (``exception.message``,
    ``exception.stacktrace``, ...), so a recorded exception that quotes a key
    leaves the process without it.
    """

    def __init__(self, inner: SpanExporter, secrets: Sequence[str]) -> None:
        self.inner = inner
        self.secrets = tuple(secrets)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export the scrubbed copies."""
        if not self.secrets:
            return self.inner.export(spans)
        return self.inner.export([self._scrubbed(span) for span in spans])

    def _scrubbed(self, span: ReadableSpan) -> ReadableSpan:
        secrets = self.secrets
        status = span.status
        if status.description:
            status = Status(status.status_code, redact(status.description, secrets))
        return ReadableSpan(
            name=redact(span.name, secrets),
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=_redacted_attributes(span.attributes, secrets),
            events=[
                Event(
                    redact(e.name, secrets),
                    _redacted_attributes(e.attributes, secrets),
                    e.timestamp,
                )
                for e in span.events
            ],
            links=span.links,
            kind=span.kind,
            status=status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        """Shut the inner exporter down."""
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush the inner exporter."""
        return self.inner.force_flush(timeout_millis)


class _Switch(Sampler):
    """Samples as a parent-based sampler whose roots are off until switched on."""

    def __init__(self) -> None:
        self.on = False
        self._off = ParentBased(ALWAYS_OFF)
        self._on = ParentBased(HousekeepingSampler())

    @override
    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        sampler = self._on if self.on else self._off
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"Switch({'on' if self.on else 'off'})"


class QuietTracerProvider(TracerProvider):
    """A provider that records nothing until a span processor is added (then samples)."""

    def __init__(self, *, resource: Resource) -> None:
        self._switch = _Switch()
        super().__init__(resource=resource, sampler=self._switch)

    @property
    def listened(self) -> bool:
        """Whether a span processor was added (spans are then sampled and exported)."""
        return self._switch.on

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        """Add ``span_processor``; from now on traces are sampled (someone listens)."""
        super().add_span_processor(span_processor)
        self._switch.on = True


class BusTelemetry:
    """The broker middleware: traces publish/consume and carries the trace context in headers.

    FastStream's ``NatsTelemetryMiddleware`` while spans can leave the process;
    under a quiet provider nobody listens to, only the trace context travels
    (``TraceContextOnly``): the same trace ids hop to hop, no span per message
    (about a seventh of a runtime's CPU went to spans nobody exported).
    """

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self.traced = bounded_bus_middleware(provider, metrics.get_meter_provider())

    def __call__(self, msg: object, /, *, context: ContextRepo) -> BaseMiddleware[PublishCommand]:
        """The middleware for one message (FastStream makes one per message)."""
        quiet = isinstance(self.provider, QuietTracerProvider) and not self.provider.listened
        if quiet:
            return TraceContextOnly(msg, context=context)
        return self.traced(msg, context=context)


class TraceContextOnly(BaseMiddleware):
    """Carries the W3C trace context across the bus without making spans.

    Consuming, the context in the message's headers becomes current (a new
    unsampled root when there is none, so the handler's logs have a trace id);
    publishing, the current context goes into the headers.
    """

    async def consume_scope(
        self,
        call_next: Callable[[StreamMessage[object]], Awaitable[object]],
        msg: StreamMessage[object],
    ) -> object:
        """Run the handler inside the message's trace context."""
        parent = propagate.extract(msg.headers)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            parent = trace.set_span_in_context(_unsampled_root(), parent)
        token = otel_context.attach(parent)
        try:
            return await call_next(msg)
        finally:
            otel_context.detach(token)

    async def publish_scope(
        self, call_next: Callable[[PublishCommand], Awaitable[object]], cmd: PublishCommand
    ) -> object:
        """Publish with the current trace context in the headers."""
        propagate.inject(cmd.headers)
        return await call_next(cmd)


_ids = RandomIdGenerator()


def _unsampled_root() -> Span:
    """A span that starts a trace and records nothing (what the quiet sampler makes)."""
    return trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=_ids.generate_trace_id(),
            span_id=_ids.generate_span_id(),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
        )
    )


def bus_telemetry(provider: trace.TracerProvider) -> BusTelemetry:
    """Return the broker middleware that traces publish/consume and propagates trace context."""
    return BusTelemetry(provider)


def _otlp_http() -> bool:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
    )
    return protocol.startswith("http")


def _span_exporter() -> SpanExporter | None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    # The exporters are imported only when used: grpc is slow to import.
    if _otlp_http():
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as HttpSpanExporter,
        )

        return HttpSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter as GrpcSpanExporter,
    )

    return GrpcSpanExporter()


def _metric_reader() -> MetricReader | None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    if _otlp_http():
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as HttpMetricExporter,
        )

        return PeriodicExportingMetricReader(HttpMetricExporter())
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as GrpcMetricExporter,
    )

    return PeriodicExportingMetricReader(GrpcMetricExporter())


def _instrument_sqlalchemy() -> None:
    """Trace every SQL statement (engines created from now on)."""
    from opentelemetry.instrumentation.sqlalchemy import (  # noqa: PLC0415 - only in services
        SQLAlchemyInstrumentor,
    )

    instrumentor = SQLAlchemyInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        # The instrumentation declares SQLAlchemy < 2.1; its engine events are
        # unchanged in 2.1 (tests/e2e asserts the SQL spans), so skip the check.
        instrumentor.instrument(enable_commenter=False, skip_dep_check=True)


# -- what the agent core records ------------------------------------------------

_meter = metrics.get_meter(TRACER)
MESSAGES_HANDLED = _meter.create_counter(
    "elizamesh.messages.handled", unit="{message}", description="Messages an agent handled."
)
TURN_DURATION = _meter.create_histogram(
    "elizamesh.turn.duration", unit="s", description="Time from a message to its reply."
)
MODEL_CALLS = _meter.create_histogram(
    "elizamesh.model.duration", unit="s", description="Latency of model calls, by model type."
)
MODEL_TOKENS = _meter.create_counter(
    "elizamesh.model.tokens", unit="{token}", description="Tokens in and out of models."
)
QUEUE_DEPTH = _meter.create_gauge(
    "elizamesh.queue.depth",
    unit="{message}",
    description="Messages waiting in a JetStream queue (embedding priorities, ...), by consumer.",
)


@contextlib.contextmanager
def consumed(
    name: str, headers: Mapping[str, str] | None, **attributes: AttributeValue | None
) -> Iterator[Span]:
    """A span for a message pulled from a JetStream queue, child of the span that published it.

    The bus middleware traces what FastStream subscribers consume; queue
    workers pull with nats-py, so they continue the trace from the headers here.
    """
    parent = propagate.extract(dict(headers or {}))
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={k: v for k, v in attributes.items() if v is not None},
    ) as current:
        yield current


@functools.cache
def package_version() -> str:
    """Elizamesh's version, read once: the package metadata costs ~1 ms a read."""
    return version("elizamesh")


def tracer() -> trace.Tracer:
    """The tracer of elizamesh's own spans (the global provider's, made once per provider)."""
    return _tracer_of(trace.get_tracer_provider())


@functools.cache
def _tracer_of(provider: trace.TracerProvider) -> trace.Tracer:
    # The SDK makes a new Tracer (and instrumentation scope) on every get_tracer.
    return provider.get_tracer(TRACER, package_version())


class _Unrecorded(contextlib.AbstractContextManager[Span]):
    """What ``span`` gives when no span would be recorded: the current span stays current."""

    def __enter__(self) -> Span:
        return trace.get_current_span()

    def __exit__(self, *exc: object) -> None:
        return None


_UNRECORDED = _Unrecorded()


def recorded() -> bool:
    """Whether a span started now could leave the process.

    False without an SDK provider (the API's no-op tracer), and with a quiet
    provider nobody listens to once a trace is under way (its id is already
    in the context for logs and propagation). A quiet provider's root span is
    still made: it gives the logs and the headers a trace id.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, QuietTracerProvider):
        return provider.listened or not trace.get_current_span().get_span_context().is_valid
    return isinstance(provider, TracerProvider)


def span(name: str, **attributes: AttributeValue | None) -> contextlib.AbstractContextManager[Span]:
    """A span around a step (``None`` attributes left out); an exception marks it failed.

    When nothing would record it (``recorded``), no span is made and the
    block sees the current one: a turn's dozen steps cost nothing then.
    """
    if not recorded():
        return _UNRECORDED
    return tracer().start_as_current_span(
        name, attributes={k: v for k, v in attributes.items() if v is not None}
    )


@contextlib.contextmanager
def timed(histogram: metrics.Histogram, **attributes: AttributeValue | None) -> Iterator[None]:
    """Record how long the block took in ``histogram``, failed or not."""
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.record(time.perf_counter() - started, attributes)


def record_tokens(model: str, *, prompt: int | None, completion: int | None) -> None:
    """Note a model call's token usage on the current span and in the token counter."""
    current = trace.get_current_span()
    current.set_attribute("gen_ai.request.model", model)
    for direction, count in (("input", prompt), ("output", completion)):
        if count is not None:
            current.set_attribute(f"gen_ai.usage.{direction}_tokens", count)
            MODEL_TOKENS.add(count, {"model": model, "direction": direction})
