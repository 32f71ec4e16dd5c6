"""elizamesh: the elizaOS agent runtime in Python, on typed NATS subjects.

This package is the public face: import what you need from here, never from
``shared`` or ``services``, whose layout may change.

Names are imported on first use (PEP 562), so ``elizamesh --help`` and
``elizamesh.cli`` do not load the agent runtime; the imports under
``TYPE_CHECKING`` are the one list of what comes from where.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult
    from contracts.agent import Media, MentionContext
    from contracts.control import AgentHealth
    from contracts.providers import ActionOutput, GetProvider, InvokeAction, ProviderOutput
    from contracts.records import (
        Agent,
        ChannelType,
        Component,
        Entity,
        Log,
        Memory,
        ParticipantState,
        Relationship,
        Room,
        Task,
        World,
    )
    from elizamesh.sdk import (
        ActionFunction,
        ProviderFunction,
        remote_parts_app,
        serve_action,
        serve_provider,
    )
    from shared.agent.character import Character, CharacterError, Style
    from shared.agent.elizaos import AgentSpec, BatchItemResult, ElizaOS, new_message
    from shared.agent.message_service import (
        DefaultMessageService,
        MessageOptions,
        MessageProcessingResult,
    )
    from shared.agent.planning import PlannedToolCall, ToolContext, execute_planned_tool_call
    from shared.agent.plugin import PluginError, resolve_plugins
    from shared.agent.runtime import AgentRuntime, TargetInfo
    from shared.agent.tasks import TaskService, TaskWorker
    from shared.agent.types import (
        Action,
        ActionError,
        ActionResult,
        Evaluator,
        EventType,
        HandlerOptions,
        ModelError,
        ModelType,
        Plugin,
        PluginPriority,
        Provider,
        ProviderResult,
        Service,
        State,
        StateError,
    )
    from shared.client import ElizaOSClient
    from shared.config import Settings
    from shared.errors import BadRequest, Conflict, Internal, NotFound, ServiceError, Unavailable
    from shared.storage.adapter import DatabaseAdapter
    from shared.storage.client import NatsMemoryClient, memory_client
    from shared.storage.sql import SqlAdapter
    from shared.storage.vectors import DimensionMismatch


def _exports() -> dict[str, str]:
    """Name -> module, read from the ``TYPE_CHECKING`` imports of this file."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If))
    return {
        alias.asname or alias.name: node.module or ""
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


_MODULE_OF = _exports()


def __getattr__(name: str) -> object:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'elizamesh' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Action",
    "ActionError",
    "ActionFunction",
    "ActionOutput",
    "ActionResult",
    "Agent",
    "AgentHealth",
    "AgentRuntime",
    "AgentSpec",
    "BadRequest",
    "BatchItemResult",
    "ChannelType",
    "Character",
    "CharacterError",
    "Component",
    "Conflict",
    "Content",
    "DatabaseAdapter",
    "DefaultMessageService",
    "DimensionMismatch",
    "ElizaOS",
    "ElizaOSClient",
    "Entity",
    "Error",
    "ErrorCode",
    "Evaluator",
    "EventType",
    "GetProvider",
    "HandleMessage",
    "HandleMessageResult",
    "HandlerOptions",
    "Internal",
    "InvokeAction",
    "Log",
    "Media",
    "Memory",
    "MentionContext",
    "MessageOptions",
    "MessageProcessingResult",
    "ModelError",
    "ModelType",
    "NatsMemoryClient",
    "NotFound",
    "ParticipantState",
    "PlannedToolCall",
    "Plugin",
    "PluginError",
    "PluginPriority",
    "Provider",
    "ProviderFunction",
    "ProviderOutput",
    "ProviderResult",
    "Relationship",
    "Room",
    "Service",
    "ServiceError",
    "Settings",
    "SqlAdapter",
    "State",
    "StateError",
    "Style",
    "TargetInfo",
    "Task",
    "TaskService",
    "TaskWorker",
    "ToolContext",
    "Unavailable",
    "World",
    "execute_planned_tool_call",
    "memory_client",
    "new_message",
    "remote_parts_app",
    "resolve_plugins",
    "serve_action",
    "serve_provider",
]
