"""The fault suite: messages over many rooms while one part of the stack fails.

``python -m tests.faults.suite [SCENARIO ...]`` (``make test-faults``) runs
each scenario on a stack of its own (``tests.faults.stack``): 2 runtime
replicas, the memory service on a private Postgres, a private nats-server and
a fake model that counts its calls per message. ``FAULT_MESSAGES`` messages
(default 1,000) go to ``FAULT_ROOMS`` rooms (default 50); each room's
client sends its messages in order, two in flight at most, 20 ms apart (``FAULT_SPACING``),
and re-sends a message with the same id only when the answer is retryable
(a timeout, no responders, an ``Error`` with ``retryable``), as the contract
asks. When about 30 % are answered, the fault:

- ``kill``: ``kill -9`` of one runtime replica;
- ``nats``: nats-server stopped and started again (same port and store);
- ``postgres``: Postgres stopped for ``FAULT_OUTAGE`` seconds (default 10);
- ``memory``: the memory service killed (``-9``) and started again.

Printed per scenario: sent, answered, lost, duplicate replies stored,
replies stored without their message, double model calls (a message the
model answered twice; an answer to a call asked before the ``kill -9`` and
written in its last ``KILL_WINDOW`` or after it died with the replica and is
counted apart, as is a call cut off mid-answer), out-of-order
answers, the longest time a room waited with no answer, and the recovery
time. The run fails when lost, duplicates, orphans, double model calls or
out-of-order answers are not 0.

Out of order: two messages of one room, each answered at its first send,
whose turns reached the model in the other order than they were sent. A
message re-sent after a fault arrives anew, behind the room's later ones:
its place is where it arrived again. Two messages the client sent while its
own connection was down reached the server together when it came back: the
order the stack promises is the order of arrival, so they are not compared.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats
import nats.errors
from nats.aio.client import Client

from contracts import Content, Error, HandleMessage, HandleMessageResult
from shared.health import gather_health
from tests.faults.stack import AGENT, Stack, replies_stored, stack, token

SCENARIOS = ("kill", "nats", "postgres", "memory")
ATTEMPT_SECONDS = float(os.environ.get("FAULT_ATTEMPT", "5"))
"""How long a client waits for one attempt before it re-sends (``FAULT_ATTEMPT``, default 5)."""
GIVE_UP_SECONDS = 300.0
"""How long a client keeps re-sending one message before it counts it lost."""

SPACING = 0.02
"""Seconds between two sends of one room (``FAULT_SPACING``). Rooms keep the order
the replicas received messages in, give or take a hop and the receiving replica's
event-loop lag: closer than that, two messages may swap (the README's figures
were measured at 0.02 s; ``tests/integration/test_rooms.py`` tests 0.1 s)."""

KILL_WINDOW = 0.25
"""An answer the model wrote to a replica this little before it was killed died with it.

So did every answer to a call asked before the kill and written after it.
"""

_RESULT = msgspec.json.Decoder(HandleMessageResult | Error)


@dataclass
class Sent:
    """One message, as its client saw it."""

    room: str
    index: int
    message_id: str
    first_sent: float = 0.0
    offline: bool = False
    """Sent while the client's connection was down: it reached the server when it came back."""
    attempts: int = 0
    answered_at: float | None = None
    error: str | None = None


