"""Hypothesis strategies for hostile HTTP input: bodies (raw bytes, JSON values, mutated JSON-RPC and
DataPulse API messages), header sets and query strings.

Everything generated is something a real client can put on the wire (header values never hold CR, LF
or NUL, which the HTTP client itself refuses); what the server makes of it is the test's business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlencode

from hypothesis import strategies as st

from tests.support.mcp_http import CLIENT_INFO, LEGACY, MODERN

BodyKind = Literal["none", "initialize", "jsonrpc", "modern", "api"]
"""The message shape an endpoint expects: none (GET/DELETE), a 2025 ``initialize``, any JSON-RPC
message, a 2026-07-28 request (``_meta`` envelope), or a DataPulse API ``{type, request_id, data}``."""

Headers = list[tuple[bytes, bytes]]

METHODS = (
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "server/discover",
    "subscriptions/listen",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "listTools",
    "callTool",
)
TOOLS = ("echo", "add", "uppercase_text", "get_time")
"""Demo tools safe to call with anything (``fetch_url`` is left out: it would reach the network)."""
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", LEGACY, MODERN)
HUGE_NUMBERS = (2**63, -(2**63) - 1, 2**64, 10**400, -(10**300), 1.7976931348623157e308, 5e-324, -0.0)
RAW_NUMBERS = (b"1e999", b"-1e999", b"1E400", b"-0", b"1.0e-400", b"123456789" * 50)
MAX_NESTING = 400
MUTATIONS = st.sampled_from((0, 0, 0, 1, 1, 2, 3))
"""How many members of a valid-looking message to drop or replace (often none: the rest of the body is
hostile enough, and the message then reaches the handlers)."""
MODERN_META: dict[str, Any] = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def header_text(max_size: int = 40) -> st.SearchStrategy[bytes]:
    """Any Unicode text a header can carry (UTF-8, no control characters, no surrounding blanks)."""
    alphabet = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
    return st.text(alphabet, max_size=max_size).map(lambda text: text.encode().strip(b" \t"))


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: unicode keys and strings, big and tiny numbers, nested arrays and objects."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.sampled_from(HUGE_NUMBERS)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=30)
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
        max_leaves=max_leaves,
    )


def dumps(value: Any, *, ensure_ascii: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii).encode()


def _request_ids() -> st.SearchStrategy[Any]:
    """Mostly well-typed ids (so that the message gets further), sometimes huge numbers or any JSON."""
    usual = st.integers(-(2**31), 2**31) | st.text(max_size=20)
    return st.one_of(usual, usual, usual, st.sampled_from(HUGE_NUMBERS), json_values(4))


def _tool_arguments() -> st.SearchStrategy[Any]:
    shaped = st.sampled_from(("message", "text", "a", "b", "url")).flatmap(
        lambda key: st.dictionaries(st.just(key), json_values(6), min_size=1)
    )
    numbers = st.fixed_dictionaries({"a": st.integers() | st.floats(), "b": st.integers() | st.floats()})
    return shaped | numbers | st.dictionaries(st.text(max_size=10), json_values(6), max_size=4) | json_values(6)


def _params_for(method: str, modern: bool) -> st.SearchStrategy[Any]:
    name = st.sampled_from(TOOLS) | st.text(max_size=20)
    base: st.SearchStrategy[Any]
    if method in ("tools/call", "callTool"):
        base = st.fixed_dictionaries({"name": name}, optional={"arguments": _tool_arguments(), "_meta": json_values(4)})
    elif method == "initialize":
        base = st.fixed_dictionaries(
            {
                "protocolVersion": st.sampled_from(VERSIONS) | json_values(2),
                "capabilities": st.just({}) | json_values(6),
                "clientInfo": st.just(CLIENT_INFO) | json_values(4),
            }
        )
    elif method in ("resources/read", "resources/subscribe"):
        base = st.fixed_dictionaries({"uri": st.just("datapulse://about") | st.text(max_size=40)})
    elif method == "prompts/get":
        base = st.fixed_dictionaries(
            {"name": st.just("summarize") | st.text(max_size=10)}, optional={"arguments": json_values(6)}
        )
    elif method == "notifications/cancelled":
        base = st.fixed_dictionaries({"requestId": _request_ids()}, optional={"reason": json_values(2)})
    else:
        base = st.dictionaries(st.text(max_size=10), json_values(6), max_size=3)
    if not modern:
        return base
    return base.flatmap(lambda params: _with_envelope(params))


def _with_envelope(params: Any) -> st.SearchStrategy[Any]:
    """Add the 2026-07-28 ``_meta`` envelope, sometimes with a member dropped or of the wrong type."""
    if not isinstance(params, dict):
        return st.just(params)
    meta = MODERN_META

    def spoil(choice: tuple[str | None, Any]) -> dict[str, Any]:
        key, value = choice
        spoiled = dict(meta)
        if key is not None:
            if value is _DROP:
                spoiled.pop(key)
            else:
                spoiled[key] = value
        return {**params, "_meta": spoiled}

    keys = st.sampled_from([None, *meta])
    return st.tuples(keys, st.just(_DROP) | json_values(4)).map(spoil)


_DROP = object()


@st.composite
def jsonrpc_messages(draw: st.DrawFn, kind: BodyKind) -> Any:
    """A JSON-RPC message for one endpoint, valid-looking, then 0-3 members dropped or replaced (wrong
    types, huge numbers, unicode), plus stray extra members."""
    if kind == "initialize":
        method = draw(st.sampled_from(("initialize",) * 3 + METHODS))
    else:
        method = draw(st.sampled_from(METHODS))
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if not method.startswith("notifications/") or draw(st.booleans()):
        message["id"] = draw(_request_ids())
    message["params"] = draw(_params_for(method, kind == "modern"))
    for _ in range(draw(MUTATIONS)):
        key = draw(st.sampled_from(("jsonrpc", "id", "method", "params", "result", "error")) | st.text(max_size=8))
        if draw(st.booleans()):
            message.pop(key, None)
        else:
            message[key] = draw(json_values(6))
    return message


@st.composite
def api_messages(draw: st.DrawFn) -> Any:
    """A DataPulse API message ``{type, request_id, data}``, valid-looking, then mutated like `jsonrpc_messages`."""
    message_type = draw(st.sampled_from(("list_tools", "call_tool", "call_tool")) | st.text(max_size=12))
    data: Any = {}
    if message_type == "call_tool":
        flat = draw(st.booleans())
        arguments = draw(_tool_arguments())
        name = draw(st.sampled_from(TOOLS) | json_values(2))
        data = (
            {"name": name, **arguments}
            if flat and isinstance(arguments, dict)
            else {"name": name, "arguments": arguments}
        )
    message: dict[str, Any] = {"type": message_type, "request_id": draw(_request_ids()), "data": data}
    for _ in range(draw(MUTATIONS)):
        key = draw(st.sampled_from(("type", "request_id", "data", "jsonrpc")) | st.text(max_size=8))
        if draw(st.booleans()):
            message.pop(key, None)
        else:
            message[key] = draw(json_values(6))
    return message


def _messages(kind: BodyKind) -> st.SearchStrategy[Any]:
    return api_messages() | jsonrpc_messages("jsonrpc") if kind == "api" else jsonrpc_messages(kind)


@st.composite
def _byte_mutations(draw: st.DrawFn, kind: BodyKind) -> bytes:
    """A valid-looking message's JSON text, truncated, or with bytes flipped, inserted or removed."""
    body = bytearray(dumps(draw(_messages(kind)), ensure_ascii=draw(st.booleans())))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        edit = draw(st.sampled_from(("truncate", "flip", "insert", "delete")))
        if edit == "truncate":
            del body[at:]
        elif edit == "flip" and at < len(body):
            body[at] ^= draw(st.integers(1, 255))
        elif edit == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from((*RAW_NUMBERS, b'"\\ud800"', b"\\")))
        elif at < len(body):
            del body[at]
    return bytes(body)


