"""Hand-built MCP HTTP requests for protocol-level tests (real clients are tested in tests/interop)."""

from __future__ import annotations

import json
from typing import Any

import httpx2

MODERN = "2026-07-28"
LEGACY = "2025-11-25"
BOTH = "application/json, text/event-stream"
CLIENT_INFO = {"name": "datapulse-tests", "version": "1"}


def modern_params(
    params: dict[str, Any] | None = None, *, capabilities: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``params`` with the 2026-07-28 ``_meta`` envelope added."""
    out = dict(params or {})
    out["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        "io.modelcontextprotocol/clientCapabilities": capabilities or {},
        **out.get("_meta", {}),
    }
    return out


def modern_headers(method: str, name: str | None = None, *, accept: str = BOTH) -> dict[str, str]:
    headers = {
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": method,
        "Content-Type": "application/json",
        "Accept": accept,
    }
    if name is not None:
        headers["Mcp-Name"] = name
    return headers


async def modern_call(
    client: httpx2.AsyncClient, method: str, params: dict[str, Any] | None = None, *, request_id: int | str = 1
) -> httpx2.Response:
    """POST one 2026-07-28 request to /mcp with matching routing headers."""
    name = (params or {}).get("name") or (params or {}).get("uri")
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": modern_params(params)}
    return await client.post("/mcp", content=json.dumps(body), headers=modern_headers(method, name))


def legacy_headers(session_id: str | None = None, *, accept: str = BOTH) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": accept, "MCP-Protocol-Version": LEGACY}
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
    return headers


def initialize_request(*, capabilities: dict[str, Any] | None = None) -> str:
    """The body of a 2025-11-25 ``initialize`` request (id 0)."""
    params = {"protocolVersion": LEGACY, "capabilities": capabilities or {}, "clientInfo": CLIENT_INFO}
    return json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})


async def legacy_initialize(client: httpx2.AsyncClient, *, capabilities: dict[str, Any] | None = None) -> str:
    """Open a 2025-11-25 session (initialize + notifications/initialized); returns its id."""
    response = await client.post(
        "/mcp", content=initialize_request(capabilities=capabilities), headers=legacy_headers()
    )
    assert response.status_code == 200, response.text
    session_id = response.headers["mcp-session-id"]
    done = await client.post(
        "/mcp",
        content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        headers=legacy_headers(session_id),
    )
    assert done.status_code == 202, done.text
    return session_id


async def legacy_call(
    client: httpx2.AsyncClient, session_id: str, method: str, params: dict[str, Any] | None = None, request_id: int = 1
) -> httpx2.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return await client.post("/mcp", content=json.dumps(body), headers=legacy_headers(session_id))


def jsonrpc(method: str, params: dict[str, Any] | None = None, request_id: int | str | None = 1) -> str:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        body["id"] = request_id
    if params is not None:
        body["params"] = params
    return json.dumps(body)


async def sse_initialize(client: httpx2.AsyncClient, messages_url: str, reader: Any) -> None:
    """Run the 2024-11-05 handshake over an open /sse stream (``reader`` is a `SseReader`)."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": CLIENT_INFO},
    }
    posted = await client.post(messages_url, content=json.dumps(init), headers={"Content-Type": "application/json"})
    assert posted.status_code == 202, posted.text
    event = await reader.next_event()
    assert json.loads(event.data)["id"] == 0
    done = await client.post(
        messages_url,
        content=jsonrpc("notifications/initialized", request_id=None),
        headers={"Content-Type": "application/json"},
    )
    assert done.status_code == 202
