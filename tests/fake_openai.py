"""A fake OpenAI-compatible server on loopback, so tests drive the real ``openai`` client.

Chat completions (plain and SSE-streamed), embeddings, image generation,
speech, transcription and the model list; the replies come from a script,
and scripted failures (429, 500, 401, 404) test retries and error messages.
Every request is recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.http import QuietHandler, serving


@dataclass(frozen=True)
class Failure:
    """Answer the next request with this HTTP status instead."""

    status: int
    message: str = "scripted failure"
    retry_after_ms: int | None = None


@dataclass(frozen=True)
class Hangup:
    """Close the connection on the next request, without an answer (a server that died)."""


@dataclass
class FakeOpenAI:
    """The server's state: its address, its script and what it was asked."""

    url: str = ""
    script: list[str | Failure | Hangup] = field(default_factory=list)
    default: str = (
        "<response><thought>t</thought><actions>REPLY</actions><text>fake reply</text></response>"
    )
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    chunk_size: int = 5
    models: tuple[str, ...] = (
        "gpt-4o",
        "gpt-4o-mini",
        "o4-mini",
        "text-embedding-3-small",
        "dall-e-3",
        "whisper-1",
        "gpt-4o-mini-tts",
    )
    delay: float = 0.0
    responder: Callable[[dict[str, Any]], str] | None = None
    counted: Callable[[dict[str, Any]], bool] = lambda body: True
    embedding: Callable[[str, int], Any] | None = None
    """What the server answers as the embedding of one text (a chat model: a list of lists)."""
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enter(self, body: dict[str, Any]) -> None:
        if not self.counted(body):
            return
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, body: dict[str, Any]) -> None:
        if not self.counted(body):
            return
        with self._lock:
            self.in_flight -= 1

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path.endswith("/chat/completions")]

    def next_reply(self, body: dict[str, Any]) -> str | Failure | Hangup:
        if self.script:
            return self.script.pop(0)
        return self.responder(body) if self.responder else self.default


def letters(text: str, dims: int) -> list[float]:
    """A deterministic 'embedding': letter frequencies, padded or cut to ``dims``."""
    counts = [float(text.lower().count(chr(c))) for c in range(ord("a"), ord("z") + 1)]
    return (counts + [0.0] * dims)[:dims]


def _handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        # Connections kept open between requests, as a model server keeps them
        # (HTTP/1.0 would cost every call a TCP connect, counted by the benches).
        protocol_version = "HTTP/1.1"

        def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            fake.requests.append((self.path, {}))
            if self.path.endswith("/models"):
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": [
                            {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                            for m in fake.models
                        ],
                    },
                )
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.path.endswith("/audio/transcriptions"):  # multipart: the audio file
                fake.requests.append((self.path, {"size": len(raw)}))
                self._json(200, {"text": "hello from the audio"})
                return
            body = json.loads(raw or b"{}")
            fake.requests.append((self.path, body))
            if body.get("model") not in fake.models:
                self._json(
                    404,
                    {
                        "error": {
                            "message": f"model {body.get('model')} not found",
                            "type": "invalid_request_error",
                        }
                    },
                )
                return
            if self.path.endswith("/images/generations"):
                n = int(body.get("n") or 1)
                images = [{"url": f"https://images.test/{i}.png"} for i in range(n)]
                self._json(200, {"created": 0, "data": images})
                return
            if self.path.endswith("/audio/speech"):
                audio = b"ID3" + body["input"].encode()
                self.send_response(200)
                self.send_header("content-type", "audio/mpeg")
                self.send_header("content-length", str(len(audio)))
                self.end_headers()
                self.wfile.write(audio)
                return
            if self.path.endswith("/embeddings"):
                inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
                dims = int(body.get("dimensions") or 26)
                data = [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": (fake.embedding or letters)(t, dims),
                    }
                    for i, t in enumerate(inputs)
                ]
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": data,
                        "model": body["model"],
                        "usage": {"prompt_tokens": 1, "total_tokens": 1},
                    },
                )
                return
            fake.enter(body)
            try:
                time.sleep(fake.delay)
                self._chat(body)
            finally:
                fake.leave(body)

        def _chat(self, body: dict[str, Any]) -> None:
            reply = fake.next_reply(body)
            if isinstance(reply, Hangup):
                self.close_connection = True
                return
            if isinstance(reply, Failure):
                headers = (
                    {"retry-after-ms": str(reply.retry_after_ms)}
                    if reply.retry_after_ms is not None
                    else {}
                )
                self._json(
                    reply.status, {"error": {"message": reply.message, "type": "scripted"}}, headers
                )
                return
            if body.get("stream"):
                usage = (body.get("stream_options") or {}).get("include_usage", False)
                self._stream(body["model"], reply, usage=usage)
            else:
                self._json(
                    200,
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": reply},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        def _stream(self, model: str, text: str, *, usage: bool) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")  # no length: the close ends the stream
            self.end_headers()
            pieces = [text[i : i + fake.chunk_size] for i in range(0, len(text), fake.chunk_size)]
            for piece in pieces:
                chunk = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            if usage:  # as OpenAI does: a last chunk with no choices and the usage
                last = {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 3,
                        "completion_tokens": len(pieces),
                        "total_tokens": 3 + len(pieces),
                    },
                }
                self.wfile.write(f"data: {json.dumps(last)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


@contextmanager
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """Run a fake OpenAI server on a free loopback port for the ``with`` block."""
    fake = FakeOpenAI()
    with serving(_handler(fake)) as base_url:
        fake.url = f"{base_url}/v1"
        yield fake
