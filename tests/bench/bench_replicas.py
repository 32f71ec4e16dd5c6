"""Do two runtime replicas beat one with 64 rooms in flight? Interleaved phases on one stack.

The stack of ``bench_distributed`` (gateway, runtime, memory on SQLite,
embedding, evaluator: each a process, on a bundled nats-server; the fake
OpenAI server, in a process of its own, answers at once) stays up for the
whole run. Only the number of runtime replicas changes, 1, 2, 1, 2, ..., so
the drift of a shared machine (other load, a growing database) falls on both
alike.

A phase: ``BENCH_ROOMS`` clients (64), each in a room of its own, first send
one warm-up message (it creates the room and its participants; not measured),
then ``BENCH_MESSAGES`` messages (3) one after the other. Measured:
messages/s over the phase's wall time, p50/p95 of each HTTP request's
latency, and CPU milliseconds per message of every process of the stack,
nats-server included: utime+stime (+ those of reaped children) from
``/proc/<pid>/stat``, read once the stack is idle before the measured
messages and again once it is idle after them, so the embedding and
evaluator work a phase leaves behind counts for that phase. The model and
the bench's own process (the HTTP clients) are shown apart.

Only prints; the machine is shared and noisy. ``make bench-compare``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from shared.natsserver import NatsServer, free_port, wait_for_port
from shared.processes import service_process

ROOMS = int(os.environ.get("BENCH_ROOMS", "64"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
# After the first two rounds (always run), no phase starts past this many seconds.
BUDGET = float(os.environ.get("BENCH_BUDGET_SECONDS", "130"))
MIN_ROUNDS = 2
REQUEST_TIMEOUT = 30.0
PHASE_TIMEOUT = 90.0
AGENT = "eliza"
STACK = ("nats-server", "gateway", "runtime", "memory", "embedding", "evaluator")
MS_PER_TICK = 1000 / os.sysconf("SC_CLK_TCK")
HOST = socket.gethostname()
IDLE_INTERVAL = 0.5


# -- CPU, from /proc -------------------------------------------------------------


def cpu_ms(labels: Mapping[int, str]) -> dict[int, tuple[str, float]]:
    """CPU ms so far (utime+stime+cutime+cstime) of this process and its descendants, by pid.

    Each comes with its label: ``labels[pid]``, else its command name; this one is "client".
    """
    parents: dict[int, int] = {}
    seen: dict[int, tuple[str, float]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited meanwhile
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        seen[pid] = (name, sum(int(f) for f in fields[11:15]) * MS_PER_TICK)
    family = {os.getpid()}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    labels = {os.getpid(): "client", **labels}
    return {pid: (labels.get(pid, seen[pid][0]), seen[pid][1]) for pid in family if pid in seen}


def used(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU ms by label between two readings (a process born in between counts in full)."""
    spent: dict[str, float] = defaultdict(float)
    for pid, (label, total) in after.items():
        spent[label] += total - before.get(pid, (label, 0.0))[1]
    return dict(spent)


def stack_total(spent: Mapping[str, float]) -> float:
    """CPU ms of the stack's processes (not the model, not the clients)."""
    return sum(ms for label, ms in spent.items() if label in STACK)


# -- the stack -------------------------------------------------------------------


@dataclass
class Stack:
    """The services as processes, and the runtime replicas, started and stopped on demand."""

    env: dict[str, str]
    logs: Path
    base_url: str
    labels: dict[int, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    replicas: list[tuple[ExitStack, subprocess.Popen[bytes]]] = field(default_factory=list)
    started: int = 0
    idle_ms: float = 50.0  # stack CPU ms per IDLE_INTERVAL under which it counts as idle

    def start(
        self, stack: ExitStack, name: str, *, module: str | None = None, args: Sequence[str] = ()
    ) -> None:
        """Start ``name`` (stopped when ``stack`` closes) and label its pid."""
        process = stack.enter_context(
            service_process(name, self.env, log_dir=self.logs, module=module, args=args)
        )
        self.processes[name] = process
        self.labels[process.pid] = name

    def bring_up(self, services: ExitStack, model_url: Path, port: int) -> None:
        """Start the fake model, then the services and one runtime replica; wait for the gateway.

        ``services`` closes them all (``model_url``: where the model writes its address).
        """
        self.start(services, "model", module="tests.bench.fake_model", args=[str(model_url)])
        deadline = time.monotonic() + 30
        while not model_url.exists() or not model_url.read_text():
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("the fake model did not start")
            time.sleep(0.05)
        self.env["OPENAI_BASE_URL"] = model_url.read_text()
        for name in ("memory", "embedding", "evaluator", "gateway"):
            self.start(services, name)
        services.callback(self.close)
        wait_for_port("127.0.0.1", port, timeout=60)
        self.scale(1)

    def scale(self, replicas: int) -> None:
        """Start or stop runtime replicas until ``replicas`` run and answer for the agent."""
        while len(self.replicas) > replicas:
            stack, process = self.replicas.pop()
            stack.close()  # SIGTERM: it finishes its turns, leaves the queue group, exits
            self.labels.pop(process.pid, None)
        while len(self.replicas) < replicas:
            self.started += 1
            stack = ExitStack()
            replica_logs = self.logs / f"runtime-{self.started}"
            replica_logs.mkdir()
            process = stack.enter_context(
                service_process("runtime", self.env, log_dir=replica_logs)
            )
            self.replicas.append((stack, process))
            self.labels[process.pid] = "runtime"
        self.wait_ready()

    def close(self) -> None:
        """Stop every runtime replica, last started first."""
        while self.replicas:
            stack, _ = self.replicas.pop()
            stack.close()

    def wait_ready(self, *, timeout: float = 60) -> None:
        """Wait until each replica (and only those) hosts the agent, and the workers are ok."""
        wanted = {f"{HOST}:{process.pid}" for _, process in self.replicas}
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                services = httpx.get(f"{self.base_url}/v1/ready", timeout=10).json()["services"]
            except (httpx.HTTPError, ValueError, KeyError):
                services = []
            hosting = {
                s["instance"]
                for s in services
                if s["service"] == "runtime" and s["ok"] and AGENT in s["details"].get("agents", [])
            }
            workers = {s["service"] for s in services if s["ok"]}
            if hosting == wanted and {"memory", "embedding", "evaluator"} <= workers:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"stack not ready after {timeout:g}s; logs in {self.logs}")
            time.sleep(0.2)

    def check_alive(self) -> None:
        """Raise if a process of the stack has exited."""
        every = [*self.processes.items(), *(("runtime", p) for _, p in self.replicas)]
        for name, process in every:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}); logs in {self.logs}")


