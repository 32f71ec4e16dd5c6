"""Events on a real nats-server: published without awaiting acks, in order, none lost silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
import pytest
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import Subjects
from contracts.events import AgentEventOccurred
from shared.bus import create_broker, ensure_stream, subscriptions_registered
from shared.client import ElizaOSClient
from shared.events import EventPublisher
from shared.telemetry import span


def event(i: int) -> AgentEventOccurred:
    return AgentEventOccurred(agent_id="agent-1", event_type="run.started", data={"i": i})


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[NatsBroker]:
    broker = create_broker(nats_url, name="test-events")
    async with broker:
        await broker.connect()
        yield broker


@pytest.fixture
async def events_stream(broker: NatsBroker, subjects: Subjects) -> AsyncIterator[str]:
    await ensure_stream(broker, subjects.events_stream, [subjects.events_template])
    yield subjects.events_stream
    await jetstream(broker).delete_stream(subjects.events_stream)


def jetstream(broker: NatsBroker) -> JetStreamContext:
    js: JetStreamContext = broker.config.connection_state.stream
    return js


async def stored(broker: NatsBroker, stream: str) -> list[AgentEventOccurred]:
    js = jetstream(broker)
    count = (await js.stream_info(stream)).state.messages
    return [
        msgspec.json.decode((await js.get_msg(stream, seq)).data or b"", type=AgentEventOccurred)
        for seq in range(1, count + 1)
    ]


async def test_events_published_without_awaiting_acks_all_arrive_in_order(
    broker: NatsBroker, subjects: Subjects, events_stream: str
) -> None:
    publisher = EventPublisher(broker, stream=events_stream)
    sent = [event(i) for i in range(300)]
    for message in sent:
        await publisher.publish(message, subjects.event("agent-1", "run.started"))
    assert publisher.outstanding > 0  # publish returned before the last acks came back
    await publisher.close()
    assert (publisher.acknowledged, publisher.failures) == (300, 0)
    assert [e.event_id for e in await stored(broker, events_stream)] == [e.event_id for e in sent]


async def test_a_publish_no_stream_captures_is_logged_and_counted_not_raised(
    broker: NatsBroker, subjects: Subjects, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    publisher = EventPublisher(broker, meter=meter)
    subject = subjects.event("agent-1", "run.started")  # no stream in this namespace
    with caplog.at_level(logging.WARNING, logger="elizamesh.events"):
        await publisher.publish(event(0), subject)
        await publisher.flush(timeout=5)
    assert (publisher.acknowledged, publisher.failures) == (0, 1)
    assert any(subject in r.getMessage() for r in caplog.records)
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "elizamesh.events.publish_failures"
        for point in metric.data.data_points
    ]
    assert [(p.value, p.attributes) for p in points] == [  # type: ignore[union-attr]
        (1, {"stream": "", "error": "NoStreamResponseError"})
    ]


async def test_close_waits_for_every_outstanding_ack(
    broker: NatsBroker, subjects: Subjects, events_stream: str
) -> None:
    publisher = EventPublisher(broker, stream=events_stream)
    for i in range(100):
        await publisher.publish(event(i), subjects.event("agent-1", "run.started"))
    assert publisher.acknowledged < 100
    await publisher.close()
    assert (publisher.outstanding, publisher.acknowledged) == (0, 100)


async def test_an_ack_that_never_comes_times_out_and_is_counted(
    broker: NatsBroker, subjects: Subjects, caplog: pytest.LogCaptureFixture
) -> None:
    # A plain subscriber that never replies: the publish has a responder, but no ack.
    subject = subjects.event("agent-1", "run.started")
    silent = await broker.config.connection_state.connection.subscribe(subject)
    await subscriptions_registered(broker.config.connection_state.connection)
    publisher = EventPublisher(broker, ack_timeout=0.3)
    with caplog.at_level(logging.WARNING, logger="elizamesh.events"):
        await publisher.publish(event(0), subject)
        await publisher.close()
    await silent.unsubscribe()
    assert (publisher.outstanding, publisher.failures) == (0, 1)
    assert any("no acknowledgement within 0.3s" in r.getMessage() for r in caplog.records)


async def test_the_window_bounds_outstanding_acks(
    broker: NatsBroker, subjects: Subjects, events_stream: str
) -> None:
    publisher = EventPublisher(broker, stream=events_stream, window=8)
    seen = 0
    for i in range(200):
        await publisher.publish(event(i), subjects.event("agent-1", "run.started"))
        seen = max(seen, publisher.outstanding)
    await publisher.close()
    assert seen == publisher.max_outstanding == 8
    assert (publisher.acknowledged, len(await stored(broker, events_stream))) == (200, 200)


async def test_a_full_window_makes_publish_wait_for_room(
    broker: NatsBroker, subjects: Subjects
) -> None:
    subject = subjects.event("agent-1", "run.started")
    silent = await broker.config.connection_state.connection.subscribe(subject)
    await subscriptions_registered(broker.config.connection_state.connection)
    publisher = EventPublisher(broker, window=4, ack_timeout=0.5)
    for i in range(4):
        await asyncio.wait_for(publisher.publish(event(i), subject), 0.1)
    fifth = asyncio.create_task(publisher.publish(event(4), subject))
    await asyncio.sleep(0.2)
    assert not fifth.done()
    await asyncio.wait_for(fifth, 2)  # room once the first acks time out
    await publisher.close()
    await silent.unsubscribe()
    assert (publisher.failures, publisher.max_outstanding) == (5, 4)


async def test_the_trace_of_the_turn_travels_in_the_headers(
    broker: NatsBroker,
    subjects: Subjects,
    events_stream: str,
    recorded_spans: InMemorySpanExporter,
) -> None:
    publisher = EventPublisher(broker, stream=events_stream)
    subject = subjects.event("agent-1", "run.started")
    with span("turn") as turn:
        await publisher.publish(event(0), subject)
    await publisher.close()
    headers = (await jetstream(broker).get_msg(events_stream, 1)).headers or {}
    trace_id = f"{turn.get_span_context().trace_id:032x}"
    assert headers["traceparent"].split("-")[1] == trace_id
    (produced,) = [s for s in recorded_spans.get_finished_spans() if s.kind is SpanKind.PRODUCER]
    # <operation> <destination template> (shared/bus_spans.py), not the concrete subject.
    template = f"{subjects.namespace}.event.{{agent_id}}.{{event_domain}}.{{event_name}}"
    assert produced.name == f"publish {template}"
    assert produced.attributes is not None
    assert produced.attributes["messaging.destination.name"] == subject
    assert produced.parent is not None
    assert produced.parent.span_id == turn.get_span_context().span_id
    assert f"{produced.context.span_id:016x}" in headers["traceparent"]


async def test_a_client_closed_while_it_iterates_events_closes_at_once(
    nats_url: str, broker: NatsBroker, subjects: Subjects, events_stream: str
) -> None:
    client = await ElizaOSClient(nats_url, namespace=subjects.namespace).connect()
    events = client.events(event_type="run.started")
    first = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0.3)  # the ordered consumer is in place before the events
    publisher = EventPublisher(broker, stream=events_stream)
    for i in range(3):
        await publisher.publish(event(i), subjects.event("agent-1", "run.started"))
    await publisher.close()
    assert (await asyncio.wait_for(first, 10)).data == {"i": 0}
    # The iteration stops there, as a program may leave it, with two events delivered
    # to it and not read: they held the connection's drain for its whole 30 s timeout.

    await asyncio.wait_for(client.close(), 10)

    await events.aclose()
