"""Settings: one class per service, read once at start from the environment and ``.env``.

Every field is an environment variable of the same name in upper case (a
``.env`` file in the working folder is read too; the environment wins). Each
service reads its own class once, in its ``__main__``, and passes it down
(``create_app(settings)``); nothing below the entry points reads the
environment for these names. ``Settings`` holds every setting of the stack:
what the command line, the embedded runtime and the tests use, and it is
accepted wherever a service's settings are.

``settings_markdown()`` renders the one table (env var, default, who reads it,
meaning) that ``elizamesh settings`` prints and the README shows.
"""

from __future__ import annotations

import logging
import os
from collections import ChainMap
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from contracts import DEFAULT_NAMESPACE, Subjects
from contracts.subjects import InvalidIdError
from shared.errors import Unavailable

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.elizamesh/elizamesh.db"
DEFAULT_ROOM_LEASE_SECONDS = 10.0
DEFAULT_READ_TIMEOUT = 10.0
ENV_FILE = ".env"
"""The dotenv file read from the working folder, below the environment."""

_DATABASES = frozenset({"sqlite", "postgres", "postgresql"})
_DATABASE_FORMS = "expected sqlite:///path or postgresql://user@host/db"


class SettingsError(ValueError):
    """A setting has a value its service cannot use; the message names the variable.

    One line per bad variable: ``invalid setting API_PORT='eighty': ...``.
    """


class DatabaseUnavailableError(Unavailable):
    """The database ``DATABASE_URL`` names cannot be opened (down, unknown, refused)."""

    def __init__(self, url: str, cause: BaseException) -> None:
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        super().__init__(
            f"cannot open the database at DATABASE_URL={without_password(url)}: "
            f"{reason[0] if reason else type(cause).__name__}",
            details={"setting": "DATABASE_URL"},
        )


