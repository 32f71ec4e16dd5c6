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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from contracts import Content
from contracts.records import ChannelType, Memory, ParticipantState
from shared.agent.prompts import compose_prompt
from shared.agent.types import (
    ActionResult,
    Callback,
    EventType,
    ModelType,
    State,
    StreamChunk,
)
from shared.agent.xml import TextTagStreamer, parse_key_value_xml
from shared.telemetry import MESSAGES_HANDLED, TURN_DURATION, span, timed

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

logger = logging.getLogger("elizamesh.messages")

Mode = Literal["simple", "actions", "none"]
RunStatus = Literal["completed", "failed", "ignored", "self", "muted", "superseded", "timeout"]

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


@dataclass
class MessageProcessingResult:
    """What happened to one message."""

    did_respond: bool
    response_content: Content | None = None
    response_messages: list[Memory] = field(default_factory=list)
    state: State | None = None
    mode: Mode = "none"
    run_id: str = ""
    status: RunStatus = "completed"
    action_results: list[ActionResult] = field(default_factory=list)


@dataclass(frozen=True)
class RespondDecision:
    """Whether to answer, and why."""

    should_respond: bool
    reason: str
    used_model: bool = False


class DefaultMessageService:
    """Handles messages for any runtime; remembers the newest turn per room to supersede."""

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], str] = {}

    async def handle_message(
        self,
        runtime: AgentRuntime,
        message: Memory,
        callback: Callback | None = None,
        options: MessageOptions | None = None,
    ) -> MessageProcessingResult:
        """Handle ``message`` for ``runtime`` and return what happened.

        ``callback`` receives each piece of content the agent sends (it is
        also stored); ``options.on_stream_chunk`` receives the reply as it is
        written. A newer message in the same room supersedes this one: its
        answer is then dropped. Past ``options.timeout`` the run ends
        ``timeout`` and ``TimeoutError`` is raised.
        """
        options = options or MessageOptions()
        response_id = str(uuid.uuid4())
        self._latest[(runtime.agent_id, message.room_id)] = response_id
        run_id = runtime.start_run(message.room_id, options.run_id)
        await runtime.emit_event(
            EventType.RUN_STARTED,
            {
                "run_id": run_id,
                "message_id": message.id,
                "room_id": message.room_id,
                "entity_id": message.entity_id,
            },
        )
        turn = _Turn(
            service=self,
            runtime=runtime,
            message=message,
            callback=callback,
            options=options,
            response_id=response_id,
            run_id=run_id,
        )
        attributes = {"elizamesh.agent_id": runtime.agent_id, "elizamesh.run_id": run_id}
        try:
            with (
                span("turn", **attributes, **{"elizamesh.message_id": message.id}) as current,
                timed(TURN_DURATION, agent_id=runtime.agent_id),
            ):
                async with asyncio.timeout(options.timeout):
                    result = await turn.run()
                current.set_attribute("elizamesh.status", result.status)
        except TimeoutError:
            await runtime.emit_event(
                EventType.RUN_TIMEOUT, {"run_id": run_id, "message_id": message.id}
            )
            await self._end(runtime, run_id, message, "timeout", "the run exceeded its timeout")
            raise
        except Exception as exc:
            await self._end(runtime, run_id, message, "failed", f"{type(exc).__name__}: {exc}")
            raise
        await self._end(runtime, run_id, message, result.status, turn.error)
        MESSAGES_HANDLED.add(1, {"agent_id": runtime.agent_id, "status": result.status})
        return result

    def is_latest(self, runtime: AgentRuntime, room_id: str, response_id: str) -> bool:
        """Say whether ``response_id`` is still the newest turn in the room."""
        return self._latest.get((runtime.agent_id, room_id)) == response_id

    async def should_respond(
        self, runtime: AgentRuntime, message: Memory, state: State
    ) -> RespondDecision:
        """Decide whether to answer: by rule for DMs, APIs, mentions; else ask the model."""
        rooms = await runtime.adapter.get_rooms_by_ids([message.room_id])
        if not rooms:
            return RespondDecision(False, "the room is unknown")
        room = rooms[0]
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

    async def _end(
        self, runtime: AgentRuntime, run_id: str, message: Memory, status: str, error: str | None
    ) -> None:
        await runtime.emit_event(
            EventType.RUN_ENDED,
            {
                "run_id": run_id,
                "message_id": message.id,
                "room_id": message.room_id,
                "status": status,
                "error": error,
            },
        )
        runtime.end_run()


