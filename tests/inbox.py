"""A webhook receiver for tests: an HTTP server on loopback that keeps what is POSTed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.http import QuietHandler, serving


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

    class Receive(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            inbox.received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

    with serving(Receive) as base_url:
        inbox.url = f"{base_url}/hook"
        yield inbox