def without_password(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit to print."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def check_database_url(url: str) -> str:
    """Return ``url`` if it names a database elizamesh opens (SQLite, Postgres).

    Raises:
        SettingsError: it does not; the message names ``DATABASE_URL``.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or scheme.split("+")[0] not in _DATABASES:
        raise SettingsError(
            f"invalid setting DATABASE_URL={without_password(url)!r}: {_DATABASE_FORMS}"
        )
    return url


def _comma_list(value: object) -> object:
    """``"a, b,,c"`` -> ``("a", "b", "c")``; lists pass through (built in code)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


_ONLY_GIVEN: ContextVar[bool] = ContextVar("_ONLY_GIVEN", default=False)
"""Set while ``from_env(environ)`` builds settings from ``environ`` alone."""

CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
"""A comma-separated environment variable, as a tuple of its non-empty items."""


class CommonSettings(BaseSettings):
    """What every service needs: where the bus and database are, the namespace, logging."""

    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_ignore_empty=True,  # VAR= in a compose file means "unset", as before
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )
    service: ClassVar[str] = "all"
    """Who reads this class (the table's "read by" column)."""

    nats_url: str = Field(
        DEFAULT_NATS_URL,
        description="The NATS server(s), comma-separated; user:password@ or a token in the URL.",
    )
    eliza_ns: str = Field(
        DEFAULT_NAMESPACE,
        description="First token of every subject: one NATS account can host several stacks.",
    )
    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description="sqlite:///path or postgresql://user@host/db (the memory service's "
        "database; embedded: the runtime's).",
    )
    log_level: str = Field(
        "INFO",
        description="DEBUG, INFO, WARNING, ERROR or CRITICAL; logs are JSON lines on stderr, "
        "with trace_id and span_id.",
    )
    jetstream_replicas: int = Field(
        1, ge=1, le=5, description="Copies of each stream and KV bucket: 3 on a 3-node cluster."
    )
    queue_retry_seconds: float = Field(
        600.0,
        gt=0,
        description="How long a queue worker (embedding, evaluator) retries a message that "
        "fails for a passing cause (storage away, ...) before dead-lettering it.",
    )
    webhook_retry_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="How long the webhook connector retries a message its receiver does not "
        "take, before dead-lettering it.",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        description="The OpenAI-compatible server's key; set, it makes openai the default "
        "model plugin (an agent's own secret wins).",
    )
    openai_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible server (vLLM, Ollama, llama.cpp, ...); set, it makes "
        "openai the default model plugin.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="Where traces and metrics go over OTLP (e.g. http://localhost:4317 for "
        "Jaeger); unset: none are recorded.",
    )
    otel_exporter_otlp_protocol: str = Field(
        "grpc", description="grpc or http/protobuf (OpenTelemetry's own setting)."
    )
    otel_traces_exporter: str | None = Field(
        None, description="console: print spans on stdout (debugging without a collector)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() not in logging.getLevelNamesMapping():
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper() if isinstance(value, str) else value

    @field_validator("eliza_ns")
    @classmethod
    def _subject_token(cls, value: str) -> str:
        try:
            Subjects(value)
        except InvalidIdError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme, sep, _ = value.partition("://")
        if not sep or scheme.split("+")[0] not in _DATABASES:
            raise ValueError(_DATABASE_FORMS)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where values come from: those given, the environment, ``.env``, secret files.

        Only those given while ``from_env(environ)`` reads ``environ``.
        """
        if _ONLY_GIVEN.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    @property
    def subjects(self) -> Subjects:
        """Subject builders for this stack's namespace."""
        return Subjects(self.eliza_ns)

    @property
    def model_plugin(self) -> str:
        """``openai`` when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, else ``local``."""
        return "openai" if self.openai_api_key or self.openai_base_url else "local"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the settings from ``environ``, or from the environment and ``.env``.

        Unset or empty variables keep their defaults.

        Raises:
            SettingsError: a variable has a value the service cannot use; the
                message has one line per such variable, naming it.
        """
        try:
            if environ is None:
                return cls()
            given: dict[str, Any] = {
                name: environ[name.upper()]
                for name in cls.model_fields
                if environ.get(name.upper())
            }
            only_given = _ONLY_GIVEN.set(True)
            try:
                return cls(**given)
            finally:
                _ONLY_GIVEN.reset(only_given)
        except ValidationError as exc:
            raise SettingsError(_explain(exc, environ)) from None

    @classmethod
    def load(cls) -> Self:
        """``from_env()`` for an entry point: a bad value exits with its one-line reason.

        Raises:
            SystemExit: with the reason as its message (written to stderr, exit code 1).
        """
        try:
            return cls.from_env()
        except SettingsError as exc:
            raise SystemExit(str(exc)) from None


def _explain(error: ValidationError, environ: Mapping[str, str] | None) -> str:
    env = environment() if environ is None else environ
    lines = []
    for problem in error.errors(include_url=False):
        name = str(problem["loc"][0]).upper() if problem["loc"] else "?"
        given = env.get(name)
        shown = "(secret)" if _secret(name) else repr(given)
        reason = problem["msg"].removeprefix("Value error, ")
        lines.append(f"invalid setting {name}={shown}: {reason}")
    return "\n".join(lines)


def _secret(name: str) -> bool:
    return name.endswith(("KEY", "KEYS", "PASSWORD", "SECRET", "SALT", "TOKEN"))


class GatewaySettings(CommonSettings):
    """The gateway: where it listens, how long it waits, who may call it."""

    service: ClassVar[str] = "gateway"

    api_host: str = Field("127.0.0.1", description="The gateway's HTTP address.")
    api_port: int = Field(3000, ge=1, le=65535, description="The gateway's HTTP port.")
    request_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds the gateway waits for a runtime's answer before answering 503.",
    )
    gateway_api_keys: SecretStr = Field(
        SecretStr(""),
        description="Keys the gateway accepts (Authorization: Bearer or X-API-Key), "
        "comma-separated; empty: open.",
    )
    gateway_read_timeout: float = Field(
        DEFAULT_READ_TIMEOUT, gt=0, description="Seconds a client has to send a whole request."
    )
    gateway_turn_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds a whole turn may take over HTTP (SSE, chat completions); then it "
        "ends as timeout.",
    )
    gateway_keepalive: float = Field(
        15.0,
        gt=0,
        description="Seconds between SSE keep-alive comments while a turn is quiet.",
    )
    gateway_cors_origins: CommaList = Field(
        (),
        description="Origins a browser may call the API from (* for any), comma-separated; "
        "empty: no CORS.",
    )

    @property
    def api_keys(self) -> frozenset[str]:
        """The keys the gateway accepts (``GATEWAY_API_KEYS``, comma-separated); empty: open."""
        keys = self.gateway_api_keys.get_secret_value().split(",")
        return frozenset(k.strip() for k in keys if k.strip())

    @property
    def cors_origins(self) -> list[str]:
        """The origins of ``GATEWAY_CORS_ORIGINS``, or ``[]`` (CORS off)."""
        return list(self.gateway_cors_origins)


class MemorySettings(CommonSettings):
    """The memory service: how many storage requests run at once."""

    service: ClassVar[str] = "memory"

    memory_concurrency: int = Field(
        16,
        ge=1,
        le=256,
        description="Storage requests one memory replica runs at once (and its database "
        "connections).",
    )


class EmbeddingSettings(CommonSettings):
    """The embedding service: which plugin makes the vectors."""

    service: ClassVar[str] = "embedding"

    embedding_plugin: str | None = Field(
        None,
        description="The plugin whose TEXT_EMBEDDING model the embedding service uses; "
        "default: the default model plugin (openai or local).",
    )

    @property
    def embedding_model_plugin(self) -> str:
        """``EMBEDDING_PLUGIN``, else the default model plugin."""
        return self.embedding_plugin or self.model_plugin


class HostSettings(CommonSettings):
    """Hosting agents (the runtime and evaluator services): characters, plugins, the lease."""

    service: ClassVar[str] = "runtime, evaluator"

    agent_characters: Annotated[tuple[Path, ...], NoDecode, BeforeValidator(_comma_list)] = Field(
        (), description="Character JSON files to host, comma-separated."
    )
    agent_plugins: CommaList = Field(
        (),
        description="Plugins of agents whose character names none, comma-separated; "
        "default: openai when OPENAI_API_KEY or OPENAI_BASE_URL is set, else local.",
    )
    remote_providers: CommaList = Field(
        (), description="Providers served over NATS (<ns>.provider.<name>.get), comma-separated."
    )
    provider_timeout: float = Field(
        2.0, gt=0, description="Seconds each remote provider has to answer."
    )
    run_heartbeat_seconds: float = Field(
        2.0,
        gt=0,
        description="Seconds between a live turn's heartbeats on its run; followers give up "
        "after 3 missed.",
    )
    remote_actions: CommaList = Field(
        (), description="Actions served over NATS (<ns>.action.<name>.invoke), comma-separated."
    )
    room_lease_seconds: float = Field(
        DEFAULT_ROOM_LEASE_SECONDS,
        gt=0,
        description="How long a crashed replica can keep a room busy; a live turn renews it.",
    )
    elizamesh_secret_key: SecretStr | None = Field(
        None,
        description="Key the secrets of agents added over the API are encrypted with; the "
        "same on every replica.",
    )
    secret_salt: SecretStr | None = Field(
        None, description="elizaOS's name for ELIZAMESH_SECRET_KEY (used when that is unset)."
    )

    @property
    def plugins(self) -> tuple[str, ...]:
        """``AGENT_PLUGINS``, else the default model plugin."""
        return self.agent_plugins or (self.model_plugin,)

    @property
    def secret_key(self) -> str | None:
        """``ELIZAMESH_SECRET_KEY``, else ``SECRET_SALT``, else None."""
        for key in (self.elizamesh_secret_key, self.secret_salt):
            if key is not None and key.get_secret_value():
                return key.get_secret_value()
        return None


class RuntimeSettings(HostSettings):
    """The runtime service: where vectors are made and evaluators run."""

    service: ClassVar[str] = "runtime"

    embeddings: Annotated[Literal["local", "remote"], BeforeValidator(_lower)] = Field(
        "local",
        description="remote: the embedding service makes the vectors (its queue); "
        "local: this process.",
    )
    evaluators: Annotated[Literal["local", "remote"], BeforeValidator(_lower)] = Field(
        "local",
        description="remote: evaluators run in the evaluator service after the turn; "
        "local: in the turn.",
    )

    @property
    def remote_embeddings(self) -> bool:
        """Whether the embedding service makes the vectors (``EMBEDDINGS=remote``)."""
        return self.embeddings == "remote"

    @property
    def remote_evaluators(self) -> bool:
        """Whether the evaluator service runs the evaluators (``EVALUATORS=remote``)."""
        return self.evaluators == "remote"


class EvaluatorSettings(HostSettings):
    """The evaluator service: it hosts the same agents as the runtime, for their evaluators."""

    service: ClassVar[str] = "evaluator"


class Settings(GatewaySettings, MemorySettings, EmbeddingSettings, RuntimeSettings):
    """Every setting of the stack: the command line, the embedded runtime and tests use it.

    It is each service's settings too, so any service's ``create_app`` takes it.
    """

    service: ClassVar[str] = "cli"


SERVICE_SETTINGS: tuple[type[CommonSettings], ...] = (
    GatewaySettings,
    RuntimeSettings,
    MemorySettings,
    EmbeddingSettings,
    EvaluatorSettings,
)
"""Each service's class, in the order the table lists who reads a setting."""


def default_model_plugin(environ: Mapping[str, str] | None = None) -> str:
    """The model plugin an agent or service uses when none is named.

    ``openai`` when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, else
    ``local`` (the offline models). The one place this is decided.
    """
    env = environment() if environ is None else environ
    return "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") else "local"


