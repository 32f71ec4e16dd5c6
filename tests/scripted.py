"""A scripted model plugin for tests: replies from a script, records every prompt."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType, Plugin, PluginPriority

Reply = str | Callable[[str], str]


def plan(text: str, actions: str = "REPLY", thought: str = "ok", providers: str = "") -> str:
    """The XML a planner model answers with."""
    return (
        f"<response><thought>{thought}</thought><actions>{actions}</actions>"
        f"<providers>{providers}</providers><text>{text}</text></response>"
    )


def decide(action: str) -> str:
    """The XML a should-respond model answers with."""
    return (
        f"<response><name>agent</name><reasoning>r</reasoning><action>{action}</action></response>"
    )


@dataclass
class ScriptedModel:
    """TEXT_LARGE and TEXT_SMALL answer from their scripts, in order, then ``default``."""

    large: list[Reply] = field(default_factory=list)
    small: list[Reply] = field(default_factory=list)
    default: str = plan("Hello from the script!")
    chunk_size: int = 4
    gate: asyncio.Event | None = None
    prompts: dict[str, list[str]] = field(
        default_factory=lambda: {"TEXT_LARGE": [], "TEXT_SMALL": []}
    )
    params: list[dict[str, Any]] = field(default_factory=list)
    called: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for_prompts(self, kind: str, count: int) -> None:
        """Wait until the model of ``kind`` has been called ``count`` times."""
        async with self.called:
            await self.called.wait_for(lambda: len(self.prompts[kind]) >= count)

    def plugin(
        self, *, embeddings: bool = False, priority: int = PluginPriority.MODEL_PROVIDER
    ) -> Plugin:
        models: dict[ModelType | str, Any] = {
            ModelType.TEXT_LARGE: self._handler("TEXT_LARGE", self.large),
            ModelType.TEXT_SMALL: self._handler("TEXT_SMALL", self.small),
        }
        if embeddings:
            models[ModelType.TEXT_EMBEDDING] = embed
        return Plugin(name="scripted", models=models, priority=priority)

    def _handler(self, kind: str, script: list[Reply]) -> Any:
        async def handle(runtime: AgentRuntime, params: dict[str, Any]) -> str | AsyncIterator[str]:
            del runtime
            prompt = str(params.get("prompt", ""))
            self.prompts[kind].append(prompt)
            self.params.append(params)
            async with self.called:
                self.called.notify_all()
            if self.gate is not None and kind == "TEXT_LARGE":
                await self.gate.wait()
            reply = script.pop(0) if script else self.default
            text = reply(prompt) if callable(reply) else reply
            return self._stream(text) if params.get("stream") else text

        return handle

    async def _stream(self, text: str) -> AsyncIterator[str]:
        for start in range(0, len(text), self.chunk_size):
            yield text[start : start + self.chunk_size]


async def embed(runtime: AgentRuntime, params: dict[str, Any]) -> Any:
    """A tiny deterministic 'embedding': letter frequencies (26 dims) of ``text``, or of
    each of ``texts`` (a batch, as the embedding service asks)."""
    del runtime
    if "texts" in params:
        return [letters(str(t)) for t in params["texts"]]
    return letters(str(params.get("text", "")))


def letters(text: str) -> list[float]:
    """Letter frequencies of ``text``; a fixed unit vector for a text without letters."""
    counts = [float(text.lower().count(chr(c))) for c in range(ord("a"), ord("z") + 1)]
    return counts if any(counts) else [1.0] + [0.0] * 25
