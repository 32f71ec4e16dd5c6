"""A remote provider service: tells every agent of the stack the time, over NATS.

Run it next to a stack (``python -m examples.clock_provider``) and list it in
the runtime's ``REMOTE_PROVIDERS=CLOCK``: each turn then asks
``<ns>.provider.CLOCK.get`` and the answer goes into the agent's state, the
same as a provider written in-process. ``CLOCK_ZONE`` picks the time zone
(default UTC); ``CLOCK_SAYS`` adds a line of its own (the tests use it to
find the provider's words in the prompt).
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from zoneinfo import ZoneInfo

from faststream import FastStream

from contracts.providers import GetProvider, ProviderOutput
from shared.bus import create_broker, service_app
from shared.config import Settings
from shared.health import no_consumers, serve_health
from shared.logs import configure_logging
from shared.telemetry import bus_telemetry, setup_telemetry

SERVICE = "clock-provider"


def create_app(settings: Settings) -> FastStream:
    """Return the provider service: answers ``<ns>.provider.CLOCK.get`` (in a queue group)."""
    broker = create_broker(
        settings.nats_url, name=SERVICE, middlewares=[bus_telemetry(setup_telemetry(SERVICE))]
    )
    zone = ZoneInfo(os.environ.get("CLOCK_ZONE", "UTC"))
    extra = os.environ.get("CLOCK_SAYS", "")

    @broker.subscriber(settings.subjects.provider_get("CLOCK"), queue="clock")
    async def tell_the_time(request: GetProvider) -> ProviderOutput:
        """Say what time it is where the clock is set."""
        now = datetime.now(zone)
        text = f"# Time\nIt is {now:%A %d %B %Y, %H:%M} ({zone.key}) for {request.agent_name}."
        return ProviderOutput(
            text=f"{text}\n{extra}".strip(), values={"now": now.isoformat(), "zone": zone.key}
        )

    serve_health(broker, settings.subjects, SERVICE, no_consumers)
    return service_app(broker)


if __name__ == "__main__":
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    asyncio.run(create_app(settings).run())
