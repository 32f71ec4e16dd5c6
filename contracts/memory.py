"""The memory service's messages, derived from the ``StorageOperations`` Protocol.

Every storage operation ``op`` is served on ``<ns>.memory.<op>``. Its request
carries the operation's parameters plus ``for_agent`` (whose data it is); its
reply is ``<Op>Result`` with the return value in ``value``, or an ``Error``.
Deriving both from the Protocol's signatures means the in-process adapter,
the service and the client can never disagree on a parameter.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, cast

import msgspec
from msgspec import Meta

from contracts.message import Id, Message
from contracts.storage import StorageOperations


class MemoryRequest(Message, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Base of every memory-service request."""

    for_agent: Annotated[Id, Meta(description="The agent whose data this request touches.")]


class MemoryResult(Message, kw_only=True, frozen=True):
    """Base of every memory-service reply."""

    if typing.TYPE_CHECKING:
        # Each generated ``<Op>Result`` declares ``value`` with the operation's
        # return type; readers that handle any operation see it as ``object``.
        value: object


@dataclass(frozen=True, slots=True)
class MemoryOperation:
    """One storage operation as it travels: its name, messages and parameters."""

    name: str
    request: type[MemoryRequest]
    result: type[MemoryResult]
    signature: inspect.Signature
    summary: str

    @property
    def parameters(self) -> list[str]:
        """Names of the operation's parameters, in signature order (without ``self``)."""
        return list(self.signature.parameters)[1:]


def _camel(name: str) -> str:
    return "".join(word.title() for word in name.split("_"))


def _operation(name: str, method: Callable[..., object]) -> MemoryOperation:
    hints = typing.get_type_hints(method, include_extras=True)
    signature = inspect.signature(method)
    fields: list[tuple[str, object] | tuple[str, object, object]] = []
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.default is inspect.Parameter.empty:
            fields.append((parameter.name, hints[parameter.name]))
        else:
            fields.append((parameter.name, hints[parameter.name], parameter.default))
    summary = inspect.getdoc(method) or name
    request = cast(
        "type[MemoryRequest]",
        msgspec.defstruct(
            f"{_camel(name)}Request",
            fields,
            bases=(MemoryRequest,),
            tag=f"memory.{name}.v1",
            kw_only=True,
            frozen=True,
            forbid_unknown_fields=True,
            module=__name__,
        ),
    )
    result = cast(
        "type[MemoryResult]",
        msgspec.defstruct(
            f"{_camel(name)}Result",
            [("value", hints["return"])],
            bases=(MemoryResult,),
            tag=f"memory.{name}.result.v1",
            kw_only=True,
            frozen=True,
            module=__name__,
        ),
    )
    request.__doc__ = summary
    result.__doc__ = f"The reply to {name}: its return value."
    return MemoryOperation(name, request, result, signature, summary)


OPERATIONS: dict[str, MemoryOperation] = {
    name: _operation(name, method)
    for name, method in vars(StorageOperations).items()
    if inspect.iscoroutinefunction(method)
}
"""Every memory-service operation by name, in the Protocol's order."""
