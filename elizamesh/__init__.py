"""elizamesh: the elizaOS agent runtime in Python, on typed NATS subjects.

This package is the public face: import what you need from here, never from
``shared`` or ``services``, whose layout may change.
"""

from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult
from shared.config import Settings
from shared.errors import BadRequest, Conflict, Internal, NotFound, ServiceError, Unavailable

__all__ = [
    "BadRequest",
    "Conflict",
    "Content",
    "Error",
    "ErrorCode",
    "HandleMessage",
    "HandleMessageResult",
    "Internal",
    "NotFound",
    "ServiceError",
    "Settings",
    "Unavailable",
]
