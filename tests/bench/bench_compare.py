"""elizaOS 1.7.2 and elizamesh side by side, on one workload, in interleaved rounds.

``make bench-compare``. Lanes:

- ``elizaOS 1.7.2``: ``elizaos/driver.mjs`` on Node (``@elizaos/core``,
  ``plugin-sql`` on PGlite, ``plugin-bootstrap``, pinned in
  ``elizaos/package-lock.json``; ``npm ci`` when ``node_modules`` is missing);
- ``embedded SQLite`` and ``embedded Postgres``: ``embedded_lane`` (the
  Postgres one in a temporary database on ``BENCH_POSTGRES_URL``, dropped at
  the end);
- ``distributed 1 HTTP``, ``distributed 2 HTTP``, ``distributed 1 NATS`` and
  ``distributed 2 NATS``: the stack of ``bench_replicas`` (gateway, runtime
  replicas, memory on SQLite, embedding, evaluator, over a bundled
  nats-server) with 1 and 2 runtime replicas; messages come in over HTTP
  (a keep-alive client per room into the gateway) or straight over NATS (one
  ``ElizaOSClient``, as a connector, requesting
  ``<ns>.agent.<id>.message.handle``; the gateway idles).

Every lane: the same character (``character.json``), instant models (valid
XML for the planner, should-respond and REFLECTION; 384-d vectors), and per
message: connection ensured, message stored and embedded, state composed,
reply stored and embedded, REFLECTION run (``workload``). At each level
(1, 8, 64 rooms in flight) each room gets a warm-up message, then its
measured messages one after the other.

CPU ms per message: utime+stime (+ reaped children) from ``/proc`` of every
process of the lane, read once the lane is idle before the measured messages
and again once every vector is stored after them. The subprocess lanes count
their one process (the in-process model included); embedded Postgres adds
the server backends of its database (from ``pg_stat_activity``; the server's
background processes are not counted); the distributed lanes count
nats-server, gateway, runtimes, memory, embedding and evaluator, and show the
fake model server and the clients (this process) apart. Ratios are to elizaOS in the
same round, then the median over the rounds.

Once the distributed stack is up and before any message, every message on
its bus is counted for ``BENCH_IDLE_SECONDS`` (10) and printed by subject:
an idle stack's JetStream pulls (``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``,
one per long poll), health answers and replies (``_INBOX.*``).

Only prints; the machine is shared and noisy. Environment: ``BENCH_ROUNDS``
(2), ``BENCH_LEVELS`` (``1:24,8:12,64:2``: rooms in flight and measured messages
per room; 12 at 8 rooms, as 4 (32 messages, half a second of the
distributed lanes) left their CPU per message to the noise of a shared
machine), ``BENCH_LANES`` (all), ``BENCH_POSTGRES_URL``
(``postgresql://postgres:postgres@127.0.0.1:5432/test``; empty: no Postgres lane).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import nats
from nats.aio.msg import Msg

from contracts import Content, HandleMessage
from shared.client import ElizaOSClient
from shared.errors import ServiceError
from shared.natsserver import NatsServer, free_port
from tests.bench import bench_replicas as replicas
from tests.bench import workload
from tests.bench.workload import Level

ELIZAOS = Path(__file__).with_name("elizaos")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
LEVELS = {
    int(rooms): int(count)
    for rooms, count in (
        pair.split(":") for pair in os.environ.get("BENCH_LEVELS", "1:24,8:12,64:2").split(",")
    )
}
POSTGRES_URL = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:5432/test"
)
LANES = (
    "elizaOS 1.7.2",
    "embedded SQLite",
    "embedded Postgres",
    "distributed 1 HTTP",
    "distributed 1 NATS",
    "distributed 2 HTTP",
    "distributed 2 NATS",
)
CHOSEN = [
    lane
    for lane in LANES
    if lane in os.environ.get("BENCH_LANES", ",".join(LANES)).split(",")
    and (lane != "embedded Postgres" or POSTGRES_URL)
]
COUNTED = ("TEXT_LARGE", "TEXT_SMALL", "reflection", "embeddings")
LEVEL_TIMEOUT = 300.0
Say = Callable[[str, str], Awaitable[float | str]]
"""``say(room, text)``: one message sent and answered; its latency in s, or why it failed."""


def lane_replicas(lane: str) -> int:
    """Runtime replicas of a distributed lane (``distributed 2 NATS`` -> 2)."""
    return int(lane.split()[1])


def lane_tag(lane: str) -> str:
    """The prefix of a lane's room ids: the distributed lanes share one database, not a room."""
    return "-".join(lane.split()[1:])[:6].lower()


