"""Bearer token → principal: static tokens first (constant time), then JWTs from the configured issuer.

Failures map to the exception tree: a token that is not valid is 401 ``invalid_token`` (the reason,
never the token, is in the message and in ``reason`` for metrics); an issuer whose keys cannot be
fetched is 503 with ``Retry-After`` (the client retries; nothing is cached as invalid).
"""

from __future__ import annotations

import logging
from pathlib import Path

from datapulse import _sdk
from datapulse.auth.jwt import JwtConfig, JwtVerifier, KeysUnavailable, TokenRejected, VerifiedToken
from datapulse.auth.principal import Principal
from datapulse.auth.static import StaticTokenVerifier
from datapulse.config import Settings
from datapulse.errors import Unauthorized, Unavailable

log = logging.getLogger("datapulse.auth")

KEYS_RETRY_AFTER_S = 5


class InvalidToken(Unauthorized):
    """The bearer token is not valid (401 ``invalid_token``); ``reason`` is a short machine label."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class Authenticator:
    """Verifies bearer tokens against static tokens and, if configured, a JWT issuer.

    Also satisfies the SDK's ``TokenVerifier`` protocol (`verify_token`).

    Args:
        static: the static-token verifier, or None.
        jwt: the JWT verifier, or None.
    """

    def __init__(self, static: StaticTokenVerifier | None, jwt: JwtVerifier | None) -> None:
        self.static = static
        self.jwt = jwt

    async def authenticate(self, token: str) -> tuple[Principal, _sdk.AccessToken]:
        """The principal and the SDK ``AccessToken`` (what ``get_access_token()`` returns) for ``token``.

        Raises:
            InvalidToken: unknown static token, or a JWT that fails verification (401).
            Unavailable: the JWT issuer's keys cannot be fetched now (503, ``Retry-After``).
        """
        if self.static is not None:
            principal = self.static.principal_for(token)
            if principal is not None:
                return principal, self.static.access_token(principal, token)
        if self.jwt is not None and token.count(".") == 2:
            try:
                verified = await self.jwt.verify(token)
            except TokenRejected as exc:
                raise InvalidToken(f"Unauthorized: {exc}", exc.reason) from None
            except KeysUnavailable as exc:
                log.warning("cannot verify a JWT: %s", exc)
                raise Unavailable(
                    "Service Unavailable: the token issuer's signing keys could not be fetched; retry shortly",
                    headers={"Retry-After": str(KEYS_RETRY_AFTER_S)},
                ) from None
            return _jwt_principal(verified), _jwt_access_token(verified, token)
        raise InvalidToken("Unauthorized: the bearer token is not valid", "unknown_token")

    async def verify_token(self, token: str) -> _sdk.AccessToken | None:
        """SDK ``TokenVerifier``: the ``AccessToken`` for a valid token, else None."""
        try:
            return (await self.authenticate(token))[1]
        except (InvalidToken, Unavailable):
            return None

    async def aclose(self) -> None:
        """Close the JWT verifier's HTTP client."""
        if self.jwt is not None:
            await self.jwt.aclose()


def _jwt_principal(verified: VerifiedToken) -> Principal:
    return Principal(verified.subject, verified.scopes, issuer=verified.issuer)


def _jwt_access_token(verified: VerifiedToken, token: str) -> _sdk.AccessToken:
    return _sdk.AccessToken(
        token=token,
        client_id=verified.client_id or verified.subject,
        scopes=sorted(verified.scopes),
        expires_at=verified.expires_at,
        resource=verified.audience,
        subject=verified.subject,
        claims=verified.claims,
    )


def jwt_config(settings: Settings) -> JwtConfig | None:
    """The `JwtConfig` for ``settings`` (None when no issuer is set).

    ``jwt_key`` is PEM text or a path to a PEM file; the audiences default to this server's resource
    URLs (``base_url + /mcp`` and ``/sse``, RFC 8707).

    Raises:
        ValueError: ``jwt_key`` is neither PEM text nor a readable file; or JWT options without an issuer.
    """
    if not settings.jwt_issuer:
        if settings.jwt_key is not None or settings.jwks_url:
            raise ValueError("JWT_KEY / DATAPULSE_JWKS_URL need JWT_ISSUER (the exact 'iss' the tokens carry)")
        return None
    pem: str | None = None
    if settings.jwt_key is not None:
        value = settings.jwt_key.get_secret_value().strip()
        if value.startswith("-----BEGIN"):
            pem = value
        else:
            path = Path(value).expanduser()
            try:
                pem = path.read_text()
            except OSError as exc:
                raise ValueError(f"JWT_KEY is neither PEM text nor a readable PEM file ({exc.strerror})") from None
    base = settings.base_url
    audiences = tuple(settings.jwt_audience) or (f"{base}/mcp", f"{base}/sse", base)
    return JwtConfig(
        issuer=settings.jwt_issuer,
        audiences=audiences,
        algorithms=tuple(settings.jwt_algorithms),
        leeway_s=settings.jwt_leeway_s,
        static_key_pem=pem,
        jwks_url=settings.jwks_url,
        jwks_cache_ttl_s=settings.jwks_cache_ttl_s,
        jwks_refresh_min_interval_s=settings.jwks_refresh_min_interval_s,
        http_timeout_s=settings.jwks_timeout_s,
    )
