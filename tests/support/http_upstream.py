"""Real HTTP MCP servers that speak exactly one era of MCP over HTTP: upstreams for the gateway tests.

Run from the repository root::

    python -m tests.support.http_upstream --era {2026,2025,2024} --port N [--bearer TOKEN] [--host 127.0.0.1]
        [--app MODULE:ATTR]

It serves the tests' SDK server (`tests.support.stdio_server.build_server`: tools echo, increment, pid, crash,
slow, sample, log, change_tools, touch, ...; resource ``stdio://info``; template ``stdio://items/{item}``; prompt
``greet``), or with ``--app MODULE:ATTR`` the ``MCPServer`` at that attribute (e.g.
``tests.conformance.fixture_server:app``), under real uvicorn, prints one line ``upstream ready http://HOST:PORT
era=ERA`` on stdout once it listens (``--port 0``: a free port, named in that line) and serves until SIGTERM.

Eras, all on the SDK's own apps (mcp 2.3.0):

``2026``  ``POST /mcp``: only the 2026-07-28 stateless Streamable HTTP (``server/discover``, the ``_meta``
          envelope, ``MCP-Protocol-Version: 2026-07-28``). The SDK's streamable app routes on that header: a
          request carrying a non-handshake version goes to its 2026 entry, anything else to its 2025 transport.
          `ModernOnly` lets only the former reach it. Every other POST (``initialize`` included, with no header
          or a handshake-era one) is answered as the SDK's 2026 entry answers an unsupported version: HTTP 400,
          JSON-RPC ``-32022`` "Unsupported protocol version", data ``{"supported": ["2026-07-28"], "requested":
          V}``; a GET or DELETE (session streams, session ends) gets what that entry answers to a non-POST: 405
          with ``Allow: POST``. No ``Mcp-Session-Id`` is ever issued.
``2025``  ``POST/GET/DELETE /mcp``: only the 2025-03-26...2025-11-25 Streamable HTTP (``initialize``,
          ``Mcp-Session-Id``), stateful. `HandshakeOnly` answers what a pre-2026 SDK answers: a request with a
          2026 ``MCP-Protocol-Version`` (``initialize`` aside: its header is dropped, as an older SDK ignores it)
          gets HTTP 400, JSON-RPC ``-32600`` "Bad Request: Missing session ID" without a session (what the
          ``server/discover`` probe of ``mode="auto"`` gets, so the SDK client falls back to ``initialize``: see
          ``mcp/client/_probe.py``), or "Bad Request: Unsupported protocol version: ..." within one; a
          ``server/discover`` without that header gets "Missing session ID" too, or, within a session, JSON-RPC
          ``-32601`` "Method not found" (HTTP 200).
``2024``  the 2024-11-05 HTTP+SSE transport, the SDK's ``sse_app()`` as is: ``GET /sse`` opens the stream whose
          ``endpoint`` event names ``/messages/?session_id=<hex>``; ``POST /messages/?session_id=<hex>`` carries
          the client's messages (202). No ``/mcp``.

``--bearer TOKEN``: every request without ``Authorization: Bearer TOKEN`` gets 401 (constant-time comparison),
except ``GET /_upstream/seen``, which is never authenticated and answers ``{"requests": N, "method": ...,
"path": ..., "authorization": ..., "traceparent": ..., "session": ..., "sessions": [...]}``: how many requests the
upstream got (``/_upstream/seen`` itself not counted, refused ones counted), the method, path, ``Authorization``,
``traceparent`` and ``Mcp-Session-Id`` of the last one (``null`` when absent), and every ``Mcp-Session-Id`` any
request carried, so a test can tell what a gateway sent upstream.

`spawn_upstream` runs this command as a subprocess for a test.
"""

from __future__ import annotations

import argparse
import hmac
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, get_args

