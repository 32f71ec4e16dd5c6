"""A stack of real processes that the fault suite can break: its own NATS, Postgres and model.

Everything here is private to one run: a nats-server on a free port whose
JetStream store outlives a restart, a Postgres cluster made with ``initdb``
in a temporary folder (stopped and started with ``pg_ctl``), the fake
OpenAI-compatible model in this process, the memory service and the
runtime replicas as ``python -m services.<name>``. Nothing touches the
shared servers the other tests use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from contracts import Subjects
from shared.natsserver import free_port, nats_server_binary, wait_for_port
from shared.processes import service_process
from tests.fake_openai import FakeOpenAI, fake_openai_server

AGENT = "eliza"
TOKEN = re.compile(r"Q([0-9a-f]{32})Q")
"""How a message names itself in its text, so the model server can count calls per message."""

PLAN = (
    "<response><thought>Answer it.</thought><actions>REPLY</actions>"
    "<providers></providers><text>Noted.</text></response>"
)


def token(message_id: str) -> str:
    """The text of the message ``message_id`` (a uuid4 hex): the model server finds it."""
    return f"Q{message_id}Q please answer"


def _tokens(body: dict[str, Any]) -> list[str]:
    """The messages a chat request names, in the prompt's order."""
    return TOKEN.findall(str((body.get("messages") or [{}])[-1].get("content", "")))


def _named(body: dict[str, Any]) -> str | None:
    """The message a chat request is about: the recent messages come oldest first."""
    named = _tokens(body)
    return named[-1] if named else None


@dataclass
class ModelCalls:
    """The fake model's record, per message: calls asked, answers delivered, the first call.

    An answer is delivered when it was written to the caller; a call whose
    caller died while the model was thinking (a killed replica) was asked
    but never answered, and nothing can reuse it.
    """

    model: FakeOpenAI
    asked: Counter[str] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)
    delivered_at: dict[str, list[float]] = field(default_factory=dict)
    first_call: dict[str, float] = field(default_factory=dict)
    prompts: list[tuple[float, list[str]]] = field(default_factory=list)
    """Every call: when, and the messages its prompt names in order."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.model.responder = self.respond
        self._leave = self.model.leave
        self.model.leave = self.leave  # type: ignore[method-assign]

    def respond(self, body: dict[str, Any]) -> str:
        """Count the call against the message it answers and answer with a plain REPLY plan."""
        with self._lock:
            self.prompts.append((time.monotonic(), _tokens(body)))
        if (message := _named(body)) is not None:
            with self._lock:
                self.asked[message] += 1
                self.first_call.setdefault(message, time.monotonic())
        return PLAN

    def leave(self, body: dict[str, Any]) -> None:
        """Count the answer as delivered unless writing it failed (the server calls it last)."""
        self._leave(body)
        # Called from the server's ``finally``: an exception in flight is a failed write.
        if sys.exc_info()[0] is None and (message := _named(body)) is not None:
            with self._lock:
                self.delivered[message] += 1
                self.delivered_at.setdefault(message, []).append(time.monotonic())


class NatsProcess:
    """A nats-server with JetStream on a fixed port and store, so it can be restarted."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = root / "jetstream"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it (again, on the same port and store) and wait for its port."""
        self.process = subprocess.Popen(
            [
                str(nats_server_binary()),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.store),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, timeout=10)

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM), as an orchestrator's restart does."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)
        self.process = None


