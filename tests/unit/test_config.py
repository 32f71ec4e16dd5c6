"""Settings come from the environment, with defaults for a laptop."""

from __future__ import annotations

import pytest

from shared.config import DEFAULT_DATABASE_URL, Settings
from shared.database import async_url


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.subjects.namespace == "eliza"


def test_environment_variables_override_defaults_and_are_converted() -> None:
    settings = Settings.from_env(
        {"NATS_URL": "nats://n:4222", "API_PORT": "8080", "ELIZA_NS": "prod", "LOG_LEVEL": ""}
    )
    assert settings.nats_url == "nats://n:4222"
    assert settings.api_port == 8080
    assert settings.subjects.message_handle("a") == "prod.agent.a.message.handle"
    assert settings.log_level == "INFO"


def test_a_malformed_setting_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^invalid setting API_PORT='eighty': .*integer"):
        Settings.from_env({"API_PORT": "eighty"})


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_database_urls_get_an_async_driver(given: str, expected: str) -> None:
    assert async_url(given) == expected


def test_a_database_url_without_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected scheme://"):
        async_url("localhost/db")
