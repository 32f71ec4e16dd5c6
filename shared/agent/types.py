"""The building blocks a plugin contributes: actions, providers, evaluators, services, models.

Names and fields follow elizaOS in snake_case. Callbacks are plain async
functions, so a plugin is a handful of functions and one ``Plugin(...)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, ClassVar

from contracts import Content
from contracts.records import Memory, Task
from shared.errors import Internal, ServiceError
from shared.storage.adapter import DatabaseAdapter

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime


class ModelType(StrEnum):
    """The kinds of model call a plugin can serve (elizaOS's 15 model types)."""

    TEXT_SMALL = "TEXT_SMALL"
    TEXT_LARGE = "TEXT_LARGE"
    TEXT_EMBEDDING = "TEXT_EMBEDDING"
    TEXT_TOKENIZER_ENCODE = "TEXT_TOKENIZER_ENCODE"
    TEXT_TOKENIZER_DECODE = "TEXT_TOKENIZER_DECODE"
    TEXT_REASONING_SMALL = "REASONING_SMALL"
    TEXT_REASONING_LARGE = "REASONING_LARGE"
    TEXT_COMPLETION = "TEXT_COMPLETION"
    IMAGE = "IMAGE"
    IMAGE_DESCRIPTION = "IMAGE_DESCRIPTION"
    TRANSCRIPTION = "TRANSCRIPTION"
    TEXT_TO_SPEECH = "TEXT_TO_SPEECH"
    AUDIO = "AUDIO"
    VIDEO = "VIDEO"
    OBJECT_SMALL = "OBJECT_SMALL"
    OBJECT_LARGE = "OBJECT_LARGE"
    # elizaOS's legacy aliases (the same members, not new types).
    SMALL = "TEXT_SMALL"
    MEDIUM = "TEXT_LARGE"
    LARGE = "TEXT_LARGE"

    @classmethod
    def of(cls, model_type: ModelType | str) -> ModelType | str:
        """The member a name or value means (``"SMALL"`` is ``TEXT_SMALL``); other text as is.

        Plugins may register model types of their own, so an unknown name is
        not an error here: ``use_model`` reports a type no plugin serves.
        """
        if isinstance(model_type, cls):
            return model_type
        if model_type in cls.__members__:
            return cls[model_type]
        try:
            return cls(model_type)
        except ValueError:
            return model_type


STREAMABLE_MODELS = frozenset(
    {
        ModelType.TEXT_SMALL,
        ModelType.TEXT_LARGE,
        ModelType.TEXT_REASONING_SMALL,
        ModelType.TEXT_REASONING_LARGE,
        ModelType.TEXT_COMPLETION,
    }
)


class EventType(StrEnum):
    """Everything the runtime announces (elizaOS's EventType), and where each one fires.

    Every payload carries ``agent_id`` and, where they exist, ``run_id``,
    ``message_id`` and ``room_id`` (filled from the current turn, or from
    the payload's ``message``). Events are facts: each fires after what it
    names has happened.

    - ``WORLD_JOINED``: a world new to the agent is stored (``create_world``,
      ``ensure_world_exists``, ``ensure_connection(s)``). ``WORLD_CONNECTED``:
      the first time, since ``initialize``, one of these finds the world
      already stored (the agent is back in a world it knew).
      ``WORLD_LEFT``: ``remove_world``.
    - ``ROOM_JOINED``: a room new to the agent is stored (``create_room(s)``,
      ``ensure_room_exists``, ``ensure_connection(s)``) or the agent is added
      to a room. ``ROOM_LEFT``: ``delete_room`` (and each room of a removed
      world), or the agent taken out of a room (``remove_participant``).
    - ``ENTITY_JOINED``: an entity is added to a room it was not in
      (``add_participant(s_room)``, ``ensure_participant_in_room``,
      ``ensure_connection(s)``). ``ENTITY_LEFT``: ``remove_participant``.
      ``ENTITY_UPDATED``: ``update_entity``, or ``ensure_connection`` adding
      names.
    - ``MESSAGE_RECEIVED`` / ``MESSAGE_SENT``: each turn's inbound message and
      each thing the agent says. ``VOICE_MESSAGE_RECEIVED`` /
      ``VOICE_MESSAGE_SENT``: the same, in addition, in a VOICE_DM or
      VOICE_GROUP room. ``MESSAGE_DELETED``: a memory of the ``messages``
      table is deleted (``delete_message``, ``delete_memory``).
      ``CHANNEL_CLEARED``: a room's messages are deleted (``clear_channel``,
      ``delete_all_memories(room, "messages")``).
    - ``RUN_STARTED`` / ``RUN_ENDED`` / ``RUN_TIMEOUT``, ``ACTION_*``,
      ``EVALUATOR_*``, ``MODEL_USED``, ``EMBEDDING_GENERATION_*``: the turn,
      its actions and evaluators, every model call, the embedding queue.
    - ``CONTROL_MESSAGE``: ``send_control_message`` (enable or disable a
      client's input in a room).
    - ``REACTION_RECEIVED``, ``INTERACTION_RECEIVED``, ``POST_GENERATED``:
      come from connectors and plugins, as in elizaOS: a connector emits them
      with ``runtime.emit_event(...)``; the bootstrap plugin stores a
      reaction's ``message``. In the runtime service every event is also
      published on the bus (``<ns>.event.<agent>.<type>``).
    """

    WORLD_JOINED = "WORLD_JOINED"
    WORLD_CONNECTED = "WORLD_CONNECTED"
    WORLD_LEFT = "WORLD_LEFT"
    ENTITY_JOINED = "ENTITY_JOINED"
    ENTITY_LEFT = "ENTITY_LEFT"
    ENTITY_UPDATED = "ENTITY_UPDATED"
    ROOM_JOINED = "ROOM_JOINED"
    ROOM_LEFT = "ROOM_LEFT"
    MESSAGE_RECEIVED = "MESSAGE_RECEIVED"
    MESSAGE_SENT = "MESSAGE_SENT"
    MESSAGE_DELETED = "MESSAGE_DELETED"
    CHANNEL_CLEARED = "CHANNEL_CLEARED"
    VOICE_MESSAGE_RECEIVED = "VOICE_MESSAGE_RECEIVED"
    VOICE_MESSAGE_SENT = "VOICE_MESSAGE_SENT"
    REACTION_RECEIVED = "REACTION_RECEIVED"
    POST_GENERATED = "POST_GENERATED"
    INTERACTION_RECEIVED = "INTERACTION_RECEIVED"
    RUN_STARTED = "RUN_STARTED"
    RUN_ENDED = "RUN_ENDED"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    ACTION_STARTED = "ACTION_STARTED"
    ACTION_COMPLETED = "ACTION_COMPLETED"
    EVALUATOR_STARTED = "EVALUATOR_STARTED"
    EVALUATOR_COMPLETED = "EVALUATOR_COMPLETED"
    MODEL_USED = "MODEL_USED"
    EMBEDDING_GENERATION_REQUESTED = "EMBEDDING_GENERATION_REQUESTED"
    EMBEDDING_GENERATION_COMPLETED = "EMBEDDING_GENERATION_COMPLETED"
    EMBEDDING_GENERATION_FAILED = "EMBEDDING_GENERATION_FAILED"
    CONTROL_MESSAGE = "CONTROL_MESSAGE"


class PluginPriority(IntEnum):
    """Load-order bands: databases first, platforms last."""

    DATABASE = -100
    MODEL_PROVIDER = -50
    CORE = 0
    FEATURE = 50
    PLATFORM = 100


# -- errors --------------------------------------------------------------------


class ActionError(Internal):
    """An action could not run, or raised while running."""


class EvaluatorOutputError(ValueError):
    """An evaluator's model answer could not be read (the answer's start is in the message)."""


class StateError(Internal):
    """State could not be composed, or the runtime is not ready for it.

    ``provider`` names the required provider that is missing or failed
    (None when the runtime itself is not ready).
    """

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message, details={"provider": provider} if provider else None)
        self.provider = provider


