"""More of the product page's elizaOS call forms, written as elizaOS writes them.

``setSetting(key, value, secret)``, ``useModel(type, {..., onStreamChunk})``,
the ``SMALL``/``MEDIUM``/``LARGE`` model aliases and ``ensureConnection({...,
userId})`` (elizaOS 1.7.2 ``runtime.ts``; ``../shared/reference/elizaos-runtime.md``).
"""

from __future__ import annotations

import pytest

from shared.agent.runtime import AgentRuntime
from shared.agent.types import ModelType
from shared.agent.worlds import Role, role_in
from shared.errors import BadRequest
from tests.scripted import ScriptedModel


async def test_a_secret_setting_goes_to_the_characters_secrets_and_wins_over_settings(
    runtime: AgentRuntime,
) -> None:
    runtime.set_setting("API_KEY", "plain")
    runtime.set_setting("API_KEY", "sealed", True)

    assert runtime.character.secrets["API_KEY"] == "sealed"
    assert runtime.get_setting("API_KEY") == "sealed"
    assert runtime.settings["API_KEY"] == "plain"


def test_a_secret_that_is_not_a_scalar_is_refused_naming_it(runtime: AgentRuntime) -> None:
    with pytest.raises(BadRequest) as refused:
        runtime.set_setting("TOKENS", ["a", "b"], secret=True)
    assert refused.value.details["field"] == "TOKENS"
    assert "TOKENS" not in runtime.character.secrets


@pytest.mark.parametrize("key", ["on_stream_chunk", "onStreamChunk"])
async def test_a_stream_callback_inside_the_params_receives_the_chunks(
    runtime: AgentRuntime, model: ScriptedModel, key: str
) -> None:
    model.default = "streamed in pieces"
    chunks: list[str] = []

    async def on_chunk(chunk: str, message_id: str | None) -> None:
        chunks.append(chunk)

    text = await runtime.use_model("TEXT_LARGE", {"prompt": "say it", key: on_chunk})

    assert chunks
    assert "".join(chunks) == text
    assert key not in model.params[-1]  # the handler gets no callables


@pytest.mark.parametrize(
    ("alias", "member"),
    [
        ("SMALL", ModelType.TEXT_SMALL),
        ("MEDIUM", ModelType.TEXT_LARGE),
        ("LARGE", ModelType.TEXT_LARGE),
    ],
)
async def test_the_legacy_model_aliases_call_the_text_models(
    runtime: AgentRuntime, model: ScriptedModel, alias: str, member: ModelType
) -> None:
    assert ModelType.of(alias) is member
    assert ModelType[alias] is member
    model.default = "aliased"

    assert await runtime.use_model(alias, {"prompt": "hello"}) == "aliased"
    assert runtime.get_model(alias) is runtime.get_model(member)
    assert list(ModelType).count(member) == 1  # aliases are not new types


async def test_ensure_connection_with_a_user_id_makes_that_user_the_worlds_owner(
    runtime: AgentRuntime,
) -> None:
    await runtime.ensure_connection(
        entity_id="u1", room_id="r1", world_id="w1", user_id="u1", source="discord"
    )

    world = await runtime.get_world("w1")
    assert world is not None
    assert world.metadata["ownership"] == {"owner_id": "u1"}
    assert role_in(world, "u1") is Role.OWNER
    assert role_in(world, "someone-else") is Role.NONE
