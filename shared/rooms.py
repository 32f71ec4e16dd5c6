"""Rooms: each room's messages are handled one at a time, in arrival order, across replicas.

The design, and what it guarantees:

- **Every replica sees every message, in one order.** The runtime subscribes
  to ``<ns>.agent.*.message.handle`` without a queue group, so NATS delivers
  each message to every replica, in the order the server received them
  (with several servers: in each publisher's order). Each replica puts each
  message at the back of its room's FIFO at once (no await in between), so
  every replica holds the room's messages in the same order. Which replica
  runs them does not change that order: no message is passed between
  replicas, and none can overtake another on the way.
- **An owner per busy room.** A replica with messages for a room takes the
  room's lease: a key ``<agent>.<room>`` in the KV bucket
  ``<NS>_ROOM_LEASES``, created only if absent or free (compare-and-set).
  Each replica waits a little before it claims a room, at random and longer
  the more rooms it holds, so that rooms spread over the replicas instead of
  all going to the one that happens to be ahead.
  The owner runs the room's messages one after another, each turn once the
  previous one has ended, and answers their callers. The other replicas keep
  their copies as *shadows*: the lease says which message the owner
  finished last (it writes it with every renewal and when it frees the room),
  and they drop their copies up to it. Only the owner answers (a
  ``reply_at_once`` acknowledgement excepted: every replica sends the same
  one, the caller takes the first). The owner keeps the lease
  ``LINGER_SECONDS`` (1 s) after its FIFO empties, for the conversation's
  next message, then marks it free with the last message it finished.
- **A live turn keeps its room; a dead replica's rooms move in seconds, and
  its messages with them.** The lease expires ``ROOM_LEASE_SECONDS``
  (default 10) after its last write and the owner renews every lease it holds
  every ``min(ttl / 3, 2)`` seconds, so a turn longer than the lease keeps
  its room. A replica holding shadows reads the lease as often; when it was
  not renewed for ``min(ttl, 2 * renew + 1)`` seconds (5 by default) and the
  owner's subject ``<ns>.runtime.<replica>.room`` has had no subscriber for
  ``GONE_AFTER`` (5 s: the process is gone, it is not just reconnecting),
  it takes the room over (compare-and-set on the revision seen, so one
  replica wins) and runs its shadows after the last message the dead owner
  finished: a message that was queued or running there is not lost. Before
  it runs them it asks the old owner whether a turn of the room still runs
  there (a replica cut off from NATS looks gone, or lets its lease expire,
  while its turn goes on), and waits while it does. The
  turn is idempotent per room and message id: a message whose outcome was
  stored is answered from it, one whose plan was recorded continues from it
  without the model.
- **A waiting message's run lives.** Every ``RUN_HEARTBEAT_SECONDS`` the
  owner beats the run of each message waiting in its FIFO (as a running
  turn does), so a follower waits for a message behind a slow room as long
  as its owner is alive, and gives up soon after it dies.
- **Waiting costs no worker.** Only a turn that runs takes one of the
  replica's ``turns_in_parallel`` slots (streamed or not); a room that waits
  holds nothing another room needs.
- **What it does not do.** A replica cut off from NATS for longer than the
  take-over delay, and still cut off when the room is taken, may finish the
  turn it runs while another replica starts the room's next one. A message
  sent while the replica that would own its room was disconnected reaches
  only the others.

Why not a JetStream stream of inbound messages: a stream would not keep the
caller's reply subject, so the request-reply contract (one request, one
answer) could not hold, and a per-room order across consumers would need a
consumer per room. Delivering to every replica gives the server's order to
each of them for one extra delivery per replica, and the shadows give what a
stream would (a crashed owner's messages run elsewhere) without a write per
message.

A lease, rather than a JetStream consumer per room, keeps any replica free to
take any room and needs no rebalancing when replicas come and go.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import nats.errors
import nats.js.errors
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from contracts import HandleMessage, Subjects
from shared.bus import jetstream_replicas

logger = logging.getLogger("elizamesh.rooms")

LEASE_SECONDS = 10.0
"""How long a dead replica keeps its rooms, by default (``ROOM_LEASE_SECONDS``)."""

LINGER_SECONDS = 1.0
"""How long an owner keeps a room whose queue emptied, for the conversation's next message."""

