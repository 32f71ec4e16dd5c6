"""Subjects are built only from valid ids and a valid namespace."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import InvalidIdError, Subjects, agent_id_of, validate_id

ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")


@given(agent_id=ids)
def test_the_agent_id_is_read_back_from_the_subject_it_built(agent_id: str) -> None:
    subject = Subjects().message_handle(agent_id)
    assert subject == f"eliza.agent.{agent_id}.message.handle"
    assert agent_id_of(subject) == agent_id


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "*", ">", "a" * 65, "é", "a\nb"])
def test_an_id_that_could_break_a_subject_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdError, match="invalid agent_id"):
        Subjects().message_handle(bad)


def test_invalid_id_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid room_id"):
        validate_id("x.y", what="room_id")


@pytest.mark.parametrize("bad", ["", "Eliza", "1eliza", "eli.za", "x" * 33])
def test_a_namespace_must_be_one_lower_case_token(bad: str) -> None:
    with pytest.raises(InvalidIdError, match="invalid namespace"):
        Subjects(bad)


def test_the_namespace_prefixes_subjects_and_names_streams() -> None:
    subjects = Subjects("staging")
    assert subjects.message_handle("a") == "staging.agent.a.message.handle"
    assert subjects.message_handle_template == "staging.agent.*.message.handle"
    assert subjects.events_stream == "STAGING_EVENTS"
    assert subjects.runs_stream == "STAGING_RUNS"


def test_only_agent_subjects_have_an_agent_id() -> None:
    with pytest.raises(InvalidIdError, match="not an agent subject"):
        agent_id_of("eliza.memory.create")
