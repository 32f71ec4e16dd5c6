"""elizamesh embedded as a lane of ``bench_compare``: ``python -m tests.bench.embedded_lane URL``.

One ``AgentRuntime`` in this process on the database at ``URL`` (SQLite or
Postgres), with the bench's character and in-process instant models (the
answers and vectors of ``workload``), reflecting in-process. Each message goes
through ``message_service.handle_message`` (the connection is set up, the
message stored and queued for its vector, the state composed, the reply
stored and queued, REFLECTION run); a level ends once every vector is stored.

Speaks the Node driver's protocol (``elizaos/driver.mjs``), JSON lines: out
``started``, then per level ``ready`` and ``done``; in a level, ``go``, ``exit``.
Run in a process of its own so its CPU is the lane's alone.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import Content
from elizamesh import AgentRuntime, Character, Memory
from shared.agent.types import ModelType, Plugin, PluginPriority
from tests.bench import workload


def instant_models(counts: Counter[str]) -> Plugin:
    """TEXT_LARGE, TEXT_SMALL and TEXT_EMBEDDING answering at once, counted in ``counts``."""

    def text_model(kind: str) -> Any:
        async def handle(runtime: AgentRuntime, params: dict[str, Any]) -> str:
            del runtime
            prompt = str(params.get("prompt", ""))
            counts[kind] += 1
            counts[workload.kind_of(prompt, small=kind == "TEXT_SMALL")] += 1
            return workload.answer(prompt, small=kind == "TEXT_SMALL")

        return handle

    async def embed(runtime: AgentRuntime, params: dict[str, Any]) -> Any:
        del runtime
        if "texts" in params:
            counts["embeddings"] += len(params["texts"])
            return [workload.embedding(str(t)) for t in params["texts"]]
        counts["embeddings"] += 1
        return workload.embedding(str(params.get("text", "")))

    return Plugin(
        name="bench-instant-model",
        models={
            ModelType.TEXT_LARGE: text_model("TEXT_LARGE"),
            ModelType.TEXT_SMALL: text_model("TEXT_SMALL"),
            ModelType.TEXT_EMBEDDING: embed,
        },
        priority=PluginPriority.MODEL_PROVIDER,
    )


def emit(event: dict[str, Any]) -> None:
    """Write one line of the protocol."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def command() -> dict[str, Any]:
    """The next line from the bench."""
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise EOFError("the bench closed stdin")
    parsed: dict[str, Any] = json.loads(line)
    return parsed


async def measure(
    say: Callable[[str, str], Awaitable[None]], rooms: list[str], messages: list[list[str]]
) -> tuple[list[float], int, float]:
    """Send each room's messages one after the other, the rooms side by side.

    Returns the latencies (s) of the answered ones, how many failed, and the wall time (s).
    """
    latencies: list[float] = []
    failed: list[str] = []

    async def client(room: str, texts: list[str]) -> None:
        for text in texts:
            started = time.perf_counter()
            try:
                await say(room, text)
            except Exception as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
                print(failed[-1], file=sys.stderr)
            else:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(r, t) for r, t in zip(rooms, messages, strict=True)))
    return latencies, len(failed), time.perf_counter() - started


async def main(url: str) -> None:
    counts: Counter[str] = Counter()
    runtime = AgentRuntime(
        character=Character.parse(workload.character()),
        plugins=[instant_models(counts)],
        settings={
            "DATABASE_URL": url,
            "TASK_TICK_SECONDS": "3600",
            "CONVERSATION_LENGTH": str(workload.CONVERSATION_LENGTH),
        },
    )
    await runtime.initialize()
    service = runtime.message_service
    queue = runtime.embedding_queue
    if service is None or queue is None or not hasattr(queue, "drained"):
        raise RuntimeError("the embedded runtime has no message service or in-process queue")

    async def say(room: str, text: str) -> None:
        message = Memory(
            entity_id=f"user-{room}",
            room_id=room,
            content=Content(text=text, source="bench", channel_type="DM"),
        )
        result = await service.handle_message(runtime, message)
        if not result.did_respond:
            raise RuntimeError(f"no reply in room {room}: {result.status} {result.error}")

    emit({"event": "started", "agentId": runtime.agent_id})
    while (level := await command()).get("cmd") != "exit":
        await asyncio.gather(*(say(room, level["warmup"]) for room in level["rooms"]))
        await queue.drained()
        emit({"event": "ready", "counts": dict(counts)})
        await command()  # go
        latencies, errors, elapsed = await measure(say, level["rooms"], level["messages"])
        await queue.drained()
        emit(
            {
                "event": "done",
                "latencies": latencies,
                "elapsed": elapsed,
                "errors": errors,
                "counts": dict(counts),
            }
        )
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
