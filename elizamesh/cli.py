"""The ``elizamesh`` command line.

Settings come from the environment and a ``.env`` file (``shared.config``).
A problem the user can fix (a bad setting, an unreachable NATS or database, a
bad character file, a missing model file) is one line on stderr naming what to
change, never a traceback. Heavy modules are imported inside the commands, so
``elizamesh --help`` loads little more than typer.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar


def _quit(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


# A shell starts `elizamesh up &` with SIGINT ignored. A terminal's Ctrl-C never
# reaches a background job, so the SIGINT it gets is a deliberate `kill -INT`:
# honoured from here on, before the slower imports (``up`` then installs its own).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, _quit)

import typer  # noqa: E402 - after the signal disposition, on purpose

if TYPE_CHECKING:
    from rich.console import Console

    from shared.agent.character import Character
    from shared.config import CommonSettings, Settings

app = typer.Typer(
    help="elizamesh: the elizaOS agent runtime on NATS.",
    epilog="Settings come from the environment and ./.env; `elizamesh settings` lists every "
    "one (variable, default, which service reads it, meaning).",
    no_args_is_help=True,
)
agent_app = typer.Typer(
    help="Manage the agents of a running stack through its gateway (API_HOST, API_PORT).",
    no_args_is_help=True,
)
app.add_typer(agent_app, name="agent")

NATS_CONNECT_TIMEOUT = 3.0
"""Seconds to reach NATS before saying it cannot be reached."""
SERVICES = ("memory", "embedding", "evaluator", "runtime", "gateway")
"""What ``up`` starts, in this order (the memory service first: the others use it)."""

_S = TypeVar("_S", bound="CommonSettings")
_Answer = TypeVar("_Answer")


def console() -> Console:
    """The terminal's rich console (made on first use)."""
    global _console  # noqa: PLW0603 - one console per process, made lazily for --help's sake
    if _console is None:
        from rich.console import Console  # noqa: PLC0415

        _console = Console()
    return _console


_console: Console | None = None


def fail(message: str, *, code: int = 1) -> NoReturn:
    """Write ``message`` (one line per problem) to stderr and exit with ``code``."""
    for line in message.splitlines() or [message]:
        typer.echo(f"elizamesh: {line}", err=True)
    raise typer.Exit(code)


def read_settings(kind: type[_S]) -> _S:
    """``kind`` from the environment and ``.env``; a bad value exits with its one-line reason."""
    from shared.config import SettingsError  # noqa: PLC0415

    try:
        return kind.from_env()
    except SettingsError as exc:
        fail(str(exc), code=2)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # noqa: PLC0415

        typer.echo(f"elizamesh {version('elizamesh')}")
        raise typer.Exit


