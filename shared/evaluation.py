"""Evaluators after the turn: the evaluator service's worker.

The runtime publishes ``run.ended`` on the events stream; this worker, a
durable pull consumer shared by the evaluator replicas, runs the agent's
evaluators (REFLECTION learns facts and relationships) with the same core
code as embedded mode, through the memory service. Delivery is at least
once; each event is evaluated once (its event id is remembered in the
agent's cache). A failure is retried with backoff, then given up (logged).
"""

from __future__ import annotations

import logging

import msgspec
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from contracts import Subjects
from contracts.events import AgentEventOccurred
from contracts.records import now_ms
from shared.errors import NotFound
from shared.hosting import AgentHost
from shared.telemetry import consumed
from shared.workers import PullWorker

logger = logging.getLogger("elizamesh.evaluation")

_DECODER = msgspec.json.Decoder(AgentEventOccurred)
_DONE_TTL_MS = 24 * 3600 * 1000
_EVALUATED = frozenset({"completed", "failed", "ignored"})


class EvaluationWorker(PullWorker):
    """Runs evaluators for every turn that ended, once per event."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        host: AgentHost,
        *,
        batch_size: int = 8,
        max_deliver: int = 4,
        backoff: float = 1.0,
    ) -> None:
        self.subjects = subjects
        self.host = host
        self.batch_size = batch_size
        self.max_deliver = max_deliver
        self.backoff = backoff
        super().__init__(broker)

    async def open(self) -> None:
        """Join the durable consumer of ``run.ended`` events."""
        js = self.broker.config.connection_state.stream
        subscription = await js.pull_subscribe(
            self.subjects.events_of_type("run.ended"),
            durable="evaluator",
            stream=self.subjects.events_stream,
            config=ConsumerConfig(ack_wait=300, max_deliver=self.max_deliver + 1),
        )
        self.subscriptions = [subscription]
        self.durables = [(self.subjects.events_stream, "evaluator")]

    async def drain_once(self) -> int:
        """Evaluate one batch of ended turns; return how many events were taken."""
        try:
            batch: list[Msg] = await self.subscriptions[0].fetch(self.batch_size, timeout=0.1)
        except TimeoutError:
            return 0
        for msg in batch:
            await self._one(msg)
        return len(batch)

    async def _one(self, msg: Msg) -> None:
        try:
            event = _DECODER.decode(msg.data)
        except msgspec.DecodeError:
            logger.exception("unreadable run.ended event on %s; dropped", msg.subject)
            await msg.term()
            return
        try:
            with consumed("evaluate", msg.headers, event_id=event.event_id):
                await self.evaluate(event)
        except Exception:
            delivered = msg.metadata.num_delivered
            if delivered >= self.max_deliver:
                logger.exception(
                    "evaluation of %s given up after %d tries", event.event_id, delivered
                )
                await msg.term()
            else:
                logger.warning("evaluation of %s failed; retrying", event.event_id, exc_info=True)
                await msg.nak(delay=self.backoff * 2 ** (delivered - 1))
            return
        await msg.ack()

    async def evaluate(self, event: AgentEventOccurred) -> bool:
        """Run the evaluators for one ended turn; False when there is nothing to do."""
        if event.message_id is None or event.data.get("status") not in _EVALUATED:
            return False
        try:
            runtime = await self.host.runtime_for(event.agent_id)
        except NotFound:
            return False  # deleted or stopped since
        key = f"evaluated:{event.event_id}"
        if await runtime.adapter.get_cache(key) is not None:
            return False
        message = await runtime.adapter.get_memory_by_id(event.message_id)
        if message is None:
            return False
        responses = [
            m
            for m in await runtime.adapter.get_memories(
                table_name="messages", room_id=message.room_id, start=message.created_at, count=50
            )
            if m.entity_id == runtime.agent_id and m.content.in_reply_to == message.id
        ]
        state = await runtime.compose_state(message, ["RECENT_MESSAGES", "EVALUATORS"])
        await runtime.evaluate(message, state, did_respond=bool(responses), responses=responses)
        await runtime.adapter.set_cache(key, now_ms(), expires_at=now_ms() + _DONE_TTL_MS)
        return True
