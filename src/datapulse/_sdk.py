"""The one module that touches the MCP SDK (``mcp`` 2.3.0) beyond its package-level ``__all__``.

DataPulse drives the SDK's kernel (`ServerRunner`, `Connection`, `serve_one`) from its own
transports. Names that are public in their module but not re-exported at the package level, and
the single private attribute we need (`MCPServer._lowlevel_server`), are imported here only, so an
SDK upgrade that moves them breaks one file — and ``tests/test_sdk_adapter.py`` fails loudly first.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.connection import Connection
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import ServerRunner, serve_one
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError, NoBackChannelError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    unsupported_protocol_version_rejection,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data, progress_token_from_params
from mcp.shared.message import ServerMessageMetadata
from mcp.shared.subscriptions import LISTEN_STREAM_METHODS
from mcp.shared.transport_context import TransportContext
from mcp_types import ErrorData, InitializeRequestParams
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    LATEST_MODERN_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

__all__ = [
    "ERROR_CODE_HTTP_STATUS",
    "HANDSHAKE_PROTOCOL_VERSIONS",
    "LATEST_HANDSHAKE_VERSION",
    "LATEST_MODERN_VERSION",
    "LISTEN_STREAM_METHODS",
    "MODERN_PROTOCOL_VERSIONS",
    "AccessToken",
    "AuthenticatedUser",
    "CallOptions",
    "Connection",
    "ErrorData",
    "InboundLadderRejection",
    "InitializeRequestParams",
    "MCPError",
    "MCPServer",
    "NoBackChannelError",
    "Server",
    "ServerMessageMetadata",
    "ServerRunner",
    "SubscriptionBus",
    "TransportContext",
    "auth_context_var",
    "classify_inbound_request",
    "error_data_for",
    "find_duplicated_routing_header",
    "lowlevel_server",
    "progress_token_from_params",
    "replace_subscription_bus",
    "serve_one",
    "subscription_bus",
    "unsupported_protocol_version_rejection",
    "validate_mcp_param_headers",
]

logger = logging.getLogger("datapulse.handlers")

INTERNAL_ERROR = -32603
INVALID_PARAMS = -32602

PROMPT_CALLER_ERRORS = ("Unknown prompt: ", "Missing required arguments: ")
"""How the SDK's prompt layer words the caller's mistakes, which it raises as plain ``ValueError``
(``mcp/server/mcpserver/prompts/manager.py`` and ``base.py``): answered -32602, not logged as a fault.
tests/test_sdk_adapter.py fails if an SDK upgrade changes the wording."""


def lowlevel_server(app: object) -> Server[Any]:
    """The low-level `Server` (the handler registry) behind an SDK `MCPServer` or `Server`.

    Raises:
        TypeError: ``app`` is neither.
    """
    if isinstance(app, Server):
        return app
    if isinstance(app, MCPServer):
        server = app._lowlevel_server  # the SDK exposes no public accessor (SDK-SEAMS.md §1.2)
        if not isinstance(server, Server):
            raise TypeError("MCPServer._lowlevel_server is not a low-level Server; the SDK changed")
        return server
    raise TypeError(f"expected an mcp MCPServer or low-level Server, got {type(app).__name__}")


def subscription_bus(app: object) -> SubscriptionBus | None:
    """The `SubscriptionBus` an `MCPServer` publishes change events to (``ctx.notify_*``) and its
    ``subscriptions/listen`` handler listens on; None for a low-level `Server` (its bus is the user's)."""
    if not isinstance(app, MCPServer):
        return None
    bus = getattr(app, "_subscriptions", None)  # no public accessor (SDK docs: "Scaling past one process")
    if bus is None or not hasattr(bus, "publish") or not hasattr(bus, "subscribe"):
        raise TypeError("MCPServer._subscriptions is not a SubscriptionBus; the SDK changed")
    return bus  # type: ignore[no-any-return]


def replace_subscription_bus(app: MCPServer, bus: SubscriptionBus) -> None:
    """Make ``app`` publish its change events (``ctx.notify_*``) to ``bus``."""
    app._subscriptions = bus


def error_data_for(exc: BaseException) -> ErrorData:
    """Map an exception raised by the handler chain to its JSON-RPC error.

    `MCPError` keeps its own code; a pydantic ``ValidationError`` is -32602 (the SDK's shared
    ladder); anything else is logged with its traceback here and sent as a generic -32603, so
    handler internals never reach the wire.
    """
    error = handler_exception_to_error_data(exc)
    if error is not None:
        return error
    if isinstance(exc, ValueError) and str(exc).startswith(PROMPT_CALLER_ERRORS):
        return ErrorData(code=INVALID_PARAMS, message=str(exc))
    logger.error("request handler raised", exc_info=exc)
    return ErrorData(code=INTERNAL_ERROR, message="Internal server error")
