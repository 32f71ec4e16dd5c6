"""An OTLP/HTTP collector for tests: the services export spans and metrics here, kept in memory.

It speaks what Jaeger's OTLP port speaks (protobuf over HTTP), so the
services run exactly as in the compose stack; only the receiving end is ours.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.http import QuietHandler, serving


@dataclass(frozen=True)
class SpanRecord:
    """One finished span as exported."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    attributes: dict[str, Any]
    start_ns: int = 0
    end_ns: int = 0

    @property
    def duration_ms(self) -> float:
        """How long the span lasted."""
        return (self.end_ns - self.start_ns) / 1e6


@dataclass(frozen=True)
class PointRecord:
    """One data point of a metric: a gauge's or sum's value, or a histogram's count."""

    metric: str
    service: str
    attributes: dict[str, Any]
    value: float


@dataclass
class Collector:
    """Every span received so far, by span id, and every metric data point."""

    endpoint: str = ""
    spans: dict[str, SpanRecord] = field(default_factory=dict)
    points: list[PointRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: ExportTraceServiceRequest) -> None:
        """Keep the spans of one export request."""
        with self.lock:
            for resource_spans in request.resource_spans:
                service = _service(resource_spans.resource)
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        record = SpanRecord(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            name=span.name,
                            service=service,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            start_ns=span.start_time_unix_nano,
                            end_ns=span.end_time_unix_nano,
                        )
                        self.spans[record.span_id] = record

    def add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        """Keep the data points of one export request."""
        with self.lock:
            for resource_metrics in request.resource_metrics:
                service = _service(resource_metrics.resource)
                for scope in resource_metrics.scope_metrics:
                    for metric in scope.metrics:
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            self.points.append(
                                PointRecord(
                                    metric=metric.name,
                                    service=service,
                                    attributes={a.key: _value(a.value) for a in point.attributes},
                                    value=_point_value(point),
                                )
                            )

    def metric(self, name: str) -> list[PointRecord]:
        """The data points of the metric ``name`` received so far."""
        with self.lock:
            return [p for p in self.points if p.metric == name]

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """The spans of one trace."""
        with self.lock:
            return [s for s in self.spans.values() if s.trace_id == trace_id]

    def find(self, match: Callable[[SpanRecord], bool]) -> list[SpanRecord]:
        """The spans for which ``match`` is true."""
        with self.lock:
            return [s for s in self.spans.values() if match(s)]

    def ancestors(self, span: SpanRecord) -> list[SpanRecord]:
        """The span's parent, grandparent, ... up to the root (as far as they arrived)."""
        chain = []
        with self.lock:
            while span.parent_id and (parent := self.spans.get(span.parent_id)) is not None:
                chain.append(parent)
                span = parent
        return chain

    def wait_until(self, ready: Callable[[], bool], *, timeout: float) -> None:
        """Poll ``ready`` until it is true; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError("what was awaited never arrived")
            time.sleep(0.1)


def _service(resource: Any) -> str:
    found = (a.value.string_value for a in resource.attributes if a.key == "service.name")
    return next(found, "")


def _point_value(point: Any) -> float:
    if hasattr(point, "count") and not hasattr(point, "as_int"):
        return float(point.count)  # a histogram
    kind = point.WhichOneof("value")
    return float(getattr(point, kind)) if kind else 0.0


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@contextmanager
def otlp_collector() -> Iterator[Collector]:
    """Serve a ``Collector`` on a free port; ``endpoint`` is its OTLP/HTTP base URL."""
    collector = Collector()

    class Receive(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path == "/v1/traces":
                collector.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
            else:
                collector.add_metrics(ExportMetricsServiceRequest.FromString(body))
                reply = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    with serving(Receive) as collector.endpoint:
        yield collector
