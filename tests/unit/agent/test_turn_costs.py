"""What the runtime saves per turn keeps elizaOS's behaviour (issue 13).

Providers and event handlers run side by side, a task each (code that ties
state to its task keeps working), each in its own context; model
settings are read once per model type until a setting changes; audit rows
logged outside a turn share a write, and each is stored when its call returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import pytest

from contracts import Content
from contracts.records import Log, Memory
from contracts.turn import TurnCommit
from shared.agent.bootstrap import reflect
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Provider, ProviderResult, State, StateError
from tests.scripted import ScriptedModel

_MARK: ContextVar[str] = ContextVar("test_mark", default="caller")

Get = Callable[[AgentRuntime, Memory, State], Awaitable[ProviderResult]]


def message() -> Memory:
    return Memory(entity_id="u", room_id="r", content=Content(text="hi"))


# -- providers -------------------------------------------------------------------


async def test_a_provider_that_ties_state_to_its_task_runs_whole_in_one_task(
    runtime: AgentRuntime,
) -> None:
    # anyio's cancel scopes (the OpenAI client's HTTP calls) and asyncio.timeout
    # must be left in the task that entered them: a provider that starts in one
    # task and goes on in another fails ("exit cancel scope in a different task").
    seen: dict[str, list[asyncio.Task[Any] | None]] = {"A": [], "B": []}

    def provider(name: str) -> Provider:
        async def get(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
            seen[name].append(asyncio.current_task())
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            seen[name].append(asyncio.current_task())
            return ProviderResult(text="now")

        return Provider(name, get)

    runtime.providers = [provider("A"), provider("B")]
    state = await runtime.compose_state(message())
    assert state.text == "now\n\nnow"
    assert not state.data.get("provider_errors")
    assert all(before is after for before, after in seen.values())


async def test_providers_that_wait_wait_side_by_side(runtime: AgentRuntime) -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    def waits_for(mine: asyncio.Event, other: asyncio.Event, text: str) -> Get:
        async def get(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
            mine.set()
            await other.wait()  # one after the other, neither would ever end
            return ProviderResult(text=text)

        return get

    runtime.providers = [
        Provider("A", waits_for(a_started, b_started, "a"), position=1),
        Provider("B", waits_for(b_started, a_started, "b"), position=2),
    ]
    async with asyncio.timeout(10):  # a guard against a hang, not a measure
        state = await runtime.compose_state(message())
    assert state.text == "a\n\nb"
    assert state.data["provider_errors"] == {}


async def test_each_provider_sees_its_own_context_before_and_after_it_waits(
    runtime: AgentRuntime,
) -> None:
    seen: dict[str, str] = {}

    def marking(name: str, *, wait: bool) -> Get:
        async def get(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
            seen[f"{name} before"] = _MARK.get()
            _MARK.set(name)
            if wait:
                await asyncio.sleep(0)
            seen[f"{name} after"] = _MARK.get()
            return ProviderResult()

        return get

    runtime.providers = [
        Provider("SYNC", marking("SYNC", wait=False)),
        Provider("WAITS", marking("WAITS", wait=True)),
        Provider("LAST", marking("LAST", wait=False)),
    ]
    await runtime.compose_state(message())
    assert seen == {
        "SYNC before": "caller",
        "SYNC after": "SYNC",
        "WAITS before": "caller",
        "WAITS after": "WAITS",
        "LAST before": "caller",
        "LAST after": "LAST",
    }
    assert _MARK.get() == "caller"


async def test_a_provider_failing_before_or_after_waiting_is_recorded_and_the_turn_goes_on(
    runtime: AgentRuntime,
) -> None:
    async def at_once(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        raise KeyError("no such row")

    async def later(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        await asyncio.sleep(0)
        raise ConnectionError("weather API down")

    async def fine(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        return ProviderResult(text="fine", values={"ok": True})

    runtime.providers = [
        Provider("AT_ONCE", at_once),
        Provider("LATER", later),
        Provider("OK", fine),
    ]
    state = await runtime.compose_state(message())
    assert state.text == "fine"
    assert state.values["ok"] is True
    assert state.data["provider_errors"] == {
        "AT_ONCE": "KeyError: 'no such row'",
        "LATER": "ConnectionError: weather API down",
    }


async def test_a_provider_whose_get_raises_before_making_its_awaitable_is_recorded(
    runtime: AgentRuntime,
) -> None:
    def not_async(rt: AgentRuntime, m: Memory, s: State) -> Awaitable[ProviderResult]:
        raise LookupError("no awaitable made")

    async def fine(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        return ProviderResult(text="fine")

    runtime.providers = [Provider("PLAIN", not_async), Provider("OK", fine)]
    state = await runtime.compose_state(message())
    assert state.text == "fine"
    assert state.data["provider_errors"] == {"PLAIN": "LookupError: no awaitable made"}


async def test_a_required_provider_that_fails_after_waiting_stops_compose_state(
    runtime: AgentRuntime,
) -> None:
    async def later(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        await asyncio.sleep(0)
        raise ConnectionError("down")

    runtime.providers = [Provider("NEEDED", later, required=True)]
    with pytest.raises(StateError, match="NEEDED") as caught:
        await runtime.compose_state(message())
    assert caught.value.provider == "NEEDED"


async def test_cancelling_compose_state_cancels_the_providers_still_waiting(
    runtime: AgentRuntime,
) -> None:
    waiting, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(rt: AgentRuntime, m: Memory, s: State) -> ProviderResult:
        waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ProviderResult()

    runtime.providers = [Provider("FOREVER", forever)]
    composing = asyncio.create_task(runtime.compose_state(message()))
    await waiting.wait()
    composing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await composing
    async with asyncio.timeout(10):
        await cancelled.wait()


async def test_event_handlers_that_answer_at_once_or_wait_all_run_and_keep_their_context(
    runtime: AgentRuntime,
) -> None:
    heard: list[str] = []

    async def at_once(payload: dict[str, Any]) -> None:
        _MARK.set("at once")
        heard.append(f"at once {payload['n']}")

    async def later(payload: dict[str, Any]) -> None:
        _MARK.set("later")
        await asyncio.sleep(0)
        heard.append(f"later {payload['n']} {_MARK.get()}")

    async def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("a bad handler")

    for handler in (at_once, broken, later):
        runtime.on("TEST_EVENT", handler)
    await runtime.emit_event("TEST_EVENT", {"n": 1})
    assert sorted(heard) == ["at once 1", "later 1 later"]
    assert _MARK.get() == "caller"


# -- model settings --------------------------------------------------------------


async def test_model_settings_follow_set_setting_and_a_new_character(
    runtime: AgentRuntime, model: ScriptedModel
) -> None:
    runtime.set_setting("DEFAULT_TEMPERATURE", "0.5")
    await runtime.use_model(ModelType.TEXT_LARGE, {"prompt": "p"})
    runtime.set_setting("TEXT_LARGE_TEMPERATURE", "0.25")
    await runtime.use_model(ModelType.TEXT_LARGE, {"prompt": "p"})
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "p"})
    runtime.character = Character(name="Eliza", settings={"TEXT_SMALL_MAX_TOKENS": "64"})
    await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "p"})
    runtime.set_setting("TEXT_LARGE_TEMPERATURE", "0.75", secret=True)
    await runtime.use_model(ModelType.TEXT_LARGE, {"prompt": "p", "temperature": 0.1})
    assert [p.get("temperature") for p in model.params] == [0.5, 0.25, 0.5, 0.5, 0.1]
    assert [p.get("max_tokens") for p in model.params] == [None, None, None, 64, None]


# -- audit rows ------------------------------------------------------------------


def count_writes(runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the adapter's log writes: rows per ``log`` or ``commit_turn`` call."""
    adapter = runtime.adapter
    writes: list[int] = []
    log, commit_turn = adapter.log, adapter.commit_turn

    async def one(entry: Log) -> None:
        writes.append(1)
        await log(entry)

    async def many(commit: TurnCommit) -> None:
        writes.append(len(commit.logs))
        await commit_turn(commit)

    monkeypatch.setattr(adapter, "log", one)
    monkeypatch.setattr(adapter, "commit_turn", many)
    return writes


