"""The JSON Schema catalogue and AsyncAPI document of the wire, for other languages and CI.

``catalogue()`` is what ``elizamesh schema`` writes and what the snapshot test
compares against the checked-in copy; ``breaking_changes()`` says whether a
new catalogue would break a client written against an old one. The AsyncAPI
document is built here from the contracts themselves (FastStream's generator
only understands pydantic models), so it can never drift from the wire.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from contracts.agent import HandleMessage, HandleMessageResult
from contracts.control import (
    AGENT_COMMANDS,
    AddAgent,
    AgentChanged,
    AgentCommand,
    AgentHealth,
    AgentStatus,
    CheckAgent,
    CheckHealth,
    OutboundMessage,
    ServiceHealth,
)
from contracts.embedding import EmbeddingRequested
from contracts.error import Error
from contracts.evaluation import EvaluateTurn
from contracts.events import (
    AgentEventOccurred,
    AgentList,
    ListAgents,
    RunChunk,
    RunEnded,
    RunHeartbeat,
    RunResponse,
)
from contracts.memory import OPERATIONS
from contracts.message import Message
from contracts.providers import ActionOutput, GetProvider, InvokeAction, ProviderOutput
from contracts.subjects import Subjects

MESSAGES: tuple[type[Message], ...] = (
    HandleMessage,
    HandleMessageResult,
    Error,
    AgentEventOccurred,
    ListAgents,
    AgentList,
    RunChunk,
    RunResponse,
    RunEnded,
    RunHeartbeat,
    EmbeddingRequested,
    EvaluateTurn,
    GetProvider,
    ProviderOutput,
    InvokeAction,
    ActionOutput,
    AddAgent,
    AgentCommand,
    AgentChanged,
    AgentStatus,
    CheckAgent,
    AgentHealth,
    CheckHealth,
    ServiceHealth,
    OutboundMessage,
    *(m for op in OPERATIONS.values() for m in (op.request, op.result)),
)
"""Every message type on the wire. Add new ones here so they get a schema."""

JsonObject = dict[str, Any]


def catalogue() -> JsonObject:
    """Return one JSON Schema document defining every message under ``$defs``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "elizamesh wire messages",
        "$defs": _components("#/$defs/{name}"),
    }


OPAQUE_MESSAGES: dict[str, JsonObject] = {
    "RoomProbe": {
        "name": "runtime.room.probe",
        "summary": "Internal, runtime to runtime: a room's lease key (<agent>.<room>) as plain "
        "text. The replica answers busy while a turn of that room runs there, else an empty "
        "body; no responders means the replica is gone (its rooms may be taken over).",
        "payload": {"type": "string"},
    },
    "DeadLetter": {
        "name": "dead.letter",
        "summary": "A queued message a worker gave up on, exactly as it was queued; the reason "
        "is in the Elizamesh-Dead-Reason header.",
        "headers": {
            "type": "object",
            "properties": {"Elizamesh-Dead-Reason": {"type": "string"}},
        },
        "payload": {},
    },
}
"""Messages whose body no contract describes: named here so their channels can list them."""

