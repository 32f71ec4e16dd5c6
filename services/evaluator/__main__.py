"""``python -m services.evaluator``: run evaluators after each turn until SIGINT/SIGTERM."""

import asyncio

from services.evaluator.main import create_app
from shared.config import Settings
from shared.logs import configure_logging

settings = Settings.from_env()
configure_logging(settings.log_level)
asyncio.run(create_app(settings).run())
