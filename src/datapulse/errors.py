"""The DataPulse exception tree.

Every error a client can see is one of these; each knows its HTTP status and its
JSON-RPC error code, so every transport maps it to the wire the same way::

    DataPulseError                       500  -32603  (base; never raised bare)
    ├── BadRequest                       400  -32600  malformed HTTP request (missing query parameter, ...)
    │   ├── ParseError                   400  -32700  body is not JSON (JSON-RPC 2.0 §5.1)
    │   ├── InvalidRequest               400  -32600  JSON, but not a valid JSON-RPC / DataPulse message
    │   └── MissingSessionId             400  -32600  a request that needs a session carries none
    ├── MethodNotFound                   404  -32601  unknown JSON-RPC method or DataPulse message type
    ├── SessionNotFound                  404  -32001  unknown, expired or foreign session (never says which)
    ├── Unauthorized                     401  -32001  missing or invalid bearer token (RFC 6750 §3)
    ├── Forbidden                        403  -32001  Origin not allowed (DNS rebinding protection)
    │   └── InsufficientScope            403  -32001  the token lacks a scope the operation needs (RFC 6750 §3.1)
    ├── MisdirectedRequest               421  -32001  Host not allowed (DNS rebinding protection)
    ├── MethodNotAllowed                 405  -32600  HTTP method not served on this path
    ├── NotAcceptable                    406  -32600  Accept header excludes what the endpoint returns
    ├── Conflict                         409  -32600  e.g. a second standalone GET stream for a session
    ├── PayloadTooLarge                  413  -32600  body over ``max_body_bytes``
    ├── UnsupportedMediaType             415  -32600  Content-Type is not application/json
    ├── TooManySessions                  429  -32000  per-principal session cap reached
    ├── RateLimited                      429  -32000  a rate limit or concurrent-stream cap was hit (Retry-After)
    ├── Unavailable                      503  -32000  server at capacity, shutting down, or outbox full
    └── Internal                         500  -32603  an unexpected server fault (details only in the log)

Third-party errors are translated at the boundary (``raise X(...) from exc``);
handlers' own errors stay JSON-RPC errors inside a 200 response, as MCP requires.
"""

from __future__ import annotations

from typing import Any, ClassVar

# JSON-RPC 2.0 §5.1 codes and the implementation-defined server range (-32000..-32099).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000
ACCESS_ERROR = -32001


class DataPulseError(Exception):
    """Base of every client-visible DataPulse error.

    Attributes:
        http_status: the HTTP status code this error is sent with.
        jsonrpc_code: the JSON-RPC ``error.code`` this error is sent with.
        message: a sentence a person can act on; safe to show to the client.
        data: optional JSON-serialisable ``error.data``.
        headers: extra HTTP response headers (``WWW-Authenticate``, ``Allow``, ``Retry-After``).
    """

    http_status: ClassVar[int] = 500
    jsonrpc_code: ClassVar[int] = INTERNAL_ERROR

    def __init__(self, message: str, *, data: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        self.headers = headers or {}


class BadRequest(DataPulseError):
    http_status = 400
    jsonrpc_code = INVALID_REQUEST


class ParseError(BadRequest):
    jsonrpc_code = PARSE_ERROR


class InvalidRequest(BadRequest):
    jsonrpc_code = INVALID_REQUEST


class MissingSessionId(BadRequest):
    pass


class MethodNotFound(DataPulseError):
    http_status = 404
    jsonrpc_code = METHOD_NOT_FOUND


class NotFound(DataPulseError):
    """No such resource at this path (a dashboard file, say)."""

    http_status = 404
    jsonrpc_code = INVALID_REQUEST


class SessionNotFound(DataPulseError):
    http_status = 404
    jsonrpc_code = ACCESS_ERROR

    def __init__(self, message: str = "Session not found: it does not exist, has expired, or was closed") -> None:
        super().__init__(message)


class Unauthorized(DataPulseError):
    http_status = 401
    jsonrpc_code = ACCESS_ERROR


class Forbidden(DataPulseError):
    http_status = 403
    jsonrpc_code = ACCESS_ERROR


class InsufficientScope(Forbidden):
    """The principal's token lacks ``required`` scopes (RFC 6750 §3.1; MCP authorization, "Runtime
    Insufficient Scope Errors"). ``data`` carries ``{"requiredScopes": [...]}``; over HTTP the 403 carries
    ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."`` (set by the auth layer)."""

    def __init__(self, message: str, required: frozenset[str] | set[str], *, headers: dict[str, str] | None = None):
        super().__init__(message, data={"requiredScopes": sorted(required)}, headers=headers)
        self.required = frozenset(required)


class MisdirectedRequest(DataPulseError):
    http_status = 421
    jsonrpc_code = ACCESS_ERROR


class MethodNotAllowed(DataPulseError):
    http_status = 405
    jsonrpc_code = INVALID_REQUEST

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"HTTP {method} is not served here; use {', '.join(allowed)}", headers={"Allow": ", ".join(allowed)}
        )


class NotAcceptable(DataPulseError):
    http_status = 406
    jsonrpc_code = INVALID_REQUEST


class Conflict(DataPulseError):
    http_status = 409
    jsonrpc_code = INVALID_REQUEST


class PayloadTooLarge(DataPulseError):
    http_status = 413
    jsonrpc_code = INVALID_REQUEST


class UnsupportedMediaType(DataPulseError):
    http_status = 415
    jsonrpc_code = INVALID_REQUEST


class TooManySessions(DataPulseError):
    http_status = 429
    jsonrpc_code = SERVER_ERROR


class RateLimited(DataPulseError):
    """Too many requests: a rate limit (``limits`` notation, e.g. ``60/minute``) or a concurrency cap was
    hit. ``retry_after_s`` (whole seconds, ≥ 1) is sent as ``Retry-After`` (RFC 9110 §10.2.3) and in ``data``."""

    http_status = 429
    jsonrpc_code = SERVER_ERROR

    def __init__(self, message: str, retry_after_s: int) -> None:
        retry_after_s = max(1, int(retry_after_s))
        super().__init__(
            message, data={"retryAfterSeconds": retry_after_s}, headers={"Retry-After": str(retry_after_s)}
        )
        self.retry_after_s = retry_after_s


class Unavailable(DataPulseError):
    http_status = 503
    jsonrpc_code = SERVER_ERROR


class SessionMoved(Unavailable):
    """This instance no longer owns the session: another instance took it over while this one was cut off from
    the cluster store (its heartbeat lapsed). HTTP 503 with ``Retry-After: 1``; the retry reaches the new owner.
    Between instances the response carries `SESSION_MOVED_HEADER`, so a forwarding instance re-reads the
    session's owner instead of relaying it."""

    def __init__(self, message: str = "Service Unavailable: this session moved to another instance; retry") -> None:
        super().__init__(message, headers={"Retry-After": "1", SESSION_MOVED_HEADER: "1"})


SESSION_MOVED_HEADER = "X-DataPulse-Session-Moved"


class Internal(DataPulseError):
    pass


class StreamClosed(Exception):
    """Internal: a write was attempted on an SSE stream that has ended (not client-visible)."""


class IllegalTransition(Exception):
    """Internal: a session lifecycle event that the transition table does not allow."""
