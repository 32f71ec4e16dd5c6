"""``python -m services.runtime``: run the runtime service until SIGINT/SIGTERM."""

import asyncio

from services.runtime.main import create_app
from services.runtime.settings import RuntimeSettings
from shared.logs import configure_logging

settings = RuntimeSettings.load()
configure_logging(settings.log_level)
asyncio.run(create_app(settings).run())
