"""Cluster-wide ``requestState`` sealing keys (multi-round-trip requests, MCP 2026-07-28).

The SDK seals the ``requestState`` of an ``input_required`` result with a per-process random key
by default (``RequestStateSecurity.ephemeral()``), so a client's retry that reaches another
instance fails with -32602. `install_request_state_security` replaces the server's sealing policy
with one built from ``DATAPULSE_REQUEST_STATE_KEYS`` (the same on every instance: the first key
seals, every key unseals, so keys rotate as ``new,old`` then ``new``) and one audience (default:
the server's name). Source: SDK ``mcp.server.request_state`` and docs/run/deploy.md "requestState".
"""

from __future__ import annotations

from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity

from datapulse import _sdk
from datapulse.config import Settings

MIN_KEY_BYTES = 32


class RequestStateKeyError(ValueError):
    """The configured keys cannot seal (the message says what to change)."""


def parse_keys(value: str) -> list[str]:
    """Split ``DATAPULSE_REQUEST_STATE_KEYS`` into keys, newest first.

    Raises:
        RequestStateKeyError: no key, or a key shorter than 32 bytes.
    """
    keys = [item.strip() for item in value.split(",") if item.strip()]
    if not keys:
        raise RequestStateKeyError("DATAPULSE_REQUEST_STATE_KEYS is empty")
    for index, key in enumerate(keys):
        if len(key.encode()) < MIN_KEY_BYTES:
            raise RequestStateKeyError(
                f"DATAPULSE_REQUEST_STATE_KEYS: key {index + 1} is {len(key.encode())} bytes; each key needs at "
                f'least {MIN_KEY_BYTES} (generate one: python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
    return keys


def install_request_state_security(server: object, settings: Settings) -> bool:
    """Seal ``server``'s ``requestState`` with the configured cluster keys.

    Returns:
        True if the keys were installed; False when no keys are configured (the SDK's per-process
        key stays, which is right for a single process) or the server seals nothing.

    Raises:
        RequestStateKeyError: cluster mode without keys (a retry on another instance would fail),
            or malformed keys.
    """
    if settings.request_state_keys is None:
        if settings.cluster:
            raise RequestStateKeyError(
                "cluster mode needs DATAPULSE_REQUEST_STATE_KEYS (the same on every instance) so a multi-round-trip "
                'request retried on another instance can be unsealed; generate one with: python -c "import secrets; '
                'print(secrets.token_urlsafe(32))"'
            )
        return False
    security = RequestStateSecurity(
        keys=parse_keys(settings.request_state_keys.get_secret_value()), audience=settings.request_state_audience
    )
    lowlevel = _sdk.lowlevel_server(server)
    default_audience = server.name if isinstance(server, _sdk.MCPServer) else lowlevel.name
    chain = lowlevel.middleware
    replaced = False
    for index, middleware in enumerate(chain):
        if isinstance(middleware, RequestStateBoundary):
            chain[index] = RequestStateBoundary(security, default_audience=default_audience)
            replaced = True
    return replaced
