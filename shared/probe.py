"""A container's health check: is this container's own service instance healthy?

``python -m shared.probe runtime`` asks ``<ns>.health`` (``NATS_URL``,
``ELIZA_NS``) and exits 0 as soon as the named service's instance on this
host answers ok, 1 when it answers not ok or nothing answers within the
timeout. It imports only nats-py and the contracts (about 0.2 s of CPU), since
Kubernetes runs it every few seconds in every pod: the full CLI costs over a
second of CPU each time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from typing import Any

import msgspec
import nats

from contracts.control import CheckHealth, ServiceHealth
from shared.config import Settings

_DECODER = msgspec.json.Decoder(ServiceHealth)


async def probe(settings: Settings, service: str, *, timeout: float) -> ServiceHealth | None:
    """Return ``service``'s answer from this host, or None if none came within ``timeout`` s.

    Raises:
        OSError, nats.errors.Error: NATS cannot be reached.
    """
    connection = await nats.connect(
        settings.nats_url,
        connect_timeout=timeout,
        # One try: a probe that waits for NATS to come back only hides the failure.
        max_reconnect_attempts=1,
        allow_reconnect=False,
        error_cb=_quiet,
    )
    mine: asyncio.Future[ServiceHealth] = asyncio.get_running_loop().create_future()

    async def collect(msg: Any) -> None:
        # Other services' and other hosts' answers arrive too: keep only ours.
        with contextlib.suppress(msgspec.DecodeError):
            answer = _DECODER.decode(msg.data)
            if answer.service == service and _on_this_host(answer) and not mine.done():
                mine.set_result(answer)

    try:
        inbox = connection.new_inbox()
        await connection.subscribe(inbox, cb=collect)
        await connection.publish(
            settings.subjects.health, msgspec.json.encode(CheckHealth()), reply=inbox
        )
        try:
            async with asyncio.timeout(timeout):
                return await mine
        except TimeoutError:
            return None
    finally:
        await connection.close()


async def _quiet(error: Exception) -> None:
    # nats-py logs each failed attempt with a traceback; main prints one line instead.
    del error


def _on_this_host(answer: ServiceHealth) -> bool:
    # shared.health.on_this_host, without importing FastStream (a third of a second).
    host, _, _pid = answer.instance.rpartition(":")
    return host == socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    """Run the probe; print one line and return the exit status (0 healthy, 1 not)."""
    parser = argparse.ArgumentParser(prog="python -m shared.probe", description=__doc__)
    parser.add_argument("service", help="runtime, memory, embedding, evaluator, ...")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    args = parser.parse_args(argv)
    try:
        answer = asyncio.run(probe(Settings.from_env(), args.service, timeout=args.timeout))
    except (OSError, nats.errors.Error) as exc:
        print(f"cannot reach NATS (NATS_URL): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if answer is None:
        print(f"no {args.service} instance on this host answered", file=sys.stderr)
        return 1
    if not answer.ok:
        print(f"{args.service} {answer.instance} NOT OK: {answer.details}", file=sys.stderr)
        return 1
    print(f"{args.service} {answer.instance} ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
