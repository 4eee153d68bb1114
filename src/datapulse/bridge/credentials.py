"""The gateway's own credentials for an upstream (remote HTTP) MCP server.

``datapulse proxy`` forwards MCP requests to an upstream server. It authenticates there with credentials
of its own, configured here, and never with the inbound client's token: passing a token through to
another service is forbidden by the MCP authorization specification (Security Best Practices, "Token
Passthrough"), since the upstream would then accept tokens that were not issued for it.

Three kinds, combinable as `UpstreamCredentials` allows:

- static ``headers`` (an API key header, say);
- ``bearer_env``: a token read from an environment variable, sent as ``Authorization: Bearer <token>``;
- ``oauth``: the OAuth 2.1 client-credentials grant (RFC 6749 §4.4) against a configured token
  endpoint, handled by `ClientCredentialsAuth`.

Secrets never sit in configuration: the models hold the *names* of environment variables, and
`resolve` reads them. Neither models, errors nor logs show a secret or a token.

Example (as a bridge TOML table)::

    [servers.remote.credentials]
    headers = { X-Team = "data" }

    [servers.remote.credentials.oauth]
    token_url = "https://auth.example.com/oauth/token"
    client_id = "datapulse-gateway"
    client_secret_env = "UPSTREAM_CLIENT_SECRET"
    scope = "mcp:tools"
    resource = "https://mcp.example.com/mcp"

Why not the SDK's ``mcp.client.auth.extensions.client_credentials.ClientCredentialsOAuthProvider``: it
is built around MCP authorization discovery and does not fit a gateway. It cannot be pointed at a
configured token endpoint (it finds one through the upstream's protected-resource metadata, RFC 9728,
and authorization-server metadata, RFC 8414, or falls back to ``{upstream origin}/token``), and only
after the upstream has answered a first request with 401. It sends its token requests through the
upstream's HTTP client, so that client's static headers (an API key meant for the upstream) would go
to the authorization server too. It holds one lock across the whole upstream exchange and sets
``requires_response_body``, so concurrent requests are serialized and streamed (SSE) responses are read
to the end before the caller sees them. Its expiry check uses the wall clock with no refresh margin and
no injectable clock, the ``resource`` it sends is derived from the upstream URL rather than configured,
and its scope is replaced by the scope of a ``WWW-Authenticate`` challenge. The grant itself is one form
POST, so `ClientCredentialsAuth` implements it directly.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import quote_plus, urlsplit

import anyio
import httpx2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from datapulse.auth.jwks import redact_url
from datapulse.bridge.environment import ENV_NAME
from datapulse.config import ConfigurationError

__all__ = [
    "ClientCredentialsAuth",
    "OAuthClientCredentials",
    "TokenEndpointAuthMethod",
    "UpstreamAuthError",
    "UpstreamCredentials",
    "resolve",
]

logger = logging.getLogger(__name__)

TokenEndpointAuthMethod = Literal["client_secret_basic", "client_secret_post"]

LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
"""Hosts a ``token_url`` may reach over plain http: the secret then never leaves the machine."""

_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2 token (a field name)
_FIELD_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 §5.5: no CTL but HTAB
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token
_MANAGED_HEADERS: Final = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "mcp-protocol-version",
        "mcp-session-id",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Header names the gateway's HTTP client and MCP transport set themselves (lowercase)."""

_ERROR_TEXT_LIMIT: Final = 300
_REDACTED: Final = "[redacted]"


def _no_control_characters(text: str) -> bool:
    return not any(ord(char) < 0x20 or ord(char) == 0x7F for char in text)


