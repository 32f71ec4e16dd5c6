"""A remote provider service: tells every agent of the stack the time, over NATS.

Run it next to a stack (``python -m examples.clock_provider``) and list it in
the runtime's ``REMOTE_PROVIDERS=CLOCK``: each turn then asks
``<ns>.provider.CLOCK.get`` and the answer goes into the agent's state, the
same as a provider written in-process. ``CLOCK_ZONE`` picks the time zone
(default UTC); ``CLOCK_SAYS`` adds a line of its own (the tests use it to
find the provider's words in the prompt). It imports only ``elizamesh``, the
public package: ``elizamesh.serve_provider`` connects (``NATS_URL``,
``ELIZA_NS``), logs, traces and answers health checks.
"""

from __future__ import annotations

import os
from datetime import datetime
from zoneinfo import ZoneInfo

import elizamesh
from elizamesh import GetProvider, ProviderOutput

ZONE = ZoneInfo(os.environ.get("CLOCK_ZONE", "UTC"))
SAYS = os.environ.get("CLOCK_SAYS", "")


def tell_the_time(request: GetProvider) -> ProviderOutput:
    """Say what time it is where the clock is set."""
    now = datetime.now(ZONE)
    text = f"# Time\nIt is {now:%A %d %B %Y, %H:%M} ({ZONE.key}) for {request.agent_name}."
    return ProviderOutput(
        text=f"{text}\n{SAYS}".strip(), values={"now": now.isoformat(), "zone": ZONE.key}
    )


if __name__ == "__main__":
    elizamesh.serve_provider("CLOCK", tell_the_time, service="clock-provider")
