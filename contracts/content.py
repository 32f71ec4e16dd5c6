"""What a message says: its text, attachments, and what the agent thought and did."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from contracts.message import Id, new_id

MAX_TEXT_LENGTH = 100_000
"""Longest text accepted in one message, in characters (NATS payloads are small)."""

Text = Annotated[
    str, Meta(max_length=MAX_TEXT_LENGTH, description="Message text, at most 100,000 characters.")
]


class Media(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """An attachment: an image, a document, a link..."""

    id: Id = msgspec.field(default_factory=new_id)
    url: Annotated[str, Meta(description="Where the attachment can be fetched.")]
    title: str | None = None
    source: str | None = None
    description: Annotated[str | None, Meta(description="What it shows, for the model.")] = None
    text: Annotated[str | None, Meta(description="Its text, for documents.")] = None
    content_type: Annotated[
        Literal["image", "video", "audio", "document", "link"] | None,
        Meta(description="The kind of attachment."),
    ] = None


class MentionContext(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """How a message addresses the agent, as the platform connector saw it."""

    is_mention: bool = False
    is_reply: bool = False
    is_thread: bool = False


class Content(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a message says: its text plus what the agent thought and did."""

    text: Text = ""
    thought: Annotated[str | None, Meta(description="The agent's private reasoning.")] = None
    actions: Annotated[
        list[str], Meta(description="Names of the actions chosen for this message.")
    ] = msgspec.field(default_factory=list)
    providers: Annotated[
        list[str], Meta(description="Names of the providers asked for more context.")
    ] = msgspec.field(default_factory=list)
    source: Annotated[
        str | None, Meta(description="The platform the message came from, e.g. 'discord'.")
    ] = None
    in_reply_to: Annotated[
        Id | None, Meta(description="Id of the message this content answers.")
    ] = None
    simple: Annotated[
        bool | None, Meta(description="True when the text is the whole answer (one model call).")
    ] = None
    target: Annotated[str | None, Meta(description="Who or where to send to.")] = None
    url: str | None = None
    channel_type: Annotated[
        str | None, Meta(description="The kind of room it was said in (DM, GROUP, ...).")
    ] = None
    attachments: Annotated[list[Media], Meta(description="Images, documents, links.")] = (
        msgspec.field(default_factory=list)
    )
    mention_context: MentionContext | None = None
    metadata: Annotated[
        dict[str, Any], Meta(description="Anything else a plugin wants to carry along.")
    ] = msgspec.field(default_factory=dict)
