"""The compose stack parses and has what it promises (Debian's docker-compose needs no engine)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts import Subjects
from shared.bus import create_broker, start_serving
from shared.health import no_consumers, serve_health
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
ELIZAMESH_SERVICES = ("gateway", "runtime", "memory", "embedding", "evaluator")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables filled)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        if IN_CI:
            pytest.fail("docker-compose is not installed, and CI=true requires it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},  # no OPENAI_* or LOG_LEVEL from the caller
    )
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def test_the_compose_file_is_valid_and_has_every_service(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"nats", "postgres", "jaeger", *ELIZAMESH_SERVICES}


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service["healthcheck"]["test"], name


def test_each_elizamesh_service_is_built_from_one_image_and_checks_its_own_health(
    compose: dict[str, Any],
) -> None:
    for name in ELIZAMESH_SERVICES:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"] == ["python", "-m", f"services.{name}"]
        # Each service connects as its own NATS user (deploy/nats-accounts.conf).
        assert service["environment"]["NATS_URL"].startswith(f"nats://eliza-{name}:")
        assert service["environment"]["NATS_URL"].endswith("@nats:4222")
        assert service["environment"]["ELIZAMESH_SERVICE"] == name
    gateway_check = compose["services"]["gateway"]["healthcheck"]["test"]
    assert any("/v1/ready" in part for part in gateway_check)
    for name in ("runtime", "memory", "embedding", "evaluator"):
        check = compose["services"][name]["healthcheck"]["test"]
        # The cheap probe, not the full CLI (over a second of CPU every 10 s per container).
        # docker-compose prints the escaped $$; the container's shell sees $ELIZAMESH_SERVICE
        assert check == ["CMD-SHELL", "python -m shared.probe $$ELIZAMESH_SERVICE"], name


async def test_the_workers_health_check_command_passes_against_a_healthy_instance(
    compose: dict[str, Any], nats_url: str, subjects: Subjects
) -> None:
    kind, command = compose["services"]["runtime"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    service = create_broker(nats_url, name="compose-health-check")
    serve_health(service, subjects, "runtime", no_consumers)
    async with service:
        await start_serving(service)
        status, output = await _container_shell(command, nats_url, subjects, service="runtime")
    assert status == 0, output
    assert output.strip().endswith(" ok")


async def test_the_workers_health_check_command_fails_when_its_service_does_not_answer(
    compose: dict[str, Any], nats_url: str, subjects: Subjects
) -> None:
    _, command = compose["services"]["evaluator"]["healthcheck"]["test"]
    status, output = await _container_shell(command, nats_url, subjects, service="evaluator")
    assert status == 1
    assert "evaluator" in output


def test_every_elizamesh_service_sends_its_traces_to_jaeger(compose: dict[str, Any]) -> None:
    jaeger = compose["services"]["jaeger"]
    assert "16686:16686" in {str(p) for p in _ports(jaeger)}
    for name in ELIZAMESH_SERVICES:
        service = compose["services"][name]
        assert service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
        assert "jaeger" in service["depends_on"]


def test_the_runtime_has_two_replicas_and_memory_owns_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["runtime"]["deploy"]["replicas"] == 2
    database = "postgresql://eliza:eliza@postgres:5432/eliza"
    assert services["memory"]["environment"]["DATABASE_URL"] == database
    assert services["memory"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    others = [n for n in ELIZAMESH_SERVICES if n != "memory"]
    assert all("DATABASE_URL" not in services[n]["environment"] for n in others)


def test_nats_runs_jetstream_from_the_config_in_deploy(compose: dict[str, Any]) -> None:
    assert "jetstream" in (ROOT / "deploy" / "nats.conf").read_text()
    volumes = " ".join(str(v) for v in compose["services"]["nats"]["volumes"])
    assert "deploy/nats.conf" in volumes


async def _container_shell(
    command: str, nats_url: str, subjects: Subjects, *, service: str
) -> tuple[int, str]:
    """Run a CMD-SHELL check as the container does: ``$$`` is ``$``, ``python`` on the PATH."""
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ELIZAMESH_SERVICE": service,
        "NATS_URL": nats_url,
        "ELIZA_NS": subjects.namespace,
    }
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command.replace("$$", "$"),
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


def _ports(service: dict[str, Any]) -> list[str]:
    """Ports as "published:target" whichever syntax docker-compose printed them in."""
    return [
        p if isinstance(p, str) else f"{p.get('published')}:{p.get('target')}"
        for p in service.get("ports", [])
    ]