class ModelError(ServiceError):
    """A model call failed, or no plugin serves the model type."""


# -- state ---------------------------------------------------------------------


@dataclass
class State:
    """What the agent knows for one message: template values, raw data, and prompt text."""

    values: dict[str, object] = field(default_factory=dict)
    data: dict[str, object] = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class ProviderResult:
    """What one provider adds to the state."""

    text: str = ""
    values: Mapping[str, object] = field(default_factory=dict)
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionResult:
    """The outcome of one action; ``values`` flow into the state of the next one."""

    success: bool = True
    text: str | None = None
    values: Mapping[str, object] = field(default_factory=dict)
    data: Mapping[str, object] = field(default_factory=dict)
    error: str | None = None
    action: str = ""


# -- components ----------------------------------------------------------------

Callback = Callable[[Content], Awaitable[object]]
"""Delivers content to the user (the connector sends it; the runtime stores it)."""

StreamChunk = Callable[[str, str | None], Awaitable[None]]
"""Receives each streamed piece of a reply, with the id of the message being answered."""

Validator = Callable[["AgentRuntime", Memory, State | None], Awaitable[bool]]


async def always(runtime: AgentRuntime, message: Memory, state: State | None) -> bool:
    """A validator that accepts every message."""
    del runtime, message, state
    return True


