"""Following a run from the outside, and keeping a live run's followers waiting.

Used by the gateway (server-sent events, WebSocket), the ``ElizaOSClient``
and connectors such as ``elizamesh chat``: subscribe to
``<ns>.run.<run_id>.>`` first, send the message with that ``run_id`` and
``reply_at_once``, then read chunks, responses and the end, in order.

Liveness: while a turn runs, the replica running it publishes a
``RunHeartbeat`` on ``<ns>.run.<run_id>.heartbeat`` every
``RUN_HEARTBEAT_SECONDS`` (``heartbeat``, started by the hosting code). A
follower waits as long as heartbeats come, however slow the model, and raises
``Unavailable`` naming the run once ``HEARTBEAT_MISSES`` intervals pass
without one (the replica died). A message queued behind its room's earlier
turns beats too (``RoomScheduler`` tells the hosting code which wait); before
the first heartbeat, a follower waits up to its ``timeout``.

The runs stream keeps every run's messages for an hour: ``follow_kept_run``
replays a run from its first message, so a follower that lost its connection
(or never had one) resumes it.

A follower with an ``owner`` (the gateway, a connector) runs on owned run ids
(``Subjects.owned_run_id``), whose subjects its NATS user may read
(``Subjects.runs_of``) while nobody else's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import nats.errors
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import HandleMessage, HandleMessageResult, Subjects, new_id
from contracts.events import RunChunk, RunEnded, RunHeartbeat, RunResponse
from contracts.subjects import run_owner
from shared.bus import request
from shared.config import HostSettings
from shared.errors import Unavailable

logger = logging.getLogger("elizamesh.runs")

RunEvent = RunChunk | RunResponse | RunEnded
"""What a run publishes that its followers act on."""

HEARTBEAT_MISSES = 3
"""Heartbeat intervals a follower waits in silence before it gives the run up."""

_DECODER = msgspec.json.Decoder(RunEvent | RunHeartbeat)


@dataclass
class RunFollower:
    """The messages of one run as they arrive (read ``events()`` once).

    ``timeout``: seconds to wait for the run's first sign of life; after a
    heartbeat, ``HEARTBEAT_MISSES`` of its intervals instead.
    """

    run_id: str
    timeout: float
    _queue: asyncio.Queue[bytes]
    _stop: Callable[[], Awaitable[object]]
    _closed: bool = field(default=False, init=False)

    async def events(self) -> AsyncIterator[tuple[RunEvent, bytes]]:
        """Yield each event (and its raw JSON) up to the run's end, then stop listening.

        Heartbeats are not yielded: they only keep the wait going.

        Raises:
            Unavailable: the run went silent: no heartbeat for
                ``HEARTBEAT_MISSES`` intervals, or nothing at all for ``timeout``
                seconds (the replica running it died, or nobody took it).
        """
        async for event, raw in self.messages():
            if not isinstance(event, RunHeartbeat):
                yield event, raw

    async def messages(self) -> AsyncIterator[tuple[RunEvent | RunHeartbeat, bytes]]:
        """Like ``events``, heartbeats included (for keep-alives such as SSE comments).

        Messages of a type this version does not know are skipped.

        Raises:
            Unavailable: the run went silent (see ``events``).
        """
        patience = self.timeout
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(self._queue.get(), patience)
                except TimeoutError:
                    raise Unavailable(
                        f"run {self.run_id} went silent: nothing for {patience:g}s"
                    ) from None
                try:
                    event = _DECODER.decode(raw)
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                    # A newer runtime's message type, or noise: not a reason to drop the run.
                    logger.debug("run %s: skipped a message: %s", self.run_id, exc)
                    continue
                if isinstance(event, RunHeartbeat):
                    patience = event.interval * HEARTBEAT_MISSES
                yield event, raw
                if isinstance(event, RunEnded):
                    return
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening to the run (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(nats.errors.Error):  # a closed connection has no subscription
            await self._stop()


@dataclass
class Run(RunFollower):
    """A run that was accepted: its acknowledgement, then its events."""

    ack: HandleMessageResult = field(kw_only=True)


async def start_run(
    broker: NatsBroker,
    subjects: Subjects,
    agent_id: str,
    message: HandleMessage,
    *,
    timeout: float,
    owner: str | None = None,
) -> Run:
    """Send ``message`` to ``agent_id`` in async mode; return the accepted run.

    With ``owner``, the run is one ``owner`` owns (see ``owned``). Errors of
    the request itself (unknown agent, bad input, nobody listening) are
    raised here, before any event.
    """
    if owner is not None:
        message = owned(message, subjects, owner)
    run_id = message.run_id or new_id()
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await queue.put(msg.data)

    connection = broker.config.connection_state.connection
    # The request goes out on this connection, queued behind the SUB: the
    # server has the subscription before any runtime can publish to the run.
    subscription = await connection.subscribe(subjects.run_template(run_id), cb=collect)
    try:
        sent = msgspec.structs.replace(message, run_id=run_id, reply_at_once=True)
        ack = await request(
            broker, subjects.message_handle(agent_id), sent, HandleMessageResult, timeout=timeout
        )
    except BaseException:
        await subscription.unsubscribe()
        raise
    return Run(run_id, timeout, queue, subscription.unsubscribe, ack=ack)


async def follow_run(
    broker: NatsBroker,
    subjects: Subjects,
    agent_id: str,
    message: HandleMessage,
    *,
    timeout: float,
    owner: str | None = None,
) -> AsyncIterator[tuple[RunEvent, bytes]]:
    """Send ``message`` to ``agent_id``; yield the run's events (and their raw JSON) to the end.

    With ``owner``, the run is one ``owner`` owns (see ``owned``). The wait
    lasts as long as the run's heartbeats come (see ``RunFollower.events``).

    Raises:
        ServiceError: the request failed (unknown agent, bad input, nobody listening).
        Unavailable: the run went silent.
    """
    run = await start_run(broker, subjects, agent_id, message, timeout=timeout, owner=owner)
    async for event in run.events():
        yield event


async def follow_kept_run(
    broker: NatsBroker, subjects: Subjects, run_id: str, *, timeout: float
) -> RunFollower:
    """Follow a run already under way (or over), from its first message, out of the runs stream.

    For a follower that lost its connection or joins late: it sees every
    chunk again, then the live ones, then the end. A run older than the
    stream's retention (an hour) is gone: ``events`` then raises
    ``Unavailable`` after ``timeout``.

    The replay is a push consumer named here and filtered to the run, so
    the JetStream API subject names the run
    (``$JS.API.CONSUMER.CREATE.<RUNS>.<name>.<ns>.run.<owner>.<id>.>``): a
    connector's user may resume its own runs and no one else's. The server
    deletes it once nobody has listened for a minute.

    Raises:
        InvalidIdError: ``run_id`` is not a valid run id.
    """
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await queue.put(msg.data)

    connection = broker.config.connection_state.connection
    inbox = connection.new_inbox()
    subscription = await connection.subscribe(inbox, cb=collect)
    try:
        await broker.config.connection_state.stream.add_consumer(
            subjects.runs_stream,
            ConsumerConfig(
                name=f"replay-{new_id()}",
                filter_subject=subjects.run_template(run_id),
                deliver_subject=inbox,
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=KEPT_REPLAY_IDLE,
            ),
        )
    except BaseException:
        await subscription.unsubscribe()
        raise
    return RunFollower(run_id, timeout, queue, subscription.unsubscribe)


KEPT_REPLAY_IDLE = 60.0
"""Seconds without a listener after which the server deletes a replay's consumer."""


