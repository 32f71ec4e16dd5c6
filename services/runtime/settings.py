"""Settings of the runtime service, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.hosting import HostedAgents
from shared.rooms import LEASE_SECONDS


@dataclass(frozen=True)
class RuntimeSettings:
    """Which agents to host, and how the runtime shares work with the other services.

    ``agents``: ``AGENT_CHARACTERS`` and ``AGENT_PLUGINS`` (see ``HostedAgents``).
    ``ROOM_LEASE_SECONDS`` (default 10): how long a crashed replica can keep a
    room busy; a live turn renews its room's lease (``shared.rooms``).
    ``EMBEDDINGS=remote``: vectors are made by the embedding service (its
    queue) instead of in this process. ``EVALUATORS=remote``: evaluators run in
    the evaluator service, after the turn, instead of in the turn.
    """

    agents: HostedAgents = field(default_factory=HostedAgents)
    room_lease_seconds: float = LEASE_SECONDS
    remote_embeddings: bool = False
    remote_evaluators: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the settings from ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        return cls(
            agents=HostedAgents.from_env(env),
            room_lease_seconds=float(env.get("ROOM_LEASE_SECONDS") or cls.room_lease_seconds),
            remote_embeddings=env.get("EMBEDDINGS", "local").lower() == "remote",
            remote_evaluators=env.get("EVALUATORS", "local").lower() == "remote",
        )
