"""The gateway's pass-through: a 2026-07-28 request to a 2026-07-28 upstream forwarded as one HTTP exchange.

When client and upstream both speak 2026-07-28, a ``tools/call``, ``resources/read`` or ``prompts/get`` needs no era
translation: each is one stateless POST on both sides (spec 2026-07-28 basic/transports/streamable-http). The full
path still takes it through the SDK's server kernel (a per-request connection, its middleware chain, the bridged
low-level server's handler) and then the SDK's client stack (``ClientSession``, its Streamable HTTP transport: an
anyio task and memory streams per request, result models parsed and dumped again). `Passthrough` does only what
does something for such a request:

1. DataPulse's observation (metrics, audit) and authorization (scopes, rate limits), the same code as their
   middleware, in the same order (`datapulse.fastpath.Layers`), and the session's acceptance order;
2. one POST to the upstream with the gateway's own HTTP client (`datapulse.bridge.upstream.ForwardingClients`): the
   upstream's credentials, never the client's token; the client's ``params`` (its ``_meta`` envelope with
   DataPulse's own ``clientInfo``, so the upstream sees the client's capabilities and log level, as on the full
   path), the routing headers (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``) and the client's
   ``Mcp-Param-*`` headers;
3. the upstream's answer: a JSON response, or an SSE stream whose notifications (progress with the client's own
   token, log messages) are relayed to the client as they come and whose response ends it;
4. the result shaped by the SDK kernel's own serializer, as every result of ours (the upstream's reserved ``_meta``
   keys dropped first; ours stamped); an error result kept as the upstream gave it; an input-required result's
   ``requestState`` sealed by the server's ``requestState`` boundary, as on the full path;
5. the gateway's errors, metrics and audit of the full path (`datapulse.bridge.proxy.Bridge`): a timeout after the
   server's ``request_timeout_s`` (-32001, ``upstream_timeout``), an upstream that cannot be reached
   (``start_failed``, and ``/ready`` reports it down until a request gets through) or that closes the connection
   mid-request (``exited``), a refusal of our credentials (``upstream_unauthorized``/``upstream_forbidden``,
   audited as ``upstream_auth``), a token endpoint that gives no token (``upstream_credentials``);
   ``datapulse_upstream_requests_total`` and its duration histogram (and
   ``datapulse_upstream_passthrough_requests_total``, which says the pass-through took the request).

A client that disconnects cancels the request; the upstream POST is closed with it, which cancels it upstream.

Anything else takes the full path: other methods, a handshake-era request (DataPulse answers an input-required
result's rounds for it), a ``requestState`` to unseal, an item the server's filters hide (the full path answers
the error), params the SDK would refuse, an OpenTelemetry tracer provider installed (the full path's spans and
``traceparent`` stay exactly as they are), middleware DataPulse does not know on the server's chain, a federation
(its names are prefixed). ``DATAPULSE_FAST_PATH=false`` turns it off with the fast path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import anyio
import httpx2
from mcp import types
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import encode_header_value
from mcp_types import CLIENT_INFO_META_KEY

from datapulse import _sdk
from datapulse.bridge import upstream
from datapulse.bridge.child import CLIENT_INFO
from datapulse.bridge.credentials import UpstreamAuthError
from datapulse.bridge.proxy import CHILD_UNAVAILABLE, Bridge, outcome_of, without_reserved
from datapulse.errors import ParseError
from datapulse.fastpath import Lane, Layers, RequestView
from datapulse.metrics import UpstreamOutcome
from datapulse.sessions.live import HttpRequestViews
from datapulse.sessions.ordering import in_turn
from datapulse.transports import _jsonrpc
from datapulse.transports._sse_codec import SseDecoder

__all__ = ["FORWARDED_METHODS", "Forward", "Passthrough", "passthrough_for"]

FORWARDED_METHODS: Final[Mapping[str, str]] = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}
"""The methods the pass-through forwards, each with its params field the ``Mcp-Name`` header carries."""
_CLIENT_INFO: Final = CLIENT_INFO.model_dump(mode="json", exclude_none=True)
_PARAM_HEADER_PREFIX: Final = b"mcp-param-"


@dataclass(frozen=True, slots=True)
class Forward:
    """One request the pass-through forwards: its method, params as received, protocol version and item name."""

    method: str
    params: Mapping[str, Any]
    protocol_version: str
    name: str


class Passthrough(Lane):
    """Forwards a gateway's 2026-07-28 requests to its 2026-07-28 upstream; see the module docstring.

    Args:
        bridge: the gateway's bridged server (``spec.transport == "modern"``); its ``http`` clients are used while its
            lifespan runs.

    Use, as `datapulse.fastpath.FastPath`: ``plan = passthrough.plan(method, params, version, initialized)``; None:
    take the full path; else ``await passthrough.serve(plan, dctx, connection, lifespan_state)``, which returns the
    result in the SDK kernel's wire form or raises `MCPError`.
    """

    def __init__(self, bridge: Bridge) -> None:
        super().__init__(bridge.server)
        self._bridge = bridge
        self._spec = bridge.spec

    def plan(
        self, method: str, params: Mapping[str, Any] | None, protocol_version: str, initialized: bool
    ) -> Forward | None:
        """The plan for forwarding one request, or None if it must take the full path.

        Args:
            method: the JSON-RPC method.
            params: its params as received (a JSON object or None).
            protocol_version: the request's protocol version (only 2026-07-28 requests are forwarded here).
            initialized: unused (a 2026-07-28 request has no handshake).
        """
        field = FORWARDED_METHODS.get(method)
        if field is None or params is None or protocol_version not in _sdk.MODERN_PROTOCOL_VERSIONS:
            return None
        if self._bridge.http is None or params.get("requestState") is not None:
            return None
        name = params.get(field)
        if not isinstance(name, str) or not self._permits(method, name):
            return None
        if self._usable_layers() is None:
            return None
        entry = self._server.get_request_handler(method)
        if entry is None or self._validated(entry, method, params, protocol_version) is None:
            return None
        return Forward(method, params, protocol_version, name)

    def _permits(self, method: str, name: str) -> bool:
        spec = self._spec
        if method == "tools/call":
            return spec.tools.permits(name)
        if method == "prompts/get":
            return spec.prompts.permits(name)
        return spec.resources.permits(name)

    async def serve(
        self, plan: Forward, dctx: Any, connection: Callable[[], _sdk.Connection], lifespan_state: Any
    ) -> dict[str, Any]:
        """Forward ``plan`` and return its result in the SDK kernel's wire form.

        Args:
            plan: from `plan`.
            dctx: the request's SDK ``DispatchContext`` (`datapulse.transports.modern.ModernExchange`): the
                upstream's notifications are relayed through its ``notify``, its ``Mcp-Param-*`` headers forwarded.
            connection: makes the request's SDK ``Connection`` (only to seal an input-required result).
            lifespan_state: what the server's lifespan yielded (likewise).

        Raises:
            MCPError: a refusal (scope, rate limit), the upstream's JSON-RPC error, or the gateway's own (timeout,
                unreachable, connection ended, credentials refused; see the module docstring).
        """
        layers = self._layers
        assert layers is not None
        self.served += 1
        if self._bridge.metrics is not None:
            self._bridge.metrics.upstream_passthrough_requests_total.labels(self._spec.name, plan.method).inc()
        request = RequestView(plan.method, plan.params, dctx, connection, lifespan_state)
        return await layers.around(plan.method, plan.params, partial(self._handle, plan, layers, request))

    async def _handle(self, plan: Forward, layers: Layers, request: RequestView) -> dict[str, Any]:
        result = await in_turn(partial(self._counted, plan, request.dctx))
        return await layers.sealed(result, self._server, request) if layers.seals(result) else result

    async def _counted(self, plan: Forward, dctx: Any) -> dict[str, Any]:
        started = time.perf_counter()
        outcome: UpstreamOutcome = "error"
        try:
            result = await self._exchange(plan, dctx)
            outcome = "ok"
        except MCPError as exc:
            outcome = outcome_of(exc)
            raise
        finally:
            self._bridge.count(plan.method, outcome, started)
        return self._serialize(plan.method, plan.protocol_version, _without_reserved_meta(result))

    async def _exchange(self, plan: Forward, dctx: Any) -> dict[str, Any]:
        """POST ``plan`` to the upstream and return its result (see the module docstring for the errors)."""
        clients, bridge, spec = self._bridge.http, self._bridge, self._spec
        if clients is None:
            raise MCPError(code=CHILD_UNAVAILABLE, message="the gateway is not running")
        client = clients.next()
        assert spec.url is not None
        request_id = getattr(dctx, "request_id", 1)
        body = _jsonrpc.dumps({"jsonrpc": "2.0", "id": request_id, "method": plan.method, "params": _sent(plan)})
        headers = {
            "mcp-protocol-version": plan.protocol_version,
            "mcp-method": plan.method,
            "mcp-name": encode_header_value(plan.name),
        }
        if isinstance(dctx, HttpRequestViews):
            for key, value in dctx.header_items():
                if key.startswith(_PARAM_HEADER_PREFIX):
                    headers[key.decode("latin-1")] = value.decode("latin-1")
        with anyio.move_on_after(spec.request_timeout_s):
            try:
                async with client.stream("POST", spec.url, content=body, headers=headers) as response:
                    bridge.forward_failure = None
                    return await self._answer(response, dctx)
            except UpstreamAuthError as exc:  # no token: the token endpoint failed (its message names how)
                raise MCPError(
                    code=CHILD_UNAVAILABLE,
                    message=f"DataPulse could not get a token for the upstream server {spec.name!r}: {exc}",
                    data={"reason": "upstream_credentials"},
                ) from None
            except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
                bridge.forward_failure = f"{spec.name}: the upstream cannot be reached ({exc or type(exc).__name__})"
                raise bridge.unreachable_error() from None
            except httpx2.TransportError:
                raise bridge.ended_error() from None
        raise bridge.timeout_error()

    async def _answer(self, response: httpx2.Response, dctx: Any) -> dict[str, Any]:
        status = response.status_code
        if status in (401, 403):
            reason = "upstream_unauthorized" if status == 401 else "upstream_forbidden"
            error = MCPError(
                code=upstream.UPSTREAM_DENIED,
                message=upstream.denial_message(self._spec.name, status),
                data={"reason": reason},
            )
            await self._bridge.audit_denial(error, status)
            raise error
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            decoder = SseDecoder()
            async for chunk in response.aiter_bytes():
                for event in decoder.feed(chunk):
                    answer = await self._relay(event.event, event.data, dctx)
                    if answer is not None:
                        return self._result(answer)
            raise self._bridge.ended_error()  # the stream ended without the response
        message = _decoded(await response.aread())
        if isinstance(message, dict) and ("result" in message or "error" in message):
            return self._result(message)
        raise MCPError(
            code=CHILD_UNAVAILABLE,
            message=f"the upstream server {self._spec.name!r} answered HTTP {status} without a JSON-RPC response",
            data={"reason": "upstream_http_error", "status": status},
        )

    async def _relay(self, event: str, data: str, dctx: Any) -> dict[str, Any] | None:
        """One SSE event of the upstream's response stream: a notification is relayed to the client (None); the
        response is returned; anything else (a priming event, a server-to-client request, which the 2026-07-28 era
        does not have) is dropped."""
        if event != "message" or not data:
            return None
        message = _decoded(data.encode())
        if not isinstance(message, dict):
            return None
        if "result" in message or "error" in message:
            return message
        method = message.get("method")
        if isinstance(method, str) and "id" not in message:
            params = message.get("params")
            await dctx.notify(method, params if isinstance(params, dict) else None)
        return None

    def _result(self, message: dict[str, Any]) -> dict[str, Any]:
        error = message.get("error")
        if isinstance(error, dict):
            code, text = error.get("code"), error.get("message")
            failure = MCPError(
                code=code if isinstance(code, int) else types.INTERNAL_ERROR,
                message=text if isinstance(text, str) else "the upstream answered an error without a message",
                data=error.get("data"),
            )
            raise self._bridge.timeout_error() if failure.error.code == types.REQUEST_TIMEOUT else failure
        result = message.get("result")
        if not isinstance(result, dict):
            raise MCPError(
                code=CHILD_UNAVAILABLE,
                message=f"the upstream server {self._spec.name!r} answered a response without a result object",
                data={"reason": "upstream_http_error"},
            )
        return result


def _sent(plan: Forward) -> dict[str, Any]:
    """The params sent upstream: the client's, with DataPulse's ``clientInfo`` in the ``_meta`` envelope."""
    params = dict(plan.params)
    meta = params.get("_meta")
    if isinstance(meta, dict) and CLIENT_INFO_META_KEY in meta:
        params["_meta"] = {**meta, CLIENT_INFO_META_KEY: _CLIENT_INFO}
    return params


def _without_reserved_meta(result: dict[str, Any]) -> dict[str, Any]:
    """An upstream's result without the protocol's reserved ``_meta`` keys (they describe its exchange with us;
    our kernel stamps the client's own), as `datapulse.bridge.proxy.own_meta` does on the full path."""
    kept = without_reserved(result.get("_meta"))
    if kept is None:
        return result
    trimmed = {key: value for key, value in result.items() if key != "_meta"}
    if kept:
        trimmed["_meta"] = kept
    return trimmed


def _decoded(body: bytes) -> Any:
    try:
        return _jsonrpc.loads(body)
    except ParseError:
        return None


def passthrough_for(bridge: Bridge, enabled: bool) -> Passthrough | None:
    """A `Passthrough` for ``bridge`` if its upstream speaks 2026-07-28 and ``enabled`` (``DATAPULSE_FAST_PATH``)."""
    if not enabled or not bridge.spec.remote or bridge.spec.transport != "modern":
        return None
    return Passthrough(bridge)
