"""Least privilege on a real nats-server configured by ``elizamesh nats-config``.

Two tenants (``acme`` and ``globex``), each a NATS account with a user per
service, an admin and connectors. Acme's memory service and runtime run as
processes with their own credentials and answer a connector. Every attack an
ordinary connector's credentials allowed before is tried and refused by the
server (a permission violation), while the connector's own flow works,
also with our own connectors (``elizamesh chat``, ``elizamesh webhook``, the
``ElizaOSClient``) running under connector users.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.control import OutboundMessage
from contracts.subjects import ROLES, inbox_of, outbound_consumer, run_owner
from shared.client import ElizaOSClient
from shared.natsconfig import Connector, Tenant, accounts_config, password_variable, user_name
from shared.natsserver import free_port, nats_server_binary, wait_for_port
from shared.processes import service_process
from tests.fake_openai import fake_openai_server
from tests.inbox import webhook_inbox
from tests.scripted import plan

pytestmark = pytest.mark.e2e

AGENT = "eliza"
ACME = Subjects("acme")
GLOBEX = Subjects("globex")
CONNECTORS = (
    Connector("discord", ("discord",)),
    Connector("webchat", ("webchat",)),
    Connector("chat", ("cli",)),  # elizamesh chat
    Connector("hook", ("webhook",)),  # elizamesh webhook
)
PERMISSION = "permissions violation"
SERVICES = ("memory", "embedding", "evaluator", "runtime", "gateway")
INTRUDER = "intruder"
"""The connection name of a test posing as a compromised service (its violations are expected)."""


@dataclass
class Secured:
    url: str
    passwords: dict[str, str]
    log: Path
    http_port: int

    def url_of(self, namespace: str, role: str) -> str:
        user = user_name(namespace, role)
        return self.url.replace("nats://", f"nats://{user}:{self.passwords[user]}@")

    def violations(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]

    def violations_of(self, namespace: str, role: str) -> list[str]:
        return [v for v in self.violations() if f'user:{user_name(namespace, role)}"' in v]


def _passwords() -> dict[str, str]:
    roles = [*ROLES, *(c.name for c in CONNECTORS)]
    return {user_name(ns, role): uuid.uuid4().hex for ns in ("acme", "globex") for role in roles}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """nats-server with the generated accounts (passwords from its env); acme's services up."""
    folder = tmp_path_factory.mktemp("secured")
    port = free_port()
    tenants = [Tenant("acme", CONNECTORS), Tenant("globex", CONNECTORS)]
    config = folder / "nats.conf"
    config.write_text(
        f"port: {port}\njetstream {{ store_dir: {json.dumps(str(folder / 'js'))} }}\n"
        + accounts_config(tenants)
    )
    passwords = _passwords()
    server_env = {
        password_variable(user.split("-", 1)[0], user.split("-", 1)[1]): secret
        for user, secret in passwords.items()
    }
    log = folder / "nats.log"
    server = subprocess.Popen(
        [str(nats_server_binary()), "-a", "127.0.0.1", "-c", str(config), "-l", str(log)],
        env=server_env,
    )
    with ExitStack() as stack:
        stack.callback(server.wait, 10)
        stack.callback(server.terminate)
        wait_for_port("127.0.0.1", port, timeout=10)
        secured = Secured(f"nats://127.0.0.1:{port}", passwords, log, free_port())
        character = folder / "eliza.json"
        character.write_text(json.dumps({"name": "Eliza", "id": AGENT, "bio": ["Helpful."]}))
        fake = stack.enter_context(fake_openai_server())
        fake.default = plan("Hello from the model!")
        env = {
            "ELIZA_NS": "acme",
            "DATABASE_URL": f"sqlite:///{folder / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
            "OPENAI_BASE_URL": fake.url,
            "OPENAI_API_KEY": "sk-test",
            "REQUEST_TIMEOUT": "20",
            "TASK_TICK_SECONDS": "3600",
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
            "API_PORT": str(secured.http_port),
        }
        for role in SERVICES:
            role_env = {**env, "NATS_URL": secured.url_of("acme", role)}
            stack.enter_context(service_process(role, role_env, log_dir=folder))
        wait_for_port("127.0.0.1", secured.http_port, timeout=30)
        asyncio.run(_until_agent_answers(secured))
        yield secured


async def _until_agent_answers(secured: Secured) -> None:
    nc = await nats.connect(secured.url_of("acme", "admin"))
    try:
        for _ in range(300):
            try:
                reply = await nc.request(ACME.agents_list, b"{}", timeout=1)
                if AGENT.encode() in reply.data:
                    return
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                pass
            await asyncio.sleep(0.1)
        raise TimeoutError("the runtime never hosted the agent")
    finally:
        await nc.close()


