"""OAuth 2.0 Protected Resource Metadata (RFC 9728) and the ``WWW-Authenticate`` challenges that point to it.

MCP servers MUST publish this document so clients find the authorization server (MCP authorization,
"Authorization Server Discovery"). It is served without authentication at
``/.well-known/oauth-protected-resource`` and at the path-aware locations of the MCP endpoints
(``/.well-known/oauth-protected-resource/mcp`` and ``.../sse``; RFC 9728 §3.1 inserts the well-known
segment between the host and the resource's path). Every 401 and 403 from DataPulse names it in
``resource_metadata`` (RFC 9728 §5.1), with ``scope`` when scopes are required (RFC 6750 §3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"
RESOURCE_PATHS = ("", "/mcp", "/sse")
"""Resource paths with a metadata document: the server root, Streamable HTTP, HTTP+SSE."""


def _quote(value: str) -> str:
    """An RFC 9110 quoted-string (auth-param values here never hold control characters)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class ProtectedResource:
    """How this server describes itself as an OAuth protected resource.

    Attributes:
        public_url: the base URL clients use (``DATAPULSE_PUBLIC_URL``), or None to derive it from each
            request's scheme and (trusted) Host.
        root_path: the path prefix the server is mounted under.
        authorization_servers: issuer URLs clients may get tokens from (may be empty: static tokens only).
        scopes_supported: scopes a client should ask for (RFC 9728 ``scopes_supported``).
        required_scopes: scopes every request needs; named in 401 challenges.
        resource_name: human-readable name (the MCP server's name).
    """

    public_url: str | None
    root_path: str
    authorization_servers: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    required_scopes: tuple[str, ...]
    resource_name: str

    def base_url(self, scheme: str, host: str) -> str:
        """The server's base URL as the client sees it (no trailing slash)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{scheme}://{host}{self.root_path}"

    def metadata_url(self, base_url: str, resource_path: str = "/mcp") -> str:
        """The path-aware metadata URL of the resource ``base_url + resource_path`` (RFC 9728 §3.1)."""
        parts = urlsplit(base_url)
        return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{parts.path.rstrip('/')}{resource_path}"

    def served_paths(self) -> dict[str, str]:
        """Request path (relative to the app) → resource path, for every metadata location served."""
        paths = {f"{WELL_KNOWN}{resource}": resource for resource in RESOURCE_PATHS}
        if self.root_path:  # the RFC location of a prefixed resource, when the proxy forwards it to us
            paths.update({f"{WELL_KNOWN}{self.root_path}{resource}": resource for resource in RESOURCE_PATHS})
        return paths

    def document(self, base_url: str, resource_path: str) -> dict[str, Any]:
        """The RFC 9728 §2 metadata of the resource ``base_url + resource_path``."""
        doc: dict[str, Any] = {"resource": base_url + resource_path}
        if self.authorization_servers:
            doc["authorization_servers"] = list(self.authorization_servers)
        if self.scopes_supported:
            doc["scopes_supported"] = list(self.scopes_supported)
        doc["bearer_methods_supported"] = ["header"]
        doc["resource_name"] = self.resource_name
        return doc

    def challenge(
        self,
        base_url: str,
        *,
        error: str | None = None,
        description: str | None = None,
        scopes: Sequence[str] = (),
    ) -> str:
        """A ``WWW-Authenticate: Bearer ...`` value (RFC 6750 §3, RFC 9728 §5.1).

        Args:
            base_url: from `base_url`.
            error: ``invalid_token``, ``insufficient_scope``, or None when no credentials were sent.
            description: ``error_description`` (a sentence without the token).
            scopes: the ``scope`` to request; default: the required scopes.
        """
        params = ['realm="datapulse"']
        if error:
            params.append(f"error={_quote(error)}")
        if description:
            params.append(f"error_description={_quote(description)}")
        scope = " ".join(scopes or self.required_scopes)
        if scope:
            params.append(f"scope={_quote(scope)}")
        params.append(f"resource_metadata={_quote(self.metadata_url(base_url))}")
        return "Bearer " + ", ".join(params)
