"""Runs stay alive: a live turn's heartbeats keep its followers waiting, silence fails them fast.

A real nats-server; the runtime host and the memory service in this process,
each on its own connection; a scripted model held back by a gate, so a turn
lasts many times the followers' timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import RunChunk, RunEnded, RunHeartbeat, RunResponse
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.bus import create_broker, ensure_stream, start_serving, subscriptions_registered
from shared.client import ElizaOSClient
from shared.config import Settings
from shared.errors import Unavailable
from shared.hosting import AgentHost, HostedAgents
from shared.runs import (
    HEARTBEAT_MISSES,
    follow_kept_run,
    follow_run,
    heartbeat,
    heartbeat_interval,
    start_run,
)
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel, plan

AGENT = "eliza-beat"
BEAT = heartbeat_interval()
"""Seconds between the runtime's heartbeats (``RUN_HEARTBEAT_SECONDS``, 2 by default)."""
PATIENCE = 1.0
"""The followers' timeout: the gated turn lasts several times longer."""
DYING_BEAT = 0.2
"""The heartbeat interval of the replica that dies (a short one keeps the test short)."""


@dataclass
class Stack:
    subjects: Subjects
    caller: NatsBroker
    model: ScriptedModel
    nats_url: str

    def message(self, text: str, room: str) -> HandleMessage:
        return HandleMessage(entity_id="user", room_id=room, content=Content(text=text))


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings.from_env(
        {"NATS_URL": nats_url, "ELIZA_NS": subjects.namespace, "DATABASE_URL": database_url}
    )
    model = ScriptedModel(gate=asyncio.Event())
    memory = memory_broker(settings, storage)
    runtime_broker = create_broker(nats_url, name="runtime-under-test")
    caller = create_broker(nats_url, name="caller")
    host = AgentHost(runtime_broker, subjects, HostedAgents(plugins=()))
    try:
        async with memory, runtime_broker, caller:
            await start_serving(memory)
            await runtime_broker.start()
            await caller.connect()
            await host.open()
            await host.add(
                Character(name="Eliza", id=AGENT, bio=["A patient agent."]),
                [model.plugin(embeddings=True)],
                {"TASK_TICK_SECONDS": "3600"},
            )
            for subscriber in attach(runtime_broker, subjects, host).values():
                await subscriber.start()
            await subscriptions_registered(runtime_broker.config.connection_state.connection)
            try:
                yield Stack(subjects, caller, model, nats_url)
            finally:
                assert model.gate is not None
                model.gate.set()
                await host.stop()
                js = caller.config.connection_state.stream
                for info in await js.streams_info():
                    if info.config.name and info.config.name.startswith(subjects.namespace.upper()):
                        await js.delete_stream(info.config.name)
    finally:
        await storage.close()


async def open_gate_after(model: ScriptedModel, seconds: float) -> None:
    await model.wait_for_prompts("TEXT_LARGE", 1)
    await asyncio.sleep(seconds)
    assert model.gate is not None
    model.gate.set()


async def test_a_follower_waits_for_a_turn_many_times_longer_than_its_timeout(
    stack: Stack,
) -> None:
    stack.model.default = plan("worth the wait")
    opener = asyncio.create_task(open_gate_after(stack.model, BEAT * 2.5))
    events = [
        event
        async for event, _raw in follow_run(
            stack.caller,
            stack.subjects,
            AGENT,
            stack.message("are you there?", "room-slow"),
            timeout=PATIENCE,
        )
    ]
    await opener
    ended = events[-1]
    assert isinstance(ended, RunEnded)
    assert ended.status == "completed"
    assert [e.content.text for e in events if isinstance(e, RunResponse)] == ["worth the wait"]


async def test_a_follower_of_a_message_queued_behind_a_slow_turn_waits_for_its_answer(
    stack: Stack,
) -> None:
    stack.model.default = plan("in turn")
    first = await start_run(
        stack.caller, stack.subjects, AGENT, stack.message("first", "room-queue"), timeout=60
    )
    opener = asyncio.create_task(open_gate_after(stack.model, BEAT * 2.5))
    second = await start_run(
        stack.caller,
        stack.subjects,
        AGENT,
        stack.message("second", "room-queue"),
        timeout=PATIENCE,
    )
    seen = [event async for event, _raw in second.messages()]
    await opener
    first_ended = [e async for e, _raw in first.events()][-1]
    assert isinstance(first_ended, RunEnded)
    assert first_ended.status == "completed"
    beats = [e for e in seen if isinstance(e, RunHeartbeat)]
    assert len(beats) >= 2  # beaten while it waited for the room, then while it ran
    assert isinstance(seen[-1], RunEnded)
    assert seen[-1].status == "completed"


