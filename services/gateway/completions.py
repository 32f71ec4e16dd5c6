"""An OpenAI-compatible face: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Open WebUI, LibreChat, the ``openai`` SDKs and curl scripts talk to the hosted
agents unchanged: the model is an agent (its id or its name), and each
conversation is one room of that agent, so the agent's memory works.

The room of a conversation is, in order: the ``X-Conversation-Id`` header,
Open WebUI's ``X-OpenWebUI-Chat-Id`` header, else a hash of the agent, the
user and the conversation's first user message (what every client resends on
each call). The sender is the ``user`` field, else Open WebUI's
``X-OpenWebUI-User-Id`` header, else ``openai``. Only the newest message is
sent as the turn's message: the earlier ones are in the room's memory. Its
message id hashes the room, the position and the text, so a client's retry of
the same call is the same turn (answered once).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import msgspec
from faststream.nats import NatsBroker
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.response import Stream
from litestar.types import ExceptionHandlersMap
from msgspec import Meta

from contracts import ID_PATTERN, MAX_TEXT_LENGTH, STATUS_BY_CODE, ErrorCode, HandleMessage
from contracts.events import AgentInfo, AgentList, ListAgents, RunChunk, RunEnded, RunResponse
from services.gateway.bodies import decode_body
from services.gateway.turns import Paced, paced, start_turn
from shared.bus import request
from shared.config import GatewaySettings
from shared.errors import BadRequest, NotFound, ServiceError

CONVERSATION_HEADERS = ("x-conversation-id", "x-openwebui-chat-id")
USER_HEADER = "x-openwebui-user-id"
DEFAULT_USER = "openai"
SOURCE = "openai"
_ID = re.compile(ID_PATTERN)


class ContentPart(msgspec.Struct, kw_only=True, frozen=True):
    """One part of a message's content; only ``text`` parts are read."""

    type: str
    text: str | None = None


class ChatMessage(msgspec.Struct, kw_only=True, frozen=True):
    """One message of the conversation, as OpenAI's API has it."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Annotated[str, Meta(max_length=MAX_TEXT_LENGTH)] | list[ContentPart] | None = None
    name: str | None = None

    @property
    def text(self) -> str:
        """The message's text (its text parts joined by blank lines)."""
        if isinstance(self.content, list):
            return "\n\n".join(p.text for p in self.content if p.type == "text" and p.text)
        return self.content or ""


_NOT_BLANK = {"type": "string", "pattern": r"\S"}
_USER_WITH_TEXT = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"const": "user"},
        "content": {
            "anyOf": [
                _NOT_BLANK,
                {
                    "type": "array",
                    "contains": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"const": "text"}, "text": _NOT_BLANK},
                    },
                },
            ]
        },
    },
}
"""What at least one message must be: the user's, with some text."""


class ChatCompletionRequest(msgspec.Struct, kw_only=True, frozen=True):
    """A chat completion request; sampling options (temperature, ...) are the agent's own."""

    model: Annotated[str, Meta(min_length=1, description="An agent's id or name.")]
    messages: Annotated[
        list[ChatMessage],
        Meta(
            min_length=1,
            description="The conversation; its newest user message with text is the new turn.",
            extra_json_schema={"contains": _USER_WITH_TEXT},
        ),
    ]
    stream: bool = False
    user: Annotated[str | None, Meta(description="Who is talking (the sender's entity).")] = None


class ModelCard(msgspec.Struct, kw_only=True, frozen=True):
    """One agent, listed as a model."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "elizamesh"


class ModelList(msgspec.Struct, kw_only=True, frozen=True):
    """The hosted agents as OpenAI's model list."""

    data: list[ModelCard]
    object: Literal["list"] = "list"


class AssistantMessage(msgspec.Struct, kw_only=True, frozen=True):
    """The agent's answer."""

    content: str
    role: Literal["assistant"] = "assistant"


class Choice(msgspec.Struct, kw_only=True, frozen=True):
    """The one answer of a completion."""

    message: AssistantMessage
    index: int = 0
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(msgspec.Struct, kw_only=True, frozen=True):
    """A completed turn as OpenAI's ``chat.completion``."""

    id: str
    created: int
    model: str
    choices: list[Choice]
    object: Literal["chat.completion"] = "chat.completion"


class OpenAIErrorDetail(msgspec.Struct, kw_only=True, frozen=True):
    """What went wrong, as OpenAI reports it."""

    message: str
    type: str
    code: str
    param: str | None = None


