"""With nothing exporting traces, spans cost next to nothing but keep their trace ids."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.logs import JsonFormatter
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


def test_uvicorns_coloured_copy_of_the_message_stays_out_of_the_log_line() -> None:
    record = logging.makeLogRecord(
        {
            "name": "uvicorn.error",
            "levelname": "INFO",
            "msg": "Started server process [%d]",
            "args": (7,),
            "color_message": "Started server process [\x1b[36m%d\x1b[0m]",
        }
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "Started server process [7]"
    assert "color_message" not in line
    assert "\x1b" not in json.dumps(line)


def test_console_spans_and_log_lines_are_each_one_json_line() -> None:
    script = (
        "import logging\n"
        "from shared.logs import configure_logging\n"
        "from shared.telemetry import setup_telemetry, span\n"
        "configure_logging('INFO')\n"
        "setup_telemetry('console-test')\n"
        "for turn in range(3):\n"
        "    with span('turn', index=turn):\n"
        "        logging.getLogger('elizamesh.test').info('turn %d', turn)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=True,
        timeout=60,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["name"] for line in lines if "context" in line] == ["turn", "turn", "turn"]
    assert [line["message"] for line in lines if "level" in line] == ["turn 0", "turn 1", "turn 2"]
