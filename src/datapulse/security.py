"""The security policy of one app, assembled from settings: who may call (static tokens, JWT), what they
may use (scopes), how much (rate limits, stream caps), and how browsers get in (stream tickets).

`build_security` is the only place that reads the auth settings; the HTTP middleware, the endpoints
and the SDK middleware receive the parts they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datapulse.auth.authenticator import Authenticator, jwt_config
from datapulse.auth.jwt import JwtVerifier
from datapulse.auth.resource import ProtectedResource
from datapulse.auth.scopes import ScopePolicy, parse_scope_policy
from datapulse.auth.static import LOCAL_PRINCIPAL, StaticTokenVerifier, parse_token_list
from datapulse.auth.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from datapulse.config import ConfigurationError, Settings
from datapulse.ratelimit import RateLimiter, StreamSlots, parse_limit, parse_tool_limits

if TYPE_CHECKING:
    from datapulse.cluster.node import ClusterNode


@dataclass
class Security:
    """The assembled policy (see the module docstring).

    Attributes:
        authenticator: None only with ``insecure_no_auth`` (every request is the anonymous principal).
        resource: the RFC 9728 description of this server.
        tickets: stream tickets (None when auth is off: nothing to stand in for).
        policy: scopes per tool, resource and prompt.
        rate_limiter: per-principal and per-tool limits, or None when none is configured.
        stream_slots: the per-principal cap on concurrent streams.
    """

    authenticator: Authenticator | None
    resource: ProtectedResource
    tickets: TicketStore | None
    policy: ScopePolicy
    rate_limiter: RateLimiter | None
    stream_slots: StreamSlots = field(default_factory=lambda: StreamSlots(None))

    async def aclose(self) -> None:
        """Release HTTP clients and limiter storage."""
        if self.authenticator is not None:
            await self.authenticator.aclose()
        if self.rate_limiter is not None:
            await self.rate_limiter.aclose()


def static_verifier(settings: Settings) -> StaticTokenVerifier | None:
    """The verifier for the configured static tokens, or None when none is configured.

    Raises:
        ConfigurationError: a malformed token list or an empty token.
    """
    tokens: dict[str, str] = {}
    if settings.tokens is not None:
        try:
            tokens.update(parse_token_list(settings.tokens.get_secret_value()))
        except ValueError as exc:
            raise ConfigurationError(f"DATAPULSE_TOKENS: {exc}") from None
    if settings.token is not None:
        value = settings.token.get_secret_value()
        if not value:
            raise ConfigurationError("the bearer token is empty")
        tokens.setdefault(LOCAL_PRINCIPAL, value)
    return StaticTokenVerifier(tokens) if tokens else None


def build_authenticator(settings: Settings) -> Authenticator | None:
    """Static tokens and/or a JWT verifier; None only when auth is explicitly off.

    Raises:
        ConfigurationError: no credentials configured and ``insecure_no_auth`` not set; malformed tokens;
            unusable JWT settings.
    """
    static = static_verifier(settings)
    try:
        config = jwt_config(settings)
        jwt = JwtVerifier(config) if config is not None else None
    except ValueError as exc:
        raise ConfigurationError(f"JWT settings: {exc}") from None
    if static is None and jwt is None:
        if settings.insecure_no_auth:
            return None
        raise ConfigurationError(
            "no credentials configured: set DATAPULSE_TOKEN (or LOCAL_BEARER_TOKEN / DATAPULSE_TOKENS) or "
            "JWT_ISSUER, or pass insecure_no_auth=True to serve without authentication"
        )
    return Authenticator(static, jwt)


def build_security(settings: Settings, server_name: str, cluster: ClusterNode | None) -> Security:
    """Assemble the policy; in cluster mode tickets and rate limits live in Redis (shared by instances).

    Raises:
        ConfigurationError: see `build_authenticator`; a malformed ``scopes``, ``rate_limit`` or
            ``tool_rate_limits`` value (the message names the setting).
    """
    authenticator = build_authenticator(settings)
    try:
        policy = parse_scope_policy(settings.scopes)
    except ValueError as exc:
        raise ConfigurationError(f"DATAPULSE_SCOPES: {exc}") from None
    try:
        per_principal = parse_limit(settings.rate_limit) if settings.rate_limit else ()
    except ValueError as exc:
        raise ConfigurationError(f"DATAPULSE_RATE_LIMIT: {exc}") from None
    try:
        per_tool = parse_tool_limits(settings.tool_rate_limits) if settings.tool_rate_limits else ()
    except ValueError as exc:
        raise ConfigurationError(f"DATAPULSE_TOOL_RATE_LIMITS: {exc}") from None
    authorization_servers = tuple(settings.authorization_servers) or (
        (settings.jwt_issuer,) if settings.jwt_issuer else ()
    )
    required = tuple(settings.required_scopes)
    supported = tuple(dict.fromkeys([*required, *policy.all_scopes()]))
    resource = ProtectedResource(
        public_url=settings.public_url,
        root_path=settings.root_path,
        authorization_servers=authorization_servers,
        scopes_supported=supported,
        required_scopes=required,
        resource_name=server_name,
    )
    redis = cluster.redis if cluster is not None else None
    prefix = settings.redis_key_prefix
    tickets: TicketStore | None = None
    if authenticator is not None:
        ttl_s = settings.stream_ticket_ttl_s
        tickets = RedisTicketStore(redis, prefix, ttl_s) if redis is not None else MemoryTicketStore(ttl_s)
    limiter: RateLimiter | None = None
    if per_principal or per_tool:
        limiter = RateLimiter(per_principal=per_principal, per_tool=per_tool, redis=redis, key_prefix=prefix)
    return Security(
        authenticator=authenticator,
        resource=resource,
        tickets=tickets,
        policy=policy,
        rate_limiter=limiter,
        stream_slots=StreamSlots(settings.max_streams_per_principal),
    )
