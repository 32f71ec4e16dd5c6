"""Bootstrap pieces about places and people: roles, world settings, contacts, choices.

Roles live in ``world.metadata["roles"]`` (OWNER, ADMIN, NONE by entity id)
and settings in ``world.metadata["settings"]``. Only an OWNER or ADMIN may
change either; an ADMIN cannot make or unmake an OWNER.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

import msgspec

from contracts.records import Component, Memory, World
from shared.agent.prompts import compose_prompt
from shared.agent.turn import current_turn
from shared.agent.types import (
    Action,
    ActionResult,
    Callback,
    HandlerOptions,
    ModelType,
    Provider,
    ProviderResult,
    State,
)
from shared.agent.xml import XmlValue, parse_key_value_xml

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

AWAITING_CHOICE = "AWAITING_CHOICE"

EXTRACT = """\
<task>{{task}}</task>

<providers>
{{providers}}
</providers>

<message>{{message}}</message>

<output>
Respond using XML format like this:
<response>
{{fields}}
</response>
</output>"""


class Role(StrEnum):
    """What an entity may do in a world."""

    OWNER = "OWNER"
    ADMIN = "ADMIN"
    NONE = "NONE"


async def world_of(runtime: AgentRuntime, message: Memory) -> World | None:
    """Return the world the message was said in (through its room), or None.

    Inside a turn for ``message``'s room, the world the turn loaded (no storage call).
    """
    turn = current_turn()
    context = turn.context if turn is not None else None
    if context is not None and context.room.id == message.room_id:
        return context.world
    world_id = message.world_id
    if world_id is None:
        rooms = await runtime.adapter.get_rooms_by_ids([message.room_id])
        world_id = rooms[0].world_id if rooms else None
    return await runtime.adapter.get_world(world_id) if world_id else None


def role_in(world: World, entity_id: str) -> Role:
    """Return ``entity_id``'s role in ``world`` (the owner is always OWNER)."""
    ownership = world.metadata.get("ownership") or {}
    if isinstance(ownership, dict) and ownership.get("owner_id") == entity_id:
        return Role.OWNER
    roles = world.metadata.get("roles") or {}
    value = roles.get(entity_id) if isinstance(roles, dict) else None
    return Role(value) if isinstance(value, str) and value in Role.__members__ else Role.NONE


async def extract(
    runtime: AgentRuntime, message: Memory, state: State, task: str, fields: Sequence[str]
) -> dict[str, XmlValue]:
    """Ask the small model to pull ``fields`` out of the message, as XML tags."""
    template = runtime.character.templates.get("extractTemplate") or EXTRACT
    prompt = compose_prompt(
        template,
        {
            **state.values,
            "task": task,
            "message": message.content.text,
            "fields": "\n".join(f"  <{f}>...</{f}>" for f in fields),
        },
    )
    answer = await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": prompt})
    return dict(parse_key_value_xml(str(answer)) or {})


def _merged(world: World, key: str, changes: Mapping[str, object]) -> World:
    current = world.metadata.get(key) or {}
    metadata = {
        **world.metadata,
        key: {**(current if isinstance(current, dict) else {}), **changes},
    }
    return msgspec.structs.replace(world, metadata=metadata)


# -- actions ---------------------------------------------------------------------


