"""Process-wide logging: one JSON object per line, with the trace it belongs to.

``LOG_LEVEL`` sets the threshold. Each line carries ``trace_id`` and
``span_id`` when it is written inside a span, so a log line found in a log
store leads to the message's trace in Jaeger, and back.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

# color_message: uvicorn's copy of the message with ANSI colour codes, for terminals.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line: time, level, logger, message, trace, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Return ``record`` as JSON (``extra=`` fields included)."""
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        line.update(
            (k, v)
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    """Send log records of ``level`` and above to stderr, one JSON line each."""
    if level.upper() not in logging.getLevelNamesMapping():
        raise ValueError(
            f"invalid LOG_LEVEL {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
