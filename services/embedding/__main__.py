"""``python -m services.embedding``: drain the embedding queue until SIGINT/SIGTERM."""

import asyncio

from services.embedding.main import create_app
from shared.config import EmbeddingSettings
from shared.logs import configure_logging

settings = EmbeddingSettings.load()
configure_logging(settings.log_level)
asyncio.run(create_app(settings).run())