@st.composite
def _deep_nesting(draw: st.DrawFn, kind: BodyKind) -> bytes:
    """Arrays or objects nested up to `MAX_NESTING` deep, bare or inside a tools/call's arguments."""
    depth = draw(st.integers(1, MAX_NESTING))
    opener, closer = draw(st.sampled_from(((b"[", b"]"), (b'{"a":', b"}"))))
    nested = opener * depth + b"1" + closer * depth
    if not draw(st.booleans()):
        return nested
    if kind == "api":
        return b'{"type":"call_tool","request_id":"deep","data":{"name":"echo","message":' + nested + b"}}"
    meta = b',"_meta":' + dumps(MODERN_META) if kind == "modern" else b""
    return (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":'
        + nested
        + b"}"
        + meta
        + b"}}"
    )


@st.composite
def _raw_numbers(draw: st.DrawFn, kind: BodyKind) -> bytes:
    """A valid-looking message with a number JSON can spell but a double cannot hold (``1e999``)."""
    number = draw(st.sampled_from(RAW_NUMBERS))
    if kind == "api":
        templates = [
            b'{"type":"call_tool","request_id":1,"data":{"name":"add","a":%s,"b":1}}',
            b'{"type":"call_tool","request_id":%s,"data":{"name":"get_time"}}',
        ]
    else:
        templates = [
            b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":%s,"b":1}}}',
            b'{"jsonrpc":"2.0","id":%s,"method":"ping"}',
        ]
    return draw(st.sampled_from(templates)) % number


