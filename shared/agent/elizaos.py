"""``ElizaOS``: many agents in one process, addressed by id or name.

The in-process counterpart of the distributed stack's client: the same
method names, events and results.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import resource
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict, Unpack

import msgspec

from contracts import Content, HandleMessageResult
from contracts.control import AgentHealth
from contracts.message import plain_id
from contracts.records import Memory
from shared.agent.character import Character
from shared.agent.message_service import MessageOptions, TurnFailedError
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin
from shared.errors import BadRequest, NotFound
from shared.storage.adapter import DatabaseAdapter

logger = logging.getLogger("elizamesh.elizaos")

Listener = Callable[[dict[str, object]], object]


@dataclass(frozen=True)
class AgentSpec:
    """One agent to add: its character, plugins, settings and optional storage."""

    character: Character
    plugins: Sequence[Plugin | str] = ()
    settings: Mapping[str, str] = field(default_factory=dict)
    init: Callable[[AgentRuntime], Awaitable[None]] | None = None
    database_adapter: DatabaseAdapter | None = None


@dataclass(frozen=True)
class BatchItemResult:
    """One result of ``handle_messages``: the outcome, or the error that prevented it."""

    agent_id: str
    result: HandleMessageResult | None = None
    error: BaseException | None = None


BatchItem = tuple[str | uuid.UUID | AgentRuntime, Memory]
"""One item of ``handle_messages`` in tuple form: the agent (id, name or runtime), the message."""


def _batch_item(
    index: int, item: BatchItem | Mapping[str, object]
) -> tuple[str | uuid.UUID | AgentRuntime, Memory, MessageOptions | None]:
    """Read one ``handle_messages`` item, tuple or elizaOS dict, or raise ``BadRequest``."""
    where = f"handle_messages: item {index}"
    target: object
    message: object
    if isinstance(item, tuple) and len(item) == 2:  # noqa: PLR2004 - (agent, message)
        target, message = item
        options: object = None
    elif isinstance(item, Mapping):
        unknown = set(item) - {"agent_id", "agentId", "message", "options"}
        if unknown:
            raise BadRequest(f"{where}: unknown keys {sorted(unknown)}")
        target = item.get("agent_id", item.get("agentId"))
        message = item.get("message")
        options = item.get("options")
    else:
        raise BadRequest(
            f"{where}: expected (agent, message) or "
            f'{{"agent_id": ..., "message": ...}}, got {type(item).__name__}'
        )
    if not isinstance(target, str | uuid.UUID | AgentRuntime):
        raise BadRequest(f"{where}: agent_id must be an id, a name or a runtime")
    if options is not None and not isinstance(options, MessageOptions):
        raise BadRequest(f"{where}: options must be a MessageOptions")
    return target, _message(where, message), options


_MESSAGE_ALIASES = {"user_id": "entity_id"}
"""elizaOS 0.x names a message's sender ``userId``."""


def _message(where: str, message: object) -> Memory:
    """``message`` as a Memory: one already, or a dict with elizaOS's names or ours."""
    if isinstance(message, Memory):
        return message
    if not isinstance(message, Mapping):
        raise BadRequest(
            f"{where}: message must be a Memory or a dict, got {type(message).__name__}"
        )
    data = {_MESSAGE_ALIASES.get(_snake(k), _snake(k)): v for k, v in message.items()}
    if isinstance(content := data.get("content"), Mapping):
        data["content"] = {_snake(k): v for k, v in content.items()}
    data = {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in data.items()}
    try:
        return msgspec.convert(data, Memory)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{where}: message: {exc}") from None


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


