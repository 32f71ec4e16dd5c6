"""The storage edge: what is written is checked by the rules that read it back.

msgspec checks a Struct when it is decoded, never when Python constructs it,
so a record built in-process can hold what no later read accepts (a
150,000-character text, an e-mail address as an id): stored, it would make
every read of its room fail. Every storage operation therefore passes its
arguments through ``edge_value`` first: a ``uuid.UUID`` becomes its canonical
text, and a record is re-checked (encoded and decoded by its own type), or
refused with ``BadRequest`` naming the field and the rule.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Concatenate, ParamSpec, TypeVar

import msgspec

from contracts.message import ID_PATTERN, is_id, plain_id
from shared.errors import BadRequest

StructT = TypeVar("StructT", bound=msgspec.Struct)

_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def invalid(what: str, exc: msgspec.ValidationError | TypeError) -> BadRequest:
    """Return the ``BadRequest`` for a ``what`` that breaks a rule; its details name the field."""
    message = str(exc)
    found = _PATH.search(message)
    field = found["path"] if found else ""
    rule = _PATH.sub("", message)
    return BadRequest(
        f"{what} not stored: {field or 'value'}: {rule}",
        details={"field": field, "rule": rule},
    )


def checked(value: StructT) -> StructT:
    """Return ``value`` as its type reads it back (ids as text), or raise ``BadRequest``.

    A text holding the NUL character is refused too: Postgres stores it neither
    in text nor in JSON, so SQLite alone would keep it.
    """
    try:
        data = msgspec.to_builtins(value)
        if b"\\u0000" in msgspec.json.encode(data) and (where := _nul_at(data)) is not None:
            raise BadRequest(
                f"{type(value).__name__} not stored: {where}: the NUL character cannot be stored",
                details={"field": where, "rule": "no NUL character"},
            )
        return msgspec.convert(data, type(value))
    except (msgspec.ValidationError, TypeError) as exc:
        raise invalid(type(value).__name__, exc) from None


def _nul_at(data: object, path: str = "") -> str | None:
    """The path of the first string (or key) in ``data`` holding a NUL character, if any."""
    if isinstance(data, str):
        return path if "\x00" in data else None
    if isinstance(data, dict):
        for key, item in data.items():
            inner = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return inner
            if (found := _nul_at(item, inner)) is not None:
                return found
        return None
    if isinstance(data, list):
        for index, item in enumerate(data):
            if (found := _nul_at(item, f"{path}[{index}]")) is not None:
                return found
    return None


def check_id(value: object, field: str) -> str:
    """Return ``value`` (a ``uuid.UUID`` as text) if it is a valid id, else raise ``BadRequest``."""
    plain = plain_id(value)
    if not isinstance(plain, str) or not is_id(plain):
        raise BadRequest(
            f"{field} must match {ID_PATTERN}; got {str(plain)[:80]!r}",
            details={"field": field, "rule": f"pattern {ID_PATTERN}"},
        )
    return plain


def edge_value(value: object, name: str = "argument") -> object:
    """One argument of a storage operation, as it may be used: UUIDs as text, records checked.

    Raises:
        BadRequest: a record breaking a rule, or a text holding the NUL
            character (no database compares or stores it alike).
    """
    if isinstance(value, msgspec.Struct):
        return checked(value)
    if isinstance(value, list | tuple):
        return [edge_value(v, name) for v in value]
    if isinstance(value, str) and "\x00" in value:
        raise BadRequest(
            f"{name} holds the NUL character, which cannot be stored or searched",
            details={"field": name, "rule": "no NUL character"},
        )
    return plain_id(value)


T = TypeVar("T")
SelfT = TypeVar("SelfT")
P = ParamSpec("P")


def at_the_edge(
    operation: Callable[Concatenate[SelfT, P], Coroutine[object, object, T]],
) -> Callable[Concatenate[SelfT, P], Coroutine[object, object, T]]:
    """Decorate a storage operation so that every argument goes through ``edge_value``.

    The decorated method keeps its signature for type checkers and callers;
    ``tests/unit/test_storage_edge.py`` checks every operation of ``SqlAdapter``
    is decorated.
    """
    # Called with the arguments in their stored form (ids as text, records
    # re-checked), which is what its annotations accept after normalising.
    with_stored_forms: Callable[..., Awaitable[T]] = operation

    @functools.wraps(operation)
    async def edge(self: SelfT, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await with_stored_forms(
            self,
            *(edge_value(a) for a in args),
            **{k: edge_value(v, k) for k, v in kwargs.items()},
        )

    return edge
