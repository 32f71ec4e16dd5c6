"""A process killed with ``kill -9`` mid-backlog loses no vector: a restart embeds the rest.

The child process is an embedded agent (SQLite or Postgres) whose embedding
model takes 0.5 s a text; it stores 6 turns (12 memories to embed) and waits.
Once some vectors are stored and some are not, it gets SIGKILL: nothing of
its queue is saved on the way out. A new runtime on the same database finds
the memories without a vector at start and embeds them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from shared.agent.character import Character
from shared.agent.embedding_queue import EmbeddingQueue
from shared.agent.runtime import AgentRuntime
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel, plan

TURNS = 6
ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import asyncio, sys
from contracts import Content
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Plugin
from tests.scripted import ScriptedModel, embed, plan

async def slow_embed(runtime, params):
    await asyncio.sleep(0.5)
    return await embed(runtime, params)

async def main(url, name, turns):
    runtime = AgentRuntime(
        character=Character(name=name),
        plugins=[
            ScriptedModel(default=plan("noted")).plugin(),
            Plugin(name="slow-embeddings", models={"TEXT_EMBEDDING": slow_embed}),
        ],
        settings={"DATABASE_URL": url, "TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    for n in range(turns):
        message = Memory(entity_id="u1", room_id="r1", content=Content(text=f"fact number {n}"))
        await runtime.message_service.handle_message(runtime, message)
    print(runtime.agent_id, flush=True)
    await asyncio.Event().wait()  # embedding in the background until killed

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'agent.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


async def vectors(storage: SqlAdapter) -> tuple[int, int]:
    """How many of the agent's messages have a vector, and how many have none."""
    stored = await storage.get_memories(table_name="messages", include_embeddings=True)
    return sum(m.embedding is not None for m in stored), sum(m.embedding is None for m in stored)


@pytest.mark.timeout(180)
async def test_a_backlog_killed_with_sigkill_is_embedded_after_a_restart(
    database_url: str,
) -> None:
    name = f"Crasher-{uuid.uuid4().hex[:8]}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        database_url,
        name,
        str(TURNS),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert child.stdout is not None
        agent_id = (await asyncio.wait_for(child.stdout.readline(), timeout=120)).decode().strip()
        assert agent_id, "the child process exited before storing its turns"
        storage = SqlAdapter.from_url(database_url, agent_id)
        try:
            done, left = await vectors(storage)
            for _ in range(600):  # mid-backlog: some vectors stored, some not
                if done > 0:
                    break
                await asyncio.sleep(0.05)
                done, left = await vectors(storage)
            os.kill(child.pid, signal.SIGKILL)
            assert await child.wait() == -signal.SIGKILL
            done, left = await vectors(storage)
            assert done > 0
            assert left > 0, "the backlog was drained before the kill: make the model slower"
            print(f"\nkill -9 mid-backlog: {done} memories had a vector, {left} had none")
        finally:
            await storage.close()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()

    restarted = AgentRuntime(
        character=Character(name=name),
        plugins=[ScriptedModel(default=plan("noted")).plugin(embeddings=True)],
        settings={"DATABASE_URL": database_url, "TASK_TICK_SECONDS": "3600"},
    )
    await restarted.initialize()
    try:
        assert restarted.agent_id == agent_id
        backlog = restarted.embedding_queue
        assert isinstance(backlog, EmbeddingQueue)
        await backlog.drained()
        stored = await restarted.get_memories(table_name="messages", include_embeddings=True)
        assert len(stored) == 2 * TURNS
        assert [m.content.text for m in stored if m.embedding is None] == []
        assert await restarted.get_memories_without_embeddings() == []
    finally:
        await restarted.delete_agent(restarted.agent_id)
        await restarted.stop()
