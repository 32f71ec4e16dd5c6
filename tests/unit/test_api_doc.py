"""docs/api.md names only things that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import elizamesh

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ROW = re.compile(r"^\| `[^`]+`(?: / `[^`]+`)? \| `([A-Za-z_.]+)` \|", re.MULTILINE)
NAMES = ROW.findall(DOC.read_text())


def test_the_page_lists_the_product_pages_names() -> None:
    assert len(NAMES) > 90
    for seed in ("AgentRuntime.use_model", "ElizaOS.handle_messages", "execute_planned_tool_call"):
        assert seed in NAMES


@pytest.mark.parametrize("dotted", NAMES)
def test_every_listed_name_exists(dotted: str) -> None:
    target: object = elizamesh
    for part in dotted.split("."):
        assert hasattr(target, part), f"{dotted}: no {part}"
        target = getattr(target, part)
