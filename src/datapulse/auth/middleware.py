"""Pure-ASGI security middleware: Host/Origin validation, then bearer-token authentication.

Order matters: a request from a rebinding page is refused (421/403) before its token is looked at;
an unauthenticated request is refused (401 with ``WWW-Authenticate: Bearer``, RFC 6750 §3) before
any endpoint runs. The authenticated principal goes into the ASGI scope for the endpoints, and into
the SDK's ``auth_context_var`` so tool handlers can call ``get_access_token()``. Token values are
never logged. Works on streaming responses (no body buffering; never `BaseHTTPMiddleware`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.authentication import AuthCredentials
from starlette.types import ASGIApp, Receive, Scope, Send

from datapulse import _sdk
from datapulse.auth.hosts import Networks, effective_host, host_allowed, origin_allowed
from datapulse.auth.principal import ANONYMOUS, PRINCIPAL_SCOPE_KEY, Principal
from datapulse.auth.static import StaticTokenVerifier, access_token_for
from datapulse.errors import DataPulseError, Forbidden, MisdirectedRequest, Unauthorized
from datapulse.transports._http import send_error

log = logging.getLogger("datapulse.auth")

_URL_TOKEN_PARAMS = (b"access_token=", b"token=", b"api_key=")


class SecurityMiddleware:
    """Refuses misdirected, cross-origin and unauthenticated requests.

    Args:
        app: the wrapped ASGI app.
        verifier: the token verifier, or None to serve every request as the anonymous principal
            (``--insecure-no-auth``).
        allowed_hosts: accepted Host patterns (see `host_allowed`), or None to accept any Host.
        allowed_origins: extra accepted Origins (same-origin is always accepted).
        allow_loopback_origins: accept ``http://localhost:*``-style origins (the server is local).
        trusted_proxies: networks whose ``X-Forwarded-Host`` is believed.
        public_paths: paths served without auth (``/health``); Host/Origin rules still apply.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verifier: StaticTokenVerifier | None,
        allowed_hosts: Sequence[str] | None,
        allowed_origins: Sequence[str],
        allow_loopback_origins: bool,
        trusted_proxies: Networks,
        public_paths: frozenset[str] = frozenset({"/health"}),
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.allowed_hosts = allowed_hosts
        self.allowed_origins = allowed_origins
        self.allow_loopback_origins = allow_loopback_origins
        self.trusted_proxies = trusted_proxies
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = authorization = forwarded_host = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
            elif key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"x-forwarded-host":
                forwarded_host = value.decode("latin-1")
        try:
            request_host = self._check_host(scope, host, forwarded_host)
            if origin is not None and not origin_allowed(
                origin, request_host, self.allowed_origins, allow_loopback=self.allow_loopback_origins
            ):
                raise Forbidden(f"Forbidden: Origin {origin!r} is not allowed; add it to allowed_origins")
            path: str = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            if path in self.public_paths:
                await self.app(scope, receive, send)
                return
            principal, token = self._authenticate(scope, authorization)
        except DataPulseError as error:
            await send_error(send, error)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        if token is None:
            await self.app(scope, receive, send)
            return
        user = _sdk.AuthenticatedUser(access_token_for(principal, token))
        scope["user"] = user
        scope["auth"] = AuthCredentials(sorted(principal.scopes))
        reset = _sdk.auth_context_var.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            _sdk.auth_context_var.reset(reset)

    def _check_host(self, scope: Scope, host: str | None, forwarded_host: str | None) -> str:
        client = scope.get("client")
        request_host = effective_host(host, forwarded_host, client[0] if client else None, self.trusted_proxies)
        if self.allowed_hosts is not None and not host_allowed(request_host, self.allowed_hosts):
            raise MisdirectedRequest(
                f"Misdirected Request: Host {request_host!r} is not served here; add it to allowed_hosts "
                "(behind a proxy, list the proxy in trusted_proxies so X-Forwarded-Host is used)"
            )
        return request_host

    def _authenticate(self, scope: Scope, authorization: str | None) -> tuple[Principal, str | None]:
        if self.verifier is None:
            return ANONYMOUS, None
        query: bytes = scope.get("query_string", b"")
        if query and any(param in query for param in _URL_TOKEN_PARAMS):
            raise _unauthorized("Unauthorized: tokens are not accepted in URLs; send Authorization: Bearer <token>")
        if authorization is None:
            raise _unauthorized("Unauthorized: send Authorization: Bearer <token>", error=None)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("Unauthorized: the Authorization header must be 'Bearer <token>'")
        principal = self.verifier.principal_for(token)
        if principal is None:
            log.info("refused a request with an invalid bearer token (path %s)", scope.get("path"))
            raise _unauthorized("Unauthorized: the bearer token is not valid")
        return principal, token


def _unauthorized(message: str, error: str | None = "invalid_token") -> Unauthorized:
    challenge = 'Bearer realm="datapulse"' + (f', error="{error}"' if error else "")
    return Unauthorized(message, headers={"WWW-Authenticate": challenge})
