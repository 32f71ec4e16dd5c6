"""The error envelope every request-reply subject may answer with."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec
from msgspec import Meta

from contracts.message import Message

ERROR_HEADER = "Nats-Service-Error"
"""NATS micro-service header carrying the human-readable error description."""

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
"""NATS micro-service header carrying the numeric (HTTP-like) error code."""


class ErrorCode(StrEnum):
    """Why a request failed; stable strings that clients can switch on."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
"""The numeric code sent in ``Nats-Service-Error-Code`` and used as HTTP status."""


class Error(Message, frozen=True, kw_only=True, tag="error.v1"):
    """A request could not be served; sent instead of the result."""

    code: Annotated[ErrorCode, Meta(description="Machine-readable reason for the failure.")]
    message: Annotated[str, Meta(description="What went wrong, for a person; never a stack trace.")]
    details: Annotated[
        dict[str, str],
        Meta(description="Extra facts about the failure, such as the offending field."),
    ] = msgspec.field(default_factory=dict)
    retryable: Annotated[
        bool, Meta(description="True when the same request may succeed if sent again later.")
    ] = False
    correlation_id: Annotated[
        str | None,
        Meta(description="The correlation id of the failed request, to quote in bug reports."),
    ] = None
