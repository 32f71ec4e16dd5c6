"""The typed storage methods are generated from the ``StorageOperations`` Protocol."""

from __future__ import annotations

import difflib
from typing import Any, Literal, Protocol

import pytest

from contracts.records import Agent, Memory
from shared.storage import codegen
from shared.storage.adapter import DatabaseAdapter
from shared.storage.delegation import StorageDelegation


def test_the_generated_storage_methods_are_up_to_date_with_the_protocol() -> None:
    differences: list[str] = []
    for path, text in codegen.generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        differences += difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"{path.name} (checked in)",
            f"{path.name} (from contracts/storage.py)",
        )
    assert not differences, (
        "the generated storage methods are out of date with contracts/storage.py: run "
        f"`make codegen` ({codegen.COMMAND}) and commit the result\n" + "".join(differences)
    )


@pytest.mark.parametrize(
    ("hint", "source", "imports"),
    [
        (Agent | None, "Agent | None", ["from contracts.records import Agent"]),
        (list[Memory], "list[Memory]", ["from contracts.records import Memory"]),
        (dict[str, Any] | None, "dict[str, Any] | None", ["from typing import Any"]),
        (tuple[int, ...], "tuple[int, ...]", []),
        (Literal["a", 1], "Literal['a', 1]", ["from typing import Literal"]),
    ],
)
def test_a_type_is_written_as_source_with_its_imports(
    hint: Any, source: str, imports: list[str]
) -> None:
    needed = codegen._Imports()
    assert codegen.render_type(hint, needed) == source
    assert list(needed.lines()) == imports


def test_a_storage_operation_that_is_not_async_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Storage(Protocol):
        def count(self) -> int:
            """Count."""
            ...

    monkeypatch.setattr(codegen, "StorageOperations", Storage)
    with pytest.raises(TypeError, match=r"StorageOperations\.count must be an async method"):
        codegen.operations()


async def test_the_delegation_passes_every_argument_to_the_adapter() -> None:
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    returned: Any = object()

    class Recording:
        def __getattr__(self, name: str) -> Any:
            async def record(*args: Any, **kwargs: Any) -> Any:
                calls.append((name, args, kwargs))
                return returned

            return record

    class Delegating(StorageDelegation):
        @property
        def adapter(self) -> DatabaseAdapter:
            return Recording()  # its __getattr__ gives every operation

    delegating = Delegating()
    assert await delegating.count_memories("room-1", table_name="facts") is returned
    assert await delegating.get_logs(room_id="room-1") is returned
    assert calls == [
        ("count_memories", ("room-1", False, "facts"), {}),
        (
            "get_logs",
            (),
            {"entity_id": None, "room_id": "room-1", "log_type": None, "count": 100, "offset": 0},
        ),
    ]
