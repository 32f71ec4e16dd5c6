r"""Remote parts: a provider or an action served by a process of its own, over NATS.

A runtime that lists a provider in ``REMOTE_PROVIDERS`` (an action in
``REMOTE_ACTIONS``) asks ``<ns>.provider.<name>.get`` (``<ns>.action.<name>.invoke``)
during each turn; a function served here answers it. The process connects with
``NATS_URL`` and ``ELIZA_NS``, logs and traces as the services do, answers
``<ns>.health``, and replies to a request it cannot decode, or a function that
raises, with an ``Error`` (the runtime then goes on without that part)::

    import elizamesh
    from elizamesh import GetProvider, ProviderOutput

    async def weather(request: GetProvider) -> ProviderOutput:
        return ProviderOutput(text="# Weather\nSunny.")

    elizamesh.serve_provider("WEATHER", weather)
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping

from faststream import FastStream

from contracts.providers import ActionOutput, GetProvider, InvokeAction, ProviderOutput
from contracts.subjects import validate_id
from shared.bus import create_broker, service_app
from shared.config import Settings
from shared.health import no_consumers, serve_health
from shared.logs import configure_logging
from shared.telemetry import bus_telemetry, setup_telemetry

ProviderFunction = Callable[[GetProvider], ProviderOutput | Awaitable[ProviderOutput]]
"""Answers a provider request: what it adds to the agent's state (sync or async)."""

ActionFunction = Callable[[InvokeAction], ActionOutput | Awaitable[ActionOutput]]
"""Runs an action for a message; ``ActionOutput.text``, if any, is sent to the user."""


def remote_parts_app(
    *,
    providers: Mapping[str, ProviderFunction] | None = None,
    actions: Mapping[str, ActionFunction] | None = None,
    settings: Settings | None = None,
    service: str = "remote-parts",
) -> FastStream:
    """Return the FastStream app that serves ``providers`` and ``actions`` by name.

    Replicas of the process share the work: each name is served in a queue
    group of its own. ``settings`` defaults to ``Settings.from_env()``;
    ``service`` names the process in health answers, traces and NATS monitoring.

    Raises:
        ValueError: a name is not 1-64 characters of ``[A-Za-z0-9_-]``, or
            nothing is given to serve.
    """
    providers = dict(providers or {})
    actions = dict(actions or {})
    if not providers and not actions:
        raise ValueError("remote_parts_app: give at least one provider or action to serve")
    for name in [*providers, *actions]:
        validate_id(name, what="remote part name")
    settings = settings or Settings.from_env()
    broker = create_broker(
        settings.nats_url, name=service, middlewares=[bus_telemetry(setup_telemetry(service))]
    )
    subjects = settings.subjects
    for name, provide in providers.items():
        broker.subscriber(
            subjects.provider_get(name),
            queue=f"provider-{name}",
            title=f"provider {name}",
            description=_describe(provide, f"The remote provider {name}."),
        )(_provider_handler(provide))
    for name, act in actions.items():
        broker.subscriber(
            subjects.action_invoke(name),
            queue=f"action-{name}",
            title=f"action {name}",
            description=_describe(act, f"The remote action {name}."),
        )(_action_handler(act))
    serve_health(broker, subjects, service, no_consumers)
    return service_app(broker)


def serve_provider(name: str, function: ProviderFunction, *, service: str | None = None) -> None:
    """Serve ``function`` as the provider ``name`` until the process is stopped (blocks).

    Raises:
        ValueError: ``name`` is not 1-64 characters of ``[A-Za-z0-9_-]``.
    """
    _serve(
        lambda settings: remote_parts_app(
            providers={name: function}, settings=settings, service=service or name.lower()
        )
    )


def serve_action(name: str, function: ActionFunction, *, service: str | None = None) -> None:
    """Serve ``function`` as the action ``name`` until the process is stopped (blocks).

    Raises:
        ValueError: ``name`` is not 1-64 characters of ``[A-Za-z0-9_-]``.
    """
    _serve(
        lambda settings: remote_parts_app(
            actions={name: function}, settings=settings, service=service or name.lower()
        )
    )


def _serve(build: Callable[[Settings], FastStream]) -> None:
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    asyncio.run(build(settings).run())


def _describe(function: Callable[..., object], default: str) -> str:
    # The function's docstring becomes the channel's AsyncAPI description.
    return inspect.getdoc(function) or default


def _provider_handler(
    provide: ProviderFunction,
) -> Callable[[GetProvider], Awaitable[ProviderOutput]]:
    async def answer(request: GetProvider) -> ProviderOutput:
        output = provide(request)
        return await output if inspect.isawaitable(output) else output

    return answer


def _action_handler(act: ActionFunction) -> Callable[[InvokeAction], Awaitable[ActionOutput]]:
    async def run(request: InvokeAction) -> ActionOutput:
        output = act(request)
        return await output if inspect.isawaitable(output) else output

    return run
