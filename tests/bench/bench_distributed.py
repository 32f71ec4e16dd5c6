"""Messages per second through the distributed stack: HTTP in, NATS between five services.

Gateway, two runtime replicas, memory (SQLite), embedding and evaluator run
as processes on a bundled nats-server; the model is the fake OpenAI server,
which answers at once, so the figure is the services and the bus, not a
language model. Clients send concurrently to 20 rooms (a room takes one turn
at a time).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from shared.natsserver import NatsServer, free_port, wait_for_port
from shared.processes import service_process
from tests.fake_openai import fake_openai_server
from tests.scripted import plan

MESSAGES = 300
CONCURRENCY = int(os.environ.get("BENCH_CLIENTS", "8"))
ROOMS = 20


async def send_all(base_url: str) -> tuple[float, list[float]]:
    """Send every message with ``CONCURRENCY`` in flight; return the elapsed time and latencies."""
    latencies: list[float] = []
    pending = iter(range(MESSAGES))

    async def client(http: httpx.AsyncClient) -> None:
        for i in pending:
            body = {
                "entity_id": "u",
                "room_id": f"room-{i % ROOMS}",
                "content": {"text": f"hi {i}"},
            }
            started = time.perf_counter()
            reply = await http.post("/v1/agents/eliza/messages", json=body)
            reply.raise_for_status()
            latencies.append(time.perf_counter() - started)

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        # Warm up until both replicas host the agent (each starts it on first use).
        answered = 0
        for i in range(200):
            body = {"entity_id": "u", "room_id": f"warm-{i}", "content": {"text": "hello"}}
            answered += (await http.post("/v1/agents/eliza/messages", json=body)).is_success
            if answered >= 6:
                break
            await asyncio.sleep(0.1)
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="elizamesh-bench-"))
    character = folder / "eliza.json"
    character.write_text(json.dumps({"name": "Eliza", "id": "eliza"}))
    port = free_port()
    with NatsServer() as nats, fake_openai_server() as fake, ExitStack() as services:
        fake.default = plan("Hello from the model!")
        env = {
            "NATS_URL": nats.url,
            "DATABASE_URL": f"sqlite:///{folder / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_API_KEY": "sk-bench",
            "API_PORT": str(port),
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
            "TASK_TICK_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
        }
        for name in ("memory", "embedding", "evaluator", "runtime", "runtime", "gateway"):
            services.enter_context(service_process(name, env))
        wait_for_port("127.0.0.1", port, timeout=60)
        elapsed, latencies = asyncio.run(send_all(f"http://127.0.0.1:{port}"))
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(
        f"distributed: {MESSAGES / elapsed:.1f} messages/s, p50 {p50:.1f} ms, p95 {p95:.1f} ms"
        f" (HTTP -> gateway -> 2 runtimes -> memory on SQLite, {CONCURRENCY} clients,"
        " instant model)"
    )


if __name__ == "__main__":
    main()