import anyio
import uvicorn
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.server.mcpserver import MCPServer
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp_types import (
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    UnsupportedProtocolVersionErrorData,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.support.processes import drain
from tests.support.stdio_server import Noise, build_server

Era = Literal["2026", "2025", "2024"]
ERAS: Final[tuple[Era, ...]] = get_args(Era)
MCP_PATH: Final = "/mcp"
SSE_PATH: Final = "/sse"
MESSAGES_PATH: Final = "/messages/"
SEEN_PATH: Final = "/_upstream/seen"
READY_PREFIX: Final = "upstream ready "
STOPPED_LINE: Final = "upstream stopped"
"""Printed on stderr once a graceful shutdown (SIGTERM) is complete; uvicorn then re-raises the signal, so the
process ends with status -SIGTERM."""
DEFAULT_VERSION: Final = "2025-03-26"
"""The version a Streamable HTTP request without ``MCP-Protocol-Version`` is taken to speak (the spec's default)."""

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
GRACEFUL_SHUTDOWN_S: Final = 3
MAX_BODY_BYTES: Final = 4 * 1024 * 1024

_VERSION_HEADER: Final = MCP_PROTOCOL_VERSION_HEADER.lower().encode("latin-1")
_SESSION_HEADER: Final = b"mcp-session-id"


# --- small ASGI helpers ----------------------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lowercase) in ``scope``, or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _respond(
    send: Send, status: int, body: Any = None, *, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a whole response: ``body`` as JSON (no body if None)."""
    raw = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    all_headers = list(headers or [])
    if body is not None:
        all_headers.append((b"content-type", b"application/json"))
    all_headers.append((b"content-length", str(len(raw)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": raw, "more_body": False})


def _jsonrpc_error(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def _read_body(receive: Receive, send: Send) -> bytes | None:
    """The whole request body; None if the client went away, or if it sent more than `MAX_BODY_BYTES` (then
    answered 413 here)."""
    chunks = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.extend(message.get("body", b""))
        if len(chunks) > MAX_BODY_BYTES:
            await _respond(send, 413)
            return None
        if not message.get("more_body", False):
            return bytes(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` (already read) once, then defers to the real one (disconnects)."""
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


def _without_header(scope: Scope, name: bytes) -> Scope:
    return {**scope, "headers": [(key, value) for key, value in scope["headers"] if key != name]}


def _decode(body: bytes) -> Any:
    """The JSON body, or `_UNPARSEABLE`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _UNPARSEABLE


_UNPARSEABLE: Final = object()


def _request_id(decoded: Any) -> Any:
    """The JSON-RPC id of a decoded request (None for anything else)."""
    if isinstance(decoded, dict):
        request_id = decoded.get("id")
        if isinstance(request_id, str | int) and not isinstance(request_id, bool):
            return request_id
    return None


def _method(decoded: Any) -> str | None:
    method = decoded.get("method") if isinstance(decoded, dict) else None
    return method if isinstance(method, str) else None


def _is_modern(version: str | None) -> bool:
    """Whether a ``MCP-Protocol-Version`` value sends a request to the SDK's 2026 entry (present, not handshake)."""
    return version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS


# --- era restrictions ------------------------------------------------------------------------------------------------


class ModernOnly:
    """The SDK's streamable app restricted to 2026-07-28: only requests its 2026 entry would take reach it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH or _is_modern(_header(scope, _VERSION_HEADER)):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            # What the SDK's 2026 entry answers to any non-POST (a GET stream, a DELETE of a session).
            await _respond(send, 405, headers=[(b"allow", b"POST")])
            return
        body = await _read_body(receive, send)
        if body is None:
            return
        decoded = _decode(body)
        if decoded is _UNPARSEABLE:
            await _respond(send, 400, _jsonrpc_error(None, PARSE_ERROR, "Parse error"))
            return
        requested = _header(scope, _VERSION_HEADER)
        if requested is None and _method(decoded) == "initialize":
            offered = decoded.get("params", {}).get("protocolVersion") if isinstance(decoded, dict) else None
            requested = offered if isinstance(offered, str) else None
        # The words and data of the SDK's own rejection (mcp.shared.inbound.unsupported_protocol_version_rejection).
        data = UnsupportedProtocolVersionErrorData(
            supported=list(MODERN_PROTOCOL_VERSIONS), requested=requested or DEFAULT_VERSION
        ).model_dump(mode="json")
        error = _jsonrpc_error(_request_id(decoded), UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version", data)
        await _respond(send, 400, error)


class HandshakeOnly:
    """The SDK's stateful streamable app restricted to 2025-03-26...2025-11-25, answering 2026 requests as an
    older SDK does (it never routes them to the SDK's 2026 entry)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != MCP_PATH:
            await self.app(scope, receive, send)
            return
        version = _header(scope, _VERSION_HEADER)
        in_session = _header(scope, _SESSION_HEADER) is not None
        if scope["method"] != "POST":
            if _is_modern(version):
                await self._refuse_version(send, version, in_session)
            else:
                await self.app(scope, receive, send)
            return
        body = await _read_body(receive, send)
        if body is None:
            return
        decoded = _decode(body)
        method = _method(decoded)
        if method == "initialize" or decoded is _UNPARSEABLE:
            # An older SDK reads initialize's version from its body, never the header (nor a header on garbage).
            inner_scope = _without_header(scope, _VERSION_HEADER) if _is_modern(version) else scope
            await self.app(inner_scope, _replaying(body, receive), send)
        elif _is_modern(version):
            await self._refuse_version(send, version, in_session)
        elif method == "server/discover":
            if in_session:
                await _respond(send, 200, _jsonrpc_error(_request_id(decoded), METHOD_NOT_FOUND, "Method not found"))
            else:
                await _respond(send, 400, _jsonrpc_error(None, INVALID_REQUEST, "Bad Request: Missing session ID"))
        else:
            await self.app(scope, _replaying(body, receive), send)

    @staticmethod
    async def _refuse_version(send: Send, version: str | None, in_session: bool) -> None:
        """What the SDK's 2025 transport answers (its session check first, then its version check)."""
        if not in_session:
            message = "Bad Request: Missing session ID"
        else:
            supported = ", ".join(HANDSHAKE_PROTOCOL_VERSIONS)
            message = f"Bad Request: Unsupported protocol version: {version}. Supported versions: {supported}"
        await _respond(send, 400, _jsonrpc_error(None, INVALID_REQUEST, message))


@dataclass
class Seen:
    """What the upstream has been sent: a request count and the last request's method, path and headers."""

    requests: int = 0
    method: str | None = None
    path: str | None = None
    authorization: str | None = None
    traceparent: str | None = None
    session: str | None = None
    """The last request's ``Mcp-Session-Id``."""
    sessions: set[str] = field(default_factory=set)
    """Every ``Mcp-Session-Id`` a request carried (how many upstream sessions the gateway used)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "method": self.method,
            "path": self.path,
            "authorization": self.authorization,
            "traceparent": self.traceparent,
            "session": self.session,
            "sessions": sorted(self.sessions),
        }


BEARER_PATH: Final = "/_upstream/bearer"
"""``PUT`` a new token here (body: the token) to rotate what a ``--bearer`` upstream accepts (never authenticated):
a test's way to make the gateway's current upstream token stale."""


class Gate:
    """The outermost layer: serves `SEEN_PATH`, records every other request, and (with a token) refuses one
    without ``Authorization: Bearer <token>`` with 401."""

    def __init__(self, app: ASGIApp, bearer: str | None) -> None:
        self.app = app
        self.expected = None if bearer is None else f"Bearer {bearer}".encode()
        self.seen = Seen()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == SEEN_PATH and scope["method"] == "GET":
            await _respond(send, 200, self.seen.as_json())
            return
        if scope["path"] == BEARER_PATH and scope["method"] == "PUT" and self.expected is not None:
            body = await _read_body(receive, send)
            if body is None:
                return
            self.expected = b"Bearer " + body.strip()
            await _respond(send, 200, {"rotated": True})
            return
        authorization = _header(scope, b"authorization")
        self.seen.requests += 1
        self.seen.method = scope["method"]
        self.seen.path = scope["path"]
        self.seen.authorization = authorization
        self.seen.traceparent = _header(scope, b"traceparent")
        self.seen.session = _header(scope, b"mcp-session-id")
        if self.seen.session is not None:
            self.seen.sessions.add(self.seen.session)
        if self.expected is not None and not hmac.compare_digest(
            (authorization or "").encode("latin-1"), self.expected
        ):
            await _respond(
                send,
                401,
                {"error": "invalid_token", "error_description": "missing or wrong bearer token"},
                headers=[(b"www-authenticate", b'Bearer error="invalid_token"')],
            )
            return
        await self.app(scope, receive, send)


def load_server(spec: str) -> MCPServer[Any]:
    """The ``MCPServer`` named by ``MODULE:ATTR`` (imported)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:ATTR, got {spec!r}")
    server = getattr(importlib.import_module(module_name), attr)
    if not isinstance(server, MCPServer):
        raise TypeError(f"{spec} is a {type(server).__name__}, not an MCPServer")
    return server


def build_app(
    era: Era, *, bearer: str | None = None, host: str = "127.0.0.1", server: MCPServer[Any] | None = None
) -> Gate:
    """The ASGI app of an upstream of ``era`` (see the module docstring), serving ``server`` (default: the tests'
    `build_server`)."""
    if server is None:
        server = build_server(Noise())
    inner: ASGIApp
    if era == "2026":
        # The SDK routes 2026-07-28 requests on their header before its stateless/stateful switch, so the flag
        # only shapes the handshake path, which ModernOnly closes anyway; stateless keeps it from ever holding one.
        inner = ModernOnly(server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=True, host=host))
    elif era == "2025":
        inner = HandshakeOnly(
            server.streamable_http_app(streamable_http_path=MCP_PATH, stateless_http=False, host=host)
        )
    else:
        sse = server.sse_app(sse_path=SSE_PATH, message_path=MESSAGES_PATH, host=host)
        sse.router.lifespan_context = _server_lifespan(server)
        inner = sse
    return Gate(inner, bearer)


def _server_lifespan(server: MCPServer[Any]) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A Starlette lifespan that holds ``server``'s own lifespan for as long as the app is served.

    The SDK's ``sse_app()`` enters the server lifespan once per SSE connection only (its streamable app enters it
    once for the process), so a server whose lifespan drives process-wide state (the conformance fixture's dynamic
    tool, resource and prompt) would otherwise start over with every connection made after all others closed.
    Connections still enter it on their own as well; the default server's lifespan does nothing."""
    lowlevel = server._lowlevel_server

    @asynccontextmanager
    async def hold(_app: Any) -> AsyncIterator[None]:
        async with lowlevel.lifespan(lowlevel):
            yield

    return hold


