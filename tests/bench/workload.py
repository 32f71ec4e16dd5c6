"""What ``bench_compare`` asks of every lane, and how it reads a lane's CPU and memory.

One workload for elizaOS and elizamesh alike: the same character
(``character.json``), the same instant model answers (valid XML for the
planner, should-respond and REFLECTION; 384-d embeddings), the same messages
in the same rooms. A level: ``rooms`` rooms in flight, each first sent one
warm-up message (it creates the room, its entity and participants; not
measured), then ``messages`` messages one after the other.

The lanes' processes are read from ``/proc``: CPU as utime + stime + cutime
+ cstime (reaped children included), RSS as ``VmRSS``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHARACTER = Path(__file__).with_name("character.json")
DIMENSIONS = 384
CONVERSATION_LENGTH = int(os.environ.get("BENCH_CONVERSATION_LENGTH", "2"))
"""Recent messages in the state. At 2, both REFLECTION validators (elizaOS keeps the
messages older than the last one reflected upon) pass on every turn."""

PLAN = (
    "<response><thought>A friendly greeting.</thought><actions>REPLY</actions>"
    "<providers></providers><text>Hello from the model!</text></response>"
)
SHOULD_RESPOND = (
    "<response><name>Eliza</name><reasoning>addressed</reasoning>"
    "<action>RESPOND</action></response>"
)
# One fact both runtimes keep out (already known) and no relationship: each
# parses the answer, stores nothing new and marks the room reflected upon.
REFLECTION = (
    "<response><thought>The conversation goes well.</thought><facts><fact>"
    "<claim>The user says hello.</claim><type>status</type><in_bio>false</in_bio>"
    "<already_known>true</already_known></fact></facts>"
    "<relationships>none</relationships></response>"
)
ANSWERS = {"plan": PLAN, "should_respond": SHOULD_RESPOND, "reflection": REFLECTION}
MS_PER_TICK = 1000 / os.sysconf("SC_CLK_TCK")


def character() -> dict[str, Any]:
    """The bench's character, as elizaOS reads it (camelCase JSON)."""
    data: dict[str, Any] = json.loads(CHARACTER.read_text())
    return data


def kind_of(prompt: str, *, small: bool) -> str:
    """Which answer a prompt asks for: ``reflection``, ``should_respond`` or ``plan``."""
    if small and "relationships" in prompt:
        return "reflection"
    return "should_respond" if small else "plan"


def answer(prompt: str, *, small: bool) -> str:
    """The instant model's answer to ``prompt``."""
    return ANSWERS[kind_of(prompt, small=small)]


def embedding(text: str) -> list[float]:
    """A deterministic 384-d vector: letter counts, then zeros; never all zeros."""
    counts = [float(text.lower().count(chr(c))) for c in range(ord("a"), ord("z") + 1)]
    if not any(counts):
        counts[0] = 1.0
    return counts + [0.0] * (DIMENSIONS - len(counts))


@dataclass(frozen=True)
class Level:
    """``rooms`` rooms in flight, ``messages`` measured messages in each (after one warm-up)."""

    rooms: int
    messages: int
    tag: str

    @property
    def sent(self) -> int:
        """Measured messages in all."""
        return self.rooms * self.messages

    def room(self, index: int) -> str:
        """The name of room ``index``; unique per lane, round and level."""
        return f"{self.tag}-{index}"

    def text(self, room: int, message: int) -> str:
        """The text of measured message ``message`` in room ``room``."""
        return f"Message {message} in room {room}: how is your day going?"

    def as_json(self) -> dict[str, Any]:
        """What a lane process is told (the same for elizaOS and elizamesh)."""
        return {
            "rooms": [self.room(i) for i in range(self.rooms)],
            "messages": [
                [self.text(r, m) for m in range(self.messages)] for r in range(self.rooms)
            ],
            "warmup": "Hello!",
        }


def levels(concurrencies: Iterable[int], messages: Mapping[int, int], tag: str) -> list[Level]:
    """One level per concurrency, ``messages[rooms]`` measured messages per room."""
    return [Level(rooms, messages[rooms], f"{tag}-c{rooms}") for rooms in concurrencies]


# -- /proc -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, float] | None:
    """Command name, parent pid and CPU ms (own + reaped children) of ``pid``; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    name = text[text.index("(") + 1 : text.rindex(")")]
    return name, int(fields[1]), sum(int(f) for f in fields[11:15]) * MS_PER_TICK


def descendants(roots: Iterable[int]) -> set[int]:
    """``roots`` and every living process below them."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat[1]
    family = {pid for pid in roots if pid in parents}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    return family


def cpu_ms(pids: Iterable[int]) -> dict[int, float]:
    """CPU ms so far of each of ``pids`` that still runs (children it reaped included)."""
    spent: dict[int, float] = {}
    for pid in pids:
        if (stat := _stat(pid)) is not None:
            spent[pid] = stat[2]
    return spent


def spent_between(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU ms used between two readings; a process born in between counts in full."""
    return sum(total - before.get(pid, 0.0) for pid, total in after.items())


def command_name(pid: int) -> str:
    """The command name of ``pid`` ("" if it is gone)."""
    stat = _stat(pid)
    return stat[0] if stat else ""


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
