"""The message pipeline: one inbound message in, the agent's answer (or silence) out.

What elizaOS's DefaultMessageService does, with its defects fixed on purpose:
the agent's reply is stored (not left to the transport); STOP means stop;
MESSAGE_RECEIVED / MESSAGE_SENT are emitted (and VOICE_MESSAGE_RECEIVED /
VOICE_MESSAGE_SENT too in a voice room); in multi-step mode an action's
``values`` reach the next step's state; every run ends (``end_run``),
and ends ``failed`` when a step failed rather than ``completed``; a failing
action is a failed step instead of an exception that loses the message.

How it behaves in real chats (the same in one process and over NATS):

- **The kind of room** is what the connector says in ``content.channel_type``
  (``DM``, ``GROUP``, ``THREAD``, ... as ``ChannelType``), for a new room and
  for a known one whose kind changed; a message that says nothing leaves the
  room as it is (a new room is then a DM). DMs are always answered. In other
  rooms the agent answers when it is addressed (``content.mention_context``
  says mentioned or replied to, ``content.in_reply_to`` is one of its own
  messages, or its name or username is a word of the text), and otherwise
  asks the should-respond model.
- **Other agents.** A sender is an agent when the message says so
  (``content.metadata["is_agent"]``, or elizaOS's ``isAgent`` / ``isBot``)
  or the sender's entity metadata does (``is_agent``, ``is_bot`` or ``bot``,
  at the top or under a platform, as connectors store ``author.bot``). An
  agent's message is answered only when the agent is addressed (a DM
  counts), and a room never gets more than ``AGENT_REPLY_LIMIT`` (default 3)
  answers in a row to agents since a person last spoke: no agent-to-agent
  loop. elizaOS leaves both to each connector (``shouldIgnoreBotMessages``).
- **Concurrent messages in one room** are handled one at a time, in arrival
  order, and each is answered (over NATS the room lease does the same across
  replicas). With ``SUPERSEDE_IN_ROOM`` (or ``MessageOptions.supersede``), a
  message arriving while an earlier one of the room is being handled takes
  over: the earlier one ends ``superseded`` without an answer (elizaOS's
  ``latestResponseIds``).
- **A failed planned step** (an unknown action, a refusing ``validate``, a
  raising handler) is recorded and reported (status ``failed``, ``error``),
  and the steps after it, such as REPLY, still run.
- **Imperfect models.** Reasoning (``<think>...</think>``) never reaches a
  streamed chunk, the stored reply or the callback. A model that answers in
  plain prose instead of the asked-for XML is asked once more; then its
  prose is the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec

from contracts import Content
from contracts.agent import ActionOutcome, HandleMessageResult, RunStatus
from contracts.evaluation import EvaluateTurn
from contracts.records import ChannelType, Entity, Memory, ParticipantState, Room, now_ms
from contracts.turn import CacheEntry, Connection
from shared.agent.interface import EvaluationSink, MessageOptions
from shared.agent.prompts import compose_prompt
from shared.agent.turn import Turn, current_turn, entered, outcome_key, reflection_key, up_to
from shared.agent.types import (
    Action,
    ActionResult,
    Callback,
    EventType,
    ModelType,
    State,
    StreamChunk,
)
from shared.agent.xml import TextTagStreamer, XmlValue, parse_key_value_xml, plain_text
from shared.errors import NotFound, Unavailable
from shared.telemetry import MESSAGES_HANDLED, TURN_DURATION, span, timed

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

__all__ = [
    "AGENT_MARKS",
    "AGENT_REPLY_LIMIT",
    "ALWAYS_RESPOND_CHANNELS",
    "ALWAYS_RESPOND_SOURCES",
    "INITIAL_PROVIDERS",
    "OUTCOME_TTL_MS",
    "STORAGE_PATIENCE_SECONDS",
    "VOICE_CHANNELS",
    "DefaultMessageService",
    "EvaluationSink",
    "InProcessEvaluation",
    "MessageOptions",
    "MessageProcessingResult",
    "RespondDecision",
    "TurnFailedError",
    "evaluate_turn",
    "patiently",
    "progress_key",
]

logger = logging.getLogger("elizamesh.messages")
T = TypeVar("T")

Mode = Literal["simple", "actions", "none"]

ALWAYS_RESPOND_CHANNELS = frozenset(
    {ChannelType.DM, ChannelType.VOICE_DM, ChannelType.SELF, ChannelType.API}
)
ALWAYS_RESPOND_SOURCES = frozenset({"client_chat", "api", "cli"})
VOICE_CHANNELS = frozenset({ChannelType.VOICE_DM, ChannelType.VOICE_GROUP})
"""Rooms whose messages are also announced as VOICE_MESSAGE_RECEIVED / VOICE_MESSAGE_SENT."""
INITIAL_PROVIDERS = ["ENTITIES", "CHARACTER", "RECENT_MESSAGES", "ACTIONS"]
AGENT_REPLY_LIMIT = 3
"""Answers in a row to other agents in one room, since a person last spoke (setting
``AGENT_REPLY_LIMIT``)."""
AGENT_MARKS = ("is_agent", "isAgent", "is_bot", "isBot", "bot")
"""Keys whose true value marks a sender as an agent, in ``content.metadata`` or the
sender's entity metadata (at the top or under a platform's name)."""


MessageProcessingResult = HandleMessageResult
"""elizaOS's name for the outcome of a turn: the same type as every other wiring's."""

OUTCOME_TTL_MS = 24 * 3600 * 1000
"""How long a turn's outcome is kept: a message re-sent within it gets the same outcome."""


