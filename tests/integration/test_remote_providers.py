"""Providers in other processes (any language) add to the state over NATS, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.providers import GetProvider, ProviderOutput
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.bus import create_broker, start_serving
from shared.remote import remote_provider
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
    assert result.state is not None
    assert result.state.values["weather"] == "sunny"
    errors = result.state.data["provider_errors"]
    assert set(errors) == {"SLOW", "GONE"}
    assert "within 0.3s" in errors["SLOW"]
    assert "no service is listening" in errors["GONE"]
    assert result.did_respond  # the turn went on
    assert result.status == "failed"  # and says a step failed
