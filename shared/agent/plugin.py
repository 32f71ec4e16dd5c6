"""Plugin resolution: by object or by name, dependencies first, then by priority band.

A plugin given by name is found through the ``elizamesh.plugins`` entry-point
group (an installed package declares ``name = "module:attribute"``, the
attribute being a ``Plugin`` or a function returning one). ``openai``,
``plugin-openai``, ``elizamesh-plugin-openai`` and ``@elizaos/plugin-openai``
all name the same plugin.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

from shared.agent.types import Plugin
from shared.errors import BadRequest

ENTRY_POINT_GROUP = "elizamesh.plugins"

_PREFIX = re.compile(r"^(@elizaos/|elizamesh[-_])?(plugin[-_])?")


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


def resolve_plugins(
    plugins: Iterable[Plugin | str], *, discover: Callable[[str], Plugin] = discover_plugin
) -> list[Plugin]:
    """Return every plugin needed, each once, in load order.

    Dependencies (by name) are pulled in and load before their dependents;
    among plugins free to load, lower ``priority`` loads first, then the
    order given. A dependency cycle is an error naming the plugins in it.
    """
    found: dict[str, Plugin] = {}
    order: dict[str, int] = {}
    pending = list(plugins)
    while pending:
        item = pending.pop(0)
        if isinstance(item, str) and normalize_plugin_name(item) in found:
            continue
        plugin = item if isinstance(item, Plugin) else discover(item)
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
