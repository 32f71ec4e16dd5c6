"""A service loads only the heavy libraries it uses: what keeps each one small in memory.

Measured once: SQLAlchemy with Alembic ~30 MB, numpy ~17 MB, the OpenAI
tokenizer vocabularies (bpe_openai) ~60 MB of resident memory. A runtime on
the memory service needs no database library, only the memory service does;
numpy is loaded by the similarity search only; the vocabularies by the
tokenizer model types only. Each check runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "alembic", "numpy", "bpe_openai", "llama_cpp")


def loaded_after_import(*modules: str) -> set[str]:
    """The ``HEAVY`` libraries in ``sys.modules`` after importing ``modules`` in a new process."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "service", ["services.runtime.main", "services.embedding.main", "services.evaluator.main"]
)
def test_a_service_without_a_database_loads_no_database_numpy_or_tokenizer(service: str) -> None:
    assert loaded_after_import(service, "shared.plugins.openai") == set()


def test_the_memory_service_loads_its_database_but_not_numpy_or_a_tokenizer() -> None:
    assert loaded_after_import("services.memory.main") == {"sqlalchemy", "alembic"}


def test_the_tokenizer_loads_its_vocabularies_when_first_used() -> None:
    code = (
        "import asyncio, sys\n"
        "from shared.agent.character import Character\n"
        "from shared.agent.runtime import AgentRuntime\n"
        "from shared.plugins.openai import encode\n"
        "assert 'bpe_openai' not in sys.modules\n"
        "runtime = AgentRuntime(character=Character(name='T'))\n"
        "print(asyncio.run(encode(runtime, {'text': 'hello'})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(done.stdout.strip().splitlines()[-1])  # token ids
