"""The product page's Python Quick Start, as written, with our import names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elizamesh import AgentRuntime, Character, Content, Memory
from tests.scripted import ScriptedModel, plan


async def test_the_quick_start_prints_the_reply_and_stores_both_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # zero config: SQLite under ./.elizamesh/
    monkeypatch.delenv("DATABASE_URL", raising=False)
    scripted = ScriptedModel(large=[plan("Hi! How can I help?")])

    runtime = AgentRuntime(
        character=Character(
            name="Assistant",
            bio="A helpful AI assistant",
            system="You are a helpful assistant.",
        ),
        plugins=[scripted.plugin()],
    )
    await runtime.initialize()
    message = Memory(entity_id="new-user", room_id="new-room", content=Content(text="Hello"))
    result = await runtime.message_service.handle_message(runtime, message)
    print(result.response_content.text)

    assert capsys.readouterr().out == "Hi! How can I help?\n"
    assert result.did_respond
    assert result.mode == "simple"
    assert (tmp_path / ".elizamesh" / "elizamesh.db").is_file()
    stored = await runtime.adapter.get_memories(table_name="messages", room_id="new-room")
    assert [m.content.text for m in stored] == ["Hi! How can I help?", "Hello"]
    assert stored[0].content.in_reply_to == message.id
    assert "You are a helpful assistant." in scripted.prompts["TEXT_LARGE"][0]
    assert "Hello" in scripted.prompts["TEXT_LARGE"][0]
    await runtime.stop()


async def test_a_character_from_a_json_file_answers_too(tmp_path: Path) -> None:
    path = tmp_path / "eliza.json"
    path.write_text(
        json.dumps(
            {
                "name": "Eliza",
                "bio": ["Knows Paris."],
                "messageExamples": [[{"name": "user", "content": {"text": "hi"}}]],
                "settings": {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"},
                "style": {"chat": ["short answers"]},
            }
        )
    )
    character = Character.from_file(path)
    scripted = ScriptedModel(large=[plan("Bonjour!")])
    runtime = AgentRuntime(character=character, plugins=[scripted.plugin()])
    await runtime.initialize()
    try:
        message = Memory(entity_id="u", room_id="r", content=Content(text="Salut"))
        result = await runtime.message_service.handle_message(runtime, message)
    finally:
        await runtime.stop()
    assert result.response_content is not None
    assert result.response_content.text == "Bonjour!"
    assert "short answers" in scripted.prompts["TEXT_LARGE"][0]
