"""Typed readers of a model call's ``params`` (elizaOS passes them as a free-form object).

Each takes the value read from ``params`` and the parameter's name, and
returns it as the type the handler needs, converting as ``int()``,
``float()`` and ``list()`` do; a value they cannot convert becomes a
``BadRequest`` naming the parameter instead of a bare ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import SupportsFloat, SupportsIndex, SupportsInt

from shared.errors import BadRequest


def _refused(name: str, expected: str, value: object) -> BadRequest:
    return BadRequest(
        f"{name} must be {expected}; got {type(value).__name__}",
        details={"field": name, "rule": expected},
    )


def as_int(value: object, name: str) -> int:
    """``int(value)`` for a number or a numeric text.

    Raises:
        BadRequest: ``value`` is neither.
    """
    if isinstance(value, str | bytes | SupportsInt | SupportsIndex):
        try:
            return int(value)
        except ValueError as exc:
            raise _refused(name, "an integer", value) from exc
    raise _refused(name, "an integer", value)


def as_float(value: object, name: str) -> float:
    """``float(value)`` for a number or a numeric text.

    Raises:
        BadRequest: ``value`` is neither.
    """
    if isinstance(value, str | bytes | SupportsFloat | SupportsIndex):
        try:
            return float(value)
        except ValueError as exc:
            raise _refused(name, "a number", value) from exc
    raise _refused(name, "a number", value)


def as_list(value: object, name: str) -> list[object]:
    """``list(value)`` for any iterable (a list, a tuple, ...).

    Raises:
        BadRequest: ``value`` is not iterable.
    """
    if isinstance(value, Iterable):
        return list(value)
    raise _refused(name, "a list", value)


def as_strings(value: object, name: str) -> list[str]:
    """``value``'s items as texts (``None`` or empty: no items).

    Raises:
        BadRequest: ``value`` is not iterable.
    """
    return [str(item) for item in as_list(value or [], name)]


def as_choices(value: object, name: str) -> dict[str, list[str]]:
    """A mapping of field names to the words each may hold (``None`` or empty: none).

    Raises:
        BadRequest: ``value`` is not a mapping of lists.
    """
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise _refused(name, "an object of lists", value)
    return {str(field): as_strings(words, f"{name}.{field}") for field, words in value.items()}