def lane_transport(lane: str) -> str:
    """How a distributed lane's messages come in: ``HTTP`` (the gateway) or ``NATS``."""
    return lane.split()[2]


# -- elizaOS from npm --------------------------------------------------------------


def install_elizaos(folder: Path = ELIZAOS, *, npm: str = "npm") -> None:
    """``npm ci`` the pinned elizaOS into ``folder`` unless it is there; exit saying why not.

    Raises:
        SystemExit: npm is missing or ``npm ci`` failed (registry unreachable, ...).
    """
    if (folder / "node_modules" / "@elizaos" / "core" / "package.json").exists():
        return
    if shutil.which(npm) is None:
        raise SystemExit(f"bench-compare: `{npm}` not found; elizaOS 1.7.2 needs Node 20 and npm")
    print(f"installing elizaOS 1.7.2 into {folder / 'node_modules'} (npm ci)", flush=True)
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise SystemExit(
            f"bench-compare: `npm ci` in {folder} failed (exit {done.returncode}); is the npm"
            f" registry reachable (`npm ping`)?\n{tail}"
        )


# -- what a level measured ---------------------------------------------------------


@dataclass
class Measured:
    """One lane at one level in one round."""

    lane: str
    rooms: int
    round: int
    sent: int
    latencies: list[float]
    elapsed: float
    cpu_ms: float
    counts: dict[str, int]
    apart: dict[str, float] = field(default_factory=dict)
    """CPU ms not counted in the lane's (the distributed lanes' model and clients)."""
    parts: dict[str, float] = field(default_factory=dict)
    """CPU ms of each process counted in the lane's (the distributed lanes' services)."""

    @property
    def handled(self) -> int:
        """Messages answered."""
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Messages per second over the level's wall time."""
        return self.handled / self.elapsed if self.elapsed else 0.0

    @property
    def per_message(self) -> float:
        """CPU ms per answered message."""
        return self.cpu_ms / max(self.handled, 1)


def delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Counts between two readings."""
    return {key: after.get(key, 0) - before.get(key, 0) for key in COUNTED}


# -- lanes in a process of their own (elizaOS, embedded) -----------------------------


class LaneProcess:
    """A lane process speaking the JSON-lines protocol of ``elizaos/driver.mjs``."""

    def __init__(self, command: Sequence[str], log: Path, extra: Callable[[], set[int]]) -> None:
        self.log = log
        self.extra = extra
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out, text=True
            )
        self.started = self.expect("started")
        self.rss_start = workload.rss_mb(self.process.pid)

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one line to the lane."""
        stdin: IO[str] | None = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(message) + "\n")
        stdin.flush()

    def expect(self, event: str) -> dict[str, Any]:
        """Read the lane's next event, which must be ``event``."""
        stdout: IO[str] | None = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"lane exited ({self.process.wait()}); log in {self.log}")
        got: dict[str, Any] = json.loads(line)
        if got.get("event") != event:
            raise RuntimeError(f"expected {event}, got {line[:200]}; log in {self.log}")
        return got

    def cpu(self) -> tuple[dict[int, float], dict[int, float]]:
        """CPU ms so far of the lane's process and its children; of the ``extra`` processes."""
        return (
            workload.cpu_ms(workload.descendants([self.process.pid])),
            workload.cpu_ms(self.extra()),
        )

    def level(self, lane: str, round_: int, level: Level) -> Measured:
        """Warm the level's rooms up, then measure its messages."""
        self.send({"cmd": "level", **level.as_json()})
        ready = self.expect("ready")
        before = self.cpu()
        self.send({"cmd": "go"})
        done = self.expect("done")
        after = self.cpu()
        extra = workload.spent_between(before[1], after[1])
        return Measured(
            lane,
            level.rooms,
            round_,
            level.sent,
            done["latencies"],
            done["elapsed"],
            workload.spent_between(before[0], after[0]) + extra,
            delta(ready["counts"], done["counts"]),
            {"of it, Postgres backends": extra} if extra else {},
        )

    def close(self) -> float:
        """Stop the lane; return its RSS (MB) just before."""
        rss = workload.rss_mb(self.process.pid)
        self.send({"cmd": "exit"})
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return rss


