"""``Character``: who the agent is, parsed strictly from Python, a dict or a JSON file."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.message import ID_PATTERN
from shared.errors import BadRequest

_AGENT_NAMESPACE = uuid.UUID("6c7e1f5a-2f39-4f5b-9a0e-656c697a616d")

Secret = str | bool | int | float


class CharacterError(BadRequest):
    """A character that cannot be used; the message names the bad field."""


class Style(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the agent writes, in general, in chats and in posts."""

    all: list[str] = msgspec.field(default_factory=list)
    chat: list[str] = msgspec.field(default_factory=list)
    post: list[str] = msgspec.field(default_factory=list)


class MessageExample(msgspec.Struct, kw_only=True):
    """One line of an example conversation: who speaks, and what."""

    name: str
    content: dict[str, Any]


class Character(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An agent's personality and configuration (elizaOS's Character, in snake_case).

    Build it in Python (``Character(name=..., bio=...)``), or from a dict or a
    JSON file (``Character.parse``, ``Character.from_file``), which also accept
    elizaOS's camelCase keys and report the first bad field by its path.
    """

    name: Annotated[str, Meta(min_length=1, max_length=255)]
    id: (
        Annotated[str, Meta(pattern=ID_PATTERN, description="The agent's id (a UUID fits).")] | None
    ) = None
    username: str | None = None
    system: str | None = None
    bio: str | list[str] = ""
    templates: dict[str, str] = msgspec.field(default_factory=dict)
    message_examples: list[list[MessageExample]] = msgspec.field(default_factory=list)
    post_examples: list[str] = msgspec.field(default_factory=list)
    topics: list[str] = msgspec.field(default_factory=list)
    adjectives: list[str] = msgspec.field(default_factory=list)
    knowledge: list[str | dict[str, Any]] = msgspec.field(default_factory=list)
    plugins: list[str] = msgspec.field(default_factory=list)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)
    secrets: dict[str, Secret] = msgspec.field(default_factory=dict)
    style: Style = msgspec.field(default_factory=Style)
    advanced_planning: bool = False
    advanced_memory: bool = False

    @classmethod
    def parse(cls, data: Any) -> Character:
        """Return a validated character from a dict (snake_case or camelCase keys)."""
        if not isinstance(data, dict):
            raise CharacterError(f"a character must be a JSON object, not {type(data).__name__}")
        try:
            return msgspec.convert({_snake(k): v for k, v in data.items()}, cls)
        except msgspec.ValidationError as exc:
            raise CharacterError(f"invalid character: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Character:
        """Return a validated character read from a JSON file."""
        try:
            data = msgspec.json.decode(Path(path).read_bytes())
        except OSError as exc:
            raise CharacterError(f"cannot read character file {path}: {exc.strerror}") from None
        except msgspec.DecodeError as exc:
            raise CharacterError(f"character file {path} is not valid JSON: {exc}") from None
        return cls.parse(data)

    def validated(self) -> Character:
        """Return this character re-checked field by field (Python construction skips checks)."""
        return Character.parse(msgspec.to_builtins(self))

    def public(self) -> dict[str, Any]:
        """Return the character as JSON-ready data without its secrets (safe to store or send)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        data.pop("secrets", None)
        settings = data.get("settings")
        if isinstance(settings, dict):
            settings.pop("secrets", None)
        return data

    @property
    def agent_id(self) -> str:
        """The agent's id: ``id`` if set, else a UUID derived from the name (stable)."""
        return self.id or str(uuid.uuid5(_AGENT_NAMESPACE, self.name))

    @property
    def bio_lines(self) -> list[str]:
        """The bio as a list of lines, whichever form it was given in."""
        return [self.bio] if isinstance(self.bio, str) else list(self.bio)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()
