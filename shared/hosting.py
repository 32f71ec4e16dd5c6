"""Hosting agents behind NATS: what the runtime service does with each request.

``AgentHost`` keeps the agents of one runtime replica. Their storage is the
memory service (``NatsMemoryClient``); their lifecycle events go to the
events stream. Two guarantees hold across any number of replicas:

- **Idempotency.** The message id is the key of a turn: its outcome is stored
  with its writes (``commit_turn``), so a redelivered or re-sent message gets
  the stored outcome and never reaches the model twice once that happened;
  before that, the model's plan is recorded (``progress_key``), so a turn cut
  off after planning continues from the plan, under the same reply id.
- **Rooms in order.** Each room's messages run one at a time, in arrival
  order, on the replica that holds the room's lease; a dead replica's rooms
  are free again within ``ROOM_LEASE_SECONDS`` (``shared.rooms`` says how,
  and what is not guaranteed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import nats.errors
from faststream.nats import NatsBroker

from contracts import Content, Error, HandleMessage, HandleMessageResult, Subjects
from contracts.control import AddAgent, AgentChanged, AgentHealth, AgentStatus, OutboundMessage
from contracts.events import AgentEventOccurred, AgentInfo, RunChunk, RunEnded, RunResponse
from contracts.records import Agent, Memory
from shared.agent.character import Character
from shared.agent.edge import agent_id_for, message_id_for
from shared.agent.message_service import MessageOptions
from shared.agent.plugin import resolve_plugins
from shared.agent.runtime import AgentRuntime, TargetInfo
from shared.agent.types import EventHandler, EventType, ModelType, Plugin
from shared.bus import as_service_error, bounded, ensure_stream, error_headers
from shared.config import HostSettings
from shared.embedding import JetStreamEmbeddingQueue, ensure_embedding_stream
from shared.errors import BadRequest, Conflict, Internal, NotFound, Unavailable
from shared.evaluation import JetStreamEvaluation, ensure_evaluation_stream
from shared.events import EventPublisher
from shared.outbound import ensure_outbound_stream
from shared.remote import remote_action, remote_provider
from shared.rooms import LEASE_SECONDS, Arrival, RoomScheduler, agreed_id
from shared.runs import beat, heartbeat, heartbeat_interval
from shared.secrets import SECRETS_CACHE_KEY, SecretBox
from shared.storage.adapter import DatabaseAdapter
from shared.storage.client import memory_client

logger = logging.getLogger("elizamesh.hosting")


@dataclass(frozen=True)
class HostedAgents:
    """Which agents a service hosts, from the environment.

    ``AGENT_CHARACTERS``: JSON files, comma-separated. ``AGENT_PLUGINS``:
    default ``openai`` when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set,
    else ``local``. ``REMOTE_PROVIDERS``: names of providers served over NATS
    (``<ns>.provider.<name>.get``), asked with ``PROVIDER_TIMEOUT`` seconds
    (default 2) each. ``REMOTE_ACTIONS``: names of actions served over NATS
    (``<ns>.action.<name>.invoke``). ``ELIZAMESH_SECRET_KEY`` (else
    ``SECRET_SALT``): the key the secrets of agents added over the API are
    encrypted with (``shared.secrets``); the same on every replica.
    """

    characters: tuple[Path, ...] = ()
    plugins: tuple[str, ...] = ("local",)
    remote_providers: tuple[str, ...] = ()
    provider_timeout: float = 2.0
    remote_actions: tuple[str, ...] = ()
    secret_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HostedAgents:
        """Read them from ``environ`` (default: the environment and ``.env``).

        Raises:
            SettingsError: a value is not valid; the message names the variable.
        """
        return cls.from_settings(HostSettings.from_env(environ))

    @classmethod
    def from_settings(cls, settings: HostSettings) -> HostedAgents:
        """The agents a runtime or evaluator service's settings name."""
        return cls(
            characters=settings.agent_characters,
            plugins=settings.plugins,
            remote_providers=settings.remote_providers,
            provider_timeout=settings.provider_timeout,
            remote_actions=settings.remote_actions,
            secret_key=settings.secret_key,
        )


