"""The turn: per-message state in its own context, one outcome, one read and one write."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

import elizamesh
from contracts import Content
from contracts.records import Memory
from shared.agent.elizaos import ElizaOS
from shared.agent.message_service import MessageOptions, TurnFailedError
from shared.agent.runtime import AgentRuntime
from shared.agent.turn import current_turn
from shared.agent.types import Action, ActionResult, Callback, EventType, HandlerOptions, State
from shared.storage.sql import SqlAdapter
from tests.scripted import ScriptedModel, plan

ROOMS = 16


def said(text: str, room: str) -> Memory:
    return Memory(entity_id=f"user-{room}", room_id=room, content=Content(text=text))


def lookup_action(barrier: asyncio.Barrier) -> Action:
    """An action that waits until every turn is inside it, so all 16 overlap for sure."""

    async def handler(
        runtime: AgentRuntime,
        message: Memory,
        state: State,
        options: HandlerOptions,
        callback: Callback | None,
        responses: Any,
    ) -> ActionResult:
        del runtime, state, options, callback, responses
        await asyncio.wait_for(barrier.wait(), timeout=10)
        return ActionResult(text=f"looked up for {message.room_id}")

    return Action("LOOKUP", handler, "Look something up.")


def record_run_ids(runtime: AgentRuntime) -> list[tuple[str, str, str]]:
    """(event, message id, run id) for every event that names a run."""
    seen: list[tuple[str, str, str]] = []
    for name in (
        EventType.RUN_STARTED,
        EventType.MESSAGE_RECEIVED,
        EventType.ACTION_STARTED,
        EventType.ACTION_COMPLETED,
        EventType.MESSAGE_SENT,
        EventType.RUN_ENDED,
    ):

        async def listener(payload: dict[str, Any], name: str = name) -> None:
            message = payload.get("message")  # a reply names the message it answers
            message_id = (
                message.content.in_reply_to or message.id
                if message is not None
                else payload.get("message_id")
            )
            seen.append((name, str(message_id), str(payload["run_id"])))

        runtime.on(name, listener)
    return seen


async def test_sixteen_concurrent_turns_each_keep_their_own_run_id(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    runtime.register_action(lookup_action(asyncio.Barrier(ROOMS)))
    model.default = plan("done", actions="LOOKUP,REPLY")
    seen = record_run_ids(runtime)
    messages = [said(f"question {i}", f"room-{i}") for i in range(ROOMS)]
    results = await asyncio.gather(
        *(runtime.message_service.handle_message(runtime, m) for m in messages)
    )
    run_of = {r.message_id: r.run_id for r in results}
    assert len(set(run_of.values())) == ROOMS
    assert all(r.status == "completed" for r in results)
    # Every event names the run of the turn of its message.
    assert len(seen) >= ROOMS * 6
    wrong = [(e, m, r) for e, m, r in seen if run_of[m] != r]
    assert wrong == []
    for result, message in zip(results, messages, strict=True):
        assert [a.action for a in result.action_results] == ["LOOKUP", "REPLY"]
        assert runtime.get_action_results(message.id)[0].text == f"looked up for {message.room_id}"
        stored = await runtime.get_memories(table_name="messages", room_id=message.room_id)
        action_rows = [m for m in stored if m.content.metadata.get("type") == "action_result"]
        assert {m.content.metadata["run_id"] for m in action_rows} == {result.run_id}
        assert len(action_rows) == 2
        logs = await runtime.get_logs(room_id=message.room_id)
        assert logs  # the model calls of the turn
        assert {entry.body["run_id"] for entry in logs} == {result.run_id}


async def test_outside_a_turn_there_is_no_current_turn_and_runs_belong_to_their_task(
    runtime: AgentRuntime,
) -> None:
    assert current_turn() is None

    async def own_run() -> tuple[str, str]:
        started = runtime.start_run()
        await asyncio.sleep(0)
        return started, runtime.get_current_run_id()

    (a_started, a_seen), (b_started, b_seen) = await asyncio.gather(own_run(), own_run())
    assert a_started == a_seen
    assert b_started == b_seen
    assert a_started != b_started


async def test_a_failing_step_ends_the_turn_failed_with_the_error_on_every_in_process_channel(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    model.default = plan("nothing", actions="SEARCH_WEB")
    ended: list[dict[str, Any]] = []

    async def on_run_ended(payload: dict[str, Any]) -> None:
        ended.append(payload)

    runtime.on(EventType.RUN_ENDED, on_run_ended)
    result = await runtime.message_service.handle_message(runtime, said("search", "r-fail"))
    assert result.status == "failed"
    assert result.error is not None
    assert "SEARCH_WEB" in result.error
    assert ended[-1]["status"] == "failed"
    assert ended[-1]["error"] == result.error
    # Through ElizaOS, in sync mode the same result; in async mode on_error fires.
    eliza = ElizaOS()
    synced = await eliza.handle_message(runtime, said("search again", "r-fail-2"))
    assert isinstance(synced, elizamesh.HandleMessageResult)
    assert synced.status == "failed"
    errors: list[BaseException] = []
    finished = asyncio.Event()

    async def on_error(error: BaseException) -> None:
        errors.append(error)

    async def on_complete() -> None:
        finished.set()

    async def on_response(content: Content) -> None:
        del content

    accepted = await eliza.handle_message(
        runtime,
        said("and again", "r-fail-3"),
        on_response=on_response,
        on_error=on_error,
        on_complete=on_complete,
    )
    assert accepted.status == "accepted"
    await asyncio.wait_for(finished.wait(), timeout=10)
    [error] = errors
    assert isinstance(error, TurnFailedError)
    assert error.result.status == "failed"
    assert error.result.run_id == accepted.run_id
    assert "SEARCH_WEB" in str(error)


async def test_a_message_handled_twice_gets_its_stored_outcome_without_a_model_call(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    message = said("hello once", "r-twice")
    first = await runtime.message_service.handle_message(runtime, message)
    calls = len(model.prompts["TEXT_LARGE"])
    again = await runtime.message_service.handle_message(runtime, message)
    assert len(model.prompts["TEXT_LARGE"]) == calls
    assert again.response_content == first.response_content
    assert again.run_id == first.run_id
    stored = await runtime.get_memories(table_name="messages", room_id="r-twice")
    assert [m.content.text for m in stored if m.entity_id != runtime.agent_id] == ["hello once"]


@pytest.fixture
def transactions(runtime: AgentRuntime) -> Iterator[list[str]]:
    """The SQL transactions begun on the runtime's database, as they happen."""
    adapter = runtime.adapter
    assert isinstance(adapter, SqlAdapter)
    begun: list[str] = []

    def on_begin(connection: Any) -> None:
        del connection
        begun.append("begin")

    engine = adapter.engine.sync_engine
    event.listen(engine, "begin", on_begin)
    yield begun
    event.remove(engine, "begin", on_begin)


async def test_an_embedded_turn_reads_once_and_writes_once(
    runtime: AgentRuntime, model: ScriptedModel, transactions: list[str]
) -> None:
    assert runtime.embedding_queue is not None
    await runtime.embedding_queue.stop()  # vectors are background work, counted apart
    model.default = plan("counted", actions="REPLY")
    await runtime.message_service.handle_message(runtime, said("warm up", "r-count"))
    transactions.clear()
    result = await runtime.message_service.handle_message(
        runtime, said("how many?", "r-count"), options=MessageOptions(run_evaluators=False)
    )
    assert result.did_respond
    assert len(transactions) <= 3, transactions
    # Evaluation, run apart, reads nothing (the turn's context travels with it)
    # and writes at most once.
    transactions.clear()
    await runtime.message_service.handle_message(runtime, said("and evaluated?", "r-count"))
    evaluation = len(transactions) - 2
    assert evaluation <= 2, transactions
