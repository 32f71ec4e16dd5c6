"""elizamesh: the elizaOS agent runtime in Python, on typed NATS subjects.

This package is the public face: import what you need from here, never from
``shared`` or ``services``, whose layout may change.
"""

from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult
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
from shared.config import Settings
from shared.errors import BadRequest, Conflict, Internal, NotFound, ServiceError, Unavailable
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import NatsMemoryClient, memory_client
from shared.storage.sql import SqlAdapter
from shared.storage.vectors import DimensionMismatch

__all__ = [
    "Agent",
    "BadRequest",
    "ChannelType",
    "Component",
    "Conflict",
    "Content",
    "DatabaseAdapter",
    "DimensionMismatch",
    "Entity",
    "Error",
    "ErrorCode",
    "HandleMessage",
    "HandleMessageResult",
    "Internal",
    "Log",
    "Memory",
    "NatsMemoryClient",
    "NotFound",
    "ParticipantState",
    "Relationship",
    "Room",
    "ServiceError",
    "Settings",
    "SqlAdapter",
    "Task",
    "Unavailable",
    "World",
    "memory_client",
]
