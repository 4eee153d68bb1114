"""Who is calling: the principal model shared by auth, sessions and handlers."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

PRINCIPAL_SCOPE_KEY = "datapulse.principal"
"""ASGI scope key under which the auth middleware stores the request's `Principal`."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: the principal's name (``local``, ``alice``, a JWT ``sub``...). Sessions are bound to it.
        scopes: OAuth scopes granted to the caller (empty for static tokens).
    """

    name: str
    scopes: frozenset[str] = frozenset()


ANONYMOUS = Principal("anonymous")
"""The principal of every request when auth is explicitly disabled (``--insecure-no-auth``)."""


def principal_of(scope: Scope) -> Principal:
    """The principal the auth middleware attached to ``scope`` (anonymous when auth is off)."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else ANONYMOUS
