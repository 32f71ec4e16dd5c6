"""A character's ``knowledge``: stored once as ``knowledge`` memories, found for each message.

Entries are strings, ``{"path": ...}`` files and ``{"directory": ...}``
folders (text and markdown; PDF when ``pypdf`` is installed); a relative
path is relative to the character file (``Character.from_file`` resolves it).
Each document splits into fragments of at most ``FRAGMENT_CHARS`` at
paragraph breaks. A fragment's id is derived from the agent and the
fragment's text, so every replica and every restart computes the same ids:
ingesting again stores nothing, a changed document stores only its new
fragments, and the fragments the character no longer has are deleted (those
of a file that cannot be read now are kept). Fragments get their vector at
ingestion when the agent has an embedding model.

The KNOWLEDGE provider searches them for the message's text: one storage
read, only when the message has text and the agent has knowledge, and once
per turn (later compositions of the same turn reuse it; the evaluation after
the turn does not search).
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from contracts import Content
from contracts.message import create_unique_uuid
from contracts.records import Memory
from shared.agent.turn import current_turn
from shared.agent.types import ModelType, ProviderResult, Service, State
from shared.errors import BadRequest

if TYPE_CHECKING:
    from shared.agent.runtime import AgentRuntime

logger = logging.getLogger("elizamesh.knowledge")

KNOWLEDGE_TABLE = "knowledge"
FRAGMENT_CHARS = 1_000
SEARCH_COUNT = 5
MATCH_THRESHOLD = 0.1
"""Cosine below which a fragment is not about the question (MiniLM's unrelated texts sit near 0)."""
WORD_SEARCH_LIMIT = 500
"""Without an embedding model, how many fragments are ranked by shared words."""
ORIGIN = "character"
TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".mdx", ".rst", ".csv", ".json", ".yaml"})

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_STOP_WORDS = frozenset(
    re.findall(
        r"\w+",
        "a an and are as at be by do does for from has have how i in is it its me my of on or "
        "our s so that the their there this to was we what when where which who why will with "
        "you your",
    )
)


@dataclass(frozen=True)
class Document:
    """One knowledge document: where it came from, and its text."""

    source: str
    text: str


def read_documents(
    entries: Sequence[str | Mapping[str, object]],
) -> tuple[list[Document], set[str]]:
    """Return the documents of a character's ``knowledge``, and the sources that cannot be read.

    Each unreadable source is logged as a warning naming it.
    """
    documents: list[Document] = []
    unreadable: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            if entry.strip():
                digest = hashlib.sha256(entry.encode()).hexdigest()[:16]
                documents.append(Document(source=f"text:{digest}", text=entry))
            continue
        if "path" in entry:
            files = [Path(str(entry["path"]))]
        elif "directory" in entry:
            folder = Path(str(entry["directory"]))
            if not folder.is_dir():
                logger.warning("knowledge directory %s cannot be read: no such folder", folder)
                unreadable.add(str(folder))
                continue
            files = sorted(p for p in folder.rglob("*") if p.is_file())
        else:
            logger.warning("knowledge entry %r has neither 'path' nor 'directory'; skipped", entry)
            continue
        for file in files:
            text = _read(file)
            if text is None:
                unreadable.add(str(file))
            elif text.strip():
                documents.append(Document(source=str(file), text=text))
    return documents, unreadable


def _read(file: Path) -> str | None:
    suffix = file.suffix.lower()
    try:
        if suffix == ".pdf":
            return _read_pdf(file)
        if suffix in TEXT_SUFFIXES or not suffix:
            return file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        logger.warning("knowledge file %s cannot be read: %s", file, exc.strerror)
        return None
    logger.warning("knowledge file %s skipped: %s files are not read", file, suffix)
    return None


def _read_pdf(file: Path) -> str | None:
    try:
        pypdf = importlib.import_module("pypdf")
    except ImportError:
        logger.warning("knowledge file %s skipped: reading PDF needs `pip install pypdf`", file)
        return None
    reader = pypdf.PdfReader(str(file))
    return "\n\n".join(page.extract_text() or "" for page in reader.pages)


def fragments(text: str, limit: int = FRAGMENT_CHARS) -> list[str]:
    """Split ``text`` at paragraph breaks (then lines, then words) into pieces of ``limit``."""
    pieces: list[str] = []
    current = ""
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        for part in _fit(paragraph.strip(), limit):
            if current and len(current) + 2 + len(part) > limit:
                pieces.append(current)
                current = part
            else:
                current = f"{current}\n\n{part}" if current else part
    if current:
        pieces.append(current)
    return pieces


def _fit(paragraph: str, limit: int) -> list[str]:
    if len(paragraph) <= limit:
        return [paragraph] if paragraph else []
    out: list[str] = []
    current = ""
    for word in paragraph.split():
        if current and len(current) + 1 + len(word) > limit:
            out.append(current)
            current = ""
        current = f"{current} {word}" if current else word[:limit]
    if current:
        out.append(current)
    return out


