"""The dashboard in a real browser (Debian's chromium through Playwright) against a real server: sign in, see a
session appear when the SDK's Python client connects, call ``echo`` from the generated form and see its result and
raw frames, a ticket that expires, a principal who does not see another's sessions, and a session on one instance
of a two-instance cluster watched live through the other. Each test keeps a
screenshot (see conftest.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import Browser, Page, expect

from datapulse.auth.tickets import MemoryTicketStore
from tests.dashboard.conftest import ARTIFACTS
from tests.support.cluster import spawn_cluster
from tests.support.redis_server import RedisServer
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, TOKEN, RunningServer, bearer, make_settings, serve_in_process

pytestmark = pytest.mark.anyio

TIMEOUT_MS = 15_000


@asynccontextmanager
async def dashboard(browser: Browser, server: RunningServer, token: str) -> AsyncIterator[Page]:
    """A new browser context on ``server``'s dashboard, signed in with ``token`` through the form."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await page.goto(f"{server.url}/dashboard/")
        await page.fill("#token", token)
        await page.click("#sign-in")
        await expect(page.locator("#whoami")).to_be_visible()
        yield page
    finally:
        await context.close()
    assert errors == [], errors


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_signing_in_shows_the_principal_and_keeps_no_token_in_storage(browser: Browser) -> None:
    async with serve_in_process() as server, dashboard(browser, server, ALICE_TOKEN) as page:
        await expect(page.locator("#whoami")).to_contain_text("alice")
        await expect(page.locator("#sign-in-form")).to_be_hidden()
        storage = await page.evaluate("() => JSON.stringify({...sessionStorage, ...localStorage})")
        assert ALICE_TOKEN not in storage
        assert "dpt_" in storage  # the ticket, in sessionStorage only
        assert await page.input_value("#token") == ""
        await shot(page, "signed-in")
        await page.click("#sign-out")
        await expect(page.locator("#sign-in-form")).to_be_visible()
        assert "dpt_" not in await page.evaluate("() => JSON.stringify({...sessionStorage})")


async def test_a_session_appears_when_the_sdk_client_connects(browser: Browser) -> None:
    async with serve_in_process() as server, dashboard(browser, server, ALICE_TOKEN) as page:
        await page.click("[data-tab=sessions]")
        async with (
            httpx2.AsyncClient(headers=bearer(ALICE_TOKEN), timeout=10.0) as http,
            Client(streamable_http_client(f"{server.url}/mcp", http_client=http), mode="legacy") as client,
        ):
            await client.call_tool("echo", {"message": "hello"})
            (session_id,) = [session.id for session in server.runtime.sessions.live_sessions()]
            row = page.locator(f'#sessions-table tr[data-session-id="{session_id}"]')
            await expect(row).to_be_visible()
            await expect(row.locator(".transport")).to_contain_text("streamable_http")
            await expect(row.locator(".principal")).to_contain_text("alice")
            await shot(page, "sessions")


async def test_echo_called_from_the_form_shows_its_result_and_raw_frames(browser: Browser) -> None:
    async with serve_in_process() as server, dashboard(browser, server, ALICE_TOKEN) as page:
        await page.click("[data-tab=try]")
        await page.select_option("#try-tool", "echo")
        await page.fill('#try-form [name="message"]', "hello from the browser")
        await page.click("#try-run")
        await expect(page.locator("#try-result")).to_contain_text("hello from the browser")
        frames = page.locator("#try-frames .frame")
        await expect(frames.last).to_contain_text("tool_result")
        await expect(frames.last).to_contain_text("id: ")  # the raw SSE frame, event id and all
        await shot(page, "try-echo")
        result = json.loads(await page.locator("#try-result").inner_text())
        assert result == {"result": "hello from the browser"}


async def test_an_expired_ticket_sends_the_page_back_to_sign_in(browser: Browser) -> None:
    async with serve_in_process(make_settings(dashboard_ticket_ttl_s=60)) as server:
        tickets = server.runtime.security.tickets
        assert isinstance(tickets, MemoryTicketStore)
        now = [1000.0]
        tickets._clock = lambda: now[0]  # the store's clock: no minute-long wait
        async with dashboard(browser, server, ALICE_TOKEN) as page:
            await page.click("[data-tab=sessions]")
            now[0] += 61
            await expect(page.locator("#sign-in-form")).to_be_visible()  # the next poll is refused
            await expect(page.locator("#sign-in-error")).to_contain_text("sign in again")
            await shot(page, "ticket-expired")


async def test_a_principal_who_is_no_admin_does_not_see_anothers_sessions(browser: Browser) -> None:
    async with serve_in_process() as server:
        async with server.client(BOB_TOKEN) as bob, server.client(ALICE_TOKEN) as alice:
            for http, session_id in ((bob, "bobs-session"), (alice, "alices-session")):
                answer = await http.post(
                    f"/message?session_id={session_id}", json={"type": "list_tools", "request_id": "r1", "data": {}}
                )
                assert answer.status_code == 202
        async with dashboard(browser, server, ALICE_TOKEN) as page:
            await page.click("[data-tab=sessions]")
            await expect(page.locator('#sessions-table tr[data-session-id="alices-session"]')).to_be_visible()
            await expect(page.locator('#sessions-table tr[data-session-id="bobs-session"]')).to_have_count(0)
            await expect(page.locator("#whoami")).not_to_contain_text("admin")
        async with dashboard(browser, server, TOKEN) as page:  # local: an admin by default
            await page.click("[data-tab=sessions]")
            await expect(page.locator('#sessions-table tr[data-session-id="bobs-session"]')).to_be_visible()
            await expect(page.locator("#whoami")).to_contain_text("admin")
            await shot(page, "admin-sessions")


async def test_a_session_on_another_instance_is_watched_live(browser: Browser, redis_server: RedisServer) -> None:
    call = {"type": "call_tool", "request_id": "r1", "data": {"name": "echo", "arguments": {"message": "x"}}}
    async with (
        spawn_cluster(redis_server.url, n=2) as (owner, other),
        httpx2.AsyncClient(base_url=owner.url, headers=bearer(ALICE_TOKEN), timeout=10.0) as alice,
    ):
        opened = await alice.post(
            "/message?session_id=watched-in-browser", json={"type": "list_tools", "request_id": "r0", "data": {}}
        )
        assert opened.status_code == 202
        async with dashboard(browser, RunningServer(other.url), ALICE_TOKEN) as page:
            await page.click("[data-tab=sessions]")
            row = page.locator('#sessions-table tr[data-session-id="watched-in-browser"]')
            await expect(row).to_be_visible()
            await row.locator("button.watch").click()
            await expect(page.locator("#watch-status")).to_contain_text("watching")
            answer = await alice.post("/message?session_id=watched-in-browser", json=call)
            assert answer.status_code == 202
            inbound = page.locator('#watch-frames .frame[data-dir="in"][data-method="call_tool"]')
            outbound = page.locator('#watch-frames .frame[data-dir="out"][data-kind="response"]')
            await expect(inbound).to_have_count(1)
            await expect(outbound).to_have_count(1)
            await shot(page, "watch-across-instances")
            await page.fill("#watch-filter", "list_tools")
            await expect(inbound).to_be_hidden()
