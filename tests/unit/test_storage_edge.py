"""Every storage operation of ``SqlAdapter`` passes its arguments through the edge.

The edge (``shared.storage.validation.at_the_edge``) turns ``uuid.UUID`` ids
into text and re-checks records, so nothing is stored that a read refuses. It
is applied as a decorator on each method, where a reader and mypy see it; this
test fails when a new operation is added without it.
"""

from __future__ import annotations

import inspect

from contracts.storage import StorageOperations
from shared.storage.sql import SqlAdapter


def operation_names() -> list[str]:
    return [
        name
        for name, member in vars(StorageOperations).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    ]


def test_the_protocol_has_operations_to_check() -> None:
    assert len(operation_names()) > 60


def test_every_storage_operation_of_the_sql_adapter_goes_through_the_edge() -> None:
    undecorated = [
        name
        for name in operation_names()
        if getattr(SqlAdapter, name).__code__.co_qualname != "at_the_edge.<locals>.edge"
    ]
    assert undecorated == []


def test_the_edge_keeps_each_operations_signature_and_docstring() -> None:
    for name in operation_names():
        method = getattr(SqlAdapter, name)
        assert inspect.signature(method) == inspect.signature(method.__wrapped__), name
        assert method.__doc__ == method.__wrapped__.__doc__, name
