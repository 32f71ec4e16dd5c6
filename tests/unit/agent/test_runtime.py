"""AgentRuntime's method groups: plugins, settings, models, state, services, memory, events."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.character import Character, CharacterError
from shared.agent.plugin import PluginError, resolve_plugins
from shared.agent.runtime import AgentRuntime, TargetInfo
from shared.agent.turn import Turn, entered
from shared.agent.types import (
    Evaluator,
    EventType,
    ModelError,
    ModelType,
    Plugin,
    PluginPriority,
    Provider,
    ProviderResult,
    Service,
    State,
)
from shared.agent.xml import parse_key_value_xml
from shared.errors import NotFound
from tests.scripted import ScriptedModel

# -- plugins ---------------------------------------------------------------------


def test_plugins_load_dependencies_first_then_by_priority_band() -> None:
    platform = Plugin("discord", priority=PluginPriority.PLATFORM)
    feature = Plugin("knowledge", priority=PluginPriority.FEATURE, dependencies=["sql"])
    sql = Plugin("sql", priority=PluginPriority.DATABASE)
    model = Plugin("openai", priority=PluginPriority.MODEL_PROVIDER)
    ordered = resolve_plugins([platform, feature, model, sql])
    assert [p.name for p in ordered] == ["sql", "openai", "knowledge", "discord"]


def test_a_dependency_given_by_name_is_found_and_loaded_first() -> None:
    base = Plugin("base")
    found: list[str] = []

    def discover(name: str) -> Plugin:
        found.append(name)
        return base

    ordered = resolve_plugins(
        [Plugin("top", dependencies=["@elizaos/plugin-base"])], discover=discover
    )
    assert [p.name for p in ordered] == ["base", "top"]
    assert found == ["@elizaos/plugin-base"]


def test_a_dependency_cycle_is_an_error_naming_the_plugins() -> None:
    a = Plugin("a", dependencies=["b"])
    b = Plugin("b", dependencies=["a"])
    with pytest.raises(PluginError, match="cycle among: a, b"):
        resolve_plugins([a, b])


def test_a_plugin_that_is_not_installed_is_a_clear_error() -> None:
    with pytest.raises(PluginError, match="plugin 'nonexistent' is not installed"):
        resolve_plugins(["nonexistent"])


def test_the_bootstrap_plugin_is_found_by_name_through_its_entry_point() -> None:
    [plugin] = resolve_plugins(["@elizaos/plugin-bootstrap"])
    assert plugin.name == "bootstrap"


# -- character and settings --------------------------------------------------------


def test_a_bad_character_field_is_named_in_the_error() -> None:
    with pytest.raises(CharacterError, match=r"\$\.topics\[1\]: Expected `str`"):
        Character.parse({"name": "x", "topics": ["ok", 3]})
    with pytest.raises(CharacterError, match=r"\$\.biography: not a character field"):
        Character.parse({"name": "x", "biography": "typo"})
    with pytest.raises(CharacterError, match="not valid JSON"):
        Character.from_file(Path(__file__))


def test_settings_come_from_secrets_then_settings_then_runtime_then_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ONLY_ENV", "env")
    monkeypatch.setenv("EVERYWHERE", "env")
    character = Character(
        name="x",
        secrets={"EVERYWHERE": "secret"},
        settings={"IN_SETTINGS": "settings", "FLAG": "true", "secrets": {"NESTED": "nested"}},
    )
    runtime = AgentRuntime(character=character, settings={"EVERYWHERE": "runtime", "RUNTIME": "r"})
    assert runtime.get_setting("EVERYWHERE") == "secret"
    assert runtime.get_setting("IN_SETTINGS") == "settings"
    assert runtime.get_setting("NESTED") == "nested"
    assert runtime.get_setting("RUNTIME") == "r"
    assert runtime.get_setting("ONLY_ENV") == "env"
    assert runtime.get_setting("FLAG") is True
    assert runtime.get_setting("MISSING") is None
    assert runtime.has_setting("ONLY_ENV")
    assert not runtime.has_setting("MISSING")


def test_secrets_are_not_stored_with_the_agent() -> None:
    character = Character(name="x", secrets={"KEY": "s"}, settings={"secrets": {"K2": "s"}, "a": 1})
    assert character.public()["settings"] == {"a": 1}
    assert "secrets" not in character.public()


# -- models ------------------------------------------------------------------------


async def test_the_highest_priority_model_handler_wins_then_the_first_registered() -> None:
    runtime = AgentRuntime(character=Character(name="x"))

    def answer(text: str) -> Any:
        async def handler(rt: AgentRuntime, params: dict[str, Any]) -> str:
            return text

        return handler

    runtime.register_model(ModelType.TEXT_SMALL, answer("low"), "a", priority=0)
    runtime.register_model(ModelType.TEXT_SMALL, answer("high-first"), "b", priority=10)
    runtime.register_model(ModelType.TEXT_SMALL, answer("high-second"), "c", priority=10)
    assert await runtime.get_model(ModelType.TEXT_SMALL)(runtime, {}) == "high-first"  # type: ignore[misc]
    assert await runtime.get_model(ModelType.TEXT_SMALL, "a")(runtime, {}) == "low"  # type: ignore[misc]


async def test_per_type_model_settings_fill_what_the_caller_left_out(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    runtime.set_setting("TEXT_LARGE_TEMPERATURE", "0.2")
    runtime.set_setting("DEFAULT_MAX_TOKENS", "256")
    await runtime.use_model(ModelType.TEXT_LARGE, {"prompt": "p", "max_tokens": 8})
    params = model.params[-1]
    assert params["temperature"] == 0.2
    assert params["max_tokens"] == 8
    assert params["user"] == "Eliza"


async def test_a_missing_model_says_which_plugin_to_add(runtime: AgentRuntime) -> None:
    with pytest.raises(ModelError, match="no plugin serves the IMAGE model"):
        await runtime.use_model(ModelType.IMAGE, {"prompt": "a cat"})


async def test_use_model_streams_chunks_and_returns_the_whole_text(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.large.append("one two three")
    chunks: list[str] = []

    async def on_chunk(chunk: str, _: str | None) -> None:
        chunks.append(chunk)

    text = await runtime.use_model(ModelType.TEXT_LARGE, {"prompt": "p"}, on_stream_chunk=on_chunk)
    assert text == "one two three"
    assert chunks == ["one ", "two ", "thre", "e"]
    logs = await runtime.adapter.get_logs(log_type="useModel:TEXT_LARGE")
    assert logs[0].body["stream"] is True


# -- state -------------------------------------------------------------------------


def provider(name: str, text: str, calls: list[str], **flags: Any) -> Provider:
    async def get(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        calls.append(name)
        return ProviderResult(text=text, values={name: text})

    return Provider(name, get, **flags)


async def test_state_is_composed_in_position_order_and_cached_for_the_turns_message(
    runtime: AgentRuntime,
) -> None:
    calls: list[str] = []
    runtime.providers = [
        provider("LATE", "late", calls, position=10),
        provider("EARLY", "early", calls, position=-5),
        provider("ASKED", "asked", calls, dynamic=True),
        provider("HIDDEN", "hidden", calls, private=True),
    ]
    message = Memory(entity_id="u", room_id="r", content=Content(text="x"))
    turn = Turn(run_id="run-1", message=message, response_id="reply-1")
    with entered(turn):
        state = await runtime.compose_state(message)
        assert state.text == "early\n\nlate"
        assert sorted(calls) == ["EARLY", "LATE"]
        more = await runtime.compose_state(message, ["ASKED"], only_include=True)
    assert more.text == "early\n\nasked\n\nlate"  # merged with the cached state, by position
    assert more.values["EARLY"] == "early"
    assert sorted(calls) == ["ASKED", "EARLY", "LATE"]


async def test_the_state_cache_belongs_to_the_turn_not_to_the_runtime(
    runtime: AgentRuntime,
) -> None:
    message = Memory(id="m1", entity_id="u", room_id="r", content=Content())
    turn = Turn(run_id="run-1", message=message, response_id="reply-1")
    with entered(turn):
        state = await runtime.compose_state(message, ["ENTITIES"])
        assert turn.state is state  # cached on the turn, for the next compose of this message
    outside = await runtime.compose_state(message)
    assert not hasattr(runtime, "state_cache")
    assert turn.state is state  # composing outside the turn neither reads nor writes its cache
    assert outside is not state


async def test_a_failing_provider_is_reported_and_the_others_still_count(
    runtime: AgentRuntime,
) -> None:
    calls: list[str] = []

    async def broken(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        raise ConnectionError("weather API down")

    runtime.providers = [provider("OK", "fine", calls), Provider("WEATHER", broken)]
    state = await runtime.compose_state(Memory(entity_id="u", room_id="r", content=Content()))
    assert state.text == "fine"
    assert state.data["provider_errors"] == {"WEATHER": "ConnectionError: weather API down"}


# -- xml ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "<response><thought>t</thought><actions>REPLY</actions></response>",
            {"thought": "t", "actions": ["REPLY"]},
        ),
        ("```xml\n<response><text>a &lt; b</text></response>\n```", {"text": "a < b"}),
        (
            "chatter <response><actions> A , B ,</actions><simple>TRUE</simple>",
            {"actions": ["A", "B"], "simple": True},
        ),
        (
            "<response><thought>x</thought><text>cut off mid",
            {"thought": "x", "text": "cut off mid"},
        ),
        ("<thought>no wrapper</thought>", {"thought": "no wrapper"}),
        ("no xml at all", None),
    ],
)
def test_model_xml_is_read_forgivingly(raw: str, expected: dict[str, Any] | None) -> None:
    assert parse_key_value_xml(raw) == expected


# -- services ----------------------------------------------------------------------


class Counter(Service):
    service_type = "counter"
    stopped: bool = False

    async def stop(self) -> None:
        Counter.stopped = True


async def test_services_start_after_initialize_and_can_be_awaited(database_url: str) -> None:
    runtime = AgentRuntime(
        character=Character(name="svc"),
        plugins=[Plugin("counting", services=[Counter])],
        settings={"DATABASE_URL": database_url},
    )
    waiting = asyncio.ensure_future(runtime.get_service_load_promise("counter"))
    assert not runtime.has_service("counter")
    await runtime.initialize()
    service = await asyncio.wait_for(waiting, timeout=5)
    assert runtime.get_service("counter") is service
    assert runtime.get_registered_service_types() == ["counter", "knowledge", "task"]  # bootstrap
    assert runtime.get_services_by_type("counter") == [service]
    assert runtime.get_all_services()["counter"] == [service]
    await runtime.stop()
    assert Counter.stopped


# -- memory ------------------------------------------------------------------------


async def test_the_runtime_is_an_adapter_for_its_agent(runtime: AgentRuntime) -> None:
    memory = Memory(entity_id="u", room_id="r", content=Content(text="delegated"))
    await runtime.create_memory(memory, "messages")
    stored = await runtime.get_memory_by_id(memory.id)
    assert stored is not None
    assert stored.agent_id == runtime.agent_id


async def test_initialize_creates_the_agent_its_world_entity_and_self_room(
    runtime: AgentRuntime,
) -> None:
    agent = await runtime.adapter.get_agent(runtime.agent_id)
    assert agent is not None
    assert agent.name == "Eliza"
    assert await runtime.adapter.get_world(runtime.agent_id) is not None
    [room] = await runtime.adapter.get_rooms_by_ids([runtime.agent_id])
    assert room.type == "SELF"
    assert await runtime.adapter.is_room_participant(runtime.agent_id, runtime.agent_id)


async def test_queued_embeddings_fill_vectors_in_the_background(runtime: AgentRuntime) -> None:
    done = asyncio.Event()

    async def completed(payload: dict[str, Any]) -> None:
        done.set()

    runtime.on(EventType.EMBEDDING_GENERATION_COMPLETED, completed)
    memory = Memory(entity_id="u", room_id="r", content=Content(text="abc"))
    await runtime.adapter.create_memory(memory, "messages")
    await runtime.queue_embedding_generation(memory, "high")
    await asyncio.wait_for(done.wait(), timeout=5)
    stored = await runtime.adapter.get_memory_by_id(memory.id, include_embeddings=True)
    assert stored is not None
    assert stored.embedding is not None
    assert stored.embedding[:3] == [1.0, 1.0, 1.0]


async def test_facts_are_stored_and_found_by_meaning(runtime: AgentRuntime) -> None:
    await runtime.create_fact("zzz zzz")
    await runtime.create_fact("aaa aaa")
    [best] = await runtime.search_facts("aaaa", count=1)
    assert best.content.text == "aaa aaa"


async def test_ensure_connection_creates_then_merges_the_entity(runtime: AgentRuntime) -> None:
    await runtime.ensure_connection(
        entity_id="u9", room_id="room9", user_name="ada", source="discord"
    )
    await runtime.ensure_connection(
        entity_id="u9", room_id="room9", name="Ada L.", source="discord"
    )
    [entity] = await runtime.adapter.get_entities_by_ids(["u9"])
    assert entity.names == ["ada", "Ada L."]
    assert await runtime.adapter.get_participants_for_room("room9") == ["u9", runtime.agent_id]


# -- sending and evaluators --------------------------------------------------------


async def test_send_message_to_target_uses_the_handler_of_the_source(runtime: AgentRuntime) -> None:
    sent: list[tuple[str | None, str]] = []

    async def discord(rt: AgentRuntime, target: TargetInfo, content: Content) -> None:
        sent.append((target.channel_id, content.text))

    runtime.register_send_handler("discord", discord)
    await runtime.send_message_to_target(
        TargetInfo(source="discord", channel_id="c1"), Content(text="hey")
    )
    assert sent == [("c1", "hey")]
    with pytest.raises(NotFound, match="no send handler is registered for source 'telegram'"):
        await runtime.send_message_to_target(TargetInfo(source="telegram"), Content(text="x"))


async def test_evaluators_run_after_a_reply_and_a_failing_one_does_not_stop_the_rest(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    ran: list[str] = []

    async def good(*_: Any) -> None:
        ran.append("good")

    async def bad(*_: Any) -> None:
        raise ValueError("broken evaluator")

    runtime.register_evaluator(Evaluator("GOOD", good))
    runtime.register_evaluator(Evaluator("BAD", bad, always_run=True))
    completed: list[dict[str, Any]] = []

    async def on_completed(payload: dict[str, Any]) -> None:
        completed.append(payload)

    runtime.on(EventType.EVALUATOR_COMPLETED, on_completed)
    assert runtime.message_service is not None
    await runtime.message_service.handle_message(
        runtime, Memory(entity_id="u", room_id="dm", content=Content(text="hi"))
    )
    assert ran == ["good"]
    errors = {p["evaluator"]: p["error"] for p in completed}
    assert errors["GOOD"] is None
    assert errors["BAD"] == "ValueError: broken evaluator"


async def test_reflection_stores_new_facts_and_relationships(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.small.append(
        "<response><thought>t</thought><facts><fact><claim>Ada lives in Paris</claim>"
        "<type>fact</type></fact></facts><relationships><relationship>"
        "<sourceEntityId>u</sourceEntityId><targetEntityId>bob</targetEntityId><tags>friend</tags>"
        "</relationship></relationships></response>"
    )
    runtime.conversation_length = 4  # reflect once more than 4 // 4 messages have come in
    earlier = Memory(entity_id="u", room_id="dm", content=Content(text="Hi"), created_at=1)
    message = Memory(
        entity_id="u", room_id="dm", content=Content(text="I live in Paris, Bob's my friend")
    )
    await runtime.adapter.create_memories([earlier, message], "messages")
    state = await runtime.compose_state(message)
    ran = await runtime.evaluate(message, state, did_respond=True)
    assert "REFLECTION" in ran
    facts = await runtime.adapter.get_memories(table_name="facts")
    assert [f.content.text for f in facts] == ["Ada lives in Paris"]
    [link] = await runtime.adapter.get_relationships("u")
    assert (link.target_entity_id, link.tags, link.metadata["interactions"]) == (
        "bob",
        ["friend"],
        1,
    )
    assert not await runtime.evaluate(message, state, did_respond=True)  # already processed
