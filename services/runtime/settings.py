"""Settings of the runtime service, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RuntimeSettings:
    """Which agents to host and how long a room may stay busy.

    ``AGENT_CHARACTERS``: character JSON files, comma-separated.
    ``AGENT_PLUGINS``: plugin names for every agent (default: ``openai`` when
    ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set, else ``local``).
    ``ROOM_LEASE_SECONDS``: how long a crashed replica can keep a room busy.
    ``EMBEDDINGS=remote``: vectors are made by the embedding service (its
    queue) instead of in this process.
    """

    characters: tuple[Path, ...] = ()
    plugins: tuple[str, ...] = ("local",)
    room_lease_seconds: float = 120.0
    remote_embeddings: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        characters = tuple(
            Path(p.strip()) for p in env.get("AGENT_CHARACTERS", "").split(",") if p.strip()
        )
        model = "openai" if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL") else "local"
        plugins = tuple(p.strip() for p in env.get("AGENT_PLUGINS", model).split(",") if p.strip())
        lease = float(env.get("ROOM_LEASE_SECONDS") or cls.room_lease_seconds)
        remote = env.get("EMBEDDINGS", "local").lower() == "remote"
        return cls(
            characters=characters,
            plugins=plugins,
            room_lease_seconds=lease,
            remote_embeddings=remote,
        )
