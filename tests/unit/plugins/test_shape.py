"""The answer shape as a JSON schema, and JSON answers turned into the pipeline's XML."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.agent.xml import parse_key_value_xml
from shared.plugins.shape import XmlFromJson, as_json_prompt, response_schema, without_system


def convert(text: str, size: int) -> str:
    converter = XmlFromJson()
    pieces = [converter.feed(text[i : i + size]) for i in range(0, len(text), size)]
    return "".join(pieces) + converter.close()


def test_the_schema_limits_choices_and_drops_a_list_with_nothing_to_choose() -> None:
    schema = response_schema(
        ["thought", "actions", "providers", "text", "isFinish"],
        {"actions": ["REPLY", "IGNORE"], "providers": []},
    )
    assert list(schema["properties"]) == ["thought", "actions", "text", "isFinish"]
    assert schema["properties"]["actions"] == {
        "type": "array",
        "items": {"type": "string", "enum": ["REPLY", "IGNORE"]},
        "minItems": 1,
    }
    assert schema["properties"]["isFinish"] == {"type": "boolean"}
    assert schema["required"] == list(schema["properties"])
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_json_becomes_the_same_xml_in_any_pieces(size: int) -> None:
    text = (
        '{"thought": "a \\"b\\" & <c>\\n\\u00e9\\ud83d\\ude00", "actions": ["REPLY", "MUTE_ROOM"],'
        ' "providers": [], "isFinish": true, "n": 12, "parameters": {"a": [1, "}"]}}'
    )
    xml = convert(text, size)
    assert xml == (
        "<response><thought>a &quot;b&quot; &amp; &lt;c&gt;\n\u00e9\U0001f600</thought>".replace(
            "&quot;", '"'
        )
        + "<actions>REPLY, MUTE_ROOM</actions><providers></providers><isFinish>true</isFinish>"
        '<n>12</n><parameters>{"a": [1, "}"]}</parameters></response>'
    )
    parsed = parse_key_value_xml(xml) or {}
    assert parsed["actions"] == ["REPLY", "MUTE_ROOM"]
    assert parsed["thought"] == 'a "b" & <c>\n\u00e9\U0001f600'
    assert json.loads(str(parsed["parameters"])) == {"a": [1, "}"]}


@given(st.dictionaries(st.sampled_from(["thought", "text", "name"]), st.text(), min_size=1))
def test_any_string_fields_read_back_as_they_were(fields: dict[str, str]) -> None:
    parsed = parse_key_value_xml(convert(json.dumps(fields), 3)) or {}
    assert parsed == {k: v.strip() for k, v in fields.items()}


def test_an_answer_that_is_not_json_passes_through() -> None:
    assert convert("  <response><text>hi</text></response>", 4) == (
        "  <response><text>hi</text></response>"
    )


def test_the_xml_example_becomes_a_line_naming_the_json_keys() -> None:
    prompt = "<task>t</task>\n<output>\nRespond using XML:\n<response/>\n</output>"
    rewritten = as_json_prompt(prompt, response_schema(["thought", "text"], {}))
    assert rewritten == (
        "<task>t</task>\n<output>\n"
        "Respond with one JSON object with the keys thought, text, in that order.\n</output>"
    )


def test_the_system_prompt_is_taken_out_of_the_prompt_once() -> None:
    assert without_system("Be kind.\n# About A\nBe kind.", "Be kind.") == "# About A\nBe kind."
    assert without_system("no system here", "Be kind.") == "no system here"
    assert without_system("anything", "") == "anything"
