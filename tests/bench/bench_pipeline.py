"""Messages per second through the embedded pipeline with an instant model (SQLite).

The model answers at once, so the figure measures the runtime (storage,
state composition, events), not a language model.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time

from elizamesh import AgentRuntime, Character, Content, Memory
from tests.scripted import ScriptedModel

MESSAGES = 300


async def main() -> None:
    runtime = AgentRuntime(
        character=Character(name="bench"),
        plugins=[ScriptedModel().plugin()],
        settings={
            "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/bench.db",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    await runtime.initialize()
    assert runtime.message_service is not None
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(MESSAGES):
        message = Memory(
            entity_id="user", room_id=f"room-{i % 10}", content=Content(text=f"hello {i}")
        )
        t0 = time.perf_counter()
        await runtime.message_service.handle_message(runtime, message)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    rate = MESSAGES / elapsed
    print(
        f"pipeline: {rate:.1f} messages/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms"
        " (SQLite, instant model)"
    )
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main())
