"""Backpressure: a client that stops reading is disconnected with a logged reason; a reading client
never loses or reorders a message."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
import pytest

from tests.support.apps import Gates, build_behaviour_server
from tests.support.mcp_http import jsonrpc, sse_initialize
from tests.support.servers import TOKEN, RunningServer, make_settings, serve_in_process
from tests.support.sse import open_sse

pytestmark = pytest.mark.anyio
JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    settings = make_settings(slow_client_timeout_s=0.5, log_level="info")
    async with serve_in_process(settings, server=build_behaviour_server(Gates())) as running:
        yield running


async def _open_unread_sse(url: str) -> tuple[socket.socket, str]:
    """Open GET /sse on a raw socket with a tiny receive buffer, read only up to the endpoint event."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    await anyio.to_thread.run_sync(sock.connect, (parts.hostname, parts.port))
    sock.sendall(
        f"GET /sse HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    received = b""
    while b"session_id=" not in received or b"\n" not in received.split(b"session_id=", 1)[1]:
        received += await anyio.to_thread.run_sync(sock.recv, 4096)
    endpoint = received.split(b"data: ", 1)[1].split(b"\n", 1)[0].decode()
    return sock, endpoint


async def test_a_client_that_stops_reading_is_disconnected_with_a_logged_reason(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="datapulse")
    sock, endpoint = await _open_unread_sse(server.url)
    session_id = endpoint.split("session_id=")[1]
    try:
        async with server.client() as client:
            init = {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
            assert (
                await client.post(endpoint, content=jsonrpc("initialize", init, 0), headers=JSON)
            ).status_code == 202
            status = 202
            with anyio.fail_after(30):
                for n in range(1, 400):
                    call = jsonrpc("tools/call", {"name": "blob", "arguments": {"size": 256 * 1024}}, n)
                    status = (await client.post(endpoint, content=call, headers=JSON)).status_code
                    if status == 404:
                        break
            assert status == 404
        assert server.runtime.sessions.peek(session_id) is None
        assert any("client read nothing for 0.5 s" in record.getMessage() for record in caplog.records)
    finally:
        sock.close()


async def test_a_reading_client_receives_every_result_exactly_once(server: RunningServer) -> None:
    async with server.client() as client, open_sse(client, "GET", "/sse") as reader:
        endpoint = (await reader.next_event()).data
        await sse_initialize(client, endpoint, reader)
        count = 200

        async def call(n: int) -> None:
            body = jsonrpc("tools/call", {"name": "echo", "arguments": {"message": f"m{n}"}}, n)
            assert (await client.post(endpoint, content=body, headers=JSON)).status_code == 202

        async with anyio.create_task_group() as tasks:
            for n in range(1, count + 1):
                tasks.start_soon(call, n)
            results: dict[int, str] = {}
            while len(results) < count:
                message = json.loads((await reader.next_event()).data)
                assert message["id"] not in results, "a result arrived twice"
                results[message["id"]] = message["result"]["content"][0]["text"]
        assert results == {n: f"m{n}" for n in range(1, count + 1)}


async def test_notifications_of_one_request_arrive_in_the_order_they_were_sent(server: RunningServer) -> None:
    gates = Gates()
    async with (
        serve_in_process(make_settings(), server=build_behaviour_server(gates)) as running,
        running.client() as client,
        open_sse(client, "GET", "/sse") as reader,
    ):
        endpoint = (await reader.next_event()).data
        await sse_initialize(client, endpoint, reader)
        gates.open("order")
        params = {
            "name": "progress_then_wait",
            "arguments": {"steps": 100, "gate": "order"},
            "_meta": {"progressToken": 1},
        }
        assert (await client.post(endpoint, content=jsonrpc("tools/call", params, 9), headers=JSON)).status_code == 202
        progress = []
        while True:
            message = json.loads((await reader.next_event()).data)
            if message.get("id") == 9:
                break
            progress.append(message["params"]["progress"])
        assert progress == list(range(1, 101))
