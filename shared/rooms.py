"""Rooms: each room's messages are handled one at a time, in arrival order, across replicas.

The design, and what it guarantees:

- **An owner per busy room.** A replica that has messages for a room takes
  the room's lease: a key ``<agent>.<room>`` in the KV bucket
  ``<NS>_ROOM_LEASES`` holding the replica's id, created only if absent. While
  it holds the lease, the room's messages wait in a FIFO inside that replica
  and run one after another, each turn once the previous one has ended.
- **Arrival order.** The runtime's subscription hands messages over one at a
  time in the order NATS delivered them, and each goes to the back of its
  room's FIFO at once (no await in between), so a replica keeps the order it
  received. A replica that receives a message for a room another replica owns
  hands it to the owner (``<ns>.runtime.<replica>.room``, acknowledged), which
  queues it behind the room's earlier messages; so the room's messages run in
  the order the replicas received them, give or take that one hop (~1 ms):
  two messages of one room sent less than a hop apart to two replicas may
  swap. Nobody polls a live room: a busy room costs its waiting messages no
  NATS traffic. The owner keeps the lease ``LINGER_SECONDS`` (1 s) after its
  FIFO empties, so that a conversation's next message finds the same owner
  instead of a room changing hands between two messages (where one handed to
  the old owner could run after a later one), then frees it.
- **A live turn keeps its room; a dead replica frees it in seconds.** The
  lease expires ``ROOM_LEASE_SECONDS`` (default 10) after its last write and
  the owner renews every lease it holds every ``min(ttl / 3, 2)`` seconds, so
  a turn longer than the lease keeps its room, and a killed replica's rooms
  are free again at most ``ROOM_LEASE_SECONDS`` later. Sooner, in fact: a
  lease holds its owner's id and when it was written; a replica whose
  hand-overs find no subscriber on the owner's subject for ``GONE_AFTER``
  (5 s: its process is gone, it is not just reconnecting) and whose lease
  was not renewed for ``min(ttl, 2 * renew + 1)`` seconds (5 with the
  default) takes the room over (compare-and-set on the revision seen, so
  one replica wins). Until then, the messages other replicas
  received for such a room wait where they arrived (re-asking every half
  second); their order among themselves is not kept.
- **A waiting message's run lives.** Every ``RUN_HEARTBEAT_SECONDS`` the
  replica where a message waits beats its run's heartbeat (as a running turn
  does), so a follower waits for a message behind a slow room as long as it
  is queued somewhere alive, and gives up soon after that replica dies.
- **Waiting costs no worker.** Only a turn that runs takes one of the
  replica's ``turns_in_parallel`` slots (streamed or not); a room that waits
  holds nothing another room needs.
- **What it does not do.** A message that was queued or running in a replica
  that dies is not redelivered by the server: its caller gets no reply and
  re-sends it with the same message id (the turn is idempotent per room and
  message id, so a message whose outcome was stored is answered from it;
  one whose plan was recorded continues from it without the model). A
  replica cut off from NATS for longer than the take-over delay may finish
  the turn it runs while another replica starts the room's next one.

Why inbound messages are not a JetStream stream: the caller already holds
what a stream would keep (the message, and its id as the idempotency key)
and re-sends it on a timeout, which the contract asks of every caller;
the turn's recorded plan and stored outcome make that re-send cost no second
model call and no second reply. A stream would add a write to every message
and an acknowledgement protocol across replicas for the one case a re-send
already covers (the fault suite measures it: ``tests/faults``).

A lease, rather than a JetStream consumer per room, keeps any replica free to
take any room and needs no rebalancing when replicas come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import msgspec
import nats.errors
import nats.js.errors
from faststream.nats import NatsBroker
from msgspec import Meta
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from contracts import HandleMessage, Subjects
from contracts.message import Id
from shared.bus import bounded, error_headers, jetstream_replicas
from shared.errors import BadRequest

logger = logging.getLogger("elizamesh.rooms")

LEASE_SECONDS = 10.0
"""How long a dead replica keeps its rooms, by default (``ROOM_LEASE_SECONDS``)."""

MAX_HOPS = 3
"""How often a message may be handed from replica to replica before it waits where it is."""

LINGER_SECONDS = 1.0
"""How long an owner keeps a room whose queue emptied, for the conversation's next message."""

GONE_AFTER = 5.0
"""How long an owner's subject must have no subscriber before its rooms are taken over.

Longer than a replica takes to reconnect and subscribe again after a NATS
restart (a 2 s reconnect wait, on a loaded machine): at 3 s, a fault-suite
run took a room from a replica that was only reconnecting.
"""

RETRY_SECONDS = 0.5
"""How often a message for a room whose owner does not answer asks again."""


