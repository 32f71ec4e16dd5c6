"""Log lines are JSON objects that lead to their trace."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared.logs import JsonFormatter, configure_logging


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("elizamesh.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger, out
    logger.removeHandler(handler)


def records(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_written_in_a_span_carries_its_trace_and_span_ids(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("turn") as span:
        logger.info("turn %s done", "r-1", extra={"agent_id": "eliza"})
    [line] = records(out)
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert line["message"] == "turn r-1 done"
    assert line["level"] == "INFO"
    assert line["logger"] == "elizamesh.test-logs"
    assert line["agent_id"] == "eliza"  # extras become fields


def test_a_line_outside_any_span_has_no_trace_and_an_exception_is_kept(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logger.exception("failed")
    [line] = records(out)
    assert "trace_id" not in line
    assert "ZeroDivisionError" in str(line["exception"])


def test_an_unknown_log_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="LOG_LEVEL 'LOUD'"):
        configure_logging("LOUD")
