"""``SecretBox``: a character's secrets sealed under a key, and opened only with that key."""

from __future__ import annotations

import msgspec
import pytest

from shared.agent.character import Character
from shared.secrets import SecretBox, SecretKeyMissingError, SecretsUnreadableError, secret_key_from

KEY = "sk-unit-0123456789abcdef"
WITH_SECRETS = Character(
    name="Keeper",
    secrets={"OPENAI_API_KEY": KEY},
    settings={"MODEL": "small", "secrets": {"DB_PASSWORD": "hunter2-unit"}},
)


def test_sealed_secrets_open_into_the_stored_character_and_hold_no_plaintext() -> None:
    box = SecretBox("a passphrase")
    sealed = box.seal(WITH_SECRETS)
    assert sealed is not None
    assert KEY not in repr(sealed)
    assert "hunter2-unit" not in repr(sealed)
    stored = Character.parse(WITH_SECRETS.public())
    opened = box.open_into(stored, msgspec.json.decode(msgspec.json.encode(sealed)))
    assert opened.secrets == {"OPENAI_API_KEY": KEY}
    assert opened.settings == {"MODEL": "small", "secrets": {"DB_PASSWORD": "hunter2-unit"}}


def test_each_seal_has_its_own_salt() -> None:
    box = SecretBox("a passphrase")
    first, second = box.seal(WITH_SECRETS), box.seal(WITH_SECRETS)
    assert first is not None
    assert second is not None
    assert first["salt"] != second["salt"]
    assert first["token"] != second["token"]


def test_a_character_without_secrets_needs_no_key() -> None:
    assert SecretBox(None).seal(Character(name="Open", settings={"MODEL": "small"})) is None


def test_secrets_without_a_key_are_refused_naming_the_setting() -> None:
    with pytest.raises(SecretKeyMissingError, match="ELIZAMESH_SECRET_KEY") as raised:
        SecretBox(None).seal(WITH_SECRETS)
    assert raised.value.details == {"setting": "ELIZAMESH_SECRET_KEY"}


@pytest.mark.parametrize("key", [None, "another passphrase"])
def test_secrets_do_not_open_without_the_key_they_were_sealed_with(key: str | None) -> None:
    sealed = SecretBox("a passphrase").seal(WITH_SECRETS)
    with pytest.raises(SecretsUnreadableError, match="ELIZAMESH_SECRET_KEY"):
        SecretBox(key).open_into(Character(name="Keeper"), sealed)


def test_the_key_comes_from_elizamesh_secret_key_else_secret_salt() -> None:
    assert secret_key_from({"ELIZAMESH_SECRET_KEY": "a", "SECRET_SALT": "b"}) == "a"
    assert secret_key_from({"ELIZAMESH_SECRET_KEY": "", "SECRET_SALT": "b"}) == "b"
    assert secret_key_from({}) is None


def test_the_key_is_not_in_the_box_repr() -> None:
    assert "a passphrase" not in repr(SecretBox("a passphrase"))
