"""Every NATS subject, stream and queue group of elizamesh, in one place.

Subjects follow ``<ns>.<domain>.<id>.<noun>.<verb>``: commands are imperative,
events past tense. The namespace (``ELIZA_NS``, default ``eliza``) lets one
NATS account host several stacks. Build subjects only through this module:
an inline f-string elsewhere would skip the id validation below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from contracts.message import ID_PATTERN, new_id

DEFAULT_NAMESPACE = "eliza"

_ID = re.compile(ID_PATTERN)
_OPERATION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
_AGENT_ID_TOKEN = 2  # <ns>.agent.<agent_id>...
_AGENT_COMMANDS = frozenset({"start", "stop", "delete"})
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_OWNER = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
RUN_OWNER_SEPARATOR = "__"
"""Splits an owned run id ``<owner>__<id>`` into its owner and its own id."""


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
        """What every runtime replica subscribes to (no queue group); the agent id is token 3."""
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

    # -- dead letters ---------------------------------------------------------

    def dead_letter(self, queue: str) -> str:
        """JetStream: a message the worker of ``queue`` gave up on, with the reason in a header.

        ``queue`` names the worker's durable consumer (``evaluator``,
        ``webhook-<source>``, ...); the message is the body as it was queued.
        """
        return f"{self.namespace}.dead.{validate_id(queue, what='queue')}"

    @property
    def dead_letters_template(self) -> str:
        """Every queue's dead letters (captured by the dead-letter stream)."""
        return f"{self.namespace}.dead.>"

    @property
    def dead_letters_stream(self) -> str:
        """JetStream stream keeping dead letters (``<ns>.dead.>`` and ``embedding_dead``)."""
        return f"{self.namespace.upper()}_DEAD"

    @property
    def embedding_stream(self) -> str:
        """JetStream work-queue stream of the embedding queue."""
        return f"{self.namespace.upper()}_EMBEDDING"

    # -- runs -----------------------------------------------------------------

    def run(self, run_id: str, what: str) -> str:
        """Publish: a run's ``chunk``, ``response``, ``heartbeat``, ``completed`` or ``failed``."""
        if what not in {"chunk", "response", "heartbeat", "completed", "failed"}:
            raise InvalidIdError(f"invalid run subject {what!r}")
        return f"{self.namespace}.run.{_run_tokens(run_id)}.{what}"

    def run_template(self, run_id: str) -> str:
        """Everything published for one run."""
        return f"{self.namespace}.run.{_run_tokens(run_id)}.>"

    def owned_run_id(self, owner: str) -> str:
        """A fresh run id owned by ``owner``: its subjects are ``<ns>.run.<owner>.<id>.<what>``.

        A client allowed to subscribe to ``runs_of(owner)`` only can follow the
        runs it started this way and nobody else's (NATS wildcards match whole
        tokens, so the owner needs a token of its own).
        """
        return f"{validate_owner(owner)}{RUN_OWNER_SEPARATOR}{new_id()}"

    def runs_of(self, owner: str) -> str:
        """Every run owned by ``owner`` (what its NATS user may subscribe to)."""
        return f"{self.namespace}.run.{validate_owner(owner)}.*.*"

    def replay_runs_of(self, owner: str) -> str:
        """Create a consumer replaying one run of ``owner`` from the runs stream (a permission).

        What ``follow_kept_run`` asks for: the consumer's filter is in the
        subject, so ``owner`` may replay its own runs and no one else's.
        """
        owned = f"{self.namespace}.run.{validate_owner(owner)}.*.>"
        return f"$JS.API.CONSUMER.CREATE.{self.runs_stream}.*.{owned}"

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

    def room_probe(self, replica_id: str) -> str:
        """Request-reply, one replica: does a turn of the room named in the body run there?"""
        return f"{self.namespace}.runtime.{validate_id(replica_id, what='replica_id')}.room"

    @property
    def room_probe_template(self) -> str:
        """Every replica's liveness subject (what a runtime probes a room's owner on)."""
        return f"{self.namespace}.runtime.*.room"

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


def validate_owner(value: str) -> str:
    """Return ``value`` if it can own runs and name a NATS user, else raise ``InvalidIdError``."""
    if not _OWNER.fullmatch(value):
        raise InvalidIdError(
            f"invalid owner {value!r}: expected a lower-case letter then up to 30 of [a-z0-9-]"
        )
    return value


