"""The containers' health check: ``python -m shared.probe <service>`` against a real NATS."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from contracts import Subjects
from contracts.control import ConsumerHealth
from shared.bus import create_broker, start_serving
from shared.health import Probe, no_consumers, serve_health


async def run_probe(nats_url: str, subjects: Subjects, service: str) -> tuple[int, str]:
    """Run the probe as Kubernetes does (a process); return its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.probe",
        service,
        "--timeout",
        "10",
        env={**os.environ, "NATS_URL": nats_url, "ELIZA_NS": subjects.namespace},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def probe_beside(
    nats_url: str, subjects: Subjects, instance: str, health: Probe, probed: str
) -> tuple[int, str]:
    """Probe ``probed`` while this host's ``instance`` service answers health with ``health``."""
    service = create_broker(nats_url, name="probe-under-test")
    serve_health(service, subjects, instance, health)
    async with service:
        await start_serving(service)
        return await run_probe(nats_url, subjects, probed)


async def dead_consumer() -> tuple[list[ConsumerHealth], dict[str, Any]]:
    return [ConsumerHealth(name="messages", alive=False)], {}


async def test_the_probe_passes_when_this_hosts_instance_answers_ok(
    nats_url: str, subjects: Subjects
) -> None:
    status, output = await probe_beside(nats_url, subjects, "runtime", no_consumers, "runtime")
    assert status == 0, output
    assert output.startswith("runtime ")
    assert output.strip().endswith(" ok")


async def test_the_probe_fails_with_one_line_when_the_instance_is_not_ok(
    nats_url: str, subjects: Subjects
) -> None:
    status, output = await probe_beside(nats_url, subjects, "memory", dead_consumer, "memory")
    assert status == 1
    assert "NOT OK" in output
    assert len(output.strip().splitlines()) == 1


async def test_the_probe_fails_when_only_another_service_answers(
    nats_url: str, subjects: Subjects
) -> None:
    status, output = await probe_beside(nats_url, subjects, "gateway", no_consumers, "embedding")
    assert (status, output.strip()) == (1, "no embedding instance on this host answered")


async def test_the_probe_names_the_setting_when_nats_is_unreachable(subjects: Subjects) -> None:
    status, output = await run_probe("nats://127.0.0.1:1", subjects, "runtime")
    assert status == 1
    assert output.startswith("cannot reach NATS (NATS_URL)")
    assert len(output.strip().splitlines()) == 1
