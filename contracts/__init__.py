"""The wire: every message elizamesh sends over NATS, and where it goes.

Depends on msgspec and the standard library only, so any service or
connector can import it, and its JSON Schema can be exported for other
languages (``elizamesh schema``).
"""

from contracts.agent import (
    MAX_TEXT_LENGTH,
    Content,
    HandleMessage,
    HandleMessageReply,
    HandleMessageResult,
)
from contracts.error import ERROR_CODE_HEADER, ERROR_HEADER, STATUS_BY_CODE, Error, ErrorCode
from contracts.message import ID_PATTERN, Event, Id, Message, new_id, utc_now
from contracts.subjects import (
    DEFAULT_NAMESPACE,
    QUEUE_MEMORY,
    QUEUE_RUNTIME,
    InvalidIdError,
    Subjects,
    agent_id_of,
    validate_id,
)
from contracts.turn import CacheEntry, Connection, TurnCommit, TurnContext

__all__ = [
    "DEFAULT_NAMESPACE",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "ID_PATTERN",
    "MAX_TEXT_LENGTH",
    "QUEUE_MEMORY",
    "QUEUE_RUNTIME",
    "STATUS_BY_CODE",
    "CacheEntry",
    "Connection",
    "Content",
    "Error",
    "ErrorCode",
    "Event",
    "HandleMessage",
    "HandleMessageReply",
    "HandleMessageResult",
    "Id",
    "InvalidIdError",
    "Message",
    "Subjects",
    "TurnCommit",
    "TurnContext",
    "agent_id_of",
    "new_id",
    "utc_now",
    "validate_id",
]
