"""Start the services as child processes and stop all of them, whatever happens.

``elizamesh demo`` and the end-to-end tests use this, so what they run is what
an operator runs: ``python -m services.<name>``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path


@contextmanager
def service_process(
    name: str,
    env: Mapping[str, str],
    *,
    log_dir: Path | None = None,
    module: str | None = None,
    args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m services.<name>`` with ``env`` added, and stop it on exit.

    ``module`` and ``args`` run another module instead (a connector, an
    example provider), stopped the same way.

    Stopping sends SIGTERM (the services drain and exit), then SIGKILL after 10 s.
    Output goes to ``<log_dir>/<name>.log`` when ``log_dir`` is given.
    """
    with ExitStack() as stack:
        out = (
            stack.enter_context((log_dir / f"{name}.log").open("wb"))
            if log_dir is not None
            else subprocess.DEVNULL
        )
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", module or f"services.{name}", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
