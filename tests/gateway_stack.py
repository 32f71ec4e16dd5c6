"""The gateway in front of a real runtime and memory service, in one test's event loop.

Each part has its own NATS connection on a real nats-server, as in production:
the memory service (SQLite in a temp dir), one runtime replica hosting the
agent ``eliza`` on a scripted model, and the gateway served by uvicorn.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from contracts import Subjects
from services.gateway.main import create_app
from services.gateway.server import server_config
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.bus import create_broker, start_serving
from shared.config import Settings
from shared.health import no_consumers, serve_health
from shared.hosting import AgentHost, HostedAgents
from shared.natsserver import free_port, wait_for_port
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel

AGENT = "eliza"


@dataclass
class GatewayStack:
    """What a test talks to: the gateway's base URL and the model the agent uses."""

    url: str
    model: ScriptedModel
    subjects: Subjects


@asynccontextmanager
async def gateway_stack(
    nats_url: str,
    subjects: Subjects,
    tmp_path: Path,
    model: ScriptedModel,
    *,
    api_keys: str = "",
    request_timeout: float = 10,
    secret_key: str | None = None,
    **gateway: Any,
) -> AsyncIterator[GatewayStack]:
    """Memory service, a runtime hosting ``eliza`` on ``model``, and the gateway, until exit.

    ``api_keys``: the gateway's ``GATEWAY_API_KEYS`` (none: open); ``secret_key``: the
    runtime's ``ELIZAMESH_SECRET_KEY`` (none: agents with secrets are refused);
    ``gateway``: more settings of the gateway (``gateway_keepalive=0.2``, ...).
    """
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(
        nats_url=nats_url,
        eliza_ns=subjects.namespace,
        database_url=database_url,
        request_timeout=request_timeout,
        gateway_api_keys=api_keys,
        **gateway,
    )
    memory = memory_broker(settings, storage)
    runtime_broker = create_broker(nats_url, name="runtime-under-test")
    host = AgentHost(runtime_broker, subjects, HostedAgents(plugins=(), secret_key=secret_key))
    serve_health(runtime_broker, subjects, "runtime", no_consumers)  # so /v1/ready says ready
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        server_config(app, host="127.0.0.1", port=port, read_timeout=10, log_level="warning")
    )
    try:
        async with memory, runtime_broker:
            await start_serving(memory)
            await runtime_broker.start()
            await host.open()
            await host.add(
                Character(name="Eliza", id=AGENT, bio=["A helpful agent."]),
                [model.plugin(embeddings=True)],
                {"TASK_TICK_SECONDS": "3600"},
            )
            for subscriber in attach(runtime_broker, subjects, host).values():
                await subscriber.start()
            serving = asyncio.create_task(server.serve())
            await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
            try:
                yield GatewayStack(f"http://127.0.0.1:{port}", model, subjects)
            finally:
                server.should_exit = True
                await serving
                await host.stop()
                js = runtime_broker.config.connection_state.stream
                for info in await js.streams_info():
                    name = info.config.name or ""
                    if name.startswith(subjects.namespace.upper()):
                        await js.delete_stream(name)
    finally:
        await storage.close()