# --- the command -----------------------------------------------------------------------------------------------------


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: Callable[[int], None]) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            port: int = self.servers[0].sockets[0].getsockname()[1]
            self._announce(port)

    async def shutdown(self, sockets: Any = None) -> None:
        await super().shutdown(sockets)
        print(STOPPED_LINE, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.http_upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--era", choices=ERAS, required=True, help="the one MCP HTTP era to speak")
    parser.add_argument("--port", type=int, required=True, help="the port to listen on (0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    parser.add_argument("--bearer", metavar="TOKEN", help="refuse requests without Authorization: Bearer TOKEN")
    parser.add_argument("--app", metavar="MODULE:ATTR", help="serve this MCPServer instead of the tests' default")
    args = parser.parse_args(argv)
    era: Era = args.era
    host: str = args.host

    def announce(port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"{READY_PREFIX}http://{shown}:{port} era={era}", flush=True)

    config = uvicorn.Config(
        build_app(era, bearer=args.bearer, host=host, server=None if args.app is None else load_server(args.app)),
        host=host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    _AnnouncingServer(config, announce).run()


# --- for tests -------------------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A running upstream subprocess: its era, base URL (``http://127.0.0.1:PORT``) and process."""

    era: Era
    url: str
    process: Process
    stderr: bytearray = field(default_factory=bytearray, repr=False)

    @property
    def mcp_url(self) -> str:
        """The MCP endpoint: ``url + "/sse"`` for the 2024 era, ``url + "/mcp"`` otherwise."""
        return self.url + (SSE_PATH if self.era == "2024" else MCP_PATH)

    @property
    def seen_url(self) -> str:
        return self.url + SEEN_PATH

    async def kill(self) -> None:
        """SIGKILL the upstream (no goodbye to any client) and reap it."""
        if self.process.returncode is None:
            self.process.kill()
        with anyio.fail_after(STOP_TIMEOUT_S):
            await self.process.wait()


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def _discard(stream: BufferedByteReceiveStream) -> None:
    """Read ``stream`` to its end (the upstream prints nothing after its ready line, but must never block)."""
    try:
        while True:
            await stream.receive()
    except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
        return


async def _terminate(process: Process) -> None:
    """SIGTERM, then SIGKILL if it outlives `STOP_TIMEOUT_S`; reap it (its pipes stay open to be read out)."""
    with anyio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with anyio.move_on_after(STOP_TIMEOUT_S):
                await process.wait()


async def _stop(process: Process) -> None:
    """`_terminate` it, then close our ends of its pipes."""
    await _terminate(process)
    with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_S):
        await process.aclose()


@asynccontextmanager
async def spawn_upstream(era: Era, *, bearer: str | None = None, app: str | None = None) -> AsyncIterator[Upstream]:
    """Run ``python -m tests.support.http_upstream --era ERA --port 0`` (on a free port it picks itself; with
    ``--bearer`` and ``--app`` when given) until its ready line, yield it, and stop it on exit: SIGTERM, then
    SIGKILL if it is still running `STOP_TIMEOUT_S` later. Its stderr is collected into ``Upstream.stderr`` throughout.

    Raises:
        RuntimeError: it exited before it was ready (its stderr in the message).
        TimeoutError: no ready line within `STARTUP_TIMEOUT_S`.
    """
    argv = [sys.executable, "-m", "tests.support.http_upstream", "--era", era, "--port", "0"]
    if bearer is not None:
        argv += ["--bearer", bearer]
    if app is not None:
        argv += ["--app", app]
    process = await anyio.open_process(
        argv,
        cwd=str(REPO_ROOT),
        env=_environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stderr = bytearray()
    stderr_ended = anyio.Event()

    async def drain_stderr() -> None:
        try:
            await drain(process.stderr, stderr)
        finally:
            stderr_ended.set()

    line: str | None = None
    try:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drain_stderr)
            with anyio.move_on_after(STARTUP_TIMEOUT_S) as startup:
                line = await _ready_line(stdout)
                if line is None:  # it exited: wait for its last words
                    await process.wait()
                    await stderr_ended.wait()
            if line is not None:
                tasks.start_soon(_discard, stdout)
                url, _, announced = line.removeprefix(READY_PREFIX).partition(" era=")
                assert announced == era, line
                yield Upstream(era, url, process, stderr)
                await _terminate(process)
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await stderr_ended.wait()  # its last words (the stopped line) are in `Upstream.stderr`
            tasks.cancel_scope.cancel()
    finally:
        await _stop(process)
    if line is None:  # raised out here, not wrapped in the task group's ExceptionGroup
        said = stderr.decode(errors="replace")
        if startup.cancelled_caught:
            raise TimeoutError(f"the {era} upstream was not ready within {STARTUP_TIMEOUT_S:g}s:\n{said}")
        raise RuntimeError(f"the {era} upstream exited ({process.returncode}) before it was ready:\n{said}")


async def _ready_line(stdout: BufferedByteReceiveStream) -> str | None:
    """The ready line, skipping any other line; None if stdout ends first."""
    while True:
        try:
            line = (await stdout.receive_until(b"\n", 65536)).decode(errors="replace").strip()
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return None
        if line.startswith(READY_PREFIX):
            return line


if __name__ == "__main__":
    main()
