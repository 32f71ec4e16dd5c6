"""The walking skeleton: gateway and runtime as separate processes, talking only over NATS."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from contracts import Subjects
from shared.natsserver import free_port, wait_for_port
from shared.processes import service_process

pytestmark = pytest.mark.e2e

HELLO = {"entity_id": "user-1", "room_id": "room-1", "content": {"text": "hello over the wire"}}


@dataclass(frozen=True)
class Stack:
    base_url: str
    runtime: subprocess.Popen[bytes]
    logs: Path


@pytest.fixture
def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    env = {
        "NATS_URL": nats_url,
        "ELIZA_NS": subjects.namespace,
        "API_PORT": str(port),
        "REQUEST_TIMEOUT": "3",
        "LOG_LEVEL": "INFO",
    }
    with ExitStack() as processes:
        runtime = processes.enter_context(service_process("runtime", env, log_dir=tmp_path))
        processes.enter_context(service_process("gateway", env, log_dir=tmp_path))
        wait_for_port("127.0.0.1", port, timeout=30)
        yield Stack(f"http://127.0.0.1:{port}", runtime, tmp_path)


def post(stack: Stack, agent_id: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/v1/agents/{agent_id}/messages",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
    )


def post_hello(stack: Stack) -> httpx.Response:
    return httpx.post(f"{stack.base_url}/v1/agents/agent-1/messages", json=HELLO, timeout=10)


def test_a_message_posted_to_the_gateway_is_answered_by_the_runtime_process(stack: Stack) -> None:
    response = post_hello(stack)
    assert response.status_code == 200, (stack.logs / "gateway.log").read_text()
    body = response.json()
    assert body["agent_id"] == "agent-1"
    assert body["response_content"]["text"] == "hello over the wire"


@pytest.mark.parametrize(
    ("agent_id", "body"),
    [
        ("agent-1", b"this is not json"),
        ("agent-1", b'{"entity_id": "u", "content": {"text": "no room"}}'),
        ("agent 1", b'{"entity_id": "u", "room_id": "r", "content": {}}'),
        ("agent-1", b'{"entity_id": "u", "room_id": "r", "content": {"text": 42}}'),
    ],
)
def test_bad_input_gets_a_typed_400_and_both_services_stay_up(
    stack: Stack, agent_id: str, body: bytes
) -> None:
    response = post(stack, agent_id, body)
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    assert stack.runtime.poll() is None
    assert post_hello(stack).status_code == 200


def test_when_the_runtime_is_gone_the_gateway_says_unavailable(stack: Stack) -> None:
    stack.runtime.terminate()
    stack.runtime.wait(timeout=15)
    response = post_hello(stack)
    assert response.status_code == 503
    assert response.json()["code"] == "unavailable"