GONE_AFTER = 5.0
"""How long an owner's subject must have no subscriber before its rooms are taken over.

Longer than a replica takes to reconnect and subscribe again after a NATS
restart (a 2 s reconnect wait, on a loaded machine): at 3 s, a fault-suite
run took a room from a replica that was only reconnecting.
"""

RETRY_SECONDS = 0.5
"""How long a room waits before it asks for its lease again after NATS did not answer."""

CLAIM_JITTER = 0.03
"""Up to how many seconds a replica waits, at random, before claiming a free room."""

CLAIM_PAUSE_PER_ROOM = 0.005
"""How many more seconds it waits per room it holds (so rooms spread over replicas)."""

SETTLED_KEPT = 10_000
"""How many (room, message) pairs a replica remembers having run or dropped."""

FREE = "-"
"""The owner written in a lease that its last owner freed."""

BUSY = b"busy"
"""A replica's answer to a probe for a room whose turn runs there now."""


@dataclass
class Arrival:
    """One message waiting for its room.

    ``reply_to``: the NATS inbox of the caller waiting for the outcome ("" when
    nobody waits: the run subjects carry it). ``done``: an in-process caller's
    future instead (only this replica has it: it is never a shadow).
    ``context``: the ``contextvars`` (trace) of its arrival, which its turn
    runs in.
    """

    agent_id: str
    request: HandleMessage
    reply_to: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    correlation_id: str = ""
    done: asyncio.Future[object] | None = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)

    @property
    def room(self) -> str:
        """The lease key of its room: ``<agent>.<room>``."""
        return f"{self.agent_id}.{self.request.room_id}"


_AGREED = uuid.UUID("5b0e7c2a-8f3d-4f43-9a53-6a1f0c2d9e71")


def agreed_id(*parts: str | bytes) -> str:
    """A UUID every replica derives alike from ``parts`` (UUID 5 over a hash of them).

    Every replica decodes every message: an id one of them would draw at
    random (a message or run id the caller left out) must be the same on all.
    """
    digest = hashlib.blake2b(digest_size=32)
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return str(uuid.uuid5(_AGREED, digest.hexdigest()))


class Lease(NamedTuple):
    """What a lease says.

    ``owner`` (``FREE`` once freed), when it was ``written`` (Unix seconds;
    None where it did not say), and ``last_done``, the last message the owner
    finished.
    """

    owner: str
    written: float | None
    last_done: str | None