async def test_model_calls_side_by_side_log_in_one_write_each_row_stored_when_its_call_returns(
    runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = count_writes(runtime, monkeypatch)
    await asyncio.gather(
        *(runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": f"t{i}"}) for i in range(10))
    )
    assert writes == [10]
    assert len(await runtime.get_logs(log_type="useModel:TEXT_EMBEDDING")) == 10
    await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "alone"})
    assert writes == [10, 1]
    assert len(await runtime.get_logs(log_type="useModel:TEXT_EMBEDDING")) == 11


async def test_a_failed_log_write_fails_its_callers_and_the_next_write_works(
    runtime: AgentRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = runtime.adapter
    commit_turn = adapter.commit_turn

    async def down(commit: TurnCommit) -> None:
        raise ConnectionError("database gone")

    monkeypatch.setattr(adapter, "commit_turn", down)
    outcomes = await asyncio.gather(
        runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "a"}),
        runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "b"}),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    monkeypatch.setattr(adapter, "commit_turn", commit_turn)
    await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "c"})
    assert len(await runtime.get_logs(log_type="useModel:TEXT_EMBEDDING")) == 1


async def test_a_cancelled_caller_leaves_the_rows_logged_beside_it(
    runtime: AgentRuntime,
) -> None:
    first = asyncio.create_task(runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "a"}))
    second = asyncio.create_task(runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "b"}))
    await asyncio.sleep(0)  # both have logged and wait for the shared write
    first.cancel()
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(await runtime.get_logs(log_type="useModel:TEXT_EMBEDDING")) == 2


