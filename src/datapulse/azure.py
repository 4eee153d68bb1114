"""DataPulse on Azure Functions: `function_app` wraps the DataPulse app in an ``azure.functions.FunctionApp``
with one catch-all HTTP function, served through the package's ASGI adapter (``azure.functions.AsgiMiddleware``).

Install with ``pip install 'datapulse[azure]'``; ``deploy/azure`` has a ready ``function_app.py``, ``host.json``
(``routePrefix: ""`` so ``/mcp`` is at the root) and the deploy steps.

What a Functions host serves, and what it cannot
------------------------------------------------
Served: every request/response exchange.

- ``POST /mcp`` with ``MCP-Protocol-Version: 2026-07-28`` (stateless; JSON, or a buffered SSE body when the
  client accepts ``text/event-stream`` and the tool reports progress or logs);
- ``POST /message`` without ``session_id`` (a JSON-RPC request answered in the response);
- ``/health``, ``/ready``, ``/metrics``, ``/openapi.json``, the OAuth metadata.

Not served: anything that needs a long-lived response or state kept between requests.

- **Long-lived SSE streams** (``GET /sse``, ``GET /events``, the 2025 ``GET /mcp`` stream, 2026 ``subscriptions/
  listen``): the adapter buffers the whole response until the app ends it (no chunked or streamed bodies) and the
  host ends an invocation at ``functionTimeout``, so a stream would hang and then be cut with nothing delivered.
  They are refused here before they reach the app: ``GET /mcp`` with ``405`` and ``Allow: POST, DELETE`` (what
  the 2025 spec says a server without a standalone stream answers, so 2025 clients go on without one), the others
  with ``501`` and a JSON-RPC error saying what to use instead. The DataPulse API's session messages
  (``POST /message?session_id=``), whose results only ever arrive on ``GET /events``, are refused the same way.
- **Sessions**: they live in the memory of one worker process. The host runs several instances (and may run
  several worker processes per instance) and routes each request to any of them, so 2025 sessions (``initialize``
  + ``Mcp-Session-Id``), the 2024-11-05 transport and the DataPulse API's sessions work only while a single worker
  serves the app, and a server-to-client request (sampling, elicitation) inside a 2025 POST waits on a response
  the client never sees before the buffered body ends. Serve those on a container host (``datapulse serve``;
  several instances: cluster mode with Redis, ``DATAPULSE_REDIS_URL``) instead.
- **Per-process state**: rate limits and stream caps count per worker; set ``DATAPULSE_REQUEST_STATE_KEYS`` (the
  same on every instance) so a 2026-07-28 multi-round-trip request retried on another instance is unsealed.

The lifespan
------------
``AsgiMiddleware.handle_async`` does not run the ASGI lifespan (``AsgiFunctionApp`` runs it on its first request,
but two concurrent first requests start it twice, and it stops it in ``__del__`` on a new event loop). DataPulse
needs its lifespan (its endpoints answer 503 without it), so the app returned here starts it itself: once per
worker process, lazily, on the worker's event loop, when the first request arrives (concurrent first requests
wait for the same start), in a background task that keeps it running between invocations. A failed start answers
503 and the next request tries again. The Python worker has no shutdown hook, so the lifespan's shutdown (drain)
runs only when `DataPulseFunctionApp.aclose` is awaited (tests, embedding); when the host recycles a worker,
its in-flight requests end with the process, and it holds no streams to drain.
"""

# No ``from __future__ import annotations`` here: the Functions worker validates the HTTP function's signature with
# ``typing.get_type_hints``, so its annotations must be real ``azure.functions`` types, not strings.

import asyncio
import contextvars
import json
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datapulse.app import create_app
from datapulse.config import Settings
from datapulse.errors import INVALID_REQUEST, SERVER_ERROR, DataPulseError, Unavailable
from datapulse.transports._http import header, query_param, send_error

try:
    import azure.functions as func
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("datapulse.azure needs the azure-functions package: pip install 'datapulse[azure]'") from exc

__all__ = [
    "FUNCTIONS_HOST",
    "AzureFunctionsAsgi",
    "DataPulseFunctionApp",
    "NoStandaloneStream",
    "NotServedOnFunctions",
    "function_app",
]

log = logging.getLogger("datapulse.azure")

