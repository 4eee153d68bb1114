"""The SDK low-level ``Server`` that serves a bridged stdio MCP server: every request is forwarded to a child.

`Bridge` builds the server from the child's ``initialize`` answer (probed at start-up, `probe`): its name,
version and instructions, and handlers only for the capabilities the child declares (tools, resources,
prompts, completions). Each request goes to the child `ChildPool.child_for` picks: per-session mode keys
children by the DataPulse session (stateless 2026-07-28 requests by principal), shared mode uses one child.
Since each forwarded request is a new request of the bridge's own client session with the child, the SDK
numbers it afresh and routes the answer back to its caller: concurrent callers never see each other's
responses, and a child's progress reaches the request that caused it.

Filters (`BridgeFilters`) hide tools, resources and prompts: they are left out of lists, and using one is
refused exactly as an unknown name is (``-32602``; resources ``-32002``). A child that exits mid-request, or
cannot start, turns into a JSON-RPC error (`CHILD_UNAVAILABLE`) for the waiting requests at once; the next
request restarts it. Requests the child makes to its client (sampling, elicitation, roots) go to the real
client of the request in flight on that child (shared mode: only when exactly one is in flight).

The child's notifications go where they belong, never to another client: a log message rides the stream of the
request in flight on that child (shared mode: only when exactly one is; otherwise it is only logged here);
list changes go to the session the child serves, or in shared mode to every session (the list changed for all);
``resources/updated`` goes to the sessions that subscribed to that URI. ``resources/subscribe`` and
``logging/setLevel`` are forwarded when the child declares them. Handshake-era sessions receive list changes and
updates on their standalone stream; 2026-07-28 stateless requests have no session to receive them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, cast

import anyio
import httpx2
from mcp import ClientSession, types
from mcp.client.subscriptions import listen
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError, NoBackChannelError
from mcp.shared.subscriptions import event_to_notification
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from datapulse import _sdk
from datapulse.audit import Auditor
from datapulse.auth.authorization import CURRENT_PRINCIPAL
from datapulse.bridge import credentials, upstream
from datapulse.bridge.child import Child, ChildStartError, cancel_when
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.continuity import UpstreamSession, UpstreamSessions
from datapulse.bridge.pool import BridgeBusy, ChildPool, Restarting
from datapulse.config import ConfigurationError
from datapulse.metrics import Metrics, UpstreamOutcome
from datapulse.sessions.live import CURRENT_SESSION, LiveSession
from datapulse.sessions.manager import SessionManager

__all__ = [
    "CHILD_UNAVAILABLE",
    "RESOURCE_NOT_FOUND",
    "Bridge",
    "RelayedCapabilitiesServer",
    "probe",
    "relay_handlers",
    "settled",
    "upstream_auth",
]

log = logging.getLogger("datapulse.bridge")

CHILD_UNAVAILABLE: Final = -32000
"""JSON-RPC error code (implementation-defined server error) when the bridged process crashed or cannot start."""
RESOURCE_NOT_FOUND: Final = -32002
CAPABILITIES_KEY_PREFIX: Final = "caps:"
DENIAL_REASONS: Final = frozenset({"upstream_unauthorized", "upstream_forbidden"})
SWEEP_INTERVAL_S: Final = 5.0
LISTEN_RETRY_S: Final = 5.0
"""How soon a failed or dropped listen stream to a 2026-07-28 upstream is opened again (sooner when the
subscribed URIs change)."""
LIST_CHANGED: Final = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)

T = TypeVar("T")
Ctx = ServerRequestContext[Any, Any]


async def probe(spec: BridgedServer) -> tuple[types.InitializeResult, BridgedServer]:
    """Start the bridged command (or connect to the remote server) once, take its handshake answer, and stop it
    (start-up check).

    Returns:
        The server's ``initialize`` answer (for a 2026-07-28 upstream, its ``server/discover`` answer in that
        shape), and ``spec`` settled: a remote server's ``transport`` pinned to the one found. A 2026-07-28
        upstream has no sessions: one connection serves every client with the same capabilities.

    Raises:
        ChildStartError: the command cannot run, exits, or does not answer within ``spec.start_timeout_s``; or the
            remote server cannot be reached, refuses DataPulse's credentials, or speaks no MCP era we know.
    """
    failure: ChildStartError | None = None
    try:
        auth = upstream_auth(spec)
    except ConfigurationError as exc:
        raise ChildStartError(f"{spec.name}: {exc}") from None
    async with anyio.create_task_group() as tasks:
        child = Child(spec, f"{spec.name}/probe", upstream_auth=auth)
        try:
            result = await child.start(tasks)
        except ChildStartError as exc:
            failure = exc
        else:
            await child.stop()
    if failure is not None:
        raise failure
    return result, settled(spec, child.transport)


def outcome_of(error: MCPError) -> UpstreamOutcome:
    """The ``outcome`` label of a forwarded request that ended in ``error``."""
    if error.error.code == types.REQUEST_TIMEOUT and reason_of(error) == "upstream_timeout":
        return "timeout"
    if error.error.code != CHILD_UNAVAILABLE or reason_of(error) is None:
        return "error"
    return "denied" if reason_of(error) in DENIAL_REASONS else "unavailable"


def relay_handlers(capabilities: types.ServerCapabilities, relay: Any) -> dict[str, Any]:
    """The low-level ``Server`` handler arguments (``on_list_tools=...``) for what ``capabilities`` offer, bound to
    ``relay``'s methods of the same names (`Bridge`, `datapulse.bridge.federation.Federation`)."""
    handlers: dict[str, Any] = {}
    if capabilities.tools is not None:
        handlers |= {"on_list_tools": relay.list_tools, "on_call_tool": relay.call_tool}
    if capabilities.resources is not None:
        handlers |= {
            "on_list_resources": relay.list_resources,
            "on_list_resource_templates": relay.list_resource_templates,
            "on_read_resource": relay.read_resource,
        }
        if capabilities.resources.subscribe:
            handlers |= {"on_subscribe_resource": relay.subscribe, "on_unsubscribe_resource": relay.unsubscribe}
    if capabilities.prompts is not None:
        handlers |= {"on_list_prompts": relay.list_prompts, "on_get_prompt": relay.get_prompt}
    if capabilities.completions is not None:
        handlers["on_completion"] = relay.complete
    return handlers