@functools.cache
def heartbeat_interval() -> float:
    """Seconds between heartbeats (``RUN_HEARTBEAT_SECONDS``), read once per process."""
    return HostSettings.from_env().run_heartbeat_seconds


@contextlib.asynccontextmanager
async def heartbeat(
    broker: NatsBroker,
    subjects: Subjects,
    request: HandleMessage,
    *,
    interval: float | None = None,
) -> AsyncIterator[None]:
    """Publish the run's heartbeat every ``interval`` seconds while the block runs.

    The hosting code wraps a turn in it. The first heartbeat leaves at once,
    so followers learn the interval before the model is called. A request
    with no run (nobody follows it) beats nothing. ``interval`` defaults to
    ``RUN_HEARTBEAT_SECONDS`` (2). A heartbeat that cannot be sent (NATS
    away) is skipped: followers then give up, which is the truth.
    """
    if request.run_id is None:
        yield
        return
    every = interval or heartbeat_interval()

    async def beat_forever() -> None:
        while True:
            await beat(broker, subjects, [request], interval=every)
            await asyncio.sleep(every)

    task = asyncio.create_task(beat_forever(), name=f"heartbeat-{request.run_id}")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def beat(
    broker: NatsBroker,
    subjects: Subjects,
    requests: list[HandleMessage],
    *,
    interval: float | None = None,
) -> None:
    """Publish one heartbeat for each request's run (requests without a run are skipped).

    ``interval``: the seconds until the next beat that followers are told
    (``RUN_HEARTBEAT_SECONDS`` by default). Never raises: a beat that cannot
    be sent (NATS away) is skipped, and followers then give up, which is the truth.
    """
    every = interval or heartbeat_interval()
    for live in requests:
        if live.run_id is None:
            continue
        message = RunHeartbeat(run_id=live.run_id, message_id=live.message_id, interval=every)
        try:
            await broker.publish(message, subjects.run(live.run_id, "heartbeat"))
        except nats.errors.Error as exc:
            logger.debug("heartbeat of run %s not sent: %s", live.run_id, exc)


def owned(message: HandleMessage, subjects: Subjects, owner: str) -> HandleMessage:
    """``message`` on a run ``owner`` owns: its NATS user may follow no other run.

    A run id the caller chose is replaced unless ``owner`` owns it; the
    events carry the run id used.
    """
    if message.run_id and run_owner(message.run_id) == owner:
        return message
    return msgspec.structs.replace(message, run_id=subjects.owned_run_id(owner))
