"""``elizamesh up`` and ``elizamesh chat`` as a person runs them, Ctrl-C included.

The defaults are the embedded ones: the bundled nats-server, SQLite under the
working folder and the local models. Ctrl-C in a terminal sends SIGINT to the
whole foreground process group, so each command runs in its own group and gets
the signal that way.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.natsserver import free_port

pytestmark = pytest.mark.e2e

ELIZAMESH = [sys.executable, "-m", "elizamesh"]


class Terminal:
    """A command in its own process group with its output read line by line (no blocking)."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output: list[str] = []
        self._chunks: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read(1):
            self._chunks.put(chunk)
        self._chunks.put(None)

    def expect(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the output so far matches ``pattern``; fail with the output if it does not."""
        while True:
            found = re.search(pattern, "".join(self.output))
            if found:
                return found
            try:
                chunk = self._chunks.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no {pattern!r} within {timeout}s in:\n{''.join(self.output)}")
            if chunk is None:
                pytest.fail(f"exited before {pattern!r}:\n{''.join(self.output)}")
            self.output.append(chunk)

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def ctrl_c(self, timeout: float) -> int:
        """Press Ctrl-C; return the exit code once every process of the group is gone."""
        os.killpg(self.process.pid, signal.SIGINT)
        return self.ended(timeout)

    def ended(self, timeout: float) -> int:
        """The exit code, once the command exited; the rest of its output is read."""
        code = self.process.wait(timeout=timeout)
        while (chunk := self._chunks.get(timeout=5)) is not None:  # the rest of its output
            self.output.append(chunk)
        return code

    def close(self) -> None:
        """Kill what is left of the group (a failed test) and close the pipes."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            assert pipe is not None
            pipe.close()


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def environment() -> dict[str, str]:
    """This process's environment without the servers: ``up`` brings its own."""
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


@pytest.fixture
def up(tmp_path: Path, environment: dict[str, str]) -> Iterator[tuple[Terminal, str]]:
    port = free_port()
    terminal = Terminal([*ELIZAMESH, "up", "--port", str(port)], cwd=tmp_path, env=environment)
    try:
        nats_url = terminal.expect(r"up\S*: NATS (nats://\S+), gateway", timeout=180).group(1)
        yield terminal, nats_url
    finally:
        terminal.close()


def test_up_runs_the_embedded_stack_chat_talks_to_it_and_ctrl_c_stops_both(
    up: tuple[Terminal, str], tmp_path: Path, environment: dict[str, str]
) -> None:
    stack, nats_url = up
    assert (tmp_path / ".elizamesh" / "elizamesh.db").exists()  # SQLite by default

    chat = Terminal([*ELIZAMESH, "chat"], cwd=tmp_path, env={**environment, "NATS_URL": nats_url})
    try:
        chat.expect(r"you> ", timeout=60)
        chat.type("Hello! What is your name?")
        reply = chat.expect(r"eliza> (.+)\n", timeout=120).group(1)  # the local model's words
        assert reply.strip()
        chat.expect(r"you> $", timeout=30)  # ready for the next line
        assert chat.ctrl_c(timeout=15) == 0
        assert "Traceback" not in "".join(chat.output)
    finally:
        chat.close()

    assert stack.ctrl_c(timeout=60) == 0
    output = "".join(stack.output)
    assert "stopped everything." in output
    assert "Traceback" not in output
    assert not group_alive(stack.process.pid)  # no service or nats-server left behind


def test_up_stopped_by_a_kill_stops_every_service_it_started(
    up: tuple[Terminal, str],
) -> None:
    stack, _ = up
    stack.process.terminate()  # SIGTERM to the parent only, as `kill` or a supervisor does
    assert stack.ended(timeout=60) == 0
    assert "stopped everything." in "".join(stack.output)
    deadline = time.monotonic() + 30
    while group_alive(stack.process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)  # the services exit on their own SIGTERM
    assert not group_alive(stack.process.pid)
