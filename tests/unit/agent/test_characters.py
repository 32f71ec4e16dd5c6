"""elizaOS character files (1.x and 0.x) load and answer; their knowledge is stored and found.

The files are in ``tests/fixtures/characters``, written in the elizaOS formats.
The model is the fake OpenAI server (the 1.x file names ``@elizaos/plugin-openai``,
the 0.x one ``modelProvider: openai``) or the scripted one.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts import Content
from contracts.records import Memory
from shared.agent.character import Character, CharacterError
from shared.agent.knowledge import KNOWLEDGE_TABLE, fragments
from shared.agent.plugin import PluginError, normalize_plugin_name, resolve_plugins
from shared.agent.runtime import AgentRuntime
from shared.agent.types import Plugin
from tests.fake_openai import FakeOpenAI, fake_openai_server
from tests.scripted import ScriptedModel, plan

CHARACTERS = Path(__file__).resolve().parents[2] / "fixtures" / "characters"
V1 = CHARACTERS / "eliza.v1.character.json"
V0 = CHARACTERS / "sol.v0.character.json"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        yield server


def said(text: str, room: str = "room-1") -> Memory:
    return Memory(entity_id="user-1", room_id=room, content=Content(text=text))


async def started(character: Character, tmp_path: Path, **settings: str) -> AgentRuntime:
    runtime = AgentRuntime(
        character=character,
        settings={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'agent.db'}",
            "TASK_TICK_SECONDS": "3600",
            **settings,
        },
    )
    await runtime.initialize()
    return runtime


# -- loading --------------------------------------------------------------------


async def test_an_elizaos_1x_character_file_loads_and_answers_with_its_plugins(
    fake: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.default = plan("Hello! What is on your mind today?")
    with caplog.at_level(logging.WARNING):
        runtime = await started(
            Character.from_file(V1), tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="x"
        )
    try:
        # sql is the built-in storage, openai and bootstrap are elizamesh's own;
        # discord is not here: a warning names it and what to use instead.
        assert [p.name for p in runtime.plugins] == ["openai", "bootstrap"]
        [warning] = [r.getMessage() for r in caplog.records if "plugin-discord" in r.getMessage()]
        assert "elizamesh connector" in warning
        result = await runtime.message_service.handle_message(runtime, said("Hi there!"))
        assert result.did_respond
        assert result.response_content is not None
        assert result.response_content.text == "Hello! What is on your mind today?"
    finally:
        await runtime.stop()


async def test_a_1x_characters_examples_topics_and_style_reach_the_prompt(
    tmp_path: Path,
) -> None:
    model = ScriptedModel(default=plan("Hi!"))
    runtime = AgentRuntime(
        character=Character.from_file(V1),
        plugins=[model.plugin()],
        settings={"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "TASK_TICK_SECONDS": "3600"},
    )
    await runtime.initialize()
    try:
        await runtime.message_service.handle_message(runtime, said("Hi there!"))
    finally:
        await runtime.stop()
    prompt = model.prompts["TEXT_LARGE"][0]
    assert "# Example conversations for Eliza" in prompt
    assert "User1: Hi there!\nEliza: Hello! What is on your mind today?" in prompt
    assert "Eliza: Sure, I'll let them know. (actions: SEND_MESSAGE)" in prompt
    assert "# Example posts for Eliza\n- Small kindnesses make a community." in prompt
    assert "Eliza is interested in: community, everyday life" in prompt
    assert "- Ask a follow-up question when it helps" in prompt
    assert "One thought per post" not in prompt  # post style is for posts, not chats


async def test_an_elizaos_0x_character_file_loads_and_answers(
    fake: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake.default = plan("That is Jupiter.")
    with caplog.at_level(logging.WARNING):
        character = Character.from_file(V0)
    [note] = [r.getMessage() for r in caplog.records if "0.x fields ignored" in r.getMessage()]
    for field in ("clients", "imageModelProvider", "people", "twitterProfile"):
        assert field in note
    assert character.plugins == ["openai"]  # from modelProvider
    assert character.bio_lines[-1] == "Sol named a telescope after a cat."  # lore joins bio
    assert character.message_examples[0][0].name == "{{user1}}"
    runtime = await started(character, tmp_path, OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="x")
    try:
        result = await runtime.message_service.handle_message(runtime, said("What is that?"))
        assert result.did_respond
        assert result.response_content is not None
        assert result.response_content.text == "That is Jupiter."
        prompt = fake.chat_requests()[-1]["messages"][-1]["content"]
        assert "User1: What is that bright dot?\nSol: That is Jupiter, low in the east" in prompt
        assert "Sol once counted every meteor" in prompt
    finally:
        await runtime.stop()


def test_every_problem_of_a_character_file_is_reported_at_once_with_its_own_names(
    tmp_path: Path,
) -> None:
    broken = {
        "modelProvider": "openai",
        "bio": ["fine", 7],
        "messageExamples": [[{"user": "{{user1}}", "content": "hello"}]],
        "postExamples": "one post",
        "styel": {"all": []},
        "lore": "a string",
    }
    path = tmp_path / "broken.character.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(CharacterError) as caught:
        Character.from_file(path)
    problems = str(caught.value).splitlines()[1:]
    assert problems == [
        "$.name: required, a non-empty string",
        "$.bio[1]: Expected `str`, got `int`",
        "$.messageExamples[0][0].content: Expected `object`, got `str`",
        "$.postExamples: Expected `array`, got `str`",
        "$.styel: not a character field (did you mean 'style'?)",
        "$.lore: Expected `array`, got `str`",
    ]


# -- plugin names ---------------------------------------------------------------


def test_elizaos_plugin_names_map_to_what_elizamesh_provides() -> None:
    def discover(name: str) -> Plugin:
        if (short := normalize_plugin_name(name)) in {"openai", "local", "bootstrap"}:
            return Plugin(short)
        raise PluginError(f"plugin {name!r} is not installed")

    names = [
        "@elizaos/plugin-sql",
        "@elizaos/plugin-knowledge",
        "@elizaos/plugin-bootstrap",
        "@elizaos/plugin-ollama",
        "@elizaos/plugin-openai",
        "@elizaos/plugin-local-ai",
        "@elizaos-plugins/plugin-anthropic",
    ]
    loaded = resolve_plugins(names, discover=discover)
    assert sorted(p.name for p in loaded) == ["bootstrap", "local", "openai"]


def test_an_unknown_plugin_a_character_lists_is_a_warning_and_one_given_in_code_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert resolve_plugins(["my-plugin"], optional=["my-plugin"]) == []
    assert "plugin my-plugin is not available" in caplog.text
    assert "entry point named 'my-plugin'" in caplog.text
    with pytest.raises(PluginError, match="'my-plugin' is not installed"):
        resolve_plugins(["my-plugin"])


async def test_a_character_whose_plugins_are_all_unavailable_still_starts(tmp_path: Path) -> None:
    character = Character.parse({"name": "Ada", "plugins": ["@elizaos/plugin-telegram", "nope"]})
    runtime = await started(character, tmp_path)
    try:
        assert runtime.is_started()
        assert [p.name for p in runtime.plugins] == ["bootstrap"]
    finally:
        await runtime.stop()


# -- knowledge ------------------------------------------------------------------


def test_a_document_splits_at_paragraphs_into_bounded_fragments() -> None:
    text = "one two three\n\nfour five\n\n" + "word " * 60
    pieces = fragments(text, limit=40)
    assert pieces[0] == "one two three\n\nfour five"
    assert all(len(p) <= 40 for p in pieces)
    assert " ".join(" ".join(pieces).split()) == " ".join(text.split())


async def test_knowledge_is_stored_once_and_replaced_when_it_changes(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    shutil.copytree(CHARACTERS, folder)
    model = ScriptedModel(default=plan("ok"))

    async def stored() -> dict[str, str]:
        runtime = AgentRuntime(
            character=Character.from_file(folder / "eliza.v1.character.json"),
            plugins=[model.plugin(embeddings=True)],
            settings={
                "DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
                "TASK_TICK_SECONDS": "3600",
            },
        )
        await runtime.initialize()
        try:
            memories = await runtime.get_memories(
                table_name=KNOWLEDGE_TABLE, include_embeddings=True
            )
            assert all(m.embedding for m in memories)
            return {m.id: m.content.text or "" for m in memories}
        finally:
            await runtime.stop()

    first = await stored()
    assert len(first) == 4  # the string, office.md, and the folder's two files
    assert await stored() == first  # a restart stores nothing new
    (folder / "knowledge" / "handbook" / "lunch.txt").write_text("Lunch is at noon sharp.")
    third = await stored()
    assert "Lunch is at noon sharp." in third.values()
    assert not any("pizza" in text for text in third.values())
    assert len(third) == 4


async def test_the_knowledge_search_is_one_read_per_turn_and_none_without_knowledge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = ScriptedModel(default=plan("ok"))
    searches: list[dict[str, Any]] = []

    async def run(character: Character, database: str) -> None:
        runtime = AgentRuntime(
            character=character,
            plugins=[model.plugin(embeddings=True)],
            settings={
                "DATABASE_URL": f"sqlite:///{tmp_path / database}",
                "TASK_TICK_SECONDS": "3600",
            },
        )
        await runtime.initialize()
        search = runtime.adapter.search_memories

        async def counted(**kwargs: Any) -> list[Memory]:
            if kwargs["table_name"] == KNOWLEDGE_TABLE:
                searches.append(kwargs)
            return await search(**kwargs)

        monkeypatch.setattr(runtime.adapter, "search_memories", counted)
        try:
            await runtime.message_service.handle_message(runtime, said("wifi password?"))
        finally:
            await runtime.stop()

    await run(Character(name="Plain"), "plain.db")
    assert searches == []
    await run(
        Character(name="Ada", knowledge=["The office wifi password is tangerine-42."]), "k.db"
    )
    assert len(searches) == 1  # the planner's and the reply's prompts share it
    assert "tangerine-42" in model.prompts["TEXT_LARGE"][-1]
