"""The answer shapes the pipeline asks model plugins for, as a JSON schema and back to XML.

The pipeline asks for XML (``xml_fields``, with ``choices`` for fields limited
to fixed words) and reads it with ``shared.agent.xml``. A server with
structured output (OpenAI's ``response_format``; llama.cpp, vLLM and Ollama
have it too) can be held to a JSON schema instead, which even a 135M model
cannot break: ``response_schema`` writes that schema, and ``XmlFromJson``
turns the JSON answer, as it streams, into the XML the pipeline reads.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import TypedDict

LIST_FIELDS = frozenset({"actions", "providers", "evaluators"})
"""Fields the pipeline reads as comma-separated lists (as ``shared.agent.xml`` does)."""

BOOL_FIELDS = frozenset({"simple", "isFinish", "is_finish"})
"""Fields the pipeline reads as booleans."""


class AnswerSchema(TypedDict):
    """The JSON schema of an answer object (``response_schema``)."""

    type: str
    properties: dict[str, dict[str, object]]
    required: list[str]
    additionalProperties: bool


def response_schema(fields: Sequence[str], choices: Mapping[str, Sequence[str]]) -> AnswerSchema:
    """Return the JSON schema of an answer with ``fields``, in order.

    A field in ``choices`` may hold only those words (a list field: a list of
    them, at least one for ``actions``); a list field whose choices are empty
    has nothing to choose from and is left out. The schema is valid for
    OpenAI's strict mode: every property required, no others allowed.
    """
    properties: dict[str, dict[str, object]] = {}
    for name in fields:
        options = [str(o) for o in choices.get(name) or []]
        if name in LIST_FIELDS:
            if name in choices and not options:
                continue
            items: dict[str, object] = (
                {"type": "string", "enum": options} if options else {"type": "string"}
            )
            properties[name] = {"type": "array", "items": items}
            if name == "actions":
                properties[name]["minItems"] = 1
        elif name in BOOL_FIELDS:
            properties[name] = {"type": "boolean"}
        elif options:
            properties[name] = {"type": "string", "enum": options}
        else:
            properties[name] = {"type": "string"}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_HIGH_SURROGATES = range(0xD800, 0xDC00)
_LOW_SURROGATES = range(0xDC00, 0xE000)
_HEX_DIGITS = 4
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}


class XmlFromJson:
    """Turn a flat JSON object, fed in pieces, into ``<response><key>value</key>...</response>``.

    Strings are unescaped and XML-escaped as they arrive (so a streamed
    ``text`` streams), lists are joined with ", ", booleans are ``true`` or
    ``false``, a nested value is kept as its JSON text. An answer that does
    not start with ``{`` (a server that ignored the schema) passes through
    unchanged. What an answer cut short leaves open stays open: the XML
    reader takes a last unclosed field up to the end.
    """

    def __init__(self) -> None:
        self._state = "start"
        self._key = ""
        self._scalar = ""
        self._in_list = False
        self._items = 0
        self._unicode = ""
        self._high_surrogate: int | None = None
        self._depth = 0
        self._raw_string = False
        self._raw_escape = False
        self._lead = ""
        self.passthrough = False

    def feed(self, chunk: str) -> str:
        """Return the XML for this piece of JSON (maybe empty)."""
        if self.passthrough:
            return chunk
        out: list[str] = []
        for index, char in enumerate(chunk):
            if self._state == "start" and char.isspace():
                self._lead += char
                continue
            if self._state == "start" and char != "{":
                self.passthrough = True
                out.append(self._lead + chunk[index:])
                break
            self._step(char, out)
        return "".join(out)

    def close(self) -> str:
        """Return what ends the XML: a scalar still being read when the answer stopped."""
        if self._state == "scalar":
            out: list[str] = []
            self._end_scalar(out)
            return "".join(out)
        return ""

    def _step(self, char: str, out: list[str]) -> None:  # noqa: PLR0912 - one state machine
        state = self._state
        if state == "start":
            if char == "{":
                out.append("<response>")
                self._state = "key_or_end"
        elif state == "key_or_end":
            if char == '"':
                self._key, self._state = "", "key"
            elif char == "}":
                out.append("</response>")
                self._state = "done"
        elif state == "key":
            if char == '"':
                self._state = "colon"
            else:
                self._key += char
        elif state == "colon":
            if char == ":":
                self._state = "value"
        elif state == "value":
            self._value(char, out)
        elif state in {"string", "escape", "unicode"}:
            self._string(char, out)
        elif state == "list":
            if char == '"':
                if self._items:
                    out.append(", ")
                self._items += 1
                self._state = "string"
            elif char == "]":
                out.append(f"</{self._key}>")
                self._in_list, self._state = False, "key_or_end"
            elif not char.isspace() and char != ",":
                if self._items:
                    out.append(", ")
                self._items += 1
                self._scalar, self._state = char, "scalar"
        elif state == "scalar":
            if char in ",}]" or char.isspace():
                self._end_scalar(out)
                self._step(char, out)
            else:
                self._scalar += char
        elif state == "raw":
            self._raw(char, out)

    def _value(self, char: str, out: list[str]) -> None:
        if char.isspace():
            return
        out.append(f"<{self._key}>")
        if char == '"':
            self._state = "string"
        elif char == "[":
            self._in_list, self._items, self._state = True, 0, "list"
        elif char == "{":
            self._depth, self._state = 1, "raw"
            out.append(html.escape(char, quote=False))
        else:
            self._scalar, self._state = char, "scalar"

    def _string(self, char: str, out: list[str]) -> None:
        if self._state == "escape":
            if char == "u":
                self._unicode, self._state = "", "unicode"
                return
            out.append(html.escape(_ESCAPES.get(char, char), quote=False))
            self._state = "string"
        elif self._state == "unicode":
            self._unicode += char
            if len(self._unicode) == _HEX_DIGITS:
                self._state = "string"
                self._code_point(int(self._unicode, 16), out)
        elif char == "\\":
            self._state = "escape"
        elif char == '"':
            if self._in_list:
                self._state = "list"
            else:
                out.append(f"</{self._key}>")
                self._state = "key_or_end"
        else:
            out.append(html.escape(char, quote=False))

    def _code_point(self, code: int, out: list[str]) -> None:
        if code in _HIGH_SURROGATES:
            self._high_surrogate = code
            return
        if self._high_surrogate is not None and code in _LOW_SURROGATES:
            code = (
                0x10000
                + ((self._high_surrogate - _HIGH_SURROGATES[0]) << 10)
                + (code - _LOW_SURROGATES[0])
            )
        self._high_surrogate = None
        out.append(html.escape(chr(code), quote=False))

    def _end_scalar(self, out: list[str]) -> None:
        word = {"true": "true", "false": "false", "null": ""}.get(self._scalar, self._scalar)
        out.append(html.escape(word, quote=False))
        if self._in_list:
            self._state = "list"
        else:
            out.append(f"</{self._key}>")
            self._state = "key_or_end"

    def _raw(self, char: str, out: list[str]) -> None:
        out.append(html.escape(char, quote=False))
        if self._raw_escape:
            self._raw_escape = False
        elif self._raw_string:
            self._raw_escape = char == "\\"
            self._raw_string = char != '"'
        elif char == '"':
            self._raw_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            if self._depth == 0:
                out.append(f"</{self._key}>")
                self._state = "key_or_end"


_OUTPUT = re.compile(r"<output>.*?</output>", re.DOTALL)


def as_json_prompt(prompt: str, schema: Mapping[str, object]) -> str:
    """Return ``prompt`` asking for the JSON answer instead of its XML example.

    The templates end with an ``<output>`` section that shows the XML to
    write; under a JSON schema that example only misleads (a small model
    copies its placeholders), so it becomes a line naming the keys.

    Raises:
        TypeError: ``schema`` has no ``properties`` object (not an object's schema).
    """
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        raise TypeError("the schema of a JSON answer must have properties (an object's schema)")
    keys = ", ".join(str(key) for key in properties)
    note = f"Respond with one JSON object with the keys {keys}, in that order."
    if _OUTPUT.search(prompt):
        return _OUTPUT.sub(lambda _: f"<output>\n{note}\n</output>", prompt, count=1)
    return f"{prompt}\n\n{note}"


def without_system(prompt: str, system: str) -> str:
    """Return ``prompt`` without the character's system prompt, sent on its own already.

    The CHARACTER provider puts the system prompt into the context too; a
    plugin that sends it as the system message drops this copy, so the model
    reads it once.
    """
    system = system.strip()
    if not system or system not in prompt:
        return prompt
    return (
        prompt.replace(system + "\n", "", 1)
        if system + "\n" in prompt
        else prompt.replace(system, "", 1)
    )
