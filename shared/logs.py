"""Process-wide logging set-up, driven by ``LOG_LEVEL``."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    """Send log records of ``level`` and above to stderr, one line each."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
