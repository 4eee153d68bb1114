"""JWT bearer-token verification: signed access tokens (RFC 7519, RFC 9068) checked against the issuer's keys.

`JwtVerifier.verify` takes the token from ``Authorization: Bearer`` and either returns a
`VerifiedToken` or raises:

- `TokenRejected` (answer 401 ``invalid_token``): the token is not acceptable; ``reason`` is a
  machine label, ``str(exc)`` a phrase safe to show the client;
- `KeysUnavailable` (answer 503, retry): the issuer's keys could not be fetched and none are cached.

Order of checks: shape and header (``alg`` in the allowlist: never ``none`` nor HS*, RFC 8725 §3.1),
the unverified ``iss`` (so tokens of other issuers never trigger key fetches), the key (header
``kid`` → JWK, of a family matching ``alg``), then PyJWT's signature and claim checks (``exp``,
``nbf``, ``iat`` with leeway; ``iss`` exact; ``aud`` containing a configured resource, RFC 8707).
Keys named by the token itself (``jku``, ``jwk``, ``x5u``, ``x5c`` headers) are never used. Token
values are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx2
import jwt
from jwt.types import Options

from datapulse._version import __version__
from datapulse.auth.jwks import (
    ALGORITHM_FAMILIES,
    KeyMiss,
    KeySource,
    KeysUnavailable,
    RemoteKeySource,
    StaticKeySource,
    check_http_url,
    static_key_set,
)

__all__ = ["JwtConfig", "JwtVerifier", "KeysUnavailable", "RejectReason", "TokenRejected", "VerifiedToken"]

log = logging.getLogger("datapulse.auth.jwt")

MAX_TOKEN_CHARS = 16_384
"""Longer bearer values are refused as malformed before any parsing."""

RejectReason = Literal[
    "malformed",
    "algorithm_not_allowed",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "missing_claim",
]

_MESSAGES: dict[RejectReason, str] = {
    "malformed": "the bearer token is not a well-formed JWT",
    "algorithm_not_allowed": "the token's signing algorithm is not accepted",
    "unknown_key": "the token is signed with an unknown key",
    "bad_signature": "the token's signature is not valid",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "wrong_issuer": "the token comes from another issuer",
    "wrong_audience": "the token is not meant for this server",
    "missing_claim": "the token lacks a required claim",
}


@dataclass(frozen=True, slots=True)
class JwtConfig:
    """How to verify JWTs. The key source is ``static_key_pem``, else ``jwks_url``, else discovery from
    ``issuer`` (OIDC Discovery 1.0 §4, then RFC 8414 §3).

    Attributes:
        issuer: exact value required in the ``iss`` claim; an http(s) URL when discovery is used.
        audiences: accepted ``aud`` values (RFC 8707 resource indicators); a token's ``aud`` (string
            or list) must contain one.
        algorithms: accepted JWS ``alg`` values, asymmetric only (RS*, PS*, ES*, EdDSA).
        leeway_s: clock skew tolerated on ``exp``, ``nbf`` and ``iat`` (seconds).
        static_key_pem: a PEM public key or X.509 certificate: verification needs no network.
        jwks_url: the issuer's JWK Set URL (RFC 7517 §5).
        jwks_cache_ttl_s: age after which fetched keys are refreshed in the background (seconds).
        jwks_refresh_min_interval_s: minimum time between refetches caused by unknown ``kid`` values,
            and between retries after a failed refresh (seconds).
        http_timeout_s: bound on every fetch, connect to last byte (seconds).
        principal_claim: the claim naming the principal (``sub`` by default).

    Raises:
        ValueError: on construction, for an empty issuer or audience list, a symmetric (HS*) or
            ``none`` algorithm, an unknown algorithm, both ``static_key_pem`` and ``jwks_url``, a
            non-http(s) URL where one is fetched, or a non-positive duration.
    """

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
    leeway_s: float = 30.0
    static_key_pem: str | None = None
    jwks_url: str | None = None
    jwks_cache_ttl_s: float = 600.0
    jwks_refresh_min_interval_s: float = 30.0
    http_timeout_s: float = 5.0
    principal_claim: str = "sub"

    def __post_init__(self) -> None:
        if isinstance(self.audiences, str):
            raise ValueError("audiences must be a tuple of strings, not one string")
        object.__setattr__(self, "audiences", tuple(self.audiences))
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        if not self.issuer:
            raise ValueError("issuer is required (the exact 'iss' the tokens carry)")
        if not self.audiences or not all(isinstance(aud, str) and aud for aud in self.audiences):
            raise ValueError("audiences must list at least one non-empty resource identifier (RFC 8707)")
        if not self.algorithms:
            raise ValueError("algorithms must allow at least one algorithm")
        for alg in self.algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is refused: only asymmetric signatures are accepted (RFC 8725)")
            if alg not in ALGORITHM_FAMILIES:
                raise ValueError(f"unknown algorithm {alg!r}; choose from {sorted(ALGORITHM_FAMILIES)}")
        if self.static_key_pem is not None and self.jwks_url is not None:
            raise ValueError("give static_key_pem or jwks_url, not both")
        if self.jwks_url is not None:
            check_http_url(self.jwks_url, "jwks_url")
        elif self.static_key_pem is None:
            check_http_url(self.issuer, "issuer (used for discovery)")
        if self.leeway_s < 0 or self.jwks_refresh_min_interval_s < 0:
            raise ValueError("leeway_s and jwks_refresh_min_interval_s must be >= 0")
        if self.jwks_cache_ttl_s <= 0 or self.http_timeout_s <= 0:
            raise ValueError("jwks_cache_ttl_s and http_timeout_s must be > 0")
        if not self.principal_claim:
            raise ValueError("principal_claim must name a claim")


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token that passed every check.

    Attributes:
        subject: the principal: the value of the configured principal claim (``sub``).
        issuer: the ``iss`` claim (equal to the configured issuer).
        client_id: the ``client_id`` claim (RFC 9068 §2.2), else ``azp`` (OIDC), else None.
        scopes: from ``scope`` (space-separated, RFC 8693 §4.2 / RFC 9068 §2.2.3) or ``scp`` (list or string).
        audience: the configured audience the token's ``aud`` matched.
        expires_at: the ``exp`` claim (seconds since the epoch).
        claims: every claim of the token.
    """

    subject: str
    issuer: str
    client_id: str | None
    scopes: frozenset[str]
    audience: str
    expires_at: int | None
    claims: dict[str, Any]