class AgentHost:
    """The agents of one runtime replica, and how a request becomes a turn.

    The stored agents (memory service) are the truth: an agent added on one
    replica is stored, and any other replica starts its own copy on the first
    message for it; a stop or delete is stored, then announced on
    ``<ns>.agents.changed`` so every replica brings its copy in line.
    """

    def __init__(
        self,
        broker: NatsBroker,
        subjects: Subjects,
        agents: HostedAgents | None = None,
        *,
        lease_seconds: float = LEASE_SECONDS,
        turns_in_parallel: int = 16,
        remote_embeddings: bool = False,
        remote_evaluators: bool = False,
        run_tasks: bool = True,
    ) -> None:
        self.broker = broker
        self.run_tasks = run_tasks
        self.subjects = subjects
        self.agents = agents or HostedAgents()
        self.lease_seconds = lease_seconds
        self.remote_embeddings = remote_embeddings
        self.remote_evaluators = remote_evaluators
        self.runtimes: dict[str, AgentRuntime] = {}
        self.secrets = SecretBox(self.agents.secret_key)
        self._started_at: dict[str, float] = {}
        self.rooms = RoomScheduler(
            broker,
            subjects,
            self._serve,
            lease_seconds=lease_seconds,
            turns_in_parallel=turns_in_parallel,
            arrived=self._arrived,
            still_waiting=self._still_waiting,
            waiting_every=heartbeat_interval(),
        )
        self._loading: dict[str, asyncio.Lock] = {}
        # Events leave without stalling the turn: a bounded window of unacknowledged publishes.
        self.events = EventPublisher(broker, stream=subjects.events_stream)

    async def open(self) -> None:
        """Declare the streams (idempotent); call once connected.

        The room-lease bucket is declared by the first message handled (only
        the runtime handles messages; the evaluator hosts agents too).
        """
        await ensure_stream(
            self.broker, self.subjects.events_stream, [self.subjects.events_template]
        )
        await ensure_stream(
            self.broker, self.subjects.runs_stream, [self.subjects.runs_template], max_age=3600
        )
        await ensure_outbound_stream(self.broker, self.subjects)
        if self.remote_embeddings:
            await ensure_embedding_stream(self.broker, self.subjects)
        if self.remote_evaluators:
            await ensure_evaluation_stream(self.broker, self.subjects)

    @property
    def storage(self) -> DatabaseAdapter:
        """The memory service, for agent records (which belong to no one agent)."""
        return memory_client(self.broker, agent_id="elizamesh", subjects=self.subjects)

    async def add(
        self,
        character: Character,
        plugins: Sequence[Plugin | str] = (),
        settings: Mapping[str, str] | None = None,
    ) -> AgentRuntime:
        """Start an agent whose storage is the memory service; return its runtime.

        Plugins: ``plugins``, else the character's, else ``AGENT_PLUGINS``.
        """
        adapter = memory_client(self.broker, agent_id=character.agent_id, subjects=self.subjects)
        if not self.run_tasks:
            # The runtime service runs the agents' tasks; a host for evaluators polls none.
            settings = {**(settings or {}), "TASK_LOOP": "off"}
        chosen = list(plugins) or list(character.plugins) or list(self.agents.plugins)
        runtime = AgentRuntime(
            character=character, plugins=chosen, adapter=adapter, settings=settings
        )
        for event in EventType:
            runtime.on(event, self._publisher(runtime.agent_id, event))
        if self.remote_embeddings:
            runtime.embedding_queue = JetStreamEmbeddingQueue(
                self.broker, self.subjects, runtime.agent_id
            )
        runtime.default_send_handler = self._send_outbound
        await runtime.initialize()
        if self.remote_evaluators:
            runtime.message_service.evaluation = JetStreamEvaluation(self.broker, self.subjects)
        for name in self.agents.remote_providers:
            runtime.register_provider(
                remote_provider(
                    self.broker, self.subjects, name, timeout=self.agents.provider_timeout
                )
            )
        for name in self.agents.remote_actions:
            runtime.register_action(remote_action(self.broker, self.subjects, name))
        self.runtimes[runtime.agent_id] = runtime
        self._started_at[runtime.agent_id] = time.monotonic()
        return runtime

    async def host_characters(self, *, wait: float = 30) -> None:
        """Open the host and start an agent per character file (``AGENT_CHARACTERS``).

        No character file can stop the service: one that cannot be read, parsed
        or started (a bad path, ``CharacterError``, ``PluginError``, a plugin
        that fails to start) is logged as an error naming the file and the
        problem, and the other files' agents are hosted as usual.

        The memory service may start after this one: ``Unavailable`` is retried
        for up to ``wait`` seconds.

        Raises:
            Unavailable: the memory service is still unreachable after ``wait``.
        """
        await self.open()
        for path in self.agents.characters:
            try:
                character = Character.from_file(path)
                await self._add_when_storage_is_up(character, wait=wait)
            except Unavailable:
                raise
            except BadRequest as exc:
                problem = str(exc)
            except Exception:  # one agent must never stop the others
                logger.exception("character file %s not hosted: its agent failed to start", path)
                continue
            else:
                logger.info("hosting agent %s (%s)", character.name, character.agent_id)
                continue
            logger.error("character file %s not hosted: %s", path, problem)

    async def _add_when_storage_is_up(self, character: Character, *, wait: float) -> None:
        """``add(character)``, retrying ``Unavailable`` for up to ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            try:
                await self.add(character)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                logger.info("memory service not reachable yet; retrying")
                await asyncio.sleep(1)
            else:
                return

    async def runtime_for(self, agent_id: str) -> AgentRuntime:
        """The runtime of ``agent_id``, started here from its stored character if need be.

        Raises:
            NotFound: no such agent is stored, or it is stopped.
        """
        if (runtime := self.runtimes.get(agent_id)) is not None:
            # The stored agent stays the truth: each turn reads it with the rest
            # of its context (begin_turn), so a stop made on another replica
            # holds here at once, before its agents.changed arrives.
            return runtime
        async with self._loading.setdefault(agent_id, asyncio.Lock()):
            if (runtime := self.runtimes.get(agent_id)) is not None:
                return runtime
            stored = await self.storage.get_agent(agent_id)
            if stored is None or not stored.enabled:
                state = "stopped" if stored is not None else "unknown"
                raise NotFound(f"agent {agent_id} is {state}")
            logger.info("starting stored agent %s (%s) here", stored.name, agent_id)
            character = Character.parse({**stored.character, "id": agent_id})
            storage = memory_client(self.broker, agent_id=agent_id, subjects=self.subjects)
            if (sealed := await storage.get_cache(SECRETS_CACHE_KEY)) is not None:
                character = self.secrets.open_into(character, sealed)
            return await self.add(character)

    # -- agents over NATS -------------------------------------------------------

    async def create(self, request: AddAgent) -> AgentStatus:
        """Store and start a new agent (``<ns>.agents.add``).

        Its ``secrets`` and ``settings.secrets`` are stored encrypted, apart
        from the character (``shared.secrets``), so that every replica, and
        this one after a restart, starts it with them.

        Raises:
            BadRequest: the character or a plugin is invalid.
            SecretKeyMissingError: it has secrets, and no ``ELIZAMESH_SECRET_KEY`` is set.
            Conflict: an agent with this id exists (start, stop or delete it instead).
        """
        character = Character.parse(request.character)
        if request.plugins:
            character = msgspec.structs.replace(character, plugins=list(request.plugins))
        resolve_plugins(character.plugins or self.agents.plugins)  # a bad name is a 400, not a 500
        sealed = self.secrets.seal(character)
        agent_id = character.agent_id
        storage = memory_client(self.broker, agent_id=agent_id, subjects=self.subjects)
        # Stored stopped until its secrets are: no replica may start it without
        # them. Starting it here (``add``) enables it.
        stopped = Agent(
            id=agent_id,
            name=character.name,
            username=character.username,
            enabled=False,
            character=character.public(),
        )
        if not await storage.create_agent(stopped):
            raise Conflict(f"agent {agent_id} exists; start, stop or delete it")
        try:
            if sealed is not None:
                await storage.set_cache(SECRETS_CACHE_KEY, sealed)
            await self.add(character)
        except Exception:
            logger.warning("agent %s did not start; removing what was stored of it", agent_id)
            await storage.delete_agent(agent_id)
            raise
        await self._announce(agent_id)
        return AgentStatus(id=agent_id, name=character.name, enabled=True)

    async def command(self, agent_id: str, command: str) -> AgentStatus:
        """``start``, ``stop`` or ``delete`` a stored agent, here and (announced) everywhere.

        Raises:
            NotFound: no such agent is stored.
        """
        stored = await self.storage.get_agent(agent_id)
        if stored is None:
            raise NotFound(f"agent {agent_id} does not exist")
        if command == "delete":
            await self._drop(agent_id)
            await self.storage.delete_agent(agent_id)
        else:
            enabled = msgspec.structs.replace(stored, enabled=command == "start")
            await self.storage.update_agent(agent_id, enabled)
            await self.reconcile(agent_id)
        await self._announce(agent_id)
        return AgentStatus(
            id=agent_id,
            name=stored.name,
            enabled=command == "start",
            deleted=command == "delete",
        )

    async def reconcile(self, agent_id: str) -> None:
        """Bring this replica's copy of ``agent_id`` in line with the stored agent."""
        stored = await self.storage.get_agent(agent_id)
        if stored is None or not stored.enabled:
            await self._drop(agent_id)
        elif agent_id not in self.runtimes:
            await self.runtime_for(agent_id)

    async def list(self) -> list[AgentInfo]:
        """Every stored agent, enabled or stopped."""
        return [
            AgentInfo(id=a.id, name=a.name, enabled=a.enabled)
            for a in await self.storage.get_agents()
        ]

    async def probe(self, agent_id: str, *, check_model: bool) -> AgentHealth:
        """How ``agent_id`` is doing here: its storage answers, and its model if asked."""
        runtime = await self.runtime_for(agent_id)
        uptime = time.monotonic() - self._started_at.get(agent_id, time.monotonic())
        try:
            await runtime.adapter.get_agent(agent_id)
        except Exception as exc:
            return AgentHealth(
                agent_id=agent_id, alive=True, responsive=False, uptime=uptime, error=str(exc)
            )
        model_ok = None
        if check_model:
            try:
                answer = await runtime.use_model(
                    ModelType.TEXT_SMALL, {"prompt": "Say OK.", "max_tokens": 5}
                )
                model_ok = bool(str(answer).strip())
            except Exception as exc:
                logger.warning("agent %s: its text model did not answer: %s", agent_id, exc)
                model_ok = False
        return AgentHealth(
            agent_id=agent_id, alive=True, responsive=True, model_ok=model_ok, uptime=uptime
        )

    async def _drop(self, agent_id: str) -> None:
        runtime = self.runtimes.pop(agent_id, None)
        self._started_at.pop(agent_id, None)
        if runtime is not None:
            await runtime.stop()
            logger.info("stopped agent %s here", agent_id)

    async def _announce(self, agent_id: str) -> None:
        await self.broker.publish(AgentChanged(agent_id=agent_id), self.subjects.agents_changed)

    async def _send_outbound(
        self, runtime: AgentRuntime, target: TargetInfo, content: Content
    ) -> None:
        """``send_message_to_target`` for sources with no local handler: the connectors' stream."""
        message = OutboundMessage(
            agent_id=runtime.agent_id,
            source=target.source,
            content=content,
            room_id=target.room_id,
            channel_id=target.channel_id,
            server_id=target.server_id,
            entity_id=target.entity_id,
            thread_id=target.thread_id,
        )
        await self.broker.publish(
            message, self.subjects.outbound(target.source), stream=self.subjects.outbound_stream
        )

    async def stop(self) -> None:
        """Finish the turns under way and queued, then stop every agent."""
        await self.rooms.close()
        for runtime in self.runtimes.values():
            await runtime.stop()
        self.runtimes.clear()
        await self.events.close()

    def accept(
        self,
        agent_id: str,
        request: HandleMessage,
        *,
        reply_to: str,
        headers: Mapping[str, str] | None = None,
        correlation_id: str = "",
    ) -> HandleMessageResult | None:
        """Queue one message behind its room's earlier ones; the turn answers ``reply_to``.

        Synchronous, so messages keep the order they arrived in. With
        ``reply_at_once``, return the acknowledgement (the outcome only goes
        to the run ``<ns>.run.<run_id>.*``); else None: the reply (the result,
        or an ``Error`` with the service-error headers) is published to
        ``reply_to`` when the turn ends.
        """
        arrival = Arrival(
            agent_id=agent_id,
            request=request,
            reply_to=reply_to,
            headers=dict(headers or {}),
            correlation_id=correlation_id,
        )
        if not request.reply_at_once:
            self.rooms.submit(arrival)
            return None
        # Every replica acknowledges, alike: the caller follows whichever answers first.
        run_id = request.run_id or agreed_id("run", agent_id, request.message_id)
        arrival.request = msgspec.structs.replace(request, run_id=run_id)
        arrival.reply_to = ""
        self.rooms.submit(arrival)
        return HandleMessageResult(
            message_id=request.message_id,
            agent_id=agent_id,
            did_respond=False,
            run_id=run_id,
            accepted=True,
            status="accepted",
        )

    async def handle(self, agent_id: str, request: HandleMessage) -> HandleMessageResult:
        """Handle one message for ``agent_id`` in its room's order and return the outcome.

        Raises:
            NotFound: the agent is not stored, or stopped.
            ServiceError: the turn could not run (the memory service is away, ...).
        """
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.rooms.submit(Arrival(agent_id=agent_id, request=request, done=done))
        result = await done
        if not isinstance(result, HandleMessageResult):
            raise TypeError(f"a turn ended with {type(result).__name__}")
        return result

    def _arrived(self, arrival: Arrival) -> None:
        """Tell the agent's pipeline a message joined its room (superseding sees it wait).

        With ``SUPERSEDE_IN_ROOM`` a newer message of a room takes over from
        the one waiting or running before it, over NATS as in one process;
        the pipeline needs to know of it when it arrives, not when its turn
        starts. An agent not started here yet learns of it at its turn.
        """
        runtime = self.runtimes.get(arrival.agent_id)
        if runtime is None:
            return
        request = arrival.request
        try:  # the ids the pipeline will give the message (shared.agent.edge)
            room_id = agent_id_for(runtime.agent_id, request.room_id, "room_id")
            message_id = message_id_for(runtime.agent_id, room_id, request.message_id)
        except BadRequest:
            return  # its turn answers the bad id
        runtime.message_service.note_arrival(runtime.agent_id, room_id, message_id)

    async def _still_waiting(self, arrivals: Sequence[Arrival]) -> None:
        """Beat the runs of messages queued here, as a running turn beats its own."""
        await beat(self.broker, self.subjects, [a.request for a in arrivals])

    async def _serve(self, arrival: Arrival) -> None:
        """Run ``arrival``'s turn and answer whoever waits for it; never raises."""
        try:
            runtime = await self.runtime_for(arrival.agent_id)
            result = await self._turn(runtime, arrival.request)
        except Exception as exc:
            if arrival.done is not None:
                arrival.done.set_exception(exc)
                return
            if arrival.request.reply_at_once and arrival.request.run_id:
                # Its caller follows the run only: end it, or it waits for ever.
                run = _RunPublisher(self.broker, self.subjects, arrival.request)
                await run.ended("failed", error=f"{type(exc).__name__}: {exc}")
            error = as_service_error(exc)
            if isinstance(error, Internal):
                logger.exception("turn %s failed", arrival.request.message_id)
            await self._reply(arrival, error.to_error(arrival.correlation_id or None))
            return
        if arrival.done is not None:
            arrival.done.set_result(result)
        else:
            await self._reply(arrival, result)

    async def _reply(self, arrival: Arrival, reply: HandleMessageResult | Error) -> None:
        if not arrival.reply_to:
            return
        connection = self.broker.config.connection_state.connection
        if isinstance(reply, Error):
            reply = bounded(reply)
        body = msgspec.json.encode(reply)
        if len(body) > connection.max_payload:
            reply = Internal("the reply is larger than the NATS server accepts").to_error(
                arrival.correlation_id or None
            )
            body = msgspec.json.encode(reply)
        headers = error_headers(reply) if isinstance(reply, Error) else {}
        if arrival.correlation_id:
            headers["correlation_id"] = arrival.correlation_id
        try:
            await connection.publish(arrival.reply_to, body, headers=headers or None)
        except nats.errors.Error as exc:  # the caller re-sends; the outcome is stored
            logger.warning("could not answer %s: %s", arrival.request.message_id, exc)

    async def _turn(self, runtime: AgentRuntime, request: HandleMessage) -> HandleMessageResult:
        run = _RunPublisher(self.broker, self.subjects, request) if request.run_id else None
        try:
            async with heartbeat(self.broker, self.subjects, request):
                result = await self._once(runtime, request, run)
        except Exception as exc:
            if isinstance(exc, NotFound):
                await self._drop(runtime.agent_id)  # stopped or deleted elsewhere
            if run is not None:
                await run.ended("failed", error=f"{type(exc).__name__}: {exc}")
            if request.reply_at_once:
                logger.exception("turn %s failed", request.message_id)
                return HandleMessageResult(
                    message_id=request.message_id,
                    agent_id=runtime.agent_id,
                    did_respond=False,
                    run_id=request.run_id,
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}",
                )
            raise
        if run is not None:
            await run.ended(result.status, result=result, error=result.error)
        return result

    async def _once(
        self, runtime: AgentRuntime, request: HandleMessage, run: _RunPublisher | None
    ) -> HandleMessageResult:
        # The pipeline is idempotent on the message id: a message handled
        # before gets its stored outcome, read with the turn's context.
        message = Memory(
            id=request.message_id,
            entity_id=request.entity_id,
            room_id=request.room_id,
            world_id=request.world_id,
            content=request.content,
        )
        options = MessageOptions(
            run_id=request.run_id, on_stream_chunk=run.chunk if run is not None else None
        )
        return await runtime.message_service.handle_message(
            runtime, message, run.response if run is not None else None, options
        )

    def _publisher(self, agent_id: str, event: EventType) -> EventHandler:
        subject = self.subjects.event(agent_id, event.value.lower().replace("_", ".", 1))

        async def publish(payload: dict[str, object]) -> None:
            message = AgentEventOccurred(
                agent_id=agent_id,
                event_type=event.value.lower().replace("_", ".", 1),
                run_id=_text(payload.get("run_id")),
                message_id=_message_id(payload),
                room_id=_text(payload.get("room_id")) or _room_id(payload),
                data=_details(payload),
            )
            await self.events.publish(message, subject)

        return publish


