"""Settings read from the environment, shared by every service and the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Self

import msgspec

from contracts import DEFAULT_NAMESPACE, Subjects

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///.elizamesh/elizamesh.db"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Where the bus and the database are, and how loudly to log.

    Every field has an environment variable of the same name in upper case.
    """

    nats_url: str = DEFAULT_NATS_URL
    database_url: str = DEFAULT_DATABASE_URL
    eliza_ns: str = DEFAULT_NAMESPACE
    log_level: str = "INFO"
    api_host: str = "127.0.0.1"
    api_port: int = 3000
    request_timeout: float = 30.0
    gateway_api_keys: str = ""
    jetstream_replicas: int = 1
    """Copies of each stream and KV bucket this stack declares: 3 on a 3-node NATS cluster."""
    memory_concurrency: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    """Storage requests one memory-service replica runs at once (and its database connections)."""

    @property
    def api_keys(self) -> frozenset[str]:
        """The keys the gateway accepts (``GATEWAY_API_KEYS``, comma-separated); empty: open."""
        return frozenset(k.strip() for k in self.gateway_api_keys.split(",") if k.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build settings from ``environ`` (default ``os.environ``); unset keys keep defaults."""
        env = os.environ if environ is None else environ
        given = {name: env[name.upper()] for name in cls.__struct_fields__ if env.get(name.upper())}
        try:
            return msgspec.convert(given, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid setting: {exc}") from exc

    @property
    def subjects(self) -> Subjects:
        """Subject builders for this stack's namespace."""
        return Subjects(self.eliza_ns)


def default_model_plugin(environ: Mapping[str, str] | None = None) -> str:
    """The model plugin an agent or service uses when none is named.

    ``openai`` when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, else
    ``local`` (the offline models). The one place this is decided.
    """
    env = os.environ if environ is None else environ
    return "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") else "local"