class OpenAIError(msgspec.Struct, kw_only=True, frozen=True):
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: OpenAIErrorDetail


BAD_GATEWAY = 502


class TurnFailedError(ServiceError):
    """A turn that ended ``failed`` or ``timeout``: the agent behind the gateway failed (502)."""

    code = ErrorCode.INTERNAL


_ERROR_TYPES = {
    ErrorCode.BAD_REQUEST: "invalid_request_error",
    ErrorCode.UNAUTHORIZED: "authentication_error",
    ErrorCode.NOT_FOUND: "not_found_error",
    ErrorCode.CONFLICT: "conflict_error",
    ErrorCode.UNAVAILABLE: "service_unavailable",
    ErrorCode.INTERNAL: "server_error",
}
_OPENAI_ERRORS = {
    status: ResponseSpec(data_container=OpenAIError, description=description)
    for status, description in (
        (400, "The request is malformed (OpenAI's error shape)."),
        (401, "A valid API key is required."),
        (404, "No agent has this id or name."),
        (BAD_GATEWAY, "The agent's turn failed (its model, an action...) or timed out."),
        (503, "No runtime answered; retry."),
    )
}


def openai_error(error: ServiceError) -> Response[OpenAIError]:
    """``error`` in OpenAI's shape, with its HTTP status (502 for a turn that failed)."""
    param = next(iter(error.details), None)
    body = OpenAIError(
        error=OpenAIErrorDetail(
            message=error.message, type=_ERROR_TYPES[error.code], code=error.code, param=param
        )
    )
    status = BAD_GATEWAY if isinstance(error, TurnFailedError) else STATUS_BY_CODE[error.code]
    return Response(body, status_code=status)


def _service_error(
    request: Request[object, object, State], exc: ServiceError
) -> Response[OpenAIError]:
    del request
    return openai_error(exc)


def _http_error(
    request: Request[object, object, State], exc: HTTPException
) -> Response[OpenAIError]:
    del request
    details = {
        str(item.get("key", "body")): str(item.get("message", item))
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    }
    message = "; ".join(f"{k}: {v}" for k, v in details.items()) or exc.detail
    response = openai_error(BadRequest(message, details=details))
    response.status_code = exc.status_code if exc.status_code < 500 else 500  # noqa: PLR2004
    return response


OPENAI_ERROR_HANDLERS: ExceptionHandlersMap = {
    ServiceError: _service_error,
    HTTPException: _http_error,
}


async def _agents(broker: NatsBroker, settings: GatewaySettings) -> list[AgentInfo]:
    listed = await request(
        broker,
        settings.subjects.agents_list,
        ListAgents(),
        AgentList,
        timeout=settings.request_timeout,
    )
    return listed.agents


@get(
    "/v1/models",
    exception_handlers=OPENAI_ERROR_HANDLERS,
    responses={401: _OPENAI_ERRORS[401], 503: _OPENAI_ERRORS[503]},
    tags=["OpenAI-compatible"],
)
async def list_models(
    broker: NamedDependency[NatsBroker], settings: NamedDependency[GatewaySettings]
) -> ModelList:
    """The hosted agents as models (OpenAI's ``GET /v1/models``); each id is an agent id."""
    return ModelList(data=[ModelCard(id=agent.id) for agent in await _agents(broker, settings)])


