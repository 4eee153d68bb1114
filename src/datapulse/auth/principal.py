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
        name: the principal's name (``local``, ``alice``, a JWT ``sub``...).
        scopes: OAuth scopes granted to the caller (a JWT's ``scope``/``scp``).
        issuer: the JWT issuer that vouched for ``name``; None for static tokens and no-auth mode.
        unrestricted: holds every scope (static tokens are operator credentials; no-auth mode).
    """

    name: str
    scopes: frozenset[str] = frozenset()
    issuer: str | None = None
    unrestricted: bool = False

    @property
    def key(self) -> str:
        """What sessions, caps and rate limits are bound to: the name, qualified by the issuer for JWT
        principals, so a JWT ``sub`` can never collide with a static token's principal name."""
        return self.name if self.issuer is None else f"{self.issuer} {self.name}"

    def missing(self, required: frozenset[str]) -> frozenset[str]:
        """The scopes of ``required`` this principal lacks (empty: allowed)."""
        return frozenset() if self.unrestricted else required - self.scopes


ANONYMOUS = Principal("anonymous", unrestricted=True)
"""The principal of every request when auth is explicitly disabled (``--insecure-no-auth``)."""


def principal_of(scope: Scope) -> Principal:
    """The principal the auth middleware attached to ``scope`` (anonymous when auth is off)."""
    principal = scope.get(PRINCIPAL_SCOPE_KEY)
    return principal if isinstance(principal, Principal) else ANONYMOUS
