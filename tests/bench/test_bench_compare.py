"""The side-by-side bench's own parts: the workload, the /proc readers, the npm install step."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared.agent.xml import parse_key_value_xml
from tests.bench import workload
from tests.bench.bench_compare import (
    LANES,
    Measured,
    install_elizaos,
    lane_replicas,
    lane_tag,
    lane_transport,
    replica_gain,
)


def test_levels_give_every_lane_the_same_rooms_and_messages() -> None:
    levels = workload.levels([1, 8], {1: 3, 8: 2}, "sqlite-r1")

    assert [(level.rooms, level.sent) for level in levels] == [(1, 3), (8, 16)]
    spec = levels[1].as_json()
    assert spec["rooms"] == [f"sqlite-r1-c8-{i}" for i in range(8)]
    assert [len(texts) for texts in spec["messages"]] == [2] * 8
    assert spec["messages"][3][1] == levels[1].text(3, 1)
    assert levels[1].as_json() == spec


def test_lanes_have_rooms_of_their_own_and_name_replicas_and_transport() -> None:
    distributed = [lane for lane in LANES if lane.startswith("distributed")]

    assert len({lane_tag(lane) for lane in LANES}) == len(LANES)
    assert {(lane_replicas(lane), lane_transport(lane)) for lane in distributed} == {
        (1, "HTTP"),
        (2, "HTTP"),
        (1, "NATS"),
        (2, "NATS"),
    }


def test_replica_gain_is_the_median_of_each_rounds_ratio_of_two_replicas_to_one() -> None:
    def measured(lane: str, rooms: int, round_: int, seconds: float) -> Measured:
        return Measured(lane, rooms, round_, 10, [0.1] * 10, seconds, 100.0, {})

    results = [
        measured("distributed 1 NATS", 8, 1, 1.0),  # 10 msg/s
        measured("distributed 2 NATS", 8, 1, 0.5),  # 20 msg/s: x2
        measured("distributed 1 NATS", 8, 2, 0.5),  # 20 msg/s
        measured("distributed 2 NATS", 8, 2, 1.0),  # 10 msg/s: x0.5
        measured("distributed 1 NATS", 8, 3, 1.0),
        measured("distributed 2 NATS", 8, 3, 0.9),  # x1.11, the median (the mean: x1.20)
        measured("distributed 1 HTTP", 64, 1, 1.0),  # no 2-replica lane at 64 rooms
        measured("elizaOS 1.7.2", 8, 1, 1.0),
    ]

    assert replica_gain(results) == ["    8 rooms, msg/s of 2 replicas over 1: NATS x1.11"]
    assert replica_gain(results[-2:]) == []


def test_instant_answers_are_the_xml_each_prompt_asks_for() -> None:
    plan = parse_key_value_xml(workload.answer("# Task: plan the reply", small=False)) or {}
    reflection = workload.answer("Extract facts and relationships from ...", small=True)

    assert plan["actions"] == ["REPLY"]
    assert plan["text"] == "Hello from the model!"
    assert workload.kind_of("Extract facts and relationships", small=True) == "reflection"
    assert workload.kind_of("should you respond?", small=True) == "should_respond"
    assert "<already_known>true</already_known>" in reflection


def test_embeddings_have_384_dimensions_and_are_never_zero() -> None:
    assert len(workload.embedding("hello")) == workload.DIMENSIONS
    assert any(workload.embedding("1234"))


def test_cpu_reader_counts_a_child_and_what_it_reaped() -> None:
    burn = "x = 0\nfor i in range(4_000_000):\n    x += i"
    script = (
        "import subprocess, sys\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "done"
        family = workload.descendants([os.getpid()])
        spent = workload.cpu_ms(workload.descendants([child.pid]))

        assert child.pid in family
        # the grandchild has exited: its CPU is in the child's cutime/cstime
        assert spent[child.pid] >= 20
        assert workload.spent_between({}, spent) == spent[child.pid]
        assert workload.spent_between(spent, spent) == 0
        assert workload.rss_mb(child.pid) > 0
    finally:
        child.communicate("")


def test_install_step_says_npm_failed_and_why(tmp_path: Path) -> None:
    npm = tmp_path / "npm"
    npm.write_text(
        "#!/bin/sh\necho 'npm error getaddrinfo ENOTFOUND registry.npmjs.org' >&2\nexit 1\n"
    )
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)

    with pytest.raises(SystemExit, match="npm ci") as failed:
        install_elizaos(tmp_path, npm=str(npm))

    assert "registry" in str(failed.value)
    assert "ENOTFOUND registry.npmjs.org" in str(failed.value)


def test_install_step_without_npm_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not found"):
        install_elizaos(tmp_path, npm=str(tmp_path / "no-npm"))