def reason_of(error: MCPError) -> str | None:
    """``data.reason`` of an error of ours, if any."""
    data = error.error.data
    reason = data.get("reason") if isinstance(data, dict) else None
    return reason if isinstance(reason, str) else None


def _announces_changes(capabilities: types.ServerCapabilities) -> bool:
    """Whether a server announces list changes or resource updates (so there is something to listen for)."""
    tools, prompts, resources = capabilities.tools, capabilities.prompts, capabilities.resources
    return (
        (tools is not None and bool(tools.list_changed))
        or (prompts is not None and bool(prompts.list_changed))
        or (resources is not None and bool(resources.list_changed or resources.subscribe))
    )


def capabilities_digest(capabilities: types.ClientCapabilities | None) -> str:
    """A short digest naming a client's capabilities (the same capabilities, the same digest)."""
    if capabilities is None:
        return "none"
    text = capabilities.model_dump_json(by_alias=True, exclude_none=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settled(spec: BridgedServer, transport: str) -> BridgedServer:
    """``spec`` with a remote server's transport pinned to ``transport`` (what its probe found)."""
    if not spec.remote:
        return spec
    update: dict[str, Any] = {"transport": transport}
    if transport == "modern":
        update["isolation"] = "per-session"  # keyed by the clients' capabilities (`Bridge._key`), not sessions
    return spec.model_copy(update=update)


def upstream_auth(spec: BridgedServer) -> tuple[dict[str, str], httpx2.Auth | None]:
    """The headers and auth flow a remote server's requests carry (none for a command), from
    ``spec.credentials`` and the environment variables it names.

    Raises:
        ConfigurationError: a variable it names is not set (see `datapulse.bridge.credentials.resolve`).
    """
    return credentials.resolve(spec.credentials, os.environ)


class Bridge:
    """One bridged stdio server as an SDK low-level server.

    Args:
        spec: the bridged server.
        info: the child's ``initialize`` answer (from `probe`).

    Attributes:
        server: the low-level server to pass to `datapulse.app.create_app`.
        sessions: the DataPulse sessions of the app serving ``server`` (set it once the app is built, see
            `datapulse.bridge.host.bridge_app`): per-session children of ended sessions are stopped, and the
            child's notifications are delivered to them. None: no notification is delivered.
        metrics: the app's metrics, where the children are counted (``datapulse_bridge_*``; set with ``sessions``).
        auditor: the app's auditor, where an upstream's refusal of our credentials is recorded (set with ``sessions``).
        continuity: cluster mode with a Streamable HTTP upstream: where its sessions are recorded so another instance
            continues them (`datapulse.bridge.continuity`); None otherwise.
        pool: the children (while the server's lifespan runs).
        http: a 2026-07-28 upstream: the HTTP clients of the gateway's pass-through (`datapulse.bridge.passthrough`),
            with the upstream's credentials (while the server's lifespan runs); None otherwise.
        forward_failure: why the pass-through's last request found the upstream unreachable (None since one got
            through); counted in `down`.
    """

    def __init__(self, spec: BridgedServer, info: types.InitializeResult) -> None:
        self.spec = spec
        self.info = info
        self.sessions: SessionManager | None = None
        self.metrics: Metrics | None = None
        self.auditor: Auditor | None = None
        self.continuity: UpstreamSessions | None = None
        self.pool: ChildPool | None = None
        self.http: upstream.ForwardingClients | None = None
        self.forward_failure: str | None = None
        self._input_schemas: dict[str, Mapping[str, Any]] = {}
        self._subscribed_uris: set[str] = set()
        self._subscriptions_changed = anyio.Event()
        capabilities = info.capabilities
        handlers = relay_handlers(capabilities, self)
        if spec.transport == "modern":
            # A 2026-07-28 upstream has no logging/setLevel (even when it declares logging): its log messages are
            # opted into per request (the child's session asks for every level) and reach every client as before.
            handlers["on_set_logging_level"] = _accept_logging_level
        elif capabilities.logging is not None:
            handlers["on_set_logging_level"] = self.set_logging_level
        self.server: Server[Any] = RelayedCapabilitiesServer(
            capabilities,
            info.server_info.name,
            version=info.server_info.version,
            instructions=info.instructions,
            lifespan=self.lifespan,
            get_tool_input_schema=self.tool_input_schema,
            **handlers,
        )

    @asynccontextmanager
    async def lifespan(self, _server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        auth = upstream_auth(self.spec)
        async with anyio.create_task_group() as tasks:
            self.pool = ChildPool(self.spec, tasks, _ClientRequests(self), self.metrics, auth)
            if self.spec.transport == "modern":
                self.http = upstream.ForwardingClients(*auth)
            tasks.start_soon(self._sweep_forever)
            if self.spec.transport == "modern" and _announces_changes(self.info.capabilities):
                tasks.start_soon(self._listen_upstream)
            try:
                yield {}
            finally:
                with anyio.CancelScope(shield=True):
                    await self.pool.stop_all()
                    if self.http is not None:
                        await self.http.aclose()
                        self.http = None
                tasks.cancel_scope.cancel()

    @property
    def down(self) -> str | None:
        """Why the bridged server is down (its last start failed or its last child ended, none alive; or the
        pass-through's last request could not reach it), else None."""
        return (None if self.pool is None else self.pool.down) or self.forward_failure

    def session_alive(self, session_id: str) -> bool:
        """Whether the DataPulse session ``session_id`` still exists (True while `sessions` is unset)."""
        return self.sessions is None or self.sessions.peek(session_id) is not None

    async def _listen_upstream(self) -> None:
        """A 2026-07-28 upstream announces changes only on ``subscriptions/listen``: keep one stream open for its
        list changes and the URIs any session subscribed to (re-opened when those change, or after a drop or a
        failure, `LISTEN_RETRY_S` later), and deliver its events as notifications to the sessions."""
        assert self.pool is not None
        capabilities = self.info.capabilities
        requests = _ClientRequests(self)
        while True:
            changed = self._subscriptions_changed = anyio.Event()
            uris = sorted(self._subscribed_uris)
            try:
                child = await self.pool.child_for(CAPABILITIES_KEY_PREFIX + "listen")
                assert child.session is not None
                child.in_flight += 1  # a stream open: never idle
                try:
                    async with (
                        listen(
                            child.session,
                            tools_list_changed=bool(capabilities.tools and capabilities.tools.list_changed),
                            prompts_list_changed=bool(capabilities.prompts and capabilities.prompts.list_changed),
                            resources_list_changed=bool(capabilities.resources and capabilities.resources.list_changed),
                            resource_subscriptions=uris,
                        ) as subscription,
                        anyio.create_task_group() as tasks,
                    ):
                        tasks.start_soon(cancel_when, changed, tasks.cancel_scope)
                        async for event in subscription:
                            await requests.notification(child, event_to_notification(event, {}))
                        tasks.cancel_scope.cancel()
                finally:
                    child.in_flight -= 1
            except Exception as exc:  # the upstream is down or refused: the pool's backoff paces the retries
                log.info("%s: listening for upstream changes failed: %s", self.spec.name, exc)
                with anyio.move_on_after(LISTEN_RETRY_S):
                    await changed.wait()

    def _subscriptions_moved(self) -> None:
        """Recompute the URIs any session subscribed to; re-open the upstream listen stream when they changed."""
        sessions = self.sessions.live_sessions() if self.sessions is not None else []
        wanted = {uri for session in sessions for uri in session.resource_subscriptions}
        if wanted != self._subscribed_uris:
            self._subscribed_uris = wanted
            self._subscriptions_changed.set()

    async def _sweep_forever(self) -> None:
        interval_s = min(SWEEP_INTERVAL_S, self.spec.idle_timeout_s / 2)
        while True:
            await anyio.sleep(interval_s)
            if self.pool is not None:
                await self.pool.sweep(self.session_alive)

    # --- forwarding -------------------------------------------------------------------------------------------

    def _key(self, capabilities: types.ClientCapabilities | None) -> str:
        """Which child serves the request: a 2026-07-28 upstream's connection for the client's capabilities (the
        upstream sees them as its client's), else the client's session, else (a stateless request) the principal
        with its capabilities."""
        if self.spec.transport == "modern":
            return CAPABILITIES_KEY_PREFIX + capabilities_digest(capabilities)
        session = CURRENT_SESSION.get()
        if session is not None:
            return session.id
        return f"principal:{CURRENT_PRINCIPAL.get().key}:{capabilities_digest(capabilities)}"

    async def _forward(self, ctx: Ctx, call: Callable[[ClientSession], Awaitable[T]]) -> T:
        """`_relay` the request, counted and timed by server, method and outcome (``datapulse_upstream_*``)."""
        started = time.perf_counter()
        outcome: UpstreamOutcome = "error"
        try:
            result = await self._relay(ctx, call)
            outcome = "ok"
            return result
        except MCPError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self.count(ctx.method, outcome, started)

    def count(self, method: str, outcome: UpstreamOutcome, started: float) -> None:
        """Count and time one forwarded request (``datapulse_upstream_*``; ``started``: `time.perf_counter`)."""
        if self.metrics is not None:
            name = self.spec.name
            self.metrics.upstream_requests_total.labels(name, method, outcome).inc()
            self.metrics.upstream_request_duration_seconds.labels(name, method).observe(time.perf_counter() - started)

    async def _relay(self, ctx: Ctx, call: Callable[[ClientSession], Awaitable[T]]) -> T:
        """Run ``call`` with the child that serves the request (see `_key`), started or continued as needed.

        Raises:
            MCPError: the child's own error, or ``CHILD_UNAVAILABLE`` / ``REQUEST_TIMEOUT`` naming why there is no
                answer (see `_unavailable`).
        """
        if self.pool is None:
            raise MCPError(code=CHILD_UNAVAILABLE, message="the bridge is not running")
        try:
            capabilities = ctx.session.client_capabilities
            key = self._key(capabilities)
            continuity = self.continuity if CURRENT_SESSION.get() is not None else None
            resume = None if continuity is None or self.pool.live(key) else await continuity.load(key)
            child = await self.pool.child_for(key, capabilities, resume)
        except ChildStartError as exc:
            log.warning("%s", exc)
            raise self.unreachable_error() from None
        except Restarting as exc:
            data = {"reason": "restarting", "retry_after_s": round(exc.retry_after_s, 3)}
            raise MCPError(code=CHILD_UNAVAILABLE, message=str(exc), data=data) from None
        except BridgeBusy as exc:
            raise MCPError(code=CHILD_UNAVAILABLE, message=str(exc), data={"reason": "busy"}) from None
        if continuity is not None and not child.recorded and child.upstream_session_id is not None:
            child.recorded = True
            assert child.initialize_result is not None
            await continuity.save(key, UpstreamSession(child.upstream_session_id, child.initialize_result))
        session = child.session
        assert session is not None
        child.in_flight += 1
        child.context.append(ctx)
        try:
            return own_meta(await call(session))
        except MCPError as exc:
            error = self._unavailable(child, exc)
            await self.audit_denial(error, child.denied_status)
            if continuity is not None and reason_of(error) == "upstream_session_ended":
                await continuity.drop(key)  # the upstream forgot it: the next request opens a new one
            raise error from None
        finally:
            child.in_flight -= 1
            child.context.remove(ctx)
            child.last_used = time.monotonic()

    async def audit_denial(self, error: MCPError, status: int | None) -> None:
        """An ``upstream_auth`` audit record when ``error`` is the upstream refusing our credentials (``status``:
        its HTTP status, 401 when unknown)."""
        reason = reason_of(error)
        if reason not in DENIAL_REASONS or self.auditor is None or not self.auditor.active:
            return
        session = CURRENT_SESSION.get()
        with anyio.CancelScope(shield=True):
            await self.auditor.record(
                "upstream_auth",
                principal=CURRENT_PRINCIPAL.get().key,
                session_id=session.id if session is not None else None,
                transport=None,
                protocol_version=None,
                name=self.spec.name,
                outcome=f"denied_{status or 401}",
            )

    def _unavailable(self, child: Child, exc: MCPError) -> MCPError:
        """The error a client sees for ``exc`` from the child: the child's own errors as they are; a connection
        that ended, an upstream session that is gone, a refusal of our credentials or a timeout named as such."""
        code, spec = exc.error.code, self.spec
        if code == types.CONNECTION_CLOSED and child.denied_status is not None:
            # The upstream refused our credentials and the connection ended on it: the next request opens a new
            # one at once (a fresh token), never this one while it is still closing.
            child.alive = False
            if self.pool is not None:
                self.pool.forget(child)
            message = upstream.denial_message(spec.name, child.denied_status)
            return MCPError(code=CHILD_UNAVAILABLE, message=message, data={"reason": "upstream_unauthorized"})
        if code == types.CONNECTION_CLOSED:
            return self.ended_error()
        if spec.remote and code == types.INVALID_REQUEST and exc.error.message == "Session terminated":
            child.alive = False  # the upstream forgot the session (it restarted): the next request opens a new one
            if self.pool is not None:
                self.pool.forget(child)
            return MCPError(
                code=CHILD_UNAVAILABLE,
                message=f"the upstream server {spec.name!r} ended its session; retry (a new one is opened)",
                data={"reason": "upstream_session_ended"},
            )
        if spec.remote and code == types.REQUEST_TIMEOUT:
            return self.timeout_error()
        return exc

    def ended_error(self) -> MCPError:
        """The error of a request during which the connection to the server ended (``data.reason`` ``exited``)."""
        spec = self.spec
        what = (
            f"connection to the upstream server {spec.name!r} ended"
            if spec.remote
            else f"bridged server {spec.name!r} exited"
        )
        return MCPError(
            code=CHILD_UNAVAILABLE,
            message=f"the {what} during the request; it is restarted on the next request",
            data={"reason": "exited"},
        )

    def timeout_error(self) -> MCPError:
        """The error of a request the remote server did not answer within ``request_timeout_s`` (-32001)."""
        spec = self.spec
        return MCPError(
            code=types.REQUEST_TIMEOUT,
            message=f"the upstream server {spec.name!r} did not answer within {spec.request_timeout_s:g} s",
            data={"reason": "upstream_timeout"},
        )

    def unreachable_error(self) -> MCPError:
        """The error of a request whose server could not be started or reached (``data.reason`` ``start_failed``)."""
        what = "upstream server {!r} cannot be reached" if self.spec.remote else "bridged server {!r} could not start"
        return MCPError(
            code=CHILD_UNAVAILABLE,
            message=f"the {what.format(self.spec.name)}; retry shortly",
            data={"reason": "start_failed"},
        )

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        result = await self._forward(ctx, lambda session: session.list_tools(params=_page(params)))
        tools = [tool for tool in result.tools if self.spec.tools.permits(tool.name)]
        for tool in tools:
            self._input_schemas[tool.name] = tool.input_schema
        return result.model_copy(update={"tools": tools})

    def tool_input_schema(self, name: str) -> Mapping[str, Any] | None:
        """A tool's input schema as its last listing here gave it (None before one), for the transports'
        ``Mcp-Param-*`` header check (spec 2026-07-28 basic/transports/streamable-http)."""
        return self._input_schemas.get(name)

    async def call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        if not self.spec.tools.permits(params.name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        async def call(session: ClientSession) -> types.CallToolResult | types.InputRequiredResult:
            async def attempt(
                responses: types.InputResponses | None, state: str | None
            ) -> types.CallToolResult | types.InputRequiredResult:
                result = await session.call_tool(
                    params.name,
                    params.arguments,
                    progress_callback=progress,
                    input_responses=responses,
                    request_state=state,
                    allow_input_required=True,
                )
                assert isinstance(result, types.CallToolResult | types.InputRequiredResult)
                return result

            return await _answered(ctx, attempt, params.input_responses, params.request_state)

        return await self._forward(ctx, call)

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        result = await self._forward(ctx, lambda session: session.list_resources(params=_page(params)))
        allowed = [resource for resource in result.resources if self.spec.resources.permits(str(resource.uri))]
        return result.model_copy(update={"resources": allowed})

    async def list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        result = await self._forward(ctx, lambda session: session.list_resource_templates(params=_page(params)))
        filters = self.spec.resources
        allowed = [template for template in result.resource_templates if filters.permits(template.uri_template)]
        return result.model_copy(update={"resource_templates": allowed})

    async def read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        uri = str(params.uri)
        if not self.spec.resources.permits(uri):
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}")

        async def call(session: ClientSession) -> types.ReadResourceResult | types.InputRequiredResult:
            async def attempt(
                responses: types.InputResponses | None, state: str | None
            ) -> types.ReadResourceResult | types.InputRequiredResult:
                return await session.read_resource(
                    uri, input_responses=responses, request_state=state, allow_input_required=True
                )

            return await _answered(ctx, attempt, params.input_responses, params.request_state)

        return await self._forward(ctx, call)

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        if not self.spec.resources.permits(uri):
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}")
        if self.spec.transport == "modern":  # no resources/subscribe in 2026-07-28: its listen stream carries it
            result = types.EmptyResult()
        else:
            result = await self._forward(ctx, lambda session: session.subscribe_resource(uri))
        session = CURRENT_SESSION.get()
        if session is not None:
            session.resource_subscriptions.add(uri)
        self._subscriptions_moved()
        return result

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        uri = str(params.uri)
        session = CURRENT_SESSION.get()
        if session is not None:
            session.resource_subscriptions.discard(uri)
        if self.spec.transport == "modern":
            self._subscriptions_moved()
            return types.EmptyResult()
        others = self.sessions.live_sessions() if self.spec.isolation == "shared" and self.sessions is not None else []
        if any(uri in other.resource_subscriptions for other in others):
            return types.EmptyResult()  # another client of the shared child still wants the updates
        return await self._forward(ctx, lambda child: child.unsubscribe_resource(uri))

    async def set_logging_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        return await self._forward(ctx, lambda session: session.set_logging_level(params.level))

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        result = await self._forward(ctx, lambda session: session.list_prompts(params=_page(params)))
        allowed = [prompt for prompt in result.prompts if self.spec.prompts.permits(prompt.name)]
        return result.model_copy(update={"prompts": allowed})

    async def get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        if not self.spec.prompts.permits(params.name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")

        async def call(session: ClientSession) -> types.GetPromptResult | types.InputRequiredResult:
            async def attempt(
                responses: types.InputResponses | None, state: str | None
            ) -> types.GetPromptResult | types.InputRequiredResult:
                return await session.get_prompt(
                    params.name,
                    params.arguments,
                    input_responses=responses,
                    request_state=state,
                    allow_input_required=True,
                )

            return await _answered(ctx, attempt, params.input_responses, params.request_state)

        return await self._forward(ctx, call)

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        return await self._forward(ctx, lambda session: session.complete(params.ref, argument, context))


INPUT_REQUIRED_MAX_ROUNDS: Final = 8
"""Rounds of an upstream's input-required results DataPulse answers for a handshake-era client before giving up."""
INPUT_RESULT_TYPES: Final[dict[type[Any], type[Any]]] = {
    types.CreateMessageRequest: types.CreateMessageResult,
    types.ElicitRequest: types.ElicitResult,
    types.ListRootsRequest: types.ListRootsResult,
}

R = TypeVar("R")


async def _answered(
    ctx: Ctx,
    attempt: Callable[[types.InputResponses | None, str | None], Awaitable[R | types.InputRequiredResult]],
    responses: types.InputResponses | None,
    state: str | None,
) -> R | types.InputRequiredResult:
    """Forward a request that may be answered with an input-required result (2026-07-28 multi-round-trip).

    A 2026-07-28 client gets that result as it is and retries itself: its ``inputResponses`` and ``requestState``
    are forwarded (``responses``, ``state``). A handshake-era client (a session: it has a back-channel) cannot take
    that result, so DataPulse runs the rounds for it with the SDK's own driver: each embedded request
    (sampling, elicitation, roots) goes to the client as a real request on the call's stream, and the upstream is
    asked again with the answers, at most `INPUT_REQUIRED_MAX_ROUNDS` times.
    """
    first = await attempt(responses, state)
    if not isinstance(first, types.InputRequiredResult) or CURRENT_SESSION.get() is None:
        return first

    async def dispatch(key: str, request: types.InputRequest) -> types.InputResponse | types.ErrorData:
        try:
            answer: types.InputResponse = await ctx.session.send_request(request, INPUT_RESULT_TYPES[type(request)])
        except MCPError as exc:
            return exc.error
        return answer

    try:
        return await _sdk.run_input_required_driver(
            first, dispatch=dispatch, retry=attempt, max_rounds=INPUT_REQUIRED_MAX_ROUNDS
        )
    except _sdk.InputRequiredRoundsExceededError:
        raise MCPError(
            code=types.INTERNAL_ERROR,
            message=f"the upstream server asked for input more than {INPUT_REQUIRED_MAX_ROUNDS} times in a row",
        ) from None


RESERVED_META_PREFIX: Final = "io.modelcontextprotocol/"


def without_reserved(meta: object) -> dict[str, Any] | None:
    """A result's ``_meta`` without the protocol's reserved keys (``io.modelcontextprotocol/...``), or None when it
    is not a mapping or holds none of them (nothing to drop)."""
    if not isinstance(meta, Mapping) or not any(str(key).startswith(RESERVED_META_PREFIX) for key in meta):
        return None
    return {key: value for key, value in meta.items() if not str(key).startswith(RESERVED_META_PREFIX)}


def own_meta(result: T) -> T:
    """A child's result without the protocol's reserved ``_meta`` keys: they describe the child's connection with
    us (e.g. a 2026-07-28 upstream's ``serverInfo`` stamp); our own kernel stamps the client's own."""
    if not isinstance(result, BaseModel):
        return result
    kept = without_reserved(getattr(result, "meta", None))
    if kept is None:
        return result
    return cast(T, result.model_copy(update={"meta": kept or None}))


async def _accept_logging_level(_ctx: Ctx, _params: types.SetLevelRequestParams) -> types.EmptyResult:
    return types.EmptyResult()


def _page(params: types.PaginatedRequestParams | None) -> types.PaginatedRequestParams | None:
    """A list request's parameters as forwarded: only the cursor. The inbound ``_meta`` stays here: it carries
    the client's own envelope (a 2026-07-28 request's protocol version, client info and capabilities), which
    the child's session sets for itself and which an older upstream refuses."""
    if params is None or params.cursor is None:
        return None
    return types.PaginatedRequestParams(cursor=params.cursor)


class RelayedCapabilitiesServer(Server[Any]):
    """A low-level server that announces the ``listChanged`` flags of what it relays (a child, or a federation's
    members merged) to handshake-era clients (the SDK derives them from `NotificationOptions`, which know nothing
    of them; the 2026-07-28 derivation is kept)."""

    def __init__(self, child: types.ServerCapabilities, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.child_capabilities = child

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        ours = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        if protocol_version in MODERN_PROTOCOL_VERSIONS:
            return ours
        child = self.child_capabilities
        update: dict[str, Any] = {}
        for name in ("tools", "resources", "prompts"):
            mine, theirs = getattr(ours, name), getattr(child, name)
            if mine is not None and theirs is not None:
                update[name] = mine.model_copy(update={"list_changed": theirs.list_changed})
        return ours.model_copy(update=update)


class _ClientRequests:
    """Sends a child's sampling / elicitation / roots request to the real client of its request in flight, and
    its notifications to the sessions they concern (the module docstring says which)."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def _context(self, child: Child) -> Ctx | None:
        contexts: list[Any] = child.context
        if not contexts or (self.bridge.spec.isolation == "shared" and len(contexts) != 1):
            return None
        context: Ctx = contexts[-1]
        return context

    async def _ask(self, child: Child, request: Any, result_type: Any, what: str) -> Any:
        ctx = self._context(child)
        if ctx is None:
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"{what}: no single client request in flight on this bridged server to ask",
            )
        try:
            return await ctx.session.send_request(request, result_type)
        except NoBackChannelError:
            return types.ErrorData(
                code=types.INVALID_REQUEST,
                message=f"{what} from the upstream server cannot reach this client: its request came over 2026-07-28 "
                "stateless HTTP, which has no channel for a server's own requests (2026-07-28 asks with "
                "input-required results instead); connect with a 2025-11-25 session (/mcp with initialize) or /sse",
            )
        except MCPError as exc:
            return exc.error

    async def sampling(
        self, child: Child, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        request = types.CreateMessageRequest(params=params)
        answer: types.CreateMessageResult | types.ErrorData = await self._ask(
            child, request, types.CreateMessageResult, "sampling/createMessage"
        )
        return answer

    async def elicitation(
        self, child: Child, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        request = types.ElicitRequest(params=params)
        answer: types.ElicitResult | types.ErrorData = await self._ask(
            child, request, types.ElicitResult, "elicitation/create"
        )
        return answer

    async def list_roots(self, child: Child) -> types.ListRootsResult | types.ErrorData:
        answer: types.ListRootsResult | types.ErrorData = await self._ask(
            child, types.ListRootsRequest(), types.ListRootsResult, "roots/list"
        )
        return answer

    async def notification(self, child: Child, notification: types.ServerNotification) -> None:
        message = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
        method: str = message["method"]
        params: dict[str, Any] | None = message.get("params")
        if isinstance(notification, types.LoggingMessageNotification):
            ctx = self._context(child)
            if ctx is not None:
                entry = notification.params
                with warnings.catch_warnings():  # deprecated as of 2026-07-28, still what the request's era wants
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    # send_log_message honours a 2026-07-28 request's log-level opt-in (_meta); earlier eras get it.
                    await ctx.session.send_log_message(entry.level, entry.data, entry.logger, ctx.request_id)
                return
            targets = self._audience(child) if self.bridge.spec.isolation == "per-session" else []
        elif isinstance(notification, LIST_CHANGED):
            targets = self._audience(child)
        elif isinstance(notification, types.ResourceUpdatedNotification):
            uri = str(notification.params.uri)
            targets = [session for session in self._audience(child) if uri in session.resource_subscriptions]
        else:
            log.debug("%s: not forwarded: %s", child.label, method)
            return
        for session in targets:
            try:
                await session.notify(method, params)
            except Exception as exc:  # a closed stream: the session is on its way out
                log.info("%s: could not deliver %s to session %s: %s", child.label, method, session.id[:16], exc)

    def _audience(self, child: Child) -> list[LiveSession]:
        """The open sessions ``child`` serves: its own (per-session mode), or every session (shared, or a
        2026-07-28 upstream's connection, which serves every session with the same capabilities)."""
        sessions = self.bridge.sessions
        if sessions is None:
            return []
        if self.bridge.spec.isolation == "shared" or child.key.startswith(CAPABILITIES_KEY_PREFIX):
            return [session for session in sessions.live_sessions() if session.is_open]
        session = sessions.peek(child.key)
        return [session] if session is not None and session.is_open else []
