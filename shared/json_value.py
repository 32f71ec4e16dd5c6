"""``JsonValue``: what a JSON document decodes to, as a recursive type."""

from __future__ import annotations

from typing import TypeAlias

JsonValue: TypeAlias = str | int | float | bool | list["JsonValue"] | dict[str, "JsonValue"] | None
"""A JSON value: a scalar, a list of values, or an object of values by key."""

JsonObject: TypeAlias = dict[str, JsonValue]
"""A JSON object (what ``{...}`` decodes to)."""
