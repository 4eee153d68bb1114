"""`create_app` is a FastAPI app that can be mounted into an existing app; caps protect the process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
import uvicorn
from fastapi import FastAPI

from datapulse import create_app, mounted_lifespan
from tests.support.mcp_http import modern_headers, modern_params
from tests.support.servers import (
    ALICE_TOKEN,
    BOB_TOKEN,
    ReadyServer,
    RunningServer,
    bearer,
    make_settings,
    serve_in_process,
)
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio


async def test_a_mounted_app_serves_under_its_prefix_with_the_host_apps_lifespan() -> None:
    datapulse = create_app(make_settings())

    @asynccontextmanager
    async def host_lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mounted_lifespan(datapulse):
            yield

    host = FastAPI(lifespan=host_lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    host.mount("/tools", datapulse)
    server = ReadyServer(uvicorn.Config(host, host="127.0.0.1", port=0, log_level="warning", log_config=None))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server._serve)
        with anyio.fail_after(10):
            await server.ready.wait()
        base = f"http://127.0.0.1:{server.port}"
        async with httpx2.AsyncClient(base_url=base, headers=bearer(), timeout=10) as client:
            assert (await client.get("/hello")).json() == {"hello": "world"}
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": modern_params()}
            listed = await client.post("/tools/mcp", json=body, headers=modern_headers("tools/list"))
            assert "echo" in [tool["name"] for tool in listed.json()["result"]["tools"]]
            assert (await client.get("/tools/health")).json()["status"] == "ok"
            async with open_sse(client, "GET", "/tools/sse") as reader:
                endpoint = (await reader.next_event()).data
                assert endpoint.startswith("/tools/messages?session_id=")
        server.should_exit = True


async def test_session_caps_refuse_new_sessions_with_429_per_principal_and_503_overall() -> None:
    async with serve_in_process(make_settings(max_sessions=2, max_sessions_per_principal=1)) as running:
        running_server: RunningServer = running
        async with running_server.client(ALICE_TOKEN) as alice, running_server.client(BOB_TOKEN) as bob:
            first = await alice.post("/message?session_id=a1", json={"type": "list_tools", "request_id": "1"})
            assert first.status_code == 202
            second = await alice.post("/message?session_id=a2", json={"type": "list_tools", "request_id": "1"})
            assert second.status_code == 429
            assert "Too Many Sessions" in second.json()["error"]["message"]
            assert (
                await bob.post("/message?session_id=b1", json={"type": "list_tools", "request_id": "1"})
            ).status_code == 202
            async with running_server.client() as local:
                full = await local.get("/sse", headers={"Accept": "text/event-stream"})
                assert full.status_code == 503
                assert full.headers["retry-after"] == "5"