async def idle(stack: Stack, *, limit: float = 20.0) -> float:
    """Wait until the stack's CPU use is back to its idle level (at most ``limit`` s); return s."""
    started = time.monotonic()
    previous = cpu_ms(stack.labels)
    while time.monotonic() - started < limit:
        await asyncio.sleep(IDLE_INTERVAL)
        current = cpu_ms(stack.labels)
        if stack_total(used(previous, current)) <= stack.idle_ms:
            break
        previous = current
    return time.monotonic() - started


# -- one phase -------------------------------------------------------------------


@dataclass
class Phase:
    """What one phase measured."""

    replicas: int
    round: int
    sent: int
    latencies: list[float]
    elapsed: float
    tail: float
    spent: dict[str, float]
    errors: Counter[str]

    @property
    def handled(self) -> int:
        """Messages answered with a success."""
        return len(self.latencies)


KEEPALIVE_SECONDS = 2.0
"""How long a client keeps an idle connection: less than uvicorn's 5 s keep-alive, so a
connection the gateway is closing at that moment is not reused (a ``ReadError``)."""


@asynccontextmanager
async def room_clients(
    base_url: str, rooms: Sequence[str]
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One HTTP client (one keep-alive connection) per room, as one user per chat would have.

    Not one client with a pool for all rooms: httpcore's pool looks at every
    connection for every request it places (``has_expired`` reads the socket
    each time), so at 64 rooms half the load generator's CPU went there and
    a request waited up to 2.5 s for its connection on a busy machine: the
    figures measured the client, not the stack.
    """
    limits = httpx.Limits(
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_SECONDS
    )
    async with AsyncExitStack() as stack:
        yield {
            room: await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits)
            )
            for room in rooms
        }


async def say(http: httpx.AsyncClient, room: str, text: str, **content: str) -> float | str:
    """Send one message (``content``: more fields of its content); its latency in s, or why."""
    body = {"entity_id": f"user-{room}", "room_id": room, "content": {"text": text, **content}}
    started = time.perf_counter()
    try:
        reply = await http.post(f"/v1/agents/{AGENT}/messages", json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if not reply.is_success:
        return f"HTTP {reply.status_code}: {reply.text[:120]}"
    return time.perf_counter() - started


async def phase(stack: Stack, replicas: int, round_: int) -> Phase:
    """Warm up ``ROOMS`` new rooms, then measure ``MESSAGES`` messages in each, side by side."""
    rooms = [f"r{replicas}-{round_}-{i}" for i in range(ROOMS)]
    async with room_clients(stack.base_url, rooms) as http:
        await asyncio.gather(*(say(http[room], room, "hello") for room in rooms))
        await idle(stack)
        before = cpu_ms(stack.labels)

        async def client(room: str) -> list[float | str]:
            return [await say(http[room], room, f"message {i}") for i in range(MESSAGES)]

        started = time.perf_counter()
        async with asyncio.timeout(PHASE_TIMEOUT):
            answers = await asyncio.gather(*(client(room) for room in rooms))
        elapsed = time.perf_counter() - started
        tail = await idle(stack)
        after = cpu_ms(stack.labels)
    outcomes = [outcome for each in answers for outcome in each]
    return Phase(
        replicas,
        round_,
        ROOMS * MESSAGES,
        [o for o in outcomes if isinstance(o, float)],
        elapsed,
        tail,
        used(before, after),
        Counter(o for o in outcomes if isinstance(o, str)),
    )


# -- the report ------------------------------------------------------------------

COLUMNS = ("nats-server", "gateway", "runtime", "memory", "embedding", "evaluator")
HEADER = (
    f"{'phase':<14}{'ok/sent':>9}{'msg/s':>7}{'p50 ms':>8}{'p95 ms':>8}{'tail s':>7}{'CPU/msg':>8}"
    + "".join(f"{name[:9]:>10}" for name in (*COLUMNS, "model", "client"))
)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` in ms (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def rate(phases: list[Phase]) -> float:
    """Messages/s: the median over these phases."""
    return statistics.median(p.handled / p.elapsed for p in phases)


def cpu_per_message(phases: list[Phase]) -> dict[str, float]:
    """CPU ms per handled message by label, pooled over these phases (``stack``: their sum)."""
    handled = max(sum(p.handled for p in phases), 1)
    spent: dict[str, float] = defaultdict(float)
    for p in phases:
        for name, ms in p.spent.items():
            spent[name] += ms
    per = {name: ms / handled for name, ms in spent.items()}
    per["stack"] = stack_total(spent) / handled
    return per


def row(label: str, phases: list[Phase]) -> str:
    """One line of the table: these phases pooled."""
    latencies = [latency for p in phases for latency in p.latencies]
    ok = f"{sum(p.handled for p in phases)}/{sum(p.sent for p in phases)}"
    per = cpu_per_message(phases)
    tail = max(p.tail for p in phases)
    return (
        f"{label:<14}{ok:>9}{rate(phases):>7.1f}{quantile(latencies, 0.5):>8.0f}"
        f"{quantile(latencies, 0.95):>8.0f}{tail:>7.1f}{per['stack']:>8.1f}"
        + "".join(f"{per.get(name, 0.0):>10.1f}" for name in (*COLUMNS, "model", "client"))
    )


def introduce(idle_rate: float) -> None:
    """Print what is measured and the table's header."""
    print(
        f"runtime replicas: {ROOMS} rooms in flight, {MESSAGES} messages per room per phase"
        f" (after 1 warm-up each), phases interleaved; idle stack {idle_rate:.0f} CPU ms/s;"
        f" model answers after {os.environ.get('BENCH_MODEL_DELAY') or 0} s"
    )
    print(
        "tail: seconds until the stack was idle after the last reply (queued embedding and"
        " evaluator work);\nCPU/msg: CPU ms per message of the stack (nats-server .. evaluator),"
        " then of each part"
    )
    print(HEADER, flush=True)


def conclude(phases: list[Phase]) -> None:
    """Print each replica count over its rounds, how 2 compares with 1, and what failed."""
    by_count: dict[int, list[Phase]] = defaultdict(list)
    for p in phases:
        by_count[p.replicas].append(p)
    for count, group in sorted(by_count.items()):
        print(row(f"{count} replica all", group))
    if {1, 2} <= by_count.keys():
        one, two = by_count[1], by_count[2]
        cost = cpu_per_message(two)["stack"] / cpu_per_message(one)["stack"]
        print(
            f"2 replicas vs 1: messages/s x{rate(two) / rate(one):.2f},"
            f" stack CPU per message x{cost:.2f}"
            " (msg/s: median of rounds; latency, CPU: pooled)"
        )
    for error, count in sum((p.errors for p in phases), Counter[str]()).most_common():
        print(f"failed {count}x: {error}")


# -- main ------------------------------------------------------------------------


async def run(stack: Stack) -> list[Phase]:
    """Measure the idle stack, then the phases, 1 and 2 replicas in turn, within the budget."""
    began = time.monotonic()
    before = cpu_ms(stack.labels)
    await asyncio.sleep(2)
    idle_rate = stack_total(used(before, cpu_ms(stack.labels))) / 2
    stack.idle_ms = idle_rate * IDLE_INTERVAL * 1.5 + 30
    introduce(idle_rate)
    phases: list[Phase] = []
    for round_ in range(1, ROUNDS + 1):
        for replicas in (1, 2):
            if round_ > MIN_ROUNDS and time.monotonic() - began > BUDGET:
                print(f"budget of {BUDGET:g}s spent: stopping before {replicas} replica r{round_}")
                return phases
            stack.scale(replicas)
            measured = await phase(stack, replicas, round_)
            print(row(f"{replicas} replica r{round_}", [measured]), flush=True)
            phases.append(measured)
    return phases


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="elizamesh-bench-replicas-"))
    logs = folder / "logs"
    logs.mkdir()
    character = folder / "eliza.json"
    character.write_text(json.dumps({"name": "Eliza", "id": AGENT}))
    model_url = folder / "model-url"
    port = free_port()
    with NatsServer() as nats, ExitStack() as services:
        env = {
            "NATS_URL": nats.url,
            "DATABASE_URL": f"sqlite:///{folder / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
            "OPENAI_API_KEY": "sk-bench",
            "API_PORT": str(port),
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
            "TASK_TICK_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
        }
        stack = Stack(env=env, logs=logs, base_url=f"http://127.0.0.1:{port}")
        stack.bring_up(services, model_url, port)
        print(f"stack up (logs in {logs}); measuring", flush=True)
        phases = asyncio.run(run(stack))
    conclude(phases)


if __name__ == "__main__":
    main()