FUNCTIONS_HOST = "0.0.0.0"
"""The ``host`` setting `function_app` uses when ``DATAPULSE_HOST`` is unset: the app is reached on a public host
name, not on loopback (so auth is required and any ``Host`` is accepted unless ``DATAPULSE_ALLOWED_HOSTS`` says)."""

CONTAINER_HOST_HINT = (
    "run DataPulse on a container host (datapulse serve; several instances: cluster mode with Redis) for streams "
    "and sessions"
)


class NotServedOnFunctions(DataPulseError):
    """501: a long-lived stream (or a message whose result only a stream delivers) on Azure Functions."""

    http_status = 501
    jsonrpc_code = SERVER_ERROR

    def __init__(self, what: str, instead: str) -> None:
        super().__init__(
            f"Not Implemented: {what} needs a long-lived event stream, which Azure Functions cannot serve (the host "
            f"buffers each response and ends invocations at functionTimeout); {instead}, or {CONTAINER_HOST_HINT}",
            data={"reason": "streams_unsupported_on_azure_functions"},
        )


class NoStandaloneStream(DataPulseError):
    """405 on ``GET /mcp``: what a 2025 Streamable HTTP server without a standalone stream answers."""

    http_status = 405
    jsonrpc_code = INVALID_REQUEST

    def __init__(self) -> None:
        super().__init__(
            "Method Not Allowed: no standalone GET stream on Azure Functions (POST requests are served); "
            + CONTAINER_HOST_HINT,
            headers={"Allow": "POST, DELETE"},
        )


STATELESS_INSTEAD = (
    "here use POST /mcp with MCP-Protocol-Version: 2026-07-28, or POST /message without session_id "
    "(one JSON-RPC request answered in the response)"
)


