"""The OpenAPI document is the gateway: schemathesis finds nothing it does that the document denies.

schemathesis (a tool nobody here wrote) reads ``/schema/openapi.json``,
generates valid and invalid requests for every operation and checks every
answer against the document: status codes, bodies, headers, ``Allow`` on 405,
no server error. The gateway runs in front of a real runtime and memory
service; the number of examples per operation is bounded so this stays short.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts import Subjects
from tests.gateway_stack import GatewayStack, gateway_stack
from tests.scripted import ScriptedModel, plan

EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMATHESIS_EXAMPLES") or 8)
"""Per operation and phase; set ``SCHEMATHESIS_EXAMPLES`` for a deeper run."""
KEY = "schemathesis-key"
RUNTIME_SECRET_KEY = uuid.uuid4().hex
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    model = ScriptedModel(default=plan("fine"))
    async with gateway_stack(
        nats_url,
        subjects,
        tmp_path,
        model,
        api_keys=KEY,
        request_timeout=3,
        secret_key=RUNTIME_SECRET_KEY,  # agents with secrets are accepted
    ) as running:
        yield running


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_difference_between_the_document_and_the_gateway(
    stack: GatewayStack, tmp_path: Path
) -> None:
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{stack.url}/schema/openapi.json",
        "--checks",
        "all",
        # A 5xx is allowed only where the document says so (status_code_conformance):
        # 502 for a turn that failed (an agent added without a model), 503 for no answer.
        "--exclude-checks",
        "not_a_server_error",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "18",
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--generation-database",
        "none",
        "--no-color",
        "--header",
        f"Authorization: Bearer {KEY}",
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    print(*[line for line in report.splitlines() if "generated" in line], sep="\n")
    assert "No issues found" in report or "passed" in report, report


async def test_the_document_names_the_gateway_its_keys_and_its_errors(
    stack: GatewayStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers={"x-api-key": KEY}) as http:
        spec = (await http.get("/schema/openapi.json")).json()
        assert spec["info"]["title"] == "elizamesh gateway"
        assert spec["info"]["version"] != "1.0.0"
        schemes = spec["components"]["securitySchemes"]
        assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
        assert schemes["apiKey"]["in"] == "header"
        assert schemes["apiKey"]["name"] == "X-API-Key"
        send = spec["paths"]["/v1/agents/{agent_id}/messages"]["post"]["responses"]
        for status in ("400", "401", "404", "409", "503"):
            schema = send[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, status
        assert spec["paths"]["/v1/health"]["get"]["security"] == [{}]
        page = await http.get("/schema")
        assert page.status_code == 200
        assert "<script" not in page.text  # works offline: nothing to load
        assert "/v1/chat/completions" in page.text
        for link in ("/schema/openapi.json", "/schema/openapi.yaml"):
            assert f'href="{link}"' in page.text
            assert (await http.get(link)).status_code == 200


async def test_a_wrong_method_is_a_405_with_allow_and_options_lists_every_method(
    stack: GatewayStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.url, headers={"x-api-key": KEY}) as http:
        wrong = await http.put("/v1/agents")
        assert wrong.status_code == 405
        assert wrong.json()["type"] == "error.v1"
        assert {"GET", "POST"} <= {m.strip() for m in wrong.headers["allow"].split(",")}
        options = await http.options("/v1/agents")
        assert options.status_code in {200, 204}
        assert {"GET", "POST"} <= {m.strip() for m in options.headers["allow"].split(",")}
