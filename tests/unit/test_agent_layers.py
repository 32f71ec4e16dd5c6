"""``lint-imports`` keeps ``shared/agent`` free of import circles.

The contract ``agent-layers`` (pyproject.toml) puts the runtime below the
parts built on it. These tests run ``lint-imports`` on a copy of the source
with one import added that would close a circle again: it must fail, naming
the import; the untouched copy passes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "shared", "services", "elizamesh")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the packages and pyproject.toml (no caches), to break on purpose."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the copy, not the installed checkout, is what is analysed.
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--contract", "agent-layers", "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def add_import(module: Path, line: str) -> None:
    text = module.read_text(encoding="utf-8")
    marker = "from shared.agent.character import Character\n"
    assert marker in text
    module.write_text(text.replace(marker, marker + line + "\n", 1), encoding="utf-8")


def test_the_agent_package_as_it_is_keeps_its_layers(source: Path) -> None:
    result = lint_imports(source)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


@pytest.mark.parametrize(
    "line",
    [
        "from shared.agent.bootstrap import bootstrap_plugin",
        "from shared.agent.message_service import DefaultMessageService",
        "from shared.agent.embedding_queue import EmbeddingQueue",
    ],
)
def test_a_runtime_import_of_a_part_built_on_it_breaks_the_contract(
    source: Path, line: str
) -> None:
    add_import(source / "shared" / "agent" / "runtime.py", line)

    result = lint_imports(source)

    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    imported = line.split()[1]
    assert f"shared.agent.runtime -> {imported}" in result.stdout