STORAGE_PATIENCE_SECONDS = 60.0
"""How long a turn that holds the model's answer keeps trying to store it while storage is away."""


async def patiently(write: Callable[[], Awaitable[T]]) -> T:
    """Run a storage write, retrying ``Unavailable`` with backoff (0.2 s to 2 s) for a while.

    Only for what a turn writes once the model has answered (its plan, its
    outcome): dropping it would make the message's retry ask the model again.
    What comes before the model fails at once, so that a caller hears
    ``unavailable`` instead of waiting.

    Raises:
        Unavailable: storage was still away after ``STORAGE_PATIENCE_SECONDS``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STORAGE_PATIENCE_SECONDS
    delay = 0.2
    while True:
        try:
            return await write()
        except Unavailable:
            if loop.time() + delay > deadline:
                raise
            logger.warning("storage is away; the turn keeps its answer and retries")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def progress_key(message: Memory) -> str:
    """The cache key of a turn's recorded plan: per room and message, like its outcome."""
    return f"turn-plan:{message.room_id}:{message.id}"


class TurnFailedError(Exception):
    """A turn ended ``failed`` or ``timeout``; ``result`` says how (given to ``on_error``)."""

    def __init__(self, result: HandleMessageResult) -> None:
        super().__init__(result.error or f"the turn ended {result.status}")
        self.result = result


@dataclass(frozen=True)
class RespondDecision:
    """Whether to answer, and why."""

    should_respond: bool
    reason: str
    used_model: bool = False