@dataclass(frozen=True)
class HandlerOptions:
    """What the runtime tells an action besides the message and state."""

    action_context: Sequence[ActionResult] = ()
    parameters: Mapping[str, object] = field(default_factory=dict)
    on_stream_chunk: StreamChunk | None = None


ActionHandler = Callable[
    ["AgentRuntime", Memory, State, HandlerOptions, Callback | None, Sequence[Memory]],
    Awaitable[ActionResult | bool | None],
]


@dataclass(frozen=True)
class Action:
    """Something the agent can do in answer to a message."""

    name: str
    handler: ActionHandler
    description: str = ""
    similes: Sequence[str] = ()
    examples: Sequence[Sequence[Mapping[str, object]]] = ()
    validate: Validator = always


ProviderGet = Callable[["AgentRuntime", Memory, State], Awaitable[ProviderResult]]


@dataclass(frozen=True)
class Provider:
    """A source of context for the state (recent messages, time, facts, ...).

    ``dynamic`` providers run only when asked for; ``private`` ones are not
    listed to the model; lower ``position`` comes first in the prompt. A
    ``required`` provider's failure stops ``compose_state`` with a
    ``StateError`` naming it, instead of leaving its part out.
    """

    name: str
    get: ProviderGet
    description: str = ""
    dynamic: bool = False
    position: int = 0
    private: bool = False
    required: bool = False


EvaluatorHandler = Callable[
    ["AgentRuntime", Memory, State, Callback | None, Sequence[Memory]], Awaitable[object]
]


@dataclass(frozen=True)
class Evaluator:
    """Work done after a reply: learn facts, track relationships, score the turn."""

    name: str
    handler: EvaluatorHandler
    description: str = ""
    similes: Sequence[str] = ()
    examples: Sequence[Mapping[str, object]] = ()
    always_run: bool = False
    validate: Validator = always


ModelResult = object
ModelHandler = Callable[
    ["AgentRuntime", dict[str, object]], Awaitable[ModelResult | AsyncIterator[str]]
]
"""Serves one model type; may return an async iterator of text chunks to stream."""

EventHandler = Callable[[dict[str, object]], Awaitable[None]]


class Service:
    """A long-lived component of a runtime (a connector, a queue worker, ...).

    Subclasses set ``service_type`` and implement ``start`` (a classmethod
    returning the running instance) and ``stop``.
    """

    service_type: ClassVar[str] = "unknown"
    capability_description: ClassVar[str] = ""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    @classmethod
    async def start(cls, runtime: AgentRuntime) -> Service:
        """Return a started instance for ``runtime``."""
        return cls(runtime)

    async def stop(self) -> None:
        """Release what the service holds; the default holds nothing."""


TaskExecute = Callable[["AgentRuntime", Mapping[str, object], Task], Awaitable[None]]
"""Runs one task: the runtime, the task's metadata, the task."""
TaskValidate = Callable[["AgentRuntime", Task], Awaitable[bool]]
"""Says whether a task may run now."""


async def _always_run(runtime: AgentRuntime, task: Task) -> bool:
    del runtime, task
    return True


@dataclass(frozen=True)
class TaskWorker:
    """Knows how to run the tasks called ``name`` (``runtime.register_task_worker``)."""

    name: str
    execute: TaskExecute
    validate: TaskValidate = _always_run


Route = Mapping[str, object]


@dataclass(frozen=True)
class Plugin:
    """A bundle of capabilities, registered with ``AgentRuntime(plugins=[...])``."""

    name: str
    description: str = ""
    init: Callable[[Mapping[str, str], AgentRuntime], Awaitable[None]] | None = None
    config: Mapping[str, str] = field(default_factory=dict)
    actions: Sequence[Action] = ()
    providers: Sequence[Provider] = ()
    evaluators: Sequence[Evaluator] = ()
    services: Sequence[type[Service]] = ()
    models: Mapping[ModelType | str, ModelHandler] = field(default_factory=dict)
    events: Mapping[EventType | str, Sequence[EventHandler]] = field(default_factory=dict)
    routes: Sequence[Route] = ()
    dependencies: Sequence[str] = ()
    priority: int = PluginPriority.CORE
    adapter: DatabaseAdapter | None = None
