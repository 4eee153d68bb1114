"""Per-item authorization and per-tool rate limits, as an SDK ``ServerMiddleware`` (every transport, every era).

With a scope policy (`datapulse.auth.scopes`), ``tools/list``, ``resources/list``,
``resources/templates/list`` and ``prompts/list`` show a principal only the items it holds the
scopes for, and ``tools/call``, ``resources/read`` and ``prompts/get`` of any other item is refused
with JSON-RPC error -32001 whose ``data.requiredScopes`` names what is missing (the MCP
authorization spec's step-up guidance, "Runtime Insufficient Scope Errors", carried in JSON-RPC so
it reaches stream transports too). ``tools/call`` then counts against the per-tool rate limits:
over a limit, JSON-RPC error -32000 with ``data.retryAfterSeconds``.

The caller is the principal the security middleware put in `CURRENT_PRINCIPAL`; it travels with the
request into the SDK's handler task exactly as ``get_access_token()`` does.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from datapulse.auth.principal import ANONYMOUS, Principal
from datapulse.auth.scopes import Kind, ScopePolicy
from datapulse.errors import ACCESS_ERROR, SERVER_ERROR, RateLimited

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

    from datapulse.ratelimit import RateLimiter

CURRENT_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("datapulse_principal", default=ANONYMOUS)
"""The principal of the request being served (set by `SecurityMiddleware`)."""

_LISTS: dict[str, tuple[Kind, str, str]] = {
    "tools/list": ("tool", "tools", "name"),
    "resources/list": ("resource", "resources", "uri"),
    "resources/templates/list": ("resource", "resourceTemplates", "uriTemplate"),
    "prompts/list": ("prompt", "prompts", "name"),
}
"""List method → (kind, result field holding the items, item field matched by the policy)."""

_USES: dict[str, tuple[Kind, str]] = {
    "tools/call": ("tool", "name"),
    "resources/read": ("resource", "uri"),
    "prompts/get": ("prompt", "name"),
}
"""Use method → (kind, params field naming the item)."""

_PYTHON_FIELDS = {"resourceTemplates": "resource_templates", "uriTemplate": "uri_template"}


class AuthorizationMiddleware:
    """Filters lists and refuses uses by scope; rate-limits ``tools/call`` per principal and tool.

    Args:
        policy: which scopes each tool, resource and prompt needs.
        rate_limiter: per-tool limits, or None.
    """

    def __init__(self, policy: ScopePolicy, rate_limiter: RateLimiter | None = None) -> None:
        self.policy = policy
        self.rate_limiter = rate_limiter

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        return await self.around(ctx.method, ctx.params, partial(call_next, ctx))

    async def around(
        self, method: str, params: Mapping[str, Any] | None, call: Callable[[], Awaitable[HandlerResult]]
    ) -> HandlerResult:
        """Check and count one ``method`` request, then run ``call()``, the rest of its handling (the
        middleware's work, for a caller that has no SDK request context: `datapulse.fastpath`).

        Raises:
            MCPError: -32001 (a scope is missing) or -32000 (a rate limit is exhausted), before ``call``.
        """
        if method in _USES:
            kind, field = _USES[method]
            name = (params or {}).get(field)
            if isinstance(name, str):
                principal = CURRENT_PRINCIPAL.get()
                self._check(principal, kind, name)
                if method == "tools/call" and self.rate_limiter is not None:
                    try:
                        await self.rate_limiter.hit_tool(principal.key, name)
                    except RateLimited as exc:
                        raise MCPError(SERVER_ERROR, exc.message, exc.data) from None
            return await call()
        if method in _LISTS and self.policy:
            result = await call()
            return self._filter(CURRENT_PRINCIPAL.get(), method, result)
        return await call()

    def _check(self, principal: Principal, kind: Kind, name: str) -> None:
        missing = principal.missing(self.policy.required(kind, name))
        if missing:
            scopes = " ".join(sorted(missing))
            raise MCPError(
                ACCESS_ERROR,
                f"Forbidden: {kind} {name!r} needs the scope(s) {scopes}; request a token that includes them",
                {"requiredScopes": sorted(missing)},
            )

    def _filter(self, principal: Principal, method: str, result: HandlerResult) -> HandlerResult:
        if principal.unrestricted:
            return result
        kind, items_field, name_field = _LISTS[method]

        def allowed(item: Any) -> bool:
            if isinstance(item, dict):
                name = item.get(name_field)
            else:
                name = getattr(item, _PYTHON_FIELDS.get(name_field, name_field), None)
            return not isinstance(name, str) or not principal.missing(self.policy.required(kind, str(name)))

        if isinstance(result, BaseModel):
            attribute = _PYTHON_FIELDS.get(items_field, items_field)
            items = getattr(result, attribute, None)
            if isinstance(items, list):
                return result.model_copy(update={attribute: [item for item in items if allowed(item)]})
            return result
        if isinstance(result, dict) and isinstance(result.get(items_field), list):
            return {**result, items_field: [item for item in result[items_field] if allowed(item)]}
        return result
