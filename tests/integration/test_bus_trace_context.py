"""Across the bus, a quiet service passes the trace on without making spans; a listened one traces.

Two brokers on the shared NATS server, each with the bus middleware of its
own tracer provider, one request between them.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Content, HandleMessage, HandleMessageResult
from shared.bus import create_broker, request, start_serving
from shared.telemetry import QuietTracerProvider, bus_telemetry

ASKED = HandleMessage(entity_id="user-1", room_id="room-1", content=Content(text="hello"))


def quiet() -> QuietTracerProvider:
    return QuietTracerProvider(resource=Resource.create({"service.name": "test"}))


class Pair:
    """A serving broker that notes the trace context its handler runs in, and a caller."""

    def __init__(self, nats_url: str, provider: QuietTracerProvider) -> None:
        self.provider = provider
        self.subject = f"test.trace.{uuid.uuid4().hex}"
        self.seen: list[trace.SpanContext] = []
        self.server = create_broker(nats_url, name="server", middlewares=[bus_telemetry(provider)])
        self.caller = create_broker(nats_url, name="caller", middlewares=[bus_telemetry(provider)])

        @self.server.subscriber(self.subject)
        async def handle(body: HandleMessage) -> HandleMessageResult:
            self.seen.append(trace.get_current_span().get_span_context())
            return HandleMessageResult(agent_id="a", message_id=body.message_id, did_respond=False)

    async def ask(self) -> HandleMessageResult:
        return await request(self.caller, self.subject, ASKED, HandleMessageResult, timeout=5)


@pytest.fixture
async def pair(nats_url: str, request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    provider: QuietTracerProvider = request.param()
    made = Pair(nats_url, provider)
    async with made.server, made.caller:
        await start_serving(made.server)
        await made.caller.connect()
        yield made


async def ask_inside(pair: Pair, caller: trace.Span) -> None:
    with trace.use_span(caller):
        await pair.ask()


@pytest.mark.parametrize("pair", [quiet], indirect=True)
async def test_a_quiet_handler_runs_in_the_callers_trace_and_span(pair: Pair) -> None:
    caller = trace.NonRecordingSpan(
        trace.SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=False)
    )
    await ask_inside(pair, caller)
    [seen] = pair.seen
    assert (seen.trace_id, seen.span_id) == (0xABC, 0xDEF)  # no span made in between


@pytest.mark.parametrize("pair", [quiet], indirect=True)
async def test_a_quiet_handler_without_a_caller_trace_gets_a_trace_of_its_own(
    pair: Pair,
) -> None:
    await pair.ask()
    await pair.ask()
    first, second = pair.seen
    assert first.is_valid
    assert second.is_valid
    assert first.trace_id != second.trace_id
    assert not first.trace_flags.sampled


@pytest.mark.parametrize("pair", [quiet], indirect=True)
async def test_once_someone_listens_the_bus_makes_spans_again(pair: Pair) -> None:
    provider = pair.provider
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("test").start_as_current_span("caller") as caller:
        await pair.ask()
    [seen] = pair.seen
    assert seen.trace_id == caller.get_span_context().trace_id
    assert seen.span_id != caller.get_span_context().span_id
    kinds = {s.kind for s in spans.get_finished_spans() if s.name != "caller"}
    assert {trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER} <= kinds