@dataclass
class Figures:
    """What one scenario measured."""

    scenario: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    duplicate_replies: int = 0
    replies_without_message: int = 0
    double_model_calls: int = 0
    """Messages answered by the model more than once (each answer delivered to a runtime)."""
    cut_off_model_calls: int = 0
    lost_with_replica: int = 0
    """Answers written to the killed replica in its last ``KILL_WINDOW`` seconds: asked again."""
    """Calls whose caller died before the answer came: asked again, never answered twice."""
    out_of_order: int = 0
    longest_room_block: float = 0.0
    recovery: float = 0.0
    retried: int = 0
    seconds: float = 0.0
    died: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    doubled: list[str] = field(default_factory=list)
    """The messages the model answered more than once."""
    longest_block_at: str = ""
    """The room of the longest block, and when (monotonic seconds)."""
    fault_at: float = 0.0
    swaps: list[str] = field(default_factory=list)
    """The out-of-order pairs: room, sent and first model call of each (monotonic seconds)."""

    def failed(self) -> list[str]:
        """The figures that must be 0 and are not."""
        names = (
            "lost",
            "duplicate_replies",
            "replies_without_message",
            "double_model_calls",
            "out_of_order",
        )
        wrong = [f"{n}={getattr(self, n)}" for n in names if getattr(self, n)]
        return wrong + [f"died={d}" for d in self.died]

    def line(self) -> str:
        """One printed row."""
        return (
            f"{self.scenario:<9} sent {self.sent:>5}  answered {self.answered:>5}  "
            f"lost {self.lost}  duplicate replies {self.duplicate_replies}  "
            f"replies without message {self.replies_without_message}  "
            f"double model calls {self.double_model_calls} "
            f"(cut off {self.cut_off_model_calls}, answered as the replica died "
            f"{self.lost_with_replica})  out of order {self.out_of_order}  "
            f"longest room block {self.longest_room_block:.1f}s  "
            f"recovery {self.recovery:.1f}s  re-sent {self.retried}  ({self.seconds:.0f}s)"
        )


async def connect(url: str) -> Client:
    """A client connection that reconnects for as long as it takes (the suite outlives outages)."""
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


async def wait_ready(nc: Client, running: Stack, runtimes: int, *, timeout: float = 120) -> None:
    """Wait until ``runtimes`` runtime replicas answer ``<ns>.health`` as ok."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = await gather_health(nc, running.subjects, window=0.5)
        if sum(1 for a in answers if a.service == "runtime" and a.ok) >= runtimes:
            return
    raise AssertionError(f"{runtimes} runtime replicas were not ready in {timeout:g}s")


async def deliver(nc: Client, running: Stack, message: Sent, errors: dict[str, int]) -> None:
    """Send ``message`` until it is answered, re-sending (same id) only what is retryable."""
    request = msgspec.json.encode(
        HandleMessage(
            message_id=message.message_id,
            entity_id=f"user-{message.room}",
            room_id=message.room,
            content=Content(text=token(message.message_id)),
        )
    )
    subject = running.subjects.message_handle(AGENT)
    message.first_sent = time.monotonic()
    message.offline = not nc.is_connected
    while time.monotonic() - message.first_sent < GIVE_UP_SECONDS:
        message.attempts += 1
        try:
            reply = await nc.request(subject, request, timeout=ATTEMPT_SECONDS)
        except (nats.errors.Error, TimeoutError) as exc:  # timeout, no responders, reconnecting
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.5)
            continue
        result = _RESULT.decode(reply.data)
        if isinstance(result, Error):
            errors[str(result.code)] = errors.get(str(result.code), 0) + 1
            if result.retryable:
                await asyncio.sleep(0.5)
                continue
            message.error = f"{result.code}: {result.message}"
            return
        if result.status != "completed" or not result.did_respond:
            message.error = f"status {result.status}: {result.error}"
            return
        message.answered_at = time.monotonic()
        return
    message.error = "gave up"


async def room_client(
    nc: Client, running: Stack, messages: list[Sent], errors: dict[str, int]
) -> None:
    """Send one room's messages in order, ``SPACING`` apart, two in flight at most."""
    in_flight = asyncio.Semaphore(2)
    tasks: list[asyncio.Task[None]] = []

    async def one(message: Sent) -> None:
        try:
            await deliver(nc, running, message, errors)
        finally:
            in_flight.release()

    for message in messages:
        await in_flight.acquire()
        tasks.append(asyncio.create_task(one(message)))
        await asyncio.sleep(float(os.environ.get("FAULT_SPACING", SPACING)))
    await asyncio.gather(*tasks)


Fault = Callable[[Stack], Awaitable[None]]


