"""The ``elizamesh`` command line."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from contracts.schema import asyncapi, catalogue
from shared.config import Settings
from shared.natsserver import NatsServer, free_port, wait_for_port
from shared.processes import service_process

app = typer.Typer(help="elizamesh: the elizaOS agent runtime on NATS.", no_args_is_help=True)
console = Console()


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Directory to write the catalogue to.")] = Path(
        "schema"
    ),
) -> None:
    """Write the JSON Schema of every wire message (and the AsyncAPI document)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "messages.schema.json").write_text(json.dumps(catalogue(), indent=2) + "\n")
    (out / "asyncapi.json").write_text(
        json.dumps(asyncapi(Settings.from_env().subjects, version=version("elizamesh")), indent=2)
        + "\n"
    )
    console.print(f"wrote {out / 'messages.schema.json'} and {out / 'asyncapi.json'}")


@app.command()
def demo(
    text: Annotated[str, typer.Option(help="The message to send.")] = "Hello, agent!",
) -> None:
    """Start NATS, the runtime and the gateway; send one message over HTTP; stop them all."""
    with ExitStack() as stack:
        console.print("[bold]starting[/] the bundled nats-server ...")
        nats = stack.enter_context(NatsServer())
        port = free_port()
        env = {"NATS_URL": nats.url, "API_PORT": str(port), "LOG_LEVEL": "WARNING"}
        for name in ("runtime", "gateway"):
            console.print(f"[bold]starting[/] the {name} service ...")
            stack.enter_context(service_process(name, env))
        wait_for_port("127.0.0.1", port, timeout=30)
        url = f"http://127.0.0.1:{port}/v1/agents/demo-agent/messages"
        body = {"entity_id": "demo-user", "room_id": "demo-room", "content": {"text": text}}
        console.print(f"[bold]POST[/] {url}\n  {json.dumps(body)}")
        started = time.perf_counter()
        reply = httpx.post(url, json=body, timeout=30)
        elapsed_ms = (time.perf_counter() - started) * 1000
        console.print(f"[bold]{reply.status_code}[/] in {elapsed_ms:.1f} ms\n  {reply.text}")
        if reply.is_error:
            raise typer.Exit(1)
    console.print("stopped everything.")
