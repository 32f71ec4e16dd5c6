"""Start the services as child processes and stop all of them, whatever happens.

``elizamesh up``, ``demo-distributed`` and the end-to-end tests use this, so
what they run is what an operator runs: ``python -m services.<name>``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TextIO

_PRINTING = threading.Lock()
"""One line at a time on the terminal, whichever service it comes from."""


@contextmanager
def service_process(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path | None = None,
    module: str | None = None,
    args: Sequence[str] = (),
    echo_to: TextIO | None = None,
    own_group: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m services.<name>`` with ``env`` added, and stop it on exit.

    ``module`` and ``args`` run another module instead (a connector, an
    example provider), stopped the same way.

    Stopping sends SIGTERM (the services drain and exit), then SIGKILL after 10 s.
    Output (stdout and stderr) goes to ``<log_dir>/<name>.log`` when ``log_dir``
    is given; else, with ``echo_to``, each line is written there prefixed with
    the service's name (``memory    | ...``), as honcho does; else nowhere.

    ``own_group``: the process gets a process group of its own, so a Ctrl-C in
    the terminal reaches only the supervisor, which stops the services in the
    order they depend on each other (as honcho does), not all at the same time.
    """
    with ExitStack() as stack:
        out: IO[bytes] | int
        if log_dir is not None:
            out = stack.enter_context((log_dir / f"{name}.log").open("wb"))
        else:
            out = subprocess.PIPE if echo_to is not None else subprocess.DEVNULL
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module or f"services.{name}", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0 if own_group else None,
        )
        if echo_to is not None and process.stdout is not None:
            relay = threading.Thread(
                target=_relay, args=(process.stdout, name, echo_to), daemon=True
            )
            relay.start()
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], *, grace: float = 10) -> None:
    """SIGTERM ``process`` (if it still runs), then SIGKILL it after ``grace`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _relay(stream: IO[bytes], name: str, sink: TextIO) -> None:
    """Copy ``stream`` to ``sink`` line by line, each prefixed with ``name``."""
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            with _PRINTING:
                sink.write(f"{name:<9} | {line}\n")
                sink.flush()