@dataclass
class Arrival:
    """One message waiting for its room.

    ``reply_to``: the NATS inbox of the caller waiting for the outcome ("" when
    nobody waits: the run subjects carry it). ``done``: an in-process caller's
    future instead. ``context``: the ``contextvars`` (trace) of its arrival,
    which its turn runs in.
    """

    agent_id: str
    request: HandleMessage
    reply_to: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    correlation_id: str = ""
    hops: int = 0
    done: asyncio.Future[object] | None = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    @property
    def room(self) -> str:
        """The lease key of its room: ``<agent>.<room>``."""
        return f"{self.agent_id}.{self.request.room_id}"


class Handover(msgspec.Struct, kw_only=True, frozen=True):
    """A message passed to the replica that owns its room (runtime to runtime, not public).

    Answered with an empty body once queued, or an ``Error`` (``bad_request``)
    when it cannot be read.
    """

    agent_id: Id
    request: HandleMessage
    reply_to: Annotated[str, Meta(max_length=1024)] = ""
    correlation_id: Annotated[str, Meta(max_length=256)] = ""
    hops: Annotated[int, Meta(ge=0, le=MAX_HOPS)] = 0


_HANDOVER = msgspec.json.Decoder(Handover)


def _lease_of(value: bytes | None) -> tuple[str, float | None]:
    """The owner of a lease and when it last wrote it (Unix seconds; None if it did not say)."""
    owner, _, written = (value or b"").decode(errors="replace").partition(" ")
    try:
        return owner, float(written)
    except ValueError:
        return owner, None


async def ensure_lease_bucket(broker: NatsBroker, subjects: Subjects, ttl: float) -> KeyValue:
    """Return the room-lease bucket, created with ``ttl`` seconds or brought to it.

    The one declaration of the bucket. One that exists with another TTL (the
    setting changed, or another replica says otherwise) is updated in place,
    never refused: the last replica to start sets the TTL.

    Raises:
        nats.errors.Error: JetStream did not answer.
    """
    js = broker.config.connection_state.stream
    bucket = f"{subjects.namespace.upper()}_ROOM_LEASES"
    try:
        info = await js.stream_info(f"KV_{bucket}")
    except nats.js.errors.NotFoundError:
        config = KeyValueConfig(
            bucket=bucket, ttl=ttl, replicas=jetstream_replicas(), storage=StorageType.FILE
        )
        with contextlib.suppress(nats.js.errors.BadRequestError):  # another replica won the race
            created: KeyValue = await js.create_key_value(config)
            return created
        info = await js.stream_info(f"KV_{bucket}")
    if info.config.max_age != ttl:
        try:
            window = min(info.config.duplicate_window or ttl, ttl)  # may not exceed max_age
            await js.update_stream(info.config.evolve(max_age=ttl, duplicate_window=window))
            logger.info("room leases now expire after %gs (were %ss)", ttl, info.config.max_age)
        except nats.js.errors.Error as exc:  # keep serving on the bucket as it is
            logger.warning("could not set the room lease TTL to %gs: %s", ttl, exc)
    existing: KeyValue = await js.key_value(bucket)
    return existing


Serve = Callable[[Arrival], Coroutine[object, object, None]]
"""Runs one message's turn and answers its caller; never raises."""

Arrived = Callable[[Arrival], None]
"""Told of each message as it joins its room's queue, before its turn (synchronous)."""

StillWaiting = Callable[[Sequence[Arrival]], Coroutine[object, object, None]]
"""Told, every ``waiting_every`` seconds, of the messages still queued here (never raises)."""


