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
storage outage (``Unavailable``) is retried with backoff for
``QUEUE_RETRY_SECONDS``; another failure ``max_deliver`` times; then the job
is dead-lettered (``<ns>.dead.evaluator``, kept by the dead-letter stream),
as is at once a job that cannot be read (not UTF-8, not JSON, nested too
deep).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec
from faststream.nats import NatsBroker, NatsMessage

from contracts import Subjects
from contracts.evaluation import EvaluateTurn
from shared.agent.message_service import evaluate_turn
from shared.bus import as_service_error, ensure_stream
from shared.consumer import (
    QUEUE_WAIT,
    Backoff,
    QueueConsumers,
    dead_letter,
    decoded,
    ensure_dead_letter_stream,
    pull_consumer,
    retry_or_dead_letter,
)
from shared.errors import BadRequest, NotFound, Unavailable
from shared.telemetry import consumed

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime
    from shared.hosting import AgentHost

logger = logging.getLogger("elizamesh.evaluation")

_DECODER = msgspec.json.Decoder(EvaluateTurn)
DURABLE = "evaluator"
"""The evaluator replicas' durable consumer (and the name of its dead letters)."""
_ENCODER = msgspec.json.Encoder()


async def ensure_evaluation_stream(broker: NatsBroker, subjects: Subjects) -> None:
    """Declare the evaluation work queue and the dead-letter stream (idempotent)."""
    await ensure_stream(
        broker, subjects.evaluation_stream, [subjects.turn_evaluate_template], work_queue=True
    )
    await ensure_dead_letter_stream(broker, subjects)


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
        outage: Backoff | None = None,
        wait: float = QUEUE_WAIT,
    ) -> None:
        """Prepare the worker (``open`` starts it).

        Args:
            broker: Its connection.
            subjects: The stack's subjects.
            host: The agents, whose evaluators run.
            max_deliver: Tries of a job whose evaluation fails.
            backoff: Seconds before the second try; doubled before each later one.
            outage: Retries while storage is ``Unavailable`` (default 10 minutes).
            wait: Seconds one pull waits on the server (a long poll).
        """
        super().__init__(broker)
        self.subjects = subjects
        self.host = host
        self.max_deliver = max_deliver
        self.backoff = backoff
        self.outage = outage or Backoff(first=backoff)
        self.wait = wait
        self.dead_letters = subjects.dead_letter(DURABLE)

    async def declare(self) -> None:
        """Declare the evaluation queue and subscribe to its durable consumer."""
        await ensure_evaluation_stream(self.broker, self.subjects)
        self.durables.append(
            pull_consumer(
                self.broker,
                self.subjects.turn_evaluate_template,
                self._one,
                stream=self.subjects.evaluation_stream,
                durable=DURABLE,
                max_deliver=-1,  # bounded by ``max_deliver`` and ``outage``, here
                ack_wait=300,
                wait=self.wait,
                backoff=self.outage,
                dead_letters=(self.dead_letters, self.subjects.dead_letters_stream),
            )
        )

    async def _one(self, message: NatsMessage) -> None:
        """Run the evaluators of one ended turn (an ``EvaluateTurn``)."""
        try:
            job = decoded(_DECODER, message.body)
        except BadRequest as exc:
            await self._dead(message, str(exc))
            return
        try:
            with consumed("evaluate", message.headers, message_id=job.message.id):
                await self.evaluate(job)
        except Exception as exc:
            await self._failed(message, job, exc)
            return
        await message.ack()

    async def _failed(self, message: NatsMessage, job: EvaluateTurn, exc: Exception) -> None:
        error = as_service_error(exc)
        reason = f"evaluation of {job.message.id} failed: {error.code}: {error}"
        if isinstance(error, Unavailable):  # an outage: minutes of retries
            await retry_or_dead_letter(
                self.broker,
                message,
                reason,
                backoff=self.outage,
                subject=self.dead_letters,
                stream=self.subjects.dead_letters_stream,
            )
            return
        delivered = message.raw_message.metadata.num_delivered
        if isinstance(error, BadRequest) or delivered >= self.max_deliver:
            logger.error("evaluation of %s given up", job.message.id, exc_info=exc)
            await self._dead(message, f"{reason} (after {delivered} tries)")
            return
        logger.warning("evaluation of %s failed; retrying", job.message.id, exc_info=exc)
        await message.nack(delay=self.backoff * 2 ** (delivered - 1))

    async def _dead(self, message: NatsMessage, reason: str) -> None:
        await dead_letter(
            self.broker,
            message,
            self.dead_letters,
            reason,
            stream=self.subjects.dead_letters_stream,
        )

    async def evaluate(self, job: EvaluateTurn) -> bool:
        """Run the evaluators for one ended turn; False when its agent is gone."""
        try:
            runtime = await self.host.runtime_for(job.agent_id)
        except NotFound:
            return False  # deleted or stopped since
        await evaluate_turn(runtime, job)
        return True
