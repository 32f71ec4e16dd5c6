"""An agent added over ``POST /v1/agents`` with secrets answers on both replicas and after restarts.

Real processes: the memory service, two runtime replicas and the gateway,
with ``ELIZAMESH_SECRET_KEY`` set and no model settings in their environment.
The agent's model (the real ``openai`` plugin) reaches the fake OpenAI server
only through its own secrets (the key, and the server's address in
``settings.secrets``), so a replica that lacks them cannot answer.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import Subjects
from shared.natsserver import free_port, wait_for_port
from shared.processes import service_process, stop
from tests.e2e.test_distributed import _delete_streams
from tests.fake_openai import FakeOpenAI, fake_openai_server
from tests.scripted import plan

pytestmark = pytest.mark.e2e

AGENT = "secretive"
API_KEY = "sk-e2e-agent-secret-9876543210"
STARTED_HERE = "starting stored agent"
READY = "started successfully"
TURNS = 16  # over two replicas, each takes some: all on one has odds 2 in 65,536


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    logs: Path
    processes: ExitStack
    runtimes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    generation: int = 0

    def start_runtimes(self) -> list[Path]:
        """Start two runtime replicas; return their log files."""
        self.generation += 1
        logs = []
        for replica in ("r0", "r1"):
            folder = self.logs / f"{replica}-{self.generation}"
            folder.mkdir()
            runtime = service_process("runtime", self.env, log_dir=folder)
            self.runtimes.append(self.processes.enter_context(runtime))
            logs.append(folder / "runtime.log")
        return logs

    def stop_runtimes(self) -> None:
        for runtime in self.runtimes:
            stop(runtime)
        self.runtimes.clear()

    def say(self, text: str, room: str) -> httpx.Response:
        body = {"entity_id": f"user-{room}", "room_id": room, "content": {"text": text}}
        return httpx.post(f"{self.base_url}/v1/agents/{AGENT}/messages", json=body, timeout=40)


@pytest.fixture
def stack(nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SECRET_SALT", "AGENT_CHARACTERS"):
        monkeypatch.delenv(name, raising=False)
    subjects = Subjects(f"s{uuid.uuid4().hex[:10]}")
    port = free_port()
    env = {
        "NATS_URL": nats_url,
        "ELIZA_NS": subjects.namespace,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'memory.db'}",
        "ELIZAMESH_SECRET_KEY": "the operator's e2e passphrase",
        "AGENT_PLUGINS": "openai",
        "API_PORT": str(port),
        "REQUEST_TIMEOUT": "30",
        "TASK_TICK_SECONDS": "3600",
        "LOG_LEVEL": "INFO",
    }
    with ExitStack() as processes:
        processes.enter_context(service_process("memory", env, log_dir=tmp_path))
        processes.enter_context(service_process("gateway", env, log_dir=tmp_path))
        wait_for_port("127.0.0.1", port, timeout=30)
        yield Stack(f"http://127.0.0.1:{port}", env, tmp_path, processes)
    asyncio.run(_delete_streams(nats_url, subjects))


def character(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "id": AGENT,
        "name": "Secretive",
        "bio": ["Keeps secrets."],
        "plugins": ["openai"],
        "secrets": {"OPENAI_API_KEY": API_KEY},
        "settings": {"secrets": {"OPENAI_BASE_URL": fake.url}},
    }


def until_started(logs: list[Path]) -> None:
    """Wait until every replica of ``logs`` has subscribed (FastStream says it started)."""
    for _ in range(300):
        if all(log.exists() and READY in log.read_text() for log in logs):
            return
        time.sleep(0.2)
    raise TimeoutError(f"a runtime replica did not start: {logs}")


def turns(stack: Stack, label: str) -> list[str]:
    """Send ``TURNS`` messages, each in a room of its own; return the failures."""
    failed = []
    for n in range(TURNS):
        response = stack.say(f"{label} {n}", room=f"{label}-{n}")
        body = response.json()
        if response.status_code != 200 or not body.get("did_respond"):
            failed.append(f"{response.status_code}: {body}")
    return failed


@pytest.mark.timeout(240)
def test_an_api_added_agent_with_secrets_answers_on_both_replicas_and_after_a_restart(
    stack: Stack,
) -> None:
    with fake_openai_server() as fake:
        fake.default = plan("Answered with my own key.")
        first_logs = stack.start_runtimes()
        until_started(first_logs)
        added = httpx.post(f"{stack.base_url}/v1/agents", json={"character": character(fake)})
        assert added.status_code == 201, added.text
        listed = httpx.get(f"{stack.base_url}/v1/agents").text
        assert API_KEY not in listed
        assert fake.url not in listed

        assert turns(stack, "before") == []
        # The replica that did not take the request started the agent from storage.
        assert any(STARTED_HERE in log.read_text() for log in first_logs)

        stack.stop_runtimes()
        second_logs = stack.start_runtimes()
        until_started(second_logs)
        assert turns(stack, "after") == []
        # After the restart, both new replicas started it from storage, with its secrets.
        assert [STARTED_HERE in log.read_text() for log in second_logs] == [True, True]

    every_log = [*stack.logs.glob("*.log"), *stack.logs.glob("*/*.log")]
    assert [log.name for log in every_log if API_KEY in log.read_text()] == []
