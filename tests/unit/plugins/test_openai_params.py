"""A model call with a parameter of the wrong type fails naming it, and sends nothing."""

from __future__ import annotations

import pytest

from elizamesh import AgentRuntime, ModelType
from shared.errors import BadRequest
from tests.fake_openai import FakeOpenAI


@pytest.mark.parametrize(
    ("model_type", "params", "field"),
    [
        (ModelType.TEXT_SMALL, {"prompt": "hi", "max_tokens": [20]}, "max_tokens"),
        (ModelType.TEXT_SMALL, {"prompt": "hi", "xml_fields": 5}, "xml_fields"),
        (ModelType.TEXT_SMALL, {"prompt": "hi", "xml_fields": ["text"], "choices": 1}, "choices"),
        (ModelType.OBJECT_SMALL, {"prompt": "hi", "schema": "not a schema"}, "schema"),
        (ModelType.TEXT_TO_SPEECH, {"text": "hi", "format": "midi"}, "format"),
    ],
)
async def test_a_parameter_of_the_wrong_type_is_a_bad_request_naming_it(
    fake: FakeOpenAI,
    runtime: AgentRuntime,
    model_type: ModelType,
    params: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(BadRequest) as raised:
        await runtime.use_model(model_type, params)
    assert raised.value.details["field"] == field
    assert fake.chat_requests() == []
