"""``get_local_plugin()``: chat and embeddings on this machine, no key, no network."""

from shared.plugins.local import get_local_plugin

__all__ = ["get_local_plugin"]