@dataclass
class _RoomQueue:
    """The turns of one room waiting for (or holding) its lock."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class DefaultMessageService:
    """Handles messages for any runtime: one turn per room at a time, in arrival order.

    Holds nothing that belongs to one message: each turn's data is in its
    ``Turn`` (``shared.agent.turn``). It keeps, per room, the lock that
    orders the room's turns (only while a turn holds or waits for it) and
    the newest message that arrived (for superseding), bounded to the rooms
    most recently seen.
    """

    def __init__(self, *, evaluation: EvaluationSink | None = None, rooms: int = 10_000) -> None:
        self._latest: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._arrived: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._queues: dict[tuple[str, str], _RoomQueue] = {}
        self._rooms = rooms
        self.evaluation: EvaluationSink = evaluation or InProcessEvaluation()

    async def handle_message(
        self,
        runtime: AgentRuntime,
        message: Memory,
        callback: Callback | None = None,
        options: MessageOptions | None = None,
    ) -> HandleMessageResult:
        """Handle ``message`` for ``runtime`` and return how the turn ended.

        ``callback`` receives each piece of content the agent sends (it is
        also stored); ``options.on_stream_chunk`` receives the reply as it is
        written. The turns of one room run one at a time, in arrival order;
        with superseding on (``options.supersede``, ``SUPERSEDE_IN_ROOM``) a
        newer message in the room takes over and this turn's answer is
        dropped. A message already handled (same id, same room) gets its
        stored outcome again without a model call. The turn reads storage
        once and writes once (``begin_turn``, ``commit_turn``).

        Raises:
            TimeoutError: the turn ran past ``options.timeout`` (it ended ``timeout``).
        """
        options = options or MessageOptions()
        message = runtime.inbound_message(message)
        turn = Turn(
            run_id=options.run_id or runtime.create_run_id(),
            message=message,
            response_id=str(uuid.uuid4()),
        )
        if (runtime.agent_id, message.room_id, message.id) not in self._arrived:
            self.note_arrival(runtime.agent_id, message.room_id, message.id)
        async with self._room_turn(runtime.agent_id, message.room_id):
            with entered(turn):
                return await self._handle(runtime, turn, callback, options)

    @contextlib.asynccontextmanager
    async def _room_turn(self, agent_id: str, room_id: str) -> AsyncIterator[None]:
        """Hold the room's lock for one turn (not again inside a turn of the same room)."""
        outer = current_turn()
        if outer is not None and (outer.message.agent_id, outer.message.room_id) == (
            agent_id,
            room_id,
        ):
            yield  # a turn's action handling a message of its own room would wait on itself
            return
        key = (agent_id, room_id)
        queue = self._queues.setdefault(key, _RoomQueue())
        queue.users += 1
        try:
            async with queue.lock:
                yield
        finally:
            queue.users -= 1
            if queue.users == 0:
                del self._queues[key]

    async def _handle(
        self,
        runtime: AgentRuntime,
        turn: Turn,
        callback: Callback | None,
        options: MessageOptions,
    ) -> HandleMessageResult:
        message = turn.message
        await runtime.emit_event(
            EventType.RUN_STARTED,
            {
                "run_id": turn.run_id,
                "message_id": message.id,
                "room_id": message.room_id,
                "entity_id": message.entity_id,
            },
        )
        pipeline = _Pipeline(
            service=self, runtime=runtime, turn=turn, callback=callback, options=options
        )
        attributes = {"elizamesh.agent_id": runtime.agent_id, "elizamesh.run_id": turn.run_id}
        failure: BaseException | None = None
        try:
            with (
                span("turn", **attributes, **{"elizamesh.message_id": message.id}) as current,
                timed(TURN_DURATION, agent_id=runtime.agent_id),
            ):
                async with asyncio.timeout(options.timeout):
                    result = await pipeline.run()
                current.set_attribute("elizamesh.status", result.status)
        except TimeoutError as exc:
            failure = exc
            turn.status, turn.error = "timeout", "the run exceeded its timeout"
            await runtime.emit_event(
                EventType.RUN_TIMEOUT, {"run_id": turn.run_id, "message_id": message.id}
            )
            result = pipeline.result()
        except Exception as exc:
            failure = exc
            turn.status, turn.error = "failed", f"{type(exc).__name__}: {exc}"
            result = pipeline.result()
        if pipeline.replayed is None:
            await pipeline.commit(result, keep_outcome=failure is None)
        await runtime.emit_event(
            EventType.RUN_ENDED,
            {
                "run_id": turn.run_id,
                "message_id": message.id,
                "room_id": message.room_id,
                "status": result.status,
                "error": result.error,
            },
        )
        if failure is not None:
            raise failure
        MESSAGES_HANDLED.add(1, {"agent_id": runtime.agent_id, "status": result.status})
        if pipeline.replayed is None and result.status in _EVALUATED and options.run_evaluators:
            await self.evaluation.submit(runtime, pipeline.evaluation_job(result))
        return result

    async def delete_message(self, runtime: AgentRuntime, message: Memory) -> None:
        """As elizaOS ``deleteMessage``: delete ``message`` from the agent's memory.

        Its platform ids are mapped as when it arrived; MESSAGE_DELETED follows
        when it was stored. See ``AgentRuntime.delete_message``.
        """
        await runtime.delete_message(message)

    async def clear_channel(
        self, runtime: AgentRuntime, room_id: str, channel_id: str | None = None
    ) -> int:
        """As elizaOS ``clearChannel``: delete every message of the room; return how many.

        CHANNEL_CLEARED follows. See ``AgentRuntime.clear_channel``.
        """
        return await runtime.clear_channel(room_id, channel_id)

    def note_arrival(self, agent_id: str, room_id: str, message_id: str) -> None:
        """Record that ``message_id`` arrived in the room (the newest, for superseding).

        ``handle_message`` does it itself; a host that makes a message wait
        before its turn (the runtime service's room lease) calls it on
        arrival, so that superseding sees the message while it waits.
        """
        key = (agent_id, room_id)
        self._latest[key] = message_id
        self._latest.move_to_end(key)
        self._arrived[(agent_id, room_id, message_id)] = None
        while len(self._latest) > self._rooms:
            self._latest.popitem(last=False)
        while len(self._arrived) > self._rooms:
            self._arrived.popitem(last=False)

    def is_latest(self, runtime: AgentRuntime, room_id: str, message_id: str) -> bool:
        """Say whether ``message_id`` is still the newest message that arrived in the room."""
        return self._latest.get((runtime.agent_id, room_id), message_id) == message_id

    async def should_respond(  # noqa: PLR0911 - one exit per rule
        self, runtime: AgentRuntime, message: Memory, state: State
    ) -> RespondDecision:
        """Decide whether to answer: by rule for DMs, APIs, agents, the addressed; else the model.

        The rules, in order (elizaOS's ``shouldRespond``, plus two of ours):
        another agent's message is answered only when the agent is addressed
        and the room's answers to agents in a row are below
        ``AGENT_REPLY_LIMIT``; DM, VOICE_DM, SELF and API rooms are answered;
        sources ``client_chat``, ``api`` and ``cli`` are answered; an
        addressed agent (mentioned, replied to, named) answers; otherwise
        TEXT_SMALL decides with ``shouldRespondTemplate`` (RESPOND or not).
        """
        room = await _room_of(runtime, message)
        if room is None:
            return RespondDecision(False, "the room is unknown")
        turn = current_turn()
        recent = (turn.recent_messages(message.room_id) if turn is not None else None) or []
        entities = turn.context.entities if turn is not None and turn.context else []
        addressed = _addressed(runtime, message, recent)
        if _is_agent(message, entities):
            if room.type not in ALWAYS_RESPOND_CHANNELS and addressed is None:
                return RespondDecision(False, "another agent's message, not addressed to the agent")
            limit = _agent_reply_limit(runtime)
            if _answers_to_agents(runtime, recent, entities) >= limit:
                return RespondDecision(
                    False, f"{limit} answers in a row to agents in this room (AGENT_REPLY_LIMIT)"
                )
            return RespondDecision(True, addressed or f"{room.type} rooms are always answered")
        if room.type in ALWAYS_RESPOND_CHANNELS:
            return RespondDecision(True, f"{room.type} rooms are always answered")
        source = (message.content.source or "").lower()
        if source in ALWAYS_RESPOND_SOURCES:
            return RespondDecision(True, f"messages from {source} are always answered")
        if addressed is not None:
            return RespondDecision(True, addressed)
        prompt = compose_prompt(runtime.template("shouldRespondTemplate"), state.values)
        shape = {
            "xml_fields": ["name", "reasoning", "action"],
            "choices": {"name": [runtime.character.name], "action": ["RESPOND", "IGNORE", "STOP"]},
        }
        answer = await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": prompt, **shape})
        parsed = parse_key_value_xml(str(answer)) or {}
        action = str(parsed.get("action", "")).strip().upper()
        if not action and (said := _DECISION.search(plain_text(str(answer)).upper())):
            action = said.group(1)  # a small model that answered in a sentence
        # elizaOS treats STOP as "respond"; asked to stop, the agent stops.
        respond = action in {"RESPOND", "REPLY"}
        return RespondDecision(respond, f"the model said {action or 'nothing'}", used_model=True)


