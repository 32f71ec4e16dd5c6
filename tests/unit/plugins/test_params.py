"""Model-call parameters read as the types the plugins need; a wrong one is a typed error."""

from __future__ import annotations

import pytest

from shared.errors import BadRequest
from shared.plugins.params import as_choices, as_float, as_int, as_list, as_strings


def test_numbers_convert_as_int_and_float_do() -> None:
    assert as_int(7, "n") == 7
    assert as_int("12", "max_tokens") == 12
    assert as_int(3.9, "n") == 3
    assert as_float("0.5", "temperature") == 0.5
    assert as_float(1, "top_p") == 1.0


@pytest.mark.parametrize("value", [None, [1], {"a": 1}, "many"])
def test_a_value_that_is_not_a_number_is_a_bad_request_naming_the_parameter(value: object) -> None:
    with pytest.raises(BadRequest) as raised:
        as_int(value, "max_tokens")
    assert raised.value.details["field"] == "max_tokens"
    with pytest.raises(BadRequest) as raised:
        as_float(value, "temperature")
    assert raised.value.details["field"] == "temperature"


def test_lists_take_any_iterable_and_refuse_a_scalar() -> None:
    assert as_list(("a", "b"), "stop") == ["a", "b"]
    with pytest.raises(BadRequest, match="tokens must be a list; got int"):
        as_list(5, "tokens")


def test_strings_read_none_as_no_items_and_every_item_as_text() -> None:
    assert as_strings(None, "xml_fields") == []
    assert as_strings(["thought", "text"], "xml_fields") == ["thought", "text"]


def test_choices_are_lists_of_words_by_field_and_a_non_mapping_is_refused() -> None:
    assert as_choices(None, "choices") == {}
    assert as_choices({"actions": ["REPLY", "IGNORE"], "providers": None}, "choices") == {
        "actions": ["REPLY", "IGNORE"],
        "providers": [],
    }
    with pytest.raises(BadRequest) as raised:
        as_choices(["REPLY"], "choices")
    assert raised.value.details["field"] == "choices"
    with pytest.raises(BadRequest) as raised:
        as_choices({"actions": 3}, "choices")
    assert raised.value.details["field"] == "choices.actions"