@app.callback()
def main(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """elizamesh: the elizaOS agent runtime on NATS."""


# -- reaching NATS ------------------------------------------------------------------


def reach_nats(url: str, *, timeout: float = NATS_CONNECT_TIMEOUT) -> None:
    """Connect to ``url`` once, or exit with one line naming NATS_URL and the cause.

    The services and connectors reconnect for ever (a restart of NATS must not
    stop them); a person at a terminal wants to hear at once that the URL is
    wrong, so this tries once before they start.
    """
    cause = asyncio.run(_nats_problem(url, timeout=timeout))
    if cause is not None:
        from shared.config import without_password  # noqa: PLC0415

        fail(f"cannot reach NATS at NATS_URL={without_password(url)}: {cause}")


async def _nats_problem(url: str, *, timeout: float) -> str | None:
    import nats  # noqa: PLC0415

    seen: list[Exception] = []

    async def keep(error: Exception) -> None:  # instead of nats-py's traceback in the log
        seen.append(error)

    try:
        async with asyncio.timeout(timeout * 2):
            connection = await nats.connect(
                url.split(","),
                connect_timeout=timeout,
                allow_reconnect=False,
                # Each server is tried twice, 0.2 s apart (0 would mean: for ever).
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,
                error_cb=keep,
            )
    except Exception as exc:  # every way to fail is reported the same way
        return _reason(seen[0] if seen else exc)
    await connection.close()
    return None


def _reason(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer (timed out)"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# -- commands -----------------------------------------------------------------------


@app.command()
def settings(
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the Markdown table (the README's).")
    ] = False,
) -> None:
    """List every setting: environment variable, default, which service reads it, meaning."""
    from shared.config import settings_markdown, settings_rows  # noqa: PLC0415

    if markdown:
        typer.echo(settings_markdown(), nl=False)
        return
    from rich.table import Table  # noqa: PLC0415

    table = Table("variable", "default", "read by", "meaning", show_lines=False)
    for column in table.columns:
        column.overflow = "fold"  # a narrow or piped terminal wraps values, never cuts them
    for row in settings_rows():
        table.add_row(*row)
    console().print(table)


@app.command()
def schema(
    out: Annotated[Path, typer.Option(help="Directory to write the catalogue to.")] = Path(
        "schema"
    ),
) -> None:
    """Write the JSON Schema of every wire message (and the AsyncAPI document)."""
    from importlib.metadata import version  # noqa: PLC0415

    from contracts.schema import asyncapi, catalogue  # noqa: PLC0415
    from shared.config import CommonSettings  # noqa: PLC0415

    subjects = read_settings(CommonSettings).subjects
    out.mkdir(parents=True, exist_ok=True)
    (out / "messages.schema.json").write_text(json.dumps(catalogue(), indent=2) + "\n")
    (out / "asyncapi.json").write_text(
        json.dumps(asyncapi(subjects, version=version("elizamesh")), indent=2) + "\n"
    )
    console().print(f"wrote {out / 'messages.schema.json'} and {out / 'asyncapi.json'}")


@app.command()
def demo(
    text: Annotated[str, typer.Option(help="The message to send.")] = "Hello! Who are you?",
    data: Annotated[Path, typer.Option(help="Where the demo keeps its SQLite file.")] = Path(
        ".elizamesh/demo"
    ),
) -> None:
    """Chat with an agent on this machine: local models, SQLite, no key, no network."""
    from shared.agent.types import ModelError  # noqa: PLC0415
    from shared.config import SettingsError  # noqa: PLC0415
    from shared.errors import ServiceError  # noqa: PLC0415

    data.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(_embedded_demo(text, data))
    except (ServiceError, ModelError, SettingsError) as exc:
        fail(f"demo failed: {exc}")


async def _embedded_demo(text: str, data: Path) -> None:
    from elizamesh import AgentRuntime, Character, Content, Memory, MessageOptions, ModelType  # noqa: PLC0415
    from elizamesh.plugins.local import get_local_plugin  # noqa: PLC0415
    from shared.agent.embedding_queue import EmbeddingQueue  # noqa: PLC0415

    runtime = AgentRuntime(
        character=Character(name="Eliza", bio=["A friendly assistant who runs on your laptop."]),
        plugins=[get_local_plugin()],
        settings={"DATABASE_URL": f"sqlite:///{data / 'elizamesh.db'}"},
    )
    await runtime.initialize()
    service = runtime.message_service
    if service is None:
        raise typer.Exit(1)
    out = console()
    message = Memory(entity_id="demo-user", room_id="demo-room", content=Content(text=text))

    async def show(chunk: str, _message_id: str | None) -> None:
        out.print(chunk, end="", markup=False, highlight=False)

    try:
        # Both models load now, so a missing model file is one line before the turn.
        await runtime.use_model(ModelType.TEXT_TOKENIZER_DECODE, {"tokens": []})
        await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": text})
        out.print(f"[bold]you:[/] {text}")
        out.print("[bold]Eliza:[/] ", end="")
        started = time.perf_counter()
        result = await service.handle_message(
            runtime, message, options=MessageOptions(on_stream_chunk=show)
        )
        if result.mode != "simple" and result.response_content is not None:
            out.print(result.response_content.text, end="", markup=False)
        out.print(f"\n[dim]({time.perf_counter() - started:.1f} s, run {result.status})[/]")
        if isinstance(runtime.embedding_queue, EmbeddingQueue):
            await runtime.embedding_queue.drained()
        query = "who is the assistant?"
        vector = await runtime.use_model(ModelType.TEXT_EMBEDDING, {"text": query})
        found = await runtime.adapter.search_memories(
            table_name="messages", embedding=vector, count=2
        )
        out.print(f"[bold]memory search[/] for {query!r} (MiniLM vectors):")
        for memory in found:
            out.print(f"  {memory.similarity:.3f}  {memory.content.text[:80]}", markup=False)
    finally:
        await runtime.stop()


@app.command(name="demo-distributed")
def demo_distributed(
    text: Annotated[str, typer.Option(help="The message to send.")] = "Hello! Who are you?",
) -> None:
    """Run NATS, memory, runtime and gateway as processes; send one message over HTTP."""
    import tempfile  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    from shared.natsserver import NatsServer, free_port, wait_for_port  # noqa: PLC0415
    from shared.processes import service_process  # noqa: PLC0415

    out = console()
    with ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="elizamesh-demo-")))
        character = data / "eliza.json"
        character.write_text(
            json.dumps({"name": "Eliza", "id": "eliza", "bio": ["A friendly agent."]})
        )
        out.print("[bold]starting[/] the bundled nats-server ...")
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
            out.print(f"[bold]starting[/] the {name} service ...")
            stack.enter_context(service_process(name, env, echo_to=sys.stdout, own_group=True))
        wait_for_port("127.0.0.1", port, timeout=30)
        base = f"http://127.0.0.1:{port}/v1"
        _wait_for_agent(f"{base}/agents", "eliza")
        body = {"entity_id": "demo-user", "room_id": "demo-room", "content": {"text": text}}
        out.print(f"[bold]POST[/] {base}/agents/eliza/messages\n  {json.dumps(body)}")
        started = time.perf_counter()
        reply = httpx.post(f"{base}/agents/eliza/messages", json=body, timeout=60)
        elapsed_ms = (time.perf_counter() - started) * 1000
        out.print(f"[bold]{reply.status_code}[/] in {elapsed_ms:.0f} ms\n  {reply.text}")
        if reply.is_error:
            raise typer.Exit(1)
    out.print("stopped everything.")


