"""``python -m services.evaluator``: run evaluators after each turn until SIGINT/SIGTERM."""

import asyncio

from services.evaluator.main import create_app
from shared.config import EvaluatorSettings
from shared.logs import configure_logging

settings = EvaluatorSettings.load()
configure_logging(settings.log_level)
asyncio.run(create_app(settings).run())