@dataclass
class Postgres:
    """A temporary database on the shared server; its backends' pids, for their CPU."""

    admin_url: str
    name: str = field(default_factory=lambda: f"elizamesh_bench_{uuid.uuid4().hex[:8]}")

    @property
    def url(self) -> str:
        """The temporary database's URL."""
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    def _run(self, query: str) -> list[Any]:
        async def go() -> list[Any]:
            connection = await asyncpg.connect(self.admin_url)
            try:
                return list(await connection.fetch(query))
            finally:
                await connection.close()

        return asyncio.run(go())

    def create(self) -> None:
        """Create the database."""
        self._run(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        """Drop the database, closing what is still connected."""
        self._run(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def backends(self) -> set[int]:
        """The server processes serving the database now."""
        rows = self._run(
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{self.name}'"  # noqa: S608
        )
        return {int(row["pid"]) for row in rows}


# -- the distributed lanes ---------------------------------------------------------


@dataclass
class Distributed:
    """The stack of ``bench_replicas``, up for the whole run; replicas scaled per lane."""

    stack: replicas.Stack
    model_url_file: Path
    rss_start: dict[str, float] = field(default_factory=dict)

    def model_counts(self) -> dict[str, int]:
        """What the fake model was asked so far (it writes it on SIGUSR1)."""
        target = self.model_url_file.with_name(self.model_url_file.name + ".counts")
        target.unlink(missing_ok=True)
        self.stack.processes["model"].send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not target.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake model did not write its counts")
            time.sleep(0.02)
        counts: dict[str, int] = json.loads(target.read_text())
        return counts

    def rss(self) -> dict[str, float]:
        """RSS (MB) of each process of the stack, by label (runtime replicas numbered)."""
        seen: dict[str, float] = {}
        for pid, label in sorted(self.stack.labels.items()):
            name = label
            number = 1
            while name in seen:
                number += 1
                name = f"{label}-{number}"
            seen[name] = workload.rss_mb(pid)
        for pid in workload.descendants([os.getpid()]):
            if workload.command_name(pid) == "nats-server":
                seen["nats-server"] = workload.rss_mb(pid)
        return seen

    @asynccontextmanager
    async def senders(self, transport: str, rooms: Sequence[str]) -> AsyncIterator[Say]:
        """A ``say(room, text)`` sending over ``transport``: its latency in s, or why it failed.

        ``HTTP``: a client per room into the gateway (``POST /v1/agents/<id>/messages``).
        ``NATS``: one ``ElizaOSClient`` for every room, as a connector has one
        connection, requesting ``<ns>.agent.<id>.message.handle``; no gateway.
        """
        if transport == "NATS":
            nats_url = self.stack.env["NATS_URL"]
            async with ElizaOSClient(nats_url, timeout=LEVEL_TIMEOUT, name="bench") as client:

                async def over_nats(room: str, text: str) -> float | str:
                    message = HandleMessage(
                        entity_id=f"user-{room}",
                        room_id=room,
                        content=Content(text=text, source="bench", channel_type="DM"),
                    )
                    started = time.perf_counter()
                    try:
                        await client.handle_message(replicas.AGENT, message)
                    except ServiceError as exc:
                        return f"{type(exc).__name__}: {str(exc)[:120]}"
                    return time.perf_counter() - started

                yield over_nats
            return
        async with replicas.room_clients(self.stack.base_url, rooms) as http:

            async def over_http(room: str, text: str) -> float | str:
                return await replicas.say(http[room], room, text, source="bench", channel_type="DM")

            yield over_http

    async def level(self, lane: str, round_: int, level: Level) -> Measured:
        """Warm the level's rooms up, then measure its messages (over the lane's transport)."""
        stack = self.stack
        data = level.as_json()
        async with self.senders(lane_transport(lane), data["rooms"]) as say:
            await asyncio.gather(*(say(room, data["warmup"]) for room in data["rooms"]))
            await replicas.idle(stack)
            counts_before = self.model_counts()
            before = replicas.cpu_ms(stack.labels)

            async def client(room: str, texts: list[str]) -> list[float | str]:
                return [await say(room, text) for text in texts]

            started = time.perf_counter()
            async with asyncio.timeout(LEVEL_TIMEOUT):
                answers = await asyncio.gather(
                    *(client(r, t) for r, t in zip(data["rooms"], data["messages"], strict=True))
                )
            elapsed = time.perf_counter() - started
            await replicas.idle(stack)
            after = replicas.cpu_ms(stack.labels)
            counts_after = self.model_counts()
        spent = replicas.used(before, after)
        outcomes = [o for each in answers for o in each]
        for error in {o for o in outcomes if isinstance(o, str)}:
            print(f"  {lane}: failed: {error}", flush=True)
        return Measured(
            lane,
            level.rooms,
            round_,
            level.sent,
            [o for o in outcomes if isinstance(o, float)],
            elapsed,
            replicas.stack_total(spent),
            delta(counts_before, counts_after),
            {
                "not counted: fake model server": spent.get("model", 0.0),
                "not counted: clients": spent.get("client", 0.0),
            },
            {label: ms for label, ms in spent.items() if label in replicas.STACK},
        )


IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "10"))


