"""The README's Python examples pass ``mypy --strict`` as written."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from mypy import api

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_IMPORT = re.compile(r"^(from \S+ )?import ")


def python_blocks(markdown: str) -> list[tuple[str, str]]:
    """Return every python code block with the heading of the section it is in."""
    blocks: list[tuple[str, str]] = []
    heading, fence = "", None
    code: list[str] = []
    for line in markdown.splitlines():
        if fence is None and line.startswith("```"):
            fence, code = line.removeprefix("```").strip(), []
        elif fence is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            if fence == "python":
                blocks.append((heading, "\n".join(code) + "\n"))
            fence = None
        elif fence is not None:
            code.append(line)
    return blocks


def quick_start(markdown: str) -> str:
    """The first python block of the "Writing an agent" section."""
    found = [code for heading, code in python_blocks(markdown) if heading == "Writing an agent"]
    assert found, 'README.md has no python block under "## Writing an agent"'
    assert "AgentRuntime(" in found[0], "the Quick Start no longer builds an AgentRuntime"
    return found[0]


def client_example(markdown: str) -> str:
    """The python block that uses ``ElizaOSClient``."""
    found = [code for _, code in python_blocks(markdown) if "ElizaOSClient(" in code]
    assert len(found) == 1, f"expected one python block using ElizaOSClient, found {len(found)}"
    return found[0]


def as_module(snippet: str) -> str:
    """Keep the leading imports at module level and run the rest in ``async def main()``.

    The README's examples await at top level, as in a notebook or ``python -m asyncio``.
    """
    lines = snippet.splitlines()
    imports: list[str] = []
    while lines and (_IMPORT.match(lines[0]) or not lines[0].strip()):
        statement = [lines.pop(0)]
        if statement[0].rstrip().endswith("("):
            while lines and not statement[-1].startswith(")"):
                statement.append(lines.pop(0))
        imports.extend(statement)
    header = "\n".join(imports).rstrip()
    body = textwrap.indent("\n".join(lines), "    ") if lines else "    pass"
    return f"{header}\n\n\nasync def main() -> None:\n{body}\n"


def strict_mypy(module: str, directory: Path) -> tuple[str, int]:
    """Run ``mypy --strict`` (the project's configuration and cache) on ``module``."""
    path = directory / "readme_example.py"
    path.write_text(module, encoding="utf-8")
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--strict",
            "--no-error-summary",
            str(path),
        ]
    )
    return stdout + stderr, status


def test_the_readme_blocks_are_found_and_wrapped() -> None:
    markdown = README.read_text(encoding="utf-8")
    module = as_module(quick_start(markdown))
    assert module.startswith("from elizamesh import AgentRuntime")
    assert "\n    await runtime.initialize()" in module
    assert "\n    async with ElizaOSClient(" in as_module(client_example(markdown))


@pytest.mark.timeout(300)  # with a cold cache, mypy analyses every dependency first
@pytest.mark.parametrize("example", [quick_start, client_example], ids=["quick_start", "client"])
def test_the_readme_example_passes_mypy_strict(
    example: Callable[[str], str], tmp_path: Path
) -> None:
    module = as_module(example(README.read_text(encoding="utf-8")))
    output, status = strict_mypy(module, tmp_path)
    assert status == 0, f"mypy --strict fails on\n{module}\n{output}"