async def evaluate_turn(runtime: AgentRuntime, job: EvaluateTurn) -> list[str]:
    """Run the agent's evaluators for one ended turn; return the names of those that ran.

    The same code runs in-process after a turn and in the evaluator service,
    with the same inputs (``job``: the message, what the agent said, and the
    context the turn read). Reads come from ``job.context``; what the
    evaluators write (facts, relationships, logs, their marks) is committed
    at once, in one transaction.
    """
    turn = Turn(
        run_id=job.run_id,
        message=job.message,
        response_id=job.message.id,
        context=job.context,
        sent=list(job.responses),
    )
    with entered(turn):
        state = await runtime.compose_state(job.message, ["RECENT_MESSAGES", "EVALUATORS"])
        ran = await runtime.evaluate(
            job.message, state, did_respond=job.did_respond, responses=job.responses
        )
        if turn.has_writes():
            await runtime.adapter.commit_turn(turn.commit())
    return ran


class InProcessEvaluation:
    """Evaluates each turn here, right after it ends (embedded mode)."""

    async def submit(self, runtime: AgentRuntime, job: EvaluateTurn) -> None:
        """Run the evaluators now; a failure is logged, the turn's outcome stands."""
        try:
            await evaluate_turn(runtime, job)
        except Exception:
            logger.exception("evaluating message %s failed", job.message.id)


_DECISION = re.compile(r"\b(RESPOND|IGNORE|STOP)\b")


def _addressed(runtime: AgentRuntime, message: Memory, recent: Sequence[Memory]) -> str | None:
    """Why the message is addressed to the agent, or None when it is not.

    Mentioned or replied to as the connector says (``mention_context``), a
    reply to one of the agent's own messages (``in_reply_to``, among the
    room's recent messages), or the agent's name or username as a word of
    the text (``@Name`` too).
    """
    content = message.content
    mention = content.mention_context
    if mention is not None and (mention.is_mention or mention.is_reply):
        return "the agent was mentioned or replied to"
    if content.in_reply_to is not None and any(
        m.id == content.in_reply_to and m.entity_id == runtime.agent_id for m in recent
    ):
        return "the message replies to the agent"
    character = runtime.character
    names = [n for n in (character.name, character.username) if n]
    if any(_says_name(content.text, name) for name in names):
        return "the agent was named"
    return None


