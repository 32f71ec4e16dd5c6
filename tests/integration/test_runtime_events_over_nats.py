"""The runtime's events in the runtime service: storage through the memory service on a
real nats-server, every event on the events stream with the ids to correlate it.

Deleting a message, clearing a channel, a control message, a new connection and a
turn in a voice room, all through NATS, each seen on ``<ns>.event.<agent>.<type>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.events import AgentEventOccurred
from contracts.records import Memory
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.bus import create_broker, request, start_serving
from shared.config import Settings
from shared.hosting import AgentHost, HostedAgents
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel

AGENT = "eliza-events"


@dataclass
class Stack:
    subjects: Subjects
    runtime: AgentRuntime
    host: AgentHost
    raw: Client

    async def send(
        self, text: str, room: str, channel_type: str | None = None
    ) -> HandleMessageResult:
        message = HandleMessage(
            entity_id="ann", room_id=room, content=Content(text=text, channel_type=channel_type)
        )
        return await request(
            self.host.broker,
            self.subjects.message_handle(AGENT),
            message,
            HandleMessageResult,
            timeout=20,
        )

    async def events(self) -> list[AgentEventOccurred]:
        """Every event on the stream so far (read until it stays quiet for a second)."""
        await self.host.events.flush(timeout=10)
        js = self.raw.jetstream()
        subscription = await js.subscribe(
            self.subjects.events_template,
            stream=self.subjects.events_stream,
            ordered_consumer=True,
        )
        decoder = msgspec.json.Decoder(AgentEventOccurred)
        seen: list[AgentEventOccurred] = []
        try:
            while True:
                msg = await subscription.next_msg(timeout=1)
                seen.append(decoder.decode(msg.data))
        except TimeoutError:
            pass
        finally:
            await subscription.unsubscribe()
        return seen


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[Stack]:
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    memory = memory_broker(settings, storage)
    runtime_broker = create_broker(nats_url, name="runtime-events-under-test")
    host = AgentHost(runtime_broker, subjects, HostedAgents(plugins=()))
    raw = await nats.connect(nats_url)
    try:
        async with memory, runtime_broker:
            await start_serving(memory)
            await runtime_broker.start()
            await host.open()
            runtime = await host.add(
                Character(name="Eliza", id=AGENT),
                [ScriptedModel().plugin()],
                {"TASK_TICK_SECONDS": "3600"},
            )
            for subscriber in attach(runtime_broker, subjects, host).values():
                await subscriber.start()
            try:
                yield Stack(subjects, runtime, host, raw)
            finally:
                await host.stop()
                js = raw.jetstream()
                for info in await js.streams_info():
                    name = info.config.name or ""
                    if name.startswith(subjects.namespace.upper()):
                        await js.delete_stream(name)
    finally:
        await raw.close()
        await storage.close()


async def test_deleting_clearing_and_control_messages_reach_the_bus_with_their_ids(
    stack: Stack,
) -> None:
    first = await stack.send("one", "chat-42")
    await stack.send("two", "chat-42")
    runtime = stack.runtime
    room_id = "chat-42"
    assert first.status == "completed"

    stored = await runtime.get_memory_by_id(first.message_id)
    assert stored is not None
    await runtime.message_service.delete_message(runtime, stored)
    assert await runtime.get_memory_by_id(first.message_id) is None
    left = await runtime.count_memories(room_id, table_name="messages")
    assert await runtime.message_service.clear_channel(runtime, "chat-42", "-100042") == left
    assert await runtime.count_memories(room_id, table_name="messages") == 0
    await runtime.send_control_message("chat-42", "disable_input", target="composer")

    events = {e.event_type: e for e in await stack.events()}
    deleted = events["message.deleted"]
    assert (deleted.agent_id, deleted.message_id, deleted.room_id) == (
        AGENT,
        first.message_id,
        room_id,
    )
    cleared = events["channel.cleared"]
    assert (cleared.room_id, cleared.data["channel_id"], cleared.data["deleted"]) == (
        room_id,
        "-100042",
        left,
    )
    control = events["control.message"]
    assert (control.room_id, control.data["action"], control.data["target"]) == (
        room_id,
        "disable_input",
        "composer",
    )


async def test_a_new_connection_and_a_voice_turn_are_announced_on_the_bus(
    stack: Stack,
) -> None:
    runtime = stack.runtime
    await runtime.ensure_connection(
        entity_id="bob", room_id="general", world_id="guild", source="discord"
    )
    spoken = await stack.send("can you hear me", "phone", channel_type="VOICE_DM")
    assert spoken.did_respond

    events = await stack.events()
    # The first event of each type: the turn in the new room "phone" announces it too.
    by_type = {e.event_type: e for e in reversed(events)}
    assert by_type["world.joined"].data["world_id"] == "guild"
    assert by_type["room.joined"].room_id == "general"
    assert (by_type["entity.joined"].data["entity_id"], by_type["entity.joined"].room_id) == (
        "bob",
        "general",
    )
    heard = by_type["voice.message_received"]
    assert (heard.run_id, heard.message_id) == (spoken.run_id, spoken.message_id)
    said = by_type["voice.message_sent"]
    assert said.run_id == spoken.run_id
    assert said.message_id == spoken.response_messages[0].id
    assert said.data["text"] == spoken.response_content.text


async def test_a_reaction_a_connector_reports_is_stored_through_the_memory_service(
    stack: Stack,
) -> None:
    runtime = stack.runtime
    await runtime.ensure_connection(entity_id="ann", room_id="feed", source="x")
    reaction = Memory(entity_id="ann", room_id="feed", content=Content(text="*Added 👍*"))
    await runtime.emit_event("REACTION_RECEIVED", {"message": reaction, "source": "x"})
    stored = await runtime.get_memories(table_name="messages", room_id="feed")
    assert [m.content.text for m in stored] == ["*Added 👍*"]
    [event] = [e for e in await stack.events() if e.event_type == "reaction.received"]
    assert (event.room_id, event.message_id) == ("feed", reaction.id)