class _Turn:
    """One message being handled: the steps of the pipeline, in order."""

    def __init__(
        self,
        *,
        service: DefaultMessageService,
        runtime: AgentRuntime,
        message: Memory,
        callback: Callback | None,
        options: MessageOptions,
        response_id: str,
        run_id: str,
    ) -> None:
        self.service = service
        self.runtime = runtime
        self.message = message
        self.user_callback = callback
        self.options = options
        self.response_id = response_id
        self.run_id = run_id
        self.sent: list[Memory] = []
        self.error: str | None = None

    def _result(self, status: RunStatus, **fields: Any) -> MessageProcessingResult:
        return MessageProcessingResult(
            did_respond=False, run_id=self.run_id, status=status, **fields
        )

    async def run(self) -> MessageProcessingResult:  # noqa: PLR0911 - one exit per way a turn ends
        runtime, message = self.runtime, self.message
        if message.entity_id == runtime.agent_id:
            return self._result("self")
        message = msgspec.structs.replace(message, agent_id=runtime.agent_id)
        self.message = message
        # A message from someone new, in a room never seen, still gets an answer:
        # "the agent silently does not reply" is elizaOS's most reported defect.
        await runtime.ensure_connection(
            entity_id=message.entity_id,
            room_id=message.room_id,
            world_id=message.world_id,
            source=message.content.source or "unknown",
            channel_id=message.room_id,
        )
        await runtime.adapter.create_memory(message, "messages")
        await runtime.queue_embedding_generation(message, "high")
        await runtime.emit_event(
            EventType.MESSAGE_RECEIVED, {"message": message, "run_id": self.run_id}
        )

        if await self._muted():
            return self._result("muted")
        state = await runtime.compose_state(message, INITIAL_PROVIDERS, only_include=True)
        decision = await self.service.should_respond(runtime, message, state)
        if not decision.should_respond:
            await self._evaluate(state, did_respond=False)
            return self._result("ignored", state=state)

        if self._multi_step():
            return await self._run_multi_step()
        state = await runtime.compose_state(message, ["ACTIONS"])
        content = await self._plan(state)
        if not self.service.is_latest(runtime, message.room_id, self.response_id):
            return self._result("superseded", state=state)
        if content.providers:
            state = await runtime.compose_state(message, content.providers)
        content = msgspec.structs.replace(content, in_reply_to=message.id)
        response = Memory(
            id=self.response_id,
            entity_id=runtime.agent_id,
            agent_id=runtime.agent_id,
            room_id=message.room_id,
            world_id=message.world_id,
            content=content,
        )
        if "IGNORE" in [a.upper() for a in content.actions]:
            await self._evaluate(state, did_respond=False)
            return self._result("ignored", state=state)

        mode: Mode
        results: list[ActionResult] = []
        if content.simple and content.text:
            mode = "simple"
            await self.callback(content)
        else:
            mode = "actions"
            results = await runtime.process_actions(
                message,
                [response],
                state,
                self.callback,
                on_stream_chunk=self.options.on_stream_chunk,
            )
        failures = [r for r in results if not r.success]
        provider_errors = state.data.get("provider_errors") or {}
        if failures or provider_errors:
            self.error = "; ".join(
                [f"{r.action}: {r.error}" for r in failures]
                + [f"provider {name}: {err}" for name, err in provider_errors.items()]
            )
        await self._evaluate(state, did_respond=bool(self.sent))
        return MessageProcessingResult(
            did_respond=bool(self.sent),
            response_content=self.sent[-1].content if self.sent else content,
            response_messages=list(self.sent),
            state=state,
            mode=mode,
            run_id=self.run_id,
            status="failed" if self.error else "completed",
            action_results=results,
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
                else:
                    result = await runtime.run_action(
                        action, message=message, state=state, so_far=results, parameters=parameters
                    )
                results.append(result)
            if step.get("isFinish") is True or not action:
                break
            if not self.service.is_latest(runtime, message.room_id, self.response_id):
                return self._result("superseded", state=state, action_results=results)
        state = await runtime.compose_state(message, ["RECENT_MESSAGES", "ACTION_STATE"])
        summary = await self._ask(
            compose_prompt(runtime.template("multiStepSummaryTemplate"), state.values),
            ["thought", "text"],
            required=["text"],
            stream=True,
        )
        text = str(summary.get("text") or "").strip() or "I could not put an answer together."
        await self.callback(Content(text=text, actions=["MULTI_STEP_SUMMARY"], simple=True))
        failures = [r for r in results if not r.success]
        if failures:
            self.error = "; ".join(f"{r.action}: {r.error}" for r in failures)
        return MessageProcessingResult(
            did_respond=bool(self.sent),
            response_content=self.sent[-1].content if self.sent else None,
            response_messages=list(self.sent),
            state=state,
            mode="simple",
            run_id=self.run_id,
            status="failed" if failures else "completed",
            action_results=results,
        )

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
            if self.service.is_latest(self.runtime, self.message.room_id, self.response_id):
                await on_chunk(piece, self.message.id)

        return forward

    async def _evaluate(self, state: State, *, did_respond: bool) -> None:
        """Run the evaluators here, unless the evaluator service does (``run_evaluators``)."""
        if self.options.run_evaluators:
            await self.runtime.evaluate(
                self.message,
                state,
                did_respond=did_respond,
                callback=self.callback,
                responses=self.sent,
            )

    async def callback(self, content: Content) -> list[Memory]:
        """Store what the agent says, announce it, and hand it to the caller's callback."""
        runtime = self.runtime
        if not self.service.is_latest(runtime, self.message.room_id, self.response_id):
            return []
        memory = Memory(
            id=self.response_id if not self.sent else str(uuid.uuid4()),
            entity_id=runtime.agent_id,
            agent_id=runtime.agent_id,
            room_id=self.message.room_id,
            world_id=self.message.world_id,
            content=msgspec.structs.replace(
                content, in_reply_to=content.in_reply_to or self.message.id
            ),
        )
        await runtime.adapter.create_memory(memory, "messages")
        await runtime.queue_embedding_generation(memory, "normal")
        self.sent.append(memory)
        await runtime.emit_event(EventType.MESSAGE_SENT, {"message": memory, "run_id": self.run_id})
        if self.user_callback is not None:
            await self.user_callback(memory.content)
        return [memory]

    async def _muted(self) -> bool:
        state = await self.runtime.adapter.get_participant_user_state(
            self.message.room_id, self.runtime.agent_id
        )
        if state is not ParticipantState.MUTED:
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
