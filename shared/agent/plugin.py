"""Plugin resolution: by object or by name, dependencies first, then by priority band.

A plugin given by name is found through the ``elizamesh.plugins`` entry-point
group (an installed package declares ``name = "module:attribute"``, the
attribute being a ``Plugin`` or a function returning one). ``openai``,
``plugin-openai``, ``elizamesh-plugin-openai`` and ``@elizaos/plugin-openai``
all name the same plugin.

The plugins of elizaOS character files map to what elizamesh provides
(``ELIZAOS_PLUGINS``): ``@elizaos/plugin-sql`` and ``-knowledge`` are built in,
``-bootstrap``, ``-openai``, ``-ollama`` and ``-local-ai`` are elizamesh's own.
An elizaOS package name, or any name a character lists, that is not installed
is a warning naming it and what to use instead, and the agent starts without
it; another name given in code or ``AGENT_PLUGINS`` must exist.
"""

from __future__ import annotations

import heapq
import logging
import re
from collections.abc import Callable, Collection, Iterable
from importlib.metadata import entry_points

from shared.agent.types import Plugin
from shared.errors import BadRequest

ENTRY_POINT_GROUP = "elizamesh.plugins"

logger = logging.getLogger("elizamesh.plugins")

_PREFIX = re.compile(r"^(@elizaos(-plugins)?/|elizamesh[-_])?(plugin[-_])?")

BUILT_IN = {
    "sql": "storage is built in (DATABASE_URL embedded, the memory service distributed)",
    "knowledge": "the character's knowledge is built in (ingested at start, KNOWLEDGE provider)",
}
"""elizaOS plugins whose work elizamesh always does: nothing to load."""

ELIZAOS_PLUGINS = {
    "bootstrap": "bootstrap",
    "openai": "openai",
    "ollama": "openai",
    "local-ai": "local",
    "local-embedding": "local",
}
"""elizaOS plugin names (short form) -> the elizamesh plugin that does their work."""

_NOTES = {
    "ollama": "elizamesh's 'openai' plugin serves it: set OPENAI_BASE_URL=http://localhost:11434/v1",
}
_CONNECTORS = {"discord", "telegram", "twitter", "x", "slack", "farcaster", "farcaster-client"}
_MODEL_PROVIDERS = {
    "anthropic", "openrouter", "google-genai", "groq", "mistral", "deepseek", "together",
    "venice", "redpill", "nvidia", "xai", "grok", "gaianet", "heurist", "livepeer", "akash",
}  # fmt: skip


class PluginError(BadRequest):
    """A plugin that cannot be found, or plugins whose dependencies cannot be ordered."""


def normalize_plugin_name(name: str) -> str:
    """Return the short form of a plugin name (``@elizaos/plugin-openai`` -> ``openai``)."""
    return _PREFIX.sub("", name.strip().lower())


def discover_plugin(name: str) -> Plugin:
    """Return the installed plugin called ``name`` (any of its spellings)."""
    wanted = normalize_plugin_name(name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if normalize_plugin_name(entry.name) == wanted:
            found = entry.load()
            plugin = found() if callable(found) and not isinstance(found, Plugin) else found
            if not isinstance(plugin, Plugin):
                raise PluginError(f"entry point {entry.value} is not a Plugin")
            return plugin
    raise PluginError(
        f"plugin {name!r} is not installed: no '{ENTRY_POINT_GROUP}' entry point named {wanted!r}"
    )


def missing_plugin_hint(name: str) -> str:
    """Say what to do about a plugin name that elizamesh cannot load."""
    short = normalize_plugin_name(name)
    if short in _CONNECTORS:
        return f"connect {short} with an elizamesh connector instead (README, 'Connectors')"
    if short in _MODEL_PROVIDERS:
        return (
            f"use the 'openai' plugin with OPENAI_BASE_URL set to an OpenAI-compatible API of "
            f"{short}, or 'local'"
        )
    return (
        f"install a Python package that declares a '{ENTRY_POINT_GROUP}' entry point "
        f"named {short!r}"
    )


def resolve_plugins(
    plugins: Iterable[Plugin | str],
    *,
    discover: Callable[[str], Plugin] = discover_plugin,
    optional: Collection[str] = (),
) -> list[Plugin]:
    """Return every plugin needed, each once, in load order.

    elizaOS names map first (``ELIZAOS_PLUGINS``; ``BUILT_IN`` ones load
    nothing). Dependencies (by name) are pulled in and load before their
    dependents; among plugins free to load, lower ``priority`` loads first,
    then the order given. A dependency cycle is an error naming the plugins
    in it. An elizaOS package name (``@elizaos/...``) or a name in
    ``optional`` (a character's plugins) that cannot be found is a warning
    naming it and what to use instead, and is left out.

    Raises:
        PluginError: a plugin that is not optional cannot be found, or a cycle.
    """
    lenient = {normalize_plugin_name(n) for n in optional}
    found: dict[str, Plugin] = {}
    order: dict[str, int] = {}
    pending = list(plugins)
    while pending:
        item = pending.pop(0)
        if isinstance(item, str):
            short = normalize_plugin_name(item)
            if short in BUILT_IN:
                logger.debug("plugin %s: %s", item, BUILT_IN[short])
                continue
            if short in ELIZAOS_PLUGINS and ELIZAOS_PLUGINS[short] != short:
                logger.info(
                    "plugin %s: %s",
                    item,
                    _NOTES.get(short, f"served by elizamesh's {ELIZAOS_PLUGINS[short]!r} plugin"),
                )
            mapped = ELIZAOS_PLUGINS.get(short, short)
            if mapped in found:
                continue
            try:
                plugin = discover(item if mapped == short else mapped)
            except PluginError:
                if not item.startswith("@elizaos") and normalize_plugin_name(item) not in lenient:
                    raise
                logger.warning(
                    "plugin %s is not available in elizamesh; the agent starts without it: %s",
                    item,
                    missing_plugin_hint(item),
                )
                continue
        else:
            plugin = item
        key = normalize_plugin_name(plugin.name)
        if key in found:
            continue
        found[key] = plugin
        order[key] = len(order)
        pending.extend(d for d in plugin.dependencies if normalize_plugin_name(d) not in found)
    return _topological(found, order)


def _topological(found: dict[str, Plugin], order: dict[str, int]) -> list[Plugin]:
    needs = {k: {normalize_plugin_name(d) for d in p.dependencies} for k, p in found.items()}
    ready = [(found[k].priority, order[k], k) for k, deps in needs.items() if not deps]
    heapq.heapify(ready)
    loaded: list[Plugin] = []
    while ready:
        _, _, key = heapq.heappop(ready)
        loaded.append(found[key])
        for other, deps in needs.items():
            if key in deps:
                deps.discard(key)
                if not deps:
                    heapq.heappush(ready, (found[other].priority, order[other], other))
    if len(loaded) < len(found):
        stuck = sorted(k for k, deps in needs.items() if deps)
        raise PluginError(f"plugin dependency cycle among: {', '.join(stuck)}")
    return loaded
