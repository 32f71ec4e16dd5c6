"""The base of every message on the wire.

Every message is a frozen, keyword-only msgspec Struct tagged with its
versioned name (``"<domain>.<noun>.<verb>.v<N>"``) in the ``type`` field, so
one decoder can tell messages apart and a breaking change becomes a new tag.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

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
