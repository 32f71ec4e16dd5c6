"""Evaluators after the turn, in the evaluator service: the queue and its worker.

With ``EVALUATORS=remote`` the runtime does not run evaluators itself: its
message service hands each ended turn to ``JetStreamEvaluation``, which
queues an ``EvaluateTurn`` (the message, the replies, and the context the
turn read) on a JetStream work queue. ``EvaluationWorker``, a FastStream
pull subscriber of a durable consumer shared by the evaluator replicas, runs
``evaluate_turn`` on each job, one at a time: the
same code and the same inputs as in one process, so evaluating costs no
storage reads, and its writes are one commit. Delivery is at least once; the
commit is all or nothing, so a retried job never leaves half its facts. A
failure is retried with backoff, then given up (logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from faststream.nats import NatsBroker, NatsMessage

from contracts import Subjects
from contracts.evaluation import EvaluateTurn
from shared.agent.message_service import evaluate_turn
from shared.bus import ensure_stream
from shared.consumer import QUEUE_WAIT, QueueConsumers, pull_consumer
from shared.errors import NotFound
from shared.telemetry import consumed

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


class EvaluationWorker(QueueConsumers):
    """Runs evaluators for every turn that ended, from the evaluation queue, one at a time."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        host: AgentHost,
        *,
        max_deliver: int = 4,
        backoff: float = 1.0,
        wait: float = QUEUE_WAIT,
    ) -> None:
        super().__init__(broker)
        self.subjects = subjects
        self.host = host
        self.max_deliver = max_deliver
        self.backoff = backoff
        self.wait = wait

    async def declare(self) -> None:
        """Declare the evaluation queue and subscribe to its durable consumer."""
        await ensure_evaluation_stream(self.broker, self.subjects)
        self.durables.append(
            pull_consumer(
                self.broker,
                self.subjects.turn_evaluate_template,
                self._one,
                stream=self.subjects.evaluation_stream,
                durable="evaluator",
                max_deliver=self.max_deliver + 1,
                ack_wait=300,
                wait=self.wait,
            )
        )

    async def _one(self, message: NatsMessage) -> None:
        """Run the evaluators of one ended turn (an ``EvaluateTurn``)."""
        subject = message.raw_message.subject
        try:
            job = _DECODER.decode(message.body)
        except msgspec.DecodeError:
            logger.exception("unreadable evaluation job on %s; dropped", subject)
            await message.reject()
            return
        try:
            with consumed("evaluate", message.headers, message_id=job.message.id):
                await self.evaluate(job)
        except Exception:
            delivered = message.raw_message.metadata.num_delivered
            if delivered >= self.max_deliver:
                logger.exception(
                    "evaluation of %s given up after %d tries", job.message.id, delivered
                )
                await message.reject()
            else:
                logger.warning("evaluation of %s failed; retrying", job.message.id, exc_info=True)
                await message.nack(delay=self.backoff * 2 ** (delivered - 1))
            return
        await message.ack()

    async def evaluate(self, job: EvaluateTurn) -> bool:
        """Run the evaluators for one ended turn; False when its agent is gone."""
        try:
            runtime = await self.host.runtime_for(job.agent_id)
        except NotFound:
            return False  # deleted or stopped since
        await evaluate_turn(runtime, job)
        return True
