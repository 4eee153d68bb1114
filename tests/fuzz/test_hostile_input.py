"""Property-based hostile input against every endpoint of one real server (uvicorn, real sockets).

Hostile traffic comes from the ``local`` principal: random and mutated bodies, random headers,
methods and query strings. Whatever arrives, the server answers with a status the endpoint defines,
never a 500, a reset or a hang; every 4xx is a JSON-RPC error with a message; no body and no log line
carries a traceback. Meanwhile alice's well-behaved sessions (2024-11-05 SSE, DataPulse API, 2025
Streamable HTTP) keep every message and stream.

`ENDPOINTS` is the table of what is fuzzed: one row per endpoint (and per session flavour of it).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

import httpx2
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from datapulse.sessions.registry import SessionKind
from tests.fuzz.conftest import JSON, MAX_BODY_BYTES, LiveServer, Sessions, carrying, message_of
from tests.fuzz.strategies import (
    BodyKind,
    Headers,
    bodies,
    header_pools,
    hostile_headers,
    hostile_query,
    valid_body,
)
from tests.support.mcp_http import BOTH, LEGACY, MODERN, jsonrpc
from tests.support.servers import TOKEN

Slot = Literal["none", "mcp", "sse", "api", "api-get", "gone"]
"""Which of the hostile principal's sessions a request names: its 2025 session (``Mcp-Session-Id``),
its 2024-11-05 or DataPulse API session (``?session_id=``), a second API session whose stream the
fuzzer itself opens and deletes (``api-get``), or an id that does not exist (``gone``)."""

GATE = frozenset({401, 403, 421})
"""What the security layer may answer anywhere: bad token, foreign Origin, foreign Host."""
PUBLIC_GATE = frozenset({403, 421})
GONE_SESSION = "gone-0123456789"
API_GET_SESSION = "hostile-get"


def _s(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


@dataclass(frozen=True)
class Endpoint:
    """One fuzzed endpoint: a well-formed request to it (method, path, session, body, headers) and
    every status hostile input may get there (plus `GATE`; 429 where a request may open a session,
    once the principal's session cap is reached)."""

    method: str
    path: str
    session: Slot
    body: BodyKind
    statuses: frozenset[int]
    headers: Mapping[str, str] = field(default_factory=dict)
    public: bool = False

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} session={self.session}>"


LEGACY_POST = {"Content-Type": "application/json", "Accept": BOTH, "MCP-Protocol-Version": LEGACY}
MODERN_POST = {
    "Content-Type": "application/json",
    "Accept": BOTH,
    "MCP-Protocol-Version": MODERN,
    "Mcp-Method": "tools/call",
    "Mcp-Name": "echo",
}
SSE_GET = {"Accept": "text/event-stream"}

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/mcp", "none", "initialize", _s(200, 202, 400, 404, 406, 413, 415, 429), LEGACY_POST),
    Endpoint("POST", "/mcp", "mcp", "jsonrpc", _s(200, 202, 400, 404, 406, 413, 415), LEGACY_POST),
    Endpoint("POST", "/mcp", "none", "modern", _s(200, 202, 400, 404, 406, 413, 415), MODERN_POST),
    Endpoint("GET", "/mcp", "mcp", "none", _s(200, 400, 404, 405, 406, 409), SSE_GET),
    Endpoint("DELETE", "/mcp", "gone", "none", _s(200, 400, 404, 405)),
    Endpoint("GET", "/sse", "none", "none", _s(200, 406, 429), SSE_GET),
    Endpoint("POST", "/messages", "sse", "jsonrpc", _s(202, 400, 404, 413, 415), JSON),
    Endpoint("GET", "/events", "api-get", "none", _s(200, 400, 404, 406, 429), SSE_GET),
    Endpoint("DELETE", "/events", "api-get", "none", _s(200, 400, 404)),
    Endpoint("POST", "/message", "api", "api", _s(202, 400, 404, 413, 415, 429), JSON),
    Endpoint("POST", "/message", "none", "jsonrpc", _s(200, 202, 400, 404, 413, 415), JSON),
    Endpoint("GET", "/health", "none", "none", _s(200), public=True),
    Endpoint("GET", "/openapi.json", "none", "none", _s(200), public=True),
    Endpoint("GET", "/.well-known/oauth-protected-resource/mcp", "none", "none", _s(200), public=True),
    Endpoint("POST", "/tickets", "none", "none", _s(201)),
)
POST_ENDPOINTS = tuple(endpoint for endpoint in ENDPOINTS if endpoint.body != "none")
HTTP_METHODS = ("GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD")