async def test_the_live_turn_publishes_heartbeats_with_their_interval_on_its_run(
    stack: Stack,
) -> None:
    stack.model.default = plan("beating")
    opener = asyncio.create_task(open_gate_after(stack.model, BEAT * 2.5))
    run = await start_run(
        stack.caller,
        stack.subjects,
        AGENT,
        stack.message("hello", "room-beats"),
        timeout=PATIENCE,
    )
    seen = [event async for event, _raw in run.messages()]
    await opener
    beats = [e for e in seen if isinstance(e, RunHeartbeat)]
    assert len(beats) >= 2  # the first at once, then one per interval while the model waits
    assert {(b.run_id, b.interval) for b in beats} == {(run.run_id, BEAT)}
    assert isinstance(seen[-1], RunEnded)


async def test_elizaos_client_callbacks_get_the_reply_of_a_turn_slower_than_its_timeout(
    stack: Stack,
) -> None:
    stack.model.default = plan("slow but sure")
    got: list[tuple[str, Any]] = []
    done = asyncio.Event()

    async def on_response(content: Content) -> None:
        got.append(("response", content.text))

    async def on_error(exc: BaseException) -> None:
        got.append(("error", exc))

    async def on_complete() -> None:
        done.set()

    opener = asyncio.create_task(open_gate_after(stack.model, BEAT * 2.5))
    async with ElizaOSClient(
        stack.nats_url, namespace=stack.subjects.namespace, timeout=PATIENCE
    ) as client:
        ack = await client.handle_message(
            AGENT,
            stack.message("take your time", "room-client"),
            on_response=on_response,
            on_error=on_error,
            on_complete=on_complete,
        )
        assert ack.accepted
        await asyncio.wait_for(done.wait(), timeout=30)
    await opener
    assert got == [("response", "slow but sure")]


async def test_a_late_follower_replays_the_kept_run_from_its_first_chunk(stack: Stack) -> None:
    stack.model.default = plan("kept for later")
    assert stack.model.gate is not None
    stack.model.gate.set()
    live = [
        event
        async for event, _raw in follow_run(
            stack.caller, stack.subjects, AGENT, stack.message("hi", "room-late"), timeout=10
        )
    ]
    ended = live[-1]
    assert isinstance(ended, RunEnded)

    late = await follow_kept_run(stack.caller, stack.subjects, ended.run_id, timeout=10)
    replayed = [event async for event, _raw in late.events()]
    async with ElizaOSClient(stack.nats_url, namespace=stack.subjects.namespace) as client:
        through_the_client = [event async for event in client.run_events(ended.run_id)]

    assert replayed == live
    assert through_the_client == live
    assert any(isinstance(e, RunChunk) for e in replayed)


async def drain(events: AsyncIterator[Any]) -> None:
    async for _event in events:
        pass


async def test_a_run_whose_heartbeats_stop_fails_fast_naming_the_run(
    nats_url: str, subjects: Subjects
) -> None:
    """A replica that dies mid-turn: it accepted the message and beat, then fell silent."""
    broker = create_broker(nats_url, name="dying-replica")
    caller = create_broker(nats_url, name="caller")
    async with broker, caller:
        await broker.connect()
        await caller.connect()
        await ensure_stream(broker, subjects.runs_stream, [subjects.runs_template], max_age=60)
        connection = broker.config.connection_state.connection
        dying: list[asyncio.Task[None]] = []

        async def beat_then_die(request: HandleMessage) -> None:
            async with heartbeat(broker, subjects, request, interval=DYING_BEAT):
                await asyncio.sleep(DYING_BEAT * 4)

        async def accept(msg: Msg) -> None:
            request = msgspec.json.decode(msg.data, type=HandleMessage)
            ack = HandleMessageResult(
                message_id=request.message_id,
                agent_id=AGENT,
                did_respond=False,
                run_id=request.run_id,
                accepted=True,
                status="accepted",
            )
            await msg.respond(msgspec.json.encode(ack))
            dying.append(asyncio.create_task(beat_then_die(request)))

        await connection.subscribe(subjects.message_handle(AGENT), cb=accept)
        await subscriptions_registered(connection)
        run = await start_run(
            caller,
            subjects,
            AGENT,
            HandleMessage(entity_id="u", room_id="r", content=Content(text="hi")),
            timeout=600,  # far longer than the silence it takes to give up
        )
        with pytest.raises(Unavailable, match=run.run_id):
            await asyncio.wait_for(drain(run.events()), timeout=60)
        await asyncio.gather(*dying)
        js = caller.config.connection_state.stream
        await js.delete_stream(subjects.runs_stream)
    assert HEARTBEAT_MISSES * DYING_BEAT < 600
