"""Settings of the runtime service (``shared.config.RuntimeSettings``).

Declared beside the other services' settings in ``shared.config`` so that one
table lists them all and a setting the runtime shares with the evaluator
(``ROOM_LEASE_SECONDS``, ``AGENT_CHARACTERS``, ...) is read one way by both.
"""

from shared.config import RuntimeSettings

__all__ = ["RuntimeSettings"]