@get(
    "/v1/models/{model:str}",
    exception_handlers=OPENAI_ERROR_HANDLERS,
    responses={401: _OPENAI_ERRORS[401], 404: _OPENAI_ERRORS[404], 503: _OPENAI_ERRORS[503]},
    tags=["OpenAI-compatible"],
)
async def get_model(
    model: Annotated[str, Parameter(description="An agent's id or name.")],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> ModelCard:
    """One agent as a model (OpenAI's ``GET /v1/models/{model}``), by its id or name."""
    return ModelCard(id=await _agent_of(model, broker, settings))


def _stable_id(value: str, prefix: str) -> str:
    """``value`` if it is a valid id, else a short hash of it (same value, same id)."""
    if _ID.fullmatch(value):
        return value
    return f"{prefix}-{hashlib.sha256(value.encode()).hexdigest()[:32]}"


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def turn_message(
    body: ChatCompletionRequest, agent_id: str, headers: dict[str, str]
) -> HandleMessage:
    """The message that starts this call's turn: the newest user message in the conversation's room.

    Raises:
        BadRequest: no user message has text.
    """
    said = [i for i, m in enumerate(body.messages) if m.role == "user" and m.text.strip()]
    if not said:
        raise BadRequest(
            "messages: no user message with text (the turn answers the newest one)",
            details={"messages": "needs a user message with text"},
        )
    newest = body.messages[said[-1]]
    user = body.user or headers.get(USER_HEADER) or DEFAULT_USER
    entity_id = _stable_id(user, "user")
    conversation = next((headers[h] for h in CONVERSATION_HEADERS if headers.get(h)), None)
    if conversation is not None:
        room_id = _stable_id(conversation, "chat")
    else:
        first = body.messages[said[0]].text
        room_id = f"chat-{_hash(agent_id, entity_id, first)}"
    position = str(sum(1 for m in body.messages[: said[-1] + 1] if m.role == "user"))
    message = {
        "message_id": f"oai-{_hash(room_id, position, newest.text)}",
        "entity_id": entity_id,
        "room_id": room_id,
        "content": {"text": newest.text, "source": SOURCE},
    }
    try:
        return msgspec.convert(message, HandleMessage)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid message: {exc}", details={"messages": str(exc)}) from None


async def _agent_of(model: str, broker: NatsBroker, settings: GatewaySettings) -> str:
    agents = await _agents(broker, settings)
    for agent in agents:
        if model in {agent.id, agent.name} or agent.name.lower() == model.lower():
            return agent.id
    names = ", ".join(a.id for a in agents) or "none"
    raise NotFound(
        f"no agent is called {model!r} (agents: {names})", details={"model": "unknown agent"}
    )


@post(
    "/v1/chat/completions",
    status_code=200,
    exception_handlers=OPENAI_ERROR_HANDLERS,
    responses=_OPENAI_ERRORS,
    tags=["OpenAI-compatible"],
)
async def chat_completions(
    request: Request[object, object, State],
    broker: NamedDependency[NatsBroker],
    settings: NamedDependency[GatewaySettings],
) -> Response[ChatCompletion] | Stream:
    """One turn of the agent named by ``model`` (OpenAI's chat completions, streamed or not).

    With ``stream: true`` the answer comes as ``chat.completion.chunk`` server-sent
    events ending with ``data: [DONE]``; a failure mid-stream is a ``data: {"error": ...}``.
    """
    data = await decode_body(request, ChatCompletionRequest)
    agent_id = await _agent_of(data.model, broker, settings)
    message = turn_message(data, agent_id, dict(request.headers))
    run = await start_turn(broker, settings, agent_id, message)
    events = paced(
        run,
        run.ack.message_id,
        keepalive=settings.gateway_keepalive,
        deadline=settings.gateway_turn_timeout,
    )
    completion_id = f"chatcmpl-{run.run_id.replace('.', '-')}"
    created = int(time.time())
    if data.stream:
        return Stream(
            _chunks(events, completion_id, created, data.model),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )
    text = ""
    async for item in events:
        if item is None:
            continue
        event = item[0]
        if isinstance(event, RunEnded):
            _raise_if_failed(event)
            if event.result is not None and event.result.response_content.text:
                text = event.result.response_content.text
        elif isinstance(event, RunResponse) and event.content.text:
            text = event.content.text
    choice = Choice(message=AssistantMessage(content=text))
    return Response(
        ChatCompletion(id=completion_id, created=created, model=data.model, choices=[choice])
    )


def _raise_if_failed(ended: RunEnded) -> None:
    if ended.status in {"failed", "timeout"}:
        raise TurnFailedError(f"the turn {ended.status}: {ended.error or 'no reason given'}")


async def _chunks(
    events: AsyncIterator[Paced], completion_id: str, created: int, model: str
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        body = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    streamed = False
    try:
        async for item in events:
            if item is None:
                yield b": keep-alive\n\n"
                continue
            event = item[0]
            if isinstance(event, RunChunk) and event.text:
                streamed = True
                yield chunk({"content": event.text})
            elif isinstance(event, RunEnded):
                _raise_if_failed(event)
                text = event.result.response_content.text if event.result else ""
                if text and not streamed:
                    yield chunk({"content": text})
        yield chunk({}, "stop")
        yield b"data: [DONE]\n\n"
    except ServiceError as exc:
        error = openai_error(exc).content
        yield b"data: " + msgspec.json.encode(error) + b"\n\n"
