"""HTTP routes of the gateway: translate HTTP to typed NATS requests and back."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, cast
from urllib.parse import parse_qsl, urlencode

import msgspec
from faststream.nats import NatsBroker
from litestar import MediaType, Request, Response, WebSocket, delete, get, post, websocket
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, SerializationException
from litestar.handlers import BaseRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    WebSocketResponseBodyEvent,
    WebSocketResponseStartEvent,
)
from opentelemetry import trace

from contracts import (
    ID_PATTERN,
    STATUS_BY_CODE,
    Error,
    ErrorCode,
    HandleMessage,
    HandleMessageResult,
    new_id,
)
from contracts.control import AddAgent, AgentCommand, AgentStatus
from contracts.events import AgentList, ListAgents, RunChunk, RunEnded
from contracts.subjects import InvalidIdError, run_owner
from services.gateway.apidoc import PUBLIC, errors
from services.gateway.bodies import (
    Readiness,
    RoomMessage,
    RoomMessages,
    StackReadiness,
    decode_body,
)
from services.gateway.turns import RUN_OWNER, paced, resume_turn, start_turn
from shared.bus import request as bus_request
from shared.config import GatewaySettings
from shared.errors import BadRequest, NotFound, ServiceError, Unauthorized
from shared.health import gather_health, stack_ready
from shared.runs import RunFollower, follow_run
from shared.storage.client import memory_client

READY_NEEDS = ("runtime", "memory")


AgentId = Annotated[str, Parameter(pattern=ID_PATTERN, description="The agent to talk to.")]
CHAT_PAGE = Path(__file__).with_name("chat.html")
SSE_DOC = (
    "Server-sent events: chunk, response, then completed or failed (or error); "
    "each with id <run_id>:<n>; comments keep the stream alive."
)


@post("/v1/agents/{agent_id:str}/messages", status_code=200, responses=errors(404, 409, 503))
async def send_message(
    agent_id: AgentId,
    request: Request[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> HandleMessageResult:
    """Send one message (a ``HandleMessage``) to an agent and wait for its reply."""
    return await bus_request(
        broker,
        settings.subjects.message_handle(agent_id),
        await decode_body(request, HandleMessage),
        HandleMessageResult,
        timeout=settings.request_timeout,
    )


LAST_EVENT_ID = "last-event-id"
RESUME_PATTERN = rf"^({RUN_OWNER}__[A-Za-z0-9_-]{{1,54}}:[0-9]{{1,9}})?$"
"""An event id of a gateway stream, ``<run_id>:<n>`` on a run the gateway owns (empty: none)."""


@post(
    "/v1/agents/{agent_id:str}/messages/stream",
    status_code=200,
    responses={
        200: ResponseSpec(None, media_type="text/event-stream", description=SSE_DOC),
        **errors(404, 409, 503),
    },
)
async def stream_message(
    agent_id: AgentId,
    request: Request[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
    last_event_id: Annotated[
        str | None,
        HeaderParameter(
            name=LAST_EVENT_ID,
            required=False,
            pattern=RESUME_PATTERN,
            description="Resume a stream: the id of the last event received (`<run_id>:<n>`).",
        ),
    ] = None,
) -> ServerSentEvent:
    """Send one message; the reply streams back as server-sent events.

    Events: ``chunk`` (a piece of the reply, in order), ``response`` (a
    message the agent sent), then ``completed`` or ``failed`` (the end, with
    the turn's result; ``failed`` with status ``timeout`` after
    ``GATEWAY_TURN_TIMEOUT``), or ``error`` (an ``Error``: the run went
    silent). Each event's data is the wire message as JSON, its ``id`` is
    ``<run_id>:<n>``; comments keep a quiet stream alive. Sent again with a
    ``Last-Event-ID`` header, the same request resumes that run after event
    ``n`` (runs are kept an hour) instead of starting a turn; sent again
    without one, the same ``message_id`` is the same turn (answered once).
    """
    data = await decode_body(request, HandleMessage)
    skip = 0
    if last_event_id:
        run_id, _, seen = last_event_id.rpartition(":")
        if run_owner(run_id) != RUN_OWNER or not seen.isdigit():
            raise BadRequest(
                "Last-Event-ID must be <run_id>:<n>, as the stream sent it",
                details={LAST_EVENT_ID: "expected <run_id>:<n>"},
            )
        try:
            run: RunFollower = await resume_turn(settings, broker, run_id)
        except InvalidIdError as exc:
            raise BadRequest(str(exc), details={LAST_EVENT_ID: str(exc)}) from None
        skip = int(seen)
    else:
        run = await start_turn(broker, settings, agent_id, data)  # errors are HTTP errors
    events = paced(
        run,
        data.message_id,
        keepalive=settings.gateway_keepalive,
        deadline=settings.gateway_turn_timeout,
    )

    async def messages() -> AsyncIterator[ServerSentEventMessage]:
        index = 0
        try:
            async for item in events:
                if item is None:
                    yield ServerSentEventMessage(data=None, comment="keep-alive")
                    continue
                index += 1
                if index <= skip:
                    continue
                event, raw = item
                yield ServerSentEventMessage(
                    event=_sse_name(event), data=raw.decode(), id=f"{run.run_id}:{index}"
                )
        except ServiceError as exc:
            error = msgspec.json.encode(exc.to_error()).decode()
            yield ServerSentEventMessage(event="error", data=error)
        finally:
            await events.aclose()

    return ServerSentEvent(
        messages(), headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


@websocket("/v1/agents/{agent_id:str}/ws")
async def chat_socket(
    agent_id: AgentId,
    socket: WebSocket[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> None:
    """A conversation over one WebSocket: send ``HandleMessage`` frames, read the run's events.

    Each frame sent back is ``{"event": <chunk|response|completed|failed|error>,
    "data": <wire message>}``; a bad frame or a failed request gets an
    ``error`` event with the ``Error`` and the socket stays open.
    """
    offered = [p.strip() for p in socket.headers.get("sec-websocket-protocol", "").split(",")]
    await socket.accept(subprotocols=SUBPROTOCOL if SUBPROTOCOL in offered else None)
    decoder = msgspec.json.Decoder(HandleMessage)
    while True:
        frame = await socket.receive_data(mode="text")
        try:
            try:
                message = decoder.decode(frame)
            except msgspec.DecodeError as exc:
                raise BadRequest(f"invalid message: {exc}") from None
            except RecursionError:  # msgspec raises it itself, not as a DecodeError
                raise BadRequest("invalid message: JSON nested too deeply") from None
            events = follow_run(
                broker,
                settings.subjects,
                agent_id,
                message,
                timeout=settings.request_timeout,
                owner=RUN_OWNER,
            )
            async for event, raw in events:
                await socket.send_text(f'{{"event":"{_sse_name(event)}","data":{raw.decode()}}}')
        except ServiceError as exc:
            error = msgspec.json.encode(exc.to_error()).decode()
            await socket.send_text(f'{{"event":"error","data":{error}}}')


def _sse_name(event: object) -> str:
    if isinstance(event, RunChunk):
        return "chunk"
    if isinstance(event, RunEnded):
        return "failed" if event.status in {"failed", "timeout"} else "completed"
    return "response"


@get("/v1/agents", responses=errors(503))
async def list_agents(
    broker: NamedDependency[NatsBroker], settings: NamedDependency[GatewaySettings]
) -> AgentList:
    """The agents the runtime hosts (answered by one runtime replica)."""
    return await bus_request(
        broker,
        settings.subjects.agents_list,
        ListAgents(),
        AgentList,
        timeout=settings.request_timeout,
    )


@post("/v1/agents", status_code=201, responses=errors(409, 503))
async def add_agent(
    request: Request[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> AgentStatus:
    """Start a new agent from a character (an ``AddAgent``); every runtime replica can host it."""
    data = await decode_body(request, AddAgent)
    return await bus_request(
        broker, settings.subjects.agents_add, data, AgentStatus, timeout=settings.request_timeout
    )


async def _agent_command(
    broker: NatsBroker, settings: GatewaySettings, agent_id: str, command: str
) -> AgentStatus:
    return await bus_request(
        broker,
        settings.subjects.agent_command(agent_id, command),
        AgentCommand(),
        AgentStatus,
        timeout=settings.request_timeout,
    )


@post("/v1/agents/{agent_id:str}/start", status_code=200, responses=errors(404, 503))
async def start_agent(
    agent_id: AgentId,
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> AgentStatus:
    """Start a stopped agent."""
    return await _agent_command(broker, settings, agent_id, "start")


@post("/v1/agents/{agent_id:str}/stop", status_code=200, responses=errors(404, 503))
async def stop_agent(
    agent_id: AgentId,
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> AgentStatus:
    """Stop an agent on every replica; it stays stored and can be started again."""
    return await _agent_command(broker, settings, agent_id, "stop")


@delete("/v1/agents/{agent_id:str}", status_code=200, responses=errors(404, 503))
async def delete_agent(
    agent_id: AgentId,
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> AgentStatus:
    """Stop an agent everywhere and delete it with everything it stored."""
    return await _agent_command(broker, settings, agent_id, "delete")


@get("/v1/health", opt={"public": True}, security=PUBLIC)
async def health(broker: NamedDependency[NatsBroker]) -> dict[str, bool]:
    """Liveness: the gateway answers and its NATS connection is up."""
    return {"alive": True, "nats_connected": await broker.ping(timeout=1.0)}


@get(
    "/v1/ready",
    opt={"public": True},
    security=PUBLIC,
    responses={
        503: ResponseSpec(
            cast("type[object]", StackReadiness | Readiness), description="Not ready."
        )
    },
)
async def ready(
    request: Request[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> Response[StackReadiness | Readiness]:
    """Readiness: a healthy runtime and memory service answered just now (503 if not).

    Without a valid key (when keys are set) the answer is only ``{"ready": ...}``,
    for probes; with one it also says why not and what every service instance
    reported: its consumers, their lag, and details such as the database latency.
    """
    answers = await gather_health(
        broker.config.connection_state.connection, settings.subjects, window=0.5
    )
    problems = stack_ready(answers, READY_NEEDS)
    status = HTTP_503_SERVICE_UNAVAILABLE if problems else 200
    if not _authorized(request):
        return Response(Readiness(ready=not problems), status_code=status)
    body = StackReadiness(ready=not problems, problems=problems, services=answers)
    return Response(body, status_code=status)


@get("/", media_type=MediaType.HTML, opt={"public": True}, include_in_schema=False)
async def chat_page() -> str:
    """A small chat page that streams replies (the API key, if any, is typed in the page)."""
    return CHAT_PAGE.read_text()


BEARER = "bearer"
KEY_QUERY = "api_key"
"""The WebSocket query parameter a browser can put a key in (``?api_key=<key>``)."""
KEY_SUBPROTOCOL = "bearer."
"""A WebSocket subprotocol carrying a key: offer ``["elizamesh", "bearer.<key>"]``."""
SUBPROTOCOL = "elizamesh"
"""The subprotocol the gateway selects when a browser offers it (it must select one)."""
UNAUTHORIZED = "a valid API key is required (Authorization: Bearer <key> or X-API-Key)"


def presented_key(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str:
    """The API key a request presents, or ``""``.

    ``X-API-Key: <key>``, or ``Authorization: Bearer <key>`` with the scheme in
    any case (RFC 7235); an ``Authorization`` header without the ``Bearer``
    scheme presents no key (a bare key is refused, not guessed at). A
    WebSocket (``query`` given) may also carry it in the ``api_key`` query
    parameter or a ``bearer.<key>`` subprotocol, which browsers can send.
    """
    if key := headers.get("x-api-key", "").strip():
        return key
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == BEARER and credentials.strip():
        return credentials.strip()
    if query is None:
        return ""
    if key := query.get(KEY_QUERY, "").strip():
        return key
    for offered in headers.get("sec-websocket-protocol", "").split(","):
        if offered.strip().startswith(KEY_SUBPROTOCOL):
            return offered.strip().removeprefix(KEY_SUBPROTOCOL)
    return ""


def key_is_valid(given: str, keys: frozenset[str]) -> bool:
    """Whether ``given`` is one of ``keys``, in time independent of where (or whether) it differs.

    Every key is compared, each through ``hmac.compare_digest`` over SHA-256
    digests (equal lengths, so neither the key's content nor its length leaks).
    """
    digest = hashlib.sha256(given.encode()).digest()
    found = False
    for key in keys:
        found |= hmac.compare_digest(digest, hashlib.sha256(key.encode()).digest())
    return found and bool(given)


def _authorized(
    connection: ASGIConnection[BaseRouteHandler, object, object, State]
    | Request[object, object, State],
) -> bool:
    keys: frozenset[str] = connection.app.state.settings.api_keys
    if not keys:
        return True
    query = None
    if connection.scope["type"] == ScopeType.WEBSOCKET:
        query = {k: v for k, v in connection.query_params.items() if isinstance(v, str)}
        query.update(connection.scope.get("state", {}).get(_WS_KEY, {}))
    return key_is_valid(presented_key(connection.headers, query), keys)


async def require_api_key(
    connection: ASGIConnection[BaseRouteHandler, object, object, State], handler: BaseRouteHandler
) -> None:
    """With ``GATEWAY_API_KEYS`` set, every route but the public ones needs a key.

    The key goes in ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``
    (for a WebSocket also ``?api_key=<key>`` or a ``bearer.<key>`` subprotocol).
    A coroutine although it never awaits: Litestar runs a plain function
    guard in a worker thread, a thread hop on every request (18% of the
    gateway's CPU per message in a py-spy profile under load).

    Raises:
        Unauthorized: a key is needed and none of the keys given is valid.
    """
    if handler.opt.get("public") or _authorized(connection):
        return
    raise Unauthorized(UNAUTHORIZED)


_WS_KEY = "elizamesh.ws_key"


def websocket_keys(app: ASGIApp) -> ASGIApp:
    """Refuse a WebSocket without a valid key with HTTP 401 and an ``Error``, as HTTP routes do.

    It runs before the upgrade (the ASGI ``websocket.http.response``
    extension), so a browser sees the same 401 as a ``fetch``. A key in the
    query string is taken out of it, so no access log line carries it.
    """

    async def check(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.WEBSOCKET:
            await app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode(errors="replace")))
        if KEY_QUERY in query:
            scope.setdefault("state", {})[_WS_KEY] = {KEY_QUERY: query[KEY_QUERY]}
            rest = {k: v for k, v in query.items() if k != KEY_QUERY}
            scope["query_string"] = urlencode(rest).encode()
        keys: frozenset[str] = scope["app"].state.settings.api_keys
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not keys or key_is_valid(presented_key(headers, query), keys):
            await app(scope, receive, send)
            return
        body = msgspec.json.encode(Unauthorized(UNAUTHORIZED).to_error())
        if "websocket.http.response" in (scope.get("extensions") or {}):
            start: WebSocketResponseStartEvent = {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
            await send(start)
            done: WebSocketResponseBodyEvent = {
                "type": "websocket.http.response.body",
                "body": body,
                "more_body": False,
            }
            await send(done)
        else:
            await send({"type": "websocket.close", "code": 4401, "reason": "unauthorized"})

    return check


def request_ids(app: ASGIApp) -> ASGIApp:
    """Give every request an ``X-Request-Id`` (the caller's, or a new one), echoed in the reply.

    The reply also carries ``X-Trace-Id``, the request's trace (Jaeger's
    "Lookup by Trace ID"), and the request's span the ``elizamesh.request_id``.
    """

    async def with_request_id(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"x-request-id"]
        given = dict(scope["headers"]).get(b"x-request-id")
        request_id = given if given and len(given) <= 128 else new_id().encode()  # noqa: PLR2004
        scope["headers"] = [*headers, (b"x-request-id", request_id)]
        span = trace.get_current_span()  # the OpenTelemetry middleware runs first
        span.set_attribute("elizamesh.request_id", request_id.decode(errors="replace"))
        ids = [(b"x-request-id", request_id)]
        if span.get_span_context().is_valid:
            ids.append(
                (b"x-trace-id", trace.format_trace_id(span.get_span_context().trace_id).encode())
            )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *ids]
            await send(message)

        await app(scope, receive, send_with_id)

    return with_request_id


def service_error_response(
    request: Request[object, object, State], exc: ServiceError
) -> Response[Error]:
    """Answer a failed NATS request with its ``Error`` and the matching HTTP status."""
    error = exc.to_error(request.headers.get("x-request-id"))
    return Response(error, status_code=STATUS_BY_CODE[error.code])


def http_error_response(
    request: Request[object, object, State], exc: HTTPException
) -> Response[Error]:
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
    return Response(error, status_code=exc.status_code, headers=exc.headers)


RoomId = Annotated[str, Parameter(pattern=ID_PATTERN, description="The room (conversation).")]
HISTORY_PAGE_MAX = 200


@get("/v1/agents/{agent_id:str}/rooms/{room_id:str}/messages", responses=errors(404, 503))
async def room_messages(  # noqa: PLR0917 - Litestar injects by name
    agent_id: AgentId,
    room_id: RoomId,
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
    limit: Annotated[
        int, Parameter(ge=1, le=HISTORY_PAGE_MAX, description="Messages per page.")
    ] = 50,
    offset: Annotated[
        int, Parameter(ge=0, le=2**31 - 1, description="Newest messages to skip.")
    ] = 0,
) -> RoomMessages:
    """A room's messages (user and agent), newest page first, each page oldest first.

    Raises 404 when no agent has this id.
    """
    listed = await bus_request(
        broker,
        settings.subjects.agents_list,
        ListAgents(),
        AgentList,
        timeout=settings.request_timeout,
    )
    if not any(agent.id == agent_id for agent in listed.agents):
        raise NotFound(f"no agent {agent_id!r}", details={"agent_id": "unknown agent"})
    storage = memory_client(
        broker, agent_id=agent_id, subjects=settings.subjects, timeout=settings.request_timeout
    )
    memories = await storage.get_memories(
        table_name="messages", room_id=room_id, count=limit + 1, offset=offset
    )
    page = [
        RoomMessage(
            id=m.id,
            entity_id=m.entity_id,
            role="agent" if m.entity_id == agent_id else "user",
            text=m.content.text,
            created_at=m.created_at,
        )
        for m in reversed(memories[:limit])
    ]
    return RoomMessages(
        messages=page, next_offset=offset + limit if len(memories) > limit else None
    )


def options_allow(app: ASGIApp) -> ASGIApp:
    """Answer ``OPTIONS`` with every method of the path in ``Allow``.

    Litestar answers it per route handler, so a path served by two handlers
    (``GET`` and ``POST /v1/agents``) listed only one of them.
    """
    methods_of: dict[str, set[str]] = {}

    async def with_allow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] != "OPTIONS":
            await app(scope, receive, send)
            return
        if not methods_of:
            for route in scope["app"].routes:
                methods_of.setdefault(route.path, set()).update(getattr(route, "methods", ()))

        async def send_with_allow(message: Message) -> None:
            handler = scope.get("route_handler")
            paths: set[str] = getattr(handler, "paths", set())
            allowed = set().union(*(methods_of.get(p, set()) for p in paths))
            if message["type"] == "http.response.start" and allowed:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                allow = ", ".join(sorted(allowed)).encode()
                message["headers"] = [*headers, (b"allow", allow)]
            await send(message)

        await app(scope, receive, send_with_allow)

    return with_allow