class OAuthClientCredentials(BaseModel):
    """The OAuth 2.1 client-credentials grant (RFC 6749 §4.4) for the gateway's upstream token.

    The gateway authenticates at ``token_url`` as a confidential client (RFC 6749 §2.3.1, with
    ``auth_method``) and sends the token it gets as ``Authorization: Bearer`` (RFC 6750 §2.1). Units are
    in the names (``_s``: seconds). Invalid values raise pydantic's ``ValidationError``; input values are
    left out of its messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    token_url: str = Field(
        description="The authorization server's token endpoint (RFC 6749 §3.2): https, or http on a loopback host."
    )
    client_id: str = Field(description="The gateway's client identifier at the authorization server.")
    client_secret_env: str = Field(
        description="NAME of the environment variable holding the client secret (the secret is never configured)."
    )
    scope: str | None = Field(
        default=None, description="Space-separated scopes to request (RFC 6749 §3.3); none: the client's default."
    )
    resource: str | None = Field(
        default=None,
        description="RFC 8707 resource indicator sent as 'resource': the upstream's canonical URI, an absolute URI.",
    )
    auth_method: TokenEndpointAuthMethod = Field(
        default="client_secret_basic",
        description="How the client authenticates: HTTP Basic ('client_secret_basic') or form fields "
        "('client_secret_post'), RFC 6749 §2.3.1.",
    )
    refresh_margin_s: float = Field(
        default=30.0, ge=0, description="A token is replaced this long before its expires_in runs out."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Time allowed for one token request, in all.")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "client_secret" in data:
            raise ValueError(
                "client_secret cannot be written in the configuration; put the secret in an environment "
                "variable and name that variable in client_secret_env"
            )
        return data

    @field_validator("token_url")
    @classmethod
    def _token_url_shape(cls, value: str) -> str:
        example = "e.g. https://auth.example.com/oauth/token"
        try:
            parts = urlsplit(value)
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
        except ValueError:
            raise ValueError(f"token_url is not a valid URL; give the token endpoint's address, {example}") from None
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "token_url must not carry a user name or password; the gateway authenticates with client_id "
                "and the secret in client_secret_env"
            )
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http") or not host:
            raise ValueError(f"token_url {value!r} must be an absolute https:// URL, {example}")
        if parts.fragment:
            raise ValueError(f"token_url {value!r} must not have a fragment ('#...', RFC 6749 §3.2)")
        if scheme == "http" and host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"token_url {value!r} uses plain http to {host!r}, which would send the client secret in clear "
                "text; use https (http is allowed only for localhost, 127.0.0.1 and ::1)"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("client_id must not be empty")
        if not _no_control_characters(value):
            raise ValueError("client_id must not contain control characters")
        return value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not ENV_NAME.fullmatch(value):
            raise ValueError(
                "client_secret_env is not an environment variable name (letters, digits, '_'; no leading digit); "
                "it names the variable holding the secret, it does not hold the secret (the value is not shown)"
            )
        return value

    @field_validator("scope")
    @classmethod
    def _scope_tokens(cls, value: str | None) -> str | None:
        if value is None:
            return None
        tokens = value.split()
        if not tokens:
            raise ValueError("scope must not be empty; leave it out to get the client's default scope")
        if bad := [token for token in tokens if not _SCOPE_TOKEN.fullmatch(token)]:
            raise ValueError(
                f"scope {bad[0]!r} has a character a scope cannot have (RFC 6749 §3.3: printable ASCII "
                "except '\"' and '\\'); separate scopes with spaces"
            )
        return " ".join(tokens)

    @field_validator("resource")
    @classmethod
    def _resource_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if parts is None or not parts.scheme or not (parts.netloc or parts.path) or not _no_control_characters(value):
            raise ValueError(
                f"resource {value!r} must be an absolute URI (RFC 8707 §2), the upstream's canonical address, "
                "e.g. https://mcp.example.com/mcp"
            )
        if "#" in value:
            raise ValueError(f"resource {value!r} must not have a fragment ('#...', RFC 8707 §2)")
        return value


class UpstreamCredentials(BaseModel):
    """How the gateway authenticates to its upstream: static headers, plus at most one of a bearer token
    from the environment (``bearer_env``) or the client-credentials grant (``oauth``).

    Invalid values raise pydantic's ``ValidationError``; input values are left out of its messages.
    `resolve` turns a validated instance into headers and an ``httpx2.Auth``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description="Headers sent on every upstream request, e.g. an API key (prefer bearer_env for secrets).",
    )
    bearer_env: str | None = Field(
        default=None,
        description="NAME of an environment variable whose value is sent as 'Authorization: Bearer <value>'.",
    )
    oauth: OAuthClientCredentials | None = Field(
        default=None, description="Get the token with the OAuth client-credentials grant (RFC 6749 §4.4)."
    )

    @field_validator("headers")
    @classmethod
    def _header_fields(cls, value: dict[str, str]) -> dict[str, str]:
        seen: dict[str, str] = {}
        for name, content in value.items():
            if not _HTTP_TOKEN.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} is not an HTTP field name (RFC 9110 §5.6.2: letters, digits and "
                    "!#$%&'*+-.^_`|~; no spaces or ':')"
                )
            lower = name.lower()
            if lower in _MANAGED_HEADERS:
                raise ValueError(f"header {name!r} is set by the gateway itself; remove it from headers")
            if lower in seen:
                raise ValueError(f"headers {seen[lower]!r} and {name!r} are the same header; keep one")
            seen[lower] = name
            if _FIELD_VALUE_FORBIDDEN.search(content):
                raise ValueError(f"the value of header {name!r} contains a line break or control character")
        return value

    @field_validator("bearer_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            raise ValueError(
                "bearer_env is not an environment variable name (letters, digits, '_'; no leading digit); it "
                "names the variable holding the token, it does not hold the token (the value is not shown)"
            )
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> UpstreamCredentials:
        if self.bearer_env is not None and self.oauth is not None:
            raise ValueError("set either bearer_env or oauth, not both: each provides the Authorization header")
        if self.bearer_env is not None or self.oauth is not None:
            source = "bearer_env" if self.bearer_env is not None else "oauth"
            if any(name.lower() == "authorization" for name in self.headers):
                raise ValueError(
                    f"headers must not set Authorization when {source} is set ({source} sends its own); "
                    "remove Authorization from headers"
                )
        return self


