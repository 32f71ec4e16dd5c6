"""The gateway's OpenAPI document: errors, keys, and a browsable page that works offline.

Every error body is the ``Error`` envelope (``error.v1``), except the
OpenAI-compatible routes, which answer in OpenAI's shape. The browsable page
at ``/schema`` is rendered on the server from the document itself: no script,
nothing loaded from a CDN, so it shows the same offline as online.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, entry_points, version

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from contracts import Error, HandleMessage, HandleMessageResult
from contracts.control import AddAgent, AgentStatus
from contracts.events import AgentList
from services.gateway.bodies import Readiness, RoomMessages, StackReadiness
from services.gateway.completions import ChatCompletionRequest
from shared.agent.character import Character
from shared.json_value import JsonObject, JsonValue

TITLE = "elizamesh gateway"
BEARER = "bearer"
API_KEY = "apiKey"
SECURED: list[dict[str, list[str]]] = [{BEARER: []}, {API_KEY: []}]
"""Either scheme proves the caller (when ``GATEWAY_API_KEYS`` is set)."""
PUBLIC: list[dict[str, list[str]]] = [{}]
"""Routes that need no key (probes, the chat page)."""

_ERRORS = {
    400: "Bad input: the `details` name each wrong field.",
    401: "A valid API key is required (GATEWAY_API_KEYS is set).",
    404: "No such agent (or room).",
    409: "The request conflicts with the current state (e.g. the agent exists).",
    503: "No service answered in time; `retryable` is true.",
}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """The ``Error`` responses a route can give, for its ``responses=`` (400 and 401 always)."""
    return {
        status: ResponseSpec(data_container=Error, description=_ERRORS[status])
        for status in sorted({400, 401, *statuses})
    }


def package_version() -> str:
    """The installed elizamesh version (``0+unknown`` when run from an uninstalled tree)."""
    try:
        return version("elizamesh")
    except PackageNotFoundError:
        return "0+unknown"


WIRE_TYPES: tuple[type[msgspec.Struct], ...] = (
    HandleMessage,
    HandleMessageResult,
    AddAgent,
    AgentStatus,
    AgentList,
    Error,
    Character,
    ChatCompletionRequest,
    Readiness,
    StackReadiness,
    RoomMessages,
)
"""Contract types whose schema is msgspec's own (what decoding enforces, patterns included)."""
UNTAGGED = ("HandleMessage", "AddAgent")
"""Request bodies whose ``type`` tag may be left out: the route says which message it is."""
REQUEST_BODIES = {
    "/v1/agents/{agent_id}/messages": "HandleMessage",
    "/v1/agents/{agent_id}/messages/stream": "HandleMessage",
    "/v1/agents": "AddAgent",
    "/v1/chat/completions": "ChatCompletionRequest",
}
"""The JSON body each ``POST`` decodes (by hand, strictly: ``bodies.decode_body``)."""


