"""The memory service's one subscriber: every storage operation, on ``<ns>.memory.<op>``.

One wildcard subscription serves all operations: the subject names the
operation, the body is its request. Decoding is strict (unknown fields,
wrong types and oversized text are a ``bad_request``), and the operation runs
on the ``SqlAdapter`` of the request's agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from faststream.nats import NatsBroker

from contracts.memory import OPERATIONS, MemoryResult
from shared.bus import current_subject
from shared.errors import NotFound
from shared.storage.sql import SqlAdapter

# The reply is annotated Any on purpose: FastStream would convert it to the
# annotated class, and each operation has its own subclass of MemoryResult.
MemoryHandler = Callable[[Any], Awaitable[Any]]


def memory_handler(storage: SqlAdapter, broker: NatsBroker) -> MemoryHandler:
    """Return the subscriber that runs storage operations on ``storage``'s database.

    The subject is read from ``broker``'s context (``current_subject``), per
    request: a ``FastStream`` application replaces the broker's context when
    it takes it over.
    """

    async def run_storage_operation(body: Any) -> Any:
        """Run the storage operation named in the subject and reply with its return value."""
        name = current_subject(broker).rsplit(".", 1)[-1]
        operation = OPERATIONS.get(name)
        if operation is None:
            raise NotFound(f"unknown memory operation {name!r}")
        request = msgspec.convert(body, operation.request)
        adapter = storage.for_agent(request.for_agent)
        arguments = {p: getattr(request, p) for p in operation.parameters}
        value = await getattr(adapter, operation.name)(**arguments)
        result: MemoryResult = operation.result(value=value)
        return result

    return run_storage_operation
