"""The JSON Schema catalogue and AsyncAPI document of the wire, for other languages and CI.

``catalogue()`` is what ``elizamesh schema`` writes and what the snapshot test
compares against the checked-in copy; ``breaking_changes()`` says whether a
new catalogue would break a client written against an old one. The AsyncAPI
document is built here from the contracts themselves (FastStream's generator
only understands pydantic models), so it can never drift from the wire.
"""

from __future__ import annotations

from typing import Any

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


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One request-reply subject: who serves it, what it takes and what it answers."""

    name: str
    subject: str
    parameters: dict[str, str]
    request: type[Message]
    replies: tuple[type[Message], ...]
    served_by: str
    description: str


def operations(subjects: Subjects) -> tuple[Operation, ...]:
    """Every request-reply operation on the bus, with its subject in AsyncAPI form."""
    ns = subjects.namespace
    return (
        Operation(
            name="handleMessage",
            subject=f"{ns}.agent.{{agent_id}}.message.handle",
            parameters={"agent_id": "The agent that should handle the message."},
            request=HandleMessage,
            replies=(HandleMessageResult, Error),
            served_by="runtime (queue group 'runtime')",
            description=HandleMessage.__doc__ or "",
        ),
        Operation(
            name="listAgents",
            subject=subjects.agents_list,
            parameters={},
            request=ListAgents,
            replies=(AgentList, Error),
            served_by="runtime (queue group 'runtime')",
            description=ListAgents.__doc__ or "",
        ),
        Operation(
            name="addAgent",
            subject=subjects.agents_add,
            parameters={},
            request=AddAgent,
            replies=(AgentStatus, Error),
            served_by="runtime (queue group 'runtime')",
            description=AddAgent.__doc__ or "",
        ),
        *(
            Operation(
                name=f"{command}Agent",
                subject=f"{ns}.agent.{{agent_id}}.{command}",
                parameters={"agent_id": f"The agent to {command}."},
                request=AgentCommand,
                replies=(AgentStatus, Error),
                served_by="runtime (queue group 'runtime')",
                description=AgentCommand.__doc__ or "",
            )
            for command in AGENT_COMMANDS
        ),
        Operation(
            name="agentHealth",
            subject=f"{ns}.agent.{{agent_id}}.health",
            parameters={"agent_id": "The agent to probe."},
            request=CheckAgent,
            replies=(AgentHealth, Error),
            served_by="runtime (queue group 'runtime')",
            description=CheckAgent.__doc__ or "",
        ),
        Operation(
            name="health",
            subject=subjects.health,
            parameters={},
            request=CheckHealth,
            replies=(ServiceHealth,),
            served_by="every service instance (gather the replies)",
            description=CheckHealth.__doc__ or "",
        ),
        *(
            Operation(
                name=f"memory.{op.name}",
                subject=subjects.memory_operation(op.name),
                parameters={},
                request=op.request,
                replies=(op.result, Error),
                served_by="memory (queue group 'memory')",
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
        "channels": {
            op.name: {
                "address": op.subject,
                "parameters": {k: {"description": v} for k, v in op.parameters.items()},
                "messages": {m.__name__: _message_ref(m) for m in (op.request, *op.replies)},
            }
            for op in ops
        },
        "operations": {
            op.name: {
                "action": "receive",
                "summary": op.description,
                "description": f"Served by {op.served_by}.",
                "channel": {"$ref": f"#/channels/{op.name}"},
                "messages": [{"$ref": f"#/channels/{op.name}/messages/{op.request.__name__}"}],
                "reply": {
                    "messages": [
                        {"$ref": f"#/channels/{op.name}/messages/{m.__name__}"} for m in op.replies
                    ]
                },
            }
            for op in ops
        },
        "components": {
            "schemas": _components("#/components/schemas/{name}"),
            "messages": {m.__name__: _message(m) for m in MESSAGES},
        },
    }


def _message(message: type[Message]) -> JsonObject:
    return {
        "name": message.__struct_config__.tag,
        "summary": message.__doc__,
        "payload": {"$ref": f"#/components/schemas/{message.__name__}"},
    }


def _message_ref(message: type[Message]) -> JsonObject:
    return {"$ref": f"#/components/messages/{message.__name__}"}


def _components(ref_template: str) -> JsonObject:
    _, components = msgspec.json.schema_components(MESSAGES, ref_template=ref_template)
    return dict(sorted(components.items()))


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


def _shape(schema: Any) -> Any:
    """The schema without its prose, so reworded descriptions are not breaking."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in {"description", "title"}}
    if isinstance(schema, list):
        return [_shape(v) for v in schema]
    return schema