def _seconds(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _lease_of(value: bytes | None) -> Lease:
    """Read ``<owner> <written> [<last message id>]`` (ids hold no spaces; more words ignored)."""
    words = (value or b"").decode(errors="replace").split(" ", 3)
    owner, written, last_done = [*words, "", ""][:3]
    return Lease(owner, _seconds(written), last_done or None)


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
    confirmed_at: float = 0.0
    """When the lease was last written or read as this replica's (monotonic seconds)."""
    shadowing: bool = False
    """Another replica holds the lease: the queue is copies of what it runs."""
    last_done: str | None = None
    """The id of the last message this replica finished in the room."""
    task: asyncio.Task[None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a message joins the queue (wakes an owner lingering on the room)."""
    gone: tuple[str, int | None, float] | None = None
    """(owner, lease revision, since when, monotonic): the owner had no subscriber."""
    owner_seen: str | None = None
    """The other replica this one last saw owning the room (while shadowing it)."""
    running: bool = False
    """A turn of the room runs here now."""


class RoomScheduler:
    """The rooms of one runtime replica: FIFOs, leases, shadows and the turn bound."""

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
        self._settled: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._subscription: Subscription | None = None

    def submit(self, arrival: Arrival) -> None:
        """Queue ``arrival`` behind its room's earlier messages (synchronous: keeps the order)."""
        if self._opened is None:
            self._opened = asyncio.create_task(self._open())
        room = self._rooms.get(arrival.room)
        if room is None:
            room = self._rooms[arrival.room] = _Room(arrival.room)
        elif self.still_waiting is not None and not room.shadowing:
            # Behind a turn here, maybe for long: its caller hears now that it lives.
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
        """Declare the lease bucket and answer liveness probes (also done on the first message).

        Raises:
            nats.errors.Error: NATS or JetStream did not answer.
        """
        if self._opened is None:
            self._opened = asyncio.create_task(self._open())
        await asyncio.shield(self._opened)

    async def _open(self) -> None:
        self.kv = await ensure_lease_bucket(self.broker, self.subjects, self.lease_seconds)
        connection = self.broker.config.connection_state.connection
        # Its subscriber is how the others tell a live owner from a dead one.
        self._subscription = await connection.subscribe(
            self.subjects.room_probe(self.replica_id), cb=self._answer_probe
        )
        self._heartbeat = asyncio.create_task(self._renew_forever())
        if self.still_waiting is not None:
            self._waiting_news = asyncio.create_task(self._tell_waiting_forever())

    async def close(self) -> None:
        """Stop answering probes, finish every queued turn, then free the leases."""
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
        for room in self._rooms.values():
            if room.shadowing:  # the owner runs them; nobody here will
                room.queue.clear()
        while tasks := [r.task for r in self._rooms.values() if r.task is not None]:
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in (self._heartbeat, self._waiting_news):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def waiting(self) -> int:
        """How many messages wait here for their turn (shadows and running turns not counted)."""
        return len(self.queued())

    def queued(self) -> list[Arrival]:
        """The messages waiting here for their turn, each room's in its order (no shadows)."""
        return [a for room in self._rooms.values() if not room.shadowing for a in room.queue]

    def held(self) -> list[str]:
        """The rooms (``<agent>.<room>``) whose lease this replica holds now."""
        return [r.key for r in self._rooms.values() if r.revision is not None]

    async def _drain(self, room: _Room) -> None:
        try:
            while True:
                while room.queue:
                    if room.revision is not None and not await self._still_ours(room):
                        continue
                    if room.revision is None and not await self._take(room):
                        continue
                    if not room.queue:  # all done by the last owner
                        break
                    arrival = room.queue.popleft()
                    async with self.slots:
                        room.running = True
                        try:
                            # Each turn runs in its own arrival's context (its trace).
                            await asyncio.create_task(self.serve(arrival), context=arrival.context)
                        finally:
                            room.running = False
                    room.last_done = arrival.request.message_id
                    self._settle(room.key, arrival.request.message_id)
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

    async def _still_ours(self, room: _Room) -> bool:
        """Before a turn: make sure a lease whose renewals failed for a while is still held.

        After a NATS outage the renewals may have failed long enough for the
        lease to expire and another replica to take the room; a turn started
        on the strength of the old revision would run beside the new owner's.
        A lease renewed on time is not read again (the common case costs nothing).
        """
        if time.monotonic() - room.confirmed_at <= 2 * self.renew_every:
            return True
        assert self.kv is not None  # noqa: S101 - held, so opened
        try:
            entry = await self.kv.get(room.key)
        except nats.js.errors.KeyNotFoundError:
            room.revision = None  # expired: take it again, as anyone may
            return False
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(RETRY_SECONDS)  # unsure: run nothing yet
            return False
        if entry.revision == room.revision and _lease_of(entry.value).owner == self.replica_id:
            room.confirmed_at = time.monotonic()
            return True
        logger.warning("room %s: lease lost while NATS was away", room.key)
        room.revision = None
        return False

    async def _linger(self, room: _Room) -> bool:
        """Keep an emptied room's lease ``LINGER_SECONDS`` longer; True if a message came.

        A room whose owner lets go the moment its queue is empty changes hands
        in the middle of a conversation, for a lease write each time.
        """
        room.arrived.clear()
        if room.queue:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(room.arrived.wait(), LINGER_SECONDS)
        return bool(room.queue)

    async def _take(self, room: _Room) -> bool:  # noqa: PLR0911 - one exit per way it ends
        """Take the room's lease, or keep the queue as shadows of its owner's. True once held.

        False: ask again (the queue may have been emptied of what the owner finished).
        """
        await self.open()
        kv = self.kv
        assert kv is not None  # noqa: S101 - open() set it
        if not room.shadowing:  # a shadowing room knows the lease exists: it reads it
            await asyncio.sleep(self._modesty())
            if (claimed := await self._claim(room)) is not None:
                return claimed
        try:
            entry = await kv.get(room.key)
        except nats.js.errors.KeyNotFoundError:  # expired, or freed and purged: claim it
            return bool(await self._claim(room))
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(RETRY_SECONDS)
            return False
        lease = _lease_of(entry.value)
        if lease.owner == self.replica_id:  # ours still (a renewal that failed in a NATS outage)
            room.revision, room.shadowing = entry.revision, False
            room.confirmed_at = time.monotonic()
            return True
        self._drop_done(room, lease)
        # Whoever holds the lease next writes what was finished last: not an older id of ours.
        room.last_done = lease.last_done or room.last_done
        if lease.owner == FREE:  # its last owner finished what it had, and left
            if not room.queue:  # it ran all we had: taking it would only churn the lease
                return False
            taken = await self._update(room, entry.revision)
            room.owner_seen = None if taken else room.owner_seen
            return taken
        room.shadowing, room.owner_seen = True, lease.owner
        if not room.queue:
            return False
        if await self._owner_is_gone(room, lease, entry.revision):
            logger.warning("room %s: taken over from replica %s (gone)", room.key, lease.owner)
            if not await self._update(room, entry.revision):
                return False
            await self._until_idle(room)
            return True
        await self._wait_for_owner(room)
        return False

    async def _claim(self, room: _Room) -> bool | None:
        """Create the room's lease: True once held, None if it exists, False if NATS failed."""
        assert self.kv is not None  # noqa: S101 - _take opened it
        try:
            room.revision = await self.kv.create(room.key, self._lease_value(room))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            logger.warning("room %s: no lease (%s); retrying", room.key, exc)
            await asyncio.sleep(RETRY_SECONDS)
            return False
        room.confirmed_at = time.monotonic()
        if room.owner_seen is not None:
            logger.warning("room %s: the lease of %s expired", room.key, room.owner_seen)
        # Its last owner may be cut off from NATS, still running a turn.
        await self._until_idle(room)
        return True

    def _modesty(self) -> float:
        """Seconds to wait before claiming a room: more the more rooms this replica holds.

        Every replica sees the message, and the first to claim the room runs
        it; without a pause, the replica that happens to be ahead would take
        every room. A random part breaks ties, a part per held room (5 ms,
        at most 0.1 s) leaves new rooms to the less busy replicas.
        """
        held = len(self.held())
        return random.uniform(0, CLAIM_JITTER) + min(held * CLAIM_PAUSE_PER_ROOM, 0.1)  # noqa: S311 - not secret

    async def _until_idle(self, room: _Room) -> None:
        """Wait until the replica that owned the room before runs no turn of it.

        A room taken from an owner that looked gone (its lease expired or
        silent, nobody on its subject) may still have a turn running there,
        when that replica was only cut off from NATS: its shadows must not
        run beside it (the same message would ask the model twice). It
        answers its probe with ``busy`` while a turn of the room runs.
        """
        room.shadowing = False
        owner, room.owner_seen = room.owner_seen, None
        if owner is None:
            return
        while await self._probe(owner, room.key) == "busy":
            logger.warning("room %s: its last owner %s still runs a turn; waiting", room.key, owner)
            await asyncio.sleep(RETRY_SECONDS)

    def _drop_done(self, room: _Room, lease: Lease) -> None:
        """Drop the copies up to the last message the owner finished (the queue's order is its).

        A message this replica already ran or dropped in the room is not a
        copy: it was sent again (its caller re-sends it), and whoever runs the
        room next answers it from its stored outcome.
        """
        if lease.last_done is None:
            return
        ids = [
            a.request.message_id
            if a.done is None and (room.key, a.request.message_id) not in self._settled
            else None
            for a in room.queue
        ]
        if lease.last_done not in ids:
            return
        kept: list[Arrival] = []
        # Decided once, from ``ids``: a message sent twice while queued is two
        # copies, and dropping the first must not make the second look settled.
        for copy_id in ids[: ids.index(lease.last_done) + 1]:
            arrival = room.queue.popleft()
            if copy_id is None:
                kept.append(arrival)  # not a copy of the owner's: it keeps its place
            else:
                self._settle(room.key, copy_id)
        room.queue.extendleft(reversed(kept))

    def _settle(self, key: str, message_id: str) -> None:
        """Remember that this replica ran or dropped ``message_id`` in the room ``key``."""
        self._settled[(key, message_id)] = None
        if len(self._settled) > SETTLED_KEPT:
            self._settled.popitem(last=False)

    async def _wait_for_owner(self, room: _Room) -> None:
        """Wait a renewal's time (the owner writes what it finished); less once it looks gone.

        New messages do not wake the wait: the owner has them too.
        """
        await asyncio.sleep(RETRY_SECONDS if room.gone is not None else self.renew_every)

    async def _update(self, room: _Room, revision: int | None) -> bool:
        """Take a lease that is free or whose owner is gone, if still at ``revision``."""
        assert self.kv is not None  # noqa: S101 - _take opened it
        try:
            room.revision = await self.kv.update(room.key, self._lease_value(room), last=revision)
            room.confirmed_at = time.monotonic()
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # renewed, freed or taken meanwhile: ask again
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(RETRY_SECONDS)
            return False
        room.gone, room.shadowing = None, False
        return True

    async def _owner_is_gone(self, room: _Room, lease: Lease, revision: int | None) -> bool:
        """Say whether the room's owner is gone, not just reconnecting.

        Gone: its lease was not renewed for ``silent_after`` seconds, and its
        subject has had no subscriber, for the same lease revision, for
        ``GONE_AFTER`` seconds as seen from here (a replica reconnecting
        after a NATS restart subscribes again within its reconnect wait).
        The probes start once the owner missed a renewal, so both clocks run
        together: a killed owner's rooms move about ``GONE_AFTER`` after that.
        """
        silent = time.time() - lease.written if lease.written is not None else 0.0
        if silent <= self.renew_every + 1 or await self._probe(lease.owner, room.key) != "gone":
            room.gone = None
            return False
        now = time.monotonic()
        if room.gone is None or room.gone[:2] != (lease.owner, revision):
            room.gone = (lease.owner, revision, now)
        return silent > self.silent_after and now - room.gone[2] >= GONE_AFTER

    async def _probe(self, owner: str, key: str) -> Literal["idle", "gone", "busy"]:
        """Ask ``owner`` whether it runs a turn of the room ``key``: ``gone`` when nobody answers.

        ``busy`` too when it does not answer in time (alive but slow, or away).
        """
        connection = self.broker.config.connection_state.connection
        try:
            answer = await connection.request(
                self.subjects.room_probe(owner), key.encode(), timeout=2
            )
        except nats.errors.NoRespondersError:
            return "gone"
        except (nats.errors.Error, TimeoutError):
            return "busy"
        return "busy" if answer.data == BUSY else "idle"

    async def _answer_probe(self, msg: Msg) -> None:
        """Answer ``busy`` when a turn of the room named in the body runs here, else empty."""
        room = self._rooms.get(msg.data.decode(errors="replace"))
        if msg.reply:
            with contextlib.suppress(nats.errors.Error):
                await msg.respond(BUSY if room is not None and room.running else b"")

    def _lease_value(self, room: _Room, owner: str | None = None) -> bytes:
        """What a lease holds: its owner, when it was written and the last message finished."""
        value = f"{owner or self.replica_id} {time.time():.3f}"
        if room.last_done:
            value = f"{value} {room.last_done}"
        return value.encode()

    async def _release(self, room: _Room) -> None:
        """Mark the lease free, with the last message finished here, for whoever comes next."""
        revision, room.revision = room.revision, None
        if revision is None or self.kv is None:
            return
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # it expires anyway
            await self.kv.update(room.key, self._lease_value(room, FREE), last=revision)

    async def _tell_waiting_forever(self) -> None:
        """Tell ``still_waiting`` of the queued messages, so their callers hear they live.

        A message behind a slow room can wait longer than its follower's
        patience; the hosting code beats its run's heartbeat meanwhile.
        """
        assert self.still_waiting is not None  # noqa: S101 - only started with one
        while True:
            await asyncio.sleep(self.waiting_every)
            if waiting := self.queued():
                await self.still_waiting(waiting)

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            # Side by side: after a NATS outage each may wait for its timeout.
            await asyncio.gather(*(self._renew(r) for r in list(self._rooms.values())))

    async def _renew(self, room: _Room) -> None:
        revision = room.revision
        if revision is None or self.kv is None:
            return
        # The room may be released or taken anew while the update is under
        # way: only the revision it was renewed from is replaced.
        try:
            renewed = await self.kv.update(room.key, self._lease_value(room), last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            if room.revision == revision:
                logger.warning("room %s: lease lost (it expired)", room.key)
                room.revision = None
        except (nats.errors.Error, TimeoutError) as exc:
            logger.warning("room %s: lease not renewed (%s); retrying", room.key, exc)
        else:
            if room.revision == revision:
                room.revision, room.confirmed_at = renewed, time.monotonic()