class Errors:
    """The asynchronous errors (permission violations) the server sent one connection."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, error: Exception) -> None:
        self.seen.append(str(error).lower())

    def refused(self, subject: str) -> bool:
        return any(PERMISSION in e and subject.lower() in e for e in self.seen)


async def connect(
    secured: Secured, namespace: str, role: str, errors: Errors | None = None
) -> Client:
    """Connect as ``role``; a connector uses its own inbox prefix, as its permissions require."""
    options: dict[str, Any] = {}
    if role in {c.name for c in CONNECTORS}:
        options["inbox_prefix"] = inbox_of(role)
    if errors is not None:
        options["error_cb"] = errors.record
    return await nats.connect(secured.url_of(namespace, role), **options)


async def settle(nc: Client) -> None:
    """Let the server's answers (errors included) to what was sent so far come back."""
    await nc.flush(timeout=5)
    await asyncio.sleep(0.2)


def _message(text: str, *, run_id: str | None = None, room: str = "room-1") -> HandleMessage:
    return HandleMessage(
        entity_id="user-1",
        room_id=room,
        content=Content(text=text),
        run_id=run_id,
        reply_at_once=run_id is not None,
    )


async def _follow_own_run(nc: Client, subjects: Subjects, owner: str) -> list[str]:
    """Send one message in async mode and read the run's subjects to its end."""
    run_id = subjects.owned_run_id(owner)
    seen: list[str] = []
    ended = asyncio.Event()

    async def on_run(msg: Any) -> None:
        seen.append(msg.subject)
        if msg.subject.endswith((".completed", ".failed")):
            ended.set()

    await nc.subscribe(subjects.run_template(run_id), cb=on_run)
    reply = await nc.request(
        subjects.message_handle(AGENT),
        msgspec.json.encode(_message("hi", run_id=run_id)),
        timeout=20,
    )
    assert msgspec.json.decode(reply.data, type=HandleMessageResult).run_id == run_id
    await asyncio.wait_for(ended.wait(), 20)
    return seen


async def test_a_connector_sends_follows_its_run_and_drains_its_platforms_outbound(
    secured: Secured,
) -> None:
    errors = Errors()
    nc = await connect(secured, "acme", "discord", errors)
    runtime = await nats.connect(secured.url_of("acme", "runtime"))
    try:
        seen = await _follow_own_run(nc, ACME, "discord")
        assert seen[-1].endswith(".completed")
        assert any(s.endswith(".response") for s in seen)
        assert all(s.startswith("acme.run.discord.") for s in seen)

        sent = OutboundMessage(
            agent_id=AGENT, source="discord", room_id="room-1", content=Content(text="ping")
        )
        await runtime.jetstream().publish(ACME.outbound("discord"), msgspec.json.encode(sent))
        js = nc.jetstream()
        pull = await js.pull_subscribe(
            ACME.outbound("discord"),
            durable=outbound_consumer("discord"),
            stream=ACME.outbound_stream,
            config=ConsumerConfig(ack_wait=30),
        )
        [delivered] = await pull.fetch(1, timeout=5)
        await delivered.ack()
        assert msgspec.json.decode(delivered.data, type=OutboundMessage).content.text == "ping"
        await settle(nc)
        assert errors.seen == []
    finally:
        await nc.close()
        await runtime.close()


async def test_a_connector_cannot_read_memory_overhear_runs_or_events_or_command_agents(
    secured: Secured,
) -> None:
    errors = Errors()
    nc = await connect(secured, "acme", "discord", errors)
    try:
        got: list[str] = []

        async def overheard(msg: Any) -> None:
            got.append(msg.subject)

        for subject in ("acme.memory.*", "acme.run.>", "acme.run.webchat.*.*", "acme.event.>", ">"):
            await nc.subscribe(subject, cb=overheard)
        forbidden = [
            ACME.memory_operation("get_agent"),
            ACME.memory_operation("delete_agent"),
            ACME.agent_command(AGENT, "delete"),
            ACME.agent_command(AGENT, "stop"),
            ACME.agents_add,
            ACME.agents_list,
            ACME.event(AGENT, "message.sent"),
            f"$KV.ACME_ROOM_LEASES.{AGENT}.room-1",
            "$JS.API.STREAM.DELETE.ACME_EVENTS",
            f"$JS.API.CONSUMER.CREATE.{ACME.events_stream}",
            f"$JS.API.CONSUMER.CREATE.{ACME.runs_stream}.spy.acme.run.>",
            f"$JS.API.CONSUMER.CREATE.{ACME.outbound_stream}.spy.acme.outbound.webchat.send",
            f"$JS.API.CONSUMER.MSG.NEXT.{ACME.outbound_stream}.{outbound_consumer('webchat')}",
            "_INBOX.anyone.reply",
        ]
        for subject in forbidden:
            await nc.publish(subject, b"{}")
        await settle(nc)

        # Another connector's turn runs meanwhile: nothing of it reaches this one.
        other = await connect(secured, "acme", "webchat")
        try:
            await _follow_own_run(other, ACME, "webchat")
        finally:
            await other.close()
        await settle(nc)
        assert got == []
        for subject in ("acme.memory.*", "acme.run.>", "acme.run.webchat.*.*", "acme.event.>"):
            assert errors.refused(f'subscription to "{subject}"'), subject
        for subject in forbidden:
            assert errors.refused(f'publish to "{subject}"'), subject
        assert nc.is_connected  # refused, not disconnected: the connector keeps working
    finally:
        await nc.close()


