"""The memory service as its own process: data written through it outlives a restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from contracts import Content, Subjects
from contracts.records import Agent, Memory
from shared.bus import create_broker
from shared.errors import Unavailable
from shared.processes import service_process
from shared.storage.client import memory_client

pytestmark = pytest.mark.e2e


async def until_served(subject: str, nats_url: str) -> None:
    """Wait until some process answers on ``subject`` (the service finished starting)."""
    nc = await nats.connect(nats_url)
    try:
        for _ in range(300):
            try:
                await nc.request(subject, b"{}", timeout=1)
            except nats.errors.NoRespondersError:
                await asyncio.sleep(0.05)
            else:
                return
        raise TimeoutError(f"nobody serves {subject}")
    finally:
        await nc.close()


async def test_memories_survive_a_restart_of_the_memory_service(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    env = {
        "NATS_URL": nats_url,
        "ELIZA_NS": subjects.namespace,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'memory.db'}",
    }
    probe = subjects.memory_operation("get_agents")
    broker = create_broker(nats_url, name="e2e-memory-client")
    async with broker:
        await broker.connect()
        db = memory_client(broker, agent_id="agent-1", subjects=subjects, timeout=5)
        near = Memory(entity_id="u", room_id="r", content=Content(text="near"), embedding=[1, 0])
        far = Memory(entity_id="u", room_id="r", content=Content(text="far"), embedding=[0, 1])

        with service_process("memory", env, log_dir=tmp_path) as first:
            await until_served(probe, nats_url)
            await db.create_agent(Agent(id="agent-1", name="Durable"))
            await db.create_memories([near, far], "messages")
        assert first.returncode == 0, (tmp_path / "memory.log").read_text()

        with pytest.raises(Unavailable):
            await db.get_memory_by_id(near.id)

        with service_process("memory", env, log_dir=tmp_path):
            await until_served(probe, nats_url)
            found = await db.search_memories(table_name="messages", embedding=[0.9, 0.1], count=1)
            assert [m.content.text for m in found] == ["near"]
            assert await db.count_memories("r") == 2
