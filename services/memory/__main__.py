"""``python -m services.memory``: serve the database over NATS until SIGINT/SIGTERM."""

import asyncio

from services.memory.main import create_app
from shared.config import DatabaseUnavailableError, MemorySettings
from shared.logs import configure_logging

settings = MemorySettings.load()
configure_logging(settings.log_level)
try:
    asyncio.run(create_app(settings).run())
except DatabaseUnavailableError as exc:  # one line naming DATABASE_URL, not a traceback
    raise SystemExit(str(exc)) from None