class ElizaOS:
    """A registry of agent runtimes with lifecycle, discovery, messaging and events."""

    def __init__(self) -> None:
        self.runtimes: dict[str, AgentRuntime] = {}
        self._inits: dict[str, Callable[[AgentRuntime], Awaitable[None]] | None] = {}
        self._started_at: dict[str, float] = {}
        self._listeners: dict[str, list[Listener]] = {}
        self._editable = False
        self._background: set[asyncio.Task[object]] = set()

    # -- events ---------------------------------------------------------------

    def add_event_listener(self, event: str, listener: Listener) -> None:
        """Call ``listener(detail)`` on ``event`` (``agent:started``, ``message:sent``, ...)."""
        self._listeners.setdefault(event, []).append(listener)

    on = add_event_listener

    def remove_event_listener(self, event: str, listener: Listener) -> None:
        """Stop calling ``listener`` on ``event``."""
        if listener in self._listeners.get(event, []):
            self._listeners[event].remove(listener)

    def _dispatch(self, event: str, **detail: object) -> None:
        for listener in list(self._listeners.get(event, [])):
            try:
                outcome = listener(detail)
                if asyncio.iscoroutine(outcome):
                    task = asyncio.ensure_future(outcome)
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            except Exception:
                logger.exception("a %s listener failed", event)

    # -- agents ---------------------------------------------------------------

    async def add_agents(
        self,
        agents: Sequence[AgentSpec],
        *,
        ephemeral: bool = False,
        skip_migrations: bool = False,
        auto_start: bool = False,
        return_runtimes: bool = False,
    ) -> list[str] | list[AgentRuntime]:
        """Create a runtime per agent; register it unless ``ephemeral``; start it if asked.

        A ``database_adapter`` made for another agent id is used through
        ``adapter.for_agent(agent_id)``: the same connections, this agent's data.

        Returns the agents' ids, or the runtimes with ``return_runtimes``.

        Raises:
            BadRequest: an adapter cannot be bound to its agent's id, or an id
                is already registered.
            SchemaNotMigratedError: ``skip_migrations`` on a database whose
                schema is not migrated; run the migrations first.
        """
        runtimes: list[AgentRuntime] = []
        for spec in agents:
            character = copy.deepcopy(spec.character)
            runtime = AgentRuntime(
                character=character,
                plugins=spec.plugins,
                adapter=_bound(spec.database_adapter, plain_id(character.agent_id)),
                settings=spec.settings,
            )
            runtime.elizaos = self
            if not ephemeral:
                if runtime.agent_id in self.runtimes:
                    raise BadRequest(f"an agent with id {runtime.agent_id} is already registered")
                self.runtimes[runtime.agent_id] = runtime
                self._inits[runtime.agent_id] = spec.init
            self._dispatch(
                "agent:added", agent_id=runtime.agent_id, character=runtime.character.public()
            )
            runtimes.append(runtime)
        if auto_start:
            for runtime, spec in zip(runtimes, agents, strict=True):
                await self._start(runtime, spec.init, skip_migrations=skip_migrations)
        self._dispatch(
            "agents:added", agent_ids=[r.agent_id for r in runtimes], count=len(runtimes)
        )
        return runtimes if return_runtimes else [r.agent_id for r in runtimes]

    def register_agent(self, runtime: AgentRuntime) -> None:
        """Register a runtime built elsewhere."""
        if runtime.agent_id in self.runtimes:
            raise BadRequest(f"an agent with id {runtime.agent_id} is already registered")
        runtime.elizaos = self
        self.runtimes[runtime.agent_id] = runtime
        self._dispatch("agent:registered", agent_id=runtime.agent_id, runtime=runtime)

    async def _start(
        self,
        runtime: AgentRuntime,
        init: Callable[[AgentRuntime], Awaitable[None]] | None,
        *,
        skip_migrations: bool = False,
    ) -> None:
        await runtime.initialize(skip_migrations=skip_migrations)
        if init is not None:
            await init(runtime)
        self._started_at[runtime.agent_id] = time.monotonic()
        self._dispatch("agent:started", agent_id=runtime.agent_id)

    async def start_agents(self, agent_ids: Sequence[str] | None = None) -> None:
        """Initialize the given agents (all by default)."""
        ids = _ids(agent_ids or self.runtimes)
        for agent_id in ids:
            await self._start(self._runtime(agent_id), self._inits.get(agent_id))
        self._dispatch("agents:started", agent_ids=ids, count=len(ids))

    async def stop_agents(self, agent_ids: Sequence[str] | None = None) -> None:
        """Stop the given agents (all by default)."""
        ids = _ids(agent_ids or self.runtimes)
        for agent_id in ids:
            await self._runtime(agent_id).stop()
            self._started_at.pop(agent_id, None)
            self._dispatch("agent:stopped", agent_id=agent_id)
        self._dispatch("agents:stopped", agent_ids=ids, count=len(ids))

    async def delete_agents(self, agent_ids: Sequence[str]) -> None:
        """Stop and forget the given agents."""
        agent_ids = _ids(agent_ids)
        await self.stop_agents(agent_ids)
        for agent_id in agent_ids:
            runtime = self.runtimes.pop(agent_id, None)
            if runtime is not None:
                runtime.elizaos = None  # stopped agents keep the link; deleted ones do not
            self._inits.pop(agent_id, None)
            self._dispatch("agent:deleted", agent_id=agent_id)
        self._dispatch("agents:deleted", agent_ids=list(agent_ids), count=len(agent_ids))

    def enable_editable_mode(self) -> None:
        """Allow ``update_agent``."""
        self._editable = True
        self._dispatch("mode:editable", enabled=True)

    async def update_agent(self, agent_id: str, changes: Mapping[str, object]) -> None:
        """Change a running agent's character (only in editable mode)."""
        if not self._editable:
            raise BadRequest("agents can only be updated in editable mode (enable_editable_mode)")
        runtime = self._runtime(agent_id)
        merged = {**msgspec.to_builtins(runtime.character), **changes}
        runtime.character = Character.parse(merged)
        self._dispatch("agent:updated", agent_id=agent_id, changes=dict(changes))

    # -- discovery ------------------------------------------------------------

    def get_agent(self, agent_id: str | uuid.UUID) -> AgentRuntime | None:
        """Return the agent with ``agent_id``, or None."""
        return self.runtimes.get(plain_id(agent_id))

    def get_agents(self) -> list[AgentRuntime]:
        """Return every registered agent."""
        return list(self.runtimes.values())

    def get_agents_by_ids(self, agent_ids: Sequence[str]) -> list[AgentRuntime]:
        """Return the registered agents among ``agent_ids``."""
        return [self.runtimes[i] for i in _ids(agent_ids) if i in self.runtimes]

    def get_agent_by_name(self, name: str) -> AgentRuntime | None:
        """Return the agent whose character is called ``name`` (case-insensitive)."""
        found = self.get_agents_by_names([name])
        return found[0] if found else None

    def get_agents_by_names(self, names: Sequence[str]) -> list[AgentRuntime]:
        """Return the agents called any of ``names`` (case-insensitive)."""
        wanted = {n.casefold() for n in names}
        return [r for r in self.runtimes.values() if r.character.name.casefold() in wanted]

    def _runtime(self, agent_id: str | uuid.UUID) -> AgentRuntime:
        runtime = self.runtimes.get(plain_id(agent_id))
        if runtime is None:
            raise NotFound(f"agent {agent_id} is not in the registry")
        return runtime

    # -- messages -------------------------------------------------------------

    async def handle_message(
        self,
        target: str | uuid.UUID | AgentRuntime,
        message: Memory,
        *,
        on_response: Callable[[Content], Awaitable[object]] | None = None,
        on_stream_chunk: Callable[[str, str | None], Awaitable[None]] | None = None,
        on_error: Callable[[BaseException], Awaitable[object]] | None = None,
        on_complete: Callable[[], Awaitable[object]] | None = None,
        options: MessageOptions | None = None,
    ) -> HandleMessageResult:
        """Have an agent handle ``message``; its entity and room are set up if new.

        Sync mode (no ``on_response``): waits and returns the outcome (its
        ``status`` says how the turn ended). Async mode: returns at once with
        status ``accepted``; replies go to ``on_response``; a turn that ends
        ``failed`` or ``timeout`` goes to ``on_error`` (a ``TurnFailedError``
        carrying the result), as does an exception; ``on_complete`` runs at
        the end either way.

        Raises:
            BadRequest: the agent is not started.
            NotFound: no such agent.
        """
        runtime = target if isinstance(target, AgentRuntime) else self._runtime(target)
        if not runtime.is_started():
            raise BadRequest(f"agent {runtime.agent_id} is not started: call start_agents first")
        message = msgspec.structs.replace(message, agent_id=runtime.agent_id)
        given = options or MessageOptions()
        options = MessageOptions(
            max_retries=given.max_retries,
            timeout=given.timeout,
            on_stream_chunk=on_stream_chunk,
            run_id=given.run_id or runtime.create_run_id(),
        )
        service = runtime.message_service
        if on_response is None:
            result = await service.handle_message(runtime, message, None, options)
            if on_complete is not None:
                await on_complete()
            self._dispatch(
                "message:sent", agent_id=runtime.agent_id, message_id=message.id, mode="sync"
            )
            return result

        async def in_background() -> None:
            failure: BaseException | None = None
            try:
                outcome = await service.handle_message(runtime, message, on_response, options)
                if outcome.status in {"failed", "timeout"}:
                    failure = TurnFailedError(outcome)
            except Exception as exc:
                failure = exc
            if failure is not None:
                if on_error is None:
                    logger.error(
                        "message %s failed and nobody listens for errors: %s", message.id, failure
                    )
                else:
                    await on_error(failure)
            if on_complete is not None:
                await on_complete()

        runtime.run_in_background(in_background(), f"message-{message.id}")
        self._dispatch(
            "message:sent", agent_id=runtime.agent_id, message_id=message.id, mode="async"
        )
        return HandleMessageResult(
            message_id=message.id,
            agent_id=runtime.agent_id,
            did_respond=False,
            run_id=options.run_id,
            accepted=True,
            status="accepted",
        )

    async def handle_messages(
        self, batch: Sequence[BatchItem | Mapping[str, object]]
    ) -> list[BatchItemResult]:
        """Handle several messages (for one or several agents) in parallel; errors per item.

        An item is ``(agent, message)`` or, as elizaOS writes it,
        ``{"agent_id": ..., "message": {...}, "options": MessageOptions(...)}``
        (``agentId`` too); a message given as a dict takes elizaOS's names
        (``entityId``, ``roomId``, ``content``...) or ours.

        Raises:
            BadRequest: an item is neither form, or its message is not a message;
                nothing is handled then.
        """
        items = [_batch_item(index, item) for index, item in enumerate(batch)]

        async def one(
            target: str | uuid.UUID | AgentRuntime, message: Memory, options: MessageOptions | None
        ) -> BatchItemResult:
            agent_id = target.agent_id if isinstance(target, AgentRuntime) else str(target)
            try:
                result = await self.handle_message(target, message, options=options)
                return BatchItemResult(agent_id, result)
            except Exception as exc:
                return BatchItemResult(agent_id, error=exc)

        results = await asyncio.gather(*(one(*item) for item in items))
        self._dispatch(
            "messages:sent", count=len(results), errors=sum(r.error is not None for r in results)
        )
        return list(results)

    # -- health ---------------------------------------------------------------

    async def health_check(
        self,
        agent_ids: Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        probe_model: bool = True,
    ) -> dict[str, AgentHealth]:
        """Probe each agent: its storage and its text model answer within ``timeout`` seconds.

        The model probe asks TEXT_SMALL for one token ("Say OK."); with
        ``probe_model=False`` (a paid model, frequent checks) only storage is
        probed. A probe that fails or times out makes the agent
        ``responsive=False`` with ``error`` naming the part ("storage: ...",
        "model: ..."). An agent that is not started (never, or stopped since)
        is ``alive=False`` and not probed.
        """
        ids = _ids(agent_ids or self.runtimes)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

        async def probe(agent_id: str) -> AgentHealth:
            runtime = self.runtimes.get(agent_id)
            if runtime is None:
                return AgentHealth(
                    agent_id=agent_id, alive=False, responsive=False, error="not registered"
                )
            started = self._started_at.get(agent_id)
            if started is None or not runtime.is_started():
                return AgentHealth(
                    agent_id=agent_id, alive=False, responsive=False, error="not started"
                )
            uptime = time.monotonic() - started
            probes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("storage", lambda: runtime.adapter.get_agent(agent_id))
            ]
            if probe_model:
                probes.append(("model", lambda: _probe_model(runtime)))
            for part, probe in probes:
                try:
                    async with asyncio.timeout(timeout):
                        await probe()
                except Exception as exc:
                    return AgentHealth(
                        agent_id=agent_id,
                        alive=True,
                        responsive=False,
                        memory_usage=rss,
                        uptime=uptime,
                        error=f"{part}: {type(exc).__name__}: {exc}",
                    )
            return AgentHealth(
                agent_id=agent_id,
                alive=True,
                responsive=True,
                memory_usage=rss,
                uptime=uptime,
            )

        results = await asyncio.gather(*(probe(i) for i in ids))
        return dict(zip(ids, results, strict=True))

    async def validate_api_keys(self, agent_ids: Sequence[str] | None = None) -> dict[str, bool]:
        """Ask each agent's text model to answer a one-word prompt; True when it does."""
        ids = _ids(agent_ids or self.runtimes)

        async def check(agent_id: str) -> bool:
            runtime = self._runtime(agent_id)
            try:
                answer = await runtime.use_model(
                    ModelType.TEXT_SMALL, {"prompt": "Say OK.", "max_tokens": 5}
                )
            except Exception:
                logger.warning("agent %s: its text model did not answer", agent_id, exc_info=True)
                return False
            return bool(str(answer).strip())

        return dict(zip(ids, await asyncio.gather(*(check(i) for i in ids)), strict=True))


