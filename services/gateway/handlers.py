"""HTTP routes of the gateway: translate HTTP to typed NATS requests and back."""

from __future__ import annotations

from typing import Annotated, Any

from faststream.nats import NatsBroker
from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, SerializationException
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from contracts import (
    ID_PATTERN,
    STATUS_BY_CODE,
    Error,
    ErrorCode,
    HandleMessage,
    HandleMessageResult,
)
from contracts.events import AgentList, ListAgents
from shared.bus import request
from shared.config import Settings
from shared.errors import ServiceError

AgentId = Annotated[str, Parameter(pattern=ID_PATTERN, description="The agent to talk to.")]


@post("/v1/agents/{agent_id:str}/messages", status_code=200)
async def send_message(
    agent_id: AgentId,
    data: JSONBody[HandleMessage],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[Settings],
) -> HandleMessageResult:
    """Send one message to an agent and wait for its reply."""
    return await request(
        broker,
        settings.subjects.message_handle(agent_id),
        data,
        HandleMessageResult,
        timeout=settings.request_timeout,
    )


@get("/v1/agents")
async def list_agents(
    broker: NamedDependency[NatsBroker], settings: NamedDependency[Settings]
) -> AgentList:
    """The agents the runtime hosts (answered by one runtime replica)."""
    return await request(
        broker,
        settings.subjects.agents_list,
        ListAgents(),
        AgentList,
        timeout=settings.request_timeout,
    )


@get("/v1/health")
async def health(broker: NamedDependency[NatsBroker]) -> dict[str, bool]:
    """Liveness of the gateway and its NATS connection."""
    return {"alive": True, "nats_connected": await broker.ping(timeout=1.0)}


def service_error_response(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Error]:
    """Answer a failed NATS request with its ``Error`` and the matching HTTP status."""
    error = exc.to_error(request.headers.get("x-request-id"))
    return Response(error, status_code=STATUS_BY_CODE[error.code])


def http_error_response(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Error]:
    """Answer Litestar's own errors (bad JSON, bad path, missing field) as an ``Error``."""
    code = next((c for c, s in STATUS_BY_CODE.items() if s == exc.status_code), None)
    if code is None:
        code = (
            ErrorCode.INTERNAL
            if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR
            else ErrorCode.BAD_REQUEST
        )
    details = {
        str(item.get("key", i)): str(item.get("message", item))
        for i, item in enumerate(exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    }
    message = exc.detail
    if isinstance(exc.__cause__, SerializationException):
        message = f"malformed JSON: {message}"
    error = Error(
        code=code,
        message=message,
        details=details,
        correlation_id=request.headers.get("x-request-id"),
    )
    return Response(error, status_code=exc.status_code)