SSE_EVENT = {
    "type": "object",
    "description": "One server-sent event: data is a chat.completion.chunk as JSON, an "
    '{"error": ...}, or [DONE] at the end.',
    "required": ["data"],
    "properties": {
        "data": {"type": "string"},
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def wire_schemas(document: Mapping[str, object]) -> dict[str, object]:
    """``document`` with the contract types' schemas as msgspec generates and enforces them.

    Litestar's own rendering of these Structs loses constraints (an optional
    id's pattern) and cannot know what the runtime checks in an agent's
    character; msgspec's is the one the gateway and the runtime decode with.
    """
    patched = copy.deepcopy(dict(document))
    _, components = msgspec.json.schema_components(
        WIRE_TYPES, ref_template="#/components/schemas/{name}"
    )
    for name in UNTAGGED:
        required = components[name].get("required", [])
        components[name]["required"] = [field for field in required if field != "type"]
    components["AddAgent"]["properties"]["character"] = {
        "$ref": "#/components/schemas/Character",
        "description": "An elizaOS character (snake_case keys).",
    }
    plugins = {"type": "string", "enum": installed_plugins()}
    components["AddAgent"]["properties"]["plugins"]["items"] = plugins
    components["Character"]["properties"]["plugins"]["items"] = plugins
    for name in STORED:
        components[name] = _storable(components[name])
    components["StoredValue"] = STORED_VALUE
    _child(_child(patched, "components"), "schemas").update(components)
    paths = _at(patched, "paths")
    for path, name in REQUEST_BODIES.items():
        _at(paths, path, "post")["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
        }
    completions = _at(paths, "/v1/chat/completions", "post", "responses", "200")
    _child(completions, "content")["text/event-stream"] = {"schema": SSE_EVENT}
    for item in paths.values():
        for operation in _at(item).values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                _absent_is_not_null(parameter)
    return patched


def _at(node: object, *keys: str) -> dict[str, object]:
    """The JSON object at ``node[keys[0]][keys[1]]...``.

    Raises:
        KeyError: a key is missing.
        TypeError: a step is not a JSON object.
    """
    if not isinstance(node, dict):
        raise TypeError("the OpenAPI document is not an object")
    for key in keys:
        node = node[key]
        if not isinstance(node, dict):
            raise TypeError(f"the OpenAPI document has no object at {'/'.join(keys)}")
    return node


def _child(node: dict[str, object], key: str) -> dict[str, object]:
    """The JSON object ``node[key]``, made empty when absent (TypeError if not an object)."""
    child = node.setdefault(key, {})
    if not isinstance(child, dict):
        raise TypeError(f"{key!r} of the OpenAPI document is not an object")
    return child


NO_NUL: JsonObject = {"type": "string", "pattern": "^[^\\u0000]*$"}
"""A string the database can store (Postgres text holds no NUL character)."""
STORED_VALUE: JsonObject = {
    "description": "Any JSON value without a NUL character in its strings or keys.",
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        NO_NUL,
        {"type": "array", "items": {"$ref": "#/components/schemas/StoredValue"}},
        {
            "type": "object",
            "propertyNames": NO_NUL,
            "additionalProperties": {"$ref": "#/components/schemas/StoredValue"},
        },
    ],
}
STORED = ("Character", "Style", "MessageExample")
"""Schemas whose every string is stored as it is (an agent's character)."""


def _storable(schema: JsonValue) -> JsonValue:
    """``schema`` with every string and key free of NUL, as storage requires."""
    if isinstance(schema, list):
        return [_storable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: _storable(value) for key, value in schema.items()}
    if node.get("type") == "string" and not {"pattern", "enum", "const"} & node.keys():
        node["pattern"] = NO_NUL["pattern"]
    if node.get("type") == "object":
        node["propertyNames"] = NO_NUL
        if "properties" not in node and "additionalProperties" not in node:
            node["additionalProperties"] = {"$ref": "#/components/schemas/StoredValue"}
    return node


def _absent_is_not_null(parameter: dict[str, object]) -> None:
    """An optional header or query parameter is left out, never sent as ``null``."""
    schema = parameter.get("schema", {})
    if not isinstance(schema, dict):
        return
    choices = schema.get("oneOf")
    if parameter.get("in") in {"header", "query"} and isinstance(choices, list) and choices:
        kept = [c for c in choices if isinstance(c, dict) and c.get("type") != "null"]
        if len(kept) == 1:
            parameter["schema"] = {**{k: v for k, v in schema.items() if k != "oneOf"}, **kept[0]}


def installed_plugins() -> list[str]:
    """The plugin names an agent may ask for here (the ``elizamesh.plugins`` entry points)."""
    return sorted({entry.name for entry in entry_points(group="elizamesh.plugins")})


class WireJson(JsonRenderPlugin):
    """``openapi.json`` with the contract types' own schemas (see ``wire_schemas``)."""

    def render(
        self, request: Request[object, object, State], openapi_schema: dict[str, object]
    ) -> bytes:
        """The document as JSON."""
        return super().render(request, wire_schemas(openapi_schema))


class OfflinePage(OpenAPIRenderPlugin):
    """The document as plain HTML: every operation, its summary and answers; no scripts."""

    def render(
        self, request: Request[object, object, State], openapi_schema: dict[str, object]
    ) -> bytes:
        """The page for ``openapi_schema``."""
        info = _object(openapi_schema.get("info"))
        rows = []
        for path, item in _object(openapi_schema.get("paths")).items():
            for method, operation in _object(item).items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                answers = ", ".join(operation["responses"])
                rows.append(
                    f"<tr><td><code>{html.escape(method.upper())}</code></td>"
                    f"<td><code>{html.escape(path)}</code></td>"
                    f"<td>{html.escape(operation.get('summary', ''))}</td>"
                    f"<td>{html.escape(answers)}</td></tr>"
                )
        title = html.escape(f"{info.get('title', TITLE)} {info.get('version', '')}")
        json_url = html.escape(self.get_openapi_json_route(request))
        yaml_url = json_url.removesuffix(".json") + ".yaml"
        page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1rem auto;max-width:60rem;padding:0 1rem}}
td{{padding:.2rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}}</style></head>
<body><h1>{title}</h1>
<p>The full document: <a href="{json_url}">{json_url}</a> (OpenAPI 3.1, JSON; also
<a href="{yaml_url}">YAML</a>). Errors are the <code>Error</code> envelope; keys go in
<code>Authorization: Bearer &lt;key&gt;</code> or <code>X-API-Key</code>.</p>
<table><tr><th>method</th><th>path</th><th>summary</th><th>answers</th></tr>
{"".join(rows)}</table></body></html>"""
        return page.encode()


def _object(value: object) -> dict[str, object]:
    """``value`` if it is a JSON object, else an empty one (the page shows what it can)."""
    return value if isinstance(value, dict) else {}


def openapi_config(*, keys_required: bool) -> OpenAPIConfig:
    """The gateway's OpenAPI configuration: title, version, key schemes, offline pages.

    The key schemes are always declared; routes require one only when
    ``keys_required`` (``GATEWAY_API_KEYS`` is set), as the gateway does.
    """
    return OpenAPIConfig(
        title=TITLE,
        version=package_version(),
        description="HTTP, SSE and WebSocket front door to the elizamesh agents on NATS.",
        security=SECURED if keys_required else None,
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(type="http", scheme="bearer"),
                API_KEY: SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
            }
        ),
        path="/schema",
        render_plugins=[
            OfflinePage(path="/"),
            WireJson(path="/openapi.json"),
            YamlRenderPlugin(path="/openapi.yaml"),
        ],
    )
