"""Reading what models answer, forgivingly: the XML they are asked for, and what else comes.

Models wrap answers in code fences, forget closing tags, chat before the XML,
think aloud first (``<think>...</think>``, reasoning models such as DeepSeek-R1
and Qwen3), answer in plain prose (small local models), or answer in JSON
when asked for XML. ``parse_key_value_xml`` takes what it can and says None
only when there is nothing to take; reasoning is never part of an answer.
"""

from __future__ import annotations

import html
import json
import re

_LIST_KEYS = frozenset({"actions", "providers", "evaluators"})
_BOOL_KEYS = frozenset({"simple", "is_finish", "isFinish"})
_RESPONSE = re.compile(r"<response>(.*?)(?:</response>|$)", re.DOTALL)
_CHILD = re.compile(r"<([A-Za-z_][\w-]*)>(.*?)</\1>", re.DOTALL)
_UNCLOSED = re.compile(r"<([A-Za-z_][\w-]*)>(?!.*</\1>)(.*)$", re.DOTALL)
_REASONING = re.compile(r"<(think|thinking)>.*?(?:</\1>|$)", re.DOTALL | re.IGNORECASE)
_REASONING_OPEN = re.compile(r"<(?:think|thinking)>", re.IGNORECASE)
_REASONING_CLOSE = re.compile(r"</(?:think|thinking)>", re.IGNORECASE)
_ORPHAN_CLOSE = re.compile(r"^.*?</(?:think|thinking)>", re.DOTALL | re.IGNORECASE)
_TAG = re.compile(r"</?[A-Za-z_][\w-]*/?>")
_FENCE = re.compile(r"^\s*```[\w-]*\s*$", re.MULTILINE)
_FENCED_JSON = re.compile(r"```(?:json|JSON)?\s*(\{.*?\}|\[.*?\])\s*```", re.DOTALL)

XmlValue = str | list[str] | bool


def strip_reasoning(text: str) -> str:
    """Return ``text`` without its reasoning blocks.

    Removes every ``<think>...</think>`` (or ``<thinking>``) block, a last
    one left open (the model was cut off while thinking), and everything up
    to a ``</think>`` that has no opening tag (some chat templates put the
    opening tag in the prompt, so the answer starts inside the reasoning).
    """
    text = _REASONING.sub("", text)
    return _ORPHAN_CLOSE.sub("", text, count=1)


def parse_key_value_xml(text: str) -> dict[str, XmlValue] | None:
    """Return the direct children of ``<response>`` (or of the text) as a dict, or None.

    Reasoning (``strip_reasoning``) is dropped first, so tags a model writes
    while thinking are never taken for its answer. ``actions``,
    ``providers`` and ``evaluators`` are split on commas; ``simple`` and
    ``isFinish`` become booleans; entities are unescaped. A last tag left
    open (a reply cut short) is taken up to the end.
    """
    text = strip_reasoning(text)
    match = _RESPONSE.search(text)
    body = match.group(1) if match else text
    fields: dict[str, XmlValue] = {}
    for key, raw in _CHILD.findall(body):
        fields.setdefault(key, _value(key, raw))
    rest = _CHILD.sub("", body)
    if (unclosed := _UNCLOSED.search(rest)) and unclosed.group(1) not in fields:
        fields[unclosed.group(1)] = _value(unclosed.group(1), unclosed.group(2))
    return fields or None


def plain_text(text: str) -> str:
    """Return a model's answer as plain prose, or "" when it is not prose.

    For models that ignore the asked-for format and just answer (small
    models served by Ollama or LM Studio; elizaOS/eliza#3993): reasoning and
    code-fence lines are dropped; an answer with any XML tag left is a
    broken structured answer, not prose, and gives "".
    """
    visible = _FENCE.sub("", strip_reasoning(text)).strip()
    return "" if _TAG.search(visible) else visible


def parse_json_object(text: str) -> dict[str, object] | None:
    """Return the JSON object a model wrote, bare or in a code fence, or None.

    Reasoning is dropped first; a fenced block (```json ... ```) wins over
    the first ``{`` ... last ``}`` span of the text. A top-level list is
    returned as ``{"items": [...]}``.
    """
    text = strip_reasoning(text)
    candidates = [m.group(1) for m in _FENCED_JSON.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
        if isinstance(value, list):
            return {"items": value}
    return None


def _value(key: str, raw: str) -> XmlValue:
    text = html.unescape(raw.strip())
    if key in _LIST_KEYS:
        return [item.strip() for item in text.split(",") if item.strip()]
    if key in _BOOL_KEYS:
        return text.lower() == "true"
    return text


class ReasoningFilter:
    """Drop reasoning (``<think>...</think>``) from a stream of chunks as they arrive.

    Returns the visible part of each chunk, holding back what could be the
    start of a reasoning tag until the next chunk says.
    """

    _OPENS = ("<think>", "<thinking>")
    _CLOSES = ("</think>", "</thinking>")

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self.visible = ""
        """Everything passed on so far."""

    def feed(self, chunk: str) -> str:
        """Return the visible text of this chunk (maybe empty)."""
        self._buffer += chunk
        out: list[str] = []
        while True:
            pattern = _REASONING_CLOSE if self._inside else _REASONING_OPEN
            found = pattern.search(self._buffer)
            if found is None:
                keep = max(
                    _partial_suffix(self._buffer.lower(), tag)
                    for tag in (self._CLOSES if self._inside else self._OPENS)
                )
                cut = len(self._buffer) - keep
                if not self._inside:
                    out.append(self._buffer[:cut])
                self._buffer = self._buffer[cut:]
                break
            if not self._inside:
                out.append(self._buffer[: found.start()])
            self._buffer = self._buffer[found.end() :]
            self._inside = not self._inside
        text = "".join(out)
        self.visible += text
        return text


class TextTagStreamer:
    """Pass on only what a streamed reply writes inside ``<text>...</text>``.

    Feed it chunks of the model's XML as they arrive; it returns the part of
    each that belongs to the text, holding back a possible partial tag.
    Reasoning (``<think>...</think>``) is dropped before anything else, so a
    ``<text>`` written while thinking is never streamed.
    """

    _OPEN = "<text>"
    _CLOSE = "</text>"

    def __init__(self) -> None:
        self._buffer = ""
        self._inside = False
        self._done = False
        self._reasoning = ReasoningFilter()
        self.streamed = ""

    @property
    def visible(self) -> str:
        """Everything fed so far, without its reasoning."""
        return self._reasoning.visible

    def feed(self, chunk: str) -> str:
        """Return the text to pass on for this chunk (maybe empty)."""
        chunk = self._reasoning.feed(chunk)
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
            # An entity cut between chunks ("&l" + "t;") waits for its end.
            amp = out.rfind("&")
            if amp >= 0 and ";" not in out[amp:] and len(out) - amp < _LONGEST_ENTITY:
                out, self._buffer = out[:amp], out[amp:] + self._buffer
        out = html.unescape(out)  # the stored reply is unescaped too (parse_key_value_xml)
        self.streamed += out
        return out

    @property
    def complete(self) -> bool:
        """True once ``</text>`` has been seen."""
        return self._done


_LONGEST_ENTITY = 32
"""Longest character reference held back while streaming (``&CounterClockwiseContourIntegral;``)."""


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
