"""The memory service's one request handler: every storage operation, on ``<ns>.memory.<op>``.

One wildcard subscription serves all operations: the subject names the
operation, the body is its request, decoded from bytes straight into the
operation's request type. Decoding is strict (unknown fields, wrong types and
oversized text are a ``bad_request`` naming the field), and the operation
runs on the ``SqlAdapter`` of the request's agent.
"""

from __future__ import annotations

import msgspec
from nats.aio.msg import Msg

from contracts.memory import OPERATIONS, MemoryResult
from shared.bus import decode_as, decode_json
from shared.errors import NotFound
from shared.raw_requests import RequestHandler
from shared.storage.sql import SqlAdapter


def memory_handler(storage: SqlAdapter) -> RequestHandler:
    """Return the handler that runs storage operations on ``storage``'s database.

    It answers a request on ``<ns>.memory.<op>`` with ``<Op>Result``, and raises
    ``NotFound`` for an unknown operation, ``BadRequest`` for a body that is
    not the operation's request, or whatever the operation raises.
    """
    decoders = {name: msgspec.json.Decoder(op.request) for name, op in OPERATIONS.items()}
    # Made once: MemoryOperation.parameters reads the signature on each call (~5% of an operation).
    parameters = {name: tuple(op.parameters) for name, op in OPERATIONS.items()}

    async def run_storage_operation(msg: Msg) -> MemoryResult:
        """Run the storage operation named in the subject and reply with its return value."""
        name = msg.subject.rsplit(".", 1)[-1]
        operation = OPERATIONS.get(name)
        if operation is None:
            decode_json(msg.data)  # malformed JSON is a bad request whatever the operation
            raise NotFound(f"unknown memory operation {name!r}")
        request = decode_as(decoders[name], msg.data)
        adapter = storage.for_agent(request.for_agent)
        arguments = {p: getattr(request, p) for p in parameters[name]}
        value = await getattr(adapter, operation.name)(**arguments)
        result: MemoryResult = operation.result(value=value)
        return result

    return run_storage_operation