class PostgresCluster:
    """A Postgres cluster of its own: ``initdb`` in ``root``, started and stopped with ``pg_ctl``.

    As root the tools run as the ``postgres`` user (``initdb`` refuses root),
    and the cluster lives in a folder of its own under the system's temporary
    folder, which that user can reach (``root`` may be inside private ones).
    ``close`` stops it and deletes it.
    """

    def __init__(self, root: Path) -> None:
        if os.geteuid() == 0:
            root = Path(tempfile.mkdtemp(prefix="elizamesh-pg-"))
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            root.chmod(0o777)
        else:
            root.mkdir()

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True)

    def init(self) -> None:
        """Create the cluster (trust authentication, loopback only)."""
        initdb = shutil.which("initdb") or "initdb"
        self._run(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.data.parent / "postgres.log")
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        wait_for_port("127.0.0.1", self.port, timeout=30)

    def stop(self) -> None:
        """Stop it at once (``-m fast``: open sessions are cut, as in an outage)."""
        pg_ctl = shutil.which("pg_ctl") or "pg_ctl"
        with_status = subprocess.run(
            [*self._as, pg_ctl, "-D", str(self.data), "status"], capture_output=True, check=False
        )
        if with_status.returncode == 0:
            self._run(pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        """Stop it and delete its files."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Stack:
    """The running stack: its servers, its processes by name, and where their logs go."""

    root: Path
    nats: NatsProcess
    postgres: PostgresCluster
    model: FakeOpenAI
    calls: ModelCalls
    subjects: Subjects
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]]
    _stack: ExitStack
    killed_at: dict[str, float] = field(default_factory=dict)
    """When each process was sent ``kill -9`` (monotonic seconds)."""

    def start(self, name: str, service: str) -> subprocess.Popen[bytes]:
        """Start ``python -m services.<service>`` as ``name`` (its log: ``<root>/<name>.log``)."""
        log_dir = self.root / name
        log_dir.mkdir(exist_ok=True)
        process = self._stack.enter_context(service_process(service, self.env, log_dir=log_dir))
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """``kill -9`` the process ``name``."""
        process = self.processes.pop(name)
        self.killed_at[name] = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def died(self) -> list[str]:
        """The processes that exited on their own."""
        return [name for name, p in self.processes.items() if p.poll() is not None]


@contextmanager
def stack(root: Path, *, replicas: int = 2, model_delay: float = 0.05) -> Iterator[Stack]:
    """Bring up NATS, Postgres, the model, the memory service and ``replicas`` runtimes."""
    character = root / "eliza.json"
    character.write_text(json.dumps({"name": "Eliza", "id": AGENT, "bio": ["A helpful agent."]}))
    nats_server = NatsProcess(root)
    postgres = PostgresCluster(root / "pg")
    with ExitStack() as processes:
        processes.callback(postgres.close)
        postgres.init()
        postgres.start()
        nats_server.start()
        processes.callback(nats_server.stop)
        model = processes.enter_context(fake_openai_server())
        calls = ModelCalls(model)
        model.delay = model_delay
        subjects = Subjects(f"f{uuid.uuid4().hex[:10]}")
        env = {
            "NATS_URL": nats_server.url,
            "ELIZA_NS": subjects.namespace,
            "DATABASE_URL": postgres.url,
            "AGENT_CHARACTERS": str(character),
            "OPENAI_BASE_URL": model.url,
            "OPENAI_API_KEY": "sk-test",
            "TASK_TICK_SECONDS": "3600",
            "EVALUATORS": "remote",
            "EMBEDDINGS": "remote",
            "LOG_LEVEL": "INFO",
        }
        running = Stack(root, nats_server, postgres, model, calls, subjects, env, {}, processes)
        running.start("memory", "memory")
        for index in range(replicas):
            running.start(f"runtime-{index}", "runtime")
        yield running


async def replies_stored(dsn: str) -> tuple[dict[str, int], set[str]]:
    """Per message id, how many replies the agent stored for it; and the ids of stored messages."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "select id, entity_id, agent_id, content from memories where type = 'messages'"
        )
    finally:
        await connection.close()
    replies: dict[str, int] = defaultdict(int)
    messages: set[str] = set()
    for row in rows:
        content = row["content"]
        content = json.loads(content) if isinstance(content, str) else content
        if row["entity_id"] == row["agent_id"]:
            if answered := content.get("in_reply_to") or content.get("inReplyTo"):
                replies[str(answered)] += 1
        else:
            messages.add(str(row["id"]))
    return dict(replies), messages