def subject_kind(subject: str) -> str:
    """A subject as counted: itself, or ``_INBOX.*`` for any reply.

    A service's pull shows as ``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>``.
    """
    return "_INBOX.* (replies)" if subject.startswith("_INBOX.") else subject


async def bus_traffic(url: str, seconds: float) -> Counter[str]:
    """Every message on the bus (``>``, JetStream API calls included) for ``seconds``, by kind."""
    heard: Counter[str] = Counter()
    client = await nats.connect(url, name="bench-listener")
    try:

        async def count(message: Msg) -> None:
            heard[subject_kind(message.subject)] += 1

        await client.subscribe(">", cb=count)
        await asyncio.sleep(seconds)
    finally:
        await client.close()
    return heard


def by_rate(heard: Counter[str]) -> str:
    """``heard`` as ``subject rate/s`` by rate, or ``none``."""
    shown = [f"{subject} {count / IDLE_SECONDS:.2f}" for subject, count in heard.most_common()]
    return ", ".join(shown) or "none"


@contextmanager
def distributed_stack(folder: Path) -> Iterator[Distributed]:
    """The distributed stack with the bench's character, up until the block ends."""
    logs = folder / "logs"
    logs.mkdir()
    character = folder / "eliza.json"
    data = workload.character()
    data["id"] = replicas.AGENT
    data["settings"] = {"CONVERSATION_LENGTH": str(workload.CONVERSATION_LENGTH)}
    character.write_text(json.dumps(data))
    model_url = folder / "model-url"
    port = free_port()
    with NatsServer() as server, ExitStack() as services:
        env = {
            "NATS_URL": server.url,
            "DATABASE_URL": f"sqlite:///{folder / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
            "OPENAI_API_KEY": "sk-bench",
            "OPENAI_EMBEDDING_DIMENSIONS": str(workload.DIMENSIONS),
            "API_PORT": str(port),
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
            "TASK_TICK_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
        }
        stack = replicas.Stack(env=env, logs=logs, base_url=f"http://127.0.0.1:{port}")
        stack.bring_up(services, model_url, port)
        before = replicas.cpu_ms(stack.labels)
        heard = asyncio.run(bus_traffic(server.url, IDLE_SECONDS))
        spent = replicas.used(before, replicas.cpu_ms(stack.labels))
        idle_rate = replicas.stack_total(spent) / IDLE_SECONDS
        stack.idle_ms = idle_rate * replicas.IDLE_INTERVAL * 1.5 + 30
        print(f"distributed stack up (logs in {logs}); idle {idle_rate:.0f} CPU ms/s", flush=True)
        print(f"idle bus, messages/s over {IDLE_SECONDS:.0f} s: {by_rate(heard)}", flush=True)
        yield Distributed(stack, model_url, rss_start=Distributed(stack, model_url).rss())


# -- the run -----------------------------------------------------------------------


