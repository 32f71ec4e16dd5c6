"""The compose stack parses and names every service (Debian's docker-compose needs no engine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]


def compose_config(*args: str) -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        if IN_CI:
            pytest.fail("docker-compose is not installed, and CI=true requires it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_compose_file_is_valid_and_has_every_running_service() -> None:
    services = set(compose_config("--services").split())
    assert {
        "nats",
        "postgres",
        "memory",
        "embedding",
        "evaluator",
        "runtime",
        "gateway",
    } <= services


def test_the_services_reach_nats_by_its_compose_name_and_runtime_has_two_replicas() -> None:
    config = compose_config()
    assert "NATS_URL: nats://nats:4222" in config
    assert "replicas: 2" in config
    assert "DATABASE_URL: postgresql://eliza:eliza@postgres:5432/eliza" in config
