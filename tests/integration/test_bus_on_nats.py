"""The bus on a real nats-server: typed replies, typed errors, raw clients in any language."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import msgspec
import nats
import nats.js.errors
import pytest
from faststream.nats import NatsBroker

from contracts import (
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    Content,
    Error,
    ErrorCode,
    HandleMessage,
    HandleMessageResult,
    Subjects,
)
from shared.bus import (
    create_broker,
    ensure_stream,
    request,
    start_serving,
    subscriptions_registered,
)
from shared.config import Settings
from shared.errors import Unavailable
from tests.echo import echo_broker

HELLO = HandleMessage(entity_id="user-1", room_id="room-1", content=Content(text="hello"))


@pytest.fixture
async def runtime(nats_url: str, subjects: Subjects) -> AsyncIterator[NatsBroker]:
    broker = echo_broker(Settings(nats_url=nats_url, eliza_ns=subjects.namespace))
    async with broker:
        await start_serving(broker)
        yield broker


@pytest.fixture
async def client(nats_url: str) -> AsyncIterator[NatsBroker]:
    broker = create_broker(nats_url, name="test-client")
    async with broker:
        await broker.connect()
        yield broker


async def test_a_request_through_nats_returns_the_runtime_reply(
    runtime: NatsBroker, client: NatsBroker, subjects: Subjects
) -> None:
    result = await request(
        client, subjects.message_handle("agent-7"), HELLO, HandleMessageResult, timeout=5
    )
    assert result.agent_id == "agent-7"
    assert result.response_content == Content(
        text="hello", actions=["REPLY"], in_reply_to=HELLO.message_id
    )


async def test_a_plain_nats_client_gets_an_error_body_and_service_error_headers(
    runtime: NatsBroker, nats_url: str, subjects: Subjects
) -> None:
    nc = await nats.connect(nats_url)
    try:
        bad = await nc.request(subjects.message_handle("agent-7"), b"{oops", timeout=5)
        good = await nc.request(
            subjects.message_handle("agent-7"),
            b'{"entity_id": "u", "room_id": "r", "content": {"text": "still there?"}}',
            timeout=5,
        )
    finally:
        await nc.close()
    error = msgspec.json.decode(bad.data, type=Error)
    assert error.code is ErrorCode.BAD_REQUEST
    assert error.message.startswith("malformed JSON")
    assert bad.headers is not None
    assert bad.headers[ERROR_CODE_HEADER] == "400"
    assert bad.headers[ERROR_HEADER] == error.message
    answer = msgspec.json.decode(good.data, type=HandleMessageResult)
    assert answer.response_content is not None
    assert answer.response_content.text == "still there?"


async def test_no_listener_is_reported_as_unavailable_not_a_hang(
    client: NatsBroker, subjects: Subjects
) -> None:
    with pytest.raises(Unavailable, match=r"no service is listening|no reply"):
        await request(
            client, subjects.message_handle("nobody"), HELLO, HandleMessageResult, timeout=1
        )


async def test_a_slow_listener_is_reported_as_unavailable_after_the_timeout(
    client: NatsBroker, nats_url: str, subjects: Subjects
) -> None:
    nc = await nats.connect(nats_url)
    await nc.subscribe(subjects.message_handle("sloth"))  # listens, never answers
    await subscriptions_registered(nc)
    try:
        with pytest.raises(Unavailable, match=r"no reply on .* within 0.3s") as caught:
            await request(
                client, subjects.message_handle("sloth"), HELLO, HandleMessageResult, timeout=0.3
            )
    finally:
        await nc.close()
    assert caught.value.to_error().retryable


async def test_streams_are_declared_with_the_configured_number_of_replicas(
    client: NatsBroker, subjects: Subjects, monkeypatch: pytest.MonkeyPatch
) -> None:
    js = client.config.connection_state.stream
    name = f"{subjects.namespace.upper()}_REPLICAS"
    await ensure_stream(client, name, [f"{subjects.namespace}.replicas.>"])
    try:
        assert (await js.stream_info(name)).config.num_replicas == 1
    finally:
        await js.delete_stream(name)
    # Three copies need a three-node cluster: the single test server refuses them.
    monkeypatch.setenv("JETSTREAM_REPLICAS", "3")
    with pytest.raises(nats.js.errors.APIError, match="replicas"):
        await ensure_stream(client, name, [f"{subjects.namespace}.replicas.>"])


async def test_a_request_sent_right_after_start_serving_always_finds_the_subscriber(
    client: NatsBroker, nats_url: str
) -> None:
    # nats-py sends a flush's PING ahead of queued SUBs; a single flush let
    # about 1 request in 100 here find "no responders".
    for _ in range(100):
        subjects = Subjects(f"t{uuid.uuid4().hex[:12]}")
        async with echo_broker(Settings(nats_url=nats_url, eliza_ns=subjects.namespace)) as echo:
            await start_serving(echo)
            await request(
                client, subjects.message_handle("a"), HELLO, HandleMessageResult, timeout=5
            )
