"""Bus spans with bounded names, and no trace for housekeeping.

OpenTelemetry's messaging conventions name a span ``<operation> <destination>``
with a low-cardinality destination: a template, not a subject carrying ids,
and never a reply inbox. FastStream's NATS middleware names its spans
``<subject> <operation>`` with the concrete subject, so every agent id, run id
and ``_INBOX.<random>`` reply subject made a new name (about 235 distinct
names a minute on an idle stack). Here:

- a subject becomes its channel's address from the AsyncAPI document
  (``eliza.agent.{agent_id}.message.handle``), a reply inbox ``(reply)``, and
  the operation comes first: ``process eliza.agent.{agent_id}.message.handle``.
  The concrete subject stays in the span's ``messaging.destination.name``;
  metrics get the template, so their series are bounded too.
- ``HousekeepingSampler`` drops the traces that health probes and the task
  loop's polling would start, so an idle stack exports no spans.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager

from faststream.message import StreamMessage
from faststream.nats.opentelemetry.provider import (
    NatsBatchTelemetrySettingsProvider,
    NatsTelemetrySettingsProvider,
)
from faststream.opentelemetry import TelemetryMiddleware
from faststream.response import PublishCommand
from nats.aio.msg import Msg
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes, AttributeValue
from typing_extensions import override

from contracts.schema import operations
from contracts.subjects import Subjects

REPLY = "(reply)"
"""The destination of a reply: an inbox subject that lives for one request."""

DESTINATION_TEMPLATE = "messaging.destination.template"
DESTINATION_TEMPORARY = "messaging.destination.temporary"

_HOUSEKEEPING_CHANNELS = frozenset({"health", "agentHealth", "memory.get_tasks"})
"""Channels asked on a timer (container health checks, the task loop): no trace of their own."""

_OPERATIONS = ("create", "publish", "process", "receive", "send")
_SAMPLE_NAMESPACE = "ns"


@functools.cache
def _channels() -> tuple[tuple[re.Pattern[str], str, str], ...]:
    """(pattern, address after the namespace, channel name) of every AsyncAPI channel."""
    found = []
    for op in operations(Subjects(_SAMPLE_NAMESPACE)):
        _, _, rest = op.subject.partition(".")
        tokens = [
            r"[^.]+" if re.fullmatch(r"\{\w+\}", token) else re.escape(token)
            for token in rest.split(".")
        ]
        found.append((re.compile(r"([^.]+)\." + r"\.".join(tokens)), rest, op.name))
    return tuple(found)


@functools.lru_cache(maxsize=4096)
def destination_template(subject: str) -> str:
    """Return the low-cardinality name of ``subject``, for span names and metrics.

    ``eliza.agent.a1.message.handle`` -> ``eliza.agent.{agent_id}.message.handle``;
    a reply inbox (``_INBOX....``) -> ``(reply)``; a KV key -> ``$KV.<bucket>.{key}``;
    a JetStream acknowledgement -> ``$JS.ACK.<stream>.<consumer>``; anything
    else is returned as it is (fixed subjects such as ``$JS.API`` calls).
    """
    if subject.startswith("_INBOX."):
        return REPLY
    for pattern, rest, _ in _channels():
        if matched := pattern.fullmatch(subject):
            return f"{matched.group(1)}.{rest}"
    tokens = subject.split(".")
    if tokens[0] == "$KV" and len(tokens) > 2:  # noqa: PLR2004 - $KV.<bucket>.<key>
        return f"$KV.{tokens[1]}.{{key}}"
    if tokens[:2] == ["$JS", "ACK"]:
        return ".".join(tokens[:4])
    return subject


def _housekeeping(destination: str) -> bool:
    # A template's {param} tokens match the channel's pattern as any token does.
    return any(
        name in _HOUSEKEEPING_CHANNELS and pattern.fullmatch(destination) is not None
        for pattern, _, name in _channels()
    )


class HousekeepingSampler(Sampler):
    """Drops a new trace started by housekeeping or by a reply; samples the rest with ``root``.

    Use it as the root sampler of ``ParentBased``: the request's other spans
    (the reply, the service's handling) then follow the dropped root.
    """

    def __init__(self, root: Sampler = ALWAYS_ON) -> None:
        self.root = root

    @override
    def should_sample(
        self,
        parent_context: otel_context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """Drop when ``name`` is ``<operation> <housekeeping channel>``, else ask ``root``."""
        operation, _, destination = name.partition(" ")
        if operation in _OPERATIONS and (destination == REPLY or _housekeeping(destination)):
            # A reply with no trace to join answers a request nobody traced (housekeeping).
            return SamplingResult(Decision.DROP)
        return self.root.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Name the sampler (OpenTelemetry shows it in diagnostics)."""
        return f"Housekeeping({self.root.get_description()})"


class _Bounded(NatsTelemetrySettingsProvider):
    """FastStream's NATS attributes, with the template as the destination's name."""

    def get_publish_destination_name(self, cmd: PublishCommand) -> str:
        return destination_template(cmd.destination)

    def get_consume_destination_name(self, msg: StreamMessage[Msg]) -> str:
        return destination_template(msg.raw_message.subject)

    def get_publish_attrs_from_cmd(self, cmd: PublishCommand) -> dict[str, AttributeValue]:
        return {**super().get_publish_attrs_from_cmd(cmd), **_template_attributes(cmd.destination)}

    def get_consume_attrs_from_message(self, msg: StreamMessage[Msg]) -> dict[str, AttributeValue]:
        attributes = super().get_consume_attrs_from_message(msg)
        return {**attributes, **_template_attributes(msg.raw_message.subject)}


class _BoundedBatch(NatsBatchTelemetrySettingsProvider):
    def get_publish_destination_name(self, cmd: PublishCommand) -> str:
        return destination_template(cmd.destination)

    def get_consume_destination_name(self, msg: StreamMessage[list[Msg]]) -> str:
        return destination_template(msg.raw_message[0].subject)


def _template_attributes(subject: str) -> dict[str, AttributeValue]:
    template = destination_template(subject)
    if template == REPLY:
        return {DESTINATION_TEMPORARY: True}
    return {DESTINATION_TEMPLATE: template}


def _bounded_provider(msg: object) -> _Bounded | _BoundedBatch | None:
    """FastStream's attributes for ``msg``: a NATS ``Msg``, a batch of them, or ``None``."""
    if isinstance(msg, Sequence):
        return _BoundedBatch()
    if isinstance(msg, Msg) or msg is None:
        return _Bounded()
    return None  # KV and object-store watches: FastStream traces none either


class _OperationFirst(trace.Tracer):
    """Renames FastStream's ``<destination> <operation>`` spans ``<operation> <destination>``."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    # Every argument passes through as given; only the name changes.
    @override
    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        return self.tracer.start_span(
            _operation_first(name),
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @override
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AbstractContextManager[trace.Span]:
        return self.tracer.start_as_current_span(
            _operation_first(name),
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
            end_on_exit,
        )


class _OperationFirstProvider(trace.TracerProvider):
    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes = None,
    ) -> trace.Tracer:
        tracer = self.provider.get_tracer(
            instrumenting_module_name, instrumenting_library_version, schema_url, attributes
        )
        return _OperationFirst(tracer)


def _operation_first(name: str) -> str:
    destination, _, operation = name.rpartition(" ")
    return f"{operation} {destination}" if operation in _OPERATIONS and destination else name


def bounded_bus_middleware(
    tracer_provider: trace.TracerProvider, meter_provider: metrics.MeterProvider | None = None
) -> TelemetryMiddleware[PublishCommand]:
    """Return FastStream's telemetry middleware for NATS, with bounded span names.

    Spans are named ``<operation> <destination template>`` (``publish (reply)``,
    ``process eliza.memory.get_memories``); trace context travels in the
    headers as with FastStream's own ``NatsTelemetryMiddleware``.
    """
    return TelemetryMiddleware(
        settings_provider_factory=_bounded_provider,
        tracer_provider=_OperationFirstProvider(tracer_provider),
        meter_provider=meter_provider or metrics.get_meter_provider(),
    )
