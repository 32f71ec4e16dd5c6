"""The ``DatabaseAdapter`` port: the storage operations, for one agent, with a lifecycle.

One adapter speaks for one agent (as in elizaOS); ``for_agent`` gives a view
for another agent over the same connections. ``SqlAdapter`` (in-process) and
``NatsMemoryClient`` (through the memory service) both implement it.
"""

from __future__ import annotations

from typing import Protocol

from contracts.storage import StorageOperations


class DatabaseAdapter(StorageOperations, Protocol):
    """Storage for one agent: every ``StorageOperations`` call, plus lifecycle."""

    agent_id: str

    def for_agent(self, agent_id: str) -> DatabaseAdapter:
        """Return an adapter for ``agent_id`` sharing this one's connections."""
        ...

    async def init(self, *, migrate: bool = True) -> None:
        """Connect, and bring the schema up to date unless ``migrate`` is False."""
        ...

    async def close(self) -> None:
        """Release every connection."""
        ...
