"""A connector resumes its own kept runs from the runs stream, and nobody else's.

A nats-server of this test's own with the generated accounts
(``shared.natsconfig``); the runtime's user publishes two runs, one owned by
each of two connectors.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client

from contracts import Content, HandleMessageResult, Subjects
from contracts.events import RunEnded, RunResponse
from contracts.subjects import ROLES
from shared.bus import create_broker, ensure_stream
from shared.natsconfig import Connector, Tenant, accounts_config, password_variable, user_name
from shared.natsserver import free_port, nats_server_binary, wait_for_port
from shared.runs import follow_kept_run

pytestmark = pytest.mark.e2e

NS = Subjects("acme")
CONNECTORS = (Connector("chat", ("cli",)), Connector("webchat", ("webchat",)))


@pytest.fixture
def accounts(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(server URL, password by user) of a nats-server with acme's generated accounts."""
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f"port: {port}\njetstream {{ store_dir: {json.dumps(str(tmp_path / 'js'))} }}\n"
        + accounts_config([Tenant("acme", CONNECTORS)])
    )
    roles = (*ROLES, *(c.name for c in CONNECTORS))
    passwords = {user_name("acme", role): uuid.uuid4().hex for role in roles}
    env = {password_variable("acme", role): passwords[user_name("acme", role)] for role in roles}
    server = subprocess.Popen(
        [str(nats_server_binary()), "-a", "127.0.0.1", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=10)
        yield f"127.0.0.1:{port}", passwords
    finally:
        server.terminate()
        server.wait(10)


def url(accounts: tuple[str, dict[str, str]], role: str) -> str:
    address, passwords = accounts
    user = user_name("acme", role)
    return f"nats://{user}:{passwords[user]}@{address}"


async def publish_run(nc: Client, run_id: str, text: str) -> None:
    """What a runtime publishes for a finished run: a response, then the end."""
    response = RunResponse(run_id=run_id, message_id="m-1", content=Content(text=text))
    ended = RunEnded(
        run_id=run_id,
        message_id="m-1",
        status="completed",
        result=HandleMessageResult(message_id="m-1", agent_id="eliza", did_respond=True),
    )
    await nc.publish(NS.run(run_id, "response"), msgspec.json.encode(response))
    await nc.publish(NS.run(run_id, "completed"), msgspec.json.encode(ended))
    await nc.flush()


async def test_a_connector_replays_its_own_kept_run_and_may_not_replay_anothers(
    accounts: tuple[str, dict[str, str]],
) -> None:
    runtime_broker = create_broker(url(accounts, "runtime"), name="runtime")
    async with runtime_broker:
        await runtime_broker.connect()
        await ensure_stream(runtime_broker, NS.runs_stream, [NS.runs_template], max_age=60)
        runtime = runtime_broker.config.connection_state.connection
        mine, theirs = NS.owned_run_id("chat"), NS.owned_run_id("webchat")
        await publish_run(runtime, mine, "for chat")
        await publish_run(runtime, theirs, "for webchat")

    chat = create_broker(url(accounts, "chat"), name="chat", inbox_prefix="_INBOX.chat")
    async with chat:
        await chat.connect()
        run = await follow_kept_run(chat, NS, mine, timeout=10)
        replayed = [event async for event, _raw in run.events()]
        assert [type(e) for e in replayed] == [RunResponse, RunEnded]
        assert isinstance(replayed[0], RunResponse)
        assert replayed[0].content.text == "for chat"

        with pytest.raises(nats.errors.TimeoutError):  # the server refused the request
            await follow_kept_run(chat, NS, theirs, timeout=2)
