"""``NatsMemoryClient``: the ``DatabaseAdapter`` as requests to the memory service.

Its storage methods come from ``RemoteStorageOperations``, generated from the
``StorageOperations`` Protocol (``make codegen``), so every operation of the
in-process ``SqlAdapter`` is here too, with the same parameters, results and
errors (``ServiceError`` subclasses come back as the same class).
"""

from __future__ import annotations

from collections.abc import Mapping

from faststream.nats import NatsBroker

from contracts import Subjects
from contracts.memory import MemoryOperation
from shared.bus import request
from shared.errors import Unavailable
from shared.storage.adapter import DatabaseAdapter
from shared.storage.remote_operations import RemoteStorageOperations


class NatsMemoryClient(RemoteStorageOperations):
    """Storage for one agent, through the memory service on NATS.

    The broker belongs to the caller, who connects and closes it.
    """

    def __init__(
        self, broker: NatsBroker, *, agent_id: str, subjects: Subjects, timeout: float = 10.0
    ) -> None:
        self.broker = broker
        self.agent_id = agent_id
        self.subjects = subjects
        self.timeout = timeout

    def for_agent(self, agent_id: str) -> DatabaseAdapter:
        """Return a client for ``agent_id`` over the same broker."""
        return memory_client(
            self.broker, agent_id=agent_id, subjects=self.subjects, timeout=self.timeout
        )

    async def init(self, *, migrate: bool = True) -> None:
        """Check the broker is connected; the memory service runs the migrations itself."""
        del migrate
        if not await self.broker.ping(timeout=self.timeout):
            raise Unavailable("the memory client's NATS connection is not up")

    async def close(self) -> None:
        """Nothing to release: the broker is the caller's."""

    async def call(self, operation: MemoryOperation, arguments: Mapping[str, object]) -> object:
        """Send one storage operation for this agent and return its value."""
        result = await request(
            self.broker,
            self.subjects.memory_operation(operation.name),
            operation.request(for_agent=self.agent_id, **arguments),
            operation.result,
            timeout=self.timeout,
        )
        return result.value


def memory_client(
    broker: NatsBroker, *, agent_id: str, subjects: Subjects, timeout: float = 10.0
) -> DatabaseAdapter:
    """Return a ``DatabaseAdapter`` for ``agent_id`` that goes through the memory service."""
    return NatsMemoryClient(broker, agent_id=agent_id, subjects=subjects, timeout=timeout)