def oversized(max_body_bytes: int) -> st.SearchStrategy[bytes]:
    """A well-formed message just over the body limit."""
    return st.integers(max_body_bytes, max_body_bytes + 4096).map(
        lambda size: b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"' + b"x" * size + b'"}}'
    )


def bodies(kind: BodyKind, max_body_bytes: int) -> st.SearchStrategy[bytes]:
    """Every flavour of hostile body for an endpoint expecting ``kind`` messages."""
    messages = _messages(kind).map(dumps)
    return st.one_of(
        st.binary(max_size=64),
        json_values().map(dumps),
        messages,
        messages,
        messages,
        st.lists(_messages(kind), max_size=3).map(dumps),
        _byte_mutations(kind),
        _deep_nesting(kind),
        _raw_numbers(kind),
        oversized(max_body_bytes),
    )


def valid_body(kind: BodyKind) -> bytes | None:
    """A well-formed body of ``kind`` (the baseline that header and query fuzzing starts from)."""
    if kind == "none":
        return None
    if kind == "api":
        return dumps(
            {"type": "call_tool", "request_id": "r1", "data": {"name": "echo", "arguments": {"message": "hi"}}}
        )
    if kind == "initialize":
        params: dict[str, Any] = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
        return dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
    params = {"name": "echo", "arguments": {"message": "hi"}}
    if kind == "modern":
        params["_meta"] = MODERN_META
    return dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})


def header_pools(*, token: str, host: str, session_ids: Sequence[str]) -> dict[str, st.SearchStrategy[bytes]]:
    """For each header the server reads, values worth trying: good ones, near misses and junk.

    Args:
        token: the caller's valid bearer token.
        host: the server's own ``host:port``.
        session_ids: session ids worth aiming at (the caller's own and other principals').
    """
    ids = [s.encode() for s in session_ids]
    long_text = st.integers(129, 9000).map(lambda n: b"s" * n)

    def pick(*values: bytes | str) -> st.SearchStrategy[bytes]:
        return st.sampled_from([v.encode() if isinstance(v, str) else v for v in values])

    return {
        "content-type": pick(
            "application/json",
            "application/json; charset=utf-8",
            "APPLICATION/JSON",
            "application/x+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "",
            "json",
            "application/json, text/plain",
            ";",
        )
        | header_text(),
        "accept": pick(
            "application/json, text/event-stream",
            "application/json",
            "text/event-stream",
            "*/*",
            "text/*",
            "text/html",
            "application/json;q=0, text/event-stream;q=0",
            "",
            ",,,",
            "application/json;q=abc",
        )
        | header_text(),
        "mcp-session-id": (st.sampled_from(ids) if ids else st.nothing())
        | pick("", "-", "a b")
        | long_text
        | header_text(),
        "mcp-protocol-version": pick(*VERSIONS, "2026-07-29", "1999-01-01", "", "2025-11-25 x") | header_text(12),
        "mcp-method": pick(*METHODS, "", "tools/call x") | header_text(),
        "mcp-name": pick(*TOOLS, "fetch_url", "datapulse://about", "") | header_text(),
        "mcp-param-message": header_text() | pick("=?base64?aGk=?=", "=?base64?!!!?="),
        "last-event-id": pick("x.1", ".", "1", "a.b", "x." + "9" * 40, "x.-1", "", "." * 300) | header_text(),
        "authorization": pick(
            f"Bearer {token}",
            f"bearer {token}",
            f"Bearer  {token}",
            "Bearer",
            f"Bearer\t{token}",
            f"Basic {token}",
            f"Bearer {token}x",
            f"Bearer {token[:-1]}",
            "Bearer " + "a" * 8000,
            f"Token {token}",
            f"{token}",
        )
        | header_text().map(lambda value: b"Bearer " + value if value else b"Bearer")
        | header_text(),
        "host": pick(
            host,
            host.replace("127.0.0.1", "localhost"),
            "127.0.0.1",
            "[::1]:1",
            "evil.example",
            "evil.example:80",
            "localhost.evil.example",
            "",
            "127.0.0.1:99999",
            "LOCALHOST:1",
        )
        | header_text(),
        "origin": pick(
            f"http://{host}",
            "http://localhost:3000",
            "https://evil.example",
            "null",
            "",
            "file://",
            "http://127.0.0.1.evil.example",
            "http://[::1",
            "http://localhost:notaport",
        )
        | header_text(),
        "x-forwarded-host": pick("evil.example", host) | header_text(),
    }


