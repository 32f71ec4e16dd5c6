"""The OpenAI plugin reads an embeddings body itself (msgspec) and says when it is not one."""

from __future__ import annotations

import pytest

from elizamesh import AgentRuntime, ModelType
from shared.plugins.openai import EmbeddingShapeError
from tests.fake_openai import FakeOpenAI


async def test_an_embeddings_answer_without_vectors_is_a_typed_error(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    fake.embedding = lambda text, dims: None
    with pytest.raises(EmbeddingShapeError, match=r"something else than embeddings .*\$\.data"):
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "Paris"})
    fake.embedding = None
    assert len(await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": "Paris"})) > 0


async def test_a_batch_of_vectors_comes_back_in_the_order_of_the_texts(
    fake: FakeOpenAI, runtime: AgentRuntime
) -> None:
    runtime.set_setting("OPENAI_EMBEDDING_DIMENSIONS", "4")
    vectors = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"texts": ["b", "a"]})
    assert vectors == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    assert all(isinstance(x, float) for v in vectors for x in v)
