"""Settings: every knob of a DataPulse server, from arguments, environment or a `.env` file.

Environment variables are ``DATAPULSE_<FIELD>`` (``DATAPULSE_PORT=9000``); list fields take
comma-separated values. The seed project's names are honoured as aliases:
``LOCAL_BEARER_TOKEN`` for ``DATAPULSE_TOKEN``. Units are in the names (``_s``, ``_ms``,
``_bytes``). Invalid values fail at load with a message naming the field.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from datapulse.cluster.redis_url import check_redis_url

CommaList = Annotated[list[str], NoDecode]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ConfigurationError(ValueError):
    """The settings cannot produce a working server (the message says what to change)."""


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _readable_file(path: str | None) -> str | None:
    """``path`` when it names a regular file this process can read (None stays None).

    Raises:
        ValueError: no such file, not a regular file, or not readable (the message says which).
    """
    if path is None:
        return None
    file = Path(path)
    if not file.exists():
        raise ValueError(f"no such file: {path!r}")
    if not file.is_file():
        raise ValueError(f"not a file: {path!r}")
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return path


def _check_tls_files(certfile: str, keyfile: str, password: str | None) -> None:
    """Load the certificate and key as uvicorn will, so a bad pair fails at load with a message, not at start-up
    with a traceback. An encrypted key without a password fails here (OpenSSL would prompt on the terminal).

    Raises:
        ValueError: no PEM certificate in ``certfile``; ``keyfile`` unreadable as a key (or the password is wrong);
            or the key is not the certificate's.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=certfile)
    except ssl.SSLError:
        raise ValueError(f"--ssl-certfile {certfile!r} holds no PEM certificate") from None
    try:
        context.load_cert_chain(certfile, keyfile, password if password is not None else lambda: "")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(
                f"--ssl-keyfile {keyfile!r} is not the private key of the certificate in --ssl-certfile {certfile!r}"
            ) from None
        raise ValueError(
            f"--ssl-keyfile {keyfile!r} cannot be loaded: not a PEM private key, or an encrypted one and "
            "--ssl-keyfile-password is missing or wrong"
        ) from None