@st.composite
def hostile_headers(
    draw: st.DrawFn, baseline: Mapping[str, bytes], pools: Mapping[str, st.SearchStrategy[bytes]]
) -> Headers:
    """``baseline`` with 1-4 headers dropped, replaced or duplicated, names in random case, and
    sometimes a junk header added."""
    headers: dict[str, list[bytes]] = {name.lower(): [value] for name, value in baseline.items()}
    for name in draw(st.lists(st.sampled_from(sorted(pools)), min_size=1, max_size=4, unique=True)):
        actions = ("replace", "replace", "drop") if name == "host" else ("replace", "replace", "drop", "duplicate")
        action = draw(st.sampled_from(actions))  # the HTTP client refuses to send two Host headers
        if action == "drop":
            headers.pop(name, None)
        elif action == "replace":
            headers[name] = [draw(pools[name])]
        else:
            headers[name] = [*headers.get(name, []), draw(pools[name])]
    out: Headers = []
    for name, values in headers.items():
        for value in values:
            cased = draw(st.sampled_from((name, name.title(), name.upper())))
            out.append((cased.encode(), value))
    if draw(st.integers(0, 4)) == 0:
        junk_name = draw(st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,30}", fullmatch=True))
        if junk_name.lower() not in ("content-length", "transfer-encoding", "connection", "expect", "upgrade"):
            out.append((junk_name.encode(), draw(header_text(200))))
    return out


@st.composite
def hostile_query(draw: st.DrawFn, baseline: Mapping[str, str], session_ids: Sequence[str]) -> str:
    """A query string from ``baseline``: session_id replaced (unicode, empty, 129+ characters, another
    principal's id), repeated, dropped, or joined by random parameters; percent-encoded or raw."""
    pairs = list(baseline.items())
    values = (
        st.sampled_from(list(session_ids) or ["x"])
        | st.text(max_size=40)
        | st.integers(129, 6000).map(lambda n: "q" * n)
        | st.sampled_from(("", " ", "%", "..", "a/b", "\u00e9t\u00e9", "\U0001f600", "a" * 128))
    )
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(("replace", "repeat", "drop", "extra")))
        if action == "replace":
            pairs = [(k, draw(values)) if k == "session_id" else (k, v) for k, v in pairs] or [
                ("session_id", draw(values))
            ]
        elif action == "repeat":
            at = draw(st.integers(0, len(pairs)))
            pairs.insert(at, ("session_id", draw(values)))
        elif action == "drop":
            pairs = [(k, v) for k, v in pairs if k != "session_id"]
        else:
            pairs.append((draw(st.text(max_size=10)), draw(st.text(max_size=20))))
    encoded = urlencode(pairs, quote_via=quote)
    raw = draw(st.sampled_from(("", "", "", "&", "&&=&", "%zz", "%00", "session_id", "=x", "a=%ff%fe")))
    query = "&".join(part for part in (encoded, raw) if part)
    return f"?{query}" if query else ""