def _says_name(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def _is_agent(message: Memory, entities: Iterable[Entity]) -> bool:
    """Say whether an agent sent ``message``: by its content's or its sender's metadata."""
    if _marked(message.content.metadata):
        return True
    sender = next((e for e in entities if e.id == message.entity_id), None)
    if sender is None:
        return False
    return _marked(sender.metadata) or any(
        _marked(value) for value in sender.metadata.values() if isinstance(value, dict)
    )


def _marked(metadata: Mapping[str, object]) -> bool:
    return any(metadata.get(key) is True for key in AGENT_MARKS)


def _answers_to_agents(
    runtime: AgentRuntime, recent: Sequence[Memory], entities: Sequence[Entity]
) -> int:
    """How many agents' messages the agent answered since a person last spoke in the room.

    ``recent`` is newest first (the turn's context: no storage read). An
    answer is one or more messages of the agent right after an agent's
    message; what actions recorded is not a message.
    """
    answers = 0
    answered = False
    for memory in recent:
        if memory.content.metadata.get("type") == "action_result":
            continue
        if memory.entity_id == runtime.agent_id:
            answered = True
        elif _is_agent(memory, entities):
            answers += answered
            answered = False
        else:
            break
    return answers


def _agent_reply_limit(runtime: AgentRuntime) -> int:
    value = runtime.get_setting("AGENT_REPLY_LIMIT")
    if value is None or isinstance(value, bool):
        return AGENT_REPLY_LIMIT
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        logger.warning("AGENT_REPLY_LIMIT=%r is not a number; using %d", value, AGENT_REPLY_LIMIT)
        return AGENT_REPLY_LIMIT


async def _room_of(runtime: AgentRuntime, message: Memory) -> Room | None:
    turn = current_turn()
    if turn is not None and turn.context is not None and turn.context.room.id == message.room_id:
        return turn.context.room
    rooms = await runtime.adapter.get_rooms_by_ids([message.room_id])
    return rooms[0] if rooms else None


_EVALUATED = frozenset({"completed", "failed", "ignored"})


class _Pipeline:
    """The steps of one turn, in order; everything they produce goes to ``turn``."""

    def __init__(
        self,
        *,
        service: DefaultMessageService,
        runtime: AgentRuntime,
        turn: Turn,
        callback: Callback | None,
        options: MessageOptions,
    ) -> None:
        self.service = service
        self.runtime = runtime
        self.turn = turn
        self.message = turn.message
        self.user_callback = callback
        self.options = options
        self.mode: Mode = "none"
        self.replayed: HandleMessageResult | None = None
        """The stored outcome, when this message was handled before."""
        self.room_changed: Room | None = None
        """The room with the kind the message says, when it differs from the stored one."""
        self.streamed = False
        self.recorded_plan: Content | None = None
        """The plan an interrupted run of this turn got from the model, recorded before acting."""
        self.planned: Content | None = None
        """The model's plan for this turn, once asked (recorded unless the turn ends well)."""

    def result(self, status: RunStatus | None = None) -> HandleMessageResult:
        """The outcome so far, as the one result type."""
        turn = self.turn
        if status is not None:
            turn.status = status
        if turn.status == "completed" and turn.error:
            turn.status = "failed"
        return HandleMessageResult(
            message_id=self.message.id,
            agent_id=self.runtime.agent_id,
            did_respond=bool(turn.sent),
            response_content=turn.sent[-1].content if turn.sent else Content(),
            mode=self.mode,
            run_id=turn.run_id,
            status=turn.status,
            error=turn.error,
            response_messages=list(turn.sent),
            action_results=[
                ActionOutcome(action=r.action, success=r.success, text=r.text, error=r.error)
                for r in turn.action_results
            ],
        )

    async def run(self) -> HandleMessageResult:  # noqa: PLR0911 - one exit per way a turn ends
        runtime, message, turn = self.runtime, self.message, self.turn
        if message.entity_id == runtime.agent_id:
            return self.result("self")
        if (replayed := await self._begin()) is not None:
            return replayed
        await self._announce(EventType.MESSAGE_RECEIVED, EventType.VOICE_MESSAGE_RECEIVED, message)

        if not self._latest():
            return self.result("superseded")
        if self._muted():
            return self.result("muted")
        state = await runtime.compose_state(message, INITIAL_PROVIDERS, only_include=True)
        decision = await self.service.should_respond(runtime, message, state)
        if not decision.should_respond:
            return self.result("ignored")

        if self._multi_step():
            return await self._run_multi_step()
        state = await runtime.compose_state(message, ["ACTIONS"])
        content = await self._plan(state)
        if not self._latest():
            return self.result("superseded")
        if content.providers:
            state = await runtime.compose_state(message, content.providers)
        content = msgspec.structs.replace(content, in_reply_to=message.id)
        response = Memory(
            id=turn.response_id,
            entity_id=runtime.agent_id,
            agent_id=runtime.agent_id,
            room_id=message.room_id,
            world_id=message.world_id,
            content=content,
        )
        if "IGNORE" in [a.upper() for a in content.actions]:
            return self.result("ignored")

        if content.simple and content.text:
            self.mode = "simple"
            await self._stream_unstreamed(content.text)
            await self.callback(content)
        else:
            self.mode = "actions"
            await runtime.process_actions(
                message,
                [response],
                state,
                self.callback,
                on_stream_chunk=self.options.on_stream_chunk,
            )
        failures = [r for r in turn.action_results if not r.success]
        found = turn.state.data.get("provider_errors") if turn.state else None
        provider_errors: dict[str, str] = found if isinstance(found, dict) else {}
        if failures or provider_errors:
            turn.error = "; ".join(
                [f"{r.action}: {r.error}" for r in failures]
                + [f"provider {name}: {err}" for name, err in provider_errors.items()]
            )
        return self.result()

    async def _begin(self) -> HandleMessageResult | None:
        """Read the turn's context; return the stored outcome if the message was handled.

        A message from someone new, in a room never seen, still gets an answer
        ("the agent silently does not reply" is elizaOS's most reported
        defect): one storage call sets the connection up, stores the message
        and reads everything the default providers need.

        Raises:
            NotFound: the agent is stopped or deleted (in storage, by any replica).
        """
        runtime, message, turn = self.runtime, self.message, self.turn
        connection = _connection(message)
        turn.context = await runtime.adapter.begin_turn(
            message,
            connection,
            recent_count=runtime.get_conversation_length(),
            outcome_key=outcome_key(message),
            cache_keys=[reflection_key(message.room_id), progress_key(message)],
        )
        # Everything the turn reads sees the room as it stood when the message came.
        turn.context = msgspec.structs.replace(
            turn.context,
            recent_messages=up_to(turn.context.recent_messages, message, runtime.agent_id),
        )
        await runtime.announce_connection(turn.context, connection.source)
        agent = turn.context.agent
        if agent is None or not agent.enabled:
            raise NotFound(f"agent {runtime.agent_id} is {'stopped' if agent else 'deleted'}")
        if turn.context.outcome is not None:
            self.replayed = msgspec.convert(turn.context.outcome, HandleMessageResult)
            return self.replayed
        if (recorded := turn.context.cache.get(progress_key(message))) is not None:
            # An earlier run of this turn was cut off after planning: continue
            # from its plan and reply id, so the model is not asked twice and
            # a reply it stored is not stored again under another id.
            self.recorded_plan = msgspec.convert(recorded["plan"], Content)
            turn.response_id = str(recorded["response_id"])
        declared = _declared_room_type(message)
        room = turn.context.room
        if declared is not None and declared is not room.type:
            # The connector knows the room best (a DM that became a group, a room
            # first seen without a kind): the turn decides by it, and it is stored.
            self.room_changed = msgspec.structs.replace(room, type=declared)
            turn.context = msgspec.structs.replace(turn.context, room=self.room_changed)
        if turn.context.message_stored:
            await runtime.queue_embedding_generation(message, "high")
        return None

    async def commit(self, result: HandleMessageResult, *, keep_outcome: bool) -> None:
        """Write what the turn produced, with its outcome, in one storage call.

        The outcome is kept (so a re-sent message gets it again) unless the
        turn broke off with an exception or a timeout: then a retry runs it anew.
        """
        runtime, turn = self.runtime, self.turn
        if turn.context is None:
            return  # nothing was read, nothing was written (the agent's own message)
        if keep_outcome:
            turn.cache.append(
                CacheEntry(
                    key=outcome_key(self.message),
                    value=msgspec.to_builtins(result),
                    expires_at=now_ms() + OUTCOME_TTL_MS,
                )
            )
        elif self.planned is not None and self.recorded_plan is None:
            turn.cache.append(self._progress())  # the retry continues from the plan
        if turn.has_writes():
            await patiently(lambda: runtime.adapter.commit_turn(turn.commit()))
        if (changed := self.room_changed) is not None:  # once per change of kind, not per turn
            await patiently(lambda: runtime.adapter.update_room(changed))
        for memory in turn.sent:
            await runtime.queue_embedding_generation(memory, "normal")

    def evaluation_job(self, result: HandleMessageResult) -> EvaluateTurn:
        """What the evaluators get: the message, the answer, and the context the turn read."""
        turn = self.turn
        context = turn.context
        if context is not None:
            recent = turn.recent_messages(self.message.room_id) or []
            context = msgspec.structs.replace(context, recent_messages=recent)
        return EvaluateTurn(
            agent_id=self.runtime.agent_id,
            run_id=turn.run_id,
            message=self.message,
            responses=list(turn.sent),
            did_respond=result.did_respond,
            context=context,
        )

    def _latest(self) -> bool:
        """False when superseding is on and a newer message arrived in the room."""
        chosen = self.options.supersede
        supersede = self.runtime.get_setting("SUPERSEDE_IN_ROOM") if chosen is None else chosen
        return supersede is not True or self.service.is_latest(
            self.runtime, self.message.room_id, self.message.id
        )

    def _multi_step(self) -> bool:
        chosen = self.options.use_multi_step
        return bool(self.runtime.get_setting("USE_MULTI_STEP")) if chosen is None else chosen

    async def _run_multi_step(self) -> MessageProcessingResult:
        """Plan one action at a time until the model says it is done, then summarise.

        Each step may ask for providers (their failures are reported in the
        state, not fatal) and run one action with JSON parameters.
        """
        runtime, message = self.runtime, self.message
        limit = self.options.max_multi_step_iterations or int(
            runtime.get_setting("MAX_MULTISTEP_ITERATIONS") or 6
        )
        results: list[ActionResult] = []
        # The values of the actions run so far: every later step's state has them
        # (elizaOS#5841), as in chained mode.
        carried: dict[str, object] = {}
        state = State()
        for iteration in range(1, limit + 1):
            state = await runtime.compose_state(
                message, ["RECENT_MESSAGES", "ACTION_STATE", "ACTIONS"]
            )
            state.values.update(carried)
            values = {**state.values, "iteration": iteration, "maxIterations": limit}
            step = await self._ask(
                compose_prompt(runtime.template("multiStepDecisionTemplate"), values),
                ["thought", "providers", "action", "parameters", "isFinish"],
                choices={
                    "action": [a.name for a in runtime.actions],
                    "providers": [p.name for p in runtime.providers if not p.private],
                    "isFinish": ["true", "false"],
                },
                required=["thought"],
            )
            if wanted := _names(step.get("providers")):
                state = await runtime.compose_state(message, wanted, only_include=True)
                state.values.update(carried)
            action = str(step.get("action") or "").strip()
            if action:
                parameters = _json_object(step.get("parameters"))
                if parameters is None:
                    result = ActionResult(
                        success=False, action=action, error="parameters were not a JSON object"
                    )
                    self.turn.action_results.append(result)
                else:
                    result = await runtime.run_action(
                        action, message=message, state=state, so_far=results, parameters=parameters
                    )
                results.append(result)
                carried.update(result.values)
            if step.get("isFinish") is True or not action:
                break
            if not self._latest():
                return self.result("superseded")
        state = await runtime.compose_state(message, ["RECENT_MESSAGES", "ACTION_STATE"])
        state.values.update(carried)
        summary = await self._ask(
            compose_prompt(runtime.template("multiStepSummaryTemplate"), state.values),
            ["thought", "text"],
            required=["text"],
            stream=True,
            prose={"thought": ""},
        )
        text = str(summary.get("text") or "").strip() or "I could not put an answer together."
        self.mode = "simple"
        await self._stream_unstreamed(text)
        await self.callback(Content(text=text, actions=["MULTI_STEP_SUMMARY"], simple=True))
        failures = [r for r in results if not r.success]
        if failures:
            self.turn.error = "; ".join(f"{r.action}: {r.error}" for r in failures)
        return self.result()

    async def _ask(
        self,
        prompt: str,
        fields: Sequence[str],
        *,
        choices: Mapping[str, Sequence[str]] | None = None,
        required: Sequence[str] = (),
        stream: bool = False,
        plain_reply_only: bool = False,
        prose: Mapping[str, XmlValue] | None = None,
    ) -> dict[str, XmlValue]:
        """Ask TEXT_LARGE for an XML answer with ``fields``; retry until ``required`` are there.

        ``fields`` and ``choices`` also go to the model plugin, which may force
        the shape (the local model does, with a grammar). Only the first try
        streams: a retry's text would repeat what was already streamed.
        With ``prose``, an answer that is still not the asked-for shape after
        one retry but has a usable text (a ``<text>``, or plain prose) is
        taken: ``{**prose, "text": that text}`` (elizaOS/eliza#3993: small
        models chat instead of writing XML).
        """
        parsed: dict[str, XmlValue] = {}
        streamer = TextTagStreamer() if stream and self.options.on_stream_chunk else None
        for attempt in range(1, self.options.max_retries + 1):
            forward = (
                self._forward(streamer, plain_reply_only=plain_reply_only) if streamer else None
            )
            answer = str(
                await self.runtime.use_model(
                    ModelType.TEXT_LARGE,
                    {"prompt": prompt, "xml_fields": list(fields), "choices": dict(choices or {})},
                    on_stream_chunk=forward,
                )
            )
            parsed = dict(parse_key_value_xml(answer) or {})
            if all(parsed.get(name) not in (None, "", []) for name in required):
                break
            logger.warning("unusable answer from the model (attempt %d): %.200s", attempt, answer)
            usable = str(parsed.get("text") or "").strip() or plain_text(answer)
            if prose is not None and attempt >= 2 and usable:  # noqa: PLR2004 - one retry
                return {**prose, "text": usable}
            streamer = None
        return parsed

    def _forward(self, streamer: TextTagStreamer, *, plain_reply_only: bool = False) -> StreamChunk:
        """Pass the ``<text>`` of a streamed answer on to ``on_stream_chunk``.

        With ``plain_reply_only`` (the planner's answer), the text is streamed
        only when the plan is a plain REPLY: ``<actions>`` comes before
        ``<text>``, so this is known when the text starts. Otherwise the
        actions write, and stream, the answer themselves.
        """
        on_chunk = self.options.on_stream_chunk
        if on_chunk is None:
            raise ValueError("streaming needs on_stream_chunk")

        async def forward(chunk: str, _message_id: str | None) -> None:
            piece = streamer.feed(chunk)
            if not piece or (plain_reply_only and not _plain_reply(streamer.visible)):
                return
            if self._latest():
                self.streamed = True
                await on_chunk(piece, self.message.id)

        return forward

    async def _stream_unstreamed(self, text: str) -> None:
        """Stream ``text`` as one chunk when the model's answer streamed none of it.

        A plain-prose answer, taken after a retry, has no ``<text>`` to
        stream as it arrives; streaming clients still get the reply.
        """
        on_chunk = self.options.on_stream_chunk
        if on_chunk is not None and not self.streamed and self._latest():
            self.streamed = True
            await on_chunk(text, self.message.id)

    async def callback(self, content: Content) -> list[Memory]:
        """Announce what the agent says, hand it to the caller, and store it at commit."""
        runtime, turn = self.runtime, self.turn
        if not self._latest():
            return []
        memory = Memory(
            id=turn.response_id if not turn.sent else str(uuid.uuid4()),
            entity_id=runtime.agent_id,
            agent_id=runtime.agent_id,
            room_id=self.message.room_id,
            world_id=self.message.world_id,
            content=msgspec.structs.replace(
                content, in_reply_to=content.in_reply_to or self.message.id
            ),
        )
        turn.memories.append(memory)
        turn.sent.append(memory)
        await self._announce(EventType.MESSAGE_SENT, EventType.VOICE_MESSAGE_SENT, memory)
        if self.user_callback is not None:
            await self.user_callback(memory.content)
        return [memory]

    async def _announce(self, event: EventType, in_voice_room: EventType, message: Memory) -> None:
        """Emit ``event`` for ``message``, and ``in_voice_room`` too in a VOICE_DM / VOICE_GROUP."""
        payload = {"message": message, "run_id": self.turn.run_id}
        await self.runtime.emit_event(event, payload)
        context = self.turn.context
        if context is not None and context.room.type in VOICE_CHANNELS:
            await self.runtime.emit_event(in_voice_room, payload)

    def _muted(self) -> bool:
        context = self.turn.context
        if context is None or context.participant_state is not ParticipantState.MUTED:
            return False
        return self.runtime.character.name.lower() not in self.message.content.text.lower()

    async def _plan(self, state: State) -> Content:
        """Ask the model what to do; retry until it gives a thought and actions.

        The plan is recorded (``progress_key``) so that a run cut off later (a
        replica killed, storage or NATS away) continues from it when the
        message comes again and never asks the model a second time: before
        its actions run, when it has any (they take time and call out); else,
        a plain reply, with what the turn writes when it breaks off (one write
        with the reply it sent, under the same id on the retry).
        """
        if self.recorded_plan is not None:
            self.planned = self.recorded_plan
            return self.recorded_plan
        runtime = self.runtime
        prompt = compose_prompt(runtime.template("messageHandlerTemplate"), state.values)
        parsed = await self._ask(
            prompt,
            ["thought", "actions", "providers", "text"],
            choices={
                "actions": [a.name for a in _planned_actions(state) or runtime.actions],
                "providers": [p.name for p in runtime.providers if p.dynamic and not p.private],
            },
            required=["thought", "actions"],
            stream=True,
            plain_reply_only=True,
            prose={"thought": "", "actions": ["REPLY"], "providers": []},
        )
        actions = [str(a).upper() for a in _xml_items(parsed.get("actions")) or ["REPLY"]]
        providers = _xml_items(parsed.get("providers"))
        text = str(parsed.get("text") or "")
        if "IGNORE" in actions and len(actions) > 1:
            actions = ["IGNORE"] if not text else [a for a in actions if a != "IGNORE"]
        simple = _says_only(actions) and not providers
        content = Content(
            thought=str(parsed.get("thought") or ""),
            actions=actions,
            providers=providers,
            text=text,
            simple=simple,
            source=self.message.content.source,
        )
        self.planned = content
        if not content.simple:
            progress = self._progress()
            await patiently(
                lambda: runtime.adapter.set_cache(
                    progress.key, progress.value, expires_at=progress.expires_at
                )
            )
        return content

    def _progress(self) -> CacheEntry:
        """The record of this turn's plan and reply id, for a run that comes after it."""
        plan = msgspec.to_builtins(self.planned)
        return CacheEntry(
            key=progress_key(self.message),
            value={"response_id": self.turn.response_id, "plan": plan},
            expires_at=now_ms() + OUTCOME_TTL_MS,
        )


def _says_only(actions: Sequence[str]) -> bool:
    """Say whether the plan only speaks, so its ``<text>`` is the answer.

    REPLY, or NONE: "respond but perform no additional action" (elizaOS's bootstrap).
    """
    names = {a.upper() for a in actions}
    return bool(names) and names <= {"REPLY", "NONE"}


def _plain_reply(raw: str) -> bool:
    parsed = parse_key_value_xml(raw.split("<text>", 1)[0]) or {}
    actions = parsed.get("actions")
    return isinstance(actions, list) and _says_only(actions) and not parsed.get("providers")


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _xml_items(value: XmlValue | None) -> list[str]:
    """A list field of the model's answer (a bare tag, ``True``, lists nothing)."""
    return [] if value is None or isinstance(value, bool) else list(value)


def _planned_actions(state: State) -> list[Action]:
    """The actions offered for this message in ``state.data["actions"]``, if any."""
    offered = state.data.get("actions")
    return [a for a in offered if isinstance(a, Action)] if isinstance(offered, list) else []


def _json_object(value: object) -> dict[str, object] | None:
    """Parse the ``<parameters>`` of a step: empty is ``{}``; anything but an object is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _declared_room_type(message: Memory) -> ChannelType | None:
    """The kind of room the connector says the message is in (``content.channel_type``).

    Case is ignored; None when it says nothing or names no ``ChannelType``.
    """
    declared = (message.content.channel_type or "").strip().upper()
    return ChannelType(declared) if declared in ChannelType.__members__ else None


def _connection(message: Memory) -> Connection:
    """What the message says about where it came from, to create what is missing."""
    return Connection(
        source=message.content.source or "unknown",
        room_type=_declared_room_type(message) or ChannelType.DM,
        channel_id=message.room_id,
    )
