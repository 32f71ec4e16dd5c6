"""What a person at a terminal sees when something is wrong: one line naming what to change.

Each case runs the real command line as a process and finishes in seconds: a
wrong ``NATS_URL``, a bad setting (from the environment or ``.env``), bad
character files, a gateway that is not there. No traceback, no service started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.natsserver import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def elizamesh(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m elizamesh ARGS`` in ``cwd`` with only the given settings."""
    clean = {k: v for k, v in os.environ.items() if k not in {"NATS_URL", "DATABASE_URL"}}
    return subprocess.run(
        [sys.executable, "-m", "elizamesh", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr (and nothing else anywhere), without its prefix."""
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("elizamesh: ")
    return lines[0].removeprefix("elizamesh: ")


@pytest.mark.parametrize("command", ["chat", "health"])
def test_a_nats_url_nobody_listens_on_is_one_line_naming_it(command: str, tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = elizamesh(command, cwd=tmp_path, env={"NATS_URL": url})
    assert result.returncode == 1
    line = only_line(result)
    assert line.startswith(f"cannot reach NATS at NATS_URL={url}: ")
    assert "refused" in line.lower() or "connect call failed" in line.lower()


def test_a_nats_host_that_does_not_exist_is_one_line_naming_nats_url(tmp_path: Path) -> None:
    result = elizamesh("chat", cwd=tmp_path, env={"NATS_URL": "nats://no-such-host.invalid:4222"})
    assert result.returncode == 1
    assert only_line(result).startswith(
        "cannot reach NATS at NATS_URL=nats://no-such-host.invalid:4222: "
    )


def test_the_password_in_nats_url_is_not_printed(tmp_path: Path) -> None:
    url = f"nats://eliza-chat:hunter22@127.0.0.1:{free_port()}"
    result = elizamesh("chat", cwd=tmp_path, env={"NATS_URL": url})
    line = only_line(result)
    assert "hunter22" not in line
    assert "eliza-chat:***@127.0.0.1" in line


def test_up_with_an_unreachable_nats_url_starts_nothing(tmp_path: Path) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    result = elizamesh("up", cwd=tmp_path, env={"NATS_URL": url})
    assert result.returncode == 1
    assert only_line(result).startswith(f"cannot reach NATS at NATS_URL={url}: ")
    assert not (tmp_path / ".elizamesh").exists()  # no memory service ever ran here


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = elizamesh("up", cwd=tmp_path, env={"API_PORT": "eighty"})
    assert result.returncode == 2
    assert only_line(result).startswith("invalid setting API_PORT='eighty': ")


def test_settings_come_from_a_dotenv_file_in_the_working_folder(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LOG_LEVEL=loud\n")
    result = elizamesh("chat", cwd=tmp_path)
    assert result.returncode == 2
    assert only_line(result).startswith("invalid setting LOG_LEVEL='loud': use DEBUG, INFO")


def test_bad_character_files_are_one_line_per_problem_before_anything_starts(
    tmp_path: Path,
) -> None:
    (tmp_path / "fields.json").write_text('{"name": "A", "bio": 3, "style": 5}')
    (tmp_path / "broken.json").write_text("{nope")
    result = elizamesh(
        "up",
        "--character",
        "fields.json",
        "--character",
        "broken.json",
        "--character",
        "missing.json",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "elizamesh: --character fields.json: $.bio: Expected `str | array`, got `int`",
        "elizamesh: --character fields.json: $.style: Expected `object`, got `int`",
        "elizamesh: --character broken.json: character file broken.json is not valid JSON: "
        "JSON is malformed: object keys must be strings (byte 1)",
        "elizamesh: --character missing.json: cannot read character file missing.json: "
        "No such file or directory",
    ]
    assert result.stdout == ""  # not even the bundled nats-server was started
    assert not (tmp_path / ".elizamesh").exists()


def test_two_character_files_of_one_agent_are_refused(tmp_path: Path) -> None:
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text('{"name": "Same", "id": "same"}')
    result = elizamesh("up", "--character", "a.json", "--character", "b.json", cwd=tmp_path)
    assert result.returncode == 2
    assert only_line(result) == "--character b.json: agent id same is a.json's too"


def test_agent_commands_without_a_gateway_say_where_they_looked(tmp_path: Path) -> None:
    port = free_port()
    result = elizamesh("agent", "list", cwd=tmp_path, env={"API_PORT": str(port)})
    assert result.returncode == 1
    line = only_line(result)
    assert line.startswith(
        f"cannot reach the gateway at http://127.0.0.1:{port} (API_HOST, API_PORT)"
    )


def test_version_and_the_settings_table(tmp_path: Path) -> None:
    from importlib.metadata import version

    from shared.config import settings_markdown

    shown = elizamesh("--version", cwd=tmp_path)
    assert shown.stdout == f"elizamesh {version('elizamesh')}\n"
    table = elizamesh("settings", "--markdown", cwd=tmp_path)
    assert table.stdout == settings_markdown()


@pytest.mark.parametrize(
    ("setting", "what"),
    [
        ("LOCAL_LLM_PATH", "local chat model"),
        ("LOCAL_TOKENIZER_PATH", "local embedding tokenizer"),
        ("LOCAL_EMBEDDING_PATH", "local embedding model"),
    ],
)
def test_a_missing_local_model_file_is_one_line_naming_its_setting(
    setting: str, what: str, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp", reason="the local models need the [local] extra")
    pytest.importorskip("onnxruntime", reason="the local models need the [local] extra")
    missing = tmp_path / "missing.file"
    result = elizamesh("demo", cwd=tmp_path, env={setting: str(missing)}, timeout=120)
    assert result.returncode == 1
    assert only_line(result) == f"demo failed: {what} not found at {missing}: check {setting}"


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("memory", "MEMORY_CONCURRENCY", "lots"),
        ("runtime", "ROOM_LEASE_SECONDS", "-1"),
        ("evaluator", "ROOM_LEASE_SECONDS", "soon"),
        ("embedding", "LOG_LEVEL", "chatty"),
        ("gateway", "API_PORT", "70000"),
    ],
)
def test_a_service_with_a_bad_setting_exits_with_one_line_naming_it(
    service: str, variable: str, value: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), variable: value},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"invalid setting {variable}={value!r}: ")


def test_up_with_an_unreachable_database_shows_the_memory_service_line_naming_it(
    tmp_path: Path,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    result = elizamesh(
        "up", cwd=tmp_path, env={"DATABASE_URL": url, "API_PORT": str(free_port())}, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert f"memory    | cannot open the database at DATABASE_URL={url}: " in result.stdout
    assert only_line(result) == "the memory service exited with code 1 (its lines are above)"