@dataclass
class _Room:
    key: str
    queue: deque[Arrival] = field(default_factory=deque)
    revision: int | None = None
    """The lease's revision while this replica holds it."""
    task: asyncio.Task[None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a message joins the queue (wakes an owner lingering on the room)."""
    gone: tuple[str, int | None, float] | None = None
    """(owner, lease revision, since when, monotonic): the owner had no subscriber."""


class RoomScheduler:
    """The rooms of one runtime replica: FIFOs, leases, hand-over and the turn bound."""

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        serve: Serve,
        *,
        lease_seconds: float = LEASE_SECONDS,
        turns_in_parallel: int = 16,
        arrived: Arrived | None = None,
        still_waiting: StillWaiting | None = None,
        waiting_every: float = 2.0,
    ) -> None:
        self.broker = broker
        self.subjects = subjects
        self.serve = serve
        self.arrived = arrived
        self.still_waiting = still_waiting
        self.waiting_every = waiting_every
        self.lease_seconds = lease_seconds
        self.renew_every = min(lease_seconds / 3, 2.0)
        self.silent_after = min(lease_seconds, 2 * self.renew_every + 1)
        """A lease not renewed for this long, whose owner has no subscription, is taken over."""
        self.replica_id = uuid.uuid4().hex
        self.slots = asyncio.Semaphore(turns_in_parallel)
        self.kv: KeyValue | None = None
        self._rooms: dict[str, _Room] = {}
        self._opened: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._waiting_news: asyncio.Task[None] | None = None
        self._telling: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None

    def submit(self, arrival: Arrival) -> None:
        """Queue ``arrival`` behind its room's earlier messages (synchronous: keeps the order)."""
        if self._opened is None:
            self._opened = asyncio.create_task(self._open())
        room = self._rooms.get(arrival.room)
        if room is None:
            room = self._rooms[arrival.room] = _Room(arrival.room)
        elif self.still_waiting is not None:  # behind a turn, maybe long: its caller hears now
            told = asyncio.create_task(self.still_waiting([arrival]))
            self._telling.add(told)
            told.add_done_callback(self._telling.discard)
        room.queue.append(arrival)
        room.arrived.set()
        if self.arrived is not None:
            self.arrived(arrival)
        if room.task is None:
            room.task = asyncio.create_task(self._drain(room))

    async def open(self) -> None:
        """Declare the lease bucket and take hand-overs (also done on the first message).

        Raises:
            nats.errors.Error: NATS or JetStream did not answer.
        """
        if self._opened is None:
            self._opened = asyncio.create_task(self._open())
        await asyncio.shield(self._opened)

    async def _open(self) -> None:
        self.kv = await ensure_lease_bucket(self.broker, self.subjects, self.lease_seconds)
        connection = self.broker.config.connection_state.connection
        self._subscription = await connection.subscribe(
            self.subjects.room_handover(self.replica_id), cb=self._take_handover
        )
        self._heartbeat = asyncio.create_task(self._renew_forever())
        if self.still_waiting is not None:
            self._waiting_news = asyncio.create_task(self._tell_waiting_forever())

    async def close(self) -> None:
        """Stop taking hand-overs, finish every queued turn, then free the leases."""
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
        while tasks := [r.task for r in self._rooms.values() if r.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in (self._heartbeat, self._waiting_news):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def waiting(self) -> int:
        """How many messages wait here for their turn (the turns running not counted)."""
        return sum(len(r.queue) for r in self._rooms.values())

    def queued(self) -> list[Arrival]:
        """The messages waiting here for their turn, each room's in its order."""
        return [arrival for room in self._rooms.values() for arrival in room.queue]

    def held(self) -> list[str]:
        """The rooms (``<agent>.<room>``) whose lease this replica holds now."""
        return [r.key for r in self._rooms.values() if r.revision is not None]

    async def _drain(self, room: _Room) -> None:
        try:
            while True:
                while room.queue:
                    if room.revision is None and not await self._take(room):
                        continue
                    arrival = room.queue.popleft()
                    async with self.slots:
                        # Each turn runs in its own arrival's context (its trace).
                        await asyncio.create_task(self.serve(arrival), context=arrival.context)
                if room.revision is not None and await self._linger(room):
                    continue
                await self._release(room)
                if not room.queue:  # no await since the check: nothing can slip in between
                    del self._rooms[room.key]
                    return
        except Exception:
            logger.exception("room %s: its queue broke off", room.key)
            self._rooms.pop(room.key, None)
            raise

    async def _linger(self, room: _Room) -> bool:
        """Keep an emptied room's lease ``LINGER_SECONDS`` longer; True if a message came.

        A room whose owner lets go the moment its queue is empty changes hands
        in the middle of a conversation: a message handed over to the old owner
        while another replica takes the room with the next one would run second.
        """
        room.arrived.clear()
        if room.queue:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(room.arrived.wait(), LINGER_SECONDS)
        return bool(room.queue)

    async def _take(self, room: _Room) -> bool:  # noqa: PLR0911 - one exit per way it ends
        """Take the room's lease; else hand its queue to the owner or wait. True once held."""
        await self.open()
        kv = self.kv
        assert kv is not None  # noqa: S101 - open() set it
        try:
            room.revision = await kv.create(room.key, self._lease_value())
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        except (nats.errors.Error, TimeoutError) as exc:
            logger.warning("room %s: no lease (%s); retrying", room.key, exc)
            await asyncio.sleep(RETRY_SECONDS)
            return False
        else:
            return True
        try:
            entry = await kv.get(room.key)
        except nats.js.errors.KeyNotFoundError:
            return False  # freed meanwhile: take it on the next try
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(RETRY_SECONDS)
            return False
        owner, renewed = _lease_of(entry.value)
        if owner == self.replica_id:  # ours still (a renewal that failed in a NATS outage)
            room.revision = entry.revision
            return True
        # An in-process caller (``done``) waits here: the owner could not answer it.
        while room.queue and room.queue[0].hops < MAX_HOPS and room.queue[0].done is None:
            handed = await self._hand_over(owner, room.queue[0])
            if handed == "queued":
                room.queue.popleft()
                continue
            if handed == "gone" and self._owner_is_gone(room, owner, entry.revision, renewed):
                return await self._take_over(room, owner, entry.revision)
            await asyncio.sleep(RETRY_SECONDS)  # the owner is away: its lease expires
            return False
        if room.queue:
            await asyncio.sleep(RETRY_SECONDS)
        return False

    def _owner_is_gone(
        self, room: _Room, owner: str, revision: int | None, renewed: float | None
    ) -> bool:
        """Say whether the room's owner is gone, not just reconnecting.

        Gone: its lease was not renewed for ``silent_after`` seconds, and its
        hand-over subject has had no subscriber, for the same lease revision,
        for ``GONE_AFTER`` seconds as seen from here (a replica reconnecting
        after a NATS restart subscribes again within its reconnect wait).
        """
        now = time.monotonic()
        if room.gone is None or room.gone[:2] != (owner, revision):
            room.gone = (owner, revision, now)
        silent = time.time() - renewed if renewed is not None else 0.0
        return silent > self.silent_after and now - room.gone[2] >= GONE_AFTER

    async def _take_over(self, room: _Room, owner: str, revision: int | None) -> bool:
        """Take the lease of an owner that is gone, unless someone renewed or took it meanwhile."""
        assert self.kv is not None  # noqa: S101 - _take opened it
        try:
            room.revision = await self.kv.update(room.key, self._lease_value(), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # renewed or taken meanwhile: ask again
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(RETRY_SECONDS)
            return False
        room.gone = None
        logger.warning("room %s: taken over from replica %s (gone)", room.key, owner)
        return True

    def _lease_value(self) -> bytes:
        """What a lease holds: this replica's id and when it was written (Unix seconds)."""
        return f"{self.replica_id} {time.time():.3f}".encode()

    async def _hand_over(self, owner: str, arrival: Arrival) -> Literal["queued", "gone", "busy"]:
        """Pass ``arrival`` to ``owner``: ``gone`` when nobody serves its subject any more."""
        connection = self.broker.config.connection_state.connection
        handover = Handover(
            agent_id=arrival.agent_id,
            request=arrival.request,
            reply_to=arrival.reply_to,
            correlation_id=arrival.correlation_id,
            hops=arrival.hops + 1,
        )
        try:
            await connection.request(
                self.subjects.room_handover(owner),
                msgspec.json.encode(handover),
                timeout=5,
                headers=arrival.headers or None,
            )
        except nats.errors.NoRespondersError:
            return "gone"
        except (nats.errors.TimeoutError, TimeoutError):
            return "busy"
        return "queued"

    async def _take_handover(self, msg: Msg) -> None:
        try:
            handover = _HANDOVER.decode(msg.data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            logger.warning("an unreadable hand-over on %s was dropped", msg.subject)
            error = bounded(BadRequest(f"unreadable hand-over: {exc}").to_error())
            if msg.reply:
                connection = self.broker.config.connection_state.connection
                with contextlib.suppress(nats.errors.Error):
                    await connection.publish(
                        msg.reply, msgspec.json.encode(error), headers=error_headers(error)
                    )
            return
        self.submit(
            Arrival(
                agent_id=handover.agent_id,
                request=handover.request,
                reply_to=handover.reply_to,
                headers=dict(msg.headers or {}),
                correlation_id=handover.correlation_id,
                hops=handover.hops,
            )
        )
        await msg.respond(b"")

    async def _release(self, room: _Room) -> None:
        revision, room.revision = room.revision, None
        if revision is None or self.kv is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # it expires anyway
            await self.kv.delete(room.key, last=revision)

    async def _tell_waiting_forever(self) -> None:
        """Tell ``still_waiting`` of the queued messages, so their callers hear they live.

        A message behind a slow room can wait longer than its follower's
        patience; the hosting code beats its run's heartbeat meanwhile. A
        message handed over leaves this queue, and its new owner tells of it.
        """
        assert self.still_waiting is not None  # noqa: S101 - only started with one
        while True:
            await asyncio.sleep(self.waiting_every)
            if waiting := self.queued():
                await self.still_waiting(waiting)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            for room in list(self._rooms.values()):
                revision = room.revision
                if revision is None or self.kv is None:
                    continue
                # The room may be released or taken anew while the update is
                # under way: only the revision it was renewed from is replaced.
                try:
                    renewed = await self.kv.update(room.key, self._lease_value(), last=revision)
                except nats.js.errors.KeyWrongLastSequenceError:
                    if room.revision == revision:
                        logger.warning("room %s: lease lost (it expired)", room.key)
                        room.revision = None
                except (nats.errors.Error, TimeoutError) as exc:
                    logger.warning("room %s: lease not renewed (%s); retrying", room.key, exc)
                else:
                    if room.revision == revision:
                        room.revision = renewed
