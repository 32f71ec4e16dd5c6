"""The image's layers go from what changes least to what changes most.

Docker reuses a layer while the files it copied are unchanged; a source file
copied before the llama.cpp build would make every code change rebuild it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("contracts", "shared", "services", "elizamesh", "examples")


def instructions() -> list[str]:
    """The Dockerfile's instructions, each on one line (continuations joined, comments dropped)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(part.split()) for part in "\n".join(lines).replace("\\\n", " ").splitlines()]


def first(predicate: str) -> int:
    return next(i for i, line in enumerate(instructions()) if re.search(predicate, line))


def test_llama_cpp_and_the_dependencies_install_before_any_source_is_copied() -> None:
    sources = min(first(rf"^COPY {name} ") for name in SOURCES)
    assert first(r"^RUN .*pip install .*llama-cpp-python==") < sources
    assert first(r"^RUN .*pip install .*-r /tmp/requirements.txt") < sources
    assert first(r"^COPY pyproject.toml ") > first(r"^RUN .*llama-cpp-python==")


def test_the_sources_install_without_resolving_dependencies_again() -> None:
    assert re.search(r"pip install .*--no-deps \.$", instructions()[first(r"^RUN .* \.$")])


def test_the_image_builds_llama_cpp_with_the_makefiles_portable_flags() -> None:
    makefile = (ROOT / "Makefile").read_text()
    [flags] = re.findall(r"^LLAMA_CMAKE_ARGS := (.*)$", makefile, flags=re.MULTILINE)
    [pinned] = re.findall(r"^LLAMA_CPP := (.*)$", makefile, flags=re.MULTILINE)
    llama = instructions()[first(r"llama-cpp-python==")]
    # The Makefile names the CMake include file in the checkout; the image, where it copied it.
    assert f'CMAKE_ARGS="{flags.replace("$(CURDIR)", "/app")}"' in llama
    assert first(r"^COPY deploy/llama-cpp-python.cmake ") < first(r"llama-cpp-python==")
    assert pinned in llama


def test_the_requirements_step_lists_pyprojects_dependencies_and_the_local_extra() -> None:
    [step] = [line for line in instructions() if "requirements.txt" in line]
    script = re.search(r'python -c "(.*?)" "\$LOCAL_MODELS"', step)
    assert script is not None
    listed = {
        local: subprocess.run(
            [sys.executable, "-c", script.group(1), local],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for local in ("true", "false")
    }
    assert "msgspec>=0.19,<0.23" in listed["false"]
    assert "llama-cpp-python>=0.3,<0.4" not in listed["false"]
    assert set(listed["true"]) - set(listed["false"]) == {
        "llama-cpp-python>=0.3,<0.4",
        "onnxruntime>=1.18,<2",
        "tokenizers>=0.19,<1",
    }
