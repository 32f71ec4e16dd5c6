"""``Character``: who the agent is, parsed strictly from Python, a dict or a JSON file.

elizaOS character files load as they are: 1.x files (camelCase keys,
``@elizaos/plugin-*`` names, mapped in ``shared.agent.plugin``) and 0.x files,
whose fields that 1.x dropped are read where they still mean something
(``lore`` joins ``bio`` as elizaOS's migration does, ``modelProvider`` names a
model plugin elizamesh has, 0.x ``messageExamples`` lines with ``user``) and
otherwise ignored with one logged warning naming them. Every problem of a file
is reported at once, each with its path in the file's own names
(``$.messageExamples[0][1].content``).
"""

from __future__ import annotations

import difflib
import logging
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.message import ID_PATTERN
from shared.errors import BadRequest

logger = logging.getLogger("elizamesh.character")

_AGENT_NAMESPACE = uuid.UUID("6c7e1f5a-2f39-4f5b-9a0e-656c697a616d")

IGNORED_V0_FIELDS = {
    "clients": "platforms connect through elizamesh connectors",
    "clientConfig": "platforms connect through elizamesh connectors",
    "imageModelProvider": "models come from the plugins",
    "imageVisionModelProvider": "models come from the plugins",
    "modelEndpointOverride": "set the model plugin's URL (OPENAI_BASE_URL)",
    "people": "not used",
    "email": "not used",
    "twitterProfile": "not used",
    "twitterSpaces": "not used",
    "nft": "not used",
    "extends": "not used",
}
"""elizaOS 0.x character fields that elizamesh accepts and ignores, and why."""

MODEL_PROVIDERS = {
    "openai": "openai",
    "ollama": "ollama",
    "llama_local": "local-ai",
    "local": "local-ai",
}
"""0.x ``modelProvider`` values that name a model plugin elizamesh has."""

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
    def parse(cls, data: object) -> Character:
        """Return a validated character from a dict (snake_case or camelCase keys, 1.x or 0.x).

        Raises:
            CharacterError: every problem found, one per line, each with its path.
        """
        if not isinstance(data, dict):
            raise CharacterError(f"a character must be a JSON object, not {type(data).__name__}")
        fields, problems = _check_fields(data)
        if problems:
            raise CharacterError(
                f"invalid character ({len(problems)} problems):\n" + "\n".join(problems),
                details={"problems": "; ".join(problems)},
            )
        try:
            return msgspec.convert(fields, cls)
        except msgspec.ValidationError as exc:  # checked field by field above; kept as a net
            raise CharacterError(f"invalid character: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> Character:
        """Return a validated character read from a JSON file.

        Relative ``knowledge`` paths become paths relative to the file's folder.
        """
        try:
            data = msgspec.json.decode(Path(path).read_bytes())
        except OSError as exc:
            raise CharacterError(f"cannot read character file {path}: {exc.strerror}") from None
        except msgspec.DecodeError as exc:
            raise CharacterError(f"character file {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("knowledge"), list):
            folder = Path(path).resolve().parent
            data["knowledge"] = [_located(entry, folder) for entry in data["knowledge"]]
        return cls.parse(data)

    def validated(self) -> Character:
        """Return this character re-checked field by field (Python construction skips checks)."""
        return Character.parse(msgspec.to_builtins(self))

    def public(self) -> dict[str, object]:
        """Return the character as JSON-ready data without its secrets (safe to store or send)."""
        data: dict[str, object] = msgspec.to_builtins(self)
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


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _located(entry: object, folder: Path) -> object:
    if not isinstance(entry, dict):
        return entry
    located = dict(entry)
    for key in ("path", "directory"):
        if isinstance(located.get(key), str) and not Path(located[key]).is_absolute():
            located[key] = str(folder / located[key])
    return located


def _check_fields(data: Mapping[str, object]) -> tuple[dict[str, object], list[str]]:
    """Return the fields of ``data`` under Character's names, and every problem found."""
    types = {f.name: f.type for f in msgspec.structs.fields(Character)}
    known = [_camel(n) for n in types]
    fields: dict[str, object] = {}
    problems: list[str] = []
    ignored: list[str] = []
    name = data.get("name")
    label = name if isinstance(name, str) and name else "(no name)"
    for key, value in data.items():
        field = _snake(key)
        if key in IGNORED_V0_FIELDS:
            ignored.append(f"{key} ({IGNORED_V0_FIELDS[key]})")
            continue
        if key == "lore":  # 0.x: elizaOS's 1.x migration moves lore into bio
            fields.setdefault("lore", value)
            continue
        if key == "modelProvider":
            fields["model_provider"] = value
            continue
        if field not in types:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"$.{key}: not a character field{hint}")
            continue
        if field == "message_examples" and isinstance(value, list):
            fields[field] = [_v0_example(conversation) for conversation in value]
        else:
            fields[field] = value
        problems.extend(_check(f"$.{key}", fields[field], types[field]))
    if not isinstance(name, str) or not name:
        problems.insert(0, "$.name: required, a non-empty string")
    lore = fields.pop("lore", None)
    if lore is not None:
        problems.extend(_check("$.lore", lore, list[str]))
        if not problems and isinstance(lore, list):  # checked: a list of strings
            bio = fields.get("bio", "")
            head = [bio] if isinstance(bio, str) and bio else bio if isinstance(bio, list) else []
            fields["bio"] = [*head, *lore]
    provider = fields.pop("model_provider", None)
    if provider is not None:
        _use_model_provider(fields, provider, label, problems)
    if ignored and not problems:
        logger.warning("character %s: elizaOS 0.x fields ignored: %s", label, "; ".join(ignored))
    return fields, problems


def _v0_example(conversation: object) -> object:
    """A 0.x example line says ``user`` where 1.x says ``name``."""
    if not isinstance(conversation, list):
        return conversation
    return [
        {("name" if k == "user" and "name" not in line else k): v for k, v in line.items()}
        if isinstance(line, dict)
        else line
        for line in conversation
    ]


def _use_model_provider(
    fields: dict[str, object], provider: object, label: str, problems: list[str]
) -> None:
    if not isinstance(provider, str):
        problems.append(f"$.modelProvider: expected a string, got {type(provider).__name__}")
        return
    plugin = MODEL_PROVIDERS.get(provider.lower())
    if plugin is None:
        logger.warning(
            "character %s: modelProvider %r has no elizamesh plugin; the host's model plugins "
            "are used (AGENT_PLUGINS; 'openai' serves any OpenAI-compatible API)",
            label,
            provider,
        )
        return
    plugins = fields.get("plugins")
    if isinstance(plugins, list) and plugin not in plugins:
        fields["plugins"] = [*plugins, plugin]
    elif plugins is None:
        fields["plugins"] = [plugin]


def _check(path: str, value: object, kind: object) -> list[str]:
    """Every problem of ``value`` as ``kind``: each item of a list on its own."""
    try:
        msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        item = _list_item(kind)
        if item is not None and isinstance(value, list):
            return [p for i, v in enumerate(value) for p in _check(f"{path}[{i}]", v, item)]
        message, _, where = str(exc).partition(" - at `$")
        return [f"{path}{where.rstrip('`')}: {message}"]
    return []


def _list_item(kind: object) -> object:
    args: tuple[object, ...] = getattr(kind, "__args__", ())
    return args[0] if getattr(kind, "__origin__", None) is list and len(args) == 1 else None
