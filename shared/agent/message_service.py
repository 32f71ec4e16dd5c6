"""The message pipeline: one inbound message in, the agent's answer (or silence) out.

What elizaOS's DefaultMessageService does, with its defects fixed on purpose:
the agent's reply is stored (not left to the transport); STOP means stop;
MESSAGE_RECEIVED / MESSAGE_SENT are emitted; every run ends (``end_run``),
and ends ``failed`` when a step failed rather than ``completed``; a failing
action is a failed step instead of an exception that loses the message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from contracts import Content
from contracts.agent import ActionOutcome, HandleMessageResult, RunStatus
from contracts.evaluation import EvaluateTurn
from contracts.records import ChannelType, Memory, ParticipantState, Room, now_ms
from contracts.turn import CacheEntry, Connection
from shared.agent.prompts import compose_prompt
from shared.agent.turn import Turn, current_turn, entered, outcome_key, reflection_key
from shared.agent.types import (
    ActionResult,
    Callback,
    EventType,
    ModelType,
    State,
    StreamChunk,
)
from shared.agent.xml import TextTagStreamer, parse_key_value_xml
from shared.errors import NotFound
from shared.telemetry import MESSAGES_HANDLED, TURN_DURATION, span, timed

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

logger = logging.getLogger("elizamesh.messages")

Mode = Literal["simple", "actions", "none"]

ALWAYS_RESPOND_CHANNELS = frozenset(
    {ChannelType.DM, ChannelType.VOICE_DM, ChannelType.SELF, ChannelType.API}
)
ALWAYS_RESPOND_SOURCES = frozenset({"client_chat", "api", "cli"})
INITIAL_PROVIDERS = ["ENTITIES", "CHARACTER", "RECENT_MESSAGES", "ACTIONS"]


@dataclass(frozen=True)
class MessageOptions:
    """How to handle one message.

    ``use_multi_step`` and ``max_multi_step_iterations`` default to the
    ``USE_MULTI_STEP`` and ``MAX_MULTISTEP_ITERATIONS`` settings (off, 6).
    """

    max_retries: int = 3
    timeout: float = 3600.0
    on_stream_chunk: StreamChunk | None = None
    use_multi_step: bool | None = None
    max_multi_step_iterations: int | None = None
    run_id: str | None = None
    run_evaluators: bool = True


MessageProcessingResult = HandleMessageResult
"""elizaOS's name for the outcome of a turn: the same type as every other wiring's."""

OUTCOME_TTL_MS = 24 * 3600 * 1000
"""How long a turn's outcome is kept: a message re-sent within it gets the same outcome."""


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