async def kill_replica(running: Stack) -> None:
    """``kill -9`` the runtime replica that holds the most rooms (the other carries on alone).

    Rooms go to whichever replica claims them first: killing a fixed one
    could kill one that holds none, and test nothing.
    """
    nc = await connect(running.nats.url)
    try:
        answers = await gather_health(nc, running.subjects, window=0.5)
    finally:
        await nc.close()
    held = {
        int(a.instance.rpartition(":")[2]): int(a.details.get("rooms_held", 0))
        for a in answers
        if a.service == "runtime"
    }
    replicas = [name for name in running.processes if name.startswith("runtime-")]
    victim = max(replicas, key=lambda name: held.get(running.processes[name].pid, -1))
    print(f"          killing {victim}: rooms held {held}", flush=True)
    running.kill(victim)


async def restart_nats(running: Stack) -> None:
    """Stop nats-server and start it again on the same port and store."""
    await asyncio.to_thread(running.nats.stop)
    await asyncio.sleep(1)
    await asyncio.to_thread(running.nats.start)


async def stop_postgres(running: Stack) -> None:
    """Stop Postgres for ``FAULT_OUTAGE`` seconds (default 10), then start it again."""
    await asyncio.to_thread(running.postgres.stop)
    await asyncio.sleep(float(os.environ.get("FAULT_OUTAGE", "10")))
    await asyncio.to_thread(running.postgres.start)


async def restart_memory(running: Stack) -> None:
    """``kill -9`` the memory service and start it again."""
    running.kill("memory")
    running.start("memory", "memory")


FAULTS: dict[str, Fault] = {
    "kill": kill_replica,
    "nats": restart_nats,
    "postgres": stop_postgres,
    "memory": restart_memory,
}