Payload = type[Message] | str
"""A message type, or the name of one of ``OPAQUE_MESSAGES``."""


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One subject family: who sends on it, what it carries and, for a request, what it answers.

    ``action`` is from the stack's side, as AsyncAPI 3 has it: ``receive`` for
    what the services serve (requests, JetStream work they consume), ``send``
    for what they publish (events, runs, outbound messages, requests to
    remote providers and actions).
    """

    name: str
    subject: str
    parameters: dict[str, str]
    request: Payload
    replies: tuple[type[Message], ...] = ()
    action: str = "receive"
    by: Annotated[str, msgspec.Meta(description="Who sends it and who serves it, a sentence.")]
    description: str


def _documented(
    name: str,
    subject: str,
    request: type[Message],
    *,
    by: str,
    parameters: dict[str, str] | None = None,
    replies: tuple[type[Message], ...] = (),
    action: str = "receive",
) -> Operation:
    """An operation described by the docstring of the message it carries."""
    return Operation(
        name=name,
        subject=subject,
        parameters=parameters or {},
        request=request,
        replies=replies,
        action=action,
        by=by,
        description=request.__doc__ or "",
    )


def _runtime_request(
    name: str,
    subject: str,
    request: type[Message],
    result: type[Message],
    parameters: dict[str, str] | None = None,
    *,
    by: str = "Served by runtime (queue group 'runtime')",
) -> Operation:
    """A request the runtime serves, answered with ``result`` or an Error."""
    return _documented(
        name, subject, request, parameters=parameters, replies=(result, Error), by=by
    )


def _event_channels(ns: str) -> tuple[Operation, ...]:
    return (
        _documented(
            "agentEvent",
            f"{ns}.event.{{agent_id}}.{{event_domain}}.{{event_name}}",
            AgentEventOccurred,
            parameters={
                "agent_id": "The agent it happened in.",
                "event_domain": "What it is about: run, message, action, evaluator, world, "
                "entity, room, model, embedding, ...",
                "event_name": "What happened to it: started, ended, sent, received, completed, "
                "failed, generation_completed, ... (the pair is the elizaOS event name, lower "
                "case: RUN_STARTED is run.started).",
            },
            action="send",
            by="Sent by the runtime and the embedding service, into the JetStream stream "
            f"{ns.upper()}_EVENTS (deduplicated on event_id)",
        ),
        _documented(
            "agentsChanged",
            f"{ns}.agents.changed",
            AgentChanged,
            action="send",
            by="Sent by the runtime replica that changed the agent (core NATS); every replica "
            "listens",
        ),
        _documented(
            "outbound",
            f"{ns}.outbound.{{source}}.send",
            OutboundMessage,
            parameters={
                "source": "The platform whose connector delivers it: webhook, discord, ..."
            },
            action="send",
            by="Sent by the runtime, into the JetStream stream "
            f"{ns.upper()}_OUTBOUND; a connector drains it with the durable consumer "
            "webhook-<source>",
        ),
    )


_RUN_MESSAGES: tuple[tuple[str, type[Message]], ...] = (
    ("chunk", RunChunk),
    ("response", RunResponse),
    ("heartbeat", RunHeartbeat),
    ("completed", RunEnded),
    ("failed", RunEnded),
)


def _run_channels(ns: str) -> tuple[Operation, ...]:
    stream = f"Sent by the runtime, into the JetStream stream {ns.upper()}_RUNS"
    return tuple(
        _documented(
            f"{'ownedRun' if owned else 'run'}{what.capitalize()}",
            f"{ns}.run.{{owner}}.{{run_id}}.{what}" if owned else f"{ns}.run.{{run_id}}.{what}",
            message,
            parameters={
                **({"owner": "Who started the run (a run id <owner>__<id>)."} if owned else {}),
                "run_id": "The run (turn) id given in HandleMessage.run_id."
                if not owned
                else "The run's own id, after <owner>__.",
            },
            action="send",
            by=stream,
        )
        for owned in (False, True)
        for what, message in _RUN_MESSAGES
    )


def _work_queue_channels(ns: str) -> tuple[Operation, ...]:
    return (
        _documented(
            "embeddingQueue",
            f"{ns}.embedding.queue.{{priority}}",
            EmbeddingRequested,
            parameters={"priority": "high, normal or low."},
            by="Served by the embedding service, from the JetStream work queue "
            f"{ns.upper()}_EMBEDDING (published by whoever stores a memory)",
        ),
        Operation(
            name="embeddingDead",
            subject=f"{ns}.embedding.dead",
            parameters={},
            request=EmbeddingRequested,
            action="send",
            by=f"Sent by the embedding service, into the JetStream stream {ns.upper()}_DEAD",
            description="An embedding request that kept failing, for a person to look at.",
        ),
        _documented(
            "turnEvaluate",
            f"{ns}.agent.{{agent_id}}.turn.evaluate",
            EvaluateTurn,
            parameters={"agent_id": "The agent whose turn ended."},
            by="Served by the evaluator service, from the JetStream work queue "
            f"{ns.upper()}_EVALUATION (published by the runtime)",
        ),
        Operation(
            name="deadLetter",
            subject=f"{ns}.dead.{{queue}}",
            parameters={"queue": "The durable consumer that gave up: evaluator, webhook-<source>."},
            request="DeadLetter",
            action="send",
            by=f"Sent by the worker of that queue, into the JetStream stream {ns.upper()}_DEAD",
            description="A message a worker gave up on, with the reason in a header.",
        ),
    )


def _remote_part_channels(ns: str) -> tuple[Operation, ...]:
    return (
        _documented(
            "providerGet",
            f"{ns}.provider.{{name}}.get",
            GetProvider,
            parameters={"name": "The provider, as listed in REMOTE_PROVIDERS."},
            replies=(ProviderOutput, Error),
            action="send",
            by="Sent by the runtime during each turn; served by a remote provider process "
            "(elizamesh.serve_provider, or any NATS client)",
        ),
        _documented(
            "actionInvoke",
            f"{ns}.action.{{name}}.invoke",
            InvokeAction,
            parameters={"name": "The action, as listed in REMOTE_ACTIONS."},
            replies=(ActionOutput, Error),
            action="send",
            by="Sent by the runtime when the planner picks the action; served by a remote "
            "action process (elizamesh.serve_action, or any NATS client)",
        ),
        Operation(
            name="roomProbe",
            subject=f"{ns}.runtime.{{replica_id}}.room",
            parameters={"replica_id": "The runtime replica that owned the room's lease."},
            request="RoomProbe",
            by="Served by one runtime replica (internal: not for clients)",
            description=OPAQUE_MESSAGES["RoomProbe"]["summary"],
        ),
    )


def operations(subjects: Subjects) -> tuple[Operation, ...]:
    """Every subject family on the bus, with its subject in AsyncAPI form."""
    ns = subjects.namespace
    return (
        *_request_reply_channels(subjects),
        *_event_channels(ns),
        *_run_channels(ns),
        *_work_queue_channels(ns),
        *_remote_part_channels(ns),
    )


def _request_reply_channels(subjects: Subjects) -> tuple[Operation, ...]:
    ns = subjects.namespace
    return (
        _runtime_request(
            "handleMessage",
            f"{ns}.agent.{{agent_id}}.message.handle",
            HandleMessage,
            HandleMessageResult,
            {"agent_id": "The agent that should handle the message."},
            by="Received by every runtime replica (no queue group: each keeps the room's "
            "order); the replica that owns the room answers",
        ),
        _runtime_request("listAgents", subjects.agents_list, ListAgents, AgentList),
        _runtime_request("addAgent", subjects.agents_add, AddAgent, AgentStatus),
        *(
            _runtime_request(
                f"{command}Agent",
                f"{ns}.agent.{{agent_id}}.{command}",
                AgentCommand,
                AgentStatus,
                {"agent_id": f"The agent to {command}."},
            )
            for command in AGENT_COMMANDS
        ),
        _runtime_request(
            "agentHealth",
            f"{ns}.agent.{{agent_id}}.health",
            CheckAgent,
            AgentHealth,
            {"agent_id": "The agent to probe."},
        ),
        _documented(
            "health",
            subjects.health,
            CheckHealth,
            replies=(ServiceHealth,),
            by="Served by every service instance (gather the replies)",
        ),
        *(
            Operation(
                name=f"memory.{op.name}",
                subject=subjects.memory_operation(op.name),
                parameters={},
                request=op.request,
                replies=(op.result, Error),
                by="Served by memory (queue group 'memory')",
                description=op.summary,
            )
            for op in OPERATIONS.values()
        ),
    )


def asyncapi(subjects: Subjects, *, version: str) -> JsonObject:
    """Return the AsyncAPI 3.0 document of every operation, from the application's side."""
    ops = operations(subjects)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "elizamesh",
            "version": version,
            "description": "The elizaOS agent runtime on typed NATS subjects. Bodies are JSON; "
            "a failed request is answered with an Error and the Nats-Service-Error headers.",
        },
        "defaultContentType": "application/json",
        "channels": {op.name: _channel(op) for op in ops},
        "operations": {op.name: _operation(op) for op in ops},
        "components": {
            "schemas": _components("#/components/schemas/{name}"),
            "messages": {
                **{m.__name__: _message(m) for m in MESSAGES},
                **OPAQUE_MESSAGES,
            },
        },
    }