def run_owner(run_id: str) -> str | None:
    """The owner of an owned run id (``<owner>__<id>``: ``Subjects.owned_run_id``), else None."""
    owner, separator, rest = run_id.partition(RUN_OWNER_SEPARATOR)
    if separator and rest and _OWNER.fullmatch(owner):
        return owner
    return None


def _run_tokens(run_id: str) -> str:
    """``<owner>.<id>`` for an owned run id (``<owner>__<id>``), else the run id itself."""
    validate_id(run_id, what="run_id")
    if (owner := run_owner(run_id)) is not None:
        return f"{owner}.{run_id[len(owner) + len(RUN_OWNER_SEPARATOR) :]}"
    return run_id


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


# -- least privilege ----------------------------------------------------------

INBOX = "_INBOX.>"
"""Where nats-py receives replies by default (services are trusted with it)."""

SERVICE_ROLES = ("runtime", "memory", "embedding", "evaluator", "gateway")
"""The services of a stack; each gets a NATS user of its own."""

ROLES = (*SERVICE_ROLES, "admin")
"""Every role ``permissions`` knows, beside connectors (``connector_permissions``)."""

_JS = "$JS.API"
_EMBEDDING_PRIORITIES = ("high", "normal", "low")


@dataclass(frozen=True, slots=True)
class Permissions:
    """What one NATS user may publish and subscribe to (a nats-server ``permissions`` block).

    ``allow_responses`` lets it answer the requests it receives (once each) on
    their reply subjects, and nowhere else in the reply space.
    """

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def _streams(*names: str) -> tuple[str, ...]:
    """Look up and declare streams (``ensure_stream`` does both)."""
    return tuple(f"{_JS}.STREAM.{verb}.{name}" for name in names for verb in ("INFO", "CREATE"))


