"""The one error hierarchy of elizamesh, and its mapping to the wire ``Error``.

Business code raises these; the bus turns them into ``Error`` replies (and the
request helper turns ``Error`` replies back into them), so a caller sees the
same exception whether the callee ran in-process or across NATS. Each class
also inherits the builtin it resembles, so ``except LookupError`` still works.
"""

from __future__ import annotations

from typing import ClassVar

from contracts import Error, ErrorCode


class ServiceError(Exception):
    """Root of every error elizamesh reports to a caller."""

    code: ClassVar[ErrorCode] = ErrorCode.INTERNAL
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_error(self, correlation_id: str | None = None) -> Error:
        """Return the wire form of this error."""
        return Error(
            code=self.code,
            message=self.message,
            details=self.details,
            retryable=self.retryable,
            correlation_id=correlation_id,
        )


class BadRequest(ServiceError, ValueError):  # noqa: N818 - named after the HTTP status it maps to
    """The request is malformed or breaks a rule; sending it again will not help."""

    code = ErrorCode.BAD_REQUEST


class Unauthorized(ServiceError, PermissionError):  # noqa: N818
    """The caller did not prove who it is (a missing or wrong API key)."""

    code = ErrorCode.UNAUTHORIZED


class NotFound(ServiceError, LookupError):  # noqa: N818
    """The thing the request names does not exist."""

    code = ErrorCode.NOT_FOUND


class Conflict(ServiceError):  # noqa: N818
    """The request clashes with the current state (a duplicate, a stale version)."""

    code = ErrorCode.CONFLICT


class Unavailable(ServiceError, ConnectionError):  # noqa: N818
    """Nobody could serve the request in time; it may succeed later."""

    code = ErrorCode.UNAVAILABLE
    retryable = True


class Internal(ServiceError):  # noqa: N818
    """The service failed in a way the caller cannot fix; details are in its log."""

    code = ErrorCode.INTERNAL


_BY_CODE: dict[ErrorCode, type[ServiceError]] = {
    cls.code: cls for cls in (BadRequest, Unauthorized, NotFound, Conflict, Unavailable, Internal)
}


def from_error(error: Error) -> ServiceError:
    """Return the exception that an ``Error`` reply stands for."""
    exc = _BY_CODE[error.code](error.message, details=error.details)
    if error.correlation_id is not None:
        exc.add_note(f"correlation id: {error.correlation_id}")
    return exc
