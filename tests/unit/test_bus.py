"""The bus maps every failure of a handler to a typed ``Error`` reply (in-memory broker)."""

from __future__ import annotations

import msgspec
import pytest
from faststream.nats import NatsBroker, TestNatsBroker

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
from shared.bus import create_broker, request
from shared.config import Settings
from shared.errors import BadRequest, Internal, NotFound
from tests.echo import echo_broker

HELLO = HandleMessage(entity_id="user-1", room_id="room-1", content=Content(text="hello"))


def runtime_broker(subjects: Subjects) -> NatsBroker:
    return echo_broker(Settings(eliza_ns=subjects.namespace))


async def raw_reply(broker: NatsBroker, subject: str, body: bytes) -> tuple[Error, dict[str, str]]:
    reply = await broker.request(body, subject, timeout=2)
    return msgspec.json.decode(reply.body, type=Error), dict(reply.headers)


async def test_request_returns_the_typed_result(subjects: Subjects) -> None:
    broker = runtime_broker(subjects)
    async with TestNatsBroker(broker):
        result = await request(
            broker, subjects.message_handle("agent-1"), HELLO, HandleMessageResult, timeout=2
        )
    assert result.agent_id == "agent-1"
    assert result.message_id == HELLO.message_id
    assert result.response_content is not None
    assert result.response_content.text == "hello"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"{not json", "malformed JSON"),
        (b"", "malformed JSON"),
        (b'{"entity_id": "u", "content": {}}', "Object missing required field `room_id`"),
        (b'{"entity_id": "u u", "room_id": "r", "content": {}}', "at `$.entity_id`"),
        (b'{"entity_id": "u", "room_id": "r", "content": {"text": 7}}', "at `$.content.text`"),
        (b'{"type": "nope.v1", "entity_id": "u", "room_id": "r", "content": {}}', "`$.type`"),
        (
            b'{"entity_id": "u", "room_id": "r", "content": {"text": "' + b"x" * 100_001 + b'"}}',
            "Expected `str` of length <= 100000",
        ),
    ],
)
async def test_bad_input_gets_a_bad_request_reply_and_the_service_keeps_serving(
    subjects: Subjects, body: bytes, expected: str
) -> None:
    broker = runtime_broker(subjects)
    subject = subjects.message_handle("agent-1")
    async with TestNatsBroker(broker):
        error, headers = await raw_reply(broker, subject, body)
        still_served = await request(broker, subject, HELLO, HandleMessageResult, timeout=2)
    assert error.code is ErrorCode.BAD_REQUEST
    assert expected in error.message
    assert "request" not in error.message.split("invalid request")[-1]  # no handler internals
    assert headers[ERROR_CODE_HEADER] == "400"
    assert headers[ERROR_HEADER] == error.message
    assert still_served.did_respond


async def test_request_raises_the_service_error_the_handler_raised(subjects: Subjects) -> None:
    broker = create_broker("nats://unused", name="test")

    @broker.subscriber(subjects.message_handle("agent-1"))
    async def lookup(request: HandleMessage) -> HandleMessageResult:
        raise NotFound(f"no agent for room {request.room_id}", details={"room_id": request.room_id})

    async with TestNatsBroker(broker):
        with pytest.raises(NotFound) as caught:
            await request(
                broker, subjects.message_handle("agent-1"), HELLO, HandleMessageResult, timeout=2
            )
    assert caught.value.message == "no agent for room room-1"
    assert caught.value.details == {"room_id": "room-1"}
    assert isinstance(caught.value, LookupError)


async def test_an_unexpected_exception_becomes_an_opaque_internal_error(
    subjects: Subjects, caplog: pytest.LogCaptureFixture
) -> None:
    broker = create_broker("nats://unused", name="test")

    @broker.subscriber(subjects.message_handle("agent-1"))
    async def crash(request: HandleMessage) -> HandleMessageResult:
        raise RuntimeError("secret database password in a stack trace")

    async with TestNatsBroker(broker):
        error, headers = await raw_reply(
            broker, subjects.message_handle("agent-1"), msgspec.json.encode(HELLO)
        )
        with pytest.raises(Internal):
            await request(
                broker, subjects.message_handle("agent-1"), HELLO, HandleMessageResult, timeout=2
            )
    assert error.code is ErrorCode.INTERNAL
    assert "secret" not in error.message
    assert error.correlation_id
    assert headers[ERROR_CODE_HEADER] == "500"
    assert any("secret database password" in r.exc_text for r in caplog.records if r.exc_text)


async def test_a_bad_agent_id_in_the_subject_is_a_bad_request(subjects: Subjects) -> None:
    broker = runtime_broker(subjects)
    subject = subjects.message_handle_template.replace("*", "bad%id")
    async with TestNatsBroker(broker):
        with pytest.raises(BadRequest, match="invalid agent_id 'bad%id'"):
            await request(broker, subject, HELLO, HandleMessageResult, timeout=2)
