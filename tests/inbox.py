"""A webhook receiver for tests: an HTTP server on loopback that keeps what is POSTed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Inbox:
    """What the webhook received, in order."""

    url: str
    received: list[dict[str, Any]] = field(default_factory=list)

    def wait_for(self, count: int, *, timeout: float) -> list[dict[str, Any]]:
        """Return the first ``count`` bodies once they arrived; fail after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the webhook got {len(self.received)} of {count} posts")
            time.sleep(0.05)
        return self.received[:count]


@contextmanager
def webhook_inbox() -> Iterator[Inbox]:
    """Serve an ``Inbox`` on a free port for the duration of the block."""
    inbox = Inbox(url="")

    class Receive(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            inbox.received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receive)
    inbox.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield inbox
    finally:
        server.shutdown()
        server.server_close()
