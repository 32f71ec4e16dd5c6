"""The bootstrap plugin: the actions, providers and evaluator every agent starts with.

Providers tell the model who it is, what was said, what it can do; actions
answer, stay silent, follow or mute rooms, and send messages elsewhere;
REFLECTION learns facts and relationships after a reply; a reaction a
connector reports (REACTION_RECEIVED) is stored with the room's messages.

It is also where a runtime gets its default parts, wired from above the
runtime (which loads this plugin by name and imports none of them): the
message pipeline (``DefaultMessageService``) and the in-process embedding
queue unless the host set its own, the task service, and the service that
stores the character's knowledge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from contracts import Content
from contracts.records import Entity, Memory, ParticipantState, Relationship
from contracts.turn import CacheEntry
from shared.agent.character import MessageExample
from shared.agent.embedding_queue import EmbeddingQueue
from shared.agent.knowledge import KnowledgeService, knowledge_provider
from shared.agent.message_service import DefaultMessageService
from shared.agent.prompts import compose_prompt
from shared.agent.runtime import AgentRuntime, TargetInfo
from shared.agent.tasks import TaskService
from shared.agent.turn import current_turn, reflection_key, up_to
from shared.agent.types import (
    Action,
    ActionResult,
    Callback,
    Evaluator,
    EvaluatorOutputError,
    EventType,
    HandlerOptions,
    ModelType,
    Plugin,
    PluginPriority,
    Provider,
    ProviderResult,
    State,
)
from shared.agent.worlds import WORLD_ACTIONS, WORLD_PROVIDERS
from shared.agent.xml import TextTagStreamer, parse_json_object, parse_key_value_xml, plain_text
from shared.errors import BadRequest

# -- providers -------------------------------------------------------------------


async def character_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """Who the agent is: system prompt, bio, topics, adjectives, style and examples.

    As elizaOS's CHARACTER provider: the example conversations
    (``messageExamples``, ``{{name1}}``/``{{user1}}`` standing for the other
    speakers) and posts (``postExamples``) show how the agent writes.
    """
    del message, state
    c = runtime.character
    lines = [f"# About {c.name}", *c.bio_lines]
    if c.topics:
        lines.append(f"{c.name} is interested in: {', '.join(c.topics)}")
    if c.adjectives:
        lines.append(f"{c.name} is: {', '.join(c.adjectives)}")
    style = [*c.style.all, *c.style.chat]
    if style:
        lines.append("Style:\n" + "\n".join(f"- {s}" for s in style))
    if c.system:
        lines.insert(0, c.system)
    conversations = _example_conversations(c.message_examples[:EXAMPLES_SHOWN])
    if conversations:
        lines.append(f"# Example conversations for {c.name}\n{conversations}")
    posts = "\n".join(f"- {p}" for p in c.post_examples[:EXAMPLES_SHOWN])
    if posts:
        lines.append(f"# Example posts for {c.name}\n{posts}")
    return ProviderResult(
        text="\n".join(lines),
        values={
            "agentName": c.name,
            "bio": " ".join(c.bio_lines),
            "system": c.system or "",
            "topics": ", ".join(c.topics),
            "adjectives": ", ".join(c.adjectives),
            "characterMessageExamples": conversations,
            "characterPostExamples": posts,
        },
    )


EXAMPLES_SHOWN = 5
"""How many example conversations, and example posts, the CHARACTER provider shows."""

_SPEAKER = re.compile(r"\{\{(?:name|user)(\d+)\}\}")


def _example_conversations(conversations: Sequence[Sequence[MessageExample]]) -> str:
    shown = []
    for conversation in conversations:
        said = []
        for line in conversation:
            text = line.content.get("text")
            if not isinstance(text, str) or not text:
                continue
            speaker = _SPEAKER.sub(lambda m: f"User{m.group(1)}", line.name)
            actions = line.content.get("actions")
            done = f" (actions: {', '.join(map(str, actions))})" if actions else ""
            said.append(f"{speaker}: {_SPEAKER.sub(lambda m: f'User{m.group(1)}', text)}{done}")
        if said:
            shown.append("\n".join(said))
    return "\n\n".join(shown)


async def recent_messages_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """The last messages of the room up to ``message``, oldest first, with who said them.

    Messages of others stored after ``message``, and the agent's replies to
    them, are left out: a message answered late (its first turn broke off
    after storing it, and it came again behind the room's later messages) is
    answered as the conversation stood when it came, not as a repeat of the
    newest message, which has been answered already.
    """
    del state
    count = runtime.get_conversation_length()
    turn = current_turn()
    loaded = turn.recent_messages(message.room_id) if turn is not None else None
    if loaded is None:  # no turn loaded this room
        loaded = await _stored_up_to(runtime, message, count)
    memories = loaded[:count]
    said = [m for m in reversed(memories) if m.content.metadata.get("type") != "action_result"]
    names = {e.id: (e.names[0] if e.names else e.id) for e in await _entities_of(runtime, said)}
    lines = [
        f"{names.get(m.entity_id, m.entity_id)}: {m.content.text}" for m in said if m.content.text
    ]
    text = "# Conversation\n" + "\n".join(lines) if lines else ""
    return ProviderResult(
        text=text, values={"recentMessages": "\n".join(lines)}, data={"recent_messages": said}
    )


async def _stored_up_to(runtime: AgentRuntime, message: Memory, count: int) -> list[Memory]:
    """The room's last ``count`` messages from storage, newest first, as a turn sees them.

    For reads outside a turn that loaded the room: ``up_to`` leaves out what
    came after ``message``, as ``begin_turn``'s context is filtered.
    """
    stored = await runtime.adapter.get_memories(
        table_name="messages", room_id=message.room_id, count=count
    )
    return up_to(stored, message, runtime.agent_id)


async def _entities_of(runtime: AgentRuntime, memories: Sequence[Memory]) -> list[Entity]:
    """The authors of ``memories``: from what the turn loaded, else from storage."""
    wanted = {m.entity_id for m in memories}
    turn = current_turn()
    if turn is not None and turn.context is not None:
        known = [e for e in turn.context.entities if e.id in wanted]
        if {e.id for e in known} >= wanted - {runtime.agent_id}:
            return known
    return await runtime.adapter.get_entities_by_ids(sorted(wanted))


async def time_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """The current date and time in UTC."""
    del runtime, message, state
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return ProviderResult(text=f"The current date and time is {now}.", values={"time": now})


async def actions_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """The actions the agent may take for this message (those whose validate accepts it)."""
    usable = [a for a in runtime.actions if await a.validate(runtime, message, state)]
    names = ", ".join(a.name for a in usable)
    described = "\n".join(f"- {a.name}: {a.description}" for a in usable)
    return ProviderResult(
        text=f"# Available actions\n{described}",
        values={"actionNames": names, "actionsWithDescriptions": described},
        data={"actions": usable},
    )


async def providers_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """The providers the model may ask for in ``<providers>`` (the dynamic ones)."""
    del message, state
    dynamic = [p for p in runtime.providers if p.dynamic and not p.private]
    listed = "\n".join(f"- {p.name}: {p.description}" for p in dynamic)
    return ProviderResult(text=f"# Providers you can ask for\n{listed}" if dynamic else "")


async def action_state_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """What the actions of this turn have done so far."""
    stored = state.data.get("action_results")
    results: Sequence[ActionResult] = (
        stored if isinstance(stored, list) and stored else runtime.get_action_results(message.id)
    )
    if not results:
        return ProviderResult()
    lines = [
        f"- {r.action}: {'succeeded' if r.success else 'failed'}"
        + (f" ({r.error})" if r.error else "")
        + (f": {r.text}" if r.text else "")
        for r in results
    ]
    return ProviderResult(
        text="# Actions done so far\n" + "\n".join(lines),
        values={"actionResults": "\n".join(lines)},
    )


async def entities_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """The people in the room."""
    del state
    turn = current_turn()
    context = turn.context if turn is not None else None
    if context is not None and context.room.id == message.room_id:
        by_id = {e.id: e for e in context.entities}
        entities = [by_id[i] for i in context.participants if i in by_id]
    else:
        ids = await runtime.adapter.get_participants_for_room(message.room_id)
        entities = await runtime.adapter.get_entities_by_ids(ids)
    lines = [f"- {', '.join(e.names)} (id {e.id})" for e in entities]
    return ProviderResult(
        text="# People in the room\n" + "\n".join(lines), values={"entities": "\n".join(lines)}
    )


async def facts_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """Facts the agent learned that relate to the message."""
    del state
    facts = (
        await runtime.search_facts(message.content.text, count=6) if message.content.text else []
    )
    lines = [f"- {f.content.text}" for f in facts]
    return ProviderResult(
        text="# Known facts\n" + "\n".join(lines) if lines else "",
        values={"knownFacts": "\n".join(lines)},
        data={"facts": facts},
    )


async def relationships_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """Who the sender is related to, and how."""
    del state
    links = await runtime.adapter.get_relationships(message.entity_id)
    lines = [f"- {r.source_entity_id} -> {r.target_entity_id}: {', '.join(r.tags)}" for r in links]
    return ProviderResult(text="# Relationships\n" + "\n".join(lines) if lines else "")


async def evaluators_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """The evaluators that will look at the conversation."""
    del message, state
    listed = "\n".join(f"- {e.name}: {e.description}" for e in runtime.evaluators)
    return ProviderResult(text=f"# Evaluators\n{listed}" if listed else "")


# -- actions ---------------------------------------------------------------------


async def reply(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Write the reply with the reply template, stream it, and send it.

    A model that answers in plain prose instead of the XML has its prose
    sent (streamed as one chunk, since no ``<text>`` streamed); reasoning
    (``<think>``) is never part of the reply.
    """
    planned = [p for r in responses for p in r.content.providers]
    state = await runtime.compose_state(message, [*planned, "RECENT_MESSAGES", "ACTION_STATE"])
    prompt = compose_prompt(runtime.template("replyTemplate"), state.values)
    streamer = TextTagStreamer() if options.on_stream_chunk else None

    async def forward(chunk: str, _id: str | None) -> None:
        if (
            streamer is not None
            and options.on_stream_chunk is not None
            and (piece := streamer.feed(chunk))
        ):
            await options.on_stream_chunk(piece, message.id)

    answer = await runtime.use_model(
        ModelType.TEXT_LARGE,
        {"prompt": prompt, "xml_fields": ["thought", "text"]},
        on_stream_chunk=forward if streamer else None,
    )
    parsed = parse_key_value_xml(str(answer)) or {}
    text = str(parsed.get("text") or "").strip()
    prose = not text and bool(text := plain_text(str(answer)))
    if prose and streamer is not None and options.on_stream_chunk is not None:
        await options.on_stream_chunk(text, message.id)  # no <text> streamed: send it whole
    if not text:
        return ActionResult(success=False, error="the model wrote no <text> for the reply")
    content = Content(
        text=text,
        thought=str(parsed.get("thought") or ""),
        actions=["REPLY"],
        source=message.content.source,
    )
    if callback is not None:
        await callback(content)
    return ActionResult(text=text, values={"lastReply": text})


async def ignore(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Say nothing."""
    del runtime, message, state, options, callback, responses
    return ActionResult(text="", values={"ignored": True})


async def none(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Do nothing more than what was said."""
    del runtime, message, state, options, callback, responses
    return ActionResult()


def _room_state_action(name: str, target: ParticipantState | None, description: str) -> Action:
    async def handler(
        runtime: AgentRuntime,
        message: Memory,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Sequence[Memory],
    ) -> ActionResult:
        del state, options, callback, responses
        await runtime.adapter.set_participant_user_state(message.room_id, runtime.agent_id, target)
        return ActionResult(text=f"room state is now {target.value if target else 'default'}")

    return Action(name=name, handler=handler, description=description)


async def send_message(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Send a message to another room or platform (``target`` and ``source`` from the plan)."""
    del state, callback
    parameters = dict(options.parameters)
    planned = next((r.content for r in responses), None)
    source = str(
        parameters.get("source")
        or (planned.source if planned else "")
        or message.content.source
        or ""
    )
    target = str(parameters.get("target") or (planned.target if planned else "") or message.room_id)
    text = str(parameters.get("text") or (planned.text if planned else ""))
    if not source or not text:
        return ActionResult(success=False, error="SEND_MESSAGE needs a source and a text")
    await runtime.send_message_to_target(
        TargetInfo(source=source, room_id=target, channel_id=target), Content(text=text)
    )
    return ActionResult(text=f"sent to {target} on {source}")


# -- evaluator -------------------------------------------------------------------

_FACT = re.compile(r"<fact>(.*?)</fact>", re.DOTALL)
_RELATIONSHIP = re.compile(r"<relationship>(.*?)</relationship>", re.DOTALL)
_REFLECTION_KEYS = frozenset({"thought", "facts", "relationships"})


def read_reflection(answer: str) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Read REFLECTION's answer into (facts, relationships), each a list of field dicts.

    The forms models produce: the asked-for XML (``<fact><claim>..</claim>
    <type>..</type></fact>``, ``<relationship>..</relationship>``), or JSON,
    bare or in a code fence, with ``facts`` (objects with ``claim``, or
    ``fact`` / ``text``, and ``type``; or plain strings) and
    ``relationships`` (objects with ``sourceEntityId``, ``targetEntityId``
    and ``tags`` as a list or a comma-separated string). An answer with
    nothing new is fine (empty lists); reasoning is ignored.

    Raises:
        EvaluatorOutputError: the answer is in none of these forms.
    """
    xml = parse_key_value_xml(answer) or {}
    if _REFLECTION_KEYS & xml.keys():
        return (
            [dict(parse_key_value_xml(raw) or {}) for raw in _FACT.findall(answer)],
            [dict(parse_key_value_xml(raw) or {}) for raw in _RELATIONSHIP.findall(answer)],
        )
    data = parse_json_object(answer)
    if data is None or not _REFLECTION_KEYS & data.keys():
        raise EvaluatorOutputError(f"no reflection in the model's answer: {answer[:200]!r}")
    facts: list[dict[str, object]] = []
    for item in _listed(data.get("facts")):
        if isinstance(item, str):
            facts.append({"claim": item})
        elif isinstance(item, dict):
            claim = item.get("claim") or item.get("fact") or item.get("text")
            facts.append({**item, "claim": str(claim or "")})
    links: list[dict[str, object]] = []
    for item in _listed(data.get("relationships")):
        if isinstance(item, dict):
            tags = item.get("tags")
            joined = ",".join(map(str, tags)) if isinstance(tags, list) else tags
            links.append({**item, "tags": joined})
    return facts, links


def _listed(value: object) -> list[object]:
    """``value`` if the model wrote a list there; nothing otherwise."""
    return list(value) if isinstance(value, list) else []


async def reflection_validate(runtime: AgentRuntime, message: Memory, state: State | None) -> bool:
    """Reflect once a quarter of the conversation length has passed since the last time."""
    del state
    key = reflection_key(message.room_id)
    turn = current_turn()
    context = turn.context if turn is not None else None
    if context is not None and context.room.id == message.room_id:
        last = context.cache.get(key)
        recent = turn.recent_messages(message.room_id) if turn is not None else None
    else:
        last = await runtime.adapter.get_cache(key)
        recent = None
    if recent is None:
        recent = await _stored_up_to(runtime, message, runtime.get_conversation_length())
    ids = [m.id for m in recent]
    since = ids.index(last) if isinstance(last, str) and last in ids else len(ids)
    return since > runtime.get_conversation_length() // 4


async def reflect(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> None:
    """Ask the model for new facts and relationships, and store them.

    Raises:
        EvaluatorOutputError: the answer could not be read (``read_reflection``);
            nothing is stored and the room's reflection mark stays, so the next
            turn reflects again.
    """
    del callback, responses
    prompt = compose_prompt(runtime.template("reflectionTemplate"), state.values)
    answer = str(await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": prompt}))
    facts, links = read_reflection(answer)
    claimed = [
        (claim, fields)
        for fields in facts
        if (claim := str(fields.get("claim") or "").strip())
        and str(fields.get("already_known", "")).lower() != "true"
    ]
    # The stored facts (up to 500, with their vectors) are read only to keep a new
    # claim from being stored twice: most answers claim nothing new.
    stored = await runtime.adapter.get_memories(table_name="facts", count=500) if claimed else []
    known = {f.content.text.strip().lower() for f in stored}
    for claim, fields in claimed:
        if claim.lower() not in known:
            known.add(claim.lower())
            await runtime.create_fact(
                Memory(
                    entity_id=message.entity_id,
                    room_id=message.room_id,
                    content=Content(
                        text=claim, metadata={"type": str(fields.get("type") or "fact")}
                    ),
                )
            )
    for link in links:
        await _remember_relationship(runtime, link)
    await _set_cache(runtime, reflection_key(message.room_id), message.id)


async def _set_cache(runtime: AgentRuntime, key: str, value: object) -> None:
    """Set a cache value: with the turn's writes inside a turn, else now."""
    turn = current_turn()
    if turn is not None:
        turn.cache.append(CacheEntry(key=key, value=value))
    else:
        await runtime.adapter.set_cache(key, value)


async def _remember_relationship(runtime: AgentRuntime, fields: dict[str, object]) -> None:
    source = str(fields.get("sourceEntityId") or "").strip()
    target = str(fields.get("targetEntityId") or "").strip()
    if not source or not target:
        return
    tags = [t.strip() for t in str(fields.get("tags") or "").split(",") if t.strip()]
    existing = [
        r for r in await runtime.adapter.get_relationships(source) if r.target_entity_id == target
    ]
    if existing:
        old = existing[0]
        interactions = int(old.metadata.get("interactions", 0)) + 1
        link = Relationship(
            source_entity_id=source,
            target_entity_id=target,
            tags=sorted({*old.tags, *tags}),
            metadata={**old.metadata, "interactions": interactions},
        )
    else:
        link = Relationship(
            source_entity_id=source,
            target_entity_id=target,
            tags=tags,
            metadata={"interactions": 1},
        )
    turn = current_turn()
    if turn is not None:  # written with the evaluation's other writes, in one transaction
        turn.relationships.append(link)
    elif existing:
        await runtime.adapter.update_relationship(link)
    else:
        await runtime.adapter.create_relationship(link)


# -- events ----------------------------------------------------------------------


async def store_reaction(payload: dict[str, object]) -> None:
    """REACTION_RECEIVED: store the reaction (``payload["message"]``) with the room's messages.

    As elizaOS's bootstrap: a connector reports a reaction as a message
    (e.g. text ``*Added 👍 to: "..."*``, ``in_reply_to`` the message reacted
    to); its platform ids are mapped as for any inbound message. The agent
    does not answer it.

    Raises:
        BadRequest: the payload has no ``message`` Memory, or it breaks a limit.
    """
    runtime = payload["runtime"]
    if not isinstance(runtime, AgentRuntime):
        raise TypeError(f"REACTION_RECEIVED: 'runtime' is a {type(runtime).__name__}")
    message = payload.get("message")
    if not isinstance(message, Memory):
        raise BadRequest(
            f"REACTION_RECEIVED needs a Memory under 'message', got {type(message).__name__}",
            details={"field": "message"},
        )
    await runtime.create_memory(runtime.inbound_message(message), "messages")


async def give_default_parts(config: Mapping[str, str], runtime: AgentRuntime) -> None:
    """Give ``runtime`` the default message service and embedding queue, unless it has its own."""
    del config
    if not runtime.has_message_service():
        runtime.message_service = DefaultMessageService()
    if runtime.embedding_queue is None:
        runtime.embedding_queue = EmbeddingQueue(runtime)


bootstrap_plugin = Plugin(
    name="bootstrap",
    description="The actions, providers and evaluator every agent starts with.",
    priority=PluginPriority.CORE,
    init=give_default_parts,
    providers=(
        Provider("ACTIONS", actions_provider, "Possible actions", position=-1),
        Provider("CHARACTER", character_provider, "Who the agent is"),
        Provider("TIME", time_provider, "The current time"),
        Provider("PROVIDERS", providers_provider, "Providers to ask for"),
        Provider("RECENT_MESSAGES", recent_messages_provider, "Recent messages", position=100),
        Provider(
            "ACTION_STATE", action_state_provider, "Results of this turn's actions", position=150
        ),
        Provider("ENTITIES", entities_provider, "People in the room", dynamic=True),
        Provider("KNOWLEDGE", knowledge_provider, "What the agent knows about the question"),
        Provider("FACTS", facts_provider, "Facts learned about the people", dynamic=True),
        Provider("RELATIONSHIPS", relationships_provider, "Who knows whom", dynamic=True),
        Provider("EVALUATORS", evaluators_provider, "Evaluators", private=True),
        *WORLD_PROVIDERS,
    ),
    actions=(
        Action(
            "REPLY", reply, "Answer the message with text.", similes=("RESPOND", "GREET", "ANSWER")
        ),
        Action(
            "IGNORE", ignore, "Say nothing: the message needs no answer.", similes=("STOP_TALKING",)
        ),
        Action("NONE", none, "Do nothing more.", similes=("NO_ACTION",)),
        _room_state_action(
            "FOLLOW_ROOM", ParticipantState.FOLLOWED, "Follow this room and join in."
        ),
        _room_state_action("UNFOLLOW_ROOM", None, "Stop following this room."),
        _room_state_action("MUTE_ROOM", ParticipantState.MUTED, "Stay silent here unless named."),
        _room_state_action("UNMUTE_ROOM", None, "Take part in this room again."),
        Action(
            "SEND_MESSAGE",
            send_message,
            "Send a message to another room or platform.",
            similes=("DM",),
        ),
        *WORLD_ACTIONS,
    ),
    services=(KnowledgeService, TaskService),
    events={EventType.REACTION_RECEIVED: (store_reaction,)},
    evaluators=(
        Evaluator(
            "REFLECTION",
            reflect,
            "Learn facts and relationships from the conversation.",
            validate=reflection_validate,
        ),
    ),
)
