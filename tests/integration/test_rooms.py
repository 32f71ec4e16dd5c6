"""Rooms across runtime replicas, on a real nats-server: order, leases, shadows, limits.

Two replicas (each an ``AgentHost`` on its own connection; each gets every
message) share one memory service. The model takes a while, so messages of one room
wait for each other; the tests check what ``shared.rooms`` promises.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from faststream.nats import NatsBroker

from contracts import Content, Error, HandleMessage, HandleMessageResult, Subjects
from services.memory.main import create_broker_for as memory_broker
from services.runtime.main import attach
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin
from shared.bus import create_broker, request, start_serving, subscriptions_registered
from shared.config import Settings
from shared.hosting import AgentHost, HostedAgents
from shared.rooms import LINGER_SECONDS, Arrival, ensure_lease_bucket
from shared.storage.sql import SqlAdapter
from tests.scripted import plan

AGENT = "eliza-rooms"


@dataclass
class SlowModel:
    """A planner that takes ``delay`` seconds and records how many calls overlap, per room."""

    delay: float = 0.2
    running: dict[str, int] = field(default_factory=dict)
    most: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    gate: asyncio.Event | None = None
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def plugin(self) -> Plugin:
        async def answer(runtime: AgentRuntime, params: dict[str, Any]) -> str:
            del runtime
            room = ([*re.findall(r"room:([\w-]+)", str(params.get("prompt"))), "?"])[0]
            self.calls += 1
            self.called.set()
            self.running[room] = self.running.get(room, 0) + 1
            self.most[room] = max(self.most.get(room, 0), self.running[room])
            try:
                if self.gate is not None:
                    await self.gate.wait()
                await asyncio.sleep(self.delay)
            finally:
                self.running[room] -= 1
            return plan("noted")

        return Plugin(
            name="slow", models={ModelType.TEXT_LARGE: answer, ModelType.TEXT_SMALL: answer}
        )


@dataclass
class Replicas:
    subjects: Subjects
    caller: NatsBroker
    hosts: list[AgentHost]
    brokers: list[NatsBroker]
    model: SlowModel

    async def send(self, text: str, room: str, *, timeout: float = 30) -> HandleMessageResult:
        message = HandleMessage(
            entity_id=f"user-{room}", room_id=room, content=Content(text=f"{text} room:{room}")
        )
        return await request(
            self.caller,
            self.subjects.message_handle(AGENT),
            message,
            HandleMessageResult,
            timeout=timeout,
        )

    async def send_eight(self, room: str, *, apart: float) -> list[int]:
        """Send 8 messages to ``room``, ``apart`` seconds apart, all in flight together.

        Returns their numbers in the order they were answered (each completed).
        """
        done: list[int] = []

        async def send(i: int) -> None:
            result = await self.send(f"message number {i}", room)
            assert result.status == "completed", result.error
            done.append(i)

        sends = []
        for i in range(8):
            sends.append(asyncio.create_task(send(i)))
            await asyncio.sleep(apart)
        await asyncio.gather(*sends)
        return done


async def _replica(
    nats_url: str,
    subjects: Subjects,
    model: SlowModel,
    *,
    lease: float,
    turns: int,
    settings: dict[str, str] | None = None,
) -> tuple[NatsBroker, AgentHost]:
    broker = create_broker(nats_url, name="runtime-under-test")
    await broker.start()
    host = AgentHost(
        broker,
        subjects,
        HostedAgents(plugins=()),
        lease_seconds=lease,
        turns_in_parallel=turns,
    )
    await host.open()
    await host.add(
        Character(name="Eliza", id=AGENT, bio=["A helpful agent."]),
        [model.plugin()],
        {"TASK_TICK_SECONDS": "3600", **(settings or {})},
    )
    await host.rooms.open()
    for subscriber in attach(broker, subjects, host).values():
        await subscriber.start()
    await subscriptions_registered(broker.config.connection_state.connection)
    return broker, host


@pytest.fixture
async def replicas(
    nats_url: str, subjects: Subjects, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    options: dict[str, Any] = getattr(request, "param", {})
    database_url = f"sqlite:///{tmp_path / 'memory.db'}"
    storage = SqlAdapter.from_url(database_url, "elizamesh-memory")
    await storage.init()
    settings = Settings(nats_url=nats_url, eliza_ns=subjects.namespace, database_url=database_url)
    memory = memory_broker(settings, storage)
    caller = create_broker(nats_url, name="caller")
    model = SlowModel(delay=options.get("delay", 0.2))
    brokers: list[NatsBroker] = []
    hosts: list[AgentHost] = []
    try:
        async with memory, caller:
            await start_serving(memory)
            await caller.start()
            for _ in range(options.get("count", 2)):
                broker, host = await _replica(
                    nats_url,
                    subjects,
                    model,
                    lease=options.get("lease", 10.0),
                    turns=options.get("turns", 16),
                    settings=options.get("settings"),
                )
                brokers.append(broker)
                hosts.append(host)
            await caller.config.connection_state.connection.flush()
            yield Replicas(subjects, caller, hosts, brokers, model)
            if model.gate is not None:
                model.gate.set()
            for host, broker in zip(hosts, brokers, strict=True):
                if broker.config.connection_state.connection.is_closed:
                    continue  # the replica that "died": nothing left to stop
                await host.stop()
                await broker.stop()
            js = caller.config.connection_state.stream
            for info in await js.streams_info():
                name = info.config.name or ""
                if subjects.namespace.upper() in name:
                    await js.delete_stream(name)
    finally:
        await storage.close()


@pytest.mark.parametrize(
    ("replicas", "apart"),
    [({"count": 1}, 0.02), ({"count": 2}, 0.02), ({"count": 2}, 0.0)],
    indirect=["replicas"],
)
async def test_messages_of_one_room_are_answered_in_the_order_they_were_sent(
    replicas: Replicas, apart: float
) -> None:
    # Every replica receives every message in the server's order, so the
    # order holds however close together they come.
    assert await replicas.send_eight("room-order", apart=apart) == list(range(8))
    assert replicas.model.most["room-order"] == 1


@pytest.mark.parametrize("replicas", [{"count": 1, "turns": 2, "delay": 0.3}], indirect=True)
async def test_a_busy_room_holds_no_worker_another_room_needs(replicas: Replicas) -> None:
    busy = [asyncio.create_task(replicas.send(f"m{i}", "room-busy")) for i in range(10)]
    await asyncio.sleep(0.1)
    other = await replicas.send("hello", "room-free")
    assert other.status == "completed"
    # It ran beside the busy room's queue, not after the ten turns waiting there.
    assert sum(task.done() for task in busy) < len(busy) // 2
    await asyncio.gather(*busy)


@pytest.mark.parametrize("replicas", [{"count": 2, "lease": 1.5, "delay": 2.5}], indirect=True)
async def test_a_turn_longer_than_the_lease_keeps_its_room(replicas: Replicas) -> None:
    first = asyncio.create_task(replicas.send("long one", "room-long"))
    await asyncio.sleep(0.2)
    second = asyncio.create_task(replicas.send("long two", "room-long"))
    results = await asyncio.gather(first, second)
    assert [r.status for r in results] == ["completed", "completed"]
    assert replicas.model.most["room-long"] == 1


@pytest.mark.parametrize("replicas", [{"count": 2, "lease": 2.0, "delay": 0.05}], indirect=True)
async def test_the_rooms_of_a_replica_that_vanished_are_free_again_within_the_lease(
    replicas: Replicas,
) -> None:
    replicas.model.gate = asyncio.Event()
    stuck = asyncio.create_task(replicas.send("stuck", "room-dead", timeout=60))
    await asyncio.wait_for(replicas.model.called.wait(), timeout=20)
    owner = next(i for i, h in enumerate(replicas.hosts) if h.rooms.held())
    # The owner's connection goes away mid-turn, as when its process is killed.
    await replicas.brokers[owner].config.connection_state.connection.close()
    replicas.model.gate.set()
    started = time.monotonic()
    result = await replicas.send("after the crash", "room-dead")
    recovered = time.monotonic() - started
    assert result.status == "completed"
    assert recovered < 2.0 + 4.0, recovered  # the lease and slack for a loaded machine (was ~114 s)
    stuck.cancel()


async def test_the_lease_bucket_takes_a_new_ttl_instead_of_refusing_it(
    replicas: Replicas,
) -> None:
    await ensure_lease_bucket(replicas.caller, replicas.subjects, 7.0)
    js = replicas.caller.config.connection_state.stream
    info = await js.stream_info(f"KV_{replicas.subjects.namespace.upper()}_ROOM_LEASES")
    assert info.config.max_age == pytest.approx(7.0)
    await ensure_lease_bucket(replicas.caller, replicas.subjects, 10.0)
    info = await js.stream_info(f"KV_{replicas.subjects.namespace.upper()}_ROOM_LEASES")
    assert info.config.max_age == pytest.approx(10.0)
    assert (await replicas.send("still serving", "room-ttl")).status == "completed"


async def test_bad_bodies_are_typed_bad_requests_with_short_headers(
    replicas: Replicas, nats_url: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        subject = replicas.subjects.message_handle(AGENT)
        huge = b'{"message_id": "' + b"x" * 300_000 + b'", "entity_id": "u", "room_id": "r"}'
        for body in (b'{"entity_id": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000, huge):
            reply = await nc.request(subject, body, timeout=10)
            error = msgspec.json.decode(reply.data, type=Error)
            assert error.code == "bad_request", error
            assert len(error.message) <= 1024
            assert reply.headers is not None
            assert len(reply.headers["Nats-Service-Error"]) <= 256
        # Every replica still serves.
        results = await asyncio.gather(
            *(replicas.send("after the bad input", f"room-after-{i}") for i in range(4))
        )
        assert all(r.status == "completed" for r in results)
    finally:
        await nc.close()


async def test_a_burst_to_one_room_over_two_replicas_runs_one_turn_at_a_time(
    replicas: Replicas,
) -> None:
    for _ in range(3):
        results = await asyncio.gather(*(replicas.send(f"n{i}", "room-burst") for i in range(4)))
        assert all(r.status == "completed" for r in results)
    assert replicas.model.most["room-burst"] == 1


@pytest.mark.parametrize(
    ("replicas", "statuses"),
    [
        ({"count": 2, "delay": 0.6}, ["completed", "completed", "completed"]),
        (
            {"count": 2, "delay": 0.6, "settings": {"SUPERSEDE_IN_ROOM": "true"}},
            ["superseded", "superseded", "completed"],
        ),
    ],
    indirect=["replicas"],
)
async def test_a_newer_message_in_a_room_supersedes_older_ones_only_when_asked(
    replicas: Replicas, statuses: list[str]
) -> None:
    # By default every message of a room is answered, one at a time; with
    # SUPERSEDE_IN_ROOM the newest takes over: the one running ends without an
    # answer when its plan comes back, the one waiting never reaches the model.
    sends = []
    for i in range(3):
        sends.append(asyncio.create_task(replicas.send(f"message {i}", "room-two-people")))
        await asyncio.sleep(0.15)
    results = await asyncio.gather(*sends)
    assert [r.status for r in results] == statuses
    assert [r.did_respond for r in results] == [s == "completed" for s in statuses]
    assert replicas.model.calls == statuses.count("completed") + (statuses[0] == "superseded")


@pytest.mark.parametrize("replicas", [{"count": 2, "lease": 30.0, "delay": 0.05}], indirect=True)
async def test_the_rooms_of_a_replica_that_is_gone_are_taken_over_before_its_lease_expires(
    replicas: Replicas,
) -> None:
    replicas.model.gate = asyncio.Event()
    stuck = asyncio.create_task(replicas.send("stuck", "room-gone", timeout=60))
    await asyncio.wait_for(replicas.model.called.wait(), timeout=20)
    owner = next(i for i, h in enumerate(replicas.hosts) if h.rooms.held())
    await replicas.brokers[owner].config.connection_state.connection.close()
    replicas.model.gate.set()
    started = time.monotonic()
    result = await replicas.send("after the crash", "room-gone", timeout=60)
    recovered = time.monotonic() - started
    assert result.status == "completed"
    # Its subject has no subscriber and its lease is not renewed: taken over
    # about 5 s after the first hand-over found nobody, far sooner than 30 s.
    assert recovered < 20, recovered
    stuck.cancel()


@pytest.mark.parametrize("replicas", [{"count": 2, "delay": 0.05}], indirect=True)
async def test_a_replica_that_lags_behind_changes_no_room_order(replicas: Replicas) -> None:
    # The replica whose event loop is behind (a busy machine) takes each
    # message 0.3 s late; messages 20 ms apart would swap if the room's order
    # depended on when each replica got round to its own share of them.
    lagging = replicas.hosts[0].rooms
    on_time = lagging.submit
    loop = asyncio.get_running_loop()

    def late(arrival: Arrival) -> None:
        loop.call_later(0.3, on_time, arrival)

    lagging.submit = late  # type: ignore[method-assign]
    assert await replicas.send_eight("room-lag", apart=0.02) == list(range(8))
    assert replicas.model.most["room-lag"] == 1


@pytest.mark.parametrize("replicas", [{"count": 2, "lease": 30.0, "delay": 0.05}], indirect=True)
async def test_messages_queued_on_a_replica_that_dies_are_answered_without_being_sent_again(
    replicas: Replicas,
) -> None:
    replicas.model.gate = asyncio.Event()
    answered: list[str] = []

    async def send(text: str) -> None:
        result = await replicas.send(text, "room-orphans", timeout=60)
        assert result.status == "completed", result.error
        answered.append(text)

    first = asyncio.create_task(send("running"))
    await asyncio.wait_for(replicas.model.called.wait(), timeout=20)
    queued = []
    for i in range(3):
        queued.append(asyncio.create_task(send(f"queued {i}")))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # in the owner's queue, and shadowed by the other replica
    owner = next(i for i, h in enumerate(replicas.hosts) if h.rooms.held())
    assert replicas.hosts[1 - owner].rooms.waiting() == 0  # shadows are not its to run
    await replicas.brokers[owner].config.connection_state.connection.close()
    replicas.model.gate.set()
    # Each caller sent once: the survivor takes the room over and answers them all, in order.
    await asyncio.wait_for(asyncio.gather(first, *queued), timeout=60)
    assert answered == ["running", "queued 0", "queued 1", "queued 2"]


async def test_a_message_sent_without_an_id_is_handled_once_by_all_replicas(
    replicas: Replicas, nats_url: str
) -> None:
    # Every replica decodes it: each must give it the same id, so that one
    # runs it and the others drop their copy once it is done.
    nc = await nats.connect(nats_url)
    try:
        body = b'{"entity_id": "user-noid", "room_id": "room-noid", "content": {"text": "hi"}}'
        reply = await nc.request(replicas.subjects.message_handle(AGENT), body, timeout=30)
        result = msgspec.json.decode(reply.data, type=HandleMessageResult)
        assert result.status == "completed", result.error
        again = await nc.request(replicas.subjects.message_handle(AGENT), body, timeout=30)
        assert msgspec.json.decode(again.data, type=HandleMessageResult).status == "completed"
        await asyncio.sleep(3 * replicas.hosts[0].rooms.renew_every)  # shadows pruned or run
    finally:
        await nc.close()
    assert replicas.model.calls == 2  # one turn per send (two inboxes: two messages)
    assert all(h.rooms.queued() == [] for h in replicas.hosts)


@pytest.mark.parametrize("replicas", [{"count": 1}, {"count": 2}], indirect=True)
async def test_a_message_sent_again_after_its_room_was_freed_gets_its_stored_outcome(
    replicas: Replicas,
) -> None:
    # The freed lease names the message its owner finished last: a copy of it
    # that arrived before is dropped, the same message sent again later is not.
    message = HandleMessage(
        message_id="sent-twice",
        entity_id="user-again",
        room_id="room-again",
        content=Content(text="once more room:room-again"),
    )
    subject = replicas.subjects.message_handle(AGENT)
    first = await request(replicas.caller, subject, message, HandleMessageResult, timeout=30)
    await asyncio.sleep(3 * replicas.hosts[0].rooms.renew_every)  # lingered, freed, pruned
    again = await request(replicas.caller, subject, message, HandleMessageResult, timeout=10)
    assert first.status == again.status == "completed"
    assert again.response_messages == first.response_messages
    assert replicas.model.calls == 1


def _count_turns(hosts: list[AgentHost]) -> list[str]:
    """Wrap each replica's turn runner; returns the message ids of every turn run, anywhere."""
    ran: list[str] = []
    for host in hosts:
        serve = host.rooms.serve

        async def counted(arrival: Arrival, serve: Any = serve) -> None:
            ran.append(arrival.request.message_id)
            await serve(arrival)

        host.rooms.serve = counted
    return ran


