"""``elizamesh up`` and ``elizamesh chat`` as a person runs them, Ctrl-C included.

The defaults are the embedded ones: the bundled nats-server, SQLite under the
working folder and the local models. Ctrl-C in a terminal sends SIGINT to the
whole foreground process group, so each command runs in its own group and gets
the signal that way.
"""

from __future__ import annotations

import contextlib
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
        self.cwd = cwd
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
            for pid in processes_in(self.cwd):  # what it started, in groups of their own
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pipe in (self.process.stdin, self.process.stdout):
            assert pipe is not None
            pipe.close()


def processes_in(folder: Path) -> list[int]:
    """Pids of the processes working in ``folder``: ``up``, its NATS and its services."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cwd").resolve() == folder.resolve():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def none_left_in(folder: Path, *, timeout: float = 30) -> bool:
    """Whether every process working in ``folder`` is gone (waiting up to ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    while processes_in(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not processes_in(folder)


@pytest.fixture
def environment() -> dict[str, str]:
    """This process's environment without the servers: ``up`` brings its own."""
    env = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "DATABASE_URL"}}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


@pytest.fixture
def up(tmp_path: Path, environment: dict[str, str]) -> Iterator[tuple[Terminal, str, int]]:
    """``elizamesh up`` on API_PORT (from the environment, as a user sets it), logging at INFO."""
    port = free_port()
    terminal = Terminal(
        [*ELIZAMESH, "up"],
        cwd=tmp_path,
        env={**environment, "API_PORT": str(port), "LOG_LEVEL": "INFO"},
    )
    try:
        nats_url = terminal.expect(r"up\S*: NATS (nats://\S+), gateway", timeout=180).group(1)
        yield terminal, nats_url, port
    finally:
        terminal.close()


def test_up_runs_the_embedded_stack_chat_talks_to_it_and_ctrl_c_stops_both(
    up: tuple[Terminal, str, int], tmp_path: Path, environment: dict[str, str]
) -> None:
    stack, nats_url, port = up
    assert (tmp_path / ".elizamesh" / "elizamesh.db").exists()  # SQLite by default
    stack.expect(rf"gateway http://127\.0\.0\.1:{port}\n", timeout=5)  # API_PORT honoured
    hint = stack.expect(r"talk to it: +(.+)\n", timeout=5).group(1)
    assert hint == f"NATS_URL={nats_url} ELIZA_NS=eliza elizamesh chat"
    # Each service's own lines, prefixed with its name, as honcho shows them.
    for service in ("memory", "runtime", "gateway"):
        stack.expect(rf"(?m)^{service} +\| \{{", timeout=5)

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
    assert "Traceback" not in output, output[output.find("Traceback") - 1500 :][:6000]
    assert none_left_in(tmp_path)  # no service or nats-server left behind


def test_up_stopped_by_a_kill_stops_every_service_it_started(
    up: tuple[Terminal, str, int], tmp_path: Path
) -> None:
    stack, _, _ = up
    stack.process.terminate()  # SIGTERM to the parent only, as `kill` or a supervisor does
    assert stack.ended(timeout=60) == 0
    assert "stopped everything." in "".join(stack.output)
    assert none_left_in(tmp_path)


def test_agent_commands_manage_the_agents_of_a_running_stack(
    up: tuple[Terminal, str, int], tmp_path: Path, environment: dict[str, str]
) -> None:
    stack, _, port = up
    env = {**environment, "API_PORT": str(port)}

    def agent(*args: str) -> str:
        done = subprocess.run(
            [*ELIZAMESH, "agent", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert re.search(r"^eliza +Eliza +running$", agent("list"), re.MULTILINE)
    (tmp_path / "ada.json").write_text('{"name": "Ada", "id": "ada", "bio": ["A second agent."]}')
    assert agent("add", "--character", "ada.json") == "added ada (Ada)\n"
    assert agent("stop", "ada") == "stopped ada\n"
    assert re.search(r"^ada +Ada +stopped$", agent("list"), re.MULTILINE)
    assert agent("start", "ada") == "started ada\n"
    assert agent("remove", "ada") == "removed ada\n"
    assert "ada" not in agent("list").split()

    unknown = subprocess.run(
        [*ELIZAMESH, "agent", "stop", "nobody"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("elizamesh: POST /v1/agents/nobody/stop: 404 not_found: ")
    assert stack.ctrl_c(timeout=60) == 0


@pytest.mark.parametrize("wait", [0.0, 0.5, 2.0])
def test_one_sigint_stops_up_started_in_the_background_even_while_it_starts(
    wait: float, tmp_path: Path, environment: dict[str, str]
) -> None:
    """``elizamesh up &`` in a script: the shell makes the job ignore SIGINT; one still stops it.

    ``kill -INT`` comes while the services are starting (no "up:" line yet),
    which is when the last signal was lost before.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a `&` job
    try:
        stack = Terminal(
            [*ELIZAMESH, "up"], cwd=tmp_path, env={**environment, "API_PORT": str(free_port())}
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        stack.expect(r"starting nats-server, memory", timeout=60)
        time.sleep(wait)
        stack.process.send_signal(signal.SIGINT)  # to `up` alone, as `kill -INT $!` does
        assert stack.ended(timeout=60) == 0
        output = "".join(stack.output)
        assert output.rstrip().endswith("stopped everything.")
        assert "Traceback" not in output
        assert none_left_in(tmp_path)  # no service left behind
    finally:
        stack.close()
