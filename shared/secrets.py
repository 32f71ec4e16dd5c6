"""The secrets of agents added over the API, encrypted at rest.

An agent added with ``POST /v1/agents`` (``<ns>.agents.add``) is stored so
that every runtime replica can host it, and after a restart too. Its
character is stored without ``secrets`` and ``settings.secrets``
(``Character.public``); those are sealed with Fernet (AES-128-CBC and
HMAC-SHA256) under a key derived with scrypt from the ``ELIZAMESH_SECRET_KEY``
setting (else ``SECRET_SALT``, as elizaOS names it) and a random salt, and
stored apart, in the agent's own cache under ``SECRETS_CACHE_KEY``: no list
or get of agents returns them, and deleting the agent deletes them. The
replica that loads a stored agent opens them into its character; every
replica needs the same key.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from shared.agent.character import Character, Secret
from shared.errors import BadRequest, Internal

SECRET_KEY_SETTINGS = ("ELIZAMESH_SECRET_KEY", "SECRET_SALT")
"""The settings the key is read from, first found wins."""

SECRETS_CACHE_KEY = "elizamesh:agent-secrets"
"""Where an agent's sealed secrets are stored: a key of its own cache."""

_VERSION = 1
_SALT_BYTES = 16


class SecretKeyMissingError(BadRequest):
    """An agent with secrets was sent to a runtime that has no key to encrypt them with."""

    def __init__(self) -> None:
        super().__init__(
            "this agent has secrets, and the runtime has no ELIZAMESH_SECRET_KEY (or "
            "SECRET_SALT) setting to encrypt them with; set ELIZAMESH_SECRET_KEY, the same "
            "on every runtime replica, or send the agent without secrets",
            details={"setting": SECRET_KEY_SETTINGS[0]},
        )


class SecretsUnreadableError(Internal):
    """A stored agent's secrets cannot be opened with this replica's key (none, or another)."""


class _Sealed(msgspec.Struct, kw_only=True, frozen=True):
    """The stored form: the format version, the scrypt salt and the Fernet token."""

    v: int
    salt: str
    token: str


class _Secrets(msgspec.Struct, kw_only=True, frozen=True):
    """What is sealed: a character's ``secrets`` and its ``settings.secrets``."""

    secrets: dict[str, Secret] = msgspec.field(default_factory=dict)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)


def secret_key_from(environ: Mapping[str, str] | None = None) -> str | None:
    """Return the key from ``ELIZAMESH_SECRET_KEY`` or ``SECRET_SALT`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    return next((env[name] for name in SECRET_KEY_SETTINGS if env.get(name)), None)


@dataclass(frozen=True)
class SecretBox:
    """Seals and opens agents' secrets under one key (``None``: secrets cannot be stored)."""

    key: str | None = field(default=None, repr=False)

    def seal(self, character: Character) -> dict[str, object] | None:
        """Return the character's secrets sealed for storage; None when it has none.

        Raises:
            SecretKeyMissingError: it has secrets and there is no key.
        """
        nested = character.settings.get("secrets")
        secrets = _Secrets(
            secrets=dict(character.secrets),
            settings=dict(nested) if isinstance(nested, dict) else {},
        )
        if not secrets.secrets and not secrets.settings:
            return None
        if self.key is None:
            raise SecretKeyMissingError
        salt = os.urandom(_SALT_BYTES)
        token = _fernet(self.key, salt).encrypt(msgspec.json.encode(secrets))
        sealed = _Sealed(v=_VERSION, salt=_b64(salt), token=token.decode("ascii"))
        result: dict[str, object] = msgspec.to_builtins(sealed)
        return result

    def open_into(self, character: Character, sealed: object) -> Character:
        """Return ``character`` with the secrets ``seal`` stored put back in.

        Raises:
            SecretsUnreadableError: no key, another key, or not what ``seal`` stored.
        """
        if self.key is None:
            raise SecretsUnreadableError(
                f"agent {character.agent_id} has stored secrets, and this runtime has no "
                "ELIZAMESH_SECRET_KEY (or SECRET_SALT) setting to open them; set the key "
                "the agent was added with",
                details={"setting": SECRET_KEY_SETTINGS[0]},
            )
        try:
            stored = msgspec.convert(sealed, _Sealed)
            if stored.v != _VERSION:
                raise SecretsUnreadableError(f"unknown sealed secrets version {stored.v}")
            plain = _fernet(self.key, base64.urlsafe_b64decode(stored.salt)).decrypt(stored.token)
            opened = msgspec.json.decode(plain, type=_Secrets)
        except (msgspec.ValidationError, ValueError, InvalidToken):
            raise SecretsUnreadableError(
                f"the stored secrets of agent {character.agent_id} do not open with this "
                "runtime's ELIZAMESH_SECRET_KEY (or SECRET_SALT): every replica needs the key "
                "the agent was added with",
                details={"setting": SECRET_KEY_SETTINGS[0]},
            ) from None
        settings = dict(character.settings)
        if opened.settings:
            given = settings.get("secrets")
            settings["secrets"] = {**opened.settings, **(given if isinstance(given, dict) else {})}
        return msgspec.structs.replace(
            character, secrets={**opened.secrets, **character.secrets}, settings=settings
        )


@functools.lru_cache(maxsize=64)
def _fernet(key: str, salt: bytes) -> Fernet:
    # scrypt: the setting may be a passphrase; a salt per sealed value, so the
    # same key never derives the same Fernet key twice. Cached: a replica opens
    # each stored agent once per start, and scrypt costs ~0.1 s.
    derived = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")
