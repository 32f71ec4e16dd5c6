"""Database failures become typed errors by their SQLSTATE class, never ``internal``."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from shared.bus import as_service_error
from shared.errors import BadRequest, Unavailable


class DriverError(Exception):
    """What a driver raises: the SQLSTATE in ``pgcode`` (asyncpg through SQLAlchemy)."""

    def __init__(self, message: str, pgcode: str) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def dbapi_error(pgcode: str) -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.DBAPIError("INSERT ...", None, DriverError("refused", pgcode))


@pytest.mark.parametrize("pgcode", ["40P01", "40001"])
def test_a_deadlock_or_serialization_failure_is_unavailable_and_retryable(pgcode: str) -> None:
    error = as_service_error(dbapi_error(pgcode))
    assert isinstance(error, Unavailable)
    assert error.to_error().retryable


def test_a_value_the_database_refuses_is_a_bad_request() -> None:
    assert isinstance(as_service_error(dbapi_error("22P05")), BadRequest)
