"""The benches' instant model in a process of its own: ``python -m tests.bench.fake_model FILE``.

Serves the fake OpenAI server (every chat answered at once with a plan to
reply) on a free loopback port, writes its base URL to ``FILE``, and serves
until it is terminated. ``BENCH_MODEL_DELAY`` (seconds, default 0) makes each
chat answer wait, as a real model server does: turns then wait on the model,
not on the CPU. Out of the bench's process, its threads do not
compete with the clients for one interpreter lock, and its CPU is counted
apart from the stack's.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.fake_openai import fake_openai_server
from tests.scripted import plan


def main() -> None:
    with fake_openai_server() as fake:
        fake.default = plan("Hello from the model!")
        fake.delay = float(os.environ.get("BENCH_MODEL_DELAY") or 0)
        Path(sys.argv[1]).write_text(fake.url)
        signal.sigwait({signal.SIGTERM, signal.SIGINT})


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