def _name(payload: Payload) -> str:
    return payload if isinstance(payload, str) else payload.__name__


def _channel(op: Operation) -> JsonObject:
    return {
        "address": op.subject,
        "parameters": {k: {"description": v} for k, v in op.parameters.items()},
        "messages": {
            _name(m): {"$ref": f"#/components/messages/{_name(m)}"}
            for m in (op.request, *op.replies)
        },
    }


def _operation(op: Operation) -> JsonObject:
    operation: JsonObject = {
        "action": op.action,
        "summary": op.description,
        "description": f"{op.by}.",
        "channel": {"$ref": f"#/channels/{op.name}"},
        "messages": [{"$ref": f"#/channels/{op.name}/messages/{_name(op.request)}"}],
    }
    if op.replies:
        operation["reply"] = {
            "messages": [
                {"$ref": f"#/channels/{op.name}/messages/{m.__name__}"} for m in op.replies
            ]
        }
    return operation


def _message(message: type[Message]) -> JsonObject:
    return {
        "name": message.__struct_config__.tag,
        "summary": message.__doc__,
        "payload": {"$ref": f"#/components/schemas/{message.__name__}"},
    }


def _components(ref_template: str) -> JsonObject:
    _, components = msgspec.json.schema_components(MESSAGES, ref_template=ref_template)
    told_apart = {
        target.rsplit("/", 1)[-1]
        for schema in _walk(components)
        for target in schema.get("discriminator", {}).get("mapping", {}).values()
    }
    for name, schema in components.items():
        # The services decode each subject's one message type, so a missing tag is
        # accepted: the schema requires ``type`` only where a union needs it to tell
        # messages apart.
        if name not in told_apart and "type" in schema.get("required", []):
            schema["required"] = [field for field in schema["required"] if field != "type"]
            if not schema["required"]:
                del schema["required"]
    return dict(sorted(components.items()))