async def test_a_connector_cannot_answer_in_the_agents_place(secured: Secured) -> None:
    attacker_errors = Errors()
    attacker = await connect(secured, "acme", "discord", attacker_errors)
    victim = await connect(secured, "acme", "webchat")
    forged = "FORGED"
    try:

        async def answer(msg: Any) -> None:
            await msg.respond(forged.encode())

        # The attack that forged 6-7 replies of 20: listen on the request subject, answer first.
        await attacker.subscribe(ACME.message_handle(AGENT), cb=answer)
        await attacker.subscribe(ACME.message_handle_template, queue="runtime", cb=answer)
        await settle(attacker)
        replies = [
            await victim.request(
                ACME.message_handle(AGENT),
                msgspec.json.encode(_message(f"question {i}", room=f"room-{i}")),
                timeout=20,
            )
            for i in range(20)
        ]
        forgeries = sum(forged.encode() in r.data for r in replies)
        assert forgeries == 0, f"{forgeries} of 20 replies forged"
        for reply in replies:
            msgspec.json.decode(reply.data, type=HandleMessageResult)
        await settle(attacker)
        assert attacker_errors.refused(f'subscription to "{ACME.message_handle(AGENT)}"')
    finally:
        await attacker.close()
        await victim.close()


async def test_two_tenants_cannot_reach_each_others_agents_runs_events_or_memories(
    secured: Secured,
) -> None:
    errors = Errors()
    # Globex's admin has the broadest permissions in its account.
    intruder = await connect(secured, "globex", "admin", errors)
    acme = await connect(secured, "acme", "discord")
    try:
        got: list[str] = []

        async def overheard(msg: Any) -> None:
            got.append(msg.subject)

        await intruder.subscribe("_INBOX.>", cb=overheard)
        await intruder.subscribe(GLOBEX.runs_template, cb=overheard)
        await intruder.subscribe("acme.>", cb=overheard)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await intruder.request(ACME.agents_list, b"{}", timeout=1)
        with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
            await intruder.request(ACME.memory_operation("get_agent"), b"{}", timeout=1)
        with pytest.raises((nats.js.errors.NotFoundError, nats.errors.TimeoutError)):
            await intruder.jetstream().stream_info(ACME.events_stream)
        await _follow_own_run(acme, ACME, "discord")
        await settle(intruder)
        assert got == []
        assert errors.refused('subscription to "acme.>"')
    finally:
        await intruder.close()
        await acme.close()


def test_every_service_works_with_its_own_credentials_and_is_refused_nothing(
    secured: Secured,
) -> None:
    body = {"entity_id": "user-2", "room_id": "room-http", "content": {"text": "hello"}}
    url = f"http://127.0.0.1:{secured.http_port}/v1/agents/{AGENT}/messages"
    with httpx.stream("POST", f"{url}/stream", json=body, timeout=30) as streamed:
        events = [line for line in streamed.iter_lines() if line.startswith("event:")]
    assert events[-1] == "event: completed"
    assert httpx.get(f"http://127.0.0.1:{secured.http_port}/v1/ready", timeout=10).json()["ready"]
    asyncio.run(_until_queues_drain(secured))
    from_services = [
        line
        for line in secured.violations()
        if any(f'user:acme-{role}"' in line for role in SERVICES) and INTRUDER not in line
    ]
    assert from_services == []


async def _until_queues_drain(secured: Secured) -> None:
    """Wait until the embedding and evaluation queues are empty (their services took them)."""
    nc = await nats.connect(secured.url_of("acme", "runtime"))
    try:
        js = nc.jetstream()
        for _ in range(100):
            waiting = [
                (await js.stream_info(name)).state.messages
                for name in (ACME.embedding_stream, ACME.evaluation_stream)
            ]
            if not any(waiting):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"queues never drained: {waiting}")
    finally:
        await nc.close()


