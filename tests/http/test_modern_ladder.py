"""The 2026-07-28 request ladder's header rungs, over HTTP: duplicated routing headers, headers that disagree with
the body, and optional whitespace around values (RFC 9110 §5.5), each answered as the SDK's ladder words it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import anyio
import httpx2
import pytest

from tests.support.mcp_http import BOTH, MODERN, modern_params
from tests.support.servers import TOKEN, RunningServer, serve_in_process

pytestmark = pytest.mark.anyio

BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": modern_params({"name": "echo", "arguments": {"message": "m"}}),
    }
)
BASE = [("Content-Type", "application/json"), ("Accept", BOTH)]
ROUTING = [("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")]


@pytest.fixture
async def server() -> AsyncIterator[RunningServer]:
    async with serve_in_process() as running:
        yield running


@pytest.mark.parametrize(
    ("headers", "status", "code", "message"),
    [
        (ROUTING, 200, None, None),
        ([*ROUTING, ("Mcp-Method", "tools/call")], 400, -32020, "mcp-method header appears more than once"),
        ([*ROUTING, ("mcp-name", "echo")], 400, -32020, "mcp-name header appears more than once"),
        ([ROUTING[0], ROUTING[1], ("Mcp-Name", "other")], 400, -32020, "mcp-name header does not match"),
        ([ROUTING[0], ("Mcp-Method", "tools/list"), ROUTING[2]], 400, -32020, "mcp-method header does not match"),
        ([*ROUTING, ("X-Unrelated", "a"), ("X-Unrelated", "b")], 200, None, None),
    ],
    ids=["agree", "method-twice", "name-twice", "name-differs", "method-differs", "others-twice"],
)
async def test_the_header_rungs_refuse_duplicates_and_disagreement_and_ignore_padding(
    server: RunningServer, headers: list[tuple[str, str]], status: int, code: int | None, message: str | None
) -> None:
    async with server.client() as client:
        response = await client.post("/mcp", content=BODY, headers=[*BASE, *headers])
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["id"] == 7
    if code is None:
        assert answer["result"]["content"][0]["text"] == "m"
    else:
        assert answer["error"]["code"] == code
        assert message is not None
        assert answer["error"]["message"].startswith(message)


async def test_whitespace_around_a_routing_header_value_is_not_part_of_it(server: RunningServer) -> None:
    # RFC 9110 §5.5: optional whitespace around a field value is not part of it (httpx refuses to send it: raw)
    url = httpx2.URL(server.url)
    lines = [
        "POST /mcp HTTP/1.1",
        f"Host: {url.host}:{url.port}",
        f"Authorization: Bearer {TOKEN}",
        *(f"{name}: {value}" for name, value in BASE),
        *(f"{name}:  {value} \t" for name, value in ROUTING),
        f"Content-Length: {len(BODY)}",
        "Connection: close",
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n" + BODY).encode()
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(url.host, url.port or 80) as stream:
            await stream.send(request)
            raw = b""
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    raw += await stream.receive()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), raw
    assert json.loads(body)["result"]["content"][0]["text"] == "m"