async def run(scenario: str, root: Path, *, messages: int, rooms: int) -> Figures:
    """Run ``scenario`` on a fresh stack under ``root`` and return its figures."""
    figures = Figures(scenario)
    with stack(root) as running:
        nc = await connect(running.nats.url)
        try:
            await wait_ready(nc, running, 2)
            by_room: dict[str, list[Sent]] = {}
            for index in range(messages):
                room = f"room-{index % rooms}"
                by_room.setdefault(room, []).append(
                    Sent(room=room, index=index // rooms, message_id=uuid.uuid4().hex)
                )
            every = [m for ms in by_room.values() for m in ms]
            errors: dict[str, int] = {}
            started = time.monotonic()
            clients = [
                asyncio.create_task(room_client(nc, running, ms, errors)) for ms in by_room.values()
            ]
            while sum(m.answered_at is not None for m in every) < 0.3 * messages:  # noqa: ASYNC110 - polls the clients' tally
                await asyncio.sleep(0.05)
            fault_at = time.monotonic()
            await FAULTS[scenario](running)
            fault_over = time.monotonic()
            await asyncio.gather(*clients)
            figures.seconds = time.monotonic() - started
            figures.died = running.died()
            replies, stored = await replies_stored(running.postgres.dsn)
        finally:
            await nc.close()
    figures.errors = errors
    figures.fault_at = fault_at
    _count(figures, every, by_room, running, replies, stored)
    figures.recovery = _recovery(by_room, fault_at, fault_over)
    return figures


def _count(
    figures: Figures,
    every: list[Sent],
    by_room: dict[str, list[Sent]],
    running: Stack,
    replies: dict[str, int],
    stored: set[str],
) -> None:
    figures.sent = len(every)
    figures.answered = sum(m.answered_at is not None for m in every)
    figures.lost = figures.sent - figures.answered
    figures.retried = sum(m.attempts > 1 for m in every)
    figures.duplicate_replies = sum(n - 1 for n in replies.values() if n > 1)
    figures.replies_without_message = sum(1 for m in replies if m not in stored)
    delivered, asked = running.calls.delivered, running.calls.asked
    for m in every:
        at = running.calls.delivered_at.get(m.message_id, [])
        # The kill itself, after the victim was chosen (fault_at is before that).
        replicas = [t for name, t in running.killed_at.items() if name.startswith("runtime-")]
        died = max(replicas) if figures.scenario == "kill" and replicas else -1.0
        first_asked = running.calls.first_call.get(m.message_id, died + 1)
        if len(at) > 1 and first_asked <= died + 0.05 and at[0] >= died - KILL_WINDOW:
            # Asked before the kill, answered just before it or after it: the
            # answer went to the replica as it died (a write to a socket its
            # killed process left succeeds once), and nothing can reuse it.
            figures.lost_with_replica += 1
            delivered[m.message_id] -= 1
    figures.double_model_calls = sum(max(delivered[m.message_id] - 1, 0) for m in every)
    for m in every:
        if delivered[m.message_id] > 1:
            asked_at = [
                round(t, 3) for t, names in running.calls.prompts if names[-1:] == [m.message_id]
            ]
            figures.doubled.append(
                f"{m.message_id[:6]} ({m.room} #{m.index}, sent {m.first_sent:.3f}, "
                f"{m.attempts} sends, asked at {asked_at})"
            )
    figures.cut_off_model_calls = sum(asked[m.message_id] - delivered[m.message_id] for m in every)
    first = running.calls.first_call
    for sent in by_room.values():
        at_once = [m for m in sent if m.attempts == 1 and m.message_id in first]
        for earlier, later in itertools.pairwise(at_once):
            if earlier.offline and later.offline:
                continue  # flushed together on reconnect: they reached the server at once
            if first[later.message_id] < first[earlier.message_id]:
                figures.out_of_order += 1
                figures.swaps.append(
                    f"{earlier.room}: #{earlier.index} sent {earlier.first_sent:.3f}, "
                    f"asked {first[earlier.message_id]:.3f}; #{later.index} sent "
                    f"{later.first_sent:.3f}, asked {first[later.message_id]:.3f}; prompts: "
                    + str(
                        [
                            (round(t, 3), [n[:6] for n in names[-3:]])
                            for t, names in running.calls.prompts
                            if {earlier.message_id, later.message_id} & set(names)
                        ]
                    )
                    + f" ({earlier.message_id[:6]}, {later.message_id[:6]})"
                )
        answers = sorted(
            [m.first_sent for m in sent[:1]] + [m.answered_at for m in sent if m.answered_at]
        )
        for a, b in itertools.pairwise(answers):
            if b - a > figures.longest_room_block:
                figures.longest_room_block = b - a
                figures.longest_block_at = f"{sent[0].room} from {a:.3f} to {b:.3f}"


def _recovery(by_room: dict[str, list[Sent]], fault_at: float, fault_over: float) -> float:
    """Seconds from the end of the fault until every room waiting at the fault answered again."""
    latest = fault_over
    for sent in by_room.values():
        waiting = [m for m in sent if m.first_sent <= fault_at and m.answered_at is not None]
        waiting = [m for m in waiting if m.answered_at is not None and m.answered_at > fault_at]
        if waiting:
            latest = max(latest, min(m.answered_at or 0 for m in waiting))
    return latest - fault_over


def settings() -> tuple[int, int]:
    """``FAULT_MESSAGES`` (default 1,000) and ``FAULT_ROOMS`` (default 50)."""
    return int(os.environ.get("FAULT_MESSAGES", "1000")), int(os.environ.get("FAULT_ROOMS", "50"))


def main() -> None:
    """Run the scenarios named on the command line (default all); exit 1 when one failed."""
    chosen = sys.argv[1:] or list(SCENARIOS)
    # A terminated run still stops its servers (Postgres outlives a killed parent).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    messages, rooms = settings()
    failures = 0
    print(f"fault suite: {messages} messages over {rooms} rooms, 2 runtime replicas")
    for scenario in chosen:
        root = Path(tempfile.mkdtemp(prefix=f"faults-{scenario}-"))
        figures = asyncio.run(run(scenario, root, messages=messages, rooms=rooms))
        print(figures.line(), flush=True)
        if figures.errors:
            print(f"          errors seen by clients: {figures.errors}", flush=True)
        print(
            f"          fault at {figures.fault_at:.3f}; longest block: {figures.longest_block_at}",
            flush=True,
        )
        if wrong := figures.failed():
            failures += 1
            print(f"          FAILED: {', '.join(wrong)}; the logs are in {root}", flush=True)
            for swap in figures.swaps:
                print(f"          out of order: {swap}", flush=True)
            print(f"          answered twice by the model: {figures.doubled}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
