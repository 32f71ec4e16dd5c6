"""ElizaOS: many agents in one process, found by id or name, talked to in parallel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import elizamesh
from contracts import Content
from shared.agent.character import Character
from shared.agent.elizaos import AgentSpec, ElizaOS, new_message
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin
from shared.errors import BadRequest, NotFound
from tests.scripted import ScriptedModel, plan


@pytest.fixture
async def eliza(database_url: str) -> AsyncIterator[ElizaOS]:
    registry = ElizaOS()
    yield registry
    await registry.stop_agents([a.agent_id for a in registry.get_agents() if a.is_started()])


def spec(name: str, model: ScriptedModel, database_url: str, **fields: Any) -> AgentSpec:
    return AgentSpec(
        character=Character(name=name),
        plugins=[model.plugin()],
        settings={"DATABASE_URL": database_url},
        **fields,
    )


def record(eliza: ElizaOS, *events: str) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    for event in events:

        def listener(detail: dict[str, Any], name: str = event) -> None:
            seen.append((name, detail))

        eliza.add_event_listener(event, listener)
    return seen


async def test_agents_are_added_started_and_found_by_id_and_name(
    eliza: ElizaOS, database_url: str
) -> None:
    seen = record(eliza, "agent:added", "agents:added", "agent:started")
    model = ScriptedModel()
    ids = await eliza.add_agents(
        [spec("Researcher", model, database_url), spec("Writer", model, database_url)],
        auto_start=True,
    )
    assert len(ids) == 2
    researcher = eliza.get_agent_by_name("researcher")
    assert researcher is not None
    assert eliza.get_agent(researcher.agent_id) is researcher
    assert [a.character.name for a in eliza.get_agents_by_names(["WRITER", "nobody"])] == ["Writer"]
    assert len(eliza.get_agents_by_ids([*ids, "missing"])) == 2
    assert [e for e, _ in seen] == [
        "agent:added",
        "agent:added",
        "agent:started",
        "agent:started",
        "agents:added",
    ]
    assert "secrets" not in seen[0][1]["character"]


async def test_an_ephemeral_agent_is_returned_but_not_registered(
    eliza: ElizaOS, database_url: str
) -> None:
    model = ScriptedModel(large=[plan("serverless hello")])
    [runtime] = await eliza.add_agents(
        [spec("Lambda", model, database_url)], ephemeral=True, auto_start=True, return_runtimes=True
    )
    assert isinstance(runtime, AgentRuntime)
    assert eliza.get_agents() == []
    result = await eliza.handle_message(runtime, new_message("user", "room", "Hello!"))
    assert isinstance(result, elizamesh.HandleMessageResult)  # one outcome type everywhere
    assert result.status == "completed"
    assert result.response_content.text == "serverless hello"
    await runtime.stop()


async def test_async_mode_returns_at_once_then_calls_back(
    eliza: ElizaOS, database_url: str
) -> None:
    model = ScriptedModel(large=[plan("async hello")])
    [agent_id] = await eliza.add_agents([spec("Async", model, database_url)], auto_start=True)
    responses: list[str] = []
    finished = asyncio.Event()

    async def on_response(content: Content) -> None:
        responses.append(content.text)

    async def on_complete() -> None:
        finished.set()

    result = await eliza.handle_message(
        str(agent_id), new_message("u", "r", "hi"), on_response=on_response, on_complete=on_complete
    )
    assert result.status == "accepted"
    assert not result.did_respond
    await asyncio.wait_for(finished.wait(), timeout=5)
    assert responses == ["async hello"]


async def test_async_mode_reports_failures_to_on_error(eliza: ElizaOS, database_url: str) -> None:
    async def broken(runtime: AgentRuntime, params: dict[str, Any]) -> str:
        raise RuntimeError("model exploded")

    failing = AgentSpec(
        character=Character(name="Broken"),
        plugins=[
            Plugin("broken", models={ModelType.TEXT_LARGE: broken, ModelType.TEXT_SMALL: broken})
        ],
        settings={"DATABASE_URL": database_url},
    )
    [agent_id] = await eliza.add_agents([failing], auto_start=True)
    errors: list[BaseException] = []
    done = asyncio.Event()

    async def on_error(error: BaseException) -> None:
        errors.append(error)

    async def on_response(content: Content) -> None:
        raise AssertionError("no response expected")

    async def on_complete() -> None:
        done.set()

    await eliza.handle_message(
        str(agent_id),
        new_message("u", "r", "hi"),
        on_response=on_response,
        on_error=on_error,
        on_complete=on_complete,
    )
    await asyncio.wait_for(done.wait(), timeout=5)
    assert [str(e) for e in errors] == ["model exploded"]


async def test_handle_messages_runs_in_parallel_with_errors_per_message(
    eliza: ElizaOS, database_url: str
) -> None:
    research = ScriptedModel(large=[plan("researching X")])
    writing = ScriptedModel(large=[plan("outline ready")])
    researcher, writer = await eliza.add_agents(
        [spec("Researcher", research, database_url), spec("Writer", writing, database_url)],
        auto_start=True,
    )
    seen = record(eliza, "messages:sent")
    results = await eliza.handle_messages(
        [
            (str(researcher), new_message("u", "r1", "Research topic X", source="internal")),
            (str(writer), new_message("u", "r2", "Prepare outline", source="internal")),
            ("no-such-agent", new_message("u", "r3", "hello?")),
        ]
    )
    texts = [r.result.response_content.text for r in results[:2] if r.result is not None]
    assert texts == ["researching X", "outline ready"]
    assert isinstance(results[2].error, NotFound)
    assert seen[-1][1] == {"count": 3, "errors": 1}


async def test_health_check_probes_each_agent(eliza: ElizaOS, database_url: str) -> None:
    model = ScriptedModel()
    started, idle = await eliza.add_agents(
        [spec("Up", model, database_url), spec("Idle", model, database_url)]
    )
    await eliza.start_agents([str(started)])
    health = await eliza.health_check()
    assert health[str(started)].alive
    assert health[str(started)].responsive
    assert health[str(started)].memory_usage > 0
    assert not health[str(idle)].responsive  # never started: no storage to answer
    assert health[str(idle)].error is not None


async def test_validate_api_keys_asks_each_model(eliza: ElizaOS, database_url: str) -> None:
    async def refuses(runtime: AgentRuntime, params: dict[str, Any]) -> str:
        raise PermissionError("401 invalid api key")

    good = spec("Good", ScriptedModel(small=["OK"]), database_url)
    bad = AgentSpec(
        character=Character(name="Bad"),
        plugins=[
            Plugin("bad", models={ModelType.TEXT_SMALL: refuses, ModelType.TEXT_LARGE: refuses})
        ],
        settings={"DATABASE_URL": database_url},
    )
    good_id, bad_id = await eliza.add_agents([good, bad], auto_start=True)
    assert await eliza.validate_api_keys() == {good_id: True, bad_id: False}


async def test_agents_can_be_updated_only_in_editable_mode(
    eliza: ElizaOS, database_url: str
) -> None:
    [agent_id] = await eliza.add_agents([spec("Plain", ScriptedModel(), database_url)])
    with pytest.raises(BadRequest, match="editable mode"):
        await eliza.update_agent(str(agent_id), {"bio": "new"})
    seen = record(eliza, "mode:editable", "agent:updated")
    eliza.enable_editable_mode()
    await eliza.update_agent(str(agent_id), {"bio": "new bio"})
    runtime = eliza.get_agent(str(agent_id))
    assert runtime is not None
    assert runtime.character.bio == "new bio"
    assert [e for e, _ in seen] == ["mode:editable", "agent:updated"]


async def test_deleting_agents_stops_and_forgets_them(eliza: ElizaOS, database_url: str) -> None:
    [agent_id] = await eliza.add_agents(
        [spec("Gone", ScriptedModel(), database_url)], auto_start=True
    )
    seen = record(eliza, "agent:stopped", "agent:deleted", "agents:deleted")
    await eliza.delete_agents([str(agent_id)])
    assert eliza.get_agent(str(agent_id)) is None
    assert [e for e, _ in seen] == ["agent:stopped", "agent:deleted", "agents:deleted"]
    with pytest.raises(NotFound):
        await eliza.handle_message(str(agent_id), new_message("u", "r", "hi"))
