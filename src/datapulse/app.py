"""`create_app`: one FastAPI app serving every MCP HTTP generation and the DataPulse API on one port.

Routes::

    /mcp                      Streamable HTTP, every era (transports.streamable)
    /sse, /messages           2024-11-05 HTTP+SSE (transports.sse)
    /events, /message         the DataPulse API (transports.datapulse_api)
    /health                   liveness and counts, no auth
    /ready                    readiness (503 while starting, draining, or without Redis), no auth
    /tickets                  POST: a single-use stream ticket for a browser's EventSource
    /openapi.json             the OpenAPI document of the REST endpoints, no auth
    /.well-known/oauth-protected-resource[/mcp|/sse]   RFC 9728 metadata, no auth

The server's lifespan is entered once per process in the app's lifespan (not per session), and the
lifespan owns the background work (idle-session reaping) and the shutdown of open streams.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from datapulse import _sdk, notifications
from datapulse._version import __version__
from datapulse.audit import Auditor, AuditSink, FileSink, RedisStreamSink, StdoutSink, parse_audit_sinks
from datapulse.auth.authorization import AuthorizationMiddleware
from datapulse.auth.hosts import LOOPBACK_HOST_PATTERNS, Networks, parse_networks
from datapulse.auth.middleware import SecurityMiddleware
from datapulse.auth.principal import principal_of
from datapulse.cluster import routing
from datapulse.cluster.bus import RedisSubscriptionBus
from datapulse.cluster.node import ClusterNode
from datapulse.cluster.tunnel import TUNNELLED_SCOPE_KEY
from datapulse.config import ConfigurationError, Settings
from datapulse.dashboard import api as dashboard_api
from datapulse.dashboard import assets as dashboard_assets
from datapulse.dashboard import index as dashboard_index
from datapulse.dashboard import watch as dashboard_watch
from datapulse.errors import DataPulseError, Internal, MethodNotAllowed, RateLimited, SessionMoved, Unavailable
from datapulse.fastpath import fast_path_for
from datapulse.logs import pop_log_context, push_log_context
from datapulse.metrics import Metrics, metrics_endpoint
from datapulse.observe import ObservationMiddleware
from datapulse.openapi import openapi_document
from datapulse.request_state import RequestStateKeyError, install_request_state_security
from datapulse.runtime import Runtime
from datapulse.security import Security, build_authenticator, build_security
from datapulse.sessions.manager import SessionManager
from datapulse.sessions.ordering import OrderingMiddleware
from datapulse.sessions.registry import MemorySessionRegistry, SessionKind
from datapulse.tracing import request_span, tracing_active
from datapulse.transports import auth_endpoints, datapulse_api, sse, streamable
from datapulse.transports._http import header, send_error, send_json

log = logging.getLogger("datapulse")

Handler = Callable[[Runtime, Scope, Receive, Send], Awaitable[None]]

RUNTIME_STATE_KEY = "datapulse"

STREAM_PATHS = frozenset({"/mcp", "/mcp/", "/sse", "/events", "/dashboard/api/watch"})
"""Paths whose GET is a long-lived SSE stream (counted against ``max_streams_per_principal``)."""

CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Last-Event-ID",
)
CORS_EXPOSE_HEADERS = ("Mcp-Session-Id", "MCP-Protocol-Version", "WWW-Authenticate", "Retry-After")


__all__ = ["ConfigurationError", "build_authenticator", "create_app", "mounted_lifespan", "runtime_of"]


def load_server(spec: str | None, settings: Settings | None = None) -> object:
    """Import the MCP server named by ``module:attribute`` (None: the built-in demo server, with
    ``fetch_url`` limits from ``settings``).

    Raises:
        ConfigurationError: the spec is malformed, the module cannot be imported, or the attribute
            is missing or not an SDK ``MCPServer``/``Server``.
    """
    if not spec:
        from datapulse.tools.demo import build_demo_server
        from datapulse.tools.fetch import FetchPolicy

        settings = settings if settings is not None else Settings()
        return build_demo_server(
            FetchPolicy(settings.fetch_timeout_s, settings.fetch_max_bytes, tuple(settings.fetch_allowlist))
        )
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"APP must look like 'module:attribute', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from None
    try:
        _sdk.lowlevel_server(target)
    except TypeError as exc:
        raise ConfigurationError(f"{spec}: {exc}") from None
    return target


def create_app(settings: Settings | None = None, *, server: object | None = None) -> FastAPI:
    """Build the DataPulse ASGI app.

    Args:
        settings: the settings (default: read from the environment).
        server: the SDK ``MCPServer`` or low-level ``Server`` to serve; default: ``settings.app``,
            or the built-in demo server.

    Returns:
        A FastAPI app. Mounted inside another app, enter `lifespan` from the host app's lifespan
        (mounted apps' lifespans do not run on their own).

    Raises:
        ConfigurationError: see `build_security` and `load_server`.
    """
    settings = settings if settings is not None else Settings()
    target = server if server is not None else load_server(settings.app, settings)
    lowlevel = _sdk.lowlevel_server(target)
    try:
        install_request_state_security(target, settings)
    except RequestStateKeyError as exc:
        raise ConfigurationError(str(exc)) from None
    node_id = secrets.token_hex(4)
    cluster = ClusterNode(settings, node_id) if settings.cluster else None
    security = build_security(settings, target.name if isinstance(target, _sdk.MCPServer) else lowlevel.name, cluster)
    if security.authenticator is None and not settings.is_loopback:
        log.warning("serving %s WITHOUT authentication (insecure_no_auth)", settings.host)
    _install_authorization(lowlevel, security)
    metrics = Metrics()
    if cluster is not None:
        cluster.redis.observer = metrics.observe_redis_command
    auditor = build_auditor(settings, cluster, node_id)
    _install_observation(lowlevel, metrics, auditor)
    local_bus = _sdk.subscription_bus(target)
    cluster_bus: RedisSubscriptionBus | None = None
    if local_bus is not None:
        notifications.serve_resource_subscriptions(lowlevel)
        if cluster is not None and isinstance(target, _sdk.MCPServer):
            cluster_bus = RedisSubscriptionBus(cluster.redis, cluster.keys.bus_channel, node_id, local=local_bus)
            _sdk.replace_subscription_bus(target, cluster_bus)
    runtime = Runtime(
        settings=settings,
        server=lowlevel,
        sessions=SessionManager(
            cluster.registry if cluster is not None else MemorySessionRegistry(),
            idle_ttl_s=settings.session_idle_ttl_s,
            max_sessions=settings.max_sessions,
            max_sessions_per_principal=settings.max_sessions_per_principal,
            node_id=node_id if cluster is not None else "",
        ),
        node_id=node_id,
        cluster=cluster,
        security=security,
        metrics=metrics,
        auditor=auditor,
    )

    runtime.app_target = target
    runtime.fast_path = fast_path_for(target, settings.fast_path)
    runtime.restorers = {
        SessionKind.STREAMABLE_HTTP: streamable.restore,
        SessionKind.DATAPULSE_API: datapulse_api.restore,
    }
    runtime.local_bus = local_bus
    runtime.cluster_bus = cluster_bus

    @asynccontextmanager
    async def app_lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if isinstance(target, _sdk.MCPServer):  # tool names become metric labels; any other name is "_other"
            metrics.register_tools(tool.name for tool in await target.list_tools())
        async with lifespan(runtime):
            yield

    allowed_hosts: list[str] | None
    if settings.allowed_hosts:
        allowed_hosts = list(settings.allowed_hosts)
    elif settings.is_loopback:
        allowed_hosts = list(LOOPBACK_HOST_PATTERNS)
    else:
        allowed_hosts = None
    metadata_paths = security.resource.served_paths()
    options = SecurityOptions(
        security=security,
        allowed_hosts=allowed_hosts,
        allowed_origins=[*settings.allowed_origins, *(o for o in settings.cors_origins if o != "*")],
        allow_loopback_origins=settings.is_loopback,
        trusted_proxies=parse_networks(settings.trusted_proxies),
        metadata_paths=frozenset(metadata_paths),
        cors_origins=list(settings.cors_origins),
        extra_public_paths=(frozenset({"/metrics"}) if settings.metrics_public else frozenset())
        | frozenset({"/"})
        | (frozenset(dashboard_assets.PATHS) if settings.dashboard_enabled else frozenset()),
        metrics=metrics,
        auditor=auditor,
    )

    def endpoint(path: str, handler: Handler, *methods: str) -> _Endpoint:
        return _Endpoint(runtime, handler, methods or None, path)

    mcp = endpoint("/mcp", streamable.handle)
    messages = endpoint("/messages", sse.handle_post, "POST")
    routes: dict[str, _Endpoint] = {
        "/mcp": mcp,
        "/mcp/": mcp,
        "/sse": endpoint("/sse", sse.handle_get, "GET"),
        "/messages": messages,
        "/messages/": messages,
        "/events": endpoint("/events", datapulse_api.handle_events, "GET", "DELETE"),
        "/message": endpoint("/message", datapulse_api.handle_message, "POST"),
        "/health": endpoint("/health", _health, "GET"),
        "/ready": endpoint("/ready", _ready, "GET"),
        "/metrics": endpoint("/metrics", _metrics, "GET"),
        "/tickets": endpoint("/tickets", auth_endpoints.handle_tickets, "POST"),
        "/openapi.json": endpoint("/openapi.json", _openapi, "GET"),
    }
    for path in metadata_paths:
        routes[path] = endpoint(path, auth_endpoints.handle_protected_resource, "GET")
    routes["/"] = endpoint("/", dashboard_index.handle_index, "GET")
    if settings.dashboard_enabled:
        for path in dashboard_assets.PATHS:
            routes[path] = endpoint(path, dashboard_assets.handle_asset, "GET")
        for name, handler, method in (
            ("sign-in", dashboard_api.handle_sign_in, "POST"),
            ("sign-out", dashboard_api.handle_sign_out, "POST"),
            ("overview", dashboard_api.handle_overview, "GET"),
            ("sessions", dashboard_api.handle_sessions, "GET"),
            ("catalog", dashboard_api.handle_catalog, "GET"),
            ("stats", dashboard_api.handle_stats, "GET"),
            ("audit", dashboard_api.handle_audit, "GET"),
            ("watch", dashboard_watch.handle_watch, "GET"),
        ):
            routes[f"/dashboard/api/{name}"] = endpoint(f"/dashboard/api/{name}", handler, method)
    app = DataPulseApp(
        routes,
        options,
        title="DataPulse",
        version=__version__,
        lifespan=app_lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.datapulse = runtime
    if cluster is not None:
        cluster.tunnels.app = app
    return app


def runtime_of(app: FastAPI) -> Runtime:
    """The `Runtime` of an app built by `create_app`."""
    runtime = getattr(app.state, RUNTIME_STATE_KEY, None)
    if not isinstance(runtime, Runtime):
        raise TypeError("not an app built by datapulse.create_app")
    return runtime


def mounted_lifespan(app: FastAPI) -> contextlib.AbstractAsyncContextManager[None]:
    """The DataPulse lifespan of ``app``, for a host app that mounts it::

    dp = create_app(settings)

    @asynccontextmanager
    async def host_lifespan(host):
        async with mounted_lifespan(dp):
            yield

    host = FastAPI(lifespan=host_lifespan)
    host.mount("/tools", dp)
    """
    return lifespan(runtime_of(app))


@asynccontextmanager
async def lifespan(runtime: Runtime) -> AsyncIterator[None]:
    """Run one DataPulse app: enter the MCP server's lifespan once, reap idle sessions, and on exit
    end every open stream and session within ``graceful_shutdown_timeout_s``."""
    server = runtime.server
    cluster = runtime.cluster
    async with server.lifespan(server) as state, anyio.create_task_group() as tasks:
        runtime.lifespan_state = state
        if cluster is not None:

            def store_back(lapsed: bool) -> None:
                reconcile = partial(routing.reconcile, runtime, cluster, check_owners=lapsed)
                tasks.start_soon(_logged, "reconciling sessions with the registry", reconcile)

            def session_moved(session_id: str, owner: str) -> None:
                reason = f"another instance ({owner}) owns it now"
                relinquish = partial(runtime.sessions.relinquish, session_id, reason)
                tasks.start_soon(_logged, f"letting session {session_id[:16]} go", relinquish)

            cluster.on_store_back = store_back
            cluster.on_session_moved = session_moved
            await tasks.start(cluster.run)
        if runtime.cluster_bus is not None:

            def bus_gap() -> None:
                for scope in list(runtime.listen_streams):
                    scope.cancel()

            runtime.cluster_bus.on_gap = bus_gap
            tasks.start_soon(runtime.cluster_bus.run)  # not awaited: a Redis outage must not block startup
        if runtime.local_bus is not None:
            runtime.local_bus.subscribe(notifications.LegacyFanout(runtime.sessions.live_sessions, tasks))
        runtime.running = True
        tasks.start_soon(_reap_forever, runtime)
        try:
            yield
        finally:
            await shutdown(runtime)
            runtime.running = False
            tasks.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await runtime.security.aclose()
                await runtime.auditor.aclose()
            if cluster is not None:
                await cluster.leave()


async def _logged(what: str, work: Callable[[], Awaitable[object]]) -> None:
    """Run a one-off background job in the lifespan's task group, logging (not raising) an unexpected error: an
    exception there would end the task group, and with it every background loop of a still-serving instance."""
    try:
        await work()
    except Exception:
        log.exception("%s failed", what)


async def shutdown(runtime: Runtime) -> None:
    """Drain (idempotent; called when the server begins to stop), within ``graceful_shutdown_timeout_s``:

    1. not ready (``/ready`` 503) and no new session (503: clients retry elsewhere);
    2. in-flight requests finish, those of sessions and stateless 2026-07-28 ones (up to 80 % of the bound);
    3. every stream ends with its ``retry:`` hint (2024-11-05, DataPulse API, 2025 GET streams and 2026-07-28
       ``subscriptions/listen``); a request still running past the bound is cancelled;
    4. single process: sessions close. Cluster mode: the heartbeat goes first, then sessions are handed over
       (`SessionManager.release_all`), so their next request on another instance takes them over.
    """
    if runtime.shutdown.is_set():
        return
    runtime.draining = True
    sessions = runtime.sessions
    sessions.accepting = False
    bound_s = runtime.settings.graceful_shutdown_timeout_s
    with anyio.move_on_after(bound_s, shield=True):
        with anyio.move_on_after(bound_s * 0.8):
            await sessions.wait_until(lambda: not sessions.any_busy() and runtime.modern_in_flight == 0)
        if sessions.any_busy() or runtime.modern_in_flight:
            log.warning("drain: requests still in flight after %.1f s; ending them", bound_s * 0.8)
        runtime.shutdown.set()
        for scope in list(runtime.modern_streams):
            scope.cancel()
        if runtime.cluster is not None:
            await runtime.cluster.retire()
            await sessions.release_all("instance draining; the session continues on another instance")
        else:
            await sessions.close_all("server shutting down")


async def _reap_forever(runtime: Runtime) -> None:
    interval = min(max(runtime.settings.session_idle_ttl_s / 4, 0.5), 60.0)
    while True:
        await anyio.sleep(interval)
        await reap_once(runtime)


async def reap_once(runtime: Runtime) -> None:
    """One pass of the idle-session reaper (every quarter of ``session_idle_ttl_s``, 0.5-60 s): close the sessions
    idle longer than the TTL and refresh the session gauges. Never raises: a refusal DataPulse describes itself (the
    cluster store not answering: `StoreUnavailable`) is logged as a warning with its message, anything else with
    its traceback; the next pass tries again."""
    try:
        await runtime.sessions.reap()
        refresh_gauges(runtime)
    except DataPulseError as exc:
        log.warning("idle-session reaper: %s; retrying next interval", exc.message)
    except Exception:
        log.exception("idle-session reaper failed; retrying next interval")


def _install_observation(lowlevel: _sdk.Server[Any], metrics: Metrics, auditor: Auditor) -> None:
    """Put the metrics/audit middleware first on the server's chain (it observes refusals by the others), and
    the ordering middleware last (handlers begin in acceptance order; it marks the moment each returned)."""
    chain = lowlevel.middleware
    chain[:] = [m for m in chain if not isinstance(m, ObservationMiddleware | OrderingMiddleware)]
    chain.insert(0, ObservationMiddleware(metrics, auditor))
    chain.append(OrderingMiddleware())


def build_auditor(settings: Settings, cluster: ClusterNode | None, node_id: str) -> Auditor:
    """The audit log from ``audit_sinks`` (no sink: records reach only `datapulse.audit.capture_audit`).

    Raises:
        ConfigurationError: a malformed sink list, an unwritable audit file, or 'redis' without cluster mode.
    """
    sinks: list[AuditSink] = []
    try:
        for kind, target in parse_audit_sinks(settings.audit_sinks or ""):
            if kind == "stdout":
                sinks.append(StdoutSink())
            elif kind == "file":
                assert target is not None
                sinks.append(FileSink(target, max_bytes=settings.audit_file_max_bytes))
            elif cluster is None:
                raise ConfigurationError("DATAPULSE_AUDIT_SINKS: 'redis' needs cluster mode (DATAPULSE_REDIS_URL)")
            else:
                sinks.append(RedisStreamSink(cluster.redis, f"{settings.redis_key_prefix}:audit"))
    except (ValueError, OSError) as exc:
        raise ConfigurationError(f"DATAPULSE_AUDIT_SINKS: {exc}") from None
    return Auditor(sinks, node_id=node_id, include_arguments=settings.audit_include_arguments)


def _install_authorization(lowlevel: _sdk.Server[Any], security: Security) -> None:
    """Put the scope/rate-limit middleware first on the server's chain (replacing one from an earlier app)."""
    chain = lowlevel.middleware
    chain[:] = [m for m in chain if not isinstance(m, AuthorizationMiddleware)]
    if security.policy or security.rate_limiter is not None:
        chain.insert(0, AuthorizationMiddleware(security.policy, security.rate_limiter))


@dataclass(frozen=True)
class SecurityOptions:
    """How `SecurityMiddleware` (and CORS in front of it) is configured for one app (see its docstring)."""

    security: Security
    allowed_hosts: list[str] | None
    allowed_origins: list[str]
    allow_loopback_origins: bool
    trusted_proxies: Networks
    metadata_paths: frozenset[str]
    cors_origins: list[str]
    extra_public_paths: frozenset[str] = frozenset()
    metrics: Metrics | None = None
    auditor: Auditor | None = None


class DataPulseApp(FastAPI):
    """The FastAPI app `create_app` returns.

    DataPulse's own endpoints are dispatched by a flat path table in front of FastAPI's router and
    its exception/exit-stack middleware (a streamed MCP response passes through none of them); any
    other route added to the app is served by FastAPI as usual. Middleware added with
    ``app.add_middleware`` wraps both; the security middleware (Host/Origin, bearer auth) is outermost.
    """

    def __init__(self, routes: dict[str, _Endpoint], security: SecurityOptions, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._datapulse_routes = routes
        self._security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request to one of DataPulse's own endpoints goes straight into the middleware stack: it has its own
        OpenTelemetry span (`datapulse.tracing.request_span`), so FastAPI's native telemetry, whose check reads
        three providers per request, would only add a second one. Everything else is FastAPI's as usual."""
        stack = self.middleware_stack
        if stack is not None and scope["type"] == "http" and scope["path"] in self._datapulse_routes:
            scope["app"] = self
            if self.root_path:
                scope["root_path"] = self.root_path
            await stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        user_middleware, self.user_middleware = self.user_middleware, []
        try:
            fallback = super().build_middleware_stack()
        finally:
            self.user_middleware = user_middleware
        app: ASGIApp = _PathTable(self._datapulse_routes, fallback)
        for cls, args, kwargs in reversed(user_middleware):
            app = cls(app, *args, **kwargs)
        options = self._security
        app = SecurityMiddleware(
            app,
            authenticator=options.security.authenticator,
            resource=options.security.resource,
            tickets=options.security.tickets,
            allowed_hosts=options.allowed_hosts,
            allowed_origins=options.allowed_origins,
            allow_loopback_origins=options.allow_loopback_origins,
            trusted_proxies=options.trusted_proxies,
            public_paths=frozenset({"/health", "/ready", "/openapi.json"}) | options.extra_public_paths,
            any_origin_paths=options.metadata_paths,
            metrics=options.metrics,
            auditor=options.auditor,
        )
        if options.cors_origins:  # outermost: preflights are answered before Host/Origin/auth checks
            app = CORSMiddleware(
                app,
                allow_origins=options.cors_origins,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=list(CORS_ALLOW_HEADERS),
                expose_headers=list(CORS_EXPOSE_HEADERS),
                max_age=600,
            )
        return app


class _PathTable:
    """Exact-path ASGI dispatch for DataPulse's endpoints; everything else goes to ``fallback``."""

    def __init__(self, routes: dict[str, _Endpoint], fallback: ASGIApp) -> None:
        self.routes = routes
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            root: str = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :]
            endpoint = self.routes.get(path)
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


_REQUEST_IDS = itertools.count(1)
"""Request ids for log lines of requests that bring no ``X-Request-Id``: this node's id and a counter."""


class _Endpoint:
    """Adapts a transport handler to ASGI, mapping `DataPulseError` to its HTTP/JSON-RPC error and
    any unexpected exception to a bare 500 (logged, never a traceback to the client)."""

    def __init__(self, runtime: Runtime, handler: Handler, methods: tuple[str, ...] | None, path: str = "") -> None:
        self.runtime = runtime
        self.handler = handler
        self.methods = methods
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.runtime
        release: Callable[[], None] | None = None
        try:
            if self.methods is not None and scope["method"] not in self.methods:
                raise MethodNotAllowed(scope["method"], self.methods)
            if not runtime.running and self.handler not in (_health, _ready, _metrics):
                raise Unavailable(
                    "Service Unavailable: the DataPulse lifespan has not started (when mounting the app, enter "
                    "datapulse.mounted_lifespan(app) from the host app's lifespan)"
                )
            tunnelled = bool(scope.get(TUNNELLED_SCOPE_KEY))  # counted on the instance the client reached
            security = runtime.security
            try:
                if not tunnelled and scope["method"] == "POST" and security.rate_limiter is not None:
                    await security.rate_limiter.hit_request(principal_of(scope).key)
                if not tunnelled and scope["method"] == "GET" and self.path in STREAM_PATHS:
                    release = security.stream_slots.acquire(principal_of(scope).key)
            except RateLimited:
                runtime.metrics.rate_limited_total.labels("request" if scope["method"] == "POST" else "stream").inc()
                raise
            cluster = runtime.cluster
            if cluster is not None and runtime.draining:  # handed-over sessions: not here, not anyone's yet
                session_id = routing.session_id_of(self.path, scope)
                if session_id is not None and runtime.sessions.peek(session_id) is None:
                    raise Unavailable(
                        "Service Unavailable: this instance is draining; retry and another instance takes the "
                        "session over",
                        headers={"Retry-After": "1"},
                    )
            if cluster is not None:
                routed = await _route_in_cluster(runtime, cluster, self.path, tunnelled, scope, receive, send)
                if routed is None:
                    return
                receive = routed
            logged = push_log_context(
                request_id=(header(scope, b"x-request-id") or "")[:64] or f"{runtime.node_id}-{next(_REQUEST_IDS):x}",
                principal=principal_of(scope).key,
                session_id=routing.session_id_of(self.path, scope),
            )
            try:
                if tracing_active():
                    with request_span(scope, self.path):
                        await self.handler(runtime, scope, receive, send)
                else:  # no span to open: not even the context manager
                    await self.handler(runtime, scope, receive, send)
            finally:
                pop_log_context(logged)
        except DataPulseError as error:
            await _send_if_not_started(send, error, log_as=None)
        except Exception as exc:
            log.exception("unhandled error serving %s %s", scope.get("method"), scope.get("path"))
            await _send_if_not_started(send, Internal("Internal error"), log_as=exc)
        finally:
            if release is not None:
                release()


async def _route_in_cluster(
    runtime: Runtime, cluster: ClusterNode, path: str, tunnelled: bool, scope: Scope, receive: Receive, send: Send
) -> Receive | None:
    """Where a request in cluster mode is served: None when another instance answered it, else the ``receive``
    to serve it with here.

    A session held here is served here while this instance holds its heartbeat lease, and after it only once
    the registry confirms the ownership (`routing.confirm_owner`). A request another instance forwarded for a
    session no longer held here is answered `SessionMoved`, so that instance re-reads the owner.
    """
    session_id = routing.session_id_of(path, scope)
    if session_id is None:
        return receive
    session = runtime.sessions.peek(session_id)
    if session is not None and (cluster.holds_lease() or await routing.confirm_owner(runtime, cluster, session)):
        return receive
    if tunnelled:
        raise SessionMoved()
    return await routing.route(runtime, cluster, session_id, scope, receive, send)


async def _send_if_not_started(send: Send, error: DataPulseError, *, log_as: Exception | None) -> None:
    """Send ``error`` as the response; if the response had already started, the server refuses a second
    start (RuntimeError) and the error is only logged (the stream has already been ended by its owner)."""
    try:
        await send_error(send, error)
    except RuntimeError:
        if log_as is None:
            log.warning("error after the response started: %s", error.message)


async def _openapi(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    await send_json(send, 200, openapi_document())


async def _metrics(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /metrics``: the Prometheus exposition (behind auth unless ``metrics_public``)."""
    refresh_gauges(runtime)
    await metrics_endpoint(runtime.metrics, send)


def refresh_gauges(runtime: Runtime) -> None:
    """Set the open-session and open-stream gauges from this process's live counts (at scrape time and on every
    reaper pass, so with several workers each process's figure is at most one reaper interval old)."""
    metrics = runtime.metrics
    sessions: dict[tuple[str, str], int] = {}
    for session in runtime.sessions.live_sessions():
        version = session.connection.protocol_version or "-"
        key = (session.kind.value, str(version))
        sessions[key] = sessions.get(key, 0) + 1
    for key in runtime.gauged_sessions - sessions.keys():
        metrics.sessions_open.labels(*key).set(0)
    for key, count in sessions.items():
        metrics.sessions_open.labels(*key).set(count)
    runtime.gauged_sessions = set(sessions)
    for kind, count in runtime.sessions.stream_counts().items():
        metrics.streams_open.labels(kind.value).set(count)


async def _ready(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /ready``: 200 when serving; 503 while starting, draining, or (cluster mode) when Redis does not
    answer a PING within ``redis_timeout_s`` or this instance's channel is not subscribed (it resubscribes by itself
    after an outage). For load balancers and Kubernetes readiness probes."""
    problems: list[str] = []
    if not runtime.running:
        problems.append("not started")
    if runtime.draining:
        problems.append("draining")
    cluster = runtime.cluster
    if cluster is not None and not runtime.draining:
        try:
            with anyio.fail_after(runtime.settings.redis_timeout_s):
                await cluster.redis.ping()
        except Exception as exc:
            problems.append(f"cluster store (Redis) unreachable ({type(exc).__name__})")
        else:
            if not cluster.tunnels.channel_connected:
                problems.append("cluster channel (Redis pub/sub) reconnecting: forwarded requests cannot reach here")
    body: dict[str, Any] = {}
    if runtime.upstreams is not None:
        upstreams = runtime.upstreams()
        body["upstreams"] = {name: "ok" if down is None else f"down: {down}" for name, down in upstreams.items()}
        if upstreams and all(down is not None for down in upstreams.values()):
            problems.append("every upstream server is down")  # one down leaves the others serving: still ready
    status = 503 if problems else 200
    extra = ((b"retry-after", b"1"),) if problems else ()
    await send_json(send, status, {"status": "not ready" if problems else "ready", "problems": problems, **body}, extra)


async def _health(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    sessions = await runtime.sessions.registry.counts()
    streams = runtime.sessions.stream_counts()
    await send_json(
        send,
        200,
        {
            "status": "draining" if runtime.draining else "ok",
            "version": __version__,
            "uptime_s": round(time.time() - runtime.started_at, 3),
            "node_id": runtime.node_id,
            "sessions": {kind.value: count for kind, count in sessions.items()},
            "streams": {kind.value: count for kind, count in streams.items()},
            **({} if runtime.cluster is None else {"cluster": {"lease_held": runtime.cluster.holds_lease()}}),
        },
    )
