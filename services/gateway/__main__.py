"""``python -m services.gateway``: serve HTTP on ``API_HOST:API_PORT`` until SIGINT/SIGTERM."""

import uvicorn

from services.gateway.main import create_app
from services.gateway.server import server_config
from shared.config import GatewaySettings
from shared.logs import configure_logging

settings = GatewaySettings.load()
configure_logging(settings.log_level)
config = server_config(
    create_app(settings),
    host=settings.api_host,
    port=settings.api_port,
    read_timeout=settings.gateway_read_timeout,
    log_level=settings.log_level.lower(),
    log_config=None,  # our JSON lines (shared.logs), not uvicorn's own format
)
uvicorn.Server(config).run()
