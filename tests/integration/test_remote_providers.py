"""Providers and actions in other processes (any language), over NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.providers import ActionOutput, GetProvider, InvokeAction, ProviderOutput
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.bus import create_broker, start_serving
from shared.remote import remote_action, remote_provider
from tests.scripted import ScriptedModel, plan


@pytest.fixture
async def weather_service(nats_url: str, subjects: Subjects) -> AsyncIterator[NatsBroker]:
    """A provider service, as a connector author would write one."""
    broker = create_broker(nats_url, name="weather-provider")

    @broker.subscriber(subjects.provider_get("WEATHER"))
    async def weather(request: GetProvider) -> ProviderOutput:
        return ProviderOutput(
            text=f"# Weather\nSunny in Lyon (asked by {request.agent_name})",
            values={"weather": "sunny"},
        )

    @broker.subscriber(subjects.provider_get("SLOW"))
    async def slow(request: GetProvider) -> ProviderOutput:
        await asyncio.sleep(1)
        return ProviderOutput(text="too late")

    async with broker:
        await start_serving(broker)
        yield broker


async def test_remote_providers_contribute_and_a_slow_one_is_reported_not_waited_for(
    weather_service: NatsBroker, nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    model = ScriptedModel(large=[plan("It is sunny in Lyon.")])
    client = create_broker(nats_url, name="runtime-under-test")
    runtime = AgentRuntime(
        character=Character(name="Eliza"),
        plugins=[model.plugin()],
        settings={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    async with client:
        await client.connect()
        await runtime.initialize()
        for name, timeout in (("WEATHER", 2.0), ("SLOW", 0.3), ("GONE", 0.3)):
            runtime.register_provider(remote_provider(client, subjects, name, timeout=timeout))
        try:
            assert runtime.message_service is not None
            result = await runtime.message_service.handle_message(
                runtime, Memory(entity_id="u", room_id="dm", content=Content(text="weather?"))
            )
        finally:
            await runtime.stop()
    assert "Sunny in Lyon (asked by Eliza)" in model.prompts["TEXT_LARGE"][0]
    assert result.did_respond  # the turn went on
    assert result.status == "failed"  # and says a step failed, naming each provider
    assert result.error is not None
    assert "provider SLOW:" in result.error
    assert "within 0.3s" in result.error
    assert "provider GONE: " in result.error
    assert "no service is listening" in result.error
    assert "WEATHER" not in result.error


async def test_a_remote_action_runs_in_its_service_and_a_missing_one_is_a_failed_step(
    nats_url: str, subjects: Subjects, tmp_path: Path
) -> None:
    service = create_broker(nats_url, name="booking-action")
    booked: list[dict[str, object]] = []

    @service.subscriber(subjects.action_invoke("BOOK_TABLE"))
    async def book(request: InvokeAction) -> ActionOutput:
        booked.append(dict(request.parameters) | {"text": request.message.content.text})
        return ActionOutput(text="Table for two booked at 8pm.", values={"booking": "B-7"})

    model = ScriptedModel(large=[plan("", actions="BOOK_TABLE"), plan("", actions="CANCEL_TABLE")])
    client = create_broker(nats_url, name="runtime-under-test")
    runtime = AgentRuntime(
        character=Character(name="Eliza"),
        plugins=[model.plugin()],
        settings={
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    async with service, client:
        await start_serving(service)
        await client.connect()
        await runtime.initialize()
        for name in ("BOOK_TABLE", "CANCEL_TABLE"):
            runtime.register_action(remote_action(client, subjects, name, timeout=1))
        try:
            assert runtime.message_service is not None
            booking = await runtime.message_service.handle_message(
                runtime, Memory(entity_id="u", room_id="dm", content=Content(text="book a table"))
            )
            cancel = await runtime.message_service.handle_message(
                runtime, Memory(entity_id="u", room_id="dm", content=Content(text="cancel it"))
            )
        finally:
            await runtime.stop()
    assert booked == [{"text": "book a table"}]
    assert booking.response_content is not None
    assert booking.response_content.text == "Table for two booked at 8pm."
    assert booking.status == "completed"
    [failed] = cancel.action_results
    assert not failed.success
    assert "no service is listening" in (failed.error or "")
    assert cancel.status == "failed"