def _wait_for_agent(
    url: str,
    agent_id: str,
    *,
    timeout: float = 60,
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
) -> None:
    """Wait until the gateway at ``url`` lists ``agent_id``; fail early if a service died."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _fail_if_one_exited(processes or {})
        try:
            reply = httpx.get(url, timeout=5)
            if reply.is_success and agent_id in {a["id"] for a in reply.json()["agents"]}:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    fail(f"agent {agent_id} did not come up within {timeout:g}s (see the services' lines above)")


def _fail_if_one_exited(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, process in processes.items():
        if (code := process.poll()) is not None:
            fail(f"the {name} service exited with code {code} (its lines are above)")


def _connector_name(name: str | None) -> str | None:
    """Refuse, as a bad option, a connector name no NATS user or run could have."""
    from contracts.subjects import InvalidIdError, validate_owner  # noqa: PLC0415

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
    from shared.config import CommonSettings  # noqa: PLC0415

    settings = read_settings(CommonSettings)
    reach_nats(settings.nats_url)
    from elizamesh.connectors import terminal_chat  # noqa: PLC0415
    from shared.errors import ServiceError  # noqa: PLC0415

    try:
        asyncio.run(
            terminal_chat(
                settings.nats_url, settings.subjects, agent, user=user, connector=connector
            )
        )
    except KeyboardInterrupt:
        console().print()
    except ServiceError as exc:
        fail(str(exc))


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
    from shared.config import Settings  # noqa: PLC0415

    settings = read_settings(Settings)
    reach_nats(settings.nats_url)
    from elizamesh.connectors import webhook_connector  # noqa: PLC0415
    from shared.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level)
    connector_app = webhook_connector(settings, source=source, url=url, connector=connector)
    asyncio.run(connector_app.run())


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
        fail(str(exc), code=2)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(
        "# Generated by `elizamesh nats-config` from contracts/subjects.py: do not edit by hand.\n"
        + text
    )
    console().print(f"wrote {out}")


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
    from shared.config import Settings  # noqa: PLC0415

    settings = read_settings(Settings)
    reach_nats(settings.nats_url)
    from elizamesh.connectors import stack_health  # noqa: PLC0415
    from shared.health import on_this_host  # noqa: PLC0415

    answers = [
        answer
        for answer in asyncio.run(stack_health(settings, window=window))
        if (service is None or answer.service == service)
        and (not this_host or on_this_host(answer))
    ]
    out = console()
    for answer in answers:
        mark = "[green]ok[/]" if answer.ok else "[red]NOT OK[/]"
        out.print(f"{mark}  {answer.service:<10} {answer.instance}  {answer.details}")
        for consumer in answer.consumers:
            out.print(
                f"      {consumer.name:<16} alive={consumer.alive} pending={consumer.pending} "
                f"ack_pending={consumer.ack_pending}"
            )
    if not answers:
        out.print("[red]no service answered[/]")
    if not answers or not all(a.ok for a in answers):
        raise typer.Exit(1)


# -- up -----------------------------------------------------------------------------


def read_characters(paths: list[Path]) -> list[Character]:
    """Read and check every character file; exit with one line per problem before anything starts.

    A file that cannot be read or parsed, a bad field, a plugin that cannot be
    found, or two files with the same agent id are problems.
    """
    from shared.agent.character import Character, CharacterError  # noqa: PLC0415
    from shared.agent.plugin import PluginError, resolve_plugins  # noqa: PLC0415

    problems: list[str] = []
    characters: list[Character] = []
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            character = Character.from_file(path)
            resolve_plugins(character.plugins, optional=character.plugins)
        except (CharacterError, PluginError) as exc:
            lines = str(exc).splitlines()  # several problems: a heading, then one a line
            problems.extend(f"--character {path}: {line}" for line in lines[1:] or lines)
            continue
        if (first := seen.get(character.agent_id)) is not None:
            problems.append(f"--character {path}: agent id {character.agent_id} is {first}'s too")
            continue
        seen[character.agent_id] = path
        characters.append(character)
    if problems:
        fail("\n".join(problems), code=2)
    return characters


@app.command()
def up(
    character: Annotated[
        list[Path] | None, typer.Option(help="Character JSON files (default: Eliza).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Gateway HTTP port (default: API_PORT, else 3000).")
    ] = None,
) -> None:
    """Run the whole stack here: nats-server and the five services; Ctrl-C stops it all.

    Uses NATS_URL and DATABASE_URL when set; otherwise the bundled nats-server
    (on 4222 when free) and SQLite under ./.elizamesh/. Each service's lines
    are shown prefixed with its name.
    """
    # First of all: started in the background by a shell, this process ignores
    # SIGINT until here, so a Ctrl-C-by-signal sent earlier would be lost.
    _stop_on_signals()
    # What was started is stopped by the time an interrupt gets here.
    with suppress(KeyboardInterrupt):
        from shared.config import Settings  # noqa: PLC0415

        settings = read_settings(Settings)
        paths = character or [Path(__file__).parent / "characters" / "eliza.json"]
        characters = read_characters(paths)
        api_port = port or settings.api_port
        external_nats = "nats_url" in settings.model_fields_set
        if external_nats:
            reach_nats(settings.nats_url)
        bundled = "" if external_nats else "nats-server, "
        console().print(f"starting {bundled}{', '.join(SERVICES)} ...")
        _run_stack(settings, paths, characters[0].agent_id, api_port, external_nats=external_nats)
    console().print("stopped everything.")


def _run_stack(
    settings: Settings, paths: list[Path], agent_id: str, api_port: int, *, external_nats: bool
) -> None:
    from shared.natsserver import NatsServer, free_port  # noqa: PLC0415
    from shared.processes import service_process  # noqa: PLC0415

    out = console()
    with ExitStack() as stack:
        nats_url = settings.nats_url
        if not external_nats:
            nats_port = 4222 if _port_free(4222) else free_port()
            nats_url = stack.enter_context(NatsServer(port=nats_port)).url
        env = {
            "NATS_URL": nats_url,
            "API_PORT": str(api_port),
            "AGENT_CHARACTERS": ",".join(str(p.resolve()) for p in paths),
            # Quiet unless asked: the services' lines show here, prefixed.
            "LOG_LEVEL": settings.log_level
            if "log_level" in settings.model_fields_set
            else "WARNING",
            "EMBEDDINGS": "remote",
            "EVALUATORS": "remote",
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name in SERVICES:
                processes[name] = stack.enter_context(
                    service_process(name, env, echo_to=sys.stdout, own_group=True)
                )
            _wait_for_agent(f"http://127.0.0.1:{api_port}/v1/agents", agent_id, processes=processes)
            out.print(f"[bold green]up[/]: NATS {nats_url}, gateway http://127.0.0.1:{api_port}")
            out.print(
                f"  talk to it:  NATS_URL={nats_url} ELIZA_NS={settings.eliza_ns} elizamesh chat"
            )
            out.print("  stop it:     Ctrl-C")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            out.print("stopping ...")
            raise
        finally:
            # Those that use the memory service all at once; it, then NATS, after
            # them (the stack unwinds in reverse), so each drains against both.
            for name, process in processes.items():
                if name != "memory" and process.poll() is None:
                    process.send_signal(signal.SIGTERM)


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


# -- agent --------------------------------------------------------------------------


def _gateway(path: str, method: str = "GET", body: object = None) -> object:
    """Call the gateway's API; exit with one line on any failure. Returns the JSON answer."""
    import httpx  # noqa: PLC0415

    from shared.config import GatewaySettings  # noqa: PLC0415

    settings = read_settings(GatewaySettings)
    base = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"authorization": f"Bearer {min(settings.api_keys)}"} if settings.api_keys else {}
    try:
        reply = httpx.request(method, base + path, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        fail(
            f"cannot reach the gateway at {base} (API_HOST, API_PORT): {_reason(exc)}; "
            "is the stack up (elizamesh up)?"
        )
    if reply.is_error:
        try:
            error = reply.json()
            detail = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            detail = reply.text[:200]
        fail(f"{method} {path}: {reply.status_code} {detail}")
    answer: object = reply.json()
    return answer


def _gateway_answer(
    shape: type[_Answer], path: str, method: str = "GET", body: object = None
) -> _Answer:
    """``_gateway``'s answer as ``shape`` (a contract type); exit with one line if it is not one."""
    import msgspec  # noqa: PLC0415

    answer = _gateway(path, method, body)
    try:
        return msgspec.convert(answer, shape)
    except msgspec.ValidationError as exc:
        fail(f"{method} {path}: unexpected answer from the gateway: {exc}")


@agent_app.command(name="list")
def agent_list() -> None:
    """List the stored agents, running or not."""
    from contracts.events import AgentList  # noqa: PLC0415

    agents = _gateway_answer(AgentList, "/v1/agents").agents
    for agent in agents:
        state = "running" if agent.enabled else "stopped"
        typer.echo(f"{agent.id:<24} {agent.name:<24} {state}")
    if not agents:
        typer.echo("no agents")


@agent_app.command(name="add")
def agent_add(
    character: Annotated[Path, typer.Option(help="The character JSON file.")],
    plugin: Annotated[
        list[str] | None, typer.Option(help="A plugin (repeat for more); default: its own.")
    ] = None,
) -> None:
    """Add an agent from a character file and start it on every runtime replica."""
    read_characters([character])  # one line per problem, before anything is sent
    body = {"character": json.loads(character.read_text()), "plugins": plugin or []}
    from contracts.control import AgentStatus  # noqa: PLC0415

    status = _gateway_answer(AgentStatus, "/v1/agents", "POST", body)
    typer.echo(f"added {status.id} ({status.name})")


@agent_app.command(name="start")
def agent_start(agent_id: Annotated[str, typer.Argument(help="The agent's id.")]) -> None:
    """Start a stored agent."""
    _gateway(f"/v1/agents/{agent_id}/start", "POST")
    typer.echo(f"started {agent_id}")


@agent_app.command(name="stop")
def agent_stop(agent_id: Annotated[str, typer.Argument(help="The agent's id.")]) -> None:
    """Stop an agent (it stays stored)."""
    _gateway(f"/v1/agents/{agent_id}/stop", "POST")
    typer.echo(f"stopped {agent_id}")


@agent_app.command(name="remove")
def agent_remove(agent_id: Annotated[str, typer.Argument(help="The agent's id.")]) -> None:
    """Stop an agent and delete it with its memories."""
    _gateway(f"/v1/agents/{agent_id}", "DELETE")
    typer.echo(f"removed {agent_id}")
