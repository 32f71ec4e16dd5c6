"""The ``elizamesh`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import tempfile
import time
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console

from contracts.schema import asyncapi, catalogue
from contracts.subjects import InvalidIdError, validate_owner
from shared.agent.character import Character
from shared.agent.embedding_queue import EmbeddingQueue
from shared.config import Settings
from shared.errors import ServiceError
from shared.logs import configure_logging
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
    text: Annotated[str, typer.Option(help="The message to send.")] = "Hello! Who are you?",
    data: Annotated[Path, typer.Option(help="Where the demo keeps its SQLite file.")] = Path(
        ".elizamesh/demo"
    ),
) -> None:
    """Chat with an agent on this machine: local models, SQLite, no key, no network."""
    data.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(_embedded_demo(text, data))
    except ServiceError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        raise typer.Exit(1) from exc


async def _embedded_demo(text: str, data: Path) -> None:
    from elizamesh import AgentRuntime, Character, Content, Memory, MessageOptions, ModelType  # noqa: PLC0415
    from elizamesh.plugins.local import get_local_plugin  # noqa: PLC0415

    runtime = AgentRuntime(
        character=Character(name="Eliza", bio=["A friendly assistant who runs on your laptop."]),
        plugins=[get_local_plugin()],
        settings={"DATABASE_URL": f"sqlite:///{data / 'elizamesh.db'}"},
    )
    await runtime.initialize()
    service = runtime.message_service
    if service is None:
        raise typer.Exit(1)
    message = Memory(entity_id="demo-user", room_id="demo-room", content=Content(text=text))
    console.print(f"[bold]you:[/] {text}")
    console.print("[bold]Eliza:[/] ", end="")

    async def show(chunk: str, _message_id: str | None) -> None:
        console.print(chunk, end="", markup=False, highlight=False)

    started = time.perf_counter()
    result = await service.handle_message(
        runtime, message, options=MessageOptions(on_stream_chunk=show)
    )
    if result.mode != "simple" and result.response_content is not None:
        console.print(result.response_content.text, end="", markup=False)
    console.print(f"\n[dim]({time.perf_counter() - started:.1f} s, run {result.status})[/]")
    if isinstance(runtime.embedding_queue, EmbeddingQueue):
        await runtime.embedding_queue.drained()
    query = "who is the assistant?"
    vector = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": query})
    found = await runtime.adapter.search_memories(table_name="messages", embedding=vector, count=2)
    console.print(f"[bold]memory search[/] for {query!r} (MiniLM vectors):")
    for memory in found:
        console.print(f"  {memory.similarity:.3f}  {memory.content.text[:80]}", markup=False)
    await runtime.stop()


@app.command(name="demo-distributed")
def demo_distributed(
    text: Annotated[str, typer.Option(help="The message to send.")] = "Hello! Who are you?",
) -> None:
    """Run NATS, memory, runtime and gateway as processes; send one message over HTTP."""
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="elizamesh-demo-")))
        character = data / "eliza.json"
        character.write_text(
            json.dumps({"name": "Eliza", "id": "eliza", "bio": ["A friendly agent."]})
        )
        console.print("[bold]starting[/] the bundled nats-server ...")
        nats = stack.enter_context(NatsServer())
        port = free_port()
        env = {
            "NATS_URL": nats.url,
            "API_PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "DATABASE_URL": f"sqlite:///{data / 'memory.db'}",
            "AGENT_CHARACTERS": str(character),
        }
        for name in ("memory", "runtime", "gateway"):
            console.print(f"[bold]starting[/] the {name} service ...")
            stack.enter_context(service_process(name, env))
        wait_for_port("127.0.0.1", port, timeout=30)
        base = f"http://127.0.0.1:{port}/v1"
        _wait_for_agent(f"{base}/agents", "eliza")
        body = {"entity_id": "demo-user", "room_id": "demo-room", "content": {"text": text}}
        console.print(f"[bold]POST[/] {base}/agents/eliza/messages\n  {json.dumps(body)}")
        started = time.perf_counter()
        reply = httpx.post(f"{base}/agents/eliza/messages", json=body, timeout=60)
        elapsed_ms = (time.perf_counter() - started) * 1000
        console.print(f"[bold]{reply.status_code}[/] in {elapsed_ms:.0f} ms\n  {reply.text}")
        if reply.is_error:
            raise typer.Exit(1)
    console.print("stopped everything.")


def _wait_for_agent(url: str, agent_id: str, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, timeout=5)
            if reply.is_success and agent_id in {a["id"] for a in reply.json()["agents"]}:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    console.print(f"[red]agent {agent_id} did not come up within {timeout:g}s[/]")
    raise typer.Exit(1)


def _connector_name(name: str | None) -> str | None:
    """Refuse, as a bad option, a connector name no NATS user or run could have."""
    try:
        return None if name is None else validate_owner(name)
    except InvalidIdError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def chat(
    agent: Annotated[str, typer.Option(help="The agent to talk to (its id).")] = "eliza",
    user: Annotated[str, typer.Option(help="Your user id.")] = "cli-user",
    connector: Annotated[
        str,
        typer.Option(
            envvar="ELIZA_CONNECTOR",
            callback=_connector_name,
            help="The connector it is (its NATS user in NATS_URL, with the cli platform).",
        ),
    ] = "chat",
) -> None:
    """Talk to an agent of a running stack from the terminal (NATS_URL; Ctrl-D to leave)."""
    from elizamesh.connectors import terminal_chat  # noqa: PLC0415

    settings = Settings.from_env()
    try:
        asyncio.run(
            terminal_chat(
                settings.nats_url, settings.subjects, agent, user=user, connector=connector
            )
        )
    except KeyboardInterrupt:
        console.print()
    except ServiceError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


@app.command()
def webhook(
    url: Annotated[str, typer.Option(help="Where to POST each outbound message (JSON).")],
    source: Annotated[
        str, typer.Option(help="The platform whose messages to deliver.")
    ] = "webhook",
    connector: Annotated[
        str | None,
        typer.Option(
            envvar="ELIZA_CONNECTOR",
            callback=_connector_name,
            help="Run as this connector (its NATS user in NATS_URL): no stream creation, "
            "no health probes. Without it, a trusted service that does both.",
        ),
    ] = None,
) -> None:
    """Deliver the agents' outbound messages of one source to a URL (NATS_URL; Ctrl-C stops)."""
    from elizamesh.connectors import webhook_connector  # noqa: PLC0415

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    app = webhook_connector(settings, source=source, url=url, connector=connector)
    asyncio.run(app.run())


