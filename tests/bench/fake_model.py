"""The benches' instant model in a process of its own: ``python -m tests.bench.fake_model FILE``.

Serves the fake OpenAI server on a free loopback port, writes its base URL to
``FILE``, and serves until it is terminated. Every chat is answered at once
with the bench's XML for its kind (plan, should-respond, REFLECTION:
``workload.answer``); embeddings are the fake's letter counts at the asked
dimensions. ``BENCH_MODEL_DELAY`` (seconds, default 0) makes each chat answer
wait, as a real model server does: turns then wait on the model, not on the
CPU. On SIGUSR1 it writes what it was asked so far (by kind, and the texts
embedded) to ``FILE.counts`` as JSON. Out of the bench's process, its threads
do not compete with the clients for one interpreter lock, and its CPU is
counted apart from the stack's.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.bench import workload
from tests.fake_openai import FakeOpenAI, fake_openai_server

SMALL_MODEL = "gpt-4o-mini"


def respond(body: dict[str, Any]) -> str:
    """Answer a chat request by what its prompt asks for."""
    messages = body.get("messages") or [{}]
    prompt = str(messages[-1].get("content", ""))
    return workload.answer(prompt, small=body.get("model") == SMALL_MODEL)


def counts(fake: FakeOpenAI) -> dict[str, int]:
    """What the model was asked so far: chats by model size and kind, texts embedded."""
    counted: Counter[str] = Counter()
    for path, body in list(fake.requests):
        if path.endswith("/embeddings"):
            inputs = body.get("input")
            counted["embeddings"] += len(inputs) if isinstance(inputs, list) else 1
        elif path.endswith("/chat/completions"):
            small = body.get("model") == SMALL_MODEL
            prompt = str((body.get("messages") or [{}])[-1].get("content", ""))
            counted["TEXT_SMALL" if small else "TEXT_LARGE"] += 1
            counted[workload.kind_of(prompt, small=small)] += 1
    return dict(counted)


def main() -> None:
    out = Path(sys.argv[1])
    with fake_openai_server() as fake:
        fake.responder = respond
        fake.delay = float(os.environ.get("BENCH_MODEL_DELAY") or 0)
        out.write_text(fake.url)
        while signal.sigwait({signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}) == signal.SIGUSR1:
            partial = out.with_name(out.name + ".counts.tmp")
            partial.write_text(json.dumps(counts(fake)))
            partial.replace(out.with_name(out.name + ".counts"))


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1})
    main()