_DETAIL_KEYS = (
    "status",
    "error",
    "action",
    "evaluator",
    "type",
    "provider",
    "elapsed_ms",
    "priority",
    "entity_id",
    "world_id",
    "channel_id",
    "target",
    "deleted",
    "source",
)


def _text(value: object) -> str | None:
    return str(value) if value is not None else None


def _message_id(payload: Mapping[str, object]) -> str | None:
    message = payload.get("message")
    return message.id if isinstance(message, Memory) else _text(payload.get("message_id"))


def _room_id(payload: Mapping[str, object]) -> str | None:
    message = payload.get("message")
    return message.room_id if isinstance(message, Memory) else None


def _details(payload: Mapping[str, object]) -> dict[str, object]:
    details = {k: payload[k] for k in _DETAIL_KEYS if payload.get(k) is not None}
    message = payload.get("message")
    if isinstance(message, Memory):
        details["text"] = message.content.text
    result = payload.get("result")
    if result is not None and hasattr(result, "success"):
        details["success"] = bool(result.success)
    return details


class _RunPublisher:
    """Publishes one turn on ``<ns>.run.<run_id>.*``: chunks in order, responses, the end."""

    def __init__(self, broker: NatsBroker, subjects: Subjects, request: HandleMessage) -> None:
        if request.run_id is None:
            raise ValueError("a run publisher needs a run id")
        self.broker = broker
        self.subjects = subjects
        self.run_id = request.run_id
        self.message_id = request.message_id
        self._index = 0

    async def chunk(self, text: str, _message_id: str | None) -> None:
        """Publish the next piece of the reply."""
        chunk = RunChunk(
            run_id=self.run_id, message_id=self.message_id, index=self._index, text=text
        )
        self._index += 1
        await self.broker.publish(chunk, self.subjects.run(self.run_id, "chunk"))

    async def response(self, content: Content) -> None:
        """Publish something the agent said."""
        response = RunResponse(run_id=self.run_id, message_id=self.message_id, content=content)
        await self.broker.publish(response, self.subjects.run(self.run_id, "response"))

    async def ended(
        self, status: str, *, result: HandleMessageResult | None = None, error: str | None = None
    ) -> None:
        """Publish the end of the run: ``completed`` or ``failed``."""
        ended = RunEnded(
            run_id=self.run_id,
            message_id=self.message_id,
            status=status,
            error=error,
            result=result,
        )
        what = "failed" if status in {"failed", "timeout"} else "completed"
        await self.broker.publish(ended, self.subjects.run(self.run_id, what))