async def _probe_model(runtime: AgentRuntime) -> None:
    """Ask the agent's small text model for one token; raise if it fails or says nothing.

    Raises:
        ModelError: no plugin serves TEXT_SMALL, or the model failed.
        ValueError: the model answered with nothing.
    """
    answer = await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "Say OK.", "max_tokens": 1})
    if not str(answer).strip():
        raise ValueError("the text model answered with nothing")


def _bound(adapter: DatabaseAdapter | None, agent_id: str) -> DatabaseAdapter | None:
    """Return ``adapter`` for ``agent_id``: every storage call is scoped by its ``agent_id``."""
    if adapter is None or adapter.agent_id == agent_id:
        return adapter
    for_agent = getattr(adapter, "for_agent", None)
    if not callable(for_agent):
        raise BadRequest(
            f"the database_adapter of agent {agent_id} was made for agent {adapter.agent_id} "
            "and has no for_agent() to bind it; give each agent an adapter for its own id",
            details={"field": "database_adapter"},
        )
    bound: DatabaseAdapter = for_agent(agent_id)
    if bound.agent_id != agent_id:
        raise BadRequest(
            f"database_adapter.for_agent({agent_id!r}) returned an adapter for agent "
            f"{bound.agent_id}; give each agent an adapter for its own id",
            details={"field": "database_adapter"},
        )
    return bound


def _ids(agent_ids: Iterable[str | uuid.UUID]) -> list[str]:
    """Agent ids as given, a ``uuid.UUID`` as its canonical text."""
    return [plain_id(i) for i in agent_ids]


class MessageFields(TypedDict, total=False):
    """The other fields a new message may be given (``Memory``'s)."""

    agent_id: str | None
    world_id: str | None
    embedding: list[float] | None
    created_at: int
    unique: bool
    similarity: float | None
    metadata: dict[str, object]


def new_message(
    entity_id: str,
    room_id: str,
    text: str,
    *,
    source: str = "api",
    **fields: Unpack[MessageFields],
) -> Memory:
    """Return an inbound message, the shape ``handle_message`` expects."""
    return Memory(
        id=str(uuid.uuid4()),
        entity_id=entity_id,
        room_id=room_id,
        content=Content(text=text, source=source),
        **fields,
    )
