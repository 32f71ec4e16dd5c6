"""The AsyncAPI document: valid AsyncAPI 3.0, one channel for every subject family.

Validated against the official AsyncAPI 3.0.0 JSON Schema (``@asyncapi/specs``,
vendored in tests/fixtures, see its NOTICE), and checked against the code it
describes: every subject builder of ``contracts.subjects.Subjects`` has a channel,
every message a channel carries, every contract Struct a schema, and each
schema requires exactly what the services require to decode it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

import contracts
from contracts import HandleMessage
from contracts.memory import OPERATIONS
from contracts.message import Message
from contracts.schema import MESSAGES, asyncapi, catalogue
from contracts.subjects import Subjects

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SUBJECTS = Subjects("eliza")
DOCUMENT = asyncapi(SUBJECTS, version="1.2.3")

# A sample for each argument a subject builder takes; a builder with a new
# argument fails the coverage test until it is named here.
SAMPLES: dict[str, str] = {
    "agent_id": "a1",
    "operation": next(iter(OPERATIONS)),
    "event_type": "run.started",
    "name": "CLOCK",
    "priority": "normal",
    "queue": "evaluator",
    "run_id": "r1",
    "what": "chunk",
    "replica_id": "replica1",
    "command": "start",
    "source": "webhook",
    "owner": "gateway",
}
NOT_SUBJECTS = {"namespace", "owned_run_id"}
"""Members of ``Subjects`` that build no subject (an owned run id is an id)."""


def builders() -> dict[str, str]:
    """Every subject or subscription filter ``Subjects`` builds, by member name, for the samples."""
    built: dict[str, str] = {}
    for name, member in inspect.getmembers(Subjects):
        if name.startswith("_") or name in NOT_SUBJECTS or name.endswith("_stream"):
            continue
        if isinstance(member, property):
            built[name] = getattr(SUBJECTS, name)
        elif inspect.isfunction(member):
            arguments = [p for p in inspect.signature(member).parameters if p != "self"]
            built[name] = getattr(SUBJECTS, name)(*(SAMPLES[a] for a in arguments))
    # NATS's own API subjects ($JS.API..., a permission to create a consumer) are
    # not the stack's channels: the AsyncAPI document describes the stack's.
    return {name: subject for name, subject in built.items() if not subject.startswith("$")}


def overlaps(subject: str, address: str) -> bool:
    """Whether a NATS subject or filter (``*``, ``>``) meets a channel address (``{param}``).

    A parameter stands for one token, as a NATS ``*`` does.
    """
    tokens, pattern = subject.split("."), address.split(".")
    for i, part in enumerate(tokens):
        if part == ">":
            return len(pattern) > i
        if i >= len(pattern):
            return False
        if part not in {"*", pattern[i]} and not re.fullmatch(r"\{\w+\}", pattern[i]):
            return False
    return len(tokens) == len(pattern)


def test_the_document_is_valid_asyncapi_3() -> None:
    schema = json.loads((FIXTURES / "asyncapi-3.0.0.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(DOCUMENT)


def test_the_validator_rejects_what_asyncapi_3_forbids() -> None:
    schema = json.loads((FIXTURES / "asyncapi-3.0.0.schema.json").read_text())
    broken = {**DOCUMENT, "channels": {"x": {"address": 7}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_reference_in_the_document_resolves() -> None:
    refs = _refs(DOCUMENT)
    assert refs
    for ref in refs:
        target: Any = DOCUMENT
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        assert isinstance(target, dict), ref


@pytest.mark.parametrize(("builder", "subject"), sorted(builders().items()))
def test_every_subject_builder_has_a_channel(builder: str, subject: str) -> None:
    addresses = [channel["address"] for channel in DOCUMENT["channels"].values()]
    assert any(overlaps(subject, address) for address in addresses), (builder, subject)


def test_the_builders_cover_every_family_the_issue_names() -> None:
    names = set(builders())
    assert {"run", "event", "outbound", "provider_get", "action_invoke", "embedding_queue"} <= names
    assert "agents_changed" in names


def test_the_coverage_check_finds_a_subject_without_channel() -> None:
    addresses = [channel["address"] for channel in DOCUMENT["channels"].values()]
    assert not any(overlaps("eliza.nobody.listens", address) for address in addresses)
    assert overlaps("eliza.event.a1.>", "eliza.event.{agent_id}.{domain}.{name}")
    assert not overlaps("eliza.run.r1.chunk", "eliza.run.{owner}.{run_id}.chunk")


def test_every_exported_message_belongs_to_a_channel() -> None:
    carried = {name for channel in DOCUMENT["channels"].values() for name in channel["messages"]}
    assert set(DOCUMENT["components"]["messages"]) == carried
    assert {m.__name__ for m in MESSAGES} <= carried


def _struct_classes() -> list[type[msgspec.Struct]]:
    found = []
    for module in pkgutil.iter_modules(contracts.__path__):
        loaded = importlib.import_module(f"contracts.{module.name}")
        found += [
            value
            for value in vars(loaded).values()
            if inspect.isclass(value)
            and issubclass(value, msgspec.Struct)
            and value.__module__ == loaded.__name__
        ]
    return found


def test_every_contract_struct_is_reachable_from_the_catalogue() -> None:
    defined = set(catalogue()["$defs"])
    structs = _struct_classes()
    missing = [
        f"{struct.__module__}.{struct.__name__}"
        for struct in structs
        # Bases (Message, Event, Record, ...) have no wire form of their own; the
        # schema module's Operation describes the document, not the wire.
        if not struct.__subclasses__()
        and struct.__module__ != "contracts.schema"
        and struct.__name__ not in defined
    ]
    assert missing == []


def test_every_tagged_message_in_contracts_is_catalogued() -> None:
    tagged = {s for s in _struct_classes() if issubclass(s, Message) and not s.__subclasses__()}
    assert tagged <= set(MESSAGES)


def _required_to_decode(message: type[Message]) -> set[str]:
    return {field.encode_name for field in msgspec.structs.fields(message) if field.required}


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.__name__)
def test_the_schema_requires_exactly_what_decoding_requires(message: type[Message]) -> None:
    schema = catalogue()["$defs"][message.__name__]
    assert set(schema.get("required", [])) == _required_to_decode(message)


def test_a_body_without_its_type_tag_is_valid_as_the_services_accept_it() -> None:
    body = {"entity_id": "u1", "room_id": "r1", "content": {"text": "hello"}}
    assert msgspec.convert(body, HandleMessage).room_id == "r1"
    root = catalogue()
    jsonschema.Draft202012Validator({**root, "$ref": "#/$defs/HandleMessage"}).validate(body)
