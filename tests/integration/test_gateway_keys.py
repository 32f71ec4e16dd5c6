"""The gateway keeps its keys: every rule of API keys, and requests that never finish arriving."""

from __future__ import annotations

import asyncio
import hmac
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from faststream.nats import NatsBroker
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from contracts import Subjects
from services.gateway import handlers
from services.gateway.main import create_app
from services.gateway.server import server_config
from shared.bus import start_serving
from shared.config import Settings
from shared.natsserver import free_port, wait_for_port
from tests.echo import echo_broker

HELLO = {"entity_id": "user-1", "room_id": "room-1", "content": {"text": "hello"}}
MESSAGES = "/v1/agents/agent-1/messages"
READ_TIMEOUT = 0.5


@pytest.fixture
def settings(nats_url: str, subjects: Subjects) -> Settings:
    return Settings(
        nats_url=nats_url, eliza_ns=subjects.namespace, request_timeout=2, gateway_api_keys="k1,k2"
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[NatsBroker]:
    broker = echo_broker(settings)
    async with broker:
        await start_serving(broker)
        yield broker


@pytest.fixture
async def port(settings: Settings) -> AsyncIterator[int]:
    """The gateway as ``python -m services.gateway`` serves it, with keys k1 and k2."""
    port = free_port()
    config = server_config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        read_timeout=READ_TIMEOUT,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await asyncio.to_thread(wait_for_port, "127.0.0.1", port, timeout=10)
    try:
        yield port
    finally:
        server.should_exit = True
        await serving


@pytest.fixture
async def http(port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        yield client


async def test_ready_without_a_key_says_only_whether_the_stack_is_ready(
    http: httpx.AsyncClient,
) -> None:
    anonymous = await http.get("/v1/ready")
    assert anonymous.status_code == 503  # nothing but the gateway runs
    assert anonymous.json() == {"ready": False}
    keyed = await http.get("/v1/ready", headers={"x-api-key": "k1"})
    assert keyed.status_code == 503
    assert keyed.json()["problems"]
    assert "services" in keyed.json()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"authorization": "Bearer k1"}, 200),
        ({"authorization": "bearer k2"}, 200),
        ({"authorization": "BEARER   k1"}, 200),
        ({"x-api-key": "k2"}, 200),
        ({"X-API-Key": "k1"}, 200),
        ({"x-api-key": "k3"}, 401),
        ({"x-api-key": ""}, 401),
        ({"x-api-key": "k3", "authorization": "Bearer k1"}, 401),  # a wrong key is not rescued
        ({"authorization": "k1"}, 401),  # a bare key is refused, not guessed at
        ({"authorization": "Basic k1"}, 401),
        ({"authorization": "Bearer k3"}, 401),
        ({"authorization": "Bearer"}, 401),
        ({"x-api-key": "k1 k2"}, 401),
        ({}, 401),
    ],
)
async def test_a_key_is_taken_from_bearer_in_any_case_or_x_api_key_and_nothing_else(
    runtime: NatsBroker, http: httpx.AsyncClient, headers: dict[str, str], status: int
) -> None:
    response = await http.post(MESSAGES, json=HELLO, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["code"] == "unauthorized"


@pytest.mark.parametrize("path", ["/v1/agents", "/v1/ready", "/schema/openapi.json"])
async def test_every_route_but_the_page_and_health_needs_a_key_for_its_details(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.get(path)
    assert response.status_code in {401, 503}
    assert "services" not in response.text
    assert (await http.get("/v1/health")).status_code == 200
    assert (await http.get("/")).status_code == 200


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    keys = frozenset({"k1", "k2", "a-much-longer-key"})
    assert handlers.key_is_valid("k1", keys)
    assert len(compared) == len(keys)  # no early exit on the match
    assert {len(a) for a, _ in compared} == {len(b) for _, b in compared} == {32}
    assert not handlers.key_is_valid("k", keys)
    assert not handlers.key_is_valid("", frozenset({""}))


async def test_a_websocket_without_a_valid_key_is_refused_with_401_as_http_is(port: int) -> None:
    url = f"ws://127.0.0.1:{port}/v1/agents/agent-1/ws"
    for refused, headers in (
        (url, None),
        (f"{url}?api_key=nope", None),
        (url, {"X-API-Key": "k3"}),
    ):
        with pytest.raises(InvalidStatus) as caught:
            async with connect(refused, additional_headers=headers):
                pass
        assert caught.value.response.status_code == 401
        assert b"unauthorized" in caught.value.response.body


@pytest.mark.parametrize(
    ("suffix", "subprotocols", "headers"),
    [
        ("?api_key=k1", None, None),
        ("", ["elizamesh", "bearer.k2"], None),
        ("", None, {"Authorization": "Bearer k1"}),
        ("", None, {"X-API-Key": "k2"}),
    ],
    ids=["query", "subprotocol", "header", "x-api-key"],
)
async def test_a_browser_can_send_a_websocket_key_in_the_query_or_a_subprotocol(
    runtime: NatsBroker,
    port: int,
    suffix: str,
    subprotocols: list[str] | None,
    headers: dict[str, str] | None,
) -> None:
    url = f"ws://127.0.0.1:{port}/v1/agents/agent-1/ws{suffix}"
    async with connect(
        url,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        additional_headers=headers,
    ) as socket_:
        if subprotocols:
            assert socket_.subprotocol == "elizamesh"
        await socket_.send(
            '{"entity_id": "user-1", "room_id": "room-1", "content": {"text": "hi"}}'
        )
        frame = await asyncio.wait_for(socket_.recv(), 10)
        assert '"event"' in str(frame)


def _half_sent(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(data)
    sock.settimeout(5)
    return sock


async def test_requests_that_never_finish_arriving_are_dropped_after_the_read_timeout(
    http: httpx.AsyncClient, port: int
) -> None:
    heads = [_half_sent(port, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n") for _ in range(50)]
    bodies = [
        _half_sent(port, b"POST " + MESSAGES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                   b"Content-Length: 100\r\nX-API-Key: k1\r\n\r\n{\"entity")
        for _ in range(10)
    ]  # fmt: skip
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    await asyncio.sleep(READ_TIMEOUT * 4)
    for sock in [*heads, *bodies, *silent]:
        sock.settimeout(5)
        assert await asyncio.to_thread(sock.recv, 1024) == b""  # closed by the server
        sock.close()
    # A whole request on a kept-alive connection is still answered, and the next one too.
    assert (await http.get("/v1/health")).status_code == 200
    await asyncio.sleep(READ_TIMEOUT * 2)
    assert (await http.get("/v1/health")).status_code == 200


async def test_a_websocket_outlives_the_read_timeout(runtime: NatsBroker, port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/v1/agents/agent-1/ws?api_key=k1") as socket_:
        await asyncio.sleep(READ_TIMEOUT * 3)
        await socket_.send(
            '{"entity_id": "user-1", "room_id": "room-1", "content": {"text": "hi"}}'
        )
        assert '"event"' in str(await asyncio.wait_for(socket_.recv(), 10))
