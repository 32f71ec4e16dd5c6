"""elizamesh: the elizaOS agent runtime in Python, on typed NATS subjects.

This package is the public face: import what you need from here, never from
``shared`` or ``services``, whose layout may change.
"""

from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult
from contracts.agent import Media, MentionContext
from contracts.control import AgentHealth
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

__all__ = [
    "Action",
    "ActionError",
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
    "HandleMessage",
    "HandleMessageResult",
    "HandlerOptions",
    "Internal",
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
    "resolve_plugins",
]
