"""The product page's calls, written as it writes them, work on the runtime and ElizaOS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from contracts import Content
from contracts.records import Entity, Memory
from shared.agent.character import Character
from shared.agent.elizaos import AgentSpec, ElizaOS, new_message
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType
from shared.errors import BadRequest, NotFound
from tests.scripted import ScriptedModel, letters, plan


async def test_create_memory_without_a_table_name_stores_a_message(runtime: AgentRuntime) -> None:
    memory = Memory(entity_id="user-1", room_id="room-1", content=Content(text="User message"))
    memory_id = await runtime.create_memory(memory)
    stored = await runtime.get_memories(table_name="messages", room_id="room-1")
    assert [m.id for m in stored] == [memory_id]
    assert await runtime.get_memories(table_name="facts", room_id="room-1") == []


async def test_search_memories_with_a_text_query_embeds_it_then_searches_by_vector(
    runtime: AgentRuntime,
) -> None:
    for text in ("our previous conversation", "zzz buzz jazz", "quick brown fox"):
        memory = Memory(entity_id="user-1", room_id="room-1", content=Content(text=text))
        await runtime.create_memory(await runtime.add_embedding_to_memory(memory))

    found = await runtime.search_memories("previous conversation", 10)

    assert len(found) == 3
    assert found[0].content.text == "our previous conversation"
    assert found[0].similarity is not None
    assert found[0].similarity > found[-1].similarity  # type: ignore[operator]
    by_vector = await runtime.search_memories(
        table_name="messages", embedding=letters("previous conversation"), count=1
    )
    assert [m.content.text for m in by_vector] == ["our previous conversation"]
    with pytest.raises(BadRequest):
        await runtime.search_memories()


async def test_entities_are_created_read_and_updated_one_at_a_time(runtime: AgentRuntime) -> None:
    entity = Entity(names=["Ada"], metadata={"role": "admin"})
    assert await runtime.create_entity(entity)
    assert not await runtime.create_entity(entity)  # already there
    found = await runtime.get_entity(entity.id)
    assert found is not None
    assert found.names == ["Ada"]
    await runtime.update_entity(Entity(id=entity.id, names=["Ada", "Lovelace"]))
    updated = await runtime.get_entity(entity.id)
    assert updated is not None
    assert updated.names == ["Ada", "Lovelace"]
    assert await runtime.get_entity("no-such-entity") is None


async def test_use_model_takes_a_bare_string_as_the_text_to_embed(runtime: AgentRuntime) -> None:
    assert await runtime.use_model(ModelType.TEXT_EMBEDDING, "text") == letters("text")


@pytest.fixture
async def eliza() -> AsyncIterator[ElizaOS]:
    registry = ElizaOS()
    yield registry
    await registry.stop_agents([a.agent_id for a in registry.get_agents() if a.is_started()])


async def test_handle_messages_takes_the_pages_dict_items(
    eliza: ElizaOS, database_url: str
) -> None:
    def spec(name: str, answer: str) -> AgentSpec:
        model = ScriptedModel(large=[plan(answer)])
        return AgentSpec(
            character=Character(name=name),
            plugins=[model.plugin()],
            settings={"DATABASE_URL": database_url},
        )

    research_agent, writer_agent = await eliza.add_agents(
        [spec("Researcher", "researching X"), spec("Writer", "outline ready")], auto_start=True
    )
    entity_id, room_id = "user-1", "room-1"
    results = await eliza.handle_messages(
        [
            {
                "agentId": research_agent,
                "message": {
                    "entityId": entity_id,
                    "roomId": room_id,
                    "content": {"text": "Research topic X", "source": "internal"},
                },
            },
            {
                "agent_id": str(writer_agent),
                "message": new_message(entity_id, "room-2", "Prepare outline"),
            },
            {
                "agent_id": "no-such-agent",
                "message": {"entity_id": "u", "room_id": "r", "content": {"text": "hello?"}},
            },
        ]
    )
    assert [r.agent_id for r in results] == [
        str(research_agent),
        str(writer_agent),
        "no-such-agent",
    ]
    texts = [
        r.result.response_content.text
        for r in results[:2]
        if r.result and r.result.response_content
    ]
    assert texts == ["researching X", "outline ready"]
    assert isinstance(results[2].error, NotFound)


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("agent-1", "expected (agent, message)"),
        ({"agent": "a", "message": {}}, "unknown keys ['agent']"),
        ({"agent_id": 7, "message": {}}, "agent_id must be"),
        ({"agent_id": "a", "message": "hi"}, "message must be a Memory or a dict"),
        ({"agent_id": "a", "message": {"content": {"text": "hi"}}}, "missing required field"),
    ],
)
async def test_a_handle_messages_item_of_another_shape_is_a_bad_request(
    eliza: ElizaOS, item: object, problem: str
) -> None:
    with pytest.raises(BadRequest, match="item 0") as raised:
        await eliza.handle_messages([item])  # type: ignore[list-item]
    assert problem in str(raised.value)


async def test_health_check_reports_a_stopped_agent_as_not_alive(
    eliza: ElizaOS, database_url: str
) -> None:
    model = ScriptedModel()
    [agent_id] = await eliza.add_agents(
        [
            AgentSpec(
                character=Character(name="Brief"),
                plugins=[model.plugin()],
                settings={"DATABASE_URL": database_url},
            )
        ],
        auto_start=True,
    )
    assert (await eliza.health_check())[str(agent_id)].alive
    await eliza.stop_agents([str(agent_id)])
    health = (await eliza.health_check([str(agent_id)]))[str(agent_id)]
    assert not health.alive
    assert not health.responsive
    assert health.error == "not started"
