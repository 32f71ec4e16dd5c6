"""One settings class per service, one table of every setting, ``.env`` below the environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.runtime.settings import RuntimeSettings as RuntimeSettingsOfTheService
from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.config import (
    SERVICE_SETTINGS,
    CommonSettings,
    EmbeddingSettings,
    EvaluatorSettings,
    GatewaySettings,
    HostSettings,
    MemorySettings,
    RuntimeSettings,
    Settings,
    SettingsError,
    settings_markdown,
    settings_rows,
)
from shared.hosting import HostedAgents
from shared.rooms import LEASE_SECONDS

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE = re.compile(r"<!-- settings-table -->\n(.*?)<!-- /settings-table -->", re.DOTALL)


def test_the_readme_table_is_the_one_the_classes_generate() -> None:
    found = TABLE.search(README.read_text())
    assert found is not None, "README.md has no <!-- settings-table --> block"
    assert found.group(1) == settings_markdown(), "run: elizamesh settings --markdown"


def test_every_setting_of_every_service_has_a_meaning_and_a_row() -> None:
    rows = {env: meaning for env, _, _, meaning in settings_rows()}
    for cls in SERVICE_SETTINGS:
        for name in cls.model_fields:
            assert rows[name.upper()], f"{name.upper()} ({cls.__name__}) has no description"


def test_the_stack_settings_are_every_service_settings() -> None:
    for cls in SERVICE_SETTINGS:
        assert issubclass(Settings, CommonSettings)
        assert issubclass(Settings, cls) or cls is EvaluatorSettings
    assert issubclass(Settings, HostSettings)  # what the evaluator reads, the runtime reads too
    assert RuntimeSettingsOfTheService is RuntimeSettings


def test_a_service_reads_only_its_own_settings() -> None:
    environ = {"API_PORT": "eighty", "EMBEDDINGS": "sideways"}
    assert MemorySettings.from_env(environ).memory_concurrency == 16
    with pytest.raises(SettingsError, match="API_PORT"):
        GatewaySettings.from_env(environ)
    with pytest.raises(SettingsError, match="EMBEDDINGS"):
        RuntimeSettings.from_env(environ)
    assert EvaluatorSettings.from_env(environ).room_lease_seconds == LEASE_SECONDS


def test_the_runtime_and_the_evaluator_read_the_room_lease_the_same_way() -> None:
    environ = {"ROOM_LEASE_SECONDS": "2.5"}
    assert RuntimeSettings.from_env(environ).room_lease_seconds == 2.5
    assert EvaluatorSettings.from_env(environ).room_lease_seconds == 2.5
    for bad in ("0", "-1", "soon"):
        for cls in (RuntimeSettings, EvaluatorSettings):
            with pytest.raises(SettingsError, match=f"^invalid setting ROOM_LEASE_SECONDS='{bad}'"):
                cls.from_env({"ROOM_LEASE_SECONDS": bad})


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("NATS_URL", None, None),
        ("LOG_LEVEL", "loud", "use DEBUG, INFO"),
        ("ELIZA_NS", "a.b", "invalid namespace"),
        ("DATABASE_URL", "mysql://u@h/db", "expected sqlite:///path or postgresql://"),
        ("DATABASE_URL", "localhost/db", "expected sqlite:///path or postgresql://"),
        ("MEMORY_CONCURRENCY", "0", "greater than or equal to 1"),
        ("JETSTREAM_REPLICAS", "many", "integer"),
        ("EVALUATORS", "maybe", "'local' or 'remote'"),
        ("PROVIDER_TIMEOUT", "-2", "greater than 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str | None, reason: str | None
) -> None:
    if value is None:
        Settings.from_env({variable: "nats://anything:4222"})  # any text is a URL list
        return
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: value})
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"invalid setting {variable}={value!r}: ")
    assert reason is not None
    assert reason in message


def test_a_secret_that_is_wrong_is_named_but_not_shown() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"GATEWAY_API_KEYS": "k1", "API_PORT": "x", "SECRET_SALT": "s"})
    assert "k1" not in str(raised.value)


def test_comma_lists_and_case_are_read_as_before() -> None:
    settings = Settings.from_env(
        {
            "AGENT_CHARACTERS": "a.json, b.json,",
            "REMOTE_PROVIDERS": "clock",
            "EMBEDDINGS": "Remote",
            "LOG_LEVEL": "debug",
            "GATEWAY_API_KEYS": " k1 ,k2",
        }
    )
    assert settings.agent_characters == (Path("a.json"), Path("b.json"))
    assert settings.remote_providers == ("clock",)
    assert settings.remote_embeddings
    assert settings.log_level == "DEBUG"
    assert settings.api_keys == frozenset({"k1", "k2"})


def test_the_default_model_plugin_follows_the_openai_settings() -> None:
    assert HostSettings.from_env({}).plugins == ("local",)
    assert HostSettings.from_env({"OPENAI_BASE_URL": "http://llm:8080/v1"}).plugins == ("openai",)
    assert HostSettings.from_env({"AGENT_PLUGINS": "a,b", "OPENAI_API_KEY": "k"}).plugins == (
        "a",
        "b",
    )
    assert EmbeddingSettings.from_env({"OPENAI_API_KEY": "k"}).embedding_model_plugin == "openai"
    assert EmbeddingSettings.from_env({"EMBEDDING_PLUGIN": "local"}).embedding_model_plugin == (
        "local"
    )


def test_hosted_agents_come_from_the_host_settings() -> None:
    agents = HostedAgents.from_settings(
        HostSettings.from_env({"AGENT_CHARACTERS": "x.json", "SECRET_SALT": "salt"})
    )
    assert agents.characters == (Path("x.json"),)
    assert agents.secret_key == "salt"  # noqa: S105 - a test value
    with pytest.raises(SettingsError, match="PROVIDER_TIMEOUT"):
        HostedAgents.from_env({"PROVIDER_TIMEOUT": "soon"})


def test_settings_come_from_dotenv_below_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "API_PORT=4100\nLOG_LEVEL=warning\nMY_PLUGIN_SETTING=from-file\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    monkeypatch.delenv("API_PORT", raising=False)
    settings = GatewaySettings.from_env()
    assert settings.api_port == 4100
    assert settings.log_level == "ERROR"  # the environment wins over the file
    runtime = AgentRuntime(character=Character(name="A"))
    assert runtime.get_setting("MY_PLUGIN_SETTING") == "from-file"  # a plugin's setting too


def test_load_exits_with_the_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMORY_CONCURRENCY", "lots")
    with pytest.raises(SystemExit) as exited:
        MemorySettings.load()
    assert str(exited.value).startswith("invalid setting MEMORY_CONCURRENCY='lots': ")


def test_settings_from_a_given_mapping_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_PORT", "7777")
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@elsewhere/db")
    given = Settings.from_env({"LOG_LEVEL": "error"})
    assert (given.api_port, given.log_level) == (3000, "ERROR")
    assert given.database_url == Settings.model_fields["database_url"].default
    assert Settings.from_env().api_port == 7777  # without a mapping: the environment