def resolve(
    credentials: UpstreamCredentials | None,
    environ: Mapping[str, str],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[dict[str, str], httpx2.Auth | None]:
    """The headers and auth handler that put ``credentials`` on upstream requests.

    Args:
        credentials: The configured credentials; ``None`` means none.
        environ: Where the variables named by ``bearer_env`` and ``oauth.client_secret_env`` are read
            (``os.environ`` in production).
        clock: Passed to `ClientCredentialsAuth` (seconds, monotonic).

    Returns:
        ``(headers, auth)``: a new dict of the static headers, plus ``Authorization: Bearer <token>`` for
        ``bearer_env`` (the value with surrounding whitespace removed); and a `ClientCredentialsAuth` for
        ``oauth``, else ``None``. The caller owns the auth handler and closes it with ``aclose()``.

    Raises:
        ConfigurationError: a named variable is unset or empty, or the bearer token has whitespace or
            control characters inside it. The message names the variable, never its value.
    """
    if credentials is None:
        return {}, None
    headers = dict(credentials.headers)
    auth: httpx2.Auth | None = None
    if credentials.bearer_env is not None:
        token = _variable(environ, credentials.bearer_env, "bearer_env", "the upstream's access token").strip()
        if any(char.isspace() for char in token) or not _no_control_characters(token):
            raise ConfigurationError(
                f"upstream credentials: environment variable {credentials.bearer_env} (bearer_env) has whitespace "
                "or control characters inside the token; it must hold the token alone"
            )
        headers["Authorization"] = f"Bearer {token}"
    if credentials.oauth is not None:
        oauth = credentials.oauth
        secret = _variable(
            environ, oauth.client_secret_env, "oauth.client_secret_env", f"the client secret of {oauth.client_id!r}"
        )
        auth = ClientCredentialsAuth(oauth, secret, clock=clock)
    return headers, auth


def _variable(environ: Mapping[str, str], name: str, key: str, holds: str) -> str:
    value = environ.get(name)
    if value is None:
        raise ConfigurationError(
            f"upstream credentials: environment variable {name} ({key}) is not set; set it to {holds}"
        )
    if not value.strip():
        raise ConfigurationError(
            f"upstream credentials: environment variable {name} ({key}) is empty; set it to {holds}"
        )
    return value


class UpstreamAuthError(RuntimeError):
    """The gateway could not get an access token for its upstream from the token endpoint.

    The message names the token endpoint and client, says what went wrong and what to check, and includes
    the endpoint's ``error`` and ``error_description`` (RFC 6749 §5.2) when it sent them; never the secret
    or a token.

    Attributes:
        status_code: The token endpoint's HTTP status, or ``None`` when it gave no answer.
        error: The endpoint's ``error`` code (``"invalid_client"``, ...), if any.
    """

    def __init__(self, message: str, *, status_code: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = error


@dataclass(frozen=True, slots=True)
class _Token:
    value: str = field(repr=False)
    refresh_at: float | None
    """Clock time from which the token is replaced before use; ``None``: kept until the upstream rejects it."""

    def usable(self, now: float) -> bool:
        return self.refresh_at is None or now < self.refresh_at


class ClientCredentialsAuth(httpx2.Auth):
    """An ``httpx2.Auth`` that sends an OAuth access token from the client-credentials grant.

    The token request (RFC 6749 §4.4.2) is a form POST to ``config.token_url`` with
    ``grant_type=client_credentials``, ``scope`` and ``resource`` (RFC 8707 §2) when configured, and the
    client authenticated per ``config.auth_method`` (RFC 6749 §2.3.1: Basic with the form-urlencoded id and
    secret, or ``client_id``/``client_secret`` form fields). It goes out on a client of its own (no redirects
    followed, bounded by ``config.timeout_s`` in all), never through the upstream client, so the upstream's
    headers do not reach the authorization server. The answer must be a JSON object (RFC 6749 §5.1) with an
    ``access_token``; a ``token_type`` other than Bearer is refused; ``expires_in`` (seconds) may be a number
    or a numeric string.

    Behaviour:

    - The token is cached and shared by all requests; one token request runs at a time, so many
      concurrent first requests cause one token request (and, if it fails, all of them fail with its error).
    - A token is replaced once ``expires_in - refresh_margin_s`` seconds have passed since it was requested
      (after ``expires_in / 2`` when ``expires_in`` is not more than the margin); without ``expires_in`` it
      is kept until the upstream answers 401.
    - An upstream 401 drops the token that was rejected, gets a new one (once, however many requests were
      rejected together, even when the endpoint issues the same value again), and sends the request again,
      once; a second 401 is returned to the caller as is.
    - A ``DELETE`` (closing an upstream session, MCP Streamable HTTP "Session Management") is not sent again
      after a 401: closing is best effort and the upstream forgets idle sessions itself, while the token it
      refused is usually one just fetched (the gateway closes a session because the upstream refused its
      credentials), so a refresh would only ask the token endpoint again for every closed session.
    - The request body is buffered (``requires_request_body``) so it can be sent again; response bodies are
      not (streamed SSE responses reach the caller as they arrive).

    Args:
        config: The grant's settings.
        client_secret: The client secret (from ``config.client_secret_env``, see `resolve`).
        clock: Monotonic time in seconds, for expiry (tests pass a fake one).
        http_client: The client for token requests, e.g. one with custom TLS settings; it should not
            follow redirects. Default: one created on first use and closed by `aclose`.

    Raises (from the request that needed a token):
        UpstreamAuthError: the token endpoint could not be reached, timed out, redirected, answered an
            error status, or gave no usable token.
    """

    requires_request_body = True

    def __init__(
        self,
        config: OAuthClientCredentials,
        client_secret: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        http_client: httpx2.AsyncClient | None = None,
    ) -> None:
        if not client_secret:
            raise ValueError("client_secret must not be empty")
        self._config = config
        self._secret = client_secret
        self._clock = clock
        self._client = http_client
        self._owns_client = http_client is None
        self._lock = anyio.Lock()
        self._token: _Token | None = None
        self._attempts = 0
        self._failure: UpstreamAuthError | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting for the access token another one is fetching now (0 when none is being fetched)."""
        return self._lock.statistics().tasks_waiting

    def __repr__(self) -> str:
        config = self._config
        return f"ClientCredentialsAuth(token_url={redact_url(config.token_url)!r}, client_id={config.client_id!r})"

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        """Send ``request`` with the current token; after a 401, once more with a new token."""
        await request.aread()  # buffered, so that it can be sent again after a 401
        token = await self._current()
        request.headers["Authorization"] = f"Bearer {token.value}"
        response = yield request
        if response.status_code != 401 or request.method == "DELETE":
            return
        logger.info(
            "upstream %s answered 401; getting a new access token from %s and sending the request again",
            request.url.host,
            redact_url(self._config.token_url),
        )
        token = await self._current(rejected=token)
        request.headers["Authorization"] = f"Bearer {token.value}"
        yield request

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        """Refused: the token cache and its lock are async; use ``httpx2.AsyncClient``."""
        raise RuntimeError("ClientCredentialsAuth works with httpx2.AsyncClient only")

    async def token(self, *, rejected: str | None = None) -> str:
        """The access token to send: the cached one while usable, else a new one from the token endpoint.

        Args:
            rejected: A token the upstream refused; it is dropped if still cached.

        Raises:
            UpstreamAuthError: see the class docstring.
        """
        cached = self._token
        dropped = cached if cached is not None and rejected is not None and cached.value == rejected else None
        return (await self._current(rejected=dropped)).value

    async def _current(self, *, rejected: _Token | None = None) -> _Token:
        """The cached token while usable and not ``rejected`` (the very token a refused request carried: a
        token fetched since then is used as is, whatever its value), else a new one; see `token`."""
        cached = self._token
        if cached is not None and cached is not rejected and cached.usable(self._clock()):
            return cached
        attempts = self._attempts
        async with self._lock:
            cached = self._token
            if cached is not None and cached is not rejected and cached.usable(self._clock()):
                return cached
            if self._attempts != attempts and self._failure is not None:
                # The request this caller waited for failed just now: share its error, do not repeat it.
                failure = self._failure
                raise UpstreamAuthError(str(failure), status_code=failure.status_code, error=failure.error)
            self._token = None
            self._attempts += 1
            try:
                fresh = await self._request_token()
            except UpstreamAuthError as exc:
                self._failure = exc
                raise
            self._failure = None
            self._token = fresh
            return fresh

    async def aclose(self) -> None:
        """Close the token client if this instance created it; the cached token is forgotten."""
        self._token = None
        if self._client is not None and self._owns_client:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> ClientCredentialsAuth:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(follow_redirects=False, timeout=self._config.timeout_s)
            self._owns_client = True
        return self._client

    async def _request_token(self) -> _Token:
        config = self._config
        data = {"grant_type": "client_credentials"}
        if config.scope is not None:
            data["scope"] = config.scope
        if config.resource is not None:
            data["resource"] = config.resource
        headers = {"Accept": "application/json"}
        if config.auth_method == "client_secret_basic":
            pair = f"{quote_plus(config.client_id, safe='')}:{quote_plus(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        else:
            data["client_id"] = config.client_id
            data["client_secret"] = self._secret
        started = self._clock()
        try:
            with anyio.fail_after(config.timeout_s):
                response = await self._http().post(
                    config.token_url, data=data, headers=headers, timeout=config.timeout_s
                )
        except (TimeoutError, httpx2.TimeoutException):
            raise self._error(f"no answer within {config.timeout_s:g} s (timeout_s); is the endpoint up?") from None
        except httpx2.HTTPError as exc:
            raise self._error(f"cannot reach it ({type(exc).__name__}: {self._scrub(str(exc))})") from None
        token, lifetime_s = self._parse(response)
        refresh_at: float | None = None
        if lifetime_s is not None:
            margin_s = config.refresh_margin_s
            refresh_at = started + (lifetime_s - margin_s if lifetime_s > margin_s else lifetime_s / 2)
        logger.debug(
            "got an upstream access token from %s for client %r (expires_in: %s)",
            redact_url(config.token_url),
            config.client_id,
            "not given" if lifetime_s is None else f"{lifetime_s:g} s",
        )
        return _Token(token, refresh_at)

    def _parse(self, response: httpx2.Response) -> tuple[str, float | None]:
        """The access token and its ``expires_in`` (seconds, ``None`` if not given) from a token response."""
        status = response.status_code
        if response.is_redirect:
            location = response.headers.get("Location", "")
            shown = redact_url(location) if location else "nowhere"
            raise self._error(
                f"HTTP {status} redirect to {shown}; set token_url to the final address (the credentials are "
                "not sent on to a redirect)",
                status_code=status,
            )
        try:
            body: object = response.json()
        except ValueError:
            body = None
        if not 200 <= status < 300:
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                raise self._refusal(status, body)
            snippet = self._scrub(response.text[:200]).strip()
            detail = f": {snippet!r}" if snippet else ""
            raise self._error(f"HTTP {status} with no OAuth error in the answer{detail}", status_code=status)
        if not isinstance(body, dict):
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise self._error(
                f"HTTP {status} but the answer is not a JSON object ({kind}); a token endpoint answers "
                "application/json (RFC 6749 §5.1)",
                status_code=status,
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise self._error(f"HTTP {status} but the answer has no access_token (RFC 6749 §5.1)", status_code=status)
        if any(char.isspace() for char in token) or not _no_control_characters(token):
            raise self._error(f"HTTP {status} but the access_token is not a bearer token (RFC 6750 §2.1)")
        token_type = body.get("token_type")
        if token_type is not None and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
            shown = self._scrub(str(token_type))[:40]
            raise self._error(
                f"the token endpoint issued a {shown!r} token; only Bearer tokens (RFC 6750) are supported",
                status_code=status,
            )
        return token, self._lifetime_s(body.get("expires_in"), status)

    def _lifetime_s(self, value: object, status: int) -> float | None:
        if value is None:
            return None
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            try:
                seconds = float(value)
            except ValueError:
                seconds = None
        if seconds is None or not math.isfinite(seconds) or seconds < 0:
            raise self._error(
                f"expires_in is {str(value)[:40]!r}, not a number of seconds (RFC 6749 §5.1)", status_code=status
            )
        return seconds

    def _refusal(self, status: int, body: Mapping[str, object]) -> UpstreamAuthError:
        code = self._scrub(str(body["error"]))[:80]
        description = body.get("error_description")
        detail = f"HTTP {status}, error {code!r}"
        if isinstance(description, str) and description.strip():
            detail += f": {self._scrub(description.strip())[:_ERROR_TEXT_LIMIT]}"
        if hint := self._hint(code):
            detail += f" ({hint})"
        return self._error(detail, status_code=status, error=code)

    def _hint(self, code: str) -> str:
        config = self._config
        if code == "invalid_client":
            other = "client_secret_post" if config.auth_method == "client_secret_basic" else "client_secret_basic"
            return (
                f"check client_id, the secret in ${config.client_secret_env}, and auth_method: it is "
                f"{config.auth_method!r}, the server may expect {other!r}"
            )
        if code == "unauthorized_client":
            return "the authorization server does not allow this client the client_credentials grant; enable it"
        if code == "unsupported_grant_type":
            return "this endpoint does not offer the client_credentials grant; check token_url"
        if code == "invalid_scope":
            return f"check scope (now {config.scope!r})"
        if code == "invalid_target":
            return f"check resource (now {config.resource!r}, RFC 8707 §2)"
        return ""

    def _error(self, detail: str, *, status_code: int | None = None, error: str | None = None) -> UpstreamAuthError:
        config = self._config
        message = (
            f"cannot get an access token for the upstream from {redact_url(config.token_url)} "
            f"(client_id {config.client_id!r}): {detail}"
        )
        return UpstreamAuthError(message, status_code=status_code, error=error)

    def _scrub(self, text: str) -> str:
        """``text`` without the client secret (as is or form-encoded), should a server echo it back."""
        for form in {self._secret, quote_plus(self._secret, safe="")}:
            text = text.replace(form, _REDACTED)
        return text
