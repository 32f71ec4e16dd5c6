"""A turn as the gateway streams it: the run's events, kept alive and bounded by a deadline.

The run follower (``shared.runs``) yields a run's events and raises when the
run goes silent. Here a turn gets what an HTTP stream needs on top of that:
a ``None`` whenever nothing came for ``keepalive`` seconds (the caller writes
an SSE comment, so proxies and browsers keep the stream open while a slow
model thinks), and an end with status ``timeout`` once the whole turn has
taken ``deadline`` seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import msgspec
from faststream.nats import NatsBroker

from contracts import HandleMessage
from contracts.events import RunEnded
from shared.config import GatewaySettings
from shared.runs import Run, RunEvent, RunFollower, follow_kept_run, start_run

RUN_OWNER = "gateway"
"""Its runs are ``<ns>.run.gateway.<id>.*``, its inbox ``_INBOX.gateway``: all its user reads."""

Paced = tuple[RunEvent, bytes] | None
"""A run event and its raw JSON, or ``None``: nothing came for a keep-alive interval."""


async def start_turn(
    broker: NatsBroker, settings: GatewaySettings, agent_id: str, message: HandleMessage
) -> Run:
    """Send ``message`` to ``agent_id`` on a run the gateway owns; return the accepted run.

    Raises:
        ServiceError: the request itself failed (unknown agent, bad input, nobody listening).
    """
    return await start_run(
        broker,
        settings.subjects,
        agent_id,
        message,
        timeout=settings.request_timeout,
        owner=RUN_OWNER,
    )


async def resume_turn(settings: GatewaySettings, broker: NatsBroker, run_id: str) -> RunFollower:
    """Follow the kept run ``run_id`` from its first event (for ``Last-Event-ID``).

    Raises:
        InvalidIdError: ``run_id`` is not a valid run id.
    """
    return await follow_kept_run(
        broker, settings.subjects, run_id, timeout=settings.request_timeout
    )


async def paced(
    run: RunFollower, message_id: str, *, keepalive: float, deadline: float
) -> AsyncGenerator[Paced, None]:
    """Yield ``run``'s events up to its end, ``None`` after each quiet ``keepalive`` seconds.

    After ``deadline`` seconds the turn ends here with a ``RunEnded`` of
    status ``timeout`` (the runtime may still finish it; its result is kept
    under the message id). Closing this iterator stops listening to the run.

    Raises:
        ServiceError: the run went silent (the follower's ``Unavailable``).
    """
    events = run.events()
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    pending: asyncio.Task[tuple[RunEvent, bytes]] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            left = end - loop.time()
            if left <= 0:
                yield _timed_out(run.run_id, message_id, deadline)
                return
            done, _ = await asyncio.wait({pending}, timeout=min(keepalive, left))
            if not done:
                if loop.time() < end:
                    yield None
                continue
            finished, pending = pending, None
            try:
                event = finished.result()
            except StopAsyncIteration:
                return
            yield event
            if isinstance(event[0], RunEnded):
                return
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        if isinstance(events, AsyncGenerator):
            await events.aclose()
        await run.close()  # an iterator cancelled before its first step never closed it


def _timed_out(run_id: str, message_id: str, deadline: float) -> tuple[RunEvent, bytes]:
    ended = RunEnded(
        run_id=run_id,
        message_id=message_id,
        status="timeout",
        error=f"the turn took longer than GATEWAY_TURN_TIMEOUT ({deadline:g}s)",
    )
    return ended, msgspec.json.encode(ended)