FUZZ = settings(
    deadline=None,
    database=None,  # nothing written into the repository (.hypothesis/); a failure prints its example
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@dataclass(frozen=True)
class HostileRequest:
    """One request as sent; ``chunk_bytes`` set: the body is streamed in chunks of that size (chunked
    transfer encoding, so the server reads it in pieces and learns its length only at the end)."""

    method: str
    target: str
    headers: Headers
    body: bytes | None
    chunk_bytes: int | None = None


def _never(_: Any) -> bool:
    return False


@dataclass(frozen=True)
class KnownBug:
    """A bug already pinned by an ``xfail(strict=True)`` test below. The fuzzers step around it (skip the
    requests that trigger it, ignore the log records it leaves) so that they keep finding new ones;
    when the bug is fixed its xfail test passes, fails strictly, and this entry goes."""

    name: str
    request: Callable[[HostileRequest], bool] = _never
    log_record: Callable[[logging.LogRecord], bool] = _never


KNOWN_BUGS: tuple[KnownBug, ...] = ()
"""Empty: the two bugs this suite found (an unparseable Origin was a 500; a bad prompts/get was -32603 with a
traceback) are fixed, and their reproductions below are plain tests now."""


def unknown_problems(server: LiveServer, since: int = 0) -> list[str]:
    """Log lines showing an unhandled error, except those a `KnownBug` explains."""
    return server.log.problems(since, ignore=lambda record: any(bug.log_record(record) for bug in KNOWN_BUGS))


@dataclass(frozen=True)
class Outcome:
    """What came back: status, content type, and the body (empty for an SSE stream, closed unread)."""

    request: HostileRequest
    status: int
    content_type: str
    body: bytes
    streamed: bool

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _query(endpoint: Endpoint, hostile: Sessions) -> dict[str, str]:
    session_id = {"sse": hostile.sse.session_id, "api": hostile.api.session_id, "api-get": API_GET_SESSION}
    return {"session_id": session_id[endpoint.session]} if endpoint.session in session_id else {}


def _headers(endpoint: Endpoint, hostile: Sessions) -> dict[str, bytes]:
    headers = {name.lower(): value.encode() for name, value in endpoint.headers.items()}
    if not endpoint.public:
        headers["authorization"] = f"Bearer {TOKEN}".encode()
    if endpoint.session == "mcp":
        headers["mcp-session-id"] = hostile.mcp.encode()
    elif endpoint.session == "gone":
        headers["mcp-session-id"] = GONE_SESSION.encode()
    return headers


_HEADER_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")


def _routing_headers(body: bytes) -> dict[str, bytes]:
    """``Mcp-Method``/``Mcp-Name`` as a 2026-07-28 client derives them from the body (when it can)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    out: dict[str, bytes] = {}
    method, params = decoded.get("method"), decoded.get("params")
    if isinstance(method, str) and _HEADER_VALUE.fullmatch(method.encode()):
        out["mcp-method"] = method.encode()
    name = params.get("name", params.get("uri")) if isinstance(params, dict) else None
    if isinstance(name, str) and _HEADER_VALUE.fullmatch(name.encode()):
        out["mcp-name"] = name.encode()
    return out


def body_fuzz(endpoint: Endpoint, hostile: Sessions) -> st.SearchStrategy[HostileRequest]:
    """Well-formed headers and session, hostile body."""
    query = _query(endpoint, hostile)
    target = endpoint.path + (f"?session_id={query['session_id']}" if query else "")

    def build(parts: tuple[bytes, int | None]) -> HostileRequest:
        body, chunk_bytes = parts
        headers = _headers(endpoint, hostile)
        if endpoint.body == "modern":
            headers = {name: value for name, value in headers.items() if name not in ("mcp-method", "mcp-name")}
            headers.update(_routing_headers(body))
        encoded = [(name.encode(), value) for name, value in headers.items()]
        return HostileRequest(endpoint.method, target, encoded, body, chunk_bytes)

    chunking = st.none() | st.none() | st.integers(1, 4096)
    return st.tuples(bodies(endpoint.body, MAX_BODY_BYTES), chunking).map(build)


def header_fuzz(
    endpoint: Endpoint, hostile: Sessions, others: Sessions, authority: str
) -> st.SearchStrategy[HostileRequest]:
    """Well-formed body, hostile method (sometimes), headers and query string. Session ids tried include
    other principals'; the hostile principal's own are left out where using them legitimately ends the
    stream the other examples read (a DELETE, or a second ``GET /events``, which replaces the first)."""
    ids = [*hostile.ids, *others.ids, API_GET_SESSION, GONE_SESSION]
    if endpoint.method == "DELETE" or endpoint.path == "/events":
        ids = [session_id for session_id in ids if session_id not in (hostile.mcp, hostile.api.session_id)]
    if endpoint.method == "DELETE":
        methods = st.sampled_from((endpoint.method,) * 6 + HTTP_METHODS)
    else:
        methods = st.sampled_from((endpoint.method,) * 6 + tuple(m for m in HTTP_METHODS if m != "DELETE"))
    pools = header_pools(token=TOKEN, host=authority, session_ids=ids)

    def build(parts: tuple[str, Headers, str]) -> HostileRequest:
        method, headers, query = parts
        body = valid_body(endpoint.body) if method in ("POST", "PUT", "PATCH") else None
        if method == "POST" and body is None:
            body = b"{}"
        return HostileRequest(method, endpoint.path + query, headers, body)

    return st.tuples(
        methods, hostile_headers(_headers(endpoint, hostile), pools), hostile_query(_query(endpoint, hostile), ids)
    ).map(build)


Case = tuple[Endpoint, HostileRequest]


def cases(
    endpoints: tuple[Endpoint, ...], fuzzers: Callable[[Endpoint], st.SearchStrategy[HostileRequest]]
) -> st.SearchStrategy[Case]:
    """One endpoint of ``endpoints`` and a hostile request to it (strategies built once per test)."""
    return st.one_of([st.tuples(st.just(endpoint), fuzzers(endpoint)) for endpoint in endpoints])


def expected_statuses(path: str, method: str) -> frozenset[int]:
    """Every status a request with hostile headers may get on ``method path``."""
    rows = [endpoint for endpoint in ENDPOINTS if endpoint.path == path]
    gate = PUBLIC_GATE if rows[0].public else GATE
    allowed = frozenset().union(*(endpoint.statuses for endpoint in rows if endpoint.method == method))
    if not allowed:
        allowed = _s(405)
        if path == "/mcp":
            allowed |= {400}  # an unsupported MCP-Protocol-Version is refused before the method is looked at
    return allowed | gate


def send(client: httpx2.Client, request: HostileRequest) -> Outcome:
    """Send one request; an SSE response is closed as soon as its headers arrive (a client leaving)."""
    content: bytes | Iterator[bytes] | None = request.body
    if request.body is not None and request.chunk_bytes is not None:
        body, size = request.body, request.chunk_bytes
        content = (body[at : at + size] for at in range(0, len(body), size))
    with client.stream(request.method, request.target, headers=request.headers, content=content) as response:
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("text/event-stream"):
            return Outcome(request, response.status_code, content_type, b"", streamed=True)
        body = response.read()
    return Outcome(request, response.status_code, content_type, body, streamed=False)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(body: bytes) -> Any:
    """Decode JSON as a strict client would (``NaN``/``Infinity`` are not JSON, RFC 8259 §6)."""
    return json.loads(body, parse_constant=_no_constants)


def check(outcome: Outcome, allowed: frozenset[int]) -> None:
    """The response is one the endpoint defines, JSON when it says so, a JSON-RPC error when 4xx,
    and never shows a traceback."""
    status = outcome.status
    assert status in allowed, f"{status} not in {sorted(allowed)}: {outcome.text[:500]}"
    assert "Traceback" not in outcome.text, outcome.text
    if outcome.request.method == "HEAD" or outcome.streamed:
        return
    is_json = outcome.content_type.startswith("application/json")
    payload = strict_json(outcome.body) if is_json else None
    if 400 <= status < 500:
        assert isinstance(payload, dict), (status, outcome.content_type, outcome.text)
        error = payload.get("error")
        assert isinstance(error, dict), payload
        assert isinstance(error.get("message"), str), payload
        assert error["message"], payload


def _request_of(body: bytes | None) -> Any:
    """The JSON-RPC request id in ``body`` if it is one request that must be answered, else None."""
    try:
        decoded = json.loads(body or b"")
    except ValueError:
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("method"), str) or not decoded["method"]:
        return None
    request_id = decoded.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        return None
    return None if decoded["method"] == "subscriptions/listen" else request_id


def check_delivered(outcome: Outcome, hostile: Sessions, sse_mark: int, api_mark: int) -> None:
    """A message accepted (202) on a watched session (whose results go to its stream) is answered there."""
    path, _, query = outcome.request.target.partition("?")
    session_ids = [value for key, value in parse_qsl(query, keep_blank_values=True) if key == "session_id"]
    if outcome.status != 202 or not session_ids:
        return
    if path == "/messages" and session_ids[0] == hostile.sse.session_id:
        request_id = _request_of(outcome.request.body)
        if request_id is not None:
            hostile.sse.stream.wait_for(carrying("id", request_id), sse_mark)
    elif path == "/message" and session_ids[0] == hostile.api.session_id:
        queued = strict_json(outcome.body)
        hostile.api.stream.wait_for(carrying("request_id", queued["request_id"]), api_mark)


def exchange(server: LiveServer, client: httpx2.Client, request: HostileRequest, hostile: Sessions) -> Outcome:
    """Send one hostile request and check everything about it, the server log included."""
    assume(not any(bug.request(request) for bug in KNOWN_BUGS))
    note(f"request: {request!r}")
    log_mark = len(server.log.records)
    sse_mark, api_mark = len(hostile.sse.stream.events), len(hostile.api.stream.events)
    outcome = send(client, request)
    check(outcome, expected_statuses(request.target.split("?")[0], request.method))
    check_delivered(outcome, hostile, sse_mark, api_mark)
    problems = unknown_problems(server, since=log_mark)
    assert not problems, "\n".join(problems)
    return outcome


def test_hostile_bodies_on_every_post_endpoint_never_get_a_500_and_every_4xx_is_a_json_rpc_error(
    live_server: LiveServer, hostile: Sessions
) -> None:
    with live_server.client(token=None) as client:

        @settings(FUZZ, max_examples=400)
        @given(case=cases(POST_ENDPOINTS, lambda endpoint: body_fuzz(endpoint, hostile)))
        def post(case: Case) -> None:
            endpoint, request = case
            outcome = exchange(live_server, client, request, hostile)
            assert outcome.status in endpoint.statuses, (outcome.status, outcome.text)

        post()


def test_hostile_headers_methods_and_query_strings_get_only_the_statuses_each_endpoint_defines(
    live_server: LiveServer, hostile: Sessions, steady: Sessions
) -> None:
    with live_server.client(token=None) as client:

        @settings(FUZZ, max_examples=400)
        @given(case=cases(ENDPOINTS, lambda endpoint: header_fuzz(endpoint, hostile, steady, live_server.authority)))
        def request_with_hostile_headers(case: Case) -> None:
            exchange(live_server, client, case[1], hostile)

        request_with_hostile_headers()


SteadyKind = Literal["sse", "api", "mcp"]


def _steady_call(alice: httpx2.Client, steady: Sessions, kind: SteadyKind, n: int) -> str | None:
    """One well-behaved tools/call ``echo("steady <n>")`` by alice on her ``kind`` session. A 2025 call is
    answered in the response (checked here); otherwise returns the id whose result her stream must carry."""
    call = {"name": "echo", "arguments": {"message": f"steady {n}"}}
    if kind == "sse":
        posted = alice.post(steady.sse.messages_path, content=jsonrpc("tools/call", call, f"s{n}"), headers=JSON)
        assert posted.status_code == 202, posted.text
        return f"s{n}"
    if kind == "api":
        posted = alice.post(steady.api.message_path, json={"type": "call_tool", "request_id": f"a{n}", "data": call})
        assert posted.status_code == 202, posted.text
        return f"a{n}"
    headers = {"Content-Type": "application/json", "Accept": BOTH, "Mcp-Session-Id": steady.mcp}
    answered = alice.post("/mcp", content=jsonrpc("tools/call", call, n), headers=headers)
    assert answered.status_code == 200, answered.text
    assert answered.json()["result"]["content"][0]["text"] == f"steady {n}"
    return None


def test_a_well_behaved_client_keeps_every_session_and_stream_through_a_hostile_barrage(
    live_server: LiveServer, hostile: Sessions, steady: Sessions
) -> None:
    assert steady.mcp_stream is not None
    streams = {"sse": steady.sse.stream, "api": steady.api.stream, "mcp": steady.mcp_stream}
    keys = {"sse": "id", "api": "request_id"}
    sent: dict[str, list[str]] = {"sse": [], "api": []}
    with live_server.client(token=None) as client, live_server.client(steady.token) as alice:

        def any_fuzz(endpoint: Endpoint) -> st.SearchStrategy[HostileRequest]:
            fuzz = header_fuzz(endpoint, hostile, steady, live_server.authority)
            return fuzz | body_fuzz(endpoint, hostile) if endpoint.body != "none" else fuzz

        @settings(FUZZ, max_examples=150)
        @given(case=cases(ENDPOINTS, any_fuzz), kind=st.sampled_from(("sse", "api", "mcp")))
        def barrage(case: Case, kind: SteadyKind) -> None:
            exchange(live_server, client, case[1], hostile)
            awaited = _steady_call(alice, steady, kind, sum(map(len, sent.values())))
            if awaited is not None:
                sent[kind].append(awaited)

        barrage()

        # nothing alice sent during the barrage was lost, duplicated or reordered
        for kind, key in keys.items():
            if sent[kind]:
                streams[kind].wait_for(carrying(key, sent[kind][-1]))
            seen = [
                message[key]
                for message in map(message_of, streams[kind].events)
                if isinstance(message, dict) and str(message.get(key, "")).startswith(kind[0])
            ]
            assert seen == sent[kind], (kind, seen, sent[kind])

        # after the barrage: a tools/call on each session succeeds and its stream delivers the result
        after: tuple[tuple[SteadyKind, int], ...] = (("sse", 10_000), ("api", 10_001), ("mcp", 10_002))
        for kind, n in after:
            awaited = _steady_call(alice, steady, kind, n)
            if awaited is not None:
                message = message_of(streams[kind].wait_for(carrying(keys[kind], awaited)))
                assert f"steady {n}" in json.dumps(message), message
        for stream in streams.values():
            stream.wait_for_ping(after=stream.pings)
            assert not stream.ended, stream.error


def test_an_origin_with_an_unclosed_ipv6_bracket_is_refused_with_a_json_403(live_server: LiveServer) -> None:
    mark = len(live_server.log.records)
    with live_server.client(token=None) as client:
        response = client.get("/health", headers={"Origin": "http://[::1"})
    assert not live_server.log.problems(since=mark)
    assert response.status_code == 403, (response.status_code, response.text)
    assert response.json()["error"]["message"]


def test_a_prompts_get_without_its_required_argument_is_invalid_params_and_logs_no_traceback(
    live_server: LiveServer,
) -> None:
    mark = len(live_server.log.records)
    with live_server.client() as client:
        response = client.post("/message", content=jsonrpc("prompts/get", {"name": "summarize"}), headers=JSON)
    assert response.status_code == 200, response.text
    assert not live_server.log.problems(since=mark)
    assert response.json()["error"]["code"] == -32602


def test_after_the_fuzzing_the_server_is_healthy_has_no_leaked_streams_and_logged_no_traceback(
    live_server: LiveServer, hostile: Sessions, steady: Sessions
) -> None:
    with live_server.client(token=None) as client:
        health = client.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    # the streams the fixtures hold open are the only ones left: every hostile stream was closed
    live_server.wait_for_stream_counts(
        {SessionKind.STREAMABLE_HTTP: 1, SessionKind.SSE: 2, SessionKind.DATAPULSE_API: 2}
    )
    problems = unknown_problems(live_server)
    assert not problems, "\n".join(problems)
