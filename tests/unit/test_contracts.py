"""The wire contracts: round trips, and a schema snapshot that CI diffs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import Content, Error, ErrorCode, HandleMessage, HandleMessageResult, Message
from contracts.schema import MESSAGES, asyncapi, breaking_changes, catalogue
from contracts.subjects import Subjects

SNAPSHOT = Path(__file__).parent / "snapshots" / "messages.schema.json"

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")

SAMPLES: list[Message] = [
    HandleMessage(
        entity_id="u", room_id="r", world_id="w", content=Content(text="hi", source="cli")
    ),
    HandleMessageResult(
        message_id="m", agent_id="a", did_respond=True, response_content=Content(text="yo")
    ),
    Error(code=ErrorCode.NOT_FOUND, message="no such agent", details={"agent_id": "a"}),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_survives_a_json_round_trip_through_the_union(message: Message) -> None:
    union = HandleMessage | HandleMessageResult | Error
    assert msgspec.json.decode(msgspec.json.encode(message), type=union) == message


def test_every_message_carries_its_versioned_tag() -> None:
    for message in MESSAGES:
        tag = message.__struct_config__.tag
        assert isinstance(tag, str)
        assert tag.rsplit(".", 1)[-1].startswith("v"), tag


@given(entity_id=ids, room_id=ids, text=st.text(max_size=200))
def test_any_valid_handle_message_round_trips(entity_id: str, room_id: str, text: str) -> None:
    message = HandleMessage(entity_id=entity_id, room_id=room_id, content=Content(text=text))
    assert msgspec.json.decode(msgspec.json.encode(message), type=HandleMessage) == message


def test_the_schema_snapshot_has_no_breaking_change() -> None:
    old = json.loads(SNAPSHOT.read_text())
    assert breaking_changes(old, catalogue()) == []


def test_the_schema_snapshot_is_up_to_date() -> None:
    current = json.dumps(catalogue(), indent=2) + "\n"
    assert SNAPSHOT.read_text() == current, (
        "the wire changed compatibly; refresh the snapshot with "
        "`.venv/bin/elizamesh schema --out tests/unit/snapshots` and commit it"
    )


def _handle_message_def(schema: dict[str, object]) -> dict[str, object]:
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    return defs["HandleMessage"]  # type: ignore[no-any-return]


def test_removing_or_retyping_a_field_is_breaking() -> None:
    old = catalogue()
    new = copy.deepcopy(old)
    props = _handle_message_def(new)["properties"]
    assert isinstance(props, dict)
    del props["room_id"]
    props["entity_id"] = {"type": "integer"}
    assert sorted(breaking_changes(old, new)) == [
        "HandleMessage.entity_id: type changed",
        "HandleMessage.room_id: removed",
    ]


def test_a_newly_required_field_is_breaking_and_an_optional_one_is_not() -> None:
    old = catalogue()
    optional = copy.deepcopy(old)
    props = _handle_message_def(optional)["properties"]
    assert isinstance(props, dict)
    props["priority"] = {"type": "integer", "default": 0}
    assert breaking_changes(old, optional) == []
    required = copy.deepcopy(optional)
    required_list = _handle_message_def(required)["required"]
    assert isinstance(required_list, list)
    required_list.append("priority")
    assert breaking_changes(old, required) == ["HandleMessage.priority: became required"]


def test_the_asyncapi_document_names_the_subject_and_every_message() -> None:
    doc = asyncapi(Subjects("eliza"), version="1.2.3")
    channel = doc["channels"]["handleMessage"]
    assert channel["address"] == "eliza.agent.{agent_id}.message.handle"
    assert set(channel["messages"]) == {"HandleMessage", "HandleMessageResult", "Error"}
    assert set(doc["components"]["schemas"]) >= {"HandleMessage", "Content", "Error"}
    replies = doc["operations"]["handleMessage"]["reply"]["messages"]
    assert {"$ref": "#/channels/handleMessage/messages/Error"} in replies