@dataclass
class Run:
    """Everything measured, and the RSS of each lane's processes."""

    results: list[Measured] = field(default_factory=list)
    rss: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def add(self, measured: Measured) -> None:
        """Keep ``measured`` and print its line."""
        self.results.append(measured)
        print(
            f"  r{measured.round} {measured.lane:<18} {measured.rooms:>3} rooms:"
            f" {measured.handled}/{measured.sent} in {measured.elapsed:.1f}s,"
            f" {measured.rate:.1f} msg/s, {measured.per_message:.1f} CPU ms/msg",
            flush=True,
        )
        if measured.parts:
            shown = per_process(measured.parts, measured.handled)
            print(f"      CPU ms/msg by process: {shown}", flush=True)


def per_process(parts: Mapping[str, float], handled: int) -> str:
    """CPU ms per answered message of each process in ``parts``, largest first."""
    ordered = sorted(parts.items(), key=lambda part: -part[1])
    return ", ".join(f"{label} {ms / max(handled, 1):.1f}" for label, ms in ordered)


def subprocess_lane(lane: str, folder: Path, postgres: Postgres | None) -> LaneProcess:
    """Start the process of a subprocess lane."""
    log = folder / f"{lane.replace(' ', '-')}-{time.monotonic_ns()}.log"
    if lane == "elizaOS 1.7.2":
        spec = folder / "elizaos-workload.json"
        spec.write_text(
            json.dumps(
                {
                    "character": workload.character(),
                    "answers": workload.ANSWERS,
                    "dimensions": workload.DIMENSIONS,
                    "conversationLength": workload.CONVERSATION_LENGTH,
                }
            )
        )
        data = folder / "pglite"
        data.mkdir(exist_ok=True)
        node = shutil.which("node") or "node"
        return LaneProcess([node, str(ELIZAOS / "driver.mjs"), str(spec), str(data)], log, set)
    if lane == "embedded SQLite":
        url = f"sqlite:///{folder / 'embedded.db'}"
        return LaneProcess([sys.executable, "-m", "tests.bench.embedded_lane", url], log, set)
    if postgres is None:
        raise ValueError("the Postgres lane needs a database")
    return LaneProcess(
        [sys.executable, "-m", "tests.bench.embedded_lane", postgres.url], log, postgres.backends
    )


def run_round(
    run: Run, round_: int, folder: Path, postgres: Postgres | None, stack: Distributed | None
) -> None:
    """Every chosen lane at every level, in turn (reversed on even rounds)."""
    order = CHOSEN if round_ % 2 else list(reversed(CHOSEN))
    for lane in order:
        levels = workload.levels(LEVELS, LEVELS, f"{lane_tag(lane)}-r{round_}")
        if lane.startswith("distributed"):
            if stack is None:
                raise ValueError("the distributed lanes need the stack")
            stack.stack.scale(lane_replicas(lane))
            for name, mb in stack.rss().items():
                stack.rss_start.setdefault(name, mb)
            for level in levels:
                run.add(asyncio.run(stack.level(lane, round_, level)))
            continue
        process = subprocess_lane(lane, folder, postgres)
        try:
            for level in levels:
                run.add(process.level(lane, round_, level))
        finally:
            end = process.close()
        run.rss[lane] = {"process": (process.rss_start, end)}