def fragment_id(agent_id: str, text: str) -> str:
    """The id of a knowledge fragment: the same on every replica, for the same text."""
    return create_unique_uuid(agent_id, f"knowledge:{hashlib.sha256(text.encode()).hexdigest()}")


async def ingest_knowledge(runtime: AgentRuntime) -> int:
    """Store the character's knowledge that is not stored yet; return how many fragments.

    Idempotent (ids from the text); fragments of the character's knowledge
    that it no longer has are deleted. A failure is logged: the agent still
    starts, without that knowledge.
    """
    agent_id = runtime.agent_id
    documents, unreadable = read_documents(runtime.character.knowledge)
    wanted: dict[str, Memory] = {}
    for document in documents:
        for index, piece in enumerate(fragments(document.text)):
            memory_id = fragment_id(agent_id, piece)
            wanted.setdefault(
                memory_id,
                Memory(
                    id=memory_id,
                    entity_id=agent_id,
                    agent_id=agent_id,
                    room_id=agent_id,
                    content=Content(text=piece, source="knowledge"),
                    metadata={
                        "type": "knowledge",
                        "origin": ORIGIN,
                        "source": document.source,
                        "position": index,
                    },
                ),
            )
    stored = await runtime.adapter.get_memories(table_name=KNOWLEDGE_TABLE, room_id=agent_id)
    stale = [
        m
        for m in stored
        if m.metadata.get("origin") == ORIGIN
        and m.id not in wanted
        and m.metadata.get("source") not in unreadable
    ]
    have = {m.id for m in stored}
    new = [m for m in wanted.values() if m.id not in have]
    try:
        if new:
            if runtime.get_model(ModelType.TEXT_EMBEDDING) is not None:
                new = [await runtime.add_embedding_to_memory(m) for m in new]
            await runtime.adapter.create_memories(new, KNOWLEDGE_TABLE)
        for memory in stale:
            await runtime.adapter.delete_memory(memory.id)
    except BadRequest:  # a vector of another size than the agent's, a limit
        logger.exception("agent %s: knowledge not stored", runtime.character.name)
    runtime.has_knowledge = bool(wanted) or len(stored) > len(stale)
    if new or stale:
        logger.info(
            "agent %s: knowledge stored (%d new fragments, %d removed, %d in all)",
            runtime.character.name,
            len(new),
            len(stale),
            len(wanted),
        )
    return len(wanted)


class KnowledgeService(Service):
    """Stores the character's knowledge when the agent starts (as elizaOS's plugin-knowledge).

    A service of the bootstrap plugin: each ``initialize`` stores what is new
    and deletes what the character no longer has, before it returns.
    """

    service_type = "knowledge"
    capability_description = "Stores the character's knowledge, with vectors, at start."

    @classmethod
    async def start(cls, runtime: AgentRuntime) -> KnowledgeService:
        """Store the character's knowledge that is not stored yet (``ingest_knowledge``)."""
        await ingest_knowledge(runtime)
        return cls(runtime)


async def knowledge_provider(
    runtime: AgentRuntime, message: Memory, state: State
) -> ProviderResult:
    """The knowledge fragments closest to the message (by vector, else by shared words)."""
    text = message.content.text
    if not text or not runtime.has_knowledge:
        return ProviderResult()
    turn = current_turn()
    if turn is not None and turn.response_id == message.id:
        # The evaluation of a turn after it (message_service.evaluate): it reads
        # nothing, and its evaluators learn from the conversation, not from this.
        return ProviderResult()
    composed = state.data.get("providers")
    previous = composed.get("KNOWLEDGE") if isinstance(composed, dict) else None
    if isinstance(previous, ProviderResult):  # composed earlier in this turn
        return previous
    if runtime.get_model(ModelType.TEXT_EMBEDDING) is not None:
        vector = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": text})
        found = await runtime.adapter.search_memories(
            table_name=KNOWLEDGE_TABLE,
            embedding=list(vector),
            count=SEARCH_COUNT,
            match_threshold=MATCH_THRESHOLD,
        )
    else:
        found = by_shared_words(
            text,
            await runtime.adapter.get_memories(table_name=KNOWLEDGE_TABLE, count=WORD_SEARCH_LIMIT),
        )
    lines = [m.content.text for m in found if m.content.text]
    return ProviderResult(
        text="# Knowledge\n" + "\n\n".join(lines) if lines else "",
        values={"knowledge": "\n\n".join(lines)},
        data={"knowledge": found},
    )


def by_shared_words(query: str, memories: Sequence[Memory]) -> list[Memory]:
    """The memories sharing the most words with ``query`` (stop words aside), best first."""
    wanted = _words(query)
    scored = [(len(wanted & _words(m.content.text or "")), i, m) for i, m in enumerate(memories)]
    best = sorted((s for s in scored if s[0] > 0), key=lambda s: (-s[0], s[1]))
    return [m for _, _, m in best[:SEARCH_COUNT]]


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP_WORDS}