class DefaultMessageService:
    """Handles messages for any runtime; remembers the newest turn per room to supersede.

    Holds nothing that belongs to one message: each turn's data is in its
    ``Turn`` (``shared.agent.turn``). The newest turn per room is kept for
    superseding, bounded to the rooms most recently seen.
    """

    def __init__(self, *, evaluation: EvaluationSink | None = None, rooms: int = 10_000) -> None:
        self._latest: OrderedDict[tuple[str, str], str] = OrderedDict()
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
        written. A newer message in the same room supersedes this one: its
        answer is then dropped. A message already handled (same id, same
        room) gets its stored outcome again without a model call. The turn
        reads storage once and writes once (``begin_turn``, ``commit_turn``).

        Raises:
            TimeoutError: the turn ran past ``options.timeout`` (it ended ``timeout``).
        """
        options = options or MessageOptions()
        message = msgspec.structs.replace(message, agent_id=runtime.agent_id)
        turn = Turn(
            run_id=options.run_id or runtime.create_run_id(),
            message=message,
            response_id=str(uuid.uuid4()),
        )
        self._mark_latest(runtime.agent_id, message.room_id, turn.response_id)
        with entered(turn):
            return await self._handle(runtime, turn, callback, options)

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

    def _mark_latest(self, agent_id: str, room_id: str, response_id: str) -> None:
        key = (agent_id, room_id)
        self._latest[key] = response_id
        self._latest.move_to_end(key)
        while len(self._latest) > self._rooms:
            self._latest.popitem(last=False)

    def is_latest(self, runtime: AgentRuntime, room_id: str, response_id: str) -> bool:
        """Say whether ``response_id`` is still the newest turn in the room."""
        return self._latest.get((runtime.agent_id, room_id), response_id) == response_id

    async def should_respond(
        self, runtime: AgentRuntime, message: Memory, state: State
    ) -> RespondDecision:
        """Decide whether to answer: by rule for DMs, APIs, mentions; else ask the model."""
        room = await _room_of(runtime, message)
        if room is None:
            return RespondDecision(False, "the room is unknown")
        if room.type in ALWAYS_RESPOND_CHANNELS:
            return RespondDecision(True, f"{room.type} rooms are always answered")
        source = (message.content.source or "").lower()
        if source in ALWAYS_RESPOND_SOURCES:
            return RespondDecision(True, f"messages from {source} are always answered")
        mention = message.content.mention_context
        if mention is not None and (mention.is_mention or mention.is_reply):
            return RespondDecision(True, "the agent was mentioned or replied to")
        prompt = compose_prompt(runtime.template("shouldRespondTemplate"), state.values)
        shape = {
            "xml_fields": ["name", "reasoning", "action"],
            "choices": {"name": [runtime.character.name], "action": ["RESPOND", "IGNORE", "STOP"]},
        }
        answer = await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": prompt, **shape})
        parsed = parse_key_value_xml(str(answer)) or {}
        action = str(parsed.get("action", "")).strip().upper()
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


class EvaluationSink(Protocol):
    """Where ended turns go to be evaluated: in this process, or the evaluator service."""

    async def submit(self, runtime: AgentRuntime, job: EvaluateTurn) -> None:
        """Have ``job`` evaluated (now, or durably queued)."""
        ...


class InProcessEvaluation:
    """Evaluates each turn here, right after it ends (embedded mode)."""

    async def submit(self, runtime: AgentRuntime, job: EvaluateTurn) -> None:
        """Run the evaluators now; a failure is logged, the turn's outcome stands."""
        try:
            await evaluate_turn(runtime, job)
        except Exception:
            logger.exception("evaluating message %s failed", job.message.id)


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
        await runtime.emit_event(
            EventType.MESSAGE_RECEIVED, {"message": message, "run_id": turn.run_id}
        )

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
        provider_errors = (turn.state.data.get("provider_errors") if turn.state else None) or {}
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
        turn.context = await runtime.adapter.begin_turn(
            message,
            _connection(message),
            recent_count=runtime.get_conversation_length(),
            outcome_key=outcome_key(message),
            cache_keys=[reflection_key(message.room_id)],
        )
        agent = turn.context.agent
        if agent is None or not agent.enabled:
            raise NotFound(f"agent {runtime.agent_id} is {'stopped' if agent else 'deleted'}")
        if turn.context.outcome is not None:
            self.replayed = msgspec.convert(turn.context.outcome, HandleMessageResult)
            return self.replayed
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
        if turn.has_writes():
            await runtime.adapter.commit_turn(turn.commit())
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
        return self.service.is_latest(self.runtime, self.message.room_id, self.turn.response_id)

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
        state = State()
        for iteration in range(1, limit + 1):
            state = await runtime.compose_state(
                message, ["RECENT_MESSAGES", "ACTION_STATE", "ACTIONS"]
            )
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
            if step.get("isFinish") is True or not action:
                break
            if not self._latest():
                return self.result("superseded")
        state = await runtime.compose_state(message, ["RECENT_MESSAGES", "ACTION_STATE"])
        summary = await self._ask(
            compose_prompt(runtime.template("multiStepSummaryTemplate"), state.values),
            ["thought", "text"],
            required=["text"],
            stream=True,
        )
        text = str(summary.get("text") or "").strip() or "I could not put an answer together."
        self.mode = "simple"
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
    ) -> dict[str, Any]:
        """Ask TEXT_LARGE for an XML answer with ``fields``; retry until ``required`` are there.

        ``fields`` and ``choices`` also go to the model plugin, which may force
        the shape (the local model does, with a grammar). Only the first try
        streams: a retry's text would repeat what was already streamed.
        """
        parsed: dict[str, Any] = {}
        streamer = TextTagStreamer() if stream and self.options.on_stream_chunk else None
        for attempt in range(1, self.options.max_retries + 1):
            forward = (
                self._forward(streamer, plain_reply_only=plain_reply_only) if streamer else None
            )
            answer = await self.runtime.use_model(
                ModelType.TEXT_LARGE,
                {"prompt": prompt, "xml_fields": list(fields), "choices": dict(choices or {})},
                on_stream_chunk=forward,
            )
            parsed = dict(parse_key_value_xml(str(answer)) or {})
            if all(parsed.get(name) not in (None, "", []) for name in required):
                break
            logger.warning("unusable answer from the model (attempt %d): %.200s", attempt, answer)
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
        raw: list[str] = []

        async def forward(chunk: str, _message_id: str | None) -> None:
            raw.append(chunk)
            piece = streamer.feed(chunk)
            if not piece or (plain_reply_only and not _plain_reply("".join(raw))):
                return
            if self._latest():
                await on_chunk(piece, self.message.id)

        return forward

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
        await runtime.emit_event(EventType.MESSAGE_SENT, {"message": memory, "run_id": turn.run_id})
        if self.user_callback is not None:
            await self.user_callback(memory.content)
        return [memory]

    def _muted(self) -> bool:
        context = self.turn.context
        if context is None or context.participant_state is not ParticipantState.MUTED:
            return False
        return self.runtime.character.name.lower() not in self.message.content.text.lower()

    async def _plan(self, state: State) -> Content:
        """Ask the model what to do; retry until it gives a thought and actions."""
        runtime = self.runtime
        prompt = compose_prompt(runtime.template("messageHandlerTemplate"), state.values)
        parsed = await self._ask(
            prompt,
            ["thought", "actions", "providers", "text"],
            choices={
                "actions": [a.name for a in state.data.get("actions") or runtime.actions],
                "providers": [p.name for p in runtime.providers if p.dynamic and not p.private],
            },
            required=["thought", "actions"],
            stream=True,
            plain_reply_only=True,
        )
        actions = [str(a).upper() for a in parsed.get("actions") or ["REPLY"]]
        providers = list(parsed.get("providers") or [])
        text = str(parsed.get("text") or "")
        if "IGNORE" in actions and len(actions) > 1:
            actions = ["IGNORE"] if not text else [a for a in actions if a != "IGNORE"]
        simple = actions == ["REPLY"] and not providers
        return Content(
            thought=str(parsed.get("thought") or ""),
            actions=actions,
            providers=providers,
            text=text,
            simple=simple,
            source=self.message.content.source,
        )


def _plain_reply(raw: str) -> bool:
    parsed = parse_key_value_xml(raw.split("<text>", 1)[0]) or {}
    actions = parsed.get("actions")
    return (
        isinstance(actions, list)
        and [a.upper() for a in actions] == ["REPLY"]
        and not parsed.get("providers")
    )


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _json_object(value: Any) -> dict[str, Any] | None:
    """Parse the ``<parameters>`` of a step: empty is ``{}``; anything but an object is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    try:
        parsed = json.loads(str(value))
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _connection(message: Memory) -> Connection:
    """What the message says about where it came from, to create what is missing."""
    declared = (message.content.channel_type or "").upper()
    room_type = ChannelType(declared) if declared in ChannelType.__members__ else ChannelType.DM
    return Connection(
        source=message.content.source or "unknown",
        room_type=room_type,
        channel_id=message.room_id,
    )