async def test_a_message_sent_twice_while_queued_runs_twice_and_no_more(
    replicas: Replicas,
) -> None:
    # Its caller re-sends a message still queued behind a slow turn: every
    # replica holds two copies. The owner runs both (the second from the
    # stored outcome); the shadows drop both, not only the first.
    ran = _count_turns(replicas.hosts)
    replicas.model.gate = asyncio.Event()
    subject = replicas.subjects.message_handle(AGENT)

    def message(message_id: str, text: str) -> HandleMessage:
        content = Content(text=f"{text} room:room-resent")
        return HandleMessage(
            message_id=message_id, entity_id="user-resent", room_id="room-resent", content=content
        )

    async def send(message_id: str, text: str) -> HandleMessageResult:
        sent = message(message_id, text)
        return await request(replicas.caller, subject, sent, HandleMessageResult, timeout=30)

    running = asyncio.create_task(send("resent-first", "first"))
    await asyncio.wait_for(replicas.model.called.wait(), timeout=20)
    queued = [asyncio.create_task(send("resent-twice", "twice")) for _ in range(2)]
    await asyncio.sleep(0.05)
    queued.append(asyncio.create_task(send("resent-last", "last")))
    await asyncio.sleep(0.3)  # queued on the owner, shadowed on the other
    replicas.model.gate.set()
    results = await asyncio.gather(running, *queued)
    assert all(r.status == "completed" for r in results), [r.error for r in results]
    await asyncio.sleep(3 * replicas.hosts[0].rooms.renew_every)  # lingered, freed, pruned
    assert sorted(ran) == sorted(["resent-first", "resent-twice", "resent-twice", "resent-last"])
    assert all(h.rooms.queued() == [] and h.rooms.held() == [] for h in replicas.hosts)


@pytest.mark.parametrize("replicas", [{"count": 3}], indirect=True)
async def test_a_freed_room_keeps_its_last_message_for_a_replica_that_lags_far_behind(
    replicas: Replicas,
) -> None:
    # The second replica finds the room freed with nothing left for it to run:
    # it leaves the lease as it is. Had it taken the lease and freed it again,
    # it would have written its own (empty) last message over the owner's, and
    # the third replica, whose copy comes after all that, would run it again.
    ran = _count_turns(replicas.hosts)
    lagging = replicas.hosts[2].rooms
    on_time = lagging.submit
    loop = asyncio.get_running_loop()
    lag = 2 * lagging.renew_every + 2 * LINGER_SECONDS

    def late(arrival: Arrival) -> None:
        loop.call_later(lag, on_time, arrival)

    lagging.submit = late  # type: ignore[method-assign]
    result = await replicas.send("hello", "room-far-behind")
    assert result.status == "completed", result.error
    await asyncio.sleep(lag + 2 * lagging.renew_every)  # the late copy arrived, and was dropped
    assert len(ran) == 1
    assert all(h.rooms.queued() == [] and h.rooms.held() == [] for h in replicas.hosts)
