"""Reading the XML that models are asked to answer in, forgivingly.

Models wrap answers in code fences, forget closing tags, or chat before the
XML; ``parse_key_value_xml`` takes what it can and says None only when there
is nothing to take.
"""

from __future__ import annotations

import html
import re

_LIST_KEYS = frozenset({"actions", "providers", "evaluators"})
_BOOL_KEYS = frozenset({"simple", "is_finish", "isFinish"})
_RESPONSE = re.compile(r"<response>(.*?)(?:</response>|$)", re.DOTALL)
_CHILD = re.compile(r"<([A-Za-z_][\w-]*)>(.*?)</\1>", re.DOTALL)
_UNCLOSED = re.compile(r"<([A-Za-z_][\w-]*)>(?!.*</\1>)(.*)$", re.DOTALL)

XmlValue = str | list[str] | bool


def parse_key_value_xml(text: str) -> dict[str, XmlValue] | None:
    """Return the direct children of ``<response>`` (or of the text) as a dict, or None.

    ``actions``, ``providers`` and ``evaluators`` are split on commas;
    ``simple`` and ``isFinish`` become booleans; entities are unescaped. A
    last tag left open (a reply cut short) is taken up to the end.
    """
    match = _RESPONSE.search(text)
    body = match.group(1) if match else text
    fields: dict[str, XmlValue] = {}
    for key, raw in _CHILD.findall(body):
        fields.setdefault(key, _value(key, raw))
    rest = _CHILD.sub("", body)
    if (unclosed := _UNCLOSED.search(rest)) and unclosed.group(1) not in fields:
        fields[unclosed.group(1)] = _value(unclosed.group(1), unclosed.group(2))
    return fields or None


def _value(key: str, raw: str) -> XmlValue:
    text = html.unescape(raw.strip())
    if key in _LIST_KEYS:
        return [item.strip() for item in text.split(",") if item.strip()]
    if key in _BOOL_KEYS:
        return text.lower() == "true"
    return text


class TextTagStreamer:
    """Pass on only what a streamed reply writes inside ``<text>...</text>``.

    Feed it chunks of the model's XML as they arrive; it returns the part of
    each that belongs to the text, holding back a possible partial tag.
    """

    _OPEN = "<text>"
    _CLOSE = "</text>"

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._done = False
        self.streamed = ""

    def feed(self, chunk: str) -> str:
        """Return the text to pass on for this chunk (maybe empty)."""
        if self._done:
            return ""
        self._buffer += chunk
        if not self._inside:
            start = self._buffer.find(self._OPEN)
            if start < 0:
                self._buffer = self._buffer[-len(self._OPEN) :]
                return ""
            self._inside = True
            self._buffer = self._buffer[start + len(self._OPEN) :]
        end = self._buffer.find(self._CLOSE)
        if end >= 0:
            out, self._done = self._buffer[:end], True
            self._buffer = ""
        else:
            keep = _partial_suffix(self._buffer, self._CLOSE)
            out, self._buffer = (
                self._buffer[: len(self._buffer) - keep],
                self._buffer[len(self._buffer) - keep :],
            )
        self.streamed += out
        return out

    @property
    def complete(self) -> bool:
        """True once ``</text>`` has been seen."""
        return self._done


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
