"""The base of every message on the wire.

Every message is a frozen, keyword-only msgspec Struct tagged with its
versioned name (``"<domain>.<noun>.<verb>.v<N>"``) in the ``type`` field, so
one decoder can tell messages apart and a breaking change becomes a new tag.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, overload

import msgspec
from msgspec import Meta

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""Ids travel inside subjects, so they are limited to subject-safe characters."""

Id = Annotated[
    str,
    Meta(
        pattern=ID_PATTERN,
        description="An identifier of 1 to 64 characters from [A-Za-z0-9_-] (a UUID fits).",
    ),
]


_ID = re.compile(ID_PATTERN)

ID_NAMESPACE = uuid.UUID("8f1d2c4e-5b6a-5c7d-9e8f-656c697a616d")
"""The uuid5 namespace of ``create_unique_uuid`` (fixed: changing it would re-key every id)."""


def is_id(value: object) -> bool:
    """Say whether ``value`` is a valid id: a string of 1 to 64 of [A-Za-z0-9_-]."""
    return isinstance(value, str) and _ID.match(value) is not None


def is_uuid(value: object) -> bool:
    """Say whether ``value`` is a UUID in its canonical text form (any case)."""
    if not isinstance(value, str) or len(value) != 36:  # noqa: PLR2004 - 32 hex digits, 4 dashes
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def create_unique_uuid(agent_id: str, platform_id: str) -> str:
    """Return the id an agent knows a platform's id under (elizaOS's ``createUniqueUuid``).

    Deterministic: the same agent and platform id always give the same UUID,
    two agents give two. It is ``uuid5(ID_NAMESPACE, f"{platform_id}:{agent_id}")``
    (elizaOS hashes the same string), except that the agent's own id stays itself.
    """
    if platform_id == agent_id:
        return agent_id
    return str(uuid.uuid5(ID_NAMESPACE, f"{platform_id}:{agent_id}"))


@overload
def plain_id(value: str | uuid.UUID) -> str: ...
@overload
def plain_id(value: None) -> None: ...
@overload
def plain_id(value: object) -> object: ...
def plain_id(value: object) -> object:
    """Return ``value`` with every ``uuid.UUID`` in it (or in a list of it) as canonical text."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple) and any(isinstance(v, uuid.UUID) for v in value):
        return [str(v) if isinstance(v, uuid.UUID) else v for v in value]
    return value


def new_id() -> str:
    """Return a fresh random identifier (a UUID4 in its canonical text form)."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class Message(msgspec.Struct, kw_only=True, frozen=True, tag_field="type"):
    """Base of every command, reply and event carried over NATS."""


class Event(Message, kw_only=True, frozen=True):
    """Base of every event: something that already happened, named in the past tense."""

    event_id: Annotated[
        Id, Meta(description="Unique id of this event; consumers deduplicate on it.")
    ] = msgspec.field(default_factory=new_id)
    occurred_at: Annotated[
        datetime, Meta(description="When the event happened, in UTC (RFC 3339).")
    ] = msgspec.field(default_factory=utc_now)