async def update_role(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Give an entity a role, if the requester may."""
    del callback, responses
    world = await world_of(runtime, message)
    if world is None:
        return ActionResult(success=False, error="this room belongs to no world")
    asked = dict(options.parameters) or await extract(
        runtime,
        message,
        state,
        "Which entity gets which role (OWNER, ADMIN or NONE)?",
        ["entityId", "role"],
    )
    target, wanted = str(asked.get("entityId") or ""), str(asked.get("role") or "").upper()
    if not target or wanted not in Role.__members__:
        return ActionResult(
            success=False, error="no entity and role (OWNER, ADMIN, NONE) were given"
        )
    requester, current = role_in(world, message.entity_id), role_in(world, target)
    allowed = requester is Role.OWNER or (
        requester is Role.ADMIN and Role.OWNER not in {Role(wanted), current}
    )
    if not allowed:
        return ActionResult(success=False, error=f"a {requester} cannot make {target} {wanted}")
    await runtime.adapter.update_world(_merged(world, "roles", {target: wanted}))
    return ActionResult(text=f"{target} is now {wanted}", values={"role": wanted})


async def update_settings(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Store a world setting the requester gave (OWNER or ADMIN only)."""
    del callback, responses
    world = await world_of(runtime, message)
    if world is None:
        return ActionResult(success=False, error="this room belongs to no world")
    if role_in(world, message.entity_id) not in {Role.OWNER, Role.ADMIN}:
        return ActionResult(success=False, error="only an OWNER or ADMIN may change settings")
    asked = dict(options.parameters) or await extract(
        runtime, message, state, "Which setting is being set, and to what?", ["key", "value"]
    )
    key, value = str(asked.get("key") or "").strip(), asked.get("value")
    if not key:
        return ActionResult(success=False, error="no setting was named")
    await runtime.adapter.update_world(_merged(world, "settings", {key: value}))
    return ActionResult(text=f"setting {key} updated", values={key: value})


async def update_contact(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Remember a contact detail (a platform and handle) of an entity."""
    del callback, responses
    asked = dict(options.parameters) or await extract(
        runtime,
        message,
        state,
        "What contact detail was shared, for whom?",
        ["entityId", "platform", "handle"],
    )
    entity_id = str(asked.get("entityId") or message.entity_id)
    platform, handle = str(asked.get("platform") or ""), str(asked.get("handle") or "")
    if not platform or not handle:
        return ActionResult(success=False, error="no platform and handle were given")
    existing = await runtime.adapter.get_component(entity_id, "contact")
    if existing is None:
        await runtime.adapter.create_component(
            Component(
                entity_id=entity_id,
                type="contact",
                data={platform: handle},
                source_entity_id=message.entity_id,
            )
        )
    else:
        await runtime.adapter.update_component(
            msgspec.structs.replace(existing, data={**existing.data, platform: handle})
        )
    return ActionResult(text=f"{entity_id}'s {platform} is {handle}")


async def choose_option(
    runtime: AgentRuntime,
    message: Memory,
    state: State,
    options: HandlerOptions,
    callback: Callback | None,
    responses: Sequence[Memory],
) -> ActionResult:
    """Pick one of the options a pending task offers, and run the task with it."""
    del callback, responses
    pending = await runtime.adapter.get_tasks(room_id=message.room_id, tags=[AWAITING_CHOICE])
    if not pending:
        return ActionResult(success=False, error="no task is waiting for a choice here")
    asked = dict(options.parameters) or await extract(
        runtime,
        message,
        state,
        "Which task and which of its options was chosen?",
        ["taskId", "option"],
    )
    task = next((t for t in pending if t.id == asked.get("taskId")), pending[0])
    offered = [str(o.get("name")) for o in task.metadata.get("options", []) if isinstance(o, dict)]
    chosen = str(asked.get("option") or "")
    if chosen not in offered:
        return ActionResult(success=False, error=f"{chosen!r} is not one of {offered}")
    worker = runtime.get_task_worker(task.name)
    if worker is not None:
        await worker.execute(runtime, {**task.metadata, "option": chosen}, task)
    await runtime.adapter.delete_task(task.id)
    return ActionResult(text=f"chose {chosen}", values={"selectedOption": chosen})


# -- providers -------------------------------------------------------------------


async def world_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """The world (server) the conversation is in, and its rooms."""
    del state
    world = await world_of(runtime, message)
    if world is None:
        return ProviderResult()
    rooms = await runtime.adapter.get_rooms_by_world(world.id)
    listed = ", ".join(r.name or r.id for r in rooms)
    return ProviderResult(
        text=f"# World\n{world.name or world.id}; rooms: {listed}",
        values={"worldName": world.name or ""},
    )


async def roles_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """Who holds which role in this world."""
    del state
    world = await world_of(runtime, message)
    roles = (world.metadata.get("roles") or {}) if world else {}
    if not isinstance(roles, dict) or not roles:
        return ProviderResult()
    lines = [f"- {entity}: {role}" for entity, role in sorted(roles.items())]
    return ProviderResult(text="# Roles\n" + "\n".join(lines))


async def settings_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """This world's settings."""
    del state
    world = await world_of(runtime, message)
    settings = (world.metadata.get("settings") or {}) if world else {}
    if not isinstance(settings, dict) or not settings:
        return ProviderResult()
    lines = [f"- {k}: {v}" for k, v in sorted(settings.items())]
    return ProviderResult(
        text="# Settings\n" + "\n".join(lines), values={"settings": dict(settings)}
    )


async def attachments_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """What the message's attachments show or say."""
    del runtime, state
    parts = [
        f"- {a.title or a.url}: {a.description or a.text or a.content_type or ''}".rstrip(": ")
        for a in message.content.attachments
    ]
    return ProviderResult(text="# Attachments\n" + "\n".join(parts) if parts else "")


async def choice_provider(runtime: AgentRuntime, message: Memory, state: State) -> ProviderResult:
    """Tasks in this room waiting for someone to choose an option."""
    del state
    turn = current_turn()
    context = turn.context if turn is not None else None
    if context is not None and context.room.id == message.room_id:
        pending = [t for t in context.tasks if AWAITING_CHOICE in t.tags]
    else:
        pending = await runtime.adapter.get_tasks(room_id=message.room_id, tags=[AWAITING_CHOICE])
    lines = [
        f"- task {t.id} ({t.name}): options "
        + ", ".join(
            str(o.get("name")) for o in t.metadata.get("options", []) if isinstance(o, dict)
        )
        for t in pending
    ]
    return ProviderResult(text="# Waiting for a choice\n" + "\n".join(lines) if lines else "")


WORLD_ACTIONS = (
    Action(
        "UPDATE_ROLE",
        update_role,
        "Give someone a role (OWNER, ADMIN, NONE).",
        similes=("ASSIGN_ROLE",),
    ),
    Action(
        "UPDATE_SETTINGS",
        update_settings,
        "Change a setting of this world.",
        similes=("CONFIGURE",),
    ),
    Action(
        "UPDATE_CONTACT",
        update_contact,
        "Remember someone's contact details.",
        similes=("UPDATE_ENTITY",),
    ),
    Action(
        "CHOOSE_OPTION",
        choose_option,
        "Pick an option for a pending task.",
        similes=("SELECT", "PICK"),
    ),
)

WORLD_PROVIDERS = (
    Provider("WORLD", world_provider, "The world and its rooms", dynamic=True),
    Provider("ROLES", roles_provider, "Roles in this world"),
    Provider("SETTINGS", settings_provider, "This world's settings"),
    Provider("ATTACHMENTS", attachments_provider, "The message's attachments", dynamic=True),
    Provider("CHOICE", choice_provider, "Tasks waiting for a choice"),
)
