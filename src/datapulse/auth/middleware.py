"""Pure-ASGI security middleware: Host/Origin validation, then bearer-token authentication.

Order matters: a request from a rebinding page is refused (421/403) before its token is looked at;
an unauthenticated request is refused (401 with ``WWW-Authenticate: Bearer ... resource_metadata=``,
RFC 6750 §3 and RFC 9728 §5.1) before any endpoint runs, and a principal without the required scopes
gets 403 ``insufficient_scope`` naming them. The protected-resource metadata (RFC 9728) and
``/health`` are served without auth. A stream GET (``/events``, ``/sse``) may authenticate with a
single-use ``?ticket=`` from ``POST /tickets`` instead of a header; a long-lived token in a URL is
always refused. The authenticated principal goes into the ASGI scope for the endpoints, and into
the SDK's ``auth_context_var`` so tool handlers can call ``get_access_token()``. Token values are
never logged. Works on streaming responses (no body buffering; never `BaseHTTPMiddleware`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from datapulse import _sdk
from datapulse.auth.authenticator import Authenticator, InvalidToken
from datapulse.auth.authorization import CURRENT_PRINCIPAL
from datapulse.auth.hosts import Networks, effective_host, host_allowed, is_trusted_proxy, origin_allowed
from datapulse.auth.principal import ANONYMOUS, PRINCIPAL_SCOPE_KEY, Principal
from datapulse.auth.resource import ProtectedResource
from datapulse.auth.tickets import TICKET_PATHS, TicketStore, is_dashboard_ticket
from datapulse.errors import DataPulseError, Forbidden, InsufficientScope, MisdirectedRequest, Unavailable
from datapulse.transports._http import query_param, send_error

if TYPE_CHECKING:
    from datapulse.audit import AuditFields, Auditor
    from datapulse.metrics import Metrics

log = logging.getLogger("datapulse.auth")

_URL_TOKEN_PARAMS = (b"access_token=", b"token=", b"api_key=")

BASE_URL_SCOPE_KEY = "datapulse.base_url"
"""ASGI scope key: the server's base URL as this request's client sees it (for metadata and challenges)."""


class SecurityMiddleware:
    """Refuses misdirected, cross-origin, unauthenticated and under-scoped requests.

    Args:
        app: the wrapped ASGI app.
        authenticator: verifies bearer tokens, or None to serve every request as the anonymous principal
            (``--insecure-no-auth``).
        resource: this server as an OAuth protected resource (metadata URL, challenges, required scopes).
        tickets: the stream-ticket store (``?ticket=`` on stream GETs), or None.
        allowed_hosts: accepted Host patterns (see `host_allowed`), or None to accept any Host.
        allowed_origins: extra accepted Origins (same-origin is always accepted).
        allow_loopback_origins: accept ``http://localhost:*``-style origins (the server is local).
        trusted_proxies: networks whose ``X-Forwarded-Host`` / ``X-Forwarded-Proto`` are believed.
        public_paths: paths served without auth (``/health``, the RFC 9728 metadata); Host rules still apply.
        any_origin_paths: public paths any Origin may read (the metadata documents).
        metrics: counts auth failures by reason (``datapulse_auth_failures_total``), if given.
        auditor: receives one ``auth`` record per decision on a protected path, if given and active.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator | None,
        resource: ProtectedResource,
        tickets: TicketStore | None,
        allowed_hosts: Sequence[str] | None,
        allowed_origins: Sequence[str],
        allow_loopback_origins: bool,
        trusted_proxies: Networks,
        public_paths: frozenset[str] = frozenset({"/health"}),
        any_origin_paths: frozenset[str] = frozenset(),
        metrics: Metrics | None = None,
        auditor: Auditor | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.resource = resource
        self.tickets = tickets
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.allow_loopback_origins = allow_loopback_origins
        self.trusted_proxies = trusted_proxies
        self.public_paths = public_paths | any_origin_paths
        self.any_origin_paths = any_origin_paths
        self.required_scopes = frozenset(resource.required_scopes)
        self.metrics = metrics
        self.auditor = auditor
        self._resolved: dict[tuple[str | None, ...], tuple[str, str]] = {}
        """(Host, X-Forwarded-Host, X-Forwarded-Proto, client address, scheme) → (request host, base URL), for the
        requests that passed the Host check."""
        self._views: tuple[_sdk.AccessToken, Principal, _sdk.AuthenticatedUser, AuthCredentials] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = authorization = forwarded_host = forwarded_proto = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"x-forwarded-host":
                forwarded_host = value.decode("latin-1")
            elif key == b"x-forwarded-proto":
                forwarded_proto = value.decode("latin-1")
        base_url = path = ""
        authenticating = False
        try:
            client = scope.get("client")
            where = (host, forwarded_host, forwarded_proto, client[0] if client else None, scope.get("scheme"))
            resolved = self._resolved.get(where)
            if resolved is None:  # checked once per (Host, forwarded headers, client address, scheme)
                request_host = self._check_host(scope, host, forwarded_host)
                resolved = (request_host, self.resource.base_url(self._scheme(scope, forwarded_proto), request_host))
                if len(self._resolved) >= _RESOLVED_MAX:
                    self._resolved.clear()
                self._resolved[where] = resolved
            request_host, base_url = resolved
            scope[BASE_URL_SCOPE_KEY] = base_url
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            if (
                origin is not None
                and path not in self.any_origin_paths
                and not origin_allowed(
                    origin, request_host, self.allowed_origins, allow_loopback=self.allow_loopback_origins
                )
            ):
                raise Forbidden(f"Forbidden: Origin {origin!r} is not allowed; add it to allowed_origins")
            if path in self.public_paths:
                await self.app(scope, receive, send)
                return
            authenticating = True
            principal, access_token = await self._authenticate(scope, path, authorization, base_url)
            missing = principal.missing(self.required_scopes)
            if missing:
                raise InsufficientScope(
                    f"Forbidden: this server needs the scope(s) {' '.join(sorted(missing))}; request a token "
                    "that includes them",
                    missing,
                    headers={
                        "WWW-Authenticate": self.resource.challenge(
                            base_url, error="insufficient_scope", scopes=sorted(self.required_scopes)
                        )
                    },
                )
        except DataPulseError as error:
            if authenticating:
                await self._denied(error, path)
            await send_error(send, error)
            return
        auditor = self.auditor
        if auditor is not None and auditor.active:
            if auditor.may_suspend:
                await auditor.record("auth", **_allowed(principal, path))
            else:  # its sinks await nothing: no coroutine
                auditor.record_now("auth", **_allowed(principal, path))
        scope[PRINCIPAL_SCOPE_KEY] = principal
        principal_reset = CURRENT_PRINCIPAL.set(principal)
        try:
            if access_token is None:
                await self.app(scope, receive, send)
                return
            views = self._views
            if views is None or views[0] is not access_token or views[1] is not principal:
                # the SDK's views of the caller; a static token's are the same objects on every request
                views = self._views = (
                    access_token,
                    principal,
                    _sdk.AuthenticatedUser(access_token),
                    AuthCredentials(sorted(principal.scopes)),
                )
            user = views[2]
            scope["user"] = user
            scope["auth"] = views[3]
            reset = _sdk.auth_context_var.set(user)
            try:
                await self.app(scope, receive, send)
            finally:
                _sdk.auth_context_var.reset(reset)
        finally:
            CURRENT_PRINCIPAL.reset(principal_reset)

    async def _denied(self, error: DataPulseError, path: str) -> None:
        if isinstance(error, InsufficientScope):
            reason = "insufficient_scope"
        elif isinstance(error, InvalidToken):
            reason = error.reason
        elif isinstance(error, Unavailable):
            reason = "keys_unavailable"
        else:
            reason = "other"
        if self.metrics is not None:
            self.metrics.auth_failures_total.labels(self.metrics.auth_reason(reason)).inc()
        if self.auditor is not None and self.auditor.active:
            await self.auditor.record(
                "auth",
                principal=None,
                session_id=None,
                transport=None,
                protocol_version=None,
                name=path,
                outcome=f"denied:{reason}",
            )

    def _check_host(self, scope: Scope, host: str | None, forwarded_host: str | None) -> str:
        client = scope.get("client")
        request_host = effective_host(host, forwarded_host, client[0] if client else None, self.trusted_proxies)
        if self.allowed_hosts is not None and not host_allowed(request_host, self.allowed_hosts):
            raise MisdirectedRequest(
                f"Misdirected Request: Host {request_host!r} is not served here; add it to allowed_hosts "
                "(behind a proxy, list the proxy in trusted_proxies so X-Forwarded-Host is used)"
            )
        return request_host

    def _scheme(self, scope: Scope, forwarded_proto: str | None) -> str:
        client = scope.get("client")
        trusted = is_trusted_proxy(client[0] if client else None, self.trusted_proxies)
        if trusted and forwarded_proto is not None:
            # The first entry is the client's scheme (a chain of proxies appends: "https, http"), any case.
            first = forwarded_proto.split(",", 1)[0].strip().lower()
            if first in ("http", "https"):
                return first
        return str(scope.get("scheme", "http"))

    async def _authenticate(
        self, scope: Scope, path: str, authorization: str | None, base_url: str
    ) -> tuple[Principal, _sdk.AccessToken | None]:
        if self.authenticator is None:
            return ANONYMOUS, None
        query: bytes = scope.get("query_string", b"")
        if query and any(param in query for param in _URL_TOKEN_PARAMS):
            raise self._unauthorized(
                base_url,
                "Unauthorized: tokens are not accepted in URLs; send Authorization: Bearer <token>",
                reason="malformed",
            )
        if authorization is None:
            ticket = query_param(scope, "ticket") if b"ticket=" in query else None
            if ticket is not None and self.tickets is not None and path in TICKET_PATHS and scope["method"] == "GET":
                principal = await self.tickets.redeem(ticket)
                if principal is None:
                    raise self._unauthorized(
                        base_url,
                        "Unauthorized: the stream ticket is unknown, expired or already used; get a new "
                        "one with POST /tickets",
                        reason="ticket",
                    )
                return principal, _ticket_access_token(principal)
            raise self._unauthorized(
                base_url, "Unauthorized: send Authorization: Bearer <token>", reason="missing", error=None
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise self._unauthorized(
                base_url, "Unauthorized: the Authorization header must be 'Bearer <token>'", reason="malformed"
            )
        if is_dashboard_ticket(token) and self.tickets is not None:
            principal = await self.tickets.check_dashboard(token)
            if principal is None:
                raise self._unauthorized(
                    base_url,
                    "Unauthorized: the dashboard ticket is unknown, expired or revoked; sign in again",
                    reason="ticket",
                )
            return principal, _ticket_access_token(principal, DASHBOARD_TICKET_ISSUER)
        try:
            return await self.authenticator.authenticate(token)
        except InvalidToken as exc:
            log.info("refused an invalid bearer token (%s) on %s", exc.reason, scope.get("path"))
            description = exc.message.removeprefix("Unauthorized: ")
            raise self._unauthorized(base_url, exc.message, reason=exc.reason, description=description) from None

    def _unauthorized(
        self,
        base_url: str,
        message: str,
        *,
        reason: str,
        error: str | None = "invalid_token",
        description: str | None = None,
    ) -> InvalidToken:
        refusal = InvalidToken(message, reason)
        refusal.headers["WWW-Authenticate"] = self.resource.challenge(base_url, error=error, description=description)
        return refusal


def _allowed(principal: Principal, path: str) -> AuditFields:
    """The ``auth`` audit record's fields for an allowed request."""
    return {
        "principal": principal.key,
        "session_id": None,
        "transport": None,
        "protocol_version": None,
        "name": path,
        "outcome": "allowed",
    }


_RESOLVED_MAX = 1024
"""Entries kept in a middleware's Host resolution cache before it is emptied and refilled."""

STREAM_TICKET_ISSUER = "datapulse:ticket"
DASHBOARD_TICKET_ISSUER = "datapulse:dashboard-ticket"


def _ticket_access_token(principal: Principal, issuer: str = STREAM_TICKET_ISSUER) -> _sdk.AccessToken:
    """What handlers see for a request made with a ticket (the ticket itself is not exposed)."""
    return _sdk.AccessToken(
        token="",
        client_id=principal.name,
        scopes=sorted(principal.scopes),
        expires_at=None,
        subject=principal.name,
        claims={"iss": principal.issuer or issuer, "sub": principal.name},
    )
