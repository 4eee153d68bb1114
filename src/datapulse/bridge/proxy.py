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
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import anyio
from mcp import ClientSession, types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from datapulse.auth.authorization import CURRENT_PRINCIPAL
from datapulse.bridge.child import Child, ChildStartError
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.pool import BridgeBusy, ChildPool
from datapulse.notifications import CURRENT_SESSION

__all__ = ["CHILD_UNAVAILABLE", "Bridge", "probe"]

log = logging.getLogger("datapulse.bridge")

CHILD_UNAVAILABLE: Final = -32000
"""JSON-RPC error code (implementation-defined server error) when the bridged process crashed or cannot start."""
RESOURCE_NOT_FOUND: Final = -32002
SWEEP_INTERVAL_S: Final = 5.0

T = TypeVar("T")
Ctx = ServerRequestContext[Any, Any]


async def probe(spec: BridgedServer) -> types.InitializeResult:
    """Start the bridged command once, take its ``initialize`` answer, and stop it (start-up check).

    Raises:
        ChildStartError: the command cannot run, exits, or does not answer within ``spec.start_timeout_s``.
    """
    failure: ChildStartError | None = None
    async with anyio.create_task_group() as tasks:
        child = Child(spec, f"{spec.name}/probe")
        try:
            result = await child.start(tasks)
        except ChildStartError as exc:
            failure = exc
        else:
            await child.stop()
    if failure is not None:
        raise failure
    return result


class Bridge:
    """One bridged stdio server as an SDK low-level server.

    Args:
        spec: the bridged server.
        info: the child's ``initialize`` answer (from `probe`).

    Attributes:
        server: the low-level server to pass to `datapulse.app.create_app`.
        session_alive: tells whether a DataPulse session still exists (set it to the app's session manager's
            lookup once the app is built); per-session children of ended sessions are stopped.
        pool: the children (while the server's lifespan runs).
    """

    def __init__(self, spec: BridgedServer, info: types.InitializeResult) -> None:
        self.spec = spec
        self.info = info
        self.session_alive: Callable[[str], bool] = lambda _session_id: True
        self.pool: ChildPool | None = None
        capabilities = info.capabilities
        handlers: dict[str, Any] = {}
        if capabilities.tools is not None:
            handlers |= {"on_list_tools": self._list_tools, "on_call_tool": self._call_tool}
        if capabilities.resources is not None:
            handlers |= {
                "on_list_resources": self._list_resources,
                "on_list_resource_templates": self._list_resource_templates,
                "on_read_resource": self._read_resource,
            }
        if capabilities.prompts is not None:
            handlers |= {"on_list_prompts": self._list_prompts, "on_get_prompt": self._get_prompt}
        if capabilities.completions is not None:
            handlers["on_completion"] = self._complete
        self.server: Server[Any] = Server(
            info.server_info.name,
            version=info.server_info.version,
            instructions=info.instructions,
            lifespan=self._lifespan,
            **handlers,
        )

    @asynccontextmanager
    async def _lifespan(self, _server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with anyio.create_task_group() as tasks:
            self.pool = ChildPool(self.spec, tasks, _ClientRequests(self))
            tasks.start_soon(self._sweep_forever)
            try:
                yield {}
            finally:
                with anyio.CancelScope(shield=True):
                    await self.pool.stop_all()
                tasks.cancel_scope.cancel()

    async def _sweep_forever(self) -> None:
        interval_s = min(SWEEP_INTERVAL_S, self.spec.idle_timeout_s / 2)
        while True:
            await anyio.sleep(interval_s)
            if self.pool is not None:
                await self.pool.sweep(self.session_alive)

    # --- forwarding -------------------------------------------------------------------------------------------

    def _key(self) -> str:
        session = CURRENT_SESSION.get()
        if session is not None:
            return session.id
        return "principal:" + CURRENT_PRINCIPAL.get().key

    async def _forward(self, ctx: Ctx, call: Callable[[ClientSession], Awaitable[T]]) -> T:
        if self.pool is None:
            raise MCPError(code=CHILD_UNAVAILABLE, message="the bridge is not running")
        try:
            child = await self.pool.child_for(self._key())
        except ChildStartError as exc:
            log.warning("%s", exc)
            raise MCPError(
                code=CHILD_UNAVAILABLE,
                message=f"the bridged server {self.spec.name!r} could not start; retry shortly",
                data={"reason": "start_failed"},
            ) from None
        except BridgeBusy as exc:
            raise MCPError(code=CHILD_UNAVAILABLE, message=str(exc), data={"reason": "busy"}) from None
        session = child.session
        assert session is not None
        child.in_flight += 1
        child.context.append(ctx)
        try:
            return await call(session)
        except MCPError as exc:
            if exc.error.code == types.CONNECTION_CLOSED:
                raise MCPError(
                    code=CHILD_UNAVAILABLE,
                    message=f"the bridged server {self.spec.name!r} exited during the request; it is restarted "
                    "on the next request",
                    data={"reason": "exited"},
                ) from None
            raise
        finally:
            child.in_flight -= 1
            child.context.remove(ctx)
            child.last_used = time.monotonic()

    async def _list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        result = await self._forward(ctx, lambda session: session.list_tools(params=params))
        tools = self.spec.tools
        return result.model_copy(update={"tools": [tool for tool in result.tools if tools.permits(tool.name)]})

    async def _call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        if not self.spec.tools.permits(params.name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(progress, total, message)

        async def call(session: ClientSession) -> types.CallToolResult | types.InputRequiredResult:
            result = await session.call_tool(
                params.name, params.arguments, progress_callback=progress, allow_input_required=True
            )
            assert isinstance(result, types.CallToolResult | types.InputRequiredResult)
            return result

        return await self._forward(ctx, call)

    async def _list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        result = await self._forward(ctx, lambda session: session.list_resources(params=params))
        allowed = [resource for resource in result.resources if self.spec.resources.permits(str(resource.uri))]
        return result.model_copy(update={"resources": allowed})

    async def _list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        result = await self._forward(ctx, lambda session: session.list_resource_templates(params=params))
        filters = self.spec.resources
        allowed = [template for template in result.resource_templates if filters.permits(template.uri_template)]
        return result.model_copy(update={"resource_templates": allowed})

    async def _read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        uri = str(params.uri)
        if not self.spec.resources.permits(uri):
            raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}")
        return await self._forward(ctx, lambda session: session.read_resource(uri))

    async def _list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        result = await self._forward(ctx, lambda session: session.list_prompts(params=params))
        allowed = [prompt for prompt in result.prompts if self.spec.prompts.permits(prompt.name)]
        return result.model_copy(update={"prompts": allowed})

    async def _get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        if not self.spec.prompts.permits(params.name):
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
        return await self._forward(ctx, lambda session: session.get_prompt(params.name, params.arguments))

    async def _complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        context = params.context.arguments if params.context is not None else None
        argument = {"name": params.argument.name, "value": params.argument.value}
        return await self._forward(ctx, lambda session: session.complete(params.ref, argument, context))


class _ClientRequests:
    """Sends a child's sampling / elicitation / roots request to the real client of its request in flight."""

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
