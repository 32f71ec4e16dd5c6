"""The gateway's HTTP server: uvicorn, with a deadline for reading each request.

uvicorn bounds the idle time between requests (keep-alive) but not the time a
client takes to send one: a client that sends half a request head and stops
held its connection forever (300 of them were still open after 32 s). Here
every request, head and body, must arrive within ``read_timeout`` seconds of
its first byte (of the connection, for the first), or the connection is closed.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_READ_TIMEOUT = 10.0
"""Seconds a client has to send a whole request (``GATEWAY_READ_TIMEOUT``)."""


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request does not arrive in time."""

    read_timeout = DEFAULT_READ_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the clock for the first request."""
        self._read_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Start the clock on a new request's first byte; stop it once the request is whole."""
        if self.cycle is None or self.cycle.response_complete:
            self._arm()
        super().data_received(data)
        if self.cycle is not None and not self.cycle.more_body:
            self._disarm()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """A WebSocket's head arrived whole: its protocol takes over the connection."""
        self._disarm()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_expired)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_expired(self) -> None:
        self._read_timer = None
        if self.cycle is not None and not self.cycle.more_body and not self.cycle.response_complete:
            return  # the request is whole and being answered
        if not self.transport.is_closing():
            self.transport.close()


def deadline_protocol(read_timeout: float) -> type[DeadlineH11Protocol]:
    """``DeadlineH11Protocol`` with ``read_timeout`` seconds per request."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"read_timeout": read_timeout})


def server_config(
    app: Litestar,
    *,
    host: str,
    port: int,
    read_timeout: float,
    log_level: str | int | None = None,
    log_config: dict[str, object] | str | None = uvicorn.config.LOGGING_CONFIG,
) -> uvicorn.Config:
    """The uvicorn configuration of the gateway (h11 with a request deadline).

    ``log_config=None`` leaves logging as configured (uvicorn's own format otherwise).
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=deadline_protocol(read_timeout),
        log_level=log_level,
        log_config=log_config,
    )