def _last_segment(path: str) -> str:
    """``/team/mcp/`` -> ``mcp``: the endpoint name, under whatever prefix (bridge configs serve ``/NAME/mcp``)."""
    return path.rstrip("/").rpartition("/")[2]


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (the adapter hands it over in one message; bounded by the host's request limit)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then defers to ``receive`` (for ``http.disconnect``)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _listen_request_id(body: bytes) -> tuple[bool, Any]:
    """(whether ``body`` is a ``subscriptions/listen`` request, its JSON-RPC id)."""
    try:
        message = json.loads(body)
    except ValueError:
        return False, None
    if isinstance(message, dict) and message.get("method") == "subscriptions/listen":
        request_id = message.get("id")
        return True, request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None
    return False, None


def _with_host(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The request's headers, with a ``Host`` made from the request URL when the invocation carries none (the
    server's base URL, used in auth challenges and metadata, comes from it)."""
    headers: list[tuple[bytes, bytes]] = list(scope["headers"])
    server = scope.get("server")
    if server is None or any(name == b"host" for name, _ in headers):
        return headers
    name, port = server
    default_port = {"http": 80, "https": 443}.get(scope.get("scheme", "http"))
    host = name if port in (None, default_port) else f"{name}:{port}"
    return [*headers, (b"host", host.encode("latin-1"))]


class _LifespanRun:
    """One run of an app's ASGI lifespan in a background task of the running event loop."""

    def __init__(self, app: ASGIApp, state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        self.started: asyncio.Future[str | None] = loop.create_future()  # None, or why the start failed
        self.stopped: asyncio.Future[None] = loop.create_future()
        self.stop = asyncio.Event()
        # A fresh context: the task outlives the invocation that started it and must not carry its context
        # (the worker's invocation id, log bindings).
        self.task = loop.create_task(self._serve(app, state), context=contextvars.Context())

    async def _serve(self, app: ASGIApp, state: dict[str, Any]) -> None:
        asked_startup = False

        async def receive() -> Message:
            nonlocal asked_startup
            if not asked_startup:
                asked_startup = True
                return {"type": "lifespan.startup"}
            await self.stop.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete":
                _settle(self.started, None)
            elif kind == "lifespan.startup.failed":
                _settle(self.started, str(message.get("message") or "the app's lifespan failed to start"))
            elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if kind == "lifespan.shutdown.failed":
                    log.error("the app's lifespan failed to shut down: %s", message.get("message", ""))
                _settle(self.stopped, None)

        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}
        try:
            await app(scope, receive, send)
        except Exception as exc:
            if self.started.done():
                log.exception("the app's lifespan ended with an error")
            else:  # ASGI: an app that raises on the lifespan scope does not support it; serve without one
                log.warning("the app does not support the ASGI lifespan (%r); serving without it", exc)
                _settle(self.started, None)
        finally:
            _settle(self.started, "the app's lifespan returned before it started")
            _settle(self.stopped, None)


def _settle(future: "asyncio.Future[Any]", value: Any) -> None:
    if not future.done():
        future.set_result(value)


class AzureFunctionsAsgi:
    """The ASGI app each Functions invocation runs: refuses long-lived streams before they reach ``app``, and
    starts ``app``'s lifespan once (see the module docstring).

    Args:
        app: the wrapped ASGI app (a `create_app` app, or a host app mounting one).
        startup_timeout_s: bound on the lifespan's start; past it the request gets 503 and the next one retries.
        shutdown_timeout_s: bound on `aclose` waiting for the lifespan's shutdown; past it the task is cancelled.
    """

    def __init__(self, app: ASGIApp, *, startup_timeout_s: float = 60.0, shutdown_timeout_s: float = 30.0) -> None:
        self.app = app
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.state: dict[str, Any] = {}
        self._run: _LifespanRun | None = None

    @property
    def started(self) -> bool:
        """Whether the lifespan has started (and not been closed)."""
        run = self._run
        return run is not None and run.started.done() and run.started.result() is None

    async def ensure_started(self) -> None:
        """Start the lifespan unless it runs; concurrent callers wait for the same start.

        Raises:
            Unavailable: the start failed or outlasted ``startup_timeout_s`` (the next call tries again).
        """
        if self.started:
            return
        if self._run is None:
            self._run = _LifespanRun(self.app, self.state)
        run = self._run
        try:
            failure = await asyncio.wait_for(asyncio.shield(run.started), self.startup_timeout_s)
        except TimeoutError:
            failure = f"the lifespan did not start within {self.startup_timeout_s:g} s"
            run.task.cancel()
        if failure is not None:
            if self._run is run:
                self._run = None
            log.error("DataPulse did not start on this worker: %s", failure)
            raise Unavailable(  # the cause (maybe a traceback) only in the log
                "Service Unavailable: the server did not start on this worker; retry shortly",
                headers={"Retry-After": "1"},
            )

    async def aclose(self) -> None:
        """Run the lifespan's shutdown (drain), bounded by ``shutdown_timeout_s``; a later request starts it anew."""
        run, self._run = self._run, None
        if run is None:
            return
        run.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(run.stopped), self.shutdown_timeout_s)
        except TimeoutError:
            log.warning("the lifespan did not shut down within %g s; cancelling it", self.shutdown_timeout_s)
        if not run.task.done():
            run.task.cancel()
        await asyncio.gather(run.task, return_exceptions=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # a server that drives the lifespan itself: share our single run
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            refusal, request_id, receive = await self._refusal(scope, receive)
            if refusal is not None:
                await send_error(send, refusal, request_id)
                return
            await self.ensure_started()
        except DataPulseError as error:
            await send_error(send, error)
            return
        await self.app({**scope, "headers": _with_host(scope), "state": dict(self.state)}, receive, send)

    async def _refusal(self, scope: Scope, receive: Receive) -> tuple[DataPulseError | None, Any, Receive]:
        """The refusal of a request Functions cannot serve (None: serve it), its JSON-RPC id, and the ``receive``
        to serve it with (the body is read ahead for ``POST /mcp``)."""
        method: str = scope["method"]
        endpoint = _last_segment(scope["path"])
        refusal: DataPulseError | None = None
        if method == "GET" and endpoint == "mcp":
            refusal = NoStandaloneStream()
        elif method == "GET" and endpoint == "sse":
            refusal = NotServedOnFunctions("the 2024-11-05 HTTP+SSE transport (GET /sse)", STATELESS_INSTEAD)
        elif method == "GET" and endpoint == "events":
            refusal = NotServedOnFunctions("the DataPulse API's event stream (GET /events)", STATELESS_INSTEAD)
        elif method == "POST" and endpoint == "message" and query_param(scope, "session_id") is not None:
            refusal = NotServedOnFunctions(
                "POST /message?session_id= (its result arrives on GET /events)",
                "send the JSON-RPC request to POST /message without session_id to get its result in the response",
            )
        elif method == "POST" and endpoint == "mcp":
            body = await _read_body(receive)
            listen, request_id = _listen_request_id(body)
            if listen or header(scope, b"mcp-method") == "subscriptions/listen":
                refusal = NotServedOnFunctions("subscriptions/listen", "poll with the list requests instead")
                return refusal, request_id, _replay(body, receive)
            return None, None, _replay(body, receive)
        return refusal, None, receive

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.ensure_started()
                except Unavailable as error:
                    await send({"type": "lifespan.startup.failed", "message": error.message})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


HttpHandler = Callable[[func.HttpRequest, func.Context], Coroutine[Any, Any, func.HttpResponse]]


class DataPulseFunctionApp(func.FunctionApp):
    """The ``FunctionApp`` `function_app` returns: one HTTP function on every path and method, serving `asgi`.

    Attributes:
        asgi: the ASGI app the function runs (`AzureFunctionsAsgi` around the DataPulse app).
        handler: the registered function's user code, ``async (req, context) -> HttpResponse``.
    """

    HTTP_METHODS: ClassVar[tuple[str, ...]] = ("GET", "POST", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH")

    def __init__(self, asgi: AzureFunctionsAsgi, *, auth_level: func.AuthLevel | str, function_name: str) -> None:
        super().__init__(http_auth_level=auth_level)
        self.asgi = asgi
        adapter = cast(Any, func.AsgiMiddleware)(asgi)  # untyped in azure-functions

        async def datapulse_http(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
            return cast(func.HttpResponse, await adapter.handle_async(req, context))

        self.handler: HttpHandler = datapulse_http
        # The same registration as azure.functions.AsgiFunctionApp (whose lifespan handling we replace); each
        # decorator hands the next the FunctionBuilder the first one made.
        decorators = (
            self.route(route="/{*route}", methods=self.HTTP_METHODS),
            self.http_type(http_type="asgi"),
            self.function_name(name=function_name),
        )
        registered: object = datapulse_http
        for decorator in decorators:
            registered = cast(Callable[[object], object], decorator)(registered)

    async def aclose(self) -> None:
        """Shut the DataPulse lifespan down (drain); see `AzureFunctionsAsgi.aclose`."""
        await self.asgi.aclose()


def function_app(
    app: ASGIApp | None = None,
    *,
    settings: Settings | None = None,
    server: object | None = None,
    auth_level: func.AuthLevel | str = func.AuthLevel.ANONYMOUS,
    function_name: str = "datapulse",
    startup_timeout_s: float = 60.0,
) -> DataPulseFunctionApp:
    """An Azure Functions app serving DataPulse (``app = function_app()`` in the Functions project's
    ``function_app.py``).

    Args:
        app: the ASGI app to serve (a `create_app` app, or your own app mounting one); default: ``create_app``
            with ``settings`` and ``server``.
        settings: the settings (default: from the environment, i.e. the Function App's app settings, with ``host``
            `FUNCTIONS_HOST` unless ``DATAPULSE_HOST`` is set).
        server: the SDK ``MCPServer`` or low-level ``Server`` to serve; default: ``DATAPULSE_APP``, or the demo.
        auth_level: the Functions host's key check in front of DataPulse's own bearer auth; default ``ANONYMOUS``
            (MCP clients send ``Authorization: Bearer``, not a Functions key).
        function_name: the name of the HTTP function.
        startup_timeout_s: bound on the lifespan's start on each worker.

    Raises:
        TypeError: ``app`` together with ``settings`` or ``server``.
        ConfigurationError: see `create_app` (e.g. no credentials configured).
    """
    if app is not None and (settings is not None or server is not None):
        raise TypeError("pass either app, or settings/server to build one, not both")
    if app is None:
        if settings is None:
            settings = Settings() if _host_configured() else Settings(host=FUNCTIONS_HOST)
        app = create_app(settings, server=server)
    asgi = AzureFunctionsAsgi(app, startup_timeout_s=startup_timeout_s)
    return DataPulseFunctionApp(asgi, auth_level=auth_level, function_name=function_name)


def _host_configured() -> bool:
    return any(name.upper() == "DATAPULSE_HOST" for name in os.environ)