@app.command(name="nats-config")
def nats_config(
    namespace: Annotated[
        list[str] | None,
        typer.Option(help="A tenant's namespace (one NATS account each); repeat for more."),
    ] = None,
    connector: Annotated[
        list[str] | None,
        typer.Option(
            help="A connector user, NAME or NAME:SOURCE1,SOURCE2 (platforms it delivers); "
            "in every namespace; repeat for more."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write here (include it from nats.conf); else print.")
    ] = None,
) -> None:
    """Write the NATS accounts and per-role users with least-privilege permissions.

    One account per namespace; in it a user per service (runtime, memory,
    embedding, evaluator, gateway), ``admin``, and each connector, named
    ``<namespace>-<role>``, whose password nats-server reads from the
    environment variable ``<NAMESPACE>_<ROLE>_PASSWORD``.
    """
    from shared.natsconfig import Connector, Tenant, accounts_config  # noqa: PLC0415

    try:
        connectors = tuple(Connector.parse(c) for c in connector or [])
        tenants = [Tenant(ns, connectors) for ns in namespace or ["eliza"]]
        text = accounts_config(tenants)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(
        "# Generated by `elizamesh nats-config` from contracts/subjects.py: do not edit by hand.\n"
        + text
    )
    console.print(f"wrote {out}")


@app.command()
def health(
    window: Annotated[float, typer.Option(help="Seconds to wait for answers.")] = 1.0,
    service: Annotated[
        str | None, typer.Option(help="Only this service's instances (memory, runtime, ...).")
    ] = None,
    this_host: Annotated[
        bool, typer.Option("--this-host", help="Only instances on this host (a health check).")
    ] = False,
) -> None:
    """Show every service instance's status (NATS_URL); exit 1 when one is not ok or none answers.

    ``--service runtime --this-host`` is a container's health check: the
    runtime in this container answers and its consumers are alive.
    """
    from elizamesh.connectors import stack_health  # noqa: PLC0415
    from shared.health import on_this_host  # noqa: PLC0415

    settings = Settings.from_env()
    answers = [
        answer
        for answer in asyncio.run(stack_health(settings, window=window))
        if (service is None or answer.service == service)
        and (not this_host or on_this_host(answer))
    ]
    for answer in answers:
        mark = "[green]ok[/]" if answer.ok else "[red]NOT OK[/]"
        console.print(f"{mark}  {answer.service:<10} {answer.instance}  {answer.details}")
        for consumer in answer.consumers:
            console.print(
                f"      {consumer.name:<16} alive={consumer.alive} pending={consumer.pending} "
                f"ack_pending={consumer.ack_pending}"
            )
    if not answers:
        console.print("[red]no service answered[/]")
    if not answers or not all(a.ok for a in answers):
        raise typer.Exit(1)


@app.command()
def up(
    character: Annotated[
        list[Path] | None, typer.Option(help="Character JSON files (default: Eliza).")
    ] = None,
    port: Annotated[
        int, typer.Option(envvar="API_PORT", help="Gateway HTTP port (API_PORT).")
    ] = 3000,
) -> None:
    """Run the whole stack here: nats-server and the five services; Ctrl-C stops it all.

    Uses NATS_URL and DATABASE_URL when set; otherwise the bundled nats-server
    (on 4222 when free) and SQLite under ./.elizamesh/.
    """
    characters = character or [Path(__file__).parent / "characters" / "eliza.json"]
    _stop_on_signals()
    with ExitStack() as stack:
        nats_url = os.environ.get("NATS_URL")
        if not nats_url:
            nats_port = 4222 if _port_free(4222) else free_port()
            nats_url = stack.enter_context(NatsServer(port=nats_port)).url
        env = {
            "NATS_URL": nats_url,
            "API_PORT": str(port),
            "AGENT_CHARACTERS": ",".join(str(c.resolve()) for c in characters),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
        }
        for name in ("memory", "embedding", "evaluator", "runtime", "gateway"):
            stack.enter_context(service_process(name, env))
        wait_for_port("127.0.0.1", port, timeout=30)
        _wait_for_agent(
            f"http://127.0.0.1:{port}/v1/agents", Character.from_file(characters[0]).agent_id
        )
        try:  # a signal may come as soon as the first line is out
            console.print(f"[bold green]up[/]: NATS {nats_url}, gateway http://127.0.0.1:{port}")
            console.print(f"  talk to it:  NATS_URL={nats_url} elizamesh chat")
            console.print("  stop it:     Ctrl-C")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopping ...")
    console.print("stopped everything.")


def _stop_on_signals() -> None:
    """Make SIGTERM and SIGINT stop the stack as Ctrl-C does, children included.

    A ``kill`` (or a supervisor) must not leave the services running without
    their parent; and a shell that starts ``up`` in the background ignores
    SIGINT in it, which would make Ctrl-C-by-signal do nothing.
    """

    def interrupt(signum: int, _frame: object) -> None:
        for again in (signal.SIGTERM, signal.SIGINT):
            signal.signal(again, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupt)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0
