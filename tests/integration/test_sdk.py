"""The public SDK for remote parts: a provider or action served with ``elizamesh`` alone."""

from __future__ import annotations

import ast
import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from faststream.nats import NatsBroker

import elizamesh
from contracts import Content, Subjects
from contracts.control import ServiceHealth
from contracts.records import Memory
from elizamesh import ActionOutput, GetProvider, InvokeAction, ProviderOutput
from shared.bus import create_broker, request, start_serving
from shared.config import Settings
from shared.errors import Internal, Unavailable

ROOT = Path(__file__).resolve().parents[2]
ASKED = GetProvider(
    agent_id="a1",
    agent_name="Eliza",
    message=Memory(entity_id="u1", room_id="r1", content=Content(text="hello")),
)


def weather(request: GetProvider) -> ProviderOutput:
    """Today's weather where the agent lives."""
    return ProviderOutput(text=f"# Weather\nSunny for {request.agent_name}.", values={"sky": "sun"})


async def book_table(request: InvokeAction) -> ActionOutput:
    """Book a table at the restaurant the user named."""
    if request.parameters.get("people") == 0:
        raise ValueError("a table for nobody")
    return ActionOutput(text=f"Booked for {request.parameters['people']}.")


@pytest.fixture
async def parts(nats_url: str, subjects: Subjects) -> AsyncIterator[NatsBroker]:
    """The SDK's app serving one provider and one action; yields a client connection."""
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace)
    app = elizamesh.remote_parts_app(
        providers={"WEATHER": weather}, actions={"BOOK_TABLE": book_table}, settings=settings
    )
    assert app.broker is not None
    client = create_broker(nats_url, name="sdk-client")
    async with app.broker, client:
        await start_serving(app.broker)  # type: ignore[arg-type]
        await client.connect()
        yield client


async def test_a_served_provider_answers_the_runtimes_request(
    parts: NatsBroker, subjects: Subjects
) -> None:
    output = await request(
        parts, subjects.provider_get("WEATHER"), ASKED, ProviderOutput, timeout=10
    )
    assert output == ProviderOutput(text="# Weather\nSunny for Eliza.", values={"sky": "sun"})


async def test_a_served_action_runs_with_the_planners_parameters(
    parts: NatsBroker, subjects: Subjects
) -> None:
    asked = InvokeAction(
        agent_id="a1", agent_name="Eliza", message=ASKED.message, parameters={"people": 4}
    )
    output = await request(
        parts, subjects.action_invoke("BOOK_TABLE"), asked, ActionOutput, timeout=10
    )
    assert (output.success, output.text) == (True, "Booked for 4.")


async def test_a_function_that_raises_is_an_error_reply_and_the_service_goes_on(
    parts: NatsBroker, subjects: Subjects
) -> None:
    asked = InvokeAction(
        agent_id="a1", agent_name="Eliza", message=ASKED.message, parameters={"people": 0}
    )
    with pytest.raises(Internal):
        await request(parts, subjects.action_invoke("BOOK_TABLE"), asked, ActionOutput, timeout=10)
    output = await request(
        parts, subjects.provider_get("WEATHER"), ASKED, ProviderOutput, timeout=10
    )
    assert output.text.startswith("# Weather")


async def test_a_request_it_cannot_decode_gets_a_bad_request_naming_the_field(
    nats_url: str, parts: NatsBroker, subjects: Subjects
) -> None:
    del parts
    nc = await nats.connect(nats_url)
    try:
        reply = await nc.request(
            subjects.provider_get("WEATHER"),
            b'{"type": "provider.get.v1", "agent_id": 7}',
            timeout=10,
        )
    finally:
        await nc.close()
    error = msgspec.json.decode(reply.data)
    assert error["code"] == "bad_request"
    assert "agent_id" in error["message"]


async def test_the_process_answers_health_under_its_service_name(
    nats_url: str, parts: NatsBroker, subjects: Subjects
) -> None:
    del parts
    nc = await nats.connect(nats_url)
    try:
        reply = await nc.request(subjects.health, b"{}", timeout=10)
    finally:
        await nc.close()
    health = msgspec.json.decode(reply.data, type=ServiceHealth)
    assert (health.service, health.ok) == ("remote-parts", True)


def test_a_name_that_cannot_be_a_subject_token_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="remote part name 'the weather'"):
        elizamesh.remote_parts_app(providers={"the weather": weather}, settings=Settings())
    with pytest.raises(ValueError, match="at least one provider or action"):
        elizamesh.remote_parts_app(settings=Settings())


def test_the_example_provider_imports_only_elizamesh_and_the_standard_library() -> None:
    tree = ast.parse((ROOT / "examples" / "clock_provider.py").read_text())
    imported = {
        (node.module or "" if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"elizamesh"}


async def test_the_example_clock_provider_answers_as_a_process(
    nats_url: str, subjects: Subjects
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.clock_provider",
        cwd=ROOT,
        env={
            **os.environ,
            "NATS_URL": nats_url,
            "ELIZA_NS": subjects.namespace,
            "CLOCK_ZONE": "Europe/Paris",
            "CLOCK_SAYS": "tick-tock-42",
        },
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    client = create_broker(nats_url, name="clock-client")
    try:
        async with client:
            await client.connect()
            output = await _first_answer(client, subjects)
    finally:
        process.terminate()
        await process.wait()
    assert output.text.startswith("# Time\nIt is ")
    assert "(Europe/Paris) for Eliza." in output.text
    assert output.text.endswith("tick-tock-42")
    assert output.values["zone"] == "Europe/Paris"


async def _first_answer(client: NatsBroker, subjects: Subjects) -> ProviderOutput:
    # The process takes a few seconds to start on a loaded machine: ask until it answers.
    async with asyncio.timeout(45):
        while True:
            try:
                return await request(
                    client, subjects.provider_get("CLOCK"), ASKED, ProviderOutput, timeout=2
                )
            except Unavailable:
                await asyncio.sleep(0.2)
