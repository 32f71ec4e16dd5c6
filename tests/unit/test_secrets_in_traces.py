"""Secrets stay out of traces: what leaves the process is scrubbed of every configured secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from elizamesh import AgentRuntime, Character, ModelError, ModelType
from elizamesh.plugins.openai import get_openai_plugin
from shared.telemetry import REDACTED, RedactingSpanExporter, configured_secrets, redact
from tests.fake_openai import Failure, FakeOpenAI, fake_openai_server

KEY = "sk-live-5ecret0123456789abcdef"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with fake_openai_server() as server:
        yield server


@pytest.fixture
def exported() -> InMemorySpanExporter:
    """What the process's exporter sends, behind the redaction ``setup_telemetry`` installs."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    secrets = configured_secrets({"OPENAI_API_KEY": KEY})
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(spans, secrets)))
    return spans


def test_the_configured_secrets_are_keys_passwords_tokens_and_url_passwords() -> None:
    secrets = configured_secrets(
        {
            "OPENAI_API_KEY": KEY,
            "GATEWAY_API_KEYS": "gw-key-1, gw-key-2",
            "NATS_URL": "nats://eliza-runtime:nats-pass-1@nats:4222,nats://u:nats-pass-2@n2:4222",
            "DATABASE_URL": "postgresql://eliza:db-pass@postgres/eliza",
            "SLACK_TOKEN": "xoxb-123",
            "LOG_LEVEL": "INFO",
            "EMPTY_PASSWORD": "",
        }
    )
    assert set(secrets) == {
        KEY,
        "gw-key-1",
        "gw-key-2",
        "nats-pass-1",
        "nats-pass-2",
        "db-pass",
        "xoxb-123",
    }
    assert redact(f"refused {KEY} and db-pass", secrets) == f"refused {REDACTED} and {REDACTED}"
    assert redact(("a", f"x{KEY}"), secrets) == ("a", f"x{REDACTED}")


def test_an_exception_recorded_on_a_span_is_exported_without_the_key() -> None:
    provider = TracerProvider()
    raw, scrubbed = InMemorySpanExporter(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(scrubbed, (KEY,))))
    tracer = provider.get_tracer("test")
    with (
        pytest.raises(RuntimeError),
        tracer.start_as_current_span("model call", attributes={"url": f"http://x/?k={KEY}"}),
    ):
        raise RuntimeError(f"401: Incorrect API key provided: {KEY}")
    [before] = raw.get_finished_spans()
    [after] = scrubbed.get_finished_spans()
    assert KEY in before.to_json()  # what would have left the process
    assert KEY not in after.to_json()
    assert after.events[0].attributes is not None
    assert REDACTED in str(after.events[0].attributes["exception.message"])
    assert after.status.description is not None
    assert REDACTED in after.status.description
    assert after.context == before.context


async def test_a_model_server_echoing_the_key_leaks_it_to_no_span_log_or_error(
    fake: FakeOpenAI,
    exported: InMemorySpanExporter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = AgentRuntime(
        character=Character(name="Assistant"),
        plugins=[get_openai_plugin()],
        settings={
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": fake.url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "TASK_TICK_SECONDS": "3600",
        },
    )
    await runtime.initialize()
    caplog.set_level(logging.DEBUG)
    try:
        fake.script.append(Failure(401, f"Incorrect API key provided: {KEY}."))
        with pytest.raises(ModelError) as caught:
            await runtime.use_model(ModelType.TEXT_SMALL, {"prompt": "hi"})
    finally:
        await runtime.stop()
    assert KEY not in str(caught.value)
    spans = exported.get_finished_spans()
    assert any(event.name == "exception" for span in spans for event in span.events)
    dump = json.dumps([json.loads(span.to_json()) for span in spans])
    assert KEY not in dump
    assert KEY not in caplog.text
