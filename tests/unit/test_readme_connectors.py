"""The README's "Writing a connector" names only streams and subjects that exist.

Every stream, subject pattern and durable consumer the section names is
matched against what ``contracts/subjects.py`` builds (for the namespace
``eliza``, with sample ids), and every stream it builds is in the section's
table, so the document cannot drift from the code in either direction.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts.subjects import (
    ROLES,
    Subjects,
    connector_permissions,
    inbox_of,
    outbound_consumer,
    permissions,
    room_lease_bucket,
)
from shared.agent.types import EventType
from shared.events import bus_event_type

README = Path(__file__).resolve().parents[2] / "README.md"
SUBJECTS = Subjects("eliza")
SAMPLE_ID = "sample"
SAMPLE_CHOICES: dict[str, tuple[str, ...]] = {
    # Parameters of the builders that take one of a few values, not an id.
    "what": ("chunk", "response", "heartbeat", "completed", "failed"),
    "priority": ("high", "normal", "low"),
    "command": ("start", "stop", "delete"),
    "run_id": (SAMPLE_ID, f"{SAMPLE_ID}__{SAMPLE_ID}"),  # plain and owned runs
}
SAMPLE_ID_PARAMETERS = frozenset(
    {"agent_id", "operation", "event_type", "name", "queue", "owner", "replica_id", "source"}
)
BACKTICKED = re.compile(r"`([^`\n]+)`")
STREAM = re.compile(r"^<NS>_[A-Z_]+$")
SUBJECT_START = ("<ns>.", "$JS.", "_INBOX.")
EVENT_PAIR = re.compile(r"`([A-Z][A-Z_]+)`\s+(?:is\s+)?`([a-z][a-z_.]+)`")


def section() -> str:
    """The text of "### Writing a connector", up to the next heading."""
    text = README.read_text(encoding="utf-8")
    found = re.search(r"^### Writing a connector\n(.*?)^#", text, re.MULTILINE | re.DOTALL)
    assert found is not None, 'README.md has no "### Writing a connector" section'
    return found.group(1)


def named(prefixes: tuple[str, ...]) -> list[str]:
    """Backticked names of the section that start with one of ``prefixes``."""
    return sorted({n for n in BACKTICKED.findall(section()) if n.startswith(prefixes)})


def named_streams() -> list[str]:
    """The streams (and buckets) the section names, as ``<NS>_NAME``."""
    return [n for n in named(("<NS>_",)) if STREAM.fullmatch(n)]


def built_subjects() -> set[str]:
    """Every subject, template and permission ``contracts/subjects.py`` builds, with sample ids."""
    built: set[str] = set()
    for attribute, member in inspect.getmembers(Subjects):
        if attribute.startswith("_") or attribute == "namespace":
            continue
        if isinstance(member, property):
            built.add(getattr(SUBJECTS, attribute))
        elif callable(member):
            built.update(_calls(attribute))
    for role in ROLES:
        granted = permissions(SUBJECTS, role)
        built.update(granted.publish, granted.subscribe)
    granted = connector_permissions(SUBJECTS, SAMPLE_ID, (SAMPLE_ID,))
    built.update(granted.publish, granted.subscribe)
    built.add(inbox_of(SAMPLE_ID))  # the prefix a connector connects with
    return built


def _calls(method: str) -> Iterator[str]:
    """``SUBJECTS.<method>`` called with every combination of sample arguments."""
    combinations: list[dict[str, str]] = [{}]
    parameters = list(inspect.signature(getattr(SUBJECTS, method)).parameters)
    for parameter in parameters:
        if parameter in SAMPLE_CHOICES:
            values = SAMPLE_CHOICES[parameter]
        elif parameter in SAMPLE_ID_PARAMETERS:
            values = (SAMPLE_ID,)
        else:
            raise AssertionError(f"Subjects.{method}: give {parameter!r} a sample in this test")
        combinations = [{**c, parameter: v} for c in combinations for v in values]
    for arguments in combinations:
        yield getattr(SUBJECTS, method)(**arguments)


def pattern(documented: str) -> re.Pattern[str]:
    """The documented name as a regex over built ones: ``<ns>`` is ``eliza``, ``<x>`` any token.

    A documented wildcard (``*``, ``>``) matches the same wildcard or a real token.
    """
    regex = ""
    for piece in re.split(r"(<[A-Za-z_]+>|\*|>)", documented):
        if piece == "<ns>":
            regex += re.escape(SUBJECTS.namespace)
        elif piece == "<NS>":
            regex += re.escape(SUBJECTS.namespace.upper())
        elif piece.startswith("<"):
            regex += r"[A-Za-z0-9_-]+"
        elif piece == "*":
            regex += r"(?:\*|[A-Za-z0-9_-]+)"
        elif piece == ">":
            regex += r"(?:>|.+)"
        else:
            regex += re.escape(piece)
    return re.compile(regex)


def built_streams() -> set[str]:
    """Every JetStream stream ``Subjects`` names (its ``*_stream`` properties)."""
    return {
        getattr(SUBJECTS, name)
        for name, member in inspect.getmembers(Subjects)
        if isinstance(member, property) and name.endswith("_stream")
    }


def test_the_section_names_subjects_and_streams() -> None:
    assert len(named(SUBJECT_START)) > 20
    assert len(named_streams()) >= 6


@pytest.mark.parametrize("documented", named(SUBJECT_START))
def test_every_subject_the_section_names_is_one_the_code_builds(documented: str) -> None:
    regex = pattern(documented)
    assert any(regex.fullmatch(subject) for subject in built_subjects()), (
        f"{documented} matches no subject built in contracts/subjects.py"
    )


@pytest.mark.parametrize("documented", named_streams())
def test_every_stream_the_section_names_exists(documented: str) -> None:
    kv = room_lease_bucket(SUBJECTS)
    names = {*built_streams(), kv}
    assert documented.replace("<NS>", SUBJECTS.namespace.upper()) in names


def test_every_stream_of_the_code_is_in_the_sections_table() -> None:
    text = section()
    for stream in sorted(built_streams()):
        documented = stream.replace(SUBJECTS.namespace.upper(), "<NS>", 1)
        assert f"| `{documented}` |" in text, f"{stream} is missing from the streams table"


def test_the_outbound_consumer_the_section_names_is_the_codes() -> None:
    consumers = named(("webhook-",))
    assert consumers == ["webhook-<platform>"]
    assert pattern(consumers[0]).fullmatch(outbound_consumer(SAMPLE_ID))


def test_the_event_subject_examples_follow_the_bus_rule() -> None:
    pairs = EVENT_PAIR.findall(section())
    assert len(pairs) >= 4
    for name, subject_type in pairs:
        assert name in EventType.__members__, f"{name} is not an EventType"
        assert bus_event_type(name) == subject_type


def test_a_wrong_subject_in_the_section_would_be_caught() -> None:
    # The matcher is what keeps the page honest: it must reject near misses.
    built = built_subjects()
    for wrong in ("<ns>.outbound.<platform>.message", "<ns>.runs.>", "<ns>.event.<agent_id>"):
        assert not any(pattern(wrong).fullmatch(subject) for subject in built), wrong
