"""A wrong ``DATABASE_URL`` in-process is one clear error naming the setting, not a driver's."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from shared.agent.character import Character
from shared.agent.runtime import AgentRuntime
from shared.config import DatabaseUnavailableError, SettingsError
from shared.errors import Unavailable
from shared.natsserver import free_port

pytestmark = pytest.mark.integration


async def initialized_with(url: str) -> AgentRuntime:
    runtime = AgentRuntime(character=Character(name="A"), settings={"DATABASE_URL": url})
    await runtime.initialize()
    return runtime


async def test_a_postgres_nobody_listens_on_is_unavailable_naming_database_url() -> None:
    url = f"postgresql://postgres:hunter22@127.0.0.1:{free_port()}/nope"
    with pytest.raises(DatabaseUnavailableError) as raised:
        await initialized_with(url)
    message = str(raised.value)
    assert isinstance(raised.value, Unavailable)  # retryable: it may come up later
    assert message.startswith("cannot open the database at DATABASE_URL=postgresql://postgres:***@")
    assert "hunter22" not in message
    assert "\n" not in message
    assert raised.value.details == {"setting": "DATABASE_URL"}


@pytest.mark.parametrize("url", ["mysql://u@h/db", "localhost/db", "sqlite:/x.db"])
async def test_a_database_url_of_no_known_form_is_a_settings_error(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^invalid setting DATABASE_URL=.*: expected sqlite"):
        await initialized_with(url)


async def test_a_database_that_does_not_exist_is_unavailable_naming_it(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    missing = urlunsplit(parts._replace(path="/db_that_does_not_exist"))
    with pytest.raises(DatabaseUnavailableError) as raised:
        await initialized_with(missing)
    assert "DATABASE_URL=" in str(raised.value)
    assert str(raised.value).endswith('database "db_that_does_not_exist" does not exist')
