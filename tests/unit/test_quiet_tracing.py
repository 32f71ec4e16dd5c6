"""With nothing exporting traces, spans cost next to nothing but keep their trace ids."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import QuietTracerProvider


def test_a_quiet_provider_records_nothing_but_gives_valid_trace_ids() -> None:
    provider = QuietTracerProvider(resource=Resource.create({"service.name": "quiet"}))
    with provider.get_tracer("t").start_as_current_span("turn") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid  # X-Trace-Id and propagation still work


def test_a_quiet_provider_records_once_something_listens() -> None:
    provider = QuietTracerProvider(resource=Resource.create({"service.name": "quiet"}))
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("t").start_as_current_span("turn") as span:
        assert span.is_recording()
    assert [s.name for s in spans.get_finished_spans()] == ["turn"]
