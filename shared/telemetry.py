"""OpenTelemetry set-up shared by every service: one tracer provider per process."""

from __future__ import annotations

import os
from importlib.metadata import version

from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def tracer_provider(service: str) -> TracerProvider:
    """Return a tracer provider named after ``service``.

    Spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
    (Jaeger in the compose stack); otherwise they are created for context
    propagation only and never leave the process.
    """
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": version("elizamesh")})
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415 - grpc is slow to import and only needed when exporting
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def bus_telemetry(provider: trace.TracerProvider) -> NatsTelemetryMiddleware:
    """Return the broker middleware that traces publish/consume and propagates trace context."""
    return NatsTelemetryMiddleware(tracer_provider=provider)
