"""A room's history over HTTP (paged, typed errors) and the gateway's CORS setting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts import Subjects
from shared.config import GatewaySettings
from tests.gateway_stack import AGENT, GatewayStack, gateway_stack
from tests.scripted import ScriptedModel, plan

ROOM = "history-room"


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    model = ScriptedModel(default=plan("noted"))
    async with gateway_stack(
        nats_url, subjects, tmp_path, model, gateway_cors_origins="https://chat.example"
    ) as running:
        yield running


@pytest.fixture
async def http(stack: GatewayStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


async def test_a_rooms_history_comes_in_pages_newest_first_each_oldest_first(
    http: httpx.AsyncClient,
) -> None:
    for n in range(3):
        body = {"entity_id": "user-1", "room_id": ROOM, "content": {"text": f"message {n}"}}
        sent = await http.post(f"/v1/agents/{AGENT}/messages", json=body)
        assert sent.status_code == 200, sent.text
    path = f"/v1/agents/{AGENT}/rooms/{ROOM}/messages"
    newest = (await http.get(path, params={"limit": 4})).json()
    roles = [m["role"] for m in newest["messages"]]
    assert roles == ["user", "agent", "user", "agent"]
    texts = [m["text"] for m in newest["messages"]]
    assert texts == ["message 1", "noted", "message 2", "noted"]
    assert newest["next_offset"] == 4
    older = (await http.get(path, params={"limit": 4, "offset": 4})).json()
    assert [m["text"] for m in older["messages"]] == ["message 0", "noted"]
    assert older["next_offset"] is None


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        (f"/v1/agents/{AGENT}/rooms/bad.room/messages", 400, "room_id"),
        (f"/v1/agents/{AGENT}/rooms/{ROOM}/messages?limit=0", 400, "limit"),
        (f"/v1/agents/{AGENT}/rooms/{ROOM}/messages?limit=x", 400, "limit"),
        (f"/v1/agents/{AGENT}/rooms/{ROOM}/messages?offset=-1", 400, "offset"),
        (f"/v1/agents/nobody/rooms/{ROOM}/messages", 404, "agent_id"),
    ],
)
async def test_a_bad_history_request_is_a_typed_error_naming_the_field(
    http: httpx.AsyncClient, path: str, status: int, field: str
) -> None:
    response = await http.get(path)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error.v1"
    assert field in error["details"]


async def test_cors_answers_only_the_configured_origin(http: httpx.AsyncClient) -> None:
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "x"}
    allowed = await http.options(
        "/v1/agents", headers={"origin": "https://chat.example", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
    other = await http.get("/v1/agents", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default() -> None:
    assert GatewaySettings.from_env({}).cors_origins == []
    assert GatewaySettings.from_env({"GATEWAY_CORS_ORIGINS": "a, b"}).cors_origins == ["a", "b"]
