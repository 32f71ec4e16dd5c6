"""``AgentRuntime``: one agent, its plugins, its memory and its models.

The same class runs embedded (SQLite, everything in one process) and inside
the runtime service (storage through the memory service): only the adapter
differs. Every storage operation of the adapter is also a method of the
runtime, as in elizaOS, where the runtime *is* an adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import msgspec

from contracts import Content
from contracts.embedding import Priority
from contracts.records import Agent, ChannelType, Entity, Log, Memory, Relationship, Room, World
from contracts.turn import TurnCommit, TurnContext
from shared.agent.character import Character
from shared.agent.edge import agent_id_for, fitted, inbound
from shared.agent.interface import EmbeddingSink, MessageService
from shared.agent.plugin import normalize_plugin_name, resolve_plugins
from shared.agent.prompts import TEMPLATES
from shared.agent.turn import current_turn
from shared.agent.types import (
    STREAMABLE_MODELS,
    Action,
    ActionResult,
    Callback,
    Evaluator,
    EvaluatorOutputError,
    EventHandler,
    EventType,
    HandlerOptions,
    ModelError,
    ModelHandler,
    ModelType,
    Plugin,
    Provider,
    ProviderResult,
    Service,
    State,
    StateError,
    StreamChunk,
    TaskWorker,
)
from shared.config import (
    DEFAULT_DATABASE_URL,
    DatabaseUnavailableError,
    check_database_url,
    environment,
)
from shared.errors import BadRequest, Conflict, NotFound
from shared.storage.adapter import DatabaseAdapter
from shared.storage.delegation import StorageDelegation
from shared.storage.validation import check_id
from shared.telemetry import MODEL_CALLS, span, timed

logger = logging.getLogger("elizamesh.runtime")
T = TypeVar("T")
V = TypeVar("V")

MODEL_SETTINGS = (
    "MAX_TOKENS",
    "TEMPERATURE",
    "TOP_P",
    "TOP_K",
    "MIN_P",
    "SEED",
    "REPETITION_PENALTY",
    "FREQUENCY_PENALTY",
    "PRESENCE_PENALTY",
)
_STREAM_CALLBACK_KEYS = frozenset({"on_stream_chunk", "onStreamChunk"})
"""Where a caller may pass ``use_model``'s stream callback inside the params, as in elizaOS."""

BOOTSTRAP_PLUGIN = "bootstrap"
"""The plugin every runtime loads unless ``IGNORE_BOOTSTRAP`` (entry point ``bootstrap``)."""
EMBEDDING_BACKLOG = 500
"""How many stored memories without a vector a runtime queues when it starts."""

MAX_WORKING_MEMORY = 50

_RUN_ID: ContextVar[str | None] = ContextVar("elizamesh_run_id", default=None)
"""The run of the calling task outside a turn (``start_run`` / ``end_run``)."""

SendHandler = Callable[["AgentRuntime", "TargetInfo", Content], Awaitable[None]]

ALL_MEMORY_TABLES = ("memories", "messages", "facts", "documents")
"""The tables elizaOS's ``getAllMemories`` reads."""

ELIZAOS_EXCLUDED: dict[str, str] = {
    "get_agent_run_summaries": "optional in elizaOS; elizamesh stores no run records to summarize",
    "get_cached_embeddings": "a Postgres levenshtein cache in elizaOS; vectors come from the queue",
    "get_connection": "no raw database connection: in the runtime service storage is remote",
    "run_migrations": "optional in elizaOS; migrations run in initialize() or `make migrate`",
    "run_plugin_migrations": "optional in elizaOS; plugins carry no database schemas",
    "with_entity_context": "optional in elizaOS; there is no row-level security to scope",
}
"""Methods of elizaOS 1.7.2's ``IAgentRuntime`` / ``IDatabaseAdapter`` not here, and why."""

CONTROL_ACTIONS = frozenset({"enable_input", "disable_input"})
"""What ``send_control_message`` can ask a client (elizaOS's ``ControlMessage`` actions)."""

ELIZAOS_RENAMED: dict[str, str] = {"hasElizaOS": "has_elizaos"}
"""elizaOS names whose snake_case is not the mechanical one."""


@dataclass(frozen=True)
class Participant:
    """As elizaOS ``Participant``: an entity's place in one room."""

    room_id: str
    entity: Entity


@dataclass(frozen=True)
class GenerateTextResult:
    """As elizaOS ``GenerateTextResult``: ``generate_text``'s answer."""

    text: str


@dataclass(frozen=True)
class TargetInfo:
    """Where ``send_message_to_target`` delivers: a platform and a place on it."""

    source: str
    room_id: str | None = None
    channel_id: str | None = None
    server_id: str | None = None
    entity_id: str | None = None
    thread_id: str | None = None


@dataclass(order=True)
class _ModelEntry:
    sort_key: tuple[int, int]
    provider: str = field(compare=False)
    handler: ModelHandler = field(compare=False)