# -- the table ---------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` in ms (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def table(run: Run) -> list[str]:
    """The comparison: per level and lane, pooled over rounds; ratios per round, then median."""
    by: dict[tuple[int, str], list[Measured]] = defaultdict(list)
    for m in run.results:
        by[(m.rooms, m.lane)].append(m)
    reference = {(m.rooms, m.round): m for m in run.results if m.lane == LANES[0]}
    lines = [
        f"{'rooms':>5} {'lane':<18}{'ok/sent':>9}{'msg/s':>7}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'CPU ms/msg':>11}{'CPU x':>7}{'msg/s x':>8}   per msg: large small refl emb"
    ]
    for rooms in LEVELS:
        for lane in CHOSEN:
            group = by.get((rooms, lane), [])
            if not group:
                continue
            handled = sum(m.handled for m in group)
            latencies = [x for m in group for x in m.latencies]
            cpu = statistics.median(m.per_message for m in group)
            rate = statistics.median(m.rate for m in group)
            pairs = [(m, reference.get((rooms, m.round))) for m in group]
            cpu_x = [m.per_message / r.per_message for m, r in pairs if r and r.per_message]
            rate_x = [m.rate / r.rate for m, r in pairs if r and r.rate]
            counts = {k: sum(m.counts.get(k, 0) for m in group) / max(handled, 1) for k in COUNTED}
            lines.append(
                f"{rooms:>5} {lane:<18}{handled:>5}/{sum(m.sent for m in group):<3}{rate:>7.1f}"
                f"{quantile(latencies, 0.5):>8.0f}{quantile(latencies, 0.99):>8.0f}{cpu:>11.1f}"
                f"{statistics.median(cpu_x) if cpu_x else 0:>7.2f}"
                f"{statistics.median(rate_x) if rate_x else 0:>8.2f}"
                f"   {counts['TEXT_LARGE']:>13.2f} {counts['TEXT_SMALL']:>5.2f}"
                f" {counts['reflection']:>4.2f} {counts['embeddings']:>4.2f}"
            )
    for lane in CHOSEN:
        parts = [m for m in run.results if m.lane == lane and m.apart]
        handled = max(sum(m.handled for m in parts), 1)
        names = sorted({name for m in parts for name in m.apart})
        shown = [f"{n} {sum(m.apart.get(n, 0.0) for m in parts) / handled:.1f}" for n in names]
        if shown:
            lines.append(f"{lane}, CPU ms/msg: {', '.join(shown)}")
    for rooms in LEVELS:
        for lane in CHOSEN:
            group = [m for m in run.results if m.lane == lane and m.rooms == rooms and m.parts]
            if group:
                pooled: Counter[str] = Counter()
                for m in group:
                    pooled.update(m.parts)
                split = per_process(pooled, sum(m.handled for m in group))
                lines.append(f"{rooms:>5} {lane}, CPU ms/msg by process: {split}")
    lines.extend(replica_gain(run.results))
    for lane, processes in run.rss.items():
        sizes = ", ".join(f"{name} {a:.0f}->{b:.0f}" for name, (a, b) in processes.items())
        lines.append(f"RSS MB after start -> after the run, {lane}: {sizes}")
    return lines


def replica_gain(results: Sequence[Measured]) -> list[str]:
    """Per level and transport, 2 replicas' msg/s over 1's: the median of the rounds' ratios.

    Each round runs both lanes on the same stack, so a round's ratio is free
    of the machine's drift between rounds. Empty without both lanes.
    """
    rates = {(m.lane, m.rooms, m.round): m.rate for m in results}
    lines = []
    for rooms in sorted({m.rooms for m in results}):
        shown = []
        for transport in ("HTTP", "NATS"):
            ratios = [
                two / one
                for (lane, at, round_), two in rates.items()
                if lane == f"distributed 2 {transport}" and at == rooms
                if (one := rates.get((f"distributed 1 {transport}", rooms, round_)))
            ]
            if ratios:
                shown.append(f"{transport} x{statistics.median(ratios):.2f}")
        if shown:
            lines.append(f"{rooms:>5} rooms, msg/s of 2 replicas over 1: {', '.join(shown)}")
    return lines


def main() -> None:
    install_elizaos()
    folder = Path(tempfile.mkdtemp(prefix="elizamesh-bench-compare-"))
    print(
        f"bench-compare: lanes {', '.join(CHOSEN)}; levels (rooms in flight: measured messages"
        f" per room, after 1 warm-up) {LEVELS}; {ROUNDS} rounds; conversation length"
        f" {workload.CONVERSATION_LENGTH}; files in {folder}",
        flush=True,
    )
    run = Run()
    started = time.monotonic()
    with ExitStack() as resources:
        postgres: Postgres | None = None
        if "embedded Postgres" in CHOSEN:
            postgres = Postgres(POSTGRES_URL)
            postgres.create()
            resources.callback(postgres.drop)
        stack: Distributed | None = None
        if any(lane.startswith("distributed") for lane in CHOSEN):
            stack = resources.enter_context(distributed_stack(folder))
        for round_ in range(1, ROUNDS + 1):
            run_round(run, round_, folder, postgres, stack)
        if stack is not None:
            end = stack.rss()
            run.rss["distributed"] = {
                name: (stack.rss_start.get(name, 0.0), mb) for name, mb in end.items()
            }
    print(f"\nbench-compare: {time.monotonic() - started:.0f} s; CPU x, msg/s x: vs elizaOS")
    print("\n".join(table(run)))


if __name__ == "__main__":
    main()