class TokenRejected(Exception):
    """The token is not acceptable (HTTP 401 ``invalid_token``, RFC 6750 §3.1).

    Attributes:
        reason: one of `RejectReason`, for metrics and tests.

    ``str(exc)`` is a short phrase safe to show the client; it never contains the token.
    """

    def __init__(self, reason: RejectReason, message: str | None = None) -> None:
        super().__init__(message or _MESSAGES[reason])
        self.reason: RejectReason = reason


class JwtVerifier:
    """Verifies JWT access tokens against ``config``.

    Keys are fetched lazily on the first `verify` (or by `refresh_keys`) and cached: see
    `datapulse.auth.jwks` for the refresh rules. Fetches run as asyncio tasks on the running loop.

    Args:
        config: what to accept and where the keys come from.
        http: the HTTP client for key fetches; by default one is created (and closed by `aclose`).
            Unused with ``static_key_pem``.
        clock: monotonic clock (seconds) for cache ages and rate limits; tests pass a fake one.
            Token times (``exp``...) always use the wall clock.

    Raises:
        ValueError: ``static_key_pem`` is not a usable public key for ``config.algorithms``.
    """

    def __init__(
        self,
        config: JwtConfig,
        *,
        http: httpx2.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._own_http: httpx2.AsyncClient | None = None
        self._source: KeySource
        if config.static_key_pem is not None:
            self._source = StaticKeySource(static_key_set(config.static_key_pem, config.algorithms))
            return
        if http is None:
            http = self._own_http = httpx2.AsyncClient(
                timeout=httpx2.Timeout(config.http_timeout_s),
                follow_redirects=False,
                headers={"User-Agent": f"datapulse/{__version__}"},
            )
        self._source = RemoteKeySource(
            issuer=config.issuer,
            jwks_url=config.jwks_url,
            algorithms=config.algorithms,
            http=http,
            timeout_s=config.http_timeout_s,
            cache_ttl_s=config.jwks_cache_ttl_s,
            refresh_min_interval_s=config.jwks_refresh_min_interval_s,
            clock=clock,
        )

    async def verify(self, token: str) -> VerifiedToken:
        """Verify a compact JWS token (the bearer value, without ``Bearer``).

        Raises:
            TokenRejected: the token is malformed, uses a refused algorithm or an unknown key, has
                a bad signature, is expired or not yet valid, or has the wrong issuer, audience or
                a missing claim (see ``reason``).
            KeysUnavailable: the keys could not be fetched and none usable is cached.
        """
        try:
            alg, kid = self._header(token)
            key = await self._key(kid, alg)
            claims = self._decode(token, key, alg)
            return self._verified(claims)
        except TokenRejected as exc:
            log.debug("JWT rejected: %s", exc.reason)
            raise

    async def refresh_keys(self) -> None:
        """Fetch the keys now, or join the fetch in flight (e.g. at startup, to fail fast on a bad
        issuer). No-op with a static key.

        Raises:
            KeysUnavailable: the fetch failed (keys already cached stay in use).
        """
        await self._source.refresh()

    async def aclose(self) -> None:
        """Cancel a key fetch in flight and close the HTTP client if this verifier created it."""
        await self._source.aclose()
        if self._own_http is not None:
            await self._own_http.aclose()

    def _header(self, token: str) -> tuple[str, str | None]:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenRejected("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or header.get("b64") is False:
            raise TokenRejected("malformed")
        if alg not in self.config.algorithms:
            raise TokenRejected("algorithm_not_allowed")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        iss = unverified.get("iss")
        if isinstance(iss, str) and iss != self.config.issuer:
            raise TokenRejected("wrong_issuer")
        return alg, kid

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        keys, fresh = await self._source.current()
        found = keys.select(kid, alg)
        if found is KeyMiss.ABSENT and not fresh:
            refreshed = await self._source.refresh_for_unknown_kid()
            if refreshed is None:  # rate-limited; another caller may have refreshed meanwhile
                refreshed, _ = await self._source.current()
            found = refreshed.select(kid, alg)
        if isinstance(found, jwt.PyJWK):
            return found
        if found is KeyMiss.WRONG_ALGORITHM:
            raise TokenRejected("algorithm_not_allowed", "the token's signing algorithm does not match its key")
        raise TokenRejected("unknown_key")

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        options: Options = {
            "require": ["exp", "iss", "aud", self.config.principal_claim],
            "enforce_minimum_key_length": True,
        }
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=list(self.config.audiences),
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong_issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong_audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("missing_claim", f"the token lacks the required {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad_signature") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("algorithm_not_allowed") from None
        except jwt.InvalidKeyError:
            log.warning("a JWT signing key was refused by PyJWT for %s", alg)
            raise TokenRejected("unknown_key") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed") from None
        return claims

    def _verified(self, claims: dict[str, Any]) -> VerifiedToken:
        name = self.config.principal_claim
        subject = claims.get(name)
        if not isinstance(subject, str):
            raise TokenRejected("malformed", f"the token's {name!r} claim is not a string")
        if not subject:
            raise TokenRejected("missing_claim", f"the token's {name!r} claim is empty")
        token_audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        audience = next(aud for aud in self.config.audiences if aud in token_audiences)
        client_id = claims.get("client_id")
        if not isinstance(client_id, str):
            azp = claims.get("azp")
            client_id = azp if isinstance(azp, str) else None
        exp = claims.get("exp")
        return VerifiedToken(
            subject=subject,
            issuer=claims["iss"],
            client_id=client_id,
            scopes=_scopes(claims),
            audience=audience,
            expires_at=int(exp) if exp is not None else None,
            claims=claims,
        )


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (a space-separated string) or else ``scp`` (a list of strings, or a string)."""
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise TokenRejected("malformed", "the token's 'scope' claim is not a string")
        return frozenset(scope.split())
    scp = claims.get("scp")
    if scp is None:
        return frozenset()
    if isinstance(scp, str):
        return frozenset(scp.split())
    if isinstance(scp, list) and all(isinstance(item, str) for item in scp):
        return frozenset(scp)
    raise TokenRejected("malformed", "the token's 'scp' claim is not a list of strings")