async def test_stop_writes_the_rows_already_logged(runtime: AgentRuntime) -> None:
    calling = asyncio.create_task(runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "a"}))
    await asyncio.sleep(0)  # logged, its write not yet started
    await runtime.stop()
    await calling
    await runtime.initialize()
    assert len(await runtime.get_logs(log_type="useModel:TEXT_EMBEDDING")) == 1


# -- reflection ------------------------------------------------------------------


def reflection(*claims: tuple[str, bool]) -> str:
    """REFLECTION's answer claiming each ``(text, already_known)``."""
    facts = "".join(
        f"<fact><claim>{text}</claim><type>fact</type>"
        f"<already_known>{str(known).lower()}</already_known></fact>"
        for text, known in claims
    )
    return f"<response><thought>t</thought><facts>{facts}</facts><relationships/></response>"


async def test_reflection_stores_each_new_claim_once_and_reads_facts_only_for_new_claims(
    runtime: AgentRuntime, model: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = runtime.adapter
    get_memories = adapter.get_memories
    fact_reads: list[int] = []

    async def counted(**query: Any) -> list[Memory]:
        if query.get("table_name") == "facts":
            fact_reads.append(1)
        return await get_memories(**query)

    monkeypatch.setattr(adapter, "get_memories", counted)
    said = Memory(entity_id="u", room_id="dm", content=Content(text="I live in Paris"))
    await runtime.create_fact("Ada likes tea", entity_id="u", room_id="dm")
    model.small.append(reflection(("Ada lives in Paris", True)))
    await reflect(runtime, said, State(), None, [])
    assert fact_reads == []
    model.small.append(
        reflection(
            ("Ada lives in Paris", False), ("ada likes tea", False), ("Ada lives in Paris", False)
        )
    )
    await reflect(runtime, said, State(), None, [])
    assert fact_reads == [1]
    stored = await get_memories(table_name="facts")
    assert sorted(f.content.text for f in stored) == ["Ada likes tea", "Ada lives in Paris"]
