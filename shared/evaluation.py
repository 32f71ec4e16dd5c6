"""Evaluators after the turn, in the evaluator service: the queue and its worker.

With ``EVALUATORS=remote`` the runtime does not run evaluators itself: its
message service hands each ended turn to ``JetStreamEvaluation``, which
queues an ``EvaluateTurn`` (the message, the replies, and the context the
turn read) on a JetStream work queue. ``EvaluationWorker``, a durable pull
consumer shared by the evaluator replicas, runs ``evaluate_turn`` on it: the
same code and the same inputs as in one process, so evaluating costs no
storage reads, and its writes are one commit. Delivery is at least once; the
commit is all or nothing, so a retried job never leaves half its facts. A
failure is retried with backoff, then given up (logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from contracts import Subjects
from contracts.evaluation import EvaluateTurn
from shared.agent.message_service import evaluate_turn
from shared.bus import ensure_stream
from shared.errors import NotFound
from shared.telemetry import consumed
from shared.workers import PullWorker

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime
    from shared.hosting import AgentHost

logger = logging.getLogger("elizamesh.evaluation")

_DECODER = msgspec.json.Decoder(EvaluateTurn)
_ENCODER = msgspec.json.Encoder()


async def ensure_evaluation_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the evaluation work queue (idempotent)."""
    await ensure_stream(
        broker, subjects.evaluation_stream, [subjects.turn_evaluate_template], work_queue=True
    )


class JetStreamEvaluation:
    """The evaluation sink of the runtime service: ended turns go to the evaluator service."""

    def __init__(self, broker: NatsBroker, subjects: Subjects) -> None:
        self.broker = broker
        self.subjects = subjects

    async def submit(self, runtime: AgentRuntime, job: EvaluateTurn) -> None:
        """Queue ``job`` durably; a failed publish is logged, the turn's outcome stands."""
        try:
            await self.broker.publish(
                job,
                self.subjects.turn_evaluate(runtime.agent_id),
                stream=self.subjects.evaluation_stream,
            )
        except Exception:
            logger.exception("could not queue the evaluation of message %s", job.message.id)


class EvaluationWorker(PullWorker):
    """Runs evaluators for every turn that ended, from the evaluation queue."""

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
        """Declare the evaluation queue and join its durable consumer."""
        await ensure_evaluation_stream(self.broker, self.subjects)
        js = self.broker.config.connection_state.stream
        subscription = await js.pull_subscribe(
            self.subjects.turn_evaluate_template,
            durable="evaluator",
            stream=self.subjects.evaluation_stream,
            config=ConsumerConfig(ack_wait=300, max_deliver=self.max_deliver + 1),
        )
        self.subscriptions = [subscription]
        self.durables = [(self.subjects.evaluation_stream, "evaluator")]

    async def drain_once(self) -> int:
        """Evaluate one batch of ended turns; return how many were taken."""
        try:
            batch: list[Msg] = await self.subscriptions[0].fetch(self.batch_size, timeout=0.1)
        except TimeoutError:
            return 0
        for msg in batch:
            await self._one(msg)
        return len(batch)

    async def _one(self, msg: Msg) -> None:
        try:
            job = _DECODER.decode(msg.data)
        except msgspec.DecodeError:
            logger.exception("unreadable evaluation job on %s; dropped", msg.subject)
            await msg.term()
            return
        try:
            with consumed("evaluate", msg.headers, message_id=job.message.id):
                await self.evaluate(job)
        except Exception:
            delivered = msg.metadata.num_delivered
            if delivered >= self.max_deliver:
                logger.exception(
                    "evaluation of %s given up after %d tries", job.message.id, delivered
                )
                await msg.term()
            else:
                logger.warning("evaluation of %s failed; retrying", job.message.id, exc_info=True)
                await msg.nak(delay=self.backoff * 2 ** (delivered - 1))
            return
        await msg.ack()

    async def evaluate(self, job: EvaluateTurn) -> bool:
        """Run the evaluators for one ended turn; False when its agent is gone."""
        try:
            runtime = await self.host.runtime_for(job.agent_id)
        except NotFound:
            return False  # deleted or stopped since
        await evaluate_turn(runtime, job)
        return True
