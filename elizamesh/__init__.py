"""elizamesh: the elizaOS agent runtime in Python, on typed NATS subjects.

This package is the public face: import what you need from here, never from
``shared`` or ``services``, whose layout may change.
"""

from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult
from contracts.records import Agent, ChannelType, Entity, Memory, ParticipantState, Room, World
from shared.config import Settings
from shared.errors import BadRequest, Conflict, Internal, NotFound, ServiceError, Unavailable
from shared.storage.adapter import DatabaseAdapter
from shared.storage.sql import SqlAdapter
from shared.storage.vectors import DimensionMismatch

__all__ = [
    "Agent",
    "BadRequest",
    "ChannelType",
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
    "Memory",
    "NotFound",
    "ParticipantState",
    "Room",
    "ServiceError",
    "Settings",
    "SqlAdapter",
    "Unavailable",
    "World",
]