def _durable(stream: str, consumer: str, filter_subject: str | None = None) -> tuple[str, ...]:
    """Join (create if absent), pull from and acknowledge one durable consumer.

    With ``filter_subject`` the consumer can only be created over that subject
    (nats-server checks the subject's filter against the request's).
    """
    create = f"{_JS}.CONSUMER.CREATE.{stream}.{consumer}"
    creates = (f"{create}.{filter_subject}",) if filter_subject else (create, f"{create}.>")
    return (
        f"{_JS}.CONSUMER.INFO.{stream}.{consumer}",
        *creates,
        f"{_JS}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    )


def _bucket(name: str) -> tuple[str, ...]:
    """Declare, read and write one KV bucket."""
    stream = f"KV_{name}"
    return (
        *_streams(stream),
        f"{_JS}.STREAM.UPDATE.{stream}",
        f"{_JS}.STREAM.MSG.GET.{stream}",
        f"{_JS}.DIRECT.GET.{stream}.>",
        f"$KV.{name}.>",
    )


def room_lease_bucket(subjects: Subjects) -> str:
    """The KV bucket holding one lease per room while a turn runs in it."""
    return f"{subjects.namespace.upper()}_ROOM_LEASES"


def outbound_consumer(source: str) -> str:
    """The durable consumer through which a platform's connector drains its outbound messages."""
    return f"webhook-{validate_id(source, what='source')}"


def _hosting(s: Subjects) -> tuple[str, ...]:
    """What a process hosting agents (runtime, evaluator) publishes: a turn's every effect."""
    return (
        s.memory_template,
        s.runs_template,
        s.events_template,
        s.outbound_template,
        s.embedding_queue_template,
        s.turn_evaluate_template,
        s.dead_letters_template,
        f"{s.namespace}.provider.*.get",
        f"{s.namespace}.action.*.invoke",
        s.agents_changed,
        *_streams(
            s.events_stream, s.runs_stream, s.outbound_stream, s.embedding_stream,
            s.evaluation_stream, s.dead_letters_stream,
        ),
        *_bucket(room_lease_bucket(s)),
    )  # fmt: skip


def _management(s: Subjects) -> tuple[str, ...]:
    """Agent management and health probes (the gateway's routes, the admin's CLI)."""
    return (
        s.message_handle_template,
        s.agents_add,
        s.agents_list,
        *(s.agent_command_template(c) for c in sorted(_AGENT_COMMANDS)),
        s.agent_health_template,
        s.health,
    )


def permissions(subjects: Subjects, role: str) -> Permissions:
    """The NATS permissions of one service role (``ROLES``) in ``subjects``' namespace.

    Generated from the builders above, so a subject a service starts to use
    and a permission it is granted cannot drift apart.

    Raises:
        InvalidIdError: ``role`` is not one of ``ROLES``.
    """
    s = subjects
    match role:
        case "runtime":
            return Permissions(
                publish=(*_hosting(s), s.room_probe_template),
                subscribe=(
                    s.room_probe_template,
                    s.message_handle_template,
                    s.agents_add,
                    s.agents_list,
                    s.agents_changed,
                    *(s.agent_command_template(c) for c in sorted(_AGENT_COMMANDS)),
                    s.agent_health_template,
                    s.health,
                    INBOX,
                ),
                allow_responses=True,
            )
        case "evaluator":
            return Permissions(
                publish=(
                    *_hosting(s),
                    *_durable(s.evaluation_stream, "evaluator"),
                ),
                subscribe=(s.agents_changed, s.health, INBOX),
                allow_responses=True,
            )
        case "memory":
            return Permissions(
                publish=(),  # it only answers: allow_responses
                subscribe=(s.memory_template, s.health, INBOX),
                allow_responses=True,
            )
        case "embedding":
            return Permissions(
                publish=(
                    s.memory_template,
                    s.embedding_dead,
                    s.events_template,
                    *_streams(s.embedding_stream, s.dead_letters_stream),
                    *(
                        p
                        for priority in _EMBEDDING_PRIORITIES
                        for p in _durable(s.embedding_stream, f"embedding-{priority}")
                    ),
                ),
                subscribe=(s.health, INBOX),
                allow_responses=True,
            )
        case "gateway":
            return Permissions(
                # get_memories: a room's history (GET /v1/agents/<id>/rooms/<room>/messages)
                publish=(
                    *_management(s),
                    s.memory_operation("get_memories"),
                    s.replay_runs_of("gateway"),
                ),
                subscribe=(s.runs_of("gateway"), s.health, f"{inbox_of('gateway')}.>"),
                allow_responses=True,
            )
        case "admin":
            events = s.events_stream
            return Permissions(
                publish=(
                    *_management(s),
                    f"{_JS}.INFO",
                    f"{_JS}.STREAM.INFO.{events}",
                    f"{_JS}.CONSUMER.CREATE.{events}",
                    f"{_JS}.CONSUMER.CREATE.{events}.>",
                    f"{_JS}.CONSUMER.INFO.{events}.>",
                    f"{_JS}.CONSUMER.DELETE.{events}.>",
                    f"$JS.ACK.{events}.>",
                    f"$JS.FC.{events}.>",
                ),
                subscribe=(s.runs_template, INBOX),
            )
        case _:
            raise InvalidIdError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")


def inbox_of(name: str) -> str:
    """The reply-subject prefix the NATS user ``name`` connects with (nats-py's ``inbox_prefix``).

    A connector's, or the gateway's: that user may read the replies to its
    own requests and nobody else's (``_INBOX.>`` would be everyone's).
    """
    return f"_INBOX.{validate_owner(name)}"


def connector_permissions(
    subjects: Subjects, name: str, sources: tuple[str, ...] = ()
) -> Permissions:
    """The NATS permissions of the connector ``name`` delivering for the platforms ``sources``.

    It may send messages to agents; follow the runs it owns
    (``Subjects.owned_run_id(name)``); read replies on its own inbox
    (``inbox_of(name)``); see its platforms' outbound messages live
    and drain them through their durable consumers (the stream exists: the
    runtime declares it). Nothing else: no memory, no agent commands, no
    events, no other run, no health probes, and no reply to what it
    receives (no ``allow_responses``: an outbound message it sees carries the
    runtime's reply subject for the stream's acknowledgement).

    Raises:
        InvalidIdError: ``name`` is not a valid owner, or is a service role's
            (it would share that service's user, inbox or runs).
    """
    if name in ROLES:
        raise InvalidIdError(f"a connector cannot be named {name!r}: a service role has it")
    s = subjects
    outbound = tuple(
        p
        for source in sources
        for p in _durable(s.outbound_stream, outbound_consumer(source), s.outbound(source))
    )
    dead = tuple(s.dead_letter(outbound_consumer(source)) for source in sources)
    streams = tuple(f"{_JS}.STREAM.INFO.{n}" for n in (s.outbound_stream, s.dead_letters_stream))
    publish = (
        s.message_handle_template,
        s.replay_runs_of(name),
        *((*streams, *outbound, *dead) if sources else ()),
    )
    return Permissions(
        publish=publish,
        subscribe=(
            s.runs_of(name),
            f"{inbox_of(name)}.>",
            *(s.outbound(source) for source in sources),
        ),
    )
