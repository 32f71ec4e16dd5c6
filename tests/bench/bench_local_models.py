"""Throughput of the local default models on this machine: tokens/s and embeddings/s."""

from __future__ import annotations

import asyncio
import tempfile
import time

from elizamesh import AgentRuntime, Character, ModelType
from elizamesh.plugins.local import get_local_plugin
from shared.plugins.local import smollm

SENTENCES = [
    f"Sentence number {i} talks about topic {i % 7} in a few more words." for i in range(64)
]


async def main() -> None:
    runtime = AgentRuntime(
        character=Character(name="bench"),
        plugins=[get_local_plugin()],
        settings={
            "DATABASE_URL": f"sqlite:///{tempfile.mkdtemp()}/bench.db",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    await runtime.initialize()
    await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "warm up"})
    started = time.perf_counter()
    for _ in range(4):
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"texts": SENTENCES})
    elapsed = time.perf_counter() - started
    print(
        f"embeddings: {4 * len(SENTENCES) / elapsed:.0f}/s (batches of {len(SENTENCES)}, 1 thread)"
    )

    model = smollm(None, 1)
    messages = [
        {"role": "user", "content": "Tell me a short story about a robot learning to paint."}
    ]
    model.chat(messages, {"max_tokens": 8})  # warm up
    started = time.perf_counter()
    reply = model.chat(messages, {"max_tokens": 128, "temperature": 0.7})
    elapsed = time.perf_counter() - started
    tokens = len(model.llm.tokenize(reply.encode(), add_bos=False))
    print(f"chat: {tokens / elapsed:.1f} tokens/s ({tokens} tokens in {elapsed:.2f} s, 1 thread)")
    await runtime.stop()


if __name__ == "__main__":
    asyncio.run(main())
