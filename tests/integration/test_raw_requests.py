"""A raw nats-py request server answers as a FastStream subscriber of the bus does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import ERROR_CODE_HEADER, ERROR_HEADER, Error, ErrorCode, Message, Subjects
from shared.bus import ServiceBroker, create_broker, request, start_serving
from shared.errors import NotFound
from shared.raw_requests import RequestServer, serve_requests
from shared.telemetry import bus_telemetry


class Ping(Message, kw_only=True, frozen=True, tag="test.ping.v1"):
    text: str


class Pong(Message, kw_only=True, frozen=True, tag="test.pong.v1"):
    text: str
    trace_id: int = 0


async def pong(msg: Msg) -> Message:
    ping = msgspec.json.decode(msg.data, type=Ping)
    if ping.text == "missing":
        raise NotFound("no such thing " + "x" * 5000)
    if ping.text == "crash":
        raise RuntimeError("secret internals")
    if ping.text == "huge":
        return Pong(text="x" * 2_000_000)
    trace_id = trace.get_current_span().get_span_context().trace_id
    return Pong(text=ping.text, trace_id=trace_id)


@pytest.fixture
async def served(nats_url: str, subjects: Subjects) -> AsyncIterator[tuple[ServiceBroker, str]]:
    """A broker serving ``<ns>.ping`` with ``pong``, and the subject."""
    subject = f"{subjects.namespace}.ping"
    broker = create_broker(nats_url, name="raw-test-server")
    serve_requests(broker, subject, pong, queue="pingers", max_workers=4)
    async with broker:
        await start_serving(broker)
        yield broker, subject


@pytest.fixture
async def raw(nats_url: str) -> AsyncIterator[Client]:
    """A plain NATS client, as a connector in another language would use."""
    nc = await nats.connect(nats_url)
    yield nc
    await nc.close()


async def test_a_request_gets_the_typed_result(
    served: tuple[ServiceBroker, str], nats_url: str
) -> None:
    _, subject = served
    caller = create_broker(nats_url, name="raw-test-client")
    async with caller:
        await caller.connect()
        result = await request(caller, subject, Ping(text="hi"), Pong, timeout=5)
    assert result.text == "hi"


async def test_a_traced_request_is_handled_in_a_consumer_span_of_its_trace(
    served: tuple[ServiceBroker, str], nats_url: str, recorded_spans: InMemorySpanExporter
) -> None:
    _, subject = served
    telemetry = bus_telemetry(trace.get_tracer_provider())
    caller = create_broker(nats_url, name="raw-test-client", middlewares=[telemetry])
    async with caller:
        await caller.connect()
        with trace.get_tracer("test").start_as_current_span("caller") as span:
            result = await request(caller, subject, Ping(text="hi"), Pong, timeout=5)
    trace_id = span.get_span_context().trace_id
    assert result.trace_id == trace_id
    consumers = [s for s in recorded_spans.get_finished_spans() if s.name == f"process {subject}"]
    assert [s.kind for s in consumers] == [trace.SpanKind.CONSUMER]
    assert consumers[0].context is not None
    assert consumers[0].context.trace_id == trace_id


async def test_a_failure_is_an_error_reply_with_service_headers_and_correlation_id(
    served: tuple[ServiceBroker, str], raw: Client
) -> None:
    _, subject = served
    reply = await raw.request(
        subject,
        msgspec.json.encode(Ping(text="missing")),
        timeout=5,
        headers={"correlation_id": "c-1"},
    )
    error = msgspec.json.decode(reply.data, type=Error)
    headers = reply.headers or {}
    assert error.code == ErrorCode.NOT_FOUND
    assert error.correlation_id == "c-1"
    assert len(error.message) <= 1024  # the input it quotes is cut
    assert headers[ERROR_CODE_HEADER] == "404"
    assert len(headers[ERROR_HEADER]) <= 256
    assert headers["correlation_id"] == "c-1"


async def test_an_unexpected_failure_is_an_opaque_internal_error(
    served: tuple[ServiceBroker, str], raw: Client
) -> None:
    _, subject = served
    reply = await raw.request(subject, msgspec.json.encode(Ping(text="crash")), timeout=5)
    error = msgspec.json.decode(reply.data, type=Error)
    assert error.code == ErrorCode.INTERNAL
    assert "secret" not in error.message


async def test_a_reply_over_the_max_payload_is_an_internal_error(
    served: tuple[ServiceBroker, str], raw: Client
) -> None:
    _, subject = served
    reply = await raw.request(subject, msgspec.json.encode(Ping(text="huge")), timeout=5)
    error = msgspec.json.decode(reply.data, type=Error)
    assert error.code == ErrorCode.INTERNAL
    assert "larger than the NATS server accepts" in error.message


async def test_stopping_answers_the_requests_under_way_and_queued_first(
    nats_url: str, subjects: Subjects, raw: Client
) -> None:
    subject = f"{subjects.namespace}.slow"
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(msg: Msg) -> Message:
        started.set()
        await release.wait()
        return Pong(text=msg.data.decode())

    broker = create_broker(nats_url, name="raw-test-server")
    server = serve_requests(broker, subject, slow, queue="slow", max_workers=1)
    async with broker:
        await start_serving(broker)
        assert server.health("slow").alive
        first = asyncio.create_task(raw.request(subject, b"first", timeout=10))
        await asyncio.wait_for(started.wait(), timeout=5)
        queued = asyncio.create_task(raw.request(subject, b"queued", timeout=10))
        await raw.flush()
        stopping = asyncio.create_task(server.stop())
        await asyncio.sleep(0.1)
        assert not stopping.done()  # it waits for the request under way
        release.set()
        await asyncio.wait_for(stopping, timeout=5)
        replies = [await first, await queued]
        assert [msgspec.json.decode(r.data, type=Pong).text for r in replies] == [
            "first",
            "queued",
        ]
        assert not server.health("slow").alive


async def test_no_more_requests_run_at_once_than_max_workers(
    nats_url: str, subjects: Subjects, raw: Client
) -> None:
    subject = f"{subjects.namespace}.count"
    running, most = 0, 0

    async def counted(msg: Msg) -> Message:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)
        running -= 1
        return Pong(text="ok")

    broker = create_broker(nats_url, name="raw-test-server")
    serve_requests(broker, subject, counted, queue="count", max_workers=3)
    async with broker:
        await start_serving(broker)
        replies = await asyncio.gather(
            *(raw.request(subject, b"{}", timeout=10) for _ in range(12))
        )
    assert len(replies) == 12
    assert most == 3


def test_a_server_needs_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        RequestServer("x", pong, queue="q", max_workers=0)
