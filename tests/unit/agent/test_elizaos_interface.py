"""Every method of elizaOS 1.7.2's ``IAgentRuntime`` and ``IDatabaseAdapter`` is here.

The names are frozen here (``node_modules`` is not in the tree); when the
elizaOS bench is installed, the frozen lists are checked against its ``.d.ts``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contracts import Content
from contracts.records import Entity, Memory, Relationship, Room, World
from shared.agent.character import Character
from shared.agent.runtime import ELIZAOS_EXCLUDED, ELIZAOS_RENAMED, AgentRuntime
from shared.errors import NotFound
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel


def _words(text: str) -> list[str]:
    return text.split()


I_AGENT_RUNTIME = _words("""
addEmbeddingToMemory addParticipant clearAllAgentMemories composeState createEntity createRoom
createRunId emitEvent endRun ensureConnection ensureConnections ensureParticipantInRoom
ensureRoomExists ensureWorldExists evaluate generateText getActionResults getAllMemories
getAllServices getConnection getConversationLength getCurrentRunId getEntityById getEvent
getModel getRegisteredServiceTypes getRoom getRooms getService getServiceLoadPromise
getServicesByType getSetting getTaskWorker hasElizaOS hasService initialize processActions
queueEmbeddingGeneration registerAction registerDatabaseAdapter registerEvaluator registerEvent
registerModel registerPlugin registerProvider registerSendHandler registerService
registerTaskWorker sendMessageToTarget setSetting startRun stop updateMemory updateWorld useModel
""")

I_DATABASE_ADAPTER = _words("""
addParticipantsRoom close countMemories createAgent createComponent createEntities createMemory
createRelationship createRooms createTask createWorld deleteAgent deleteAllMemories deleteCache
deleteComponent deleteLog deleteManyMemories deleteMemory deleteRoom deleteRoomsByWorldId
deleteTask ensureEmbeddingDimension getAgent getAgentRunSummaries getAgents getAllWorlds getCache
getCachedEmbeddings getComponent getComponents getConnection getEntitiesByIds getEntitiesForRoom
getLogs getMemories getMemoriesByIds getMemoriesByRoomIds getMemoriesByWorldId getMemoryById
getParticipantUserState getParticipantsForEntity getParticipantsForRoom getRelationship
getRelationships getRoomsByIds getRoomsByWorld getRoomsForParticipant getRoomsForParticipants
getTask getTasks getTasksByName getWorld init initialize isReady isRoomParticipant log
removeParticipant removeWorld runMigrations runPluginMigrations searchMemories setCache
setParticipantUserState updateAgent updateComponent updateEntity updateMemory updateRelationship
updateRoom updateTask updateWorld withEntityContext
""")

TYPES = Path(__file__).resolve().parents[2] / "bench/elizaos/node_modules/@elizaos/core/dist/types"


def snake(name: str) -> str:
    return ELIZAOS_RENAMED.get(name) or re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def declared_methods(file: str, interface: str) -> list[str]:
    text = (TYPES / file).read_text()
    start = text.index(f"interface {interface} ")
    body = text[start : text.index("\n}", start)]
    return sorted({m[0] for m in re.findall(r"^    (\w+)\??(<[^(]*>)?\(", body, re.M)})


@pytest.mark.skipif(not TYPES.is_dir(), reason="the elizaOS bench is not installed (npm ci)")
def test_the_frozen_lists_are_elizaos_1_7_2s() -> None:
    package = (TYPES.parents[1] / "package.json").read_text()
    assert '"version": "1.7.2"' in package
    assert declared_methods("runtime.d.ts", "IAgentRuntime") == sorted(I_AGENT_RUNTIME)
    assert declared_methods("database.d.ts", "IDatabaseAdapter") == sorted(I_DATABASE_ADAPTER)


def test_every_elizaos_runtime_and_adapter_method_is_on_agent_runtime() -> None:
    names = {snake(n) for n in [*I_AGENT_RUNTIME, *I_DATABASE_ADAPTER]}
    assert len(names) == 124
    missing = sorted(n for n in names if not hasattr(AgentRuntime, n))
    assert missing == sorted(ELIZAOS_EXCLUDED)
    # The exclusions are few, each explained, and none is secretly present.
    assert len(ELIZAOS_EXCLUDED) <= 6
    assert all(len(reason) > 20 for reason in ELIZAOS_EXCLUDED.values())
    assert set(ELIZAOS_RENAMED) <= {*I_AGENT_RUNTIME, *I_DATABASE_ADAPTER}


async def test_the_added_methods_keep_elizaos_meaning(runtime: AgentRuntime) -> None:
    world = World(id="world-1", name="Guild")
    await runtime.ensure_world_exists(world)
    await runtime.ensure_world_exists(world)
    room = Room(id="room-1", name="general", source="test", world_id="world-1")
    assert await runtime.create_room(room) == "room-1"
    await runtime.ensure_room_exists(room)
    assert await runtime.get_room("room-1") is not None
    assert await runtime.get_room("nowhere") is None
    assert [r.id for r in await runtime.get_rooms("world-1")] == ["room-1"]

    await runtime.create_entity(Entity(id="user-1", names=["Ann"]))
    assert await runtime.add_participant("user-1", "room-1")
    await runtime.ensure_participant_in_room("user-1", "room-1")
    with pytest.raises(NotFound):
        await runtime.ensure_participant_in_room("nobody", "room-1")
    assert [e.id for e in await runtime.get_entities_for_room("room-1")] == ["user-1"]
    assert (await runtime.get_entity_by_id("user-1")) is not None
    assert [p.room_id for p in await runtime.get_participants_for_entity("user-1")] == ["room-1"]
    assert "room-1" in await runtime.get_rooms_for_participants(["user-1", runtime.agent_id])

    link = Relationship(source_entity_id="user-1", target_entity_id=runtime.agent_id)
    assert await runtime.create_relationship(link)
    found = await runtime.get_relationship("user-1", runtime.agent_id)
    assert found is not None
    assert found.target_entity_id == runtime.agent_id
    assert await runtime.get_relationship(runtime.agent_id, "user-1") is None

    for text in ("one", "two"):
        memory = Memory(
            entity_id="user-1", room_id="room-1", world_id="world-1", content=Content(text=text)
        )
        await runtime.create_memory(memory)
    assert len(await runtime.get_memories_by_world_id("world-1")) == 2
    assert len(await runtime.get_all_memories()) >= 2
    await runtime.clear_all_agent_memories()
    assert await runtime.get_all_memories() == []

    await runtime.delete_rooms_by_world_id("world-1")
    assert await runtime.get_room("room-1") is None
    assert await runtime.is_ready()


async def test_generate_text_puts_the_character_before_the_input(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    result = await runtime.generate_text("Say hi")
    assert isinstance(result.text, str)
    prompt = model.prompts["TEXT_LARGE"][-1]
    assert prompt.startswith("# About Eliza\nA helpful assistant.\n\nBe kind.")
    assert prompt.endswith("Say hi")


async def test_register_database_adapter_before_initialize(
    database_url: str, model: ScriptedModel
) -> None:
    agent = AgentRuntime(character=Character(name="Eliza"), plugins=[model.plugin()])
    adapter = SqlAdapter.from_url(database_url, agent.agent_id)
    agent.register_database_adapter(adapter)
    await agent.initialize()
    try:
        assert agent.adapter is adapter
        assert await agent.is_ready()
    finally:
        await agent.stop()
        await agent.close()
    assert not await agent.is_ready()
