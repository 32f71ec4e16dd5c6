"""Span names of the bus are ``<operation> <destination template>``: bounded, whatever the ids."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.sampling import Decision

from contracts import Subjects
from shared.bus_spans import REPLY, HousekeepingSampler, destination_template

S = Subjects("eliza")


@pytest.mark.parametrize(
    ("subject", "template"),
    [
        (S.message_handle("agent-1"), "eliza.agent.{agent_id}.message.handle"),
        (S.run("r1", "chunk"), "eliza.run.{run_id}.chunk"),
        (S.run(S.owned_run_id("gateway"), "completed"), "eliza.run.{owner}.{run_id}.completed"),
        (S.event("a1", "run.started"), "eliza.event.{agent_id}.{event_domain}.{event_name}"),
        (S.outbound("discord"), "eliza.outbound.{source}.send"),
        (S.provider_get("CLOCK"), "eliza.provider.{name}.get"),
        (S.embedding_queue("high"), "eliza.embedding.queue.{priority}"),
        (S.memory_operation("get_memories"), "eliza.memory.get_memories"),
        (S.health, "eliza.health"),
        ("_INBOX.Xq3.7", REPLY),
        ("_INBOX.gateway.Xq3.7", REPLY),
        ("$KV.ELIZA_ROOM_LEASES.room-1", "$KV.ELIZA_ROOM_LEASES.{key}"),
        ("$JS.ACK.ELIZA_RUNS.c.1.2.3.4.5", "$JS.ACK.ELIZA_RUNS.c"),
    ],
)
def test_a_subject_becomes_its_template(subject: str, template: str) -> None:
    assert destination_template(subject) == template


def test_many_ids_make_one_name() -> None:
    subjects = [S.message_handle(f"agent-{i}") for i in range(100)]
    subjects += [f"_INBOX.{i}.{i}" for i in range(100)]
    assert len({destination_template(s) for s in subjects}) == 2


@pytest.mark.parametrize(
    "name",
    [
        "create eliza.health",
        "publish eliza.health",
        "process eliza.agent.{agent_id}.health",
        "publish eliza.memory.get_tasks",
        "publish (reply)",
    ],
)
def test_housekeeping_and_orphan_replies_start_no_trace(name: str) -> None:
    result = HousekeepingSampler().should_sample(None, 1, name)
    assert result.decision is Decision.DROP


@pytest.mark.parametrize(
    "name", ["process eliza.agent.{agent_id}.message.handle", "publish eliza.memory.get_memories"]
)
def test_the_work_of_a_turn_is_sampled(name: str) -> None:
    result = HousekeepingSampler().should_sample(None, 1, name)
    assert result.decision is Decision.RECORD_AND_SAMPLE
