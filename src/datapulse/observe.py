"""Observing every tool call, resource read and prompt get: Prometheus metrics and one audit record each.

`ObservationMiddleware` is an SDK ``ServerMiddleware`` placed first on the server's chain, so it sees every
era and transport, including uses refused by the scope policy or a rate limit (outcome ``refused`` /
``rate_limited``). The caller, session, transport and protocol version come from the request's context
(`CURRENT_PRINCIPAL`, `CURRENT_SESSION`); arguments are audited as a digest unless configured otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from datapulse.auth.authorization import CURRENT_PRINCIPAL
from datapulse.errors import ACCESS_ERROR
from datapulse.metrics import ToolOutcome
from datapulse.sessions.live import CURRENT_SESSION

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

    from datapulse.audit import AuditFields, AuditKind, Auditor
    from datapulse.metrics import Metrics

_OBSERVED: dict[str, tuple[AuditKind, str]] = {
    "tools/call": ("tool_call", "name"),
    "resources/read": ("resource_read", "uri"),
    "prompts/get": ("prompt_get", "name"),
}
STATELESS = "stateless"
"""The transport label of a 2026-07-28 request served without a session."""


def _transport_label() -> str:
    session = CURRENT_SESSION.get()
    return session.kind.value if session is not None else STATELESS


def _outcome_of(result: HandlerResult) -> ToolOutcome:
    is_error = result.get("isError") if isinstance(result, dict) else getattr(result, "is_error", None)
    return "error" if is_error else "ok"


class ObservationMiddleware:
    """Counts and times tool calls (`Metrics`) and writes audit records (`Auditor`, optional).

    Args:
        metrics: the app's metrics.
        auditor: where audit records go, or None (audit off).
    """

    def __init__(self, metrics: Metrics, auditor: Auditor | None) -> None:
        self.metrics = metrics
        self.auditor = auditor
        # labelled children, looked up once (``labels()`` takes a lock and builds a key on every call)
        self._message_counters: dict[str, tuple[Any, Any]] = {}
        self._tool_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        return await self.around(ctx.method, ctx.params, partial(call_next, ctx))

    async def around(
        self, method: str, params: Mapping[str, Any] | None, call: Callable[[], Awaitable[HandlerResult]]
    ) -> HandlerResult:
        """Observe ``call()``, the rest of the handling of one ``method`` request (the middleware's work, for a
        caller that has no SDK request context: `datapulse.fastpath`)."""
        transport = _transport_label()
        counters = self._message_counters.get(transport)
        if counters is None:
            messages = self.metrics.messages_total
            counters = self._message_counters[transport] = (
                messages.labels(transport, "in"),
                messages.labels(transport, "out"),
            )
        counters[0].inc()
        observed = _OBSERVED.get(method)
        if observed is None:
            try:
                result = await call()
            except Exception:
                counters[1].inc()  # the error response
                raise
            counters[1].inc()
            return result
        kind, field = observed
        params = params or {}
        name = params.get(field)
        name = name if isinstance(name, str) else None
        started = time.perf_counter()
        outcome: ToolOutcome = "error"
        try:
            result = await call()
            outcome = _outcome_of(result)
        except MCPError as exc:
            counters[1].inc()
            data = exc.error.data
            if exc.error.code == ACCESS_ERROR:
                outcome = "refused"
            elif isinstance(data, dict) and "retryAfterSeconds" in data:
                outcome = "rate_limited"
            raise
        except Exception:
            counters[1].inc()
            raise
        finally:
            duration_s = time.perf_counter() - started
            if outcome == "rate_limited":
                self.metrics.rate_limited_total.labels("tool").inc()
            if kind == "tool_call" and name is not None:
                label = self.metrics.tool_label(name)
                children = self._tool_children.get((label, outcome))
                if children is None:
                    children = self._tool_children[(label, outcome)] = (
                        self.metrics.tool_calls_total.labels(label, outcome),
                        self.metrics.tool_call_duration_seconds.labels(label),
                    )
                children[0].inc()
                children[1].observe(duration_s)
            auditor = self.auditor
            if auditor is not None and auditor.active:
                fields = _audit_fields(kind, name, params, outcome, duration_s)
                if auditor.may_suspend:
                    with anyio.CancelScope(shield=True):
                        await auditor.record(kind, **fields)
                else:  # its sinks await nothing: no coroutine, nothing to shield
                    auditor.record_now(kind, **fields)
        counters[1].inc()
        return result


def _audit_fields(
    kind: AuditKind, name: str | None, params: Mapping[str, Any], outcome: str, duration_s: float
) -> AuditFields:
    """The audit record's fields for one observed use, beyond its kind (see `datapulse.audit.AuditRecord`)."""
    principal = CURRENT_PRINCIPAL.get()
    session = CURRENT_SESSION.get()
    arguments = params.get("arguments") if kind != "resource_read" else None
    if isinstance(arguments, BaseModel):
        arguments = arguments.model_dump(mode="json")
    return {
        "principal": principal.key,
        "session_id": session.id if session is not None else None,
        "transport": session.kind.value if session is not None else STATELESS,
        "protocol_version": session.connection.protocol_version if session is not None else None,
        "name": name,
        "arguments": arguments,
        "outcome": outcome,
        "duration_ms": round(duration_s * 1000, 3),
    }
