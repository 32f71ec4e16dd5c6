"""Where outside data enters an agent: platform ids become the agent's ids, limits are enforced.

Platforms name people, chats and messages in their own ways: ``alice@example.com``,
``discord:123 general``, an integer, an 80-character id. A valid id (1 to 64
of ``[A-Za-z0-9_-]``, a UUID included) is used as it is; any other
id is mapped the elizaOS way, ``create_unique_uuid(agent_id, platform_id)``,
and kept on the message under ``metadata["platform_ids"]``. A message id that
is not a UUID is unique only within its chat (Telegram counts per chat), so
it is mapped per room: ``create_unique_uuid(agent_id, f"{room_id}:{id}")``.

An inbound message over a limit is refused (``BadRequest`` naming the field);
what the agent writes itself is cut to fit, with a visible marker.
"""

from __future__ import annotations

import unicodedata
import uuid

import msgspec

from contracts.content import MAX_TEXT_LENGTH
from contracts.message import create_unique_uuid, is_id, is_uuid
from contracts.records import Memory
from shared.errors import BadRequest
from shared.storage.validation import checked

MAX_PLATFORM_ID_LENGTH = 1_024
"""The longest platform id accepted (longer ones are refused, not mapped)."""

_UNSTORABLE = {"Cc", "Cs"}
"""Control characters and lone surrogates: no platform id has them, and no database takes them."""


def platform_id(value: object, field: str) -> str:
    """Return a platform id as text (UUIDs canonical, ints in decimal), or raise ``BadRequest``."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_PLATFORM_ID_LENGTH
        or any(unicodedata.category(c) in _UNSTORABLE for c in value)
    ):
        raise BadRequest(
            f"{field} must be a UUID, an integer or text of 1 to {MAX_PLATFORM_ID_LENGTH} "
            f"characters without control characters; got {str(value)[:80]!r}",
            details={
                "field": field,
                "rule": f"1 to {MAX_PLATFORM_ID_LENGTH} characters, no control characters",
            },
        )
    return value


def agent_id_for(agent_id: str, value: object, field: str) -> str:
    """The agent's id for a platform's id of an entity, room or world."""
    text = platform_id(value, field)
    return text if is_id(text) else create_unique_uuid(agent_id, text)


def message_id_for(agent_id: str, room_id: str, value: object, field: str = "id") -> str:
    """The agent's id for a platform's message id: UUIDs as they are, others per room."""
    text = platform_id(value, field)
    return text if is_uuid(text) else create_unique_uuid(agent_id, f"{room_id}:{text}")


def inbound(agent_id: str, message: Memory) -> Memory:
    """Return ``message`` with the agent's ids and ``agent_id`` set, checked against every limit.

    Raises:
        BadRequest: an id that is empty, too long or has control characters, or a
            value over a limit (e.g. ``content.text`` over 100,000
            characters); the details name the field. Nothing is stored.
    """
    given: dict[str, object] = {
        "entity_id": message.entity_id,
        "room_id": message.room_id,
        "world_id": message.world_id,
    }
    ids = {
        field: agent_id_for(agent_id, value, field)
        for field, value in given.items()
        if value is not None
    }
    room_id = ids["room_id"]
    given["id"] = message.id
    ids["id"] = message_id_for(agent_id, room_id, message.id)
    content = message.content
    if content.in_reply_to is not None:
        content = msgspec.structs.replace(
            content,
            in_reply_to=message_id_for(agent_id, room_id, content.in_reply_to, "in_reply_to"),
        )
    originals = {
        field: platform_id(given[field], field)
        for field, value in ids.items()
        if value != platform_id(given[field], field)
    }
    metadata = message.metadata
    if originals:
        metadata = {**metadata, "platform_ids": {**metadata.get("platform_ids", {}), **originals}}
    return checked(
        msgspec.structs.replace(
            message,
            agent_id=agent_id,
            content=content,
            metadata=metadata,
            **ids,
        )
    )


TRUNCATED = "\n[truncated: {total} characters, {cut} not kept]"
"""The marker at the end of a text the agent wrote that was cut to fit."""


def fitted(memory: Memory) -> Memory:
    """Return a memory the agent wrote, its text cut (with ``TRUNCATED``) to the limit."""
    text = memory.content.text
    if len(text) <= MAX_TEXT_LENGTH:
        return memory
    marker = TRUNCATED.format(total=f"{len(text):,}", cut="{cut}")
    keep = MAX_TEXT_LENGTH - len(marker) - 8  # room for the number of characters cut
    cut = len(text) - keep
    content = msgspec.structs.replace(
        memory.content, text=text[:keep] + marker.replace("{cut}", f"{cut:,}")
    )
    return msgspec.structs.replace(memory, content=content)