def test_our_chat_connector_streams_its_own_run_with_connector_credentials(
    secured: Secured,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "elizamesh", "chat", "--agent", AGENT, "--connector", "chat"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NATS_URL": secured.url_of("acme", "chat"), "ELIZA_NS": "acme"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{AGENT}> Hello from the model!" in done.stdout
    assert secured.violations_of("acme", "chat") == []


async def test_the_client_as_a_connector_follows_its_run_and_sees_its_platforms_outbound(
    secured: Secured,
) -> None:
    client = ElizaOSClient(
        secured.url_of("acme", "chat"), namespace="acme", timeout=20, connector="chat"
    )
    live = await connect(secured, "acme", "chat")
    runtime = await nats.connect(secured.url_of("acme", "runtime"))
    seen: list[OutboundMessage] = []

    async def show(msg: Any) -> None:
        seen.append(msgspec.json.decode(msg.data, type=OutboundMessage))

    try:
        await live.subscribe(ACME.outbound("cli"), cb=show)
        await settle(live)
        async with client:
            replies: list[str] = []
            ended = asyncio.Event()

            async def on_response(content: Content) -> None:
                replies.append(content.text or "")

            async def on_complete() -> None:
                ended.set()

            chosen = msgspec.structs.replace(_message("hi"), run_id="not-mine")
            ack = await client.handle_message(
                AGENT, chosen, on_response=on_response, on_complete=on_complete
            )
            await asyncio.wait_for(ended.wait(), 20)
            answered = await client.handle_message(AGENT, _message("and again"))
        assert ack.run_id is not None
        assert run_owner(ack.run_id) == "chat"  # its own run, whatever id the caller chose
        assert replies == ["Hello from the model!"]
        assert answered.did_respond  # a plain request: the reply came on its inbox

        sent = OutboundMessage(
            agent_id=AGENT, source="cli", room_id="cli-u", content=Content(text="ping")
        )
        await runtime.jetstream().publish(ACME.outbound("cli"), msgspec.json.encode(sent))
        for _ in range(50):
            if seen:
                break
            await asyncio.sleep(0.1)
        assert [m.content.text for m in seen] == ["ping"]
    finally:
        await live.close()
        await runtime.close()
    assert secured.violations_of("acme", "chat") == []


def test_our_webhook_connector_waits_for_the_stream_then_delivers_with_connector_credentials(
    secured: Secured, tmp_path: Path
) -> None:
    """Globex runs no runtime: the connector waits for its stream, never creates it."""
    env = {"NATS_URL": secured.url_of("globex", "hook"), "ELIZA_NS": "globex"}
    with webhook_inbox() as inbox:
        args = ["webhook", "--source", "webhook", "--url", inbox.url, "--connector", "hook"]
        with service_process("webhook", env, log_dir=tmp_path, module="elizamesh", args=args):
            log = tmp_path / "webhook.log"
            _until(lambda: GLOBEX.outbound_stream in log.read_text(), timeout=20)
            asyncio.run(_declare_and_send(secured, "delivered by the connector"))
            [delivered] = inbox.wait_for(1, timeout=20)
    assert delivered["content"]["text"] == "delivered by the connector"
    assert secured.violations_of("globex", "hook") == []


async def _declare_and_send(secured: Secured, text: str) -> None:
    """As globex's runtime would: declare the outbound stream and send on the webhook platform."""
    nc = await nats.connect(secured.url_of("globex", "runtime"))
    try:
        js = nc.jetstream()
        await js.add_stream(name=GLOBEX.outbound_stream, subjects=[GLOBEX.outbound_template])
        sent = OutboundMessage(
            agent_id=AGENT, source="webhook", room_id="room-1", content=Content(text=text)
        )
        await js.publish(GLOBEX.outbound("webhook"), msgspec.json.encode(sent))
    finally:
        await nc.close()


def _until(condition: Any, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never held")
        time.sleep(0.1)


async def test_the_gateways_user_cannot_overhear_other_clients_replies(secured: Secured) -> None:
    errors = Errors()
    gateway = await nats.connect(
        secured.url_of("acme", "gateway"),
        name=INTRUDER,
        inbox_prefix=inbox_of("gateway"),
        error_cb=errors.record,
    )
    chat = await connect(secured, "acme", "chat")
    try:
        got: list[str] = []

        async def overheard(msg: Any) -> None:
            got.append(msg.subject)

        await gateway.subscribe("_INBOX.>", cb=overheard)
        await gateway.subscribe(f"{inbox_of('chat')}.>", cb=overheard)
        await settle(gateway)
        reply = await chat.request(
            ACME.message_handle(AGENT), msgspec.json.encode(_message("hi")), timeout=20
        )
        assert msgspec.json.decode(reply.data, type=HandleMessageResult).did_respond
        await settle(gateway)
        assert got == []
        assert errors.refused('subscription to "_INBOX.>"')
        assert errors.refused(f'subscription to "{inbox_of("chat")}.>"')
    finally:
        await gateway.close()
        await chat.close()
