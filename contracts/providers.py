"""Remote providers and actions: served by other processes, in any language.

A provider service answers ``<ns>.provider.<name>.get`` with ``ProviderOutput``.
The runtime asks all its remote providers in parallel, each with a deadline;
one that is slow or down is reported in the state and the turn goes on.
An action service answers ``<ns>.action.<name>.invoke`` with ``ActionOutput``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from contracts.message import Id, Message
from contracts.records import Memory


class GetProvider(Message, kw_only=True, frozen=True, tag="provider.get.v1"):
    """Ask a provider what it knows that is relevant to this message."""

    agent_id: Annotated[Id, Meta(description="The agent composing its state.")]
    agent_name: str
    message: Annotated[Memory, Meta(description="The message being answered.")]


class ProviderOutput(Message, kw_only=True, frozen=True, tag="provider.output.v1"):
    """What the provider adds to the state: prompt text, template values, raw data."""

    text: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)


class InvokeAction(Message, kw_only=True, frozen=True, tag="action.invoke.v1"):
    """Run a remote action for this message, with the parameters the planner chose."""

    agent_id: Annotated[Id, Meta(description="The agent running the action.")]
    agent_name: str
    message: Annotated[Memory, Meta(description="The message being answered.")]
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class ActionOutput(Message, kw_only=True, frozen=True, tag="action.output.v1"):
    """What a remote action did; ``text`` (if any) is sent to the user."""

    success: bool = True
    text: str = ""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None