class _BoundedCache(OrderedDict[str, V]):
    """A dict that forgets its oldest entries beyond ``limit`` (elizaOS never forgets)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: str, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


class AgentRuntime(StorageDelegation):
    """One agent: character, plugins, memory, models, services and events."""

    def __init__(
        self,
        *,
        character: Character,
        plugins: Sequence[Plugin | str] = (),
        adapter: DatabaseAdapter | None = None,
        settings: Mapping[str, str] | None = None,
        agent_id: str | uuid.UUID | None = None,
        conversation_length: int = 32,
        state_cache_size: int = 1_000,
    ) -> None:
        self._model_settings_of: dict[str, dict[str, object]] = {}
        """``_model_settings`` per model type, until a setting or the character changes."""
        self.character = character.validated()
        self.agent_id = check_id(agent_id or self.character.agent_id, "agent_id")
        self.settings: dict[str, object] = dict(settings or {})
        self.conversation_length = conversation_length
        self.actions: list[Action] = []
        self.providers: list[Provider] = []
        self.evaluators: list[Evaluator] = []
        self.plugins: list[Plugin] = []
        self.elizaos: object | None = None
        """The ``ElizaOS`` this runtime belongs to, if any (``shared.agent.elizaos`` sets it)."""
        self._message_service: MessageService | None = None
        self._requested_plugins = list(plugins)
        self._adapter = adapter
        self._owns_adapter = adapter is None
        self._models: dict[str, list[_ModelEntry]] = {}
        self._events: dict[str, list[EventHandler]] = {}
        self._listeners: dict[str, list[EventHandler]] = {}
        self._send_handlers: dict[str, SendHandler] = {}
        self.default_send_handler: SendHandler | None = None
        """Delivers for sources with no handler of their own (the runtime service: NATS)."""
        self._task_workers: dict[str, TaskWorker] = {}
        self._services: dict[str, list[Service]] = {}
        # Every service class registered, in order: started by each initialize(),
        # so stop() then initialize() brings them all back.
        self._service_classes: list[type[Service]] = []
        self._started_classes: set[type[Service]] = set()
        self._service_waiters: dict[str, asyncio.Future[Service]] = {}
        # Worlds seen since initialize(): WORLD_CONNECTED fires once per world.
        self._connected_worlds: _BoundedCache[bool] = _BoundedCache(state_cache_size)
        # Kept after their turn for get_action_results(message_id); bounded.
        self._action_results: _BoundedCache[list[ActionResult]] = _BoundedCache(state_cache_size)
        self._background: set[asyncio.Task[object]] = set()
        # Audit rows logged outside a turn in one turn of the event loop, written
        # together by one task (``_append_log``); the writes under way, for stop().
        self._log_batch: list[Log] = []
        self._log_write: asyncio.Task[None] | None = None
        self._log_writes: set[asyncio.Task[None]] = set()
        self._initialized = False
        self.has_knowledge = False
        """Whether the agent has knowledge memories (set by ``initialize``): KNOWLEDGE searches."""
        self.embedding_queue: EmbeddingSink | None = None
        """Where memories go for a vector. Set before ``initialize`` to choose (the runtime
        service: the embedding service's JetStream queue); else the bootstrap plugin gives
        the in-process ``EmbeddingQueue``. None: memories keep no vector."""

    # -- lifecycle ------------------------------------------------------------

    @property
    def character(self) -> Character:
        """The agent's character; a new one replaces the settings read from the old."""
        return self._character

    @character.setter
    def character(self, character: Character) -> None:
        self._character = character
        self._model_settings_of.clear()

    @property
    def message_service(self) -> MessageService:
        """The message pipeline (after ``initialize``: the bootstrap plugin's default).

        Raises:
            StateError: the runtime has none (not initialized, or ``IGNORE_BOOTSTRAP``
                without a message service of its own).
        """
        if self._message_service is None:
            raise StateError(
                "the runtime has no message service: await runtime.initialize() (the bootstrap "
                "plugin gives DefaultMessageService), or set runtime.message_service"
            )
        return self._message_service

    @message_service.setter
    def message_service(self, service: MessageService) -> None:
        self._message_service = service

    def has_message_service(self) -> bool:
        """Say whether a message service is set (the bootstrap plugin sets one if not)."""
        return self._message_service is not None

    def is_started(self) -> bool:
        """Say whether ``initialize`` has finished and ``stop`` has not been called since."""
        return self._initialized

    @property
    def adapter(self) -> DatabaseAdapter:
        """The storage of this agent (available after ``initialize``)."""
        if self._adapter is None:
            raise StateError("the runtime has no storage yet: await runtime.initialize() first")
        return self._adapter

    async def initialize(self, *, skip_migrations: bool = False) -> None:
        """Load plugins, open storage, make sure the agent exists, then start services.

        Plugins (those given, else the character's ``plugins``, elizaOS names
        mapped: ``shared.agent.plugin``) load in dependency and priority
        order; the bootstrap plugin is added by name unless ``IGNORE_BOOTSTRAP``
        is set, as elizaOS adds ``@elizaos/plugin-bootstrap``. It brings the
        defaults (``shared.agent.bootstrap``): the message service, the
        in-process embedding queue, the task service and the character's
        ``knowledge``, stored with vectors. With no adapter given, storage is
        ``DATABASE_URL`` (SQLite under ``./.elizamesh/`` by default).
        """
        wanted = list(self._requested_plugins or self.character.plugins)
        if not self.get_setting("IGNORE_BOOTSTRAP"):
            # By name, through the plugin entry points: the bootstrap plugin is
            # built on the runtime, so the runtime does not import it.
            wanted.append(BOOTSTRAP_PLUGIN)
        for plugin in resolve_plugins(wanted, optional=self.character.plugins):
            await self.register_plugin(plugin)
        if self._adapter is None:
            # Imported here: a runtime on the memory service needs no SQLAlchemy (~30 MB).
            from sqlalchemy.exc import DBAPIError  # noqa: PLC0415

            from shared.storage.sql import SqlAdapter  # noqa: PLC0415

            url = check_database_url(str(self.get_setting("DATABASE_URL") or DEFAULT_DATABASE_URL))
            self._adapter = SqlAdapter.from_url(url, self.agent_id)
            try:
                await self._adapter.init(migrate=not skip_migrations)
            except (OSError, DBAPIError) as exc:  # refused, unknown host or database, bad login
                raise DatabaseUnavailableError(url, exc) from exc
        else:
            await self._adapter.init(migrate=not skip_migrations)
        await self._ensure_agent()
        self._initialized = True
        for service_type in self._service_classes:
            if service_type not in self._started_classes:
                await self._start_service(service_type)
        queue = self.embedding_queue
        if queue is not None and self.get_model(ModelType.TEXT_EMBEDDING) is not None:
            queue.start()
            await self._queue_embedding_backlog(queue)

    async def _queue_embedding_backlog(self, queue: EmbeddingSink) -> None:
        """Queue the stored memories that have no vector (left by a stop or a crash), bounded."""
        backlog = await self.adapter.get_memories_without_embeddings(count=EMBEDDING_BACKLOG)
        for memory in backlog:
            await queue.put(memory, "low")
        if backlog:
            logger.info("queued %d stored memories without a vector", len(backlog))

    def inbound_message(self, message: Memory) -> Memory:
        """Return an inbound message with this agent's ids (platform ids mapped), checked.

        See ``shared.agent.edge``: platform ids of any printable form map to
        ``create_unique_uuid(agent_id, platform_id)``; message ids that are
        not UUIDs map per room.

        Raises:
            BadRequest: an id or value over a limit; the details name the field.
        """
        return inbound(self.agent_id, message)

    async def stop(self) -> None:
        """Stop services and background work, and close storage if the runtime opened it.

        Plugins, services, handlers and the ``ElizaOS`` link stay registered:
        ``initialize`` starts the same agent again, services included.
        """
        if self.embedding_queue is not None:
            await self.embedding_queue.stop()
        for services in self._services.values():
            for service in services:
                await service.stop()
        self._services.clear()
        self._started_classes.clear()
        self._connected_worlds.clear()
        # A resolved promise holds a stopped service; the next start makes a new one.
        for name, waiter in list(self._service_waiters.items()):
            if waiter.done():
                del self._service_waiters[name]
        # Audit rows already logged are written, not cancelled (their callers wait for them).
        await asyncio.gather(*self._log_writes, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._owns_adapter and self._adapter is not None:
            await self._adapter.close()
            self._adapter = None
        self._initialized = False

    async def _ensure_agent(self) -> None:
        stored = await self.adapter.get_agent(self.agent_id)
        agent = Agent(
            id=self.agent_id,
            name=self.character.name,
            username=self.character.username,
            character=self.character.public(),
        )
        if stored is None:
            await self.adapter.create_agent(agent)
        else:
            await self.adapter.update_agent(self.agent_id, agent)
        await self._ensure_world(World(id=self.agent_id, name=self.character.name))
        if not await self.adapter.get_entities_by_ids([self.agent_id]):
            await self.adapter.create_entities(
                [Entity(id=self.agent_id, names=[self.character.name])]
            )
        self_room = Room(
            id=self.agent_id,
            name=self.character.name,
            source="elizamesh",
            type=ChannelType.SELF,
            world_id=self.agent_id,
        )
        await self._ensure_rooms([self_room], [self.agent_id])

    # Replicas start the same agents, and may see the same new room at once:
    # "create if absent" must survive the other one creating it first.

    async def _ensure_world(self, world: World) -> bool:
        """Store ``world`` unless it exists; True when this call stored it."""
        if await self.adapter.get_world(world.id) is not None:
            return False
        try:
            await self.adapter.create_world(world)
        except Conflict:
            return False
        return True

    async def _ensure_rooms(
        self, rooms: Sequence[Room], participants: Sequence[str]
    ) -> tuple[list[Room], list[tuple[str, Room]]]:
        """Store the rooms that do not exist and put ``participants`` in every room.

        Returns the rooms this call stored, and the (entity id, room) pairs it
        added (each room's participants are read first, existing rooms only).
        """
        existing = {r.id for r in await self.adapter.get_rooms_by_ids([r.id for r in rooms])}
        new_rooms = [r for r in rooms if r.id not in existing]
        if new_rooms:
            try:
                await self.adapter.create_rooms(new_rooms)
            except Conflict:  # another replica stored them first
                new_rooms = []
        stored = {r.id for r in new_rooms}
        added: list[tuple[str, Room]] = []
        for room in rooms:
            present = (
                set() if room.id in stored else set(await self.get_participants_for_room(room.id))
            )
            missing = [e for e in dict.fromkeys(participants) if e not in present]
            if not missing:
                continue
            with contextlib.suppress(Conflict):
                await self.adapter.add_participants_room(missing, room.id)
            added.extend((entity_id, room) for entity_id in missing)
        return new_rooms, added

    async def _announce_world(self, world: World, *, stored: bool, source: str | None) -> None:
        """WORLD_JOINED for a world just stored, WORLD_CONNECTED for a known one, once."""
        if not stored and world.id in self._connected_worlds:
            return
        self._connected_worlds.put(world.id, True)
        await self.emit_event(
            EventType.WORLD_JOINED if stored else EventType.WORLD_CONNECTED,
            {"world": world, "world_id": world.id, "rooms": [], "entities": [], "source": source},
        )

    async def _announce_rooms(
        self, stored: Sequence[Room], added: Sequence[tuple[str, Room]], source: str | None
    ) -> None:
        """ROOM_JOINED per room stored or the agent was added to; ENTITY_JOINED per other entity."""
        new_ids = {r.id for r in stored}
        joined = [*stored, *(r for e, r in added if e == self.agent_id and r.id not in new_ids)]
        for room in joined:
            await self.emit_event(
                EventType.ROOM_JOINED,
                {"room": room, "room_id": room.id, "world_id": room.world_id, "source": source},
            )
        for entity_id, room in added:
            if entity_id != self.agent_id:
                await self.emit_event(
                    EventType.ENTITY_JOINED,
                    {
                        "entity_id": entity_id,
                        "room_id": room.id,
                        "world_id": room.world_id,
                        "source": source,
                    },
                )

    # -- registration ---------------------------------------------------------

    async def register_plugin(self, plugin: Plugin) -> None:
        """Register everything ``plugin`` brings, after running its ``init``; once per name."""
        key = normalize_plugin_name(plugin.name)
        if any(normalize_plugin_name(p.name) == key for p in self.plugins):
            return
        if plugin.init is not None:
            config = {k: str(self.get_setting(k) or v) for k, v in plugin.config.items()}
            await plugin.init(config, self)
        self.plugins.append(plugin)
        if plugin.adapter is not None and self._adapter is None:
            self._adapter = plugin.adapter
        for action in plugin.actions:
            self.register_action(action)
        for evaluator in plugin.evaluators:
            self.register_evaluator(evaluator)
        for provider in plugin.providers:
            self.register_provider(provider)
        for model_type, model_handler in plugin.models.items():
            self.register_model(model_type, model_handler, plugin.name, plugin.priority)
        for event, event_handlers in plugin.events.items():
            for event_handler in event_handlers:
                self.register_event(event, event_handler)
        for service in plugin.services:
            await self.register_service(service)

    def register_action(self, action: Action) -> None:
        """Add an action; a second action with the same name is ignored (and logged)."""
        if any(a.name == action.name for a in self.actions):
            logger.warning("action %s is already registered; keeping the first", action.name)
            return
        self.actions.append(action)

    def register_provider(self, provider: Provider) -> None:
        """Add a provider; a second provider with the same name replaces nothing (logged)."""
        if any(p.name == provider.name for p in self.providers):
            logger.warning("provider %s is already registered; keeping the first", provider.name)
            return
        self.providers.append(provider)

    def register_evaluator(self, evaluator: Evaluator) -> None:
        """Add an evaluator, once per name."""
        if any(e.name == evaluator.name for e in self.evaluators):
            logger.warning("evaluator %s is already registered; keeping the first", evaluator.name)
            return
        self.evaluators.append(evaluator)

    async def register_service(self, service_type: type[Service]) -> None:
        """Start ``service_type`` now, or once ``initialize`` has finished (and at each restart)."""
        if service_type not in self._service_classes:
            self._service_classes.append(service_type)
        if self._initialized and service_type not in self._started_classes:
            await self._start_service(service_type)

    async def _start_service(self, service_type: type[Service]) -> None:
        service = await service_type.start(self)
        self._started_classes.add(service_type)
        name = service_type.service_type
        self._services.setdefault(name, []).append(service)
        waiter = self._service_waiters.get(name)
        if waiter is not None and not waiter.done():
            waiter.set_result(service)

    # -- services -------------------------------------------------------------

    def get_service(self, service_type: str) -> Service | None:
        """Return the first service of ``service_type``, or None."""
        services = self._services.get(service_type)
        return services[0] if services else None

    def get_services_by_type(self, service_type: str) -> list[Service]:
        """Return every service of ``service_type``."""
        return list(self._services.get(service_type, []))

    def get_all_services(self) -> dict[str, list[Service]]:
        """Return every running service, by type."""
        return {k: list(v) for k, v in self._services.items()}

    def get_registered_service_types(self) -> list[str]:
        """Return the types of the running services."""
        return list(self._services)

    def has_service(self, service_type: str) -> bool:
        """Say whether a service of ``service_type`` is running."""
        return bool(self._services.get(service_type))

    def get_service_load_promise(self, service_type: str) -> Awaitable[Service]:
        """Return an awaitable that resolves to the service once it has started.

        Each caller gets its own awaitable: one that is cancelled (a
        ``wait_for`` that gives up) leaves the others, and later callers,
        waiting for the service as before.
        """
        loop = asyncio.get_running_loop()
        if (running := self.get_service(service_type)) is not None:
            ready: asyncio.Future[Service] = loop.create_future()
            ready.set_result(running)
            return ready
        shared = self._service_waiters.get(service_type)
        if shared is None or shared.done():
            shared = loop.create_future()
            self._service_waiters[service_type] = shared
        return asyncio.shield(shared)

    # -- settings -------------------------------------------------------------

    def get_setting(self, key: str) -> Any:
        """Return a setting, looked up in order of precedence.

        Character secrets, then character settings (and their ``secrets``),
        then the runtime's ``settings``, then the environment. The strings
        "true" and "false" become booleans.
        """
        character = self.character
        nested = character.settings.get("secrets")
        for source in (
            character.secrets,
            character.settings,
            nested if isinstance(nested, dict) else {},
            self.settings,
            environment(),  # the process environment over .env
        ):
            if key in source and source[key] is not None:
                value = source[key]
                if isinstance(value, str) and value.lower() in {"true", "false"}:
                    return value.lower() == "true"
                return value
        return None

    def has_setting(self, key: str) -> bool:
        """Say whether ``get_setting(key)`` finds a value."""
        return self.get_setting(key) is not None

    def set_setting(self, key: str, value: object, secret: bool = False) -> None:
        """Set a runtime setting (below the character's own values).

        With ``secret``, as in elizaOS's ``setSetting(key, value, true)``, the
        value goes to ``character.secrets`` instead, which ``get_setting``
        reads first.
        """
        if secret:
            if not isinstance(value, str | bool | int | float):
                raise BadRequest(
                    f"secret {key} must be text, a number or a boolean",
                    details={"field": key, "rule": "a secret is a scalar"},
                )
            self.character.secrets[key] = value
        else:
            self.settings[key] = value
        self._model_settings_of.clear()

    def get_conversation_length(self) -> int:
        """How many recent messages the state shows (``CONVERSATION_LENGTH`` or 32)."""
        configured = self.get_setting("CONVERSATION_LENGTH")
        return int(configured) if configured else self.conversation_length

    def template(self, name: str) -> str:
        """Return the prompt template ``name``, as the character overrides it."""
        return self.character.templates.get(name) or TEMPLATES[name]

    # -- models ---------------------------------------------------------------

    def register_model(
        self,
        model_type: ModelType | str,
        handler: ModelHandler,
        provider: str = "",
        priority: int = 0,
    ) -> None:
        """Serve ``model_type`` with ``handler``; higher ``priority`` wins, then the first."""
        entries = self._models.setdefault(str(model_type), [])
        entries.append(_ModelEntry((-priority, len(entries)), provider, handler))
        entries.sort()

    def get_model(
        self, model_type: ModelType | str, provider: str | None = None
    ) -> ModelHandler | None:
        """Return the handler that ``use_model`` would call, or None."""
        for entry in self._models.get(str(ModelType.of(model_type)), []):
            if provider is None or entry.provider == provider:
                return entry.handler
        return None

    async def use_model(
        self,
        model_type: ModelType | str,
        params: Mapping[str, object] | str | None = None,
        *,
        provider: str | None = None,
        on_stream_chunk: StreamChunk | None = None,
        **kwargs: object,
    ) -> Any:
        """Call the best handler for ``model_type`` and return its result.

        Per-type settings (``TEXT_LARGE_TEMPERATURE``, then ``DEFAULT_TEMPERATURE``,
        ...) fill parameters the caller left out; they are read once per model
        type and read again after ``set_setting`` or a new ``character`` (not
        after the environment or the settings dicts are changed in place).
        With ``on_stream_chunk``, a text model's chunks are passed on as they
        come and the full text is returned. Every call is logged
        (``useModel:<TYPE>``) and announced (``MODEL_USED``).

        As in elizaOS, ``params`` may be a bare string:
        ``use_model(ModelType.TEXT_EMBEDDING, "text")`` means ``{"text": "text"}``
        (``{"prompt": ...}`` for a text generation model).
        """
        model_type = ModelType.of(model_type)
        if isinstance(params, str):
            key = "prompt" if model_type in STREAMABLE_MODELS else "text"
            params = {key: params}
        if params is not None and _STREAM_CALLBACK_KEYS & params.keys():
            # elizaOS passes ``onStreamChunk`` inside the params; a handler gets no callables.
            given = next(params[k] for k in _STREAM_CALLBACK_KEYS if k in params)
            if on_stream_chunk is None and callable(given):
                on_stream_chunk = given
            params = {k: v for k, v in params.items() if k not in _STREAM_CALLBACK_KEYS}
        handler = self.get_model(model_type, provider)
        if handler is None:
            raise ModelError(
                f"no plugin serves the {model_type} model: add a model plugin "
                "(elizamesh.plugins.openai or elizamesh.plugins.local)"
            )
        merged = {**self._model_settings(str(model_type)), **(params or {}), **kwargs}
        merged.setdefault("user", self.character.name)
        stream = on_stream_chunk is not None and model_type in STREAMABLE_MODELS
        merged["stream"] = stream
        started = time.perf_counter()
        with (
            span(f"model {model_type}", **{"elizamesh.model.type": str(model_type)}),
            timed(MODEL_CALLS, type=str(model_type)),
        ):
            result = await handler(self, merged)
            if isinstance(result, AsyncIterator):
                result = await _collect(result, on_stream_chunk if stream else None)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        turn = current_turn()
        await self.emit_event(
            EventType.MODEL_USED,
            {
                "type": str(model_type),
                "provider": provider,
                "elapsed_ms": elapsed_ms,
                "run_id": turn.run_id if turn is not None else _RUN_ID.get(),
            },
        )
        await self._log(f"useModel:{model_type}", {"elapsed_ms": elapsed_ms, "stream": stream})
        return result

    def _model_settings(self, model_type: str) -> dict[str, object]:
        # 18 lookups through five sources, the environment last: ~9% of a turn's CPU
        # when done at every call (issue 13), hence kept per model type.
        values = self._model_settings_of.get(model_type)
        if values is None:
            values = {}
            for name in MODEL_SETTINGS:
                value = self.get_setting(f"{model_type}_{name}")
                if value is None:
                    value = self.get_setting(f"DEFAULT_{name}")
                if value is not None:
                    values[name.lower()] = _number(value)
            self._model_settings_of[model_type] = values
        return values

    # -- events ---------------------------------------------------------------

    def register_event(self, event: EventType | str, handler: EventHandler) -> None:
        """Call ``handler`` (awaited) whenever ``event`` is emitted."""
        self._events.setdefault(str(event), []).append(handler)

    def get_event(self, event: EventType | str) -> list[EventHandler]:
        """Return the handlers of ``event``."""
        return list(self._events.get(str(event), []))

    async def emit_event(
        self, events: EventType | str | Iterable[EventType | str], payload: Mapping[str, object]
    ) -> None:
        """Run every handler of ``events`` concurrently and wait for them.

        ``runtime`` and ``agent_id`` are added to the payload, and the ids
        that correlate it where the payload lacks them: ``message_id`` and
        ``room_id`` of its ``message``, else of the current turn's message;
        ``run_id`` of the current turn or run. A failing handler is logged;
        it stops neither the other handlers nor the caller.
        """
        names = [str(events)] if isinstance(events, str) else [str(e) for e in events]
        correlated: dict[str, object] | None = None
        for name in names:
            handlers = [*self._events.get(name, []), *self._listeners.get(name, [])]
            if not handlers:  # most events of a turn have no handler: nothing to build
                continue
            if correlated is None:
                correlated = self._correlated(payload)
            body = {**correlated, "runtime": self, "agent_id": self.agent_id, "event": name}
            results = await _concurrently([partial(h, body) for h in handlers])
            for error in results:
                if isinstance(error, Exception):
                    logger.error("a %s handler failed", name, exc_info=error)

    @staticmethod
    def _correlated(payload: Mapping[str, object]) -> dict[str, object]:
        body = dict(payload)
        turn = current_turn()
        message = body.get("message")
        sources: list[tuple[str, str | None]] = []
        if isinstance(message, Memory):
            sources += [("message_id", message.id), ("room_id", message.room_id)]
        if turn is not None:
            sources += [
                ("run_id", turn.run_id),
                ("message_id", turn.message.id),
                ("room_id", turn.message.room_id),
            ]
        sources.append(("run_id", _RUN_ID.get()))
        for key, value in sources:
            if body.get(key) is None and value is not None:
                body[key] = value
        return body

    def on(self, event: EventType | str, handler: EventHandler) -> None:
        """Listen to ``event`` (the same events ``emit_event`` sends)."""
        self._listeners.setdefault(str(event), []).append(handler)

    def off(self, event: EventType | str, handler: EventHandler) -> None:
        """Stop listening to ``event`` with ``handler``."""
        listeners = self._listeners.get(str(event), [])
        if handler in listeners:
            listeners.remove(handler)

    async def emit(self, event: EventType | str, payload: Mapping[str, object]) -> None:
        """Emit ``event`` to every handler and listener (``emit_event`` for one name)."""
        await self.emit_event(event, payload)

    def run_in_background(self, work: Awaitable[T], name: str) -> asyncio.Task[T]:
        """Run ``work`` as a task the runtime keeps (and cancels on ``stop``)."""
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- runs -----------------------------------------------------------------

    def create_run_id(self) -> str:
        """Return a fresh run id."""
        return str(uuid.uuid4())

    def start_run(self, room_id: str | None = None, run_id: str | None = None) -> str:
        """Start a run in the calling task and return its id (``run_id`` if given).

        elizaOS keeps one current run per runtime, so concurrent turns share
        it; here the run belongs to the calling task (a ``contextvars``
        variable) and the tasks it starts, so each turn sees its own.
        """
        del room_id
        chosen = run_id or self.create_run_id()
        _RUN_ID.set(chosen)
        return chosen

    def end_run(self) -> None:
        """End the calling task's run."""
        _RUN_ID.set(None)

    def get_current_run_id(self) -> str:
        """Return the run id of the current turn (a new run if none is going on)."""
        turn = current_turn()
        if turn is not None:
            return turn.run_id
        return _RUN_ID.get() or self.start_run()

    # -- state ----------------------------------------------------------------

    async def compose_state(
        self,
        message: Memory,
        include_list: Sequence[str] | None = None,
        only_include: bool = False,
        skip_cache: bool = False,
        *,
        required: Sequence[str] = (),
    ) -> State:
        """Return the state for ``message``: what the selected providers say.

        Without ``only_include``, every provider that is neither private nor
        dynamic runs, plus those in ``include_list`` and ``required``.
        Providers run concurrently (a task each) and appear in ``position`` order. Results
        merge with the state already composed for the same message (a bounded
        cache). A provider that raises is left out and named in
        ``state.data["provider_errors"]``; the turn goes on. A name in
        ``include_list`` that no provider has is skipped (elizaOS does the
        same: planners name providers freely).

        Raises:
            StateError: a provider named in ``required`` is not registered, or
                it or a provider marked ``required`` raised; ``error.provider``
                names it.
        """
        known = {p.name for p in self.providers}
        for name in required:
            if name not in known:
                raise StateError(
                    f"compose_state: no provider {name!r} is registered "
                    f"(known: {', '.join(sorted(known)) or 'none'})",
                    provider=name,
                )
        wanted = {*(include_list or ()), *required}
        selected = [
            p
            for p in self.providers
            if p.name in wanted or (not only_include and not p.private and not p.dynamic)
        ]
        selected.sort(key=lambda p: p.position)
        # The state cache is the turn's: one per message, never shared by two turns.
        turn = current_turn()
        if turn is None or turn.message.id != message.id:
            turn = None
        cached = State() if skip_cache or turn is None or turn.state is None else turn.state
        base = State(values=dict(cached.values), data=dict(cached.data), text=cached.text)
        with span("compose state", **{"elizamesh.providers": len(selected)}):
            outcomes = await _concurrently(
                [partial(self._provide, p, message, base) for p in selected]
            )
        composed = cached.data.get("providers")
        failed = cached.data.get("provider_errors")
        results: dict[str, ProviderResult] = dict(composed) if isinstance(composed, dict) else {}
        errors: dict[str, str] = dict(failed) if isinstance(failed, dict) else {}
        for provider, outcome in zip(selected, outcomes, strict=True):
            if isinstance(outcome, BaseException) and (
                provider.required or provider.name in required
            ):
                raise StateError(
                    f"compose_state: the required provider {provider.name!r} failed: "
                    f"{type(outcome).__name__}: {outcome}",
                    provider=provider.name,
                ) from outcome
            if isinstance(outcome, BaseException):
                logger.error("provider %s failed", provider.name, exc_info=outcome)
                errors[provider.name] = f"{type(outcome).__name__}: {outcome}"
                results.pop(provider.name, None)
            else:
                results[provider.name] = outcome
                errors.pop(provider.name, None)
        order = {p.name: p.position for p in self.providers}
        ordered = sorted(results.items(), key=lambda item: order.get(item[0], 0))
        text = "\n\n".join(r.text for _, r in ordered if r.text)
        values: dict[str, object] = dict(cached.values)
        for _, result in ordered:
            values.update(result.values)
        values["providers"] = text
        state = State(
            values=values,
            data={**cached.data, "providers": dict(ordered), "provider_errors": errors},
            text=text,
        )
        if turn is not None:
            turn.state = state
        return state

    # -- actions --------------------------------------------------------------

    def find_action(self, name: str) -> Action | None:
        """Return the action called ``name`` (case and underscores ignored, or a simile)."""
        wanted = _normal(name)
        for action in self.actions:
            if _normal(action.name) == wanted:
                return action
        for action in self.actions:
            if any(_normal(s) == wanted for s in action.similes):
                return action
        return None

    async def _provide(self, provider: Provider, message: Memory, state: State) -> ProviderResult:
        with span(f"provider {provider.name}", **{"elizamesh.provider": provider.name}):
            return await provider.get(self, message, state)

    async def process_actions(
        self,
        message: Memory,
        responses: Sequence[Memory],
        state: State,
        callback: Callback | None = None,
        *,
        on_stream_chunk: StreamChunk | None = None,
    ) -> list[ActionResult]:
        """Run the actions the responses ask for, in order, each seeing the results so far.

        An unknown action, a failing ``validate`` or a handler that raises is
        a failed step: its ``ActionResult`` says why, and the steps after it
        still run, seeing the failure in their state (``ACTION_STATE``), so a
        REPLY after a refused action still answers (as elizaOS's
        ``processActions``, which goes on to the next action). Results are
        kept per message (``get_action_results``).
        """
        names = [name for response in responses for name in response.content.actions]
        results: list[ActionResult] = []
        for name in names:
            result = await self.run_action(
                name,
                message=message,
                state=state,
                so_far=results,
                callback=callback,
                responses=responses,
                on_stream_chunk=on_stream_chunk,
            )
            results.append(result)
            state = await self.compose_state(message, ["RECENT_MESSAGES", "ACTION_STATE"])
            state.values.update(result.values)
            working = state.data.setdefault("working_memory", [])
            if not isinstance(working, list):  # a plugin put something else there
                working = state.data["working_memory"] = []
            working.append(result)
            del working[:-MAX_WORKING_MEMORY]
            state.data["action_results"] = list(results)
        return results

    async def run_action(
        self,
        name: str,
        *,
        message: Memory,
        state: State,
        so_far: Sequence[ActionResult] = (),
        parameters: Mapping[str, object] | None = None,
        callback: Callback | None = None,
        responses: Sequence[Memory] = (),
        on_stream_chunk: StreamChunk | None = None,
    ) -> ActionResult:
        """Run one action and return its result; it never raises for the action's faults.

        An unknown name, a refusing ``validate`` or a raising handler give a
        result with ``success=False`` and the reason in ``error``. The step is
        announced (ACTION_STARTED / ACTION_COMPLETED) and stored as an
        ``action_result`` memory.
        """
        action = self.find_action(name)
        run_id = self.get_current_run_id()
        if action is None:
            result = ActionResult(success=False, action=name, error=f"unknown action {name!r}")
            self._keep_action_result(message.id, result)
            return result
        await self.emit_event(
            EventType.ACTION_STARTED,
            {"action": action.name, "message_id": message.id, "run_id": run_id},
        )
        try:
            if not await action.validate(self, message, state):
                result = ActionResult(
                    success=False, action=action.name, error="validate refused this message"
                )
            else:
                options = HandlerOptions(
                    action_context=tuple(so_far),
                    parameters=dict(parameters or {}),
                    on_stream_chunk=on_stream_chunk,
                )
                with span(f"action {action.name}", **{"elizamesh.action": action.name}):
                    returned = await action.handler(
                        self, message, state, options, callback, responses
                    )
                result = _action_result(action.name, returned)
        except Exception as exc:
            logger.exception("action %s failed", action.name)
            result = ActionResult(
                success=False, action=action.name, error=f"{type(exc).__name__}: {exc}"
            )
        self._keep_action_result(message.id, result)
        await self.emit_event(
            EventType.ACTION_COMPLETED,
            {"action": action.name, "message_id": message.id, "run_id": run_id, "result": result},
        )
        await self._remember(
            Memory(
                entity_id=self.agent_id,
                agent_id=self.agent_id,
                room_id=message.room_id,
                world_id=message.world_id,
                content=Content(
                    text=result.text or "",
                    actions=[action.name],
                    metadata={
                        "type": "action_result",
                        "action_name": action.name,
                        "action_status": "completed" if result.success else "failed",
                        "error": result.error,
                        "run_id": run_id,
                    },
                ),
            )
        )
        return result

    def _keep_action_result(self, message_id: str, result: ActionResult) -> None:
        turn = current_turn()
        if turn is not None and turn.message.id == message_id:
            turn.action_results.append(result)
        self._action_results.put(message_id, [*self._action_results.get(message_id, []), result])

    async def _remember(self, memory: Memory) -> None:
        """Store a message: at the turn's commit inside a turn, else now."""
        memory = fitted(memory)
        turn = current_turn()
        if turn is not None:
            turn.memories.append(memory)
        else:
            await self.adapter.create_memory(memory, "messages")

    def get_action_results(self, message_id: str) -> list[ActionResult]:
        """Return the results of the actions run for ``message_id``.

        The current turn's own when it handles ``message_id``; otherwise those
        of a recent message (a bounded number of messages is remembered).
        """
        turn = current_turn()
        if turn is not None and turn.message.id == message_id:
            return list(turn.action_results)
        return list(self._action_results.get(message_id, []))

    # -- evaluators -----------------------------------------------------------

    async def evaluate(
        self,
        message: Memory,
        state: State | None = None,
        did_respond: bool = False,
        callback: Callback | None = None,
        responses: Sequence[Memory] = (),
    ) -> list[str]:
        """Run, concurrently, the evaluators that apply; return the names of those that ran.

        An evaluator applies when ``validate`` accepts the message and the
        agent responded (or the evaluator has ``always_run``). One that raises
        (REFLECTION does when it cannot read the model's answer) is logged and
        reported in ``EVALUATOR_COMPLETED`` with ``status`` "failed" and its
        ``error``; the others go on.
        """
        state = state or await self.compose_state(message, ["RECENT_MESSAGES", "EVALUATORS"])
        chosen = [
            e
            for e in self.evaluators
            if (did_respond or e.always_run) and await e.validate(self, message, state)
        ]

        async def run(evaluator: Evaluator) -> None:
            await self.emit_event(
                EventType.EVALUATOR_STARTED, {"evaluator": evaluator.name, "message_id": message.id}
            )
            error: str | None = None
            try:
                await evaluator.handler(self, message, state, callback, responses)
            except EvaluatorOutputError as exc:  # the model's answer, not a bug: one line
                logger.warning("evaluator %s could not read its answer: %s", evaluator.name, exc)
                error = f"{type(exc).__name__}: {exc}"
            except Exception as exc:
                logger.exception("evaluator %s failed", evaluator.name)
                error = f"{type(exc).__name__}: {exc}"
            await self.emit_event(
                EventType.EVALUATOR_COMPLETED,
                {
                    "evaluator": evaluator.name,
                    "message_id": message.id,
                    "status": "failed" if error else "completed",
                    "error": error,
                },
            )
            await self._log("evaluator", {"evaluator": evaluator.name, "error": error})

        await asyncio.gather(*(run(e) for e in chosen))
        return [e.name for e in chosen]

    # -- memory helpers -------------------------------------------------------

    async def queue_embedding_generation(
        self, memory: Memory, priority: Priority = "normal"
    ) -> None:
        """Queue ``memory`` for a vector (unless it has one, has no text, or no model or queue)."""
        queue = self.embedding_queue
        if memory.embedding is not None or not memory.content.text or queue is None:
            return
        if self.get_model(ModelType.TEXT_EMBEDDING) is None:
            return
        await self.emit_event(
            EventType.EMBEDDING_GENERATION_REQUESTED,
            {"memory_id": memory.id, "room_id": memory.room_id, "priority": priority},
        )
        await queue.put(memory, priority)

    async def add_embedding_to_memory(self, memory: Memory) -> Memory:
        """Return ``memory`` with the vector of its text (computed now)."""
        if memory.embedding is not None:
            return memory
        vector = await self.use_model(ModelType.TEXT_EMBEDDING, {"text": memory.content.text})
        return msgspec.structs.replace(memory, embedding=list(vector))

    async def create_fact(
        self, fact: str | Memory, *, entity_id: str | None = None, room_id: str | None = None
    ) -> str:
        """Store a fact (in the ``facts`` table), with its vector when an embedding model exists."""
        memory = (
            fact
            if isinstance(fact, Memory)
            else Memory(
                entity_id=entity_id or self.agent_id,
                room_id=room_id or self.agent_id,
                content=Content(text=fact),
            )
        )
        if self.get_model(ModelType.TEXT_EMBEDDING) is not None:
            memory = await self.add_embedding_to_memory(memory)
        turn = current_turn()
        if turn is not None:  # stored with the rest of the turn's writes, in one transaction
            turn.facts.append(memory)
            return memory.id
        return await self.adapter.create_memory(memory, "facts")

    async def search_facts(
        self, query: str, count: int = 10, room_id: str | None = None
    ) -> list[Memory]:
        """Return the facts closest to ``query``: by vector if an embedding model exists."""
        if self.get_model(ModelType.TEXT_EMBEDDING) is None:
            return await self.adapter.search_memories_by_text(
                table_name="facts", query=query, count=count, room_id=room_id
            )
        vector = await self.use_model(ModelType.TEXT_EMBEDDING, {"text": query})
        return await self.adapter.search_memories(
            table_name="facts", embedding=list(vector), count=count, room_id=room_id
        )

    # -- elizaOS's call forms -------------------------------------------------

    async def create_memory(
        self, memory: Memory, table_name: str = "messages", unique: bool = True
    ) -> str:
        """Store ``memory`` in ``table_name`` (``messages`` unless named, as elizaOS)."""
        return await super().create_memory(memory, table_name, unique)

    async def search_memories(
        self,
        query: str | None = None,
        count: int = 10,
        *,
        table_name: str = "messages",
        embedding: list[float] | None = None,
        match_threshold: float = 0.0,
        unique: bool = False,
        room_id: str | None = None,
        world_id: str | None = None,
        entity_id: str | None = None,
        include_embeddings: bool = False,
    ) -> list[Memory]:
        """Return the memories of ``table_name`` closest to ``query`` or ``embedding``.

        ``search_memories("previous conversation", 10)`` embeds the text with
        the TEXT_EMBEDDING model, then searches by vector; without an embedding
        model it finds memories whose text contains ``query``, newest first.

        Raises:
            BadRequest: neither or both of ``query`` and ``embedding`` are given.
        """
        if (query is None) == (embedding is None):
            raise BadRequest("search_memories: give either a text query or an embedding")
        if embedding is None:
            if self.get_model(ModelType.TEXT_EMBEDDING) is None:
                return await self.adapter.search_memories_by_text(
                    table_name=table_name,
                    query=str(query),
                    count=count,
                    room_id=room_id,
                    include_embeddings=include_embeddings,
                )
            embedding = list(await self.use_model(ModelType.TEXT_EMBEDDING, {"text": query}))
        return await super().search_memories(
            table_name=table_name,
            embedding=embedding,
            match_threshold=match_threshold,
            count=count,
            unique=unique,
            room_id=room_id,
            world_id=world_id,
            entity_id=entity_id,
            include_embeddings=include_embeddings,
        )

    async def create_entity(self, entity: Entity) -> bool:
        """Store one entity; False (and nothing stored) if it already exists."""
        return await self.create_entities([entity])

    async def get_entity(self, entity_id: str | uuid.UUID) -> Entity | None:
        """Return the entity ``entity_id``, or None if there is none."""
        found = await self.get_entities_by_ids([str(entity_id)])
        return found[0] if found else None

    # -- places, people and messages: stored, then announced -----------------
    # The storage operations whose change other components care about; each
    # emits its event after the change (``EventType`` says which fires when).

    async def create_world(self, world: World) -> str:
        """Store ``world`` and return its id; announced as WORLD_JOINED."""
        world_id = await self.adapter.create_world(world)
        await self._announce_world(world, stored=True, source=None)
        return world_id

    async def remove_world(self, world_id: str) -> None:
        """Delete a world and its rooms; ROOM_LEFT for each room, then WORLD_LEFT."""
        world = await self.adapter.get_world(world_id)
        rooms = await self.adapter.get_rooms_by_world(world_id) if world is not None else []
        await self.adapter.remove_world(world_id)
        self._connected_worlds.pop(world_id, None)
        for room in rooms:
            await self.emit_event(
                EventType.ROOM_LEFT, {"room": room, "room_id": room.id, "world_id": world_id}
            )
        if world is not None:
            await self.emit_event(EventType.WORLD_LEFT, {"world": world, "world_id": world_id})

    async def create_rooms(self, rooms: list[Room]) -> list[str]:
        """Store rooms and return their ids; ROOM_JOINED for each."""
        room_ids = await self.adapter.create_rooms(rooms)
        await self._announce_rooms(rooms, [], None)
        return room_ids

    async def delete_room(self, room_id: str) -> None:
        """Delete a room, its participants and its memories; ROOM_LEFT if it existed."""
        room = await self.get_room(room_id)
        await self.adapter.delete_room(room_id)
        if room is not None:
            await self.emit_event(
                EventType.ROOM_LEFT, {"room": room, "room_id": room_id, "world_id": room.world_id}
            )

    async def add_participants_room(self, entity_ids: list[str], room_id: str) -> bool:
        """Add entities to a room (those in it are left as they are); announce the newcomers.

        ENTITY_JOINED for each entity that was not in the room; ROOM_JOINED
        when the agent itself was not.
        """
        present = set(await self.adapter.get_participants_for_room(room_id))
        added = await self.adapter.add_participants_room(entity_ids, room_id)
        newcomers = [e for e in dict.fromkeys(entity_ids) if e not in present]
        if newcomers and (room := await self.get_room(room_id)) is not None:
            await self._announce_rooms([], [(e, room) for e in newcomers], None)
        return added

    async def remove_participant(self, entity_id: str, room_id: str) -> bool:
        """Take an entity out of a room; False if it was not in it.

        ENTITY_LEFT when it was in it (ROOM_LEFT when it is the agent itself).
        """
        removed = await self.adapter.remove_participant(entity_id, room_id)
        if removed and entity_id == self.agent_id:
            await self.emit_event(EventType.ROOM_LEFT, {"room_id": room_id})
        elif removed:
            await self.emit_event(
                EventType.ENTITY_LEFT, {"entity_id": entity_id, "room_id": room_id}
            )
        return removed

    async def update_entity(self, entity: Entity) -> None:
        """Replace a stored entity's names and metadata, or raise ``NotFound``; ENTITY_UPDATED."""
        await self.adapter.update_entity(entity)
        await self.emit_event(EventType.ENTITY_UPDATED, {"entity": entity, "entity_id": entity.id})

    async def delete_memory(self, memory_id: str) -> None:
        """Delete one memory and its vector; MESSAGE_DELETED if it was a message."""
        found = await self.adapter.get_memories_by_ids([memory_id], "messages")
        await self.adapter.delete_memory(memory_id)
        if found:
            await self.emit_event(EventType.MESSAGE_DELETED, {"message": found[0]})

    async def delete_all_memories(self, room_id: str, table_name: str) -> None:
        """Delete a room's memories of one table, with their vectors.

        CHANNEL_CLEARED when the table is ``messages``.
        """
        await self.adapter.delete_all_memories(room_id, table_name)
        if table_name == "messages":
            await self.emit_event(
                EventType.CHANNEL_CLEARED, {"room_id": room_id, "table_name": table_name}
            )

    async def delete_message(self, message: Memory | str) -> None:
        """As elizaOS ``messageService.deleteMessage``: delete one stored message.

        ``message`` is the message as the connector knows it (its platform
        ids are mapped as when it arrived) or the stored id. MESSAGE_DELETED
        follows when there was such a message; deleting an absent one does
        nothing.

        Raises:
            BadRequest: an id of ``message`` is not a usable id (the field is named).
        """
        memory_id = self.inbound_message(message).id if isinstance(message, Memory) else message
        await self.delete_memory(check_id(memory_id, "message_id"))

    async def clear_channel(self, room_id: str, channel_id: str | None = None) -> int:
        """As elizaOS ``messageService.clearChannel``: delete every message of a room.

        ``room_id`` is the agent's id of the room or the platform's (mapped as
        for messages). Returns how many messages were deleted; emits
        CHANNEL_CLEARED with ``room_id``, ``channel_id`` and ``deleted``.

        Raises:
            BadRequest: ``room_id`` is not a usable id.
        """
        room = agent_id_for(self.agent_id, room_id, "room_id")
        deleted = await self.adapter.count_memories(room, table_name="messages")
        await self.adapter.delete_all_memories(room, "messages")
        await self.emit_event(
            EventType.CHANNEL_CLEARED,
            {
                "room_id": room,
                "channel_id": channel_id,
                "table_name": "messages",
                "deleted": deleted,
            },
        )
        return deleted

    async def send_control_message(
        self, room_id: str, action: str, target: str | None = None
    ) -> None:
        """As elizaOS ``sendControlMessage``: tell the room's clients to enable or disable input.

        Emits CONTROL_MESSAGE with ``message`` = ``{"type": "control",
        "payload": {"action", "target"}, "room_id"}`` (and ``action``,
        ``target`` at the top); the client's connector acts on it.

        Raises:
            BadRequest: ``action`` is not one of ``CONTROL_ACTIONS``, or
                ``room_id`` is not a usable id (the field is named).
        """
        if action not in CONTROL_ACTIONS:
            raise BadRequest(
                f"send_control_message: action must be one of {sorted(CONTROL_ACTIONS)}, "
                f"got {action!r}",
                details={"field": "action"},
            )
        room = agent_id_for(self.agent_id, room_id, "room_id")
        control = {
            "type": "control",
            "payload": {"action": action, "target": target},
            "room_id": room,
        }
        await self.emit_event(
            EventType.CONTROL_MESSAGE,
            {
                "message": control,
                "room_id": room,
                "action": action,
                "target": target,
                "source": "agent",
            },
        )

    # -- the rest of elizaOS's IAgentRuntime / IDatabaseAdapter ---------------
    # One thin method per elizaOS name, over the storage operations above.
    # Names elizamesh cannot honour are in ``ELIZAOS_EXCLUDED`` with the reason.

    async def get_entity_by_id(self, entity_id: str | uuid.UUID) -> Entity | None:
        """As elizaOS ``getEntityById``: the entity ``entity_id``, or None."""
        return await self.get_entity(entity_id)

    async def get_entities_for_room(self, room_id: str) -> list[Entity]:
        """As elizaOS ``getEntitiesForRoom``: the entities taking part in ``room_id``.

        Components are not attached (``Entity`` has no such field): read them
        with ``get_components``.
        """
        return await self.get_entities_by_ids(await self.get_participants_for_room(room_id))

    async def get_room(self, room_id: str) -> Room | None:
        """As elizaOS ``getRoom``: the room ``room_id``, or None."""
        found = await self.get_rooms_by_ids([room_id])
        return found[0] if found else None

    async def get_rooms(self, world_id: str) -> list[Room]:
        """As elizaOS ``getRooms``: the rooms of the world ``world_id``."""
        return await self.get_rooms_by_world(world_id)

    async def create_room(self, room: Room) -> str:
        """As elizaOS ``createRoom``: store one room and return its id."""
        return (await self.create_rooms([room]))[0]

    async def delete_rooms_by_world_id(self, world_id: str) -> None:
        """As elizaOS ``deleteRoomsByWorldId``: delete every room of the world."""
        for room in await self.get_rooms_by_world(world_id):
            await self.delete_room(room.id)

    async def get_rooms_for_participants(self, entity_ids: Sequence[str]) -> list[str]:
        """As elizaOS ``getRoomsForParticipants``: ids of the rooms any of ``entity_ids`` is in."""
        rooms: dict[str, None] = {}
        for entity_id in entity_ids:
            rooms.update(dict.fromkeys(await self.get_rooms_for_participant(entity_id)))
        return list(rooms)

    async def add_participant(self, entity_id: str, room_id: str) -> bool:
        """As elizaOS ``addParticipant``: put ``entity_id`` in the room ``room_id``."""
        return await self.add_participants_room([entity_id], room_id)

    async def get_participants_for_entity(self, entity_id: str) -> list[Participant]:
        """As elizaOS ``getParticipantsForEntity``: a ``Participant`` per room of the entity."""
        entity = await self.get_entity(entity_id)
        if entity is None:
            return []
        rooms = await self.get_rooms_for_participant(entity_id)
        return [Participant(room_id=room_id, entity=entity) for room_id in rooms]

    async def ensure_participant_in_room(self, entity_id: str, room_id: str) -> None:
        """As elizaOS ``ensureParticipantInRoom``: add the entity to the room unless it is in it.

        Raises:
            NotFound: there is no such entity or room.
        """
        if await self.get_entity(entity_id) is None:
            raise NotFound(f"no entity {entity_id}")
        if await self.get_room(room_id) is None:
            raise NotFound(f"no room {room_id}")
        if not await self.is_room_participant(room_id, entity_id):
            with contextlib.suppress(Conflict):
                await self.add_participants_room([entity_id], room_id)

    async def ensure_world_exists(self, world: World) -> None:
        """As elizaOS ``ensureWorldExists``: store ``world`` unless one with its id exists.

        WORLD_JOINED when it is stored; WORLD_CONNECTED the first time since
        ``initialize`` that it was there already.
        """
        stored = await self._ensure_world(world)
        await self._announce_world(world, stored=stored, source=None)

    async def ensure_room_exists(self, room: Room) -> None:
        """As elizaOS ``ensureRoomExists``: store ``room`` unless one with its id exists.

        ROOM_JOINED when it is stored.
        """
        if await self.get_room(room.id) is None:
            with contextlib.suppress(Conflict):
                await self.create_rooms([room])

    async def get_relationship(
        self, source_entity_id: str, target_entity_id: str
    ) -> Relationship | None:
        """As elizaOS ``getRelationship``: the link from source to target, or None."""
        for relationship in await self.get_relationships(source_entity_id):
            if (relationship.source_entity_id, relationship.target_entity_id) == (
                source_entity_id,
                target_entity_id,
            ):
                return relationship
        return None

    async def get_memories_by_world_id(
        self, world_id: str, count: int | None = None, table_name: str = "messages"
    ) -> list[Memory]:
        """As elizaOS ``getMemoriesByWorldId``: the memories of a world, newest first."""
        return await self.get_memories(table_name=table_name, world_id=world_id, count=count)

    async def get_all_memories(self) -> list[Memory]:
        """As elizaOS ``getAllMemories``: the agent's memories, up to 10,000 per table."""
        found: list[Memory] = []
        for table_name in ALL_MEMORY_TABLES:
            found.extend(await self.get_memories(table_name=table_name, count=10_000))
        return found

    async def delete_many_memories(self, memory_ids: Sequence[str]) -> None:
        """As elizaOS ``deleteManyMemories``: delete each memory of ``memory_ids``."""
        for memory_id in memory_ids:
            await self.delete_memory(memory_id)

    async def clear_all_agent_memories(self) -> None:
        """As elizaOS ``clearAllAgentMemories``: delete what ``get_all_memories`` returns."""
        await self.delete_many_memories([m.id for m in await self.get_all_memories()])

    async def generate_text(
        self,
        input: str,
        *,
        include_character: bool = True,
        model_type: ModelType | str = ModelType.TEXT_LARGE,
        **params: object,
    ) -> GenerateTextResult:
        """As elizaOS ``generateText``: a text model's answer, with the character.

        Raises:
            BadRequest: ``input`` is blank.
        """
        if not input.strip():
            raise BadRequest("generate_text: the input is empty")
        prompt = input
        if include_character:
            c = self.character
            bio = " ".join(c.bio) if isinstance(c.bio, list) else c.bio
            styles = [*c.style.all, *c.style.chat]
            parts = [f"# About {c.name}\n{bio}" if bio else "", c.system or ""]
            if styles:
                parts.append("Style:\n" + "\n".join(f"- {s}" for s in styles))
            if context := "\n\n".join(p for p in parts if p):
                prompt = f"{context}\n\n{input}"
        text = await self.use_model(model_type, {**params, "prompt": prompt})
        return GenerateTextResult(text=str(text))

    async def init(self) -> None:
        """As elizaOS ``init`` (adapter): open the storage, as ``initialize`` does."""
        await self.adapter.init()

    async def is_ready(self) -> bool:
        """As elizaOS ``isReady``: whether the runtime is initialized and has its storage."""
        return self._initialized and self._adapter is not None

    async def close(self) -> None:
        """As elizaOS ``close`` (adapter): close the storage (``stop`` also stops services)."""
        await self.adapter.close()

    def register_database_adapter(self, adapter: DatabaseAdapter) -> None:
        """As elizaOS ``registerDatabaseAdapter``: use ``adapter`` as the storage.

        Raises:
            StateError: the runtime already has storage.
        """
        if self._adapter is not None:
            raise StateError("the runtime already has a database adapter")
        self._adapter = adapter
        self._owns_adapter = False

    # -- connections ----------------------------------------------------------

    async def ensure_connection(
        self,
        *,
        entity_id: str,
        room_id: str,
        world_id: str | None = None,
        world_name: str | None = None,
        user_name: str | None = None,
        name: str | None = None,
        source: str = "unknown",
        channel_id: str | None = None,
        message_server_id: str | None = None,
        type: ChannelType = ChannelType.DM,
        metadata: Mapping[str, object] | None = None,
        user_id: str | None = None,
    ) -> None:
        """Make sure the entity, world and room exist, with the user and the agent in the room.

        ``user_id`` (elizaOS's ``userId``) is the owner of the world: a world
        created here records it as ``metadata.ownership.owner_id`` with the
        OWNER role (see ``shared.agent.worlds``).

        Announces what changed: WORLD_JOINED (or WORLD_CONNECTED, once),
        ROOM_JOINED, ENTITY_JOINED, ENTITY_UPDATED (names added).
        """
        world_id = world_id or room_id
        names = [n for n in (name, user_name) if n]
        found = await self.adapter.get_entities_by_ids([entity_id])
        known = found[0] if found else None
        if known is None:
            created = Entity(
                id=entity_id, names=names or [entity_id], metadata={source: dict(metadata or {})}
            )
            await self.adapter.create_entities([created])
        elif names and not set(names) <= set(known.names):
            merged = Entity(
                id=entity_id,
                names=list(dict.fromkeys([*known.names, *names])),
                metadata={
                    **known.metadata,
                    source: {**known.metadata.get(source, {}), **(metadata or {})},
                },
            )
            await self.adapter.update_entity(merged)
            await self.emit_event(
                EventType.ENTITY_UPDATED,
                {"entity": merged, "entity_id": entity_id, "room_id": room_id, "source": source},
            )
        world = World(
            id=world_id,
            name=world_name or world_id,
            message_server_id=message_server_id,
            metadata=(
                {"ownership": {"owner_id": user_id}, "roles": {user_id: "OWNER"}} if user_id else {}
            ),
        )
        await self._announce_world(world, stored=await self._ensure_world(world), source=source)
        room = Room(
            id=room_id,
            name=name or room_id,
            source=source,
            type=type,
            channel_id=channel_id,
            message_server_id=message_server_id,
            world_id=world_id,
        )
        stored, added = await self._ensure_rooms([room], [entity_id, self.agent_id])
        await self._announce_rooms(stored, added, source)

    async def ensure_connections(
        self, entities: Sequence[Entity], rooms: Sequence[Room], source: str, world: World
    ) -> None:
        """Set up many entities and rooms of one world at once (few round trips).

        Announces as ``ensure_connection`` does (the world, each room stored,
        each entity added to a room).
        """
        stored_world = await self._ensure_world(world)
        await self._announce_world(world, stored=stored_world, source=source)
        known = {e.id for e in await self.adapter.get_entities_by_ids([e.id for e in entities])}
        if fresh := [e for e in entities if e.id not in known]:
            with contextlib.suppress(Conflict):
                await self.adapter.create_entities(fresh)
        stored, added = await self._ensure_rooms(rooms, [*(e.id for e in entities), self.agent_id])
        await self._announce_rooms(stored, added, source)

    async def announce_connection(self, context: TurnContext, source: str) -> None:
        """Announce what ``begin_turn`` stored for a turn, as ``ensure_connection`` does.

        WORLD_JOINED for the world it stored, ROOM_JOINED for the room it
        stored (or put the agent in), ENTITY_JOINED per other entity it put in
        the room. Nothing when the turn found everything in place.
        """
        if context.world is not None and context.world_created:
            await self._announce_world(context.world, stored=True, source=source)
        room = context.room
        added = [(entity_id, room) for entity_id in context.participants_added]
        await self._announce_rooms([room] if context.room_created else [], added, source)

    # -- tasks ----------------------------------------------------------------

    def register_task_worker(self, worker: TaskWorker) -> None:
        """Run tasks called ``worker.name`` with ``worker``."""
        self._task_workers[worker.name] = worker

    def get_task_worker(self, name: str) -> TaskWorker | None:
        """Return the worker of tasks called ``name``, or None."""
        return self._task_workers.get(name)

    # -- sending --------------------------------------------------------------

    def register_send_handler(self, source: str, handler: SendHandler) -> None:
        """Deliver messages for ``source`` (a platform) with ``handler``."""
        self._send_handlers[source] = handler

    async def send_message_to_target(self, target: TargetInfo, content: Content) -> None:
        """Send ``content`` to ``target`` through the send handler of its source."""
        handler = self._send_handlers.get(target.source, self.default_send_handler)
        if handler is None:
            raise NotFound(f"no send handler is registered for source {target.source!r}")
        await handler(self, target, content)

    # -- multi-agent ----------------------------------------------------------

    def has_elizaos(self) -> bool:
        """Say whether this runtime belongs to an ``ElizaOS`` (``runtime.elizaos``)."""
        return self.elizaos is not None

    async def _log(self, kind: str, body: Mapping[str, object]) -> None:
        """Append an audit row: at the turn's commit inside a turn, else now (``_append_log``)."""
        turn = current_turn()
        run_id = turn.run_id if turn is not None else _RUN_ID.get()
        entry = Log(
            entity_id=self.agent_id,
            room_id=turn.message.room_id if turn is not None else None,
            type=kind,
            body={**body, "run_id": run_id},
        )
        if turn is not None:
            turn.logs.append(entry)
        elif self._adapter is not None:  # a runtime used for its models only keeps no rows
            await self._append_log(entry)

    async def _append_log(self, entry: Log) -> None:
        """Write ``entry`` with the rows logged beside it, in one commit; return once it is stored.

        Outside a turn, the rows come from background work side by side (the
        embedding queue embeds ten memories at once, each a logged model
        call): one transaction each was ~3% of the embedded lane's CPU. The
        rows logged in one turn of the event loop share a write, made by a
        task that starts at the next turn; each caller waits for that write
        (shielded: one caller cancelled cancels nobody's row).

        Raises:
            Exception: what the storage raised for the shared write.
        """
        self._log_batch.append(entry)
        write = self._log_write
        if write is None:
            write = self._log_write = asyncio.create_task(self._write_logs(), name="audit-log")
            self._log_writes.add(write)
            write.add_done_callback(self._log_writes.discard)
        await asyncio.shield(write)

    async def _write_logs(self) -> None:
        entries, self._log_batch, self._log_write = self._log_batch, [], None
        if len(entries) == 1:
            await self.adapter.log(entries[0])
        else:
            await self.adapter.commit_turn(TurnCommit(logs=entries))


async def _concurrently(work: Sequence[Callable[[], Awaitable[T]]]) -> list[T | BaseException]:
    """Call each of ``work`` in a task of its own and wait for them all.

    As ``gather(..., return_exceptions=True)``: outcomes in the order of
    ``work``, exceptions (raised by a call or its awaitable) as values; each
    runs in a copy of the caller's context; cancelling the caller cancels
    them. A task each, not the caller's task for a first step: code that ties
    state to the current task (anyio's cancel scopes in the OpenAI client,
    ``asyncio.timeout``) breaks when its coroutine changes task midway.
    """

    async def called(call: Callable[[], Awaitable[T]]) -> T:
        return await call()

    return await asyncio.gather(*(called(call) for call in work), return_exceptions=True)


async def _collect(chunks: AsyncIterator[str], on_chunk: StreamChunk | None) -> str:
    parts: list[str] = []
    async for chunk in chunks:
        parts.append(chunk)
        if on_chunk is not None:
            await on_chunk(chunk, None)
    return "".join(parts)


def _action_result(name: str, returned: ActionResult | bool | None) -> ActionResult:
    if isinstance(returned, ActionResult):
        return (
            returned if returned.action else ActionResult(**{**returned.__dict__, "action": name})
        )
    if returned is False:
        return ActionResult(success=False, action=name, error="the action returned False")
    return ActionResult(success=True, action=name)


def _normal(name: str) -> str:
    return name.lower().replace("_", "")


def _number(value: object) -> object:
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value
    return value