class Settings(BaseSettings):
    """DataPulse server settings (see each field's description; ``datapulse serve --help`` shows them all)."""

    model_config = SettingsConfigDict(env_prefix="DATAPULSE_", extra="ignore", populate_by_name=True, frozen=True)

    # --- what to serve -------------------------------------------------------------------------------------------
    app: str | None = Field(
        default=None,
        description="The MCP server to serve, as 'module:attribute' naming an SDK MCPServer or low-level Server. "
        "Empty: the built-in demo server.",
    )

    # --- listening -------------------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Interface to bind. Non-loopback needs auth.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port to bind (0 picks a free one).")
    root_path: str = Field(default="", description="Path prefix the server is mounted under (behind a proxy).")
    public_url: str | None = Field(
        default=None,
        description="Base URL clients use (printed in the banner; behind a proxy, the proxy's URL, e.g. "
        "https://mcp.example.com). Default: http://HOST:PORT, https:// with --ssl-certfile.",
    )

    # --- TLS (HTTPS served directly) -----------------------------------------------------------------------------
    ssl_certfile: str | None = Field(
        default=None,
        description="Serve HTTPS with this PEM certificate file (the server's certificate first, then any "
        "intermediates). Needs --ssl-keyfile. Empty: plain HTTP (e.g. behind a TLS-terminating proxy).",
    )
    ssl_keyfile: str | None = Field(
        default=None,
        validate_default=True,  # so a certificate without a key is refused by name
        description="The PEM private key file of --ssl-certfile. Needs --ssl-certfile.",
    )
    ssl_keyfile_password: SecretStr | None = Field(
        default=None,
        description="Password of an encrypted --ssl-keyfile (never prompted for: an encrypted key without it is "
        "refused at start).",
    )

    # --- auth --------------------------------------------------------------------------------------------------
    token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("token", "DATAPULSE_TOKEN", "LOCAL_BEARER_TOKEN"),
        description="A single static bearer token (principal 'local'). Alias: LOCAL_BEARER_TOKEN.",
    )
    tokens: SecretStr | None = Field(
        default=None,
        description="Static bearer tokens as 'principal:token,principal:token'.",
    )
    insecure_no_auth: bool = Field(
        default=False, description="Serve without authentication. Refused on non-loopback hosts unless set."
    )

    # --- JWT bearer tokens (OAuth 2.1 resource server) -------------------------------------------------------------
    jwt_issuer: str | None = Field(
        default=None,
        validation_alias=AliasChoices("jwt_issuer", "DATAPULSE_JWT_ISSUER", "JWT_ISSUER"),
        description="Accept JWTs from this issuer (exact 'iss'). Its keys come from JWT_KEY, DATAPULSE_JWKS_URL, "
        "or are discovered from the issuer (OpenID / RFC 8414 metadata -> jwks_uri). Alias: JWT_ISSUER.",
    )
    jwt_audience: CommaList = Field(
        default_factory=list,
        validation_alias=AliasChoices("jwt_audience", "DATAPULSE_JWT_AUDIENCE", "JWT_AUDIENCE"),
        description="Accepted 'aud' values (RFC 8707 resource), comma-separated. Default: this server's resource "
        "URLs (PUBLIC_URL + /mcp and /sse). Alias: JWT_AUDIENCE.",
    )
    jwt_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("jwt_key", "DATAPULSE_JWT_KEY", "JWT_KEY"),
        description="The issuer's public key as PEM text or a path to a PEM file (no JWKS fetching). Alias: JWT_KEY.",
    )
    jwks_url: str | None = Field(default=None, description="The issuer's JWKS URL (skips discovery).")
    jwt_algorithms: CommaList = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"],
        description="Accepted JWT signature algorithms (asymmetric only; 'none' and HS* are always refused).",
    )
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat, seconds.")
    jwks_cache_ttl_s: float = Field(default=600.0, gt=0, description="Seconds before the JWKS is fetched again.")
    jwks_refresh_min_interval_s: float = Field(
        default=30.0, ge=0, description="An unknown 'kid' refetches the JWKS at most once per this many seconds."
    )
    jwks_timeout_s: float = Field(default=5.0, gt=0, description="Bound on one discovery or JWKS fetch, seconds.")
    authorization_servers: CommaList = Field(
        default_factory=list,
        description="Authorization servers listed in the protected-resource metadata (RFC 9728). Default: the JWT "
        "issuer.",
    )
    required_scopes: CommaList = Field(
        default_factory=list,
        description="Scopes every request needs (else 403 insufficient_scope). Static tokens hold every scope.",
    )
    scopes: str | None = Field(
        default=None,
        description="Scopes per tool, resource and prompt: 'tool:admin_*=admin;resource:file:///secret/*=secret "
        "read;prompt:*=prompts' (globs; the first matching rule of a kind applies; space-separated scopes are all "
        "needed). Items a principal lacks scopes for are hidden from lists and refused.",
    )

    # --- rate limits and caps -------------------------------------------------------------------------------------
    rate_limit: str | None = Field(
        default=None,
        description="Requests per principal, in the 'limits' notation: '60/minute' or '10/second;1000/hour'. "
        "Over it: 429 with Retry-After. Shared across instances in cluster mode.",
    )
    tool_rate_limits: str | None = Field(
        default=None,
        description="tools/call limits per principal and tool: 'search=10/minute,fetch_*=5/minute;100/hour' "
        "(globs, first match wins).",
    )
    max_streams_per_principal: int | None = Field(
        default=1_000,
        ge=1,
        description="Concurrent SSE streams (GET /sse, /events, /mcp) per principal, per instance (like "
        "max_sessions_per_principal: one stream per session).",
    )
    stream_ticket_ttl_s: float = Field(
        default=60.0, gt=0, le=600, description="Lifetime of a single-use stream ticket (POST /tickets), seconds."
    )

    # --- dashboard -------------------------------------------------------------------------------------------------
    dashboard: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="The web console at /dashboard (and its API): auto = on when listening on loopback only.",
    )
    dashboard_ticket_ttl_s: float = Field(
        default=900.0,
        gt=0,
        le=86_400,
        description="Lifetime of a dashboard ticket (what the dashboard's sign-in exchanges a token for), seconds.",
    )
    dashboard_admins: CommaList = Field(
        default_factory=lambda: ["local"],
        description="Principals who see every principal's sessions, audit records and frames on the dashboard "
        "(besides tokens with the scope datapulse:admin). Default: local (the principal of DATAPULSE_TOKEN).",
    )
    dashboard_watch_queue_max_frames: int = Field(
        default=1000,
        ge=1,
        description="Frames queued per watcher of a session (beyond, frames are dropped and counted, never slowing "
        "the session).",
    )

    # --- browsers --------------------------------------------------------------------------------------------------
    cors_origins: CommaList = Field(
        default_factory=list,
        description="Origins allowed to call the MCP endpoints from a browser (CORS), e.g. 'https://app.example.com'; "
        "'*' for any. Empty: CORS off.",
    )

    # --- DNS rebinding / proxies ----------------------------------------------------------------------------------
    allowed_hosts: CommaList = Field(
        default_factory=list,
        description="Host header values accepted ('example.com', 'example.com:*', '*'). Empty: loopback names "
        "when bound to loopback; any host otherwise (auth is required there).",
    )
    allowed_origins: CommaList = Field(
        default_factory=list,
        description="Origin header values accepted besides same-origin and loopback ('https://app.example.com').",
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="Proxy addresses or CIDRs whose X-Forwarded-Host/-Proto are believed (what uvicorn calls "
        "--forwarded-allow-ips; '*' is not accepted). Empty: those headers are ignored.",
    )

    # --- sessions and streams -------------------------------------------------------------------------------------
    session_idle_ttl_s: float = Field(default=3600.0, gt=0, description="Idle session lifetime in seconds.")
    max_sessions: int = Field(default=10_000, ge=1, description="Open sessions per process, all transports.")
    max_sessions_per_principal: int = Field(default=1_000, ge=1, description="Open sessions per principal.")
    keepalive_interval_s: float = Field(default=15.0, gt=0, description="Seconds between ': ping' SSE comments.")
    fast_path: bool = Field(
        default=True,
        description="Serve tools/call, tools/list, resources/read, prompts/get and ping of an MCPServer's items that "
        "read no request context with the least work (datapulse.fastpath; the same responses); for proxy, forward a "
        "2026-07-28 upstream's tools/call, resources/read and prompts/get from 2026-07-28 clients as one HTTP exchange "
        "(datapulse.bridge.passthrough; the same responses). false: every request takes the SDK's full handler chain "
        "(for debugging).",
    )
    gc_gen0_threshold: int = Field(
        default=20_000,
        ge=100,
        description="The cyclic garbage collector's first-generation threshold in a served process (datapulse serve, "
        "proxy, bridge): container objects allocated, net of those freed, between young collections. Python's "
        "default is 700, which under load runs a young collection every request or two; nearly everything a request "
        "allocates is freed by reference counting, so fewer, larger passes do the same work cheaper. 700 restores "
        "Python's default.",
    )
    retry_ms: int = Field(default=3000, ge=0, description="SSE 'retry:' reconnect hint sent to clients, in ms.")
    outbound_queue_max_messages: int = Field(
        default=256, ge=1, description="Per-session messages buffered for a stream before backpressure."
    )
    slow_client_timeout_s: float = Field(
        default=30.0, gt=0, description="A client that reads nothing for this long is disconnected."
    )
    server_request_timeout_s: float = Field(
        default=300.0, gt=0, description="How long a server-to-client request (sampling, elicitation) may wait."
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    graceful_shutdown_timeout_s: float = Field(
        default=10.0, ge=0, description="Bound on draining open streams and requests at shutdown."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Worker processes sharing the port (datapulse serve). More than 1 needs cluster mode "
        "(--redis-url): any worker may receive any request of a session.",
    )

    # --- cluster mode (Redis) -------------------------------------------------------------------------------------
    redis_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("redis_url", "DATAPULSE_REDIS_URL", "REDIS_URL"),
        description="Cluster mode: redis://, rediss:// or unix:// URL (may carry a password) shared by every "
        "instance, or a Redis Sentinel URL redis+sentinel://[:password@]host:26379,host:26379/service_name[/db] "
        "(rediss+sentinel:// for TLS). Empty: single-process mode. Alias: REDIS_URL.",
    )
    redis_key_prefix: str = Field(
        default="dp", pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Prefix of every Redis key and channel."
    )
    redis_timeout_s: float = Field(
        default=2.0, gt=0, description="Bound on one Redis command; past it the request fails with 503."
    )
    node_heartbeat_ttl_s: float = Field(
        default=5.0, ge=1, description="An instance whose heartbeat is older than this is dead (failover)."
    )
    forward_timeout_s: float = Field(
        default=5.0, gt=0, description="How long a forwarded request waits for the owning instance to answer."
    )
    event_history_ttl_s: float = Field(
        default=3600.0, gt=0, description="Cluster mode: how long a session's stored SSE events stay resumable."
    )
    request_state_keys: SecretStr | None = Field(
        default=None,
        description="requestState sealing keys (multi-round-trip requests), comma-separated, each >= 32 bytes; "
        "the first seals, all unseal (rotation: 'new,old'). Required in cluster mode so any instance unseals.",
    )
    request_state_audience: str | None = Field(
        default=None, description="Audience sealed into requestState; default: the MCP server's name."
    )

    # --- built-in demo tools --------------------------------------------------------------------------------------
    fetch_timeout_s: float = Field(default=5.0, gt=0, description="fetch_url: whole-request timeout in seconds.")
    fetch_max_bytes: int = Field(default=1024 * 1024, ge=1, description="fetch_url: most bytes read per response.")
    fetch_allowlist: CommaList = Field(
        default_factory=list,
        description="fetch_url: hosts or CIDRs allowed even though private/loopback (e.g. '10.0.0.0/8').",
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="Log lines: JSON, console, or auto (JSON unless stderr is a terminal)."
    )

    # --- operations -------------------------------------------------------------------------------------------------
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otlp_endpoint", "DATAPULSE_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Export traces to this OTLP/HTTP collector (http://collector:4318). Empty: no export. "
        "Alias: OTEL_EXPORTER_OTLP_ENDPOINT.",
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without auth (for a scraper on a private network)."
    )
    audit_sinks: str | None = Field(
        default=None,
        description="Audit log sinks, comma-separated: 'stdout', 'file:/path/audit.jsonl' (rotated by size), "
        "'redis' (a Redis stream, cluster mode). Empty: no audit log.",
    )
    audit_include_arguments: bool = Field(
        default=False, description="Audit records carry tool arguments (secret-named keys redacted), not only a digest."
    )
    audit_file_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="Audit file size before rotation.")

    @field_validator(
        "allowed_hosts",
        "allowed_origins",
        "trusted_proxies",
        "fetch_allowlist",
        "jwt_audience",
        "jwt_algorithms",
        "authorization_servers",
        "required_scopes",
        "cors_origins",
        mode="before",
    )
    @classmethod
    def _comma_lists(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_proxies: {item!r} is not an IP address or CIDR") from exc
        return value

    @field_validator("ssl_certfile", "ssl_keyfile", "ssl_keyfile_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("ssl_certfile")
    @classmethod
    def _certfile_readable(cls, value: str | None) -> str | None:
        return _readable_file(value)

    @field_validator("ssl_keyfile")
    @classmethod
    def _keyfile_pairs_with_certfile(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "ssl_certfile" in info.data:  # absent when the certificate was refused; that error says why
            certfile = info.data["ssl_certfile"]
            both = "give both or neither (DATAPULSE_SSL_CERTFILE, DATAPULSE_SSL_KEYFILE)"
            if certfile is not None and value is None:
                raise ValueError(f"required with --ssl-certfile: {both}")
            if certfile is None and value is not None:
                raise ValueError(f"given without --ssl-certfile: {both}")
        return _readable_file(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            check_redis_url(value.get_secret_value())
        return value

    @field_validator("root_path")
    @classmethod
    def _root_path_shape(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("root_path must start with '/'")
        return value

    @model_validator(mode="after")
    def _auth_required_off_loopback(self) -> Settings:
        if self.host not in LOOPBACK_HOSTS and self.insecure_no_auth and self.auth_enabled:
            raise ValueError("insecure_no_auth conflicts with configured tokens or JWT issuer; choose one")
        return self

    @model_validator(mode="after")
    def _tls_files_load(self) -> Settings:
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            password = self.ssl_keyfile_password
            secret = password.get_secret_value() if password is not None else None
            _check_tls_files(self.ssl_certfile, self.ssl_keyfile, secret)
        return self

    @property
    def has_static_tokens(self) -> bool:
        """Whether any static bearer token is configured."""
        return self.token is not None or self.tokens is not None

    @property
    def jwt(self) -> bool:
        """Whether JWT bearer tokens are accepted (``jwt_issuer`` set)."""
        return bool(self.jwt_issuer)

    @property
    def auth_enabled(self) -> bool:
        """Whether requests must authenticate (static tokens or JWT)."""
        return self.has_static_tokens or self.jwt

    @property
    def cluster(self) -> bool:
        """Whether cluster mode (Redis) is on."""
        return self.redis_url is not None and bool(self.redis_url.get_secret_value())

    @property
    def tls(self) -> bool:
        """Whether DataPulse serves HTTPS itself (``ssl_certfile`` and ``ssl_keyfile`` set)."""
        return self.ssl_certfile is not None

    @property
    def dashboard_enabled(self) -> bool:
        """Whether /dashboard is served: ``on``, or ``auto`` while listening on loopback only."""
        return self.dashboard == "on" or (self.dashboard == "auto" and self.is_loopback)

    @property
    def is_loopback(self) -> bool:
        """Whether the bind host is a loopback interface."""
        return self.host in LOOPBACK_HOSTS

    @property
    def base_url(self) -> str:
        """The URL clients use to reach the server, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{self.root_path}"
