"""``python -m services.gateway``: serve HTTP on ``API_HOST:API_PORT`` until SIGINT/SIGTERM."""

import uvicorn

from services.gateway.main import create_app
from shared.config import Settings
from shared.logs import configure_logging

settings = Settings.from_env()
configure_logging(settings.log_level)
uvicorn.run(
    create_app(settings),
    host=settings.api_host,
    port=settings.api_port,
    log_level=settings.log_level.lower(),
    log_config=None,  # our JSON lines (shared.logs), not uvicorn's own format
)
