"""The dashboard's server side against a real server (uvicorn on a free port, in process): ``GET /``, the static
files, sign-in with dashboard tickets, and each JSON view, as the principals alice and bob (static tokens, not
admins) and local (the single token's principal, an admin by default)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from datapulse.auth.tickets import MemoryTicketStore
from tests.support.servers import ALICE_TOKEN, BOB_TOKEN, RunningServer, bearer, make_settings, serve_in_process

pytestmark = pytest.mark.anyio


async def sign_in(server: RunningServer, token: str) -> str:
    async with server.client(token) as http:
        answer = await http.post("/dashboard/api/sign-in")
    assert answer.status_code == 200, answer.text
    ticket = answer.json()["ticket"]
    assert isinstance(ticket, str)
    assert ticket.startswith("dpt_")
    return ticket


async def call_echo(http: httpx2.AsyncClient, session_id: str, message: str) -> None:
    """A DataPulse API call of ``echo`` in session ``session_id`` (the POST creates the session)."""
    answer = await http.post(
        f"/message?session_id={session_id}",
        json={"type": "call_tool", "request_id": message, "data": {"name": "echo", "arguments": {"message": message}}},
    )
    assert answer.status_code == 202, answer.text


async def test_the_root_page_names_the_server_and_its_endpoints_as_json_or_html_without_auth() -> None:
    async with serve_in_process() as server, httpx2.AsyncClient(base_url=server.url) as http:
        as_json = await http.get("/")
        as_html = await http.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert as_json.status_code == 200
    document = as_json.json()
    assert document["dashboard"] == "/dashboard/"
    paths = {endpoint["path"] for endpoint in document["endpoints"]}
    assert {"/mcp", "/sse", "/events", "/message", "/dashboard/"} <= paths
    assert as_html.status_code == 200
    assert as_html.headers["content-type"].startswith("text/html")
    assert 'href="dashboard/"' in as_html.text
    assert "/events" in as_html.text


async def test_the_dashboard_files_are_served_with_a_strict_content_security_policy() -> None:
    async with serve_in_process() as server, httpx2.AsyncClient(base_url=server.url) as http:
        redirect = await http.get("/dashboard")
        page = await http.get("/dashboard/")
        script = await http.get("/dashboard/app.js")
        again = await http.get("/dashboard/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "/dashboard/"
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<script" in page.text
    assert "cdn" not in page.text.lower()
    assert script.headers["content-type"] == "text/javascript"
    assert again.status_code == 304


async def test_the_dashboard_is_off_when_the_setting_says_so() -> None:
    async with serve_in_process(make_settings(dashboard="off")) as server:
        async with httpx2.AsyncClient(base_url=server.url) as http:
            root = await http.get("/")
        async with server.client() as http:
            page = await http.get("/dashboard/")
            api = await http.get("/dashboard/api/overview")
    assert root.json()["dashboard"] is None
    assert page.status_code == 404
    assert api.status_code == 404


async def test_a_token_signs_in_for_a_ticket_that_works_until_signed_out() -> None:
    async with serve_in_process() as server:
        ticket = await sign_in(server, ALICE_TOKEN)
        async with server.client(ticket) as http:
            overview = await http.get("/dashboard/api/overview")
            renew = await http.post("/dashboard/api/sign-in")
            signed_out = await http.post("/dashboard/api/sign-out")
            after = await http.get("/dashboard/api/overview")
    assert overview.status_code == 200, overview.text
    assert overview.json()["principal"] == "alice"
    assert overview.json()["admin"] is False
    assert renew.status_code == 400
    assert "token" in renew.json()["error"]["message"]
    assert signed_out.status_code == 204
    assert after.status_code == 401
    assert "sign in again" in after.json()["error"]["message"]


async def test_a_dashboard_ticket_expires() -> None:
    async with serve_in_process(make_settings(dashboard_ticket_ttl_s=60)) as server:
        tickets = server.runtime.security.tickets
        assert isinstance(tickets, MemoryTicketStore)
        now = [1000.0]
        tickets._clock = lambda: now[0]  # the store's clock: no waiting for a minute to pass
        ticket = await sign_in(server, ALICE_TOKEN)
        async with server.client(ticket) as http:
            now[0] += 59
            before = await http.get("/dashboard/api/overview")
            now[0] += 2
            after = await http.get("/dashboard/api/overview")
    assert before.status_code == 200
    assert after.status_code == 401


async def test_a_dashboard_ticket_is_no_stream_ticket_and_a_stream_ticket_is_no_bearer() -> None:
    async with serve_in_process() as server:
        ticket = await sign_in(server, ALICE_TOKEN)
        async with server.client(ticket) as http:
            stream_ticket = (await http.post("/tickets")).json()["ticket"]
        async with httpx2.AsyncClient(base_url=server.url) as http:
            in_url = await http.get(f"/events?session_id=s1&ticket={ticket}")
        async with server.client(stream_ticket) as http:
            as_bearer = await http.get("/dashboard/api/overview")
    assert in_url.status_code == 401
    assert as_bearer.status_code == 401


async def test_a_principal_sees_its_own_sessions_and_an_admin_sees_everyones() -> None:
    async with serve_in_process() as server:
        async with server.client(ALICE_TOKEN) as alice, server.client(BOB_TOKEN) as bob:
            await call_echo(alice, "alice-session", "hello")
            await call_echo(bob, "bob-session", "hi")
            alice_view = (await alice.get("/dashboard/api/sessions")).json()
            bob_view = (await bob.get("/dashboard/api/sessions")).json()
        async with server.client() as admin:
            admin_view = (await admin.get("/dashboard/api/sessions")).json()
    assert [row["session_id"] for row in alice_view["sessions"]] == ["alice-session"]
    assert [row["session_id"] for row in bob_view["sessions"]] == ["bob-session"]
    assert {row["session_id"] for row in admin_view["sessions"]} == {"alice-session", "bob-session"}
    row = alice_view["sessions"][0]
    assert row["principal"] == "alice"
    assert row["transport"] == "datapulse_api"
    assert row["node_id"] is None
    assert row["age_s"] >= 0
    assert row["streams"] == 0
    assert row["queue_depth"] == 1  # the echo result waits for a stream


async def test_the_catalog_lists_tools_with_input_schemas_resources_and_prompts() -> None:
    async with serve_in_process() as server, server.client(ALICE_TOKEN) as http:
        catalog = (await http.get("/dashboard/api/catalog")).json()
    tools = {tool["name"]: tool for tool in catalog["tools"]}
    assert tools["echo"]["description"] == "Return the message unchanged."
    assert tools["echo"]["input_schema"]["properties"]["message"]["type"] == "string"
    assert tools["echo"]["input_schema"]["required"] == ["message"]
    assert [resource["uri"] for resource in catalog["resources"]] == ["datapulse://about"]
    assert catalog["prompts"][0]["name"] == "summarize"
    assert catalog["prompts"][0]["arguments"][0]["required"] is True


async def test_per_tool_figures_count_calls_and_errors_from_the_metrics() -> None:
    async with serve_in_process() as server, server.client(ALICE_TOKEN) as http:
        for index in range(3):
            await call_echo(http, "figures", f"m{index}")
        refused = await http.post(
            "/message",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {}}},
        )
        stats = (await http.get("/dashboard/api/stats")).json()
        metrics = (await http.get("/metrics")).text
    assert refused.status_code == 200
    tools = {tool["name"]: tool for tool in stats["tools"]}
    assert tools["echo"]["calls"] == 3
    assert tools["echo"]["errors"] == 0
    assert tools["echo"]["p50_ms"] is not None
    assert tools["add"]["calls"] == 1
    assert tools["add"]["errors"] == 1
    assert tools["add"]["error_rate"] == 1.0
    assert 'datapulse_tool_calls_total{outcome="ok",tool="echo"} 3.0' in metrics  # the same numbers
    assert stats["nodes_unreachable"] == []


async def test_recent_audit_records_are_shown_to_their_principal_and_to_admins(tmp_path: Path) -> None:
    settings = make_settings(audit_sinks=f"file:{tmp_path / 'audit.jsonl'}")
    async with serve_in_process(settings) as server:
        async with server.client(ALICE_TOKEN) as alice, server.client(BOB_TOKEN) as bob:
            await call_echo(alice, "audited-a", "a")
            await call_echo(bob, "audited-b", "b")
            alice_view = (await alice.get("/dashboard/api/audit?limit=500")).json()
            bad_limit = await alice.get("/dashboard/api/audit?limit=0")
        async with server.client() as admin:
            admin_view = (await admin.get("/dashboard/api/audit")).json()
    assert alice_view["enabled"] is True
    assert {record["principal"] for record in alice_view["records"]} == {"alice"}
    assert any(record["kind"] == "tool_call" and record["name"] == "echo" for record in alice_view["records"])
    assert {"alice", "bob"} <= {record["principal"] for record in admin_view["records"]}
    times = [record["time"] for record in admin_view["records"]]
    assert times == sorted(times, reverse=True)
    assert bad_limit.status_code == 400


async def test_without_auth_sign_in_needs_no_credential_and_the_anonymous_principal_sees_all() -> None:
    settings = make_settings(token=None, tokens=None, insecure_no_auth=True)
    async with serve_in_process(settings) as server, httpx2.AsyncClient(base_url=server.url) as http:
        signed_in = await http.post("/dashboard/api/sign-in")
    assert signed_in.status_code == 200
    assert signed_in.json() == {
        "auth": False,
        "ticket": None,
        "expires_in_s": None,
        "principal": "anonymous",
        "admin": True,
    }


async def test_the_dashboard_api_refuses_requests_without_a_credential() -> None:
    async with serve_in_process() as server, httpx2.AsyncClient(base_url=server.url) as http:
        answers = [await http.get(f"/dashboard/api/{view}") for view in ("overview", "sessions", "stats", "audit")]
        sign_in = await http.post("/dashboard/api/sign-in", headers=bearer("not-a-token"))
    assert [answer.status_code for answer in answers] == [401, 401, 401, 401]
    assert sign_in.status_code == 401
    assert json.loads(sign_in.text)["error"]["message"].startswith("Unauthorized")
