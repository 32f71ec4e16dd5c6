"""ServiceError and the wire Error are two views of one failure."""

from __future__ import annotations

import pytest

from contracts import ErrorCode
from shared.errors import (
    BadRequest,
    Conflict,
    Internal,
    NotFound,
    ServiceError,
    Unavailable,
    from_error,
)


@pytest.mark.parametrize(
    ("cls", "code", "builtin"),
    [
        (BadRequest, ErrorCode.BAD_REQUEST, ValueError),
        (NotFound, ErrorCode.NOT_FOUND, LookupError),
        (Conflict, ErrorCode.CONFLICT, ServiceError),
        (Unavailable, ErrorCode.UNAVAILABLE, ConnectionError),
        (Internal, ErrorCode.INTERNAL, ServiceError),
    ],
)
def test_an_error_crosses_the_wire_and_comes_back_as_the_same_class(
    cls: type[ServiceError], code: ErrorCode, builtin: type[Exception]
) -> None:
    original = cls("it went wrong", details={"field": "room_id"})
    wire = original.to_error("corr-1")
    assert wire.code is code
    assert wire.correlation_id == "corr-1"
    back = from_error(wire)
    assert type(back) is cls
    assert isinstance(back, builtin)
    assert back.message == "it went wrong"
    assert back.details == {"field": "room_id"}
    assert "correlation id: corr-1" in (back.__notes__ or [])


def test_only_unavailable_is_retryable() -> None:
    assert Unavailable("x").to_error().retryable
    assert not BadRequest("x").to_error().retryable
