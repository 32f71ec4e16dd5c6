"""What the gateway's HTTP routes read and write beyond the NATS contracts, and how bodies decode.

Request bodies decode strictly, as on the bus (``msgspec``, no coercion: ``0``
is not ``false``), and a bad one is a ``BadRequest`` whose ``details`` name
the field by its path.
"""

from __future__ import annotations

import re
from typing import Annotated, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import State
from msgspec import Meta

from contracts.control import ServiceHealth
from shared.errors import BadRequest

T = TypeVar("T")
_AT = re.compile(r"at `\$\.?([^`]*)`|field `([^`]+)`")


class StackReadiness(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Whether the stack can take messages, why not, and what each instance reported."""

    ready: bool
    problems: list[str]
    services: list[ServiceHealth]


class Readiness(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Whether the stack can take messages (all a caller without a key learns)."""

    ready: bool


class RoomMessage(msgspec.Struct, kw_only=True, frozen=True):
    """One message of a room, as a chat shows it."""

    id: str
    entity_id: str
    role: Annotated[str, Meta(description="agent (the agent said it) or user.")]
    text: str
    created_at: Annotated[int, Meta(description="Milliseconds since the epoch, UTC.")]


class RoomMessages(msgspec.Struct, kw_only=True, frozen=True):
    """A page of a room's messages, oldest first, and where the next older page starts."""

    messages: list[RoomMessage]
    next_offset: Annotated[
        int | None, Meta(description="Pass as offset for older messages; null: no more.")
    ] = None


def field_of(message: str) -> str:
    """The field a msgspec error message is about (``content.text``), or ``body``."""
    found = _AT.search(message)
    if found is None:
        return "body"
    return next((g for g in found.groups() if g), "body")


async def decode_body(request: Request[object, object, State], kind: type[T]) -> T:
    """The request's JSON body as ``kind``, strictly.

    Raises:
        BadRequest: the body is not JSON (``malformed JSON: ...``, also when
            nested too deeply), not UTF-8, or not a
            valid ``kind``; ``details`` maps the field's path to the problem.
    """
    body = await request.body()
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise BadRequest(
            f"invalid {kind.__name__}: {exc}", details={field_of(str(exc)): str(exc)}
        ) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", details={"body": str(exc)}) from None
    except UnicodeDecodeError as exc:  # msgspec raises these two itself, not a DecodeError
        reason = f"the body is not UTF-8 (byte {exc.start})"
        raise BadRequest(reason, details={"body": reason}) from None
    except RecursionError:
        reason = "malformed JSON: nested too deeply"
        raise BadRequest(reason, details={"body": reason}) from None
