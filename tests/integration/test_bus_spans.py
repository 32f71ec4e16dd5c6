"""Bus spans on a real NATS: bounded names, the concrete subject kept, housekeeping untraced."""

from __future__ import annotations

import msgspec
from faststream.nats import NatsBroker
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.control import CheckHealth, ServiceHealth
from shared.bus import create_broker, start_serving
from shared.bus_spans import HousekeepingSampler, bounded_bus_middleware
from shared.health import no_consumers, serve_health


def traced_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider as setup_telemetry makes one when spans are exported."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "spans-under-test"}),
        sampler=ParentBased(HousekeepingSampler()),
    )
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, spans


def traced_broker(nats_url: str, provider: TracerProvider, name: str) -> NatsBroker:
    return create_broker(nats_url, name=name, middlewares=[bounded_bus_middleware(provider)])


async def test_a_request_and_its_reply_have_bounded_names_whatever_the_ids(
    nats_url: str, subjects: Subjects
) -> None:
    provider, spans = traced_provider()
    service = traced_broker(nats_url, provider, "service")
    client = traced_broker(nats_url, provider, "client")

    @service.subscriber(subjects.message_handle_template)
    async def handle(request: HandleMessage) -> HandleMessageResult:
        return HandleMessageResult(message_id=request.message_id, agent_id="a", did_respond=False)

    async with service, client:
        await start_serving(service)
        await client.connect()
        for agent in ("agent-1", "agent-2", "agent-3"):
            message = HandleMessage(entity_id="u", room_id="r", content=Content(text="hi"))
            await client.request(message, subjects.message_handle(agent), timeout=10)
    names = {s.name for s in spans.get_finished_spans()}
    template = f"{subjects.namespace}.agent.{{agent_id}}.message.handle"
    assert f"publish {template}" in names
    assert f"process {template}" in names
    assert "publish (reply)" in names
    assert not any("_INBOX" in name or "agent-1" in name for name in names)
    assert len(names) <= 6  # create/publish/process of the request and the reply, three agents
    handled = [s for s in spans.get_finished_spans() if s.name == f"process {template}"]
    assert {s.attributes["messaging.destination.template"] for s in handled} == {template}  # type: ignore[index]


async def test_a_health_probe_starts_no_trace_but_a_traced_one_is_kept(
    nats_url: str, subjects: Subjects
) -> None:
    provider, spans = traced_provider()
    service = traced_broker(nats_url, provider, "service")
    client = traced_broker(nats_url, provider, "client")
    serve_health(service, subjects, "probe", no_consumers)
    async with service, client:
        await start_serving(service)
        await client.connect()
        reply = await client.request(CheckHealth(), subjects.health, timeout=10)
        assert msgspec.json.decode(reply.body, type=ServiceHealth).service == "probe"
        assert spans.get_finished_spans() == ()
        with provider.get_tracer("test").start_as_current_span("operator asks"):
            await client.request(CheckHealth(), subjects.health, timeout=10)
    names = [s.name for s in spans.get_finished_spans()]
    assert f"process {subjects.namespace}.health" in names
    assert "operator asks" in names
