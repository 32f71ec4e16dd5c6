"""The in-process adapter, the memory-service messages and the client agree with the Protocol."""

from __future__ import annotations

import inspect

import msgspec
import pytest
from faststream.nats import NatsBroker

from contracts import Content, Subjects
from contracts.memory import OPERATIONS
from contracts.records import Memory
from contracts.storage import StorageOperations
from shared.storage.client import NatsMemoryClient, memory_client
from shared.storage.delegation import StorageDelegation
from shared.storage.sql import SqlAdapter

PROTOCOL = {
    name: method
    for name, method in vars(StorageOperations).items()
    if inspect.iscoroutinefunction(method)
}


def test_every_storage_operation_has_a_wire_request_and_result() -> None:
    assert set(OPERATIONS) == set(PROTOCOL)
    for name, operation in OPERATIONS.items():
        assert operation.request.__struct_config__.tag == f"memory.{name}.v1"
        assert "for_agent" in operation.request.__struct_fields__
        assert operation.parameters == list(inspect.signature(PROTOCOL[name]).parameters)[1:]


@pytest.mark.parametrize("implementation", [SqlAdapter, NatsMemoryClient, StorageDelegation])
def test_every_implementation_has_every_operation_with_the_same_parameters(
    implementation: type,
) -> None:
    for name, method in PROTOCOL.items():
        implemented = getattr(implementation, name, None)
        assert implemented is not None, f"{implementation.__name__} lacks {name}"
        assert inspect.iscoroutinefunction(implemented), name
        expected = [
            (p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()
        ]
        actual = [
            (p.name, p.kind, p.default) for p in inspect.signature(implemented).parameters.values()
        ]
        assert actual == expected, name


def test_a_request_with_an_unknown_field_is_rejected() -> None:
    request = OPERATIONS["get_memory_by_id"].request
    with pytest.raises(msgspec.ValidationError, match="unknown field `memory_idd`"):
        msgspec.convert({"for_agent": "a", "memory_idd": "m"}, request)


async def test_the_client_binds_arguments_like_the_protocol_does() -> None:
    sent: list[tuple[str, dict[str, object]]] = []

    class Recording(NatsMemoryClient):
        async def call(self, operation, arguments):  # type: ignore[no-untyped-def]
            sent.append((operation.name, arguments))
            return "id-1"

    client = Recording(NatsBroker(), agent_id="agent-1", subjects=Subjects())
    memory = Memory(entity_id="user-1", room_id="room-1", content=Content(text="hi"))
    assert await client.create_memory(memory, "messages") == "id-1"
    await client.count_memories("room-1", table_name="facts")
    assert sent == [
        ("create_memory", {"memory": memory, "table_name": "messages", "unique": True}),
        ("count_memories", {"room_id": "room-1", "unique": False, "table_name": "facts"}),
    ]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'table_name'"):
        await client.create_memory(memory)  # type: ignore[call-arg]


def test_for_agent_keeps_the_broker_and_changes_the_agent() -> None:
    broker = NatsBroker()
    client = memory_client(broker, agent_id="a", subjects=Subjects("x"), timeout=3)
    other = client.for_agent("b")
    assert isinstance(other, NatsMemoryClient)
    assert (other.broker, other.agent_id, other.subjects.namespace, other.timeout) == (
        broker,
        "b",
        "x",
        3,
    )
