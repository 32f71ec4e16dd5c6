"""``ElizaOSClient``: the ``ElizaOS`` API over NATS, for programs outside the stack.

The same method names as the in-process ``ElizaOS`` (``add_agents``,
``get_agent_by_name``, ``handle_message`` with its callbacks,
``handle_messages``, ``health_check``, ``validate_api_keys``, ...), but the
agents live in the runtime service and every call is a typed request on a
subject of ``contracts.Subjects``. Lifecycle events come from the events
stream as an async iterator.

A program with a connector's NATS user (``elizamesh nats-config --connector
NAME``) passes ``connector=NAME``: replies then come on its own inbox and
its runs are its own, the only ones it may follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import msgspec
import nats.errors
from faststream.nats import NatsBroker
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts import Content, HandleMessage, HandleMessageResult, Subjects
from contracts.control import (
    AddAgent,
    AgentCommand,
    AgentHealth,
    AgentStatus,
    CheckAgent,
    ServiceHealth,
)
from contracts.events import (
    AgentEventOccurred,
    AgentInfo,
    AgentList,
    ListAgents,
    RunChunk,
    RunEnded,
    RunResponse,
)
from contracts.subjects import inbox_of
from shared.agent.character import Character
from shared.bus import create_broker, request
from shared.config import DEFAULT_NATS_URL
from shared.health import gather_health
from shared.runs import follow_kept_run, start_run

logger = logging.getLogger("elizamesh.client")

CharacterSource = Character | Mapping[str, object] | str | Path
"""A character: parsed, as a dict, or the path of its JSON file."""


@dataclass(frozen=True)
class BatchReply:
    """One result of ``handle_messages``: the reply, or the error that prevented it."""

    agent_id: str
    result: HandleMessageResult | None = None
    error: BaseException | None = None


class ElizaOSClient:
    """A connection to an elizamesh stack: agents, messages, health and events."""

    def __init__(
        self,
        nats_url: str = DEFAULT_NATS_URL,
        *,
        namespace: str = "eliza",
        timeout: float = 30.0,
        name: str = "elizamesh-client",
        connector: str | None = None,
    ) -> None:
        """Prepare the connection (``connect`` or ``async with`` opens it).

        Args:
            nats_url: Comma-separated NATS server URLs (credentials included).
            namespace: The stack's ``ELIZA_NS``.
            timeout: Seconds each request, and each wait for a run's next event, may take.
            name: The connection name shown in NATS monitoring.
            connector: The connector this client is, when its NATS user is one:
                its inbox and the owner of the runs it starts.
        """
        self.subjects = Subjects(namespace)
        self.timeout = timeout
        self.connector = connector
        inbox = inbox_of(connector) if connector is not None else None
        self.broker: NatsBroker = create_broker(nats_url, name=name, inbox_prefix=inbox)
        self._background: set[asyncio.Task[None]] = set()
        self._event_subscriptions: set[Subscription] = set()

    async def connect(self) -> Self:
        """Connect to NATS; return the client."""
        await self.broker.connect()
        return self

    async def close(self) -> None:
        """Wait for the runs being followed, end the ``events`` iterations, then disconnect."""
        await asyncio.gather(*self._background, return_exceptions=True)
        # An iteration left open would hold the connection's drain for its whole timeout (30 s).
        for subscription in list(self._event_subscriptions):
            await self._unsubscribe(subscription)
        await self.broker.stop()

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- agents ---------------------------------------------------------------

    async def add_agents(
        self, characters: Sequence[CharacterSource], *, plugins: Sequence[str] = ()
    ) -> list[str]:
        """Store and start an agent per character; return their ids, in order."""
        ids = []
        for source in characters:
            character = _character(source)
            added = await request(
                self.broker,
                self.subjects.agents_add,
                AddAgent(character=character.public(), plugins=list(plugins)),
                AgentStatus,
                timeout=self.timeout,
            )
            ids.append(added.id)
        return ids

    async def _command(self, agent_ids: Sequence[str], command: str) -> list[AgentStatus]:
        return list(
            await asyncio.gather(
                *(
                    request(
                        self.broker,
                        self.subjects.agent_command(agent_id, command),
                        AgentCommand(),
                        AgentStatus,
                        timeout=self.timeout,
                    )
                    for agent_id in agent_ids
                )
            )
        )

    async def start_agents(self, agent_ids: Sequence[str]) -> list[AgentStatus]:
        """Start stopped agents."""
        return await self._command(agent_ids, "start")

    async def stop_agents(self, agent_ids: Sequence[str]) -> list[AgentStatus]:
        """Stop agents on every replica; they stay stored."""
        return await self._command(agent_ids, "stop")

    async def delete_agents(self, agent_ids: Sequence[str]) -> list[AgentStatus]:
        """Stop agents everywhere and delete them with what they stored."""
        return await self._command(agent_ids, "delete")

    async def get_agents(self) -> list[AgentInfo]:
        """Every agent of the stack, enabled or stopped."""
        listed = await request(
            self.broker, self.subjects.agents_list, ListAgents(), AgentList, timeout=self.timeout
        )
        return listed.agents

    async def get_agent(self, agent_id: str) -> AgentInfo | None:
        """The agent with this id, or None."""
        return next((a for a in await self.get_agents() if a.id == agent_id), None)

    async def get_agents_by_ids(self, agent_ids: Sequence[str]) -> list[AgentInfo]:
        """The agents with these ids (unknown ones left out)."""
        wanted = set(agent_ids)
        return [a for a in await self.get_agents() if a.id in wanted]

    async def get_agent_by_name(self, name: str) -> AgentInfo | None:
        """The agent with this name (case-insensitive), or None."""
        return next((a for a in await self.get_agents_by_names([name])), None)

    async def get_agents_by_names(self, names: Sequence[str]) -> list[AgentInfo]:
        """The agents with these names (case-insensitive)."""
        wanted = {n.lower() for n in names}
        return [a for a in await self.get_agents() if a.name.lower() in wanted]

    # -- messages -------------------------------------------------------------

    async def handle_message(
        self,
        agent_id: str,
        message: HandleMessage,
        *,
        on_response: Callable[[Content], Awaitable[object]] | None = None,
        on_stream_chunk: Callable[[str, str | None], Awaitable[None]] | None = None,
        on_error: Callable[[BaseException], Awaitable[object]] | None = None,
        on_complete: Callable[[], Awaitable[object]] | None = None,
    ) -> HandleMessageResult:
        """Have an agent handle ``message``.

        Sync mode (no callback): waits and returns the reply. Async mode (any
        callback): returns the acknowledgement once the runtime accepted the
        message; chunks go to ``on_stream_chunk``, replies to ``on_response``,
        a failed run to ``on_error``, and ``on_complete`` runs at the end.
        The run is followed as long as its heartbeats come, however slow the
        model; a run that goes silent (its replica died) goes to ``on_error``
        as ``Unavailable``.
        Errors of the request itself (unknown agent, bad input) are raised.
        """
        callbacks = (on_response, on_stream_chunk, on_error, on_complete)
        if all(c is None for c in callbacks):
            return await request(
                self.broker,
                self.subjects.message_handle(agent_id),
                message,
                HandleMessageResult,
                timeout=self.timeout,
            )
        run = await start_run(
            self.broker,
            self.subjects,
            agent_id,
            message,
            timeout=self.timeout,
            owner=self.connector,
        )

        async def follow() -> None:
            failure: BaseException | None = None
            try:
                async for event, _raw in run.events():
                    if isinstance(event, RunChunk) and on_stream_chunk is not None:
                        await on_stream_chunk(event.text, event.message_id)
                    elif isinstance(event, RunResponse) and on_response is not None:
                        await on_response(event.content)
                    elif isinstance(event, RunEnded) and event.status in {"failed", "timeout"}:
                        failure = RunFailedError(event.error or "the run failed")
            except Exception as exc:
                failure = exc
            if failure is not None and on_error is not None:
                await on_error(failure)
            elif failure is not None:
                logger.error("run %s failed and nobody listens: %s", run.run_id, failure)
            if on_complete is not None:
                await on_complete()

        task = asyncio.create_task(follow(), name=f"run-{run.run_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return run.ack

    async def run_events(self, run_id: str) -> AsyncIterator[RunChunk | RunResponse | RunEnded]:
        """Every event of the run ``run_id`` from its first, then the live ones, to its end.

        For a program that lost a run it followed (runs are kept an hour); a
        connector may resume only runs it owns. Raises ``Unavailable`` when
        the run goes silent (see ``shared.runs``).
        """
        run = await follow_kept_run(self.broker, self.subjects, run_id, timeout=self.timeout)
        async for event, _raw in run.events():
            yield event

    async def handle_messages(self, batch: Sequence[tuple[str, HandleMessage]]) -> list[BatchReply]:
        """Handle several messages (for one or several agents) in parallel; errors per item."""

        async def one(agent_id: str, message: HandleMessage) -> BatchReply:
            try:
                return BatchReply(agent_id, await self.handle_message(agent_id, message))
            except Exception as exc:
                return BatchReply(agent_id, error=exc)

        return list(await asyncio.gather(*(one(a, m) for a, m in batch)))

    # -- health ---------------------------------------------------------------

    async def health_check(self, *, window: float = 1.0) -> list[ServiceHealth]:
        """Every service instance's status, as measured now (a silent one is missing)."""
        return await gather_health(
            self.broker.config.connection_state.connection, self.subjects, window=window
        )

    async def agent_health(self, agent_ids: Sequence[str]) -> dict[str, AgentHealth]:
        """Probe each agent: the replica that answers checks that its storage responds."""
        return await self._probe(agent_ids, check_model=False)

    async def validate_api_keys(self, agent_ids: Sequence[str] | None = None) -> dict[str, bool]:
        """Ask each agent's text model for a one-word answer; True when it answers."""
        ids = list(agent_ids) if agent_ids is not None else [a.id for a in await self.get_agents()]
        probes = await self._probe(ids, check_model=True)
        return {agent_id: bool(h.model_ok) for agent_id, h in probes.items()}

    async def _probe(
        self, agent_ids: Sequence[str], *, check_model: bool
    ) -> dict[str, AgentHealth]:
        replies = await asyncio.gather(
            *(
                request(
                    self.broker,
                    self.subjects.agent_health(agent_id),
                    CheckAgent(check_model=check_model),
                    AgentHealth,
                    timeout=self.timeout,
                )
                for agent_id in agent_ids
            )
        )
        return dict(zip(agent_ids, replies, strict=True))

    # -- events ---------------------------------------------------------------

    async def events(
        self, *, agent_id: str | None = None, event_type: str | None = None
    ) -> AsyncGenerator[AgentEventOccurred, None]:
        """Lifecycle events from now on (``message.sent``, ``run.ended``, ...), until you stop.

        ``aclose()`` it, or close the client, to end it.
        """
        if agent_id is not None and event_type is not None:
            subject = self.subjects.event(agent_id, event_type)
        elif agent_id is not None:
            subject = self.subjects.events_of_agent(agent_id)
        elif event_type is not None:
            subject = self.subjects.events_of_type(event_type)
        else:
            subject = self.subjects.events_template
        js = self.broker.config.connection_state.stream
        subscription = await js.subscribe(
            subject,
            stream=self.subjects.events_stream,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        self._event_subscriptions.add(subscription)
        decoder = msgspec.json.Decoder(AgentEventOccurred)
        try:
            while True:
                msg = await subscription.next_msg(timeout=None)
                yield decoder.decode(msg.data)
        finally:
            await self._unsubscribe(subscription)

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._event_subscriptions:
            self._event_subscriptions.discard(subscription)
            with contextlib.suppress(nats.errors.Error):  # the connection is gone already
                await subscription.unsubscribe()


class RunFailedError(RuntimeError):
    """A run that ended ``failed``; passed to ``on_error``."""


def _character(source: CharacterSource) -> Character:
    if isinstance(source, Character):
        return source
    if isinstance(source, Mapping):
        return Character.parse(dict(source))
    return Character.from_file(source)
