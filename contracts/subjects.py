"""Every NATS subject, stream and queue group of elizamesh, in one place.

Subjects follow ``<ns>.<domain>.<id>.<noun>.<verb>``: commands are imperative,
events past tense. The namespace (``ELIZA_NS``, default ``eliza``) lets one
NATS account host several stacks. Build subjects only through this module:
an inline f-string elsewhere would skip the id validation below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.message import ID_PATTERN

DEFAULT_NAMESPACE = "eliza"

_ID = re.compile(ID_PATTERN)
_OPERATION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_AGENT_ID_TOKEN = 2  # <ns>.agent.<agent_id>...
_AGENT_COMMANDS = frozenset({"start", "stop", "delete"})
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class InvalidIdError(ValueError):
    """An id or namespace that cannot be placed in a subject."""


def validate_id(value: str, *, what: str = "id") -> str:
    """Return ``value`` if it is a subject-safe id, else raise ``InvalidIdError``.

    Args:
        value: The id to check.
        what: The name of the id in the error message (``agent_id``, ...).
    """
    if not _ID.fullmatch(value):
        raise InvalidIdError(
            f"invalid {what} {value!r}: expected 1 to 64 characters from [A-Za-z0-9_-]"
        )
    return value


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject builders for one namespace.

    Templates (with ``*`` in place of ids) are what services subscribe to;
    builders (with real ids) are what clients publish to.
    """

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not _NAMESPACE.fullmatch(self.namespace):
            raise InvalidIdError(
                f"invalid namespace {self.namespace!r}: expected a lower-case letter "
                "then up to 31 of [a-z0-9_-]"
            )

    # -- agent commands (served by the runtime) -------------------------------

    def message_handle(self, agent_id: str) -> str:
        """Request-reply: ask an agent to handle one inbound message."""
        return f"{self.namespace}.agent.{validate_id(agent_id, what='agent_id')}.message.handle"

    @property
    def message_handle_template(self) -> str:
        """What the runtime subscribes to; the agent id is the third token."""
        return f"{self.namespace}.agent.*.message.handle"

    # -- memory (served by the memory service) ---------------------------------

    def memory_operation(self, operation: str) -> str:
        """Request-reply: run one storage operation (``contracts.memory.OPERATIONS``)."""
        if not _OPERATION.fullmatch(operation):
            raise InvalidIdError(f"invalid memory operation {operation!r}")
        return f"{self.namespace}.memory.{operation}"

    @property
    def memory_template(self) -> str:
        """What the memory service subscribes to; the operation is the third token."""
        return f"{self.namespace}.memory.*"

    # -- events ---------------------------------------------------------------

    def event(self, agent_id: str, event_type: str) -> str:
        """JetStream: one lifecycle event of an agent (``run.started``, ``message.sent``, ...)."""
        if not _EVENT_TYPE.fullmatch(event_type):
            raise InvalidIdError(f"invalid event type {event_type!r}")
        return f"{self.namespace}.event.{validate_id(agent_id, what='agent_id')}.{event_type}"

    def events_of_type(self, event_type: str) -> str:
        """One kind of event, of every agent (``<ns>.event.*.<type>``)."""
        if not _EVENT_TYPE.fullmatch(event_type):
            raise InvalidIdError(f"invalid event type {event_type!r}")
        return f"{self.namespace}.event.*.{event_type}"

    def events_of_agent(self, agent_id: str) -> str:
        """Every event of one agent (``<ns>.event.<agent_id>.>``)."""
        return f"{self.namespace}.event.{validate_id(agent_id, what='agent_id')}.>"

    @property
    def events_template(self) -> str:
        """Every event of every agent (what the events stream captures)."""
        return f"{self.namespace}.event.>"

    # -- remote providers -----------------------------------------------------

    def provider_get(self, name: str) -> str:
        """Request-reply: what the provider ``name`` adds to an agent's state."""
        return f"{self.namespace}.provider.{validate_id(name, what='provider name')}.get"

    def action_invoke(self, name: str) -> str:
        """Request-reply: run the remote action ``name``."""
        return f"{self.namespace}.action.{validate_id(name, what='action name')}.invoke"

    # -- evaluation -----------------------------------------------------------

    def turn_evaluate(self, agent_id: str) -> str:
        """JetStream work queue: evaluate one ended turn of an agent (``EvaluateTurn``)."""
        return f"{self.namespace}.agent.{validate_id(agent_id, what='agent_id')}.turn.evaluate"

    @property
    def turn_evaluate_template(self) -> str:
        """Every agent's ended turns (what the evaluation stream captures)."""
        return f"{self.namespace}.agent.*.turn.evaluate"

    @property
    def evaluation_stream(self) -> str:
        """JetStream work-queue stream of ended turns waiting for evaluators."""
        return f"{self.namespace.upper()}_EVALUATION"

    # -- embeddings -----------------------------------------------------------

    def embedding_queue(self, priority: str) -> str:
        """JetStream work queue: memories waiting for a vector, by priority."""
        if priority not in {"high", "normal", "low"}:
            raise InvalidIdError(f"invalid embedding priority {priority!r}")
        return f"{self.namespace}.embedding.queue.{priority}"

    @property
    def embedding_queue_template(self) -> str:
        """Every priority of the embedding queue (what its stream captures)."""
        return f"{self.namespace}.embedding.queue.>"

    @property
    def embedding_dead(self) -> str:
        """Where embedding requests that keep failing end up, for a person to look at."""
        return f"{self.namespace}.embedding.dead"

    @property
    def embedding_stream(self) -> str:
        """JetStream work-queue stream of the embedding queue."""
        return f"{self.namespace.upper()}_EMBEDDING"

    # -- runs -----------------------------------------------------------------

    def run(self, run_id: str, what: str) -> str:
        """Publish: a run's ``chunk``, ``response``, ``completed`` or ``failed``."""
        if what not in {"chunk", "response", "completed", "failed"}:
            raise InvalidIdError(f"invalid run subject {what!r}")
        return f"{self.namespace}.run.{validate_id(run_id, what='run_id')}.{what}"

    def run_template(self, run_id: str) -> str:
        """Everything published for one run."""
        return f"{self.namespace}.run.{validate_id(run_id, what='run_id')}.>"

    @property
    def runs_template(self) -> str:
        """Every run (what the runs stream captures)."""
        return f"{self.namespace}.run.>"

    # -- agents ---------------------------------------------------------------

    @property
    def agents_list(self) -> str:
        """Request-reply: the agents of the stack (stored, enabled or not)."""
        return f"{self.namespace}.agents.list"

    @property
    def agents_add(self) -> str:
        """Request-reply (queue group): start a new agent from a character."""
        return f"{self.namespace}.agents.add"

    @property
    def agents_changed(self) -> str:
        """Publish: an agent changed; every runtime replica reconciles its copy."""
        return f"{self.namespace}.agents.changed"

    def agent_command(self, agent_id: str, command: str) -> str:
        """Request-reply, every replica acts: ``start``, ``stop`` or ``delete`` an agent."""
        if command not in _AGENT_COMMANDS:
            raise InvalidIdError(f"invalid agent command {command!r}")
        return f"{self.namespace}.agent.{validate_id(agent_id, what='agent_id')}.{command}"

    def agent_command_template(self, command: str) -> str:
        """What every runtime replica subscribes to for ``command``."""
        if command not in _AGENT_COMMANDS:
            raise InvalidIdError(f"invalid agent command {command!r}")
        return f"{self.namespace}.agent.*.{command}"

    def agent_health(self, agent_id: str) -> str:
        """Request-reply (queue group): probe one agent."""
        return f"{self.namespace}.agent.{validate_id(agent_id, what='agent_id')}.health"

    @property
    def agent_health_template(self) -> str:
        """What the runtime subscribes to for agent probes."""
        return f"{self.namespace}.agent.*.health"

    # -- operations -----------------------------------------------------------

    @property
    def health(self) -> str:
        """Scatter-gather: every service instance answers with its ``ServiceHealth``."""
        return f"{self.namespace}.health"

    def outbound(self, source: str) -> str:
        """Publish (captured by the outbound stream): a message for a platform's connector."""
        return f"{self.namespace}.outbound.{validate_id(source, what='source')}.send"

    @property
    def outbound_template(self) -> str:
        """Every outbound message (what the outbound stream captures)."""
        return f"{self.namespace}.outbound.*.send"

    # -- streams --------------------------------------------------------------

    @property
    def events_stream(self) -> str:
        """JetStream stream holding lifecycle events (``<ns>.event.>``)."""
        return f"{self.namespace.upper()}_EVENTS"

    @property
    def outbound_stream(self) -> str:
        """JetStream stream holding outbound messages until their connector delivers them."""
        return f"{self.namespace.upper()}_OUTBOUND"

    @property
    def runs_stream(self) -> str:
        """JetStream stream holding run chunks and results (``<ns>.run.>``)."""
        return f"{self.namespace.upper()}_RUNS"


def agent_id_of(subject: str) -> str:
    """Return the agent id token of an ``<ns>.agent.<id>....`` subject."""
    tokens = subject.split(".")
    if len(tokens) <= _AGENT_ID_TOKEN or tokens[1] != "agent":
        raise InvalidIdError(f"not an agent subject: {subject!r}")
    return validate_id(tokens[_AGENT_ID_TOKEN], what="agent_id")


QUEUE_RUNTIME = "runtime"
"""Queue group of runtime replicas: each message is handled by one of them."""

QUEUE_MEMORY = "memory"
"""Queue group of memory-service replicas."""
