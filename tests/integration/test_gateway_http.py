"""The gateway's HTTP API in front of a real runtime on a real nats-server."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from faststream.nats import NatsBroker

from contracts import Subjects
from services.gateway.main import create_app
from shared.bus import start_serving
from shared.config import Settings
from shared.natsserver import free_port, wait_for_port
from tests.echo import echo_broker

HELLO = {"entity_id": "user-1", "room_id": "room-1", "content": {"text": "hello"}}


@pytest.fixture
def settings(nats_url: str, subjects: Subjects) -> Settings:
    return Settings(nats_url=nats_url, eliza_ns=subjects.namespace, request_timeout=2)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = echo_broker(settings)
    async with broker:
        await start_serving(broker)
        yield broker


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway served by uvicorn on a free port, in this test's event loop.

    Litestar's test clients run the app in a thread of their own and block this
    loop while they wait, which would starve the in-process runtime.
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await serving


async def test_posting_a_message_returns_the_agents_reply(
    runtime: NatsBroker,
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/agents/agent-1/messages", json=HELLO)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "agent.message.handled.v1"
    assert body["agent_id"] == "agent-1"
    assert body["did_respond"] is True
    assert body["response_content"]["text"] == "hello"


class CountingExecutor(ThreadPoolExecutor):
    """The loop's default executor, counting what is handed to a worker thread."""

    handed: int = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.handed += 1
        return super().submit(fn, *args, **kwargs)


@pytest.mark.parametrize("keys", ["", "k1"])
async def test_a_message_goes_through_the_gateway_without_a_worker_thread(
    runtime: NatsBroker, settings: Settings, keys: str
) -> None:
    # A thread hop per request (a plain-function guard or dependency, run by
    # Litestar in a worker thread) cost the gateway a fifth of its CPU.
    port = free_port()
    locked = Settings(
        nats_url=settings.nats_url,
        eliza_ns=settings.eliza_ns,
        request_timeout=2,
        gateway_api_keys=keys,
    )
    app = create_app(locked)
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
    loop = asyncio.get_running_loop()
    headers = {"X-API-Key": keys} if keys else {}
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            warm = await http.post("/v1/agents/agent-1/messages", json=HELLO, headers=headers)
            assert warm.status_code == 200, warm.text  # connected (its address looked up)
            counting = CountingExecutor(max_workers=1)
            loop.set_default_executor(counting)
            for _ in range(3):
                answer = await http.post("/v1/agents/agent-1/messages", json=HELLO, headers=headers)
                assert answer.status_code == 200, answer.text
            refused = await http.post("/v1/agents/agent-1/messages", json=HELLO)
            assert refused.status_code == (401 if keys else 200)
    finally:
        server.should_exit = True
        await serving
    assert counting.handed == 0


@pytest.mark.parametrize(
    ("path", "body", "field", "message"),
    [
        ("agent-1", b'{"entity_id": "u",', None, "malformed JSON"),
        (
            "agent-1",
            b'{"entity_id": "u", "content": {}}',
            "room_id",
            "missing required field `room_id`",
        ),
        ("bad.agent", b'{"entity_id": "u", "room_id": "r", "content": {}}', "agent_id", "regex"),
        ("agent-1", b'{"entity_id": "u/1", "room_id": "r", "content": {}}', "entity_id", "regex"),
    ],
)
async def test_bad_input_is_a_400_with_a_clear_message_and_the_gateway_keeps_serving(
    runtime: NatsBroker,
    http: httpx.AsyncClient,
    path: str,
    body: bytes,
    field: str | None,
    message: str,
) -> None:
    response = await http.post(
        f"/v1/agents/{path}/messages", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error.v1"
    assert error["code"] == "bad_request"
    text = error["details"][field] if field else error["message"]
    assert message in text
    again = await http.post("/v1/agents/agent-1/messages", json=HELLO)
    assert again.status_code == 200


async def test_with_no_runtime_listening_the_gateway_answers_503(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/v1/agents/agent-1/messages", json=HELLO)
    assert response.status_code == 503
    error = response.json()
    assert error["code"] == "unavailable"
    assert error["retryable"] is True


async def test_health_reports_the_nats_connection(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/health")
    assert response.json() == {"alive": True, "nats_connected": True}


@pytest.fixture
async def locked(nats_url: str, subjects: Subjects) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with GATEWAY_API_KEYS set."""
    settings = Settings(
        nats_url=nats_url, eliza_ns=subjects.namespace, request_timeout=2, gateway_api_keys="k1,k2"
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await serving


async def test_with_api_keys_set_a_request_without_a_valid_key_is_a_typed_401(
    runtime: NatsBroker, locked: httpx.AsyncClient
) -> None:
    missing = await locked.post("/v1/agents/agent-1/messages", json=HELLO)
    wrong = await locked.post(
        "/v1/agents/agent-1/messages", json=HELLO, headers={"x-api-key": "nope"}
    )
    assert missing.status_code == wrong.status_code == 401
    assert missing.json()["code"] == "unauthorized"
    bearer = await locked.post(
        "/v1/agents/agent-1/messages", json=HELLO, headers={"authorization": "Bearer k2"}
    )
    assert bearer.status_code == 200
    assert (await locked.get("/v1/health")).status_code == 200  # probes need no key
    assert (await locked.get("/")).status_code == 200  # nor does the chat page


async def test_every_reply_carries_a_request_id_and_errors_quote_it(
    runtime: NatsBroker, http: httpx.AsyncClient
) -> None:
    given = await http.post(
        "/v1/agents/agent-1/messages", json=HELLO, headers={"x-request-id": "req-42"}
    )
    assert given.headers["x-request-id"] == "req-42"
    fresh = await http.post("/v1/agents/bad.id/messages", json=HELLO)
    assert len(fresh.headers["x-request-id"]) >= 32
    assert fresh.json()["correlation_id"] == fresh.headers["x-request-id"]


async def test_every_reply_names_its_trace(runtime: NatsBroker, http: httpx.AsyncClient) -> None:
    first = await http.post("/v1/agents/agent-1/messages", json=HELLO)
    second = await http.post("/v1/agents/agent-1/messages", json=HELLO)
    for reply in (first, second):
        assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-trace-id"])
    assert first.headers["x-trace-id"] != second.headers["x-trace-id"]


async def test_the_chat_page_is_served_at_the_root(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/messages/stream" in page.text


async def test_the_openapi_document_describes_every_route(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/schema/openapi.json")).json()
    assert {
        "/v1/agents",
        "/v1/agents/{agent_id}",
        "/v1/agents/{agent_id}/messages",
        "/v1/agents/{agent_id}/messages/stream",
        "/v1/agents/{agent_id}/start",
        "/v1/agents/{agent_id}/stop",
        "/v1/health",
        "/v1/ready",
    } <= set(spec["paths"])
    assert (await http.get("/schema")).status_code == 200  # the browsable page
