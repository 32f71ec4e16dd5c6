"""NATS connections never give up on their own; a service whose connection is gone for good exits.

Each test runs a nats-server of its own (the shared one is never stopped).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import Subjects
from contracts.control import CheckHealth, ServiceHealth
from shared.bus import EXIT_CONNECTION_CLOSED, create_broker, subscriptions_registered
from shared.natsserver import free_port, nats_server_binary, wait_for_port
from shared.processes import service_process

pytestmark = pytest.mark.e2e

DEFAULT_ATTEMPTS = 60
"""nats-py's default ``max_reconnect_attempts``: a client with it gives up after that many."""
WAIT = 0.05
"""Seconds between reconnect attempts here: 60 attempts take 3 s instead of 2 minutes."""


class PrivateNats:
    """A nats-server of this test's own, from a config file that can change and be reloaded."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.config = folder / "nats.conf"
        self.store = folder / "js"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, credentials: str = "") -> str:
        return f"nats://{credentials}127.0.0.1:{self.port}"

    def write(self, extra: str = "") -> None:
        self.config.write_text(
            f'listen: "127.0.0.1:{self.port}"\njetstream {{ store_dir: "{self.store}" }}\n{extra}\n'
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(nats_server_binary()), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port, timeout=10)

    def reload(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_nats(tmp_path: Path) -> Iterator[PrivateNats]:
    server = PrivateNats(tmp_path)
    server.write()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def users(password: str) -> str:
    return f'authorization {{ users = [ {{ user: "svc", password: "{password}" }} ] }}'


async def health_answers(url: str, subjects: Subjects, *, timeout: float) -> ServiceHealth:
    """The first service's answer on ``<ns>.health``, asked until one comes."""
    nc = await nats.connect(url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    reply = await nc.request(
                        subjects.health, msgspec.json.encode(CheckHealth()), timeout=1
                    )
                    return msgspec.json.decode(reply.data, type=ServiceHealth)
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_a_service_whose_connection_is_closed_for_good_exits_non_zero(
    private_nats: PrivateNats, tmp_path: Path
) -> None:
    """The server revokes the service's credentials: nats-py cannot reopen that connection."""
    private_nats.write(users("first"))
    private_nats.reload()
    subjects = Subjects(f"c{uuid.uuid4().hex[:10]}")
    env = {
        "NATS_URL": private_nats.url("svc:first@"),
        "ELIZA_NS": subjects.namespace,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'memory.db'}",
        "LOG_LEVEL": "WARNING",
    }
    with service_process("memory", env, log_dir=tmp_path) as memory:
        answer = await health_answers(private_nats.url("svc:first@"), subjects, timeout=60)
        assert answer.service == "memory"

        private_nats.write(users("second"))  # the password changed: the session is refused
        private_nats.reload()
        code = await asyncio.to_thread(memory.wait, 60)

    log = (tmp_path / "memory.log").read_text()
    assert code == EXIT_CONNECTION_CLOSED, log
    assert "closed for good" in log


async def test_a_connection_outlives_an_outage_longer_than_the_default_attempts(
    private_nats: PrivateNats,
) -> None:
    """Down for 100 attempts' worth of time: a default client gives up, ours answers again."""
    subject = f"echo.{uuid.uuid4().hex}"
    broker = create_broker(private_nats.url(), name="patient", reconnect_wait=WAIT)
    default = await nats.connect(
        private_nats.url(),
        reconnect_time_wait=WAIT,
        max_reconnect_attempts=DEFAULT_ATTEMPTS,
    )
    async with broker:
        await broker.connect()
        connection = broker.config.connection_state.connection

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        await connection.subscribe(subject, cb=echo)
        await subscriptions_registered(connection)

        private_nats.stop()
        await asyncio.sleep(WAIT * DEFAULT_ATTEMPTS * 5 / 3)  # 100 attempts' worth
        private_nats.start()

        checker = await nats.connect(private_nats.url())
        try:
            reply = await echoed(checker, subject, b"still here", timeout=30)
        finally:
            await checker.close()
        assert reply == b"still here"
        assert default.is_closed  # nats-py's default gave up during the same outage


async def echoed(nc: Client, subject: str, data: bytes, *, timeout: float) -> bytes:
    """The reply on ``subject``, asked until the responder is back (it reconnects by itself)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                reply = await nc.request(subject, data, timeout=1)
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                continue
            echo: bytes = reply.data
            return echo
