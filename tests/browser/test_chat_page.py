"""The chat page on a phone: it streams the answer as Markdown, keeps the history, shows failures.

Headless Chromium at 390x844 (a phone) loads the page from the gateway, in
front of a real runtime and memory service on a real nats-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route, ViewportSize, expect

from contracts import Subjects
from tests.gateway_stack import GatewayStack, gateway_stack
from tests.scripted import ScriptedModel, plan

PHONE: ViewportSize = {"width": 390, "height": 844}
ANSWER = "Here is **bold** and a list:\n\n- one\n- two\n\n<img src=x onerror=alert(1)>"


@pytest.fixture
async def stack(nats_url: str, subjects: Subjects, tmp_path: Path) -> AsyncIterator[GatewayStack]:
    async with gateway_stack(
        nats_url, subjects, tmp_path, ScriptedModel(default=plan(ANSWER))
    ) as s:
        yield s


@pytest.fixture
async def page(browser: Browser, stack: GatewayStack) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    await opened.goto(stack.url)
    yield opened
    await context.close()
    assert errors == []  # no uncaught exception, whatever happened


async def send(page: Page, text: str) -> None:
    await page.fill("#text", text)
    await page.click("#send")


async def test_on_a_phone_a_message_gets_a_streamed_markdown_answer_kept_after_reload(
    page: Page, stack: GatewayStack
) -> None:
    width = await page.evaluate("document.documentElement.clientWidth")
    assert width == PHONE["width"]  # the viewport tag: laid out at the phone's width
    scroll_width = await page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= PHONE["width"]  # nothing wider than the screen
    await expect(page.locator("#agent option")).to_have_count(1)
    await send(page, "Tell me\nsomething")
    answer = page.locator(".msg.agent .body").last
    await expect(answer.locator("strong")).to_have_text("bold")
    await expect(answer.locator("li")).to_have_text(["one", "two"])
    await expect(answer).to_contain_text("<img src=x onerror=alert(1)>")  # shown, not run
    assert await answer.locator("img").count() == 0
    said = page.locator(".msg.you .body").last
    assert await said.inner_text() == "Tell me\nsomething"  # newlines kept
    assert await page.locator(".msg.agent .body:empty").count() == 0

    await page.reload()
    await expect(page.locator(".msg.you .body")).to_have_text(["Tell me\nsomething"])
    history = page.locator(".msg.agent .body")
    await expect(history).to_have_count(1)
    await expect(history.locator("strong")).to_have_text("bold")


async def test_a_failing_gateway_is_a_clear_error_and_no_empty_answer(page: Page) -> None:
    async def bad_gateway(route: Route) -> None:
        await route.fulfill(
            status=502, body="<html>502 Bad Gateway</html>", content_type="text/html"
        )

    await page.route("**/messages/stream", bad_gateway)
    await send(page, "hello?")
    error = page.locator(".msg.error")
    await expect(error).to_contain_text("HTTP 502")
    assert await page.locator(".msg.agent").count() == 0

    async def unreachable(route: Route) -> None:
        await route.abort("connectionrefused")

    await page.unroute("**/messages/stream")
    await page.route("**/messages/stream", unreachable)
    await send(page, "anyone?")
    await expect(error.last).to_contain_text("cannot reach the gateway", timeout=15_000)
    assert await page.locator(".msg.agent").count() == 0
    await expect(page.locator("#send")).to_be_enabled()


async def test_the_stop_button_ends_a_slow_answer(page: Page, stack: GatewayStack) -> None:
    stack.model.gate = asyncio.Event()
    await send(page, "take your time")
    stop = page.locator("#stop")
    await expect(stop).to_be_visible()
    await stop.click()
    await expect(page.locator(".notice").last).to_have_text("(stopped)")
    await expect(page.locator("#send")).to_be_enabled()
    stack.model.gate.set()