# -- the environment, with .env below it -------------------------------------------


@cache
def _dotenv_in(folder: str) -> Mapping[str, str] | None:
    path = Path(folder, ENV_FILE)
    if not path.is_file():
        return None
    from dotenv import dotenv_values  # noqa: PLC0415 - only when a .env exists

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def environment() -> Mapping[str, str]:
    """The process environment over the ``.env`` file of the working folder (if any).

    What ``runtime.get_setting`` falls back to, so a plugin's setting in
    ``.env`` is found as the services' own settings are. Each folder's file
    is read once (a setting is looked up several times a turn).
    """
    found = _dotenv_in(os.getcwd())
    if found is None:
        return os.environ
    return ChainMap(os.environ, found)  # type: ignore[arg-type]


# -- the one table -------------------------------------------------------------------


def settings_rows() -> Iterator[tuple[str, str, str, str]]:
    """``(ENV_VAR, default, read by, meaning)`` for every setting, in declaration order."""
    for name, field in Settings.model_fields.items():
        readers = [cls.service for cls in SERVICE_SETTINGS if name in cls.model_fields]
        everyone = len(readers) == len(SERVICE_SETTINGS)
        yield (
            name.upper(),
            _shown_default(name, field.default),
            "all services" if everyone else ", ".join(readers),
            field.description or "",
        )


def _shown_default(name: str, default: object) -> str:
    if name == "agent_plugins":
        return "openai or local"
    if default is None or default in ((), ""):
        return ""
    if isinstance(default, SecretStr):
        return ""
    return str(default)


def settings_markdown() -> str:
    """The settings table in Markdown (the README's, and ``elizamesh settings``)."""
    lines = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for env, default, readers, meaning in settings_rows():
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{env}` | {shown} | {readers} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
