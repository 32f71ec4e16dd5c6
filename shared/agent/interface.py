"""What the runtime asks of the parts wired in from above: the message pipeline, the vectors.

The runtime (``shared.agent.runtime``) holds a message service and an
embedding sink but imports neither implementation: it types them against
these Protocols, and the bootstrap plugin (``shared.agent.bootstrap``) gives
a runtime the defaults, ``DefaultMessageService`` and the in-process
``EmbeddingQueue``, unless a host set its own first (the runtime service
sends vectors to the embedding service's JetStream queue). elizaOS has the
same split: ``IMessageService`` in its types, the implementation in a
module of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from contracts.agent import HandleMessageResult
from contracts.embedding import Priority
from contracts.evaluation import EvaluateTurn
from contracts.records import Memory
from shared.agent.types import Callback, StreamChunk

if TYPE_CHECKING:
    # Type-only: a pipeline is handed the concrete runtime, as actions are
    # (``shared.agent.types``); nothing is imported at run time.
    from shared.agent.runtime import AgentRuntime


@dataclass(frozen=True)
class MessageOptions:
    """How to handle one message.

    ``use_multi_step`` and ``max_multi_step_iterations`` default to the
    ``USE_MULTI_STEP`` and ``MAX_MULTISTEP_ITERATIONS`` settings (off, 6);
    ``supersede`` to ``SUPERSEDE_IN_ROOM`` (off: every message of a room is
    answered, one at a time; on: a newer message takes over from an older one).
    """

    max_retries: int = 3
    timeout: float = 3600.0
    on_stream_chunk: StreamChunk | None = None
    use_multi_step: bool | None = None
    max_multi_step_iterations: int | None = None
    run_id: str | None = None
    run_evaluators: bool = True
    supersede: bool | None = None


class EvaluationSink(Protocol):
    """Where ended turns go to be evaluated: in this process, or the evaluator service."""

    async def submit(self, runtime: AgentRuntime, job: EvaluateTurn) -> None:
        """Have ``job`` evaluated (now, or durably queued)."""
        ...


class MessageService(Protocol):
    """The message pipeline of a runtime (elizaOS ``IMessageService``).

    Implemented by ``shared.agent.message_service.DefaultMessageService``.
    """

    evaluation: EvaluationSink
    """Where ended turns are evaluated (the runtime service: the evaluator service)."""

    async def handle_message(
        self,
        runtime: AgentRuntime,
        message: Memory,
        callback: Callback | None = None,
        options: MessageOptions | None = None,
    ) -> HandleMessageResult:
        """Handle ``message`` for ``runtime`` and return how the turn ended.

        Raises:
            TimeoutError: the turn ran past ``options.timeout``.
        """
        ...

    async def delete_message(self, runtime: AgentRuntime, message: Memory) -> None:
        """Delete ``message`` from the agent's memory (MESSAGE_DELETED follows)."""
        ...

    async def clear_channel(
        self, runtime: AgentRuntime, room_id: str, channel_id: str | None = None
    ) -> int:
        """Delete every message of the room; return how many (CHANNEL_CLEARED follows)."""
        ...

    def note_arrival(self, agent_id: str, room_id: str, message_id: str) -> None:
        """Record that a message arrived: the room's turns run in arrival order from now."""
        ...


class EmbeddingSink(Protocol):
    """Where a runtime sends memories that need a vector (in-process, or a JetStream queue)."""

    async def put(self, memory: Memory, priority: Priority = "normal") -> None:
        """Queue ``memory`` for a vector."""
        ...

    def start(self) -> None:
        """Start draining (if this sink drains at all)."""
        ...

    async def stop(self) -> None:
        """Stop draining."""
        ...