def _walk(node: object) -> list[JsonObject]:
    """Every object inside a JSON Schema document, ``node`` included."""
    if isinstance(node, dict):
        return [node, *(found for value in node.values() for found in _walk(value))]
    if isinstance(node, list):
        return [found for value in node for found in _walk(value)]
    return []


def breaking_changes(old: JsonObject, new: JsonObject) -> list[str]:
    """List the ways ``new`` breaks clients of ``old``; empty when compatible.

    Allowed: new messages, new optional fields, new descriptions. Breaking: a
    removed message or field, a changed field type, a field that became
    required (msgspec's schema-evolution rules).
    """
    problems: list[str] = []
    old_defs: JsonObject = old.get("$defs", {})
    new_defs: JsonObject = new.get("$defs", {})
    for name, old_def in old_defs.items():
        if name not in new_defs:
            problems.append(f"{name}: removed")
            continue
        problems.extend(_field_changes(name, old_def, new_defs[name]))
    return problems


def _field_changes(name: str, old_def: JsonObject, new_def: JsonObject) -> list[str]:
    problems: list[str] = []
    old_props: JsonObject = old_def.get("properties", {})
    new_props: JsonObject = new_def.get("properties", {})
    for field, old_schema in old_props.items():
        if field not in new_props:
            problems.append(f"{name}.{field}: removed")
        elif _shape(old_schema) != _shape(new_props[field]):
            problems.append(f"{name}.{field}: type changed")
    newly_required = set(new_def.get("required", [])) - set(old_def.get("required", []))
    problems.extend(f"{name}.{field}: became required" for field in sorted(newly_required))
    if old_def.get("enum") and not set(old_def["enum"]) <= set(new_def.get("enum", [])):
        problems.append(f"{name}: enum values removed")
    return problems


def _shape(schema: object) -> object:
    """The schema without its prose, so reworded descriptions are not breaking."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in {"description", "title"}}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema
