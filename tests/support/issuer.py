"""A real local OAuth / OpenID Connect issuer for tests: real keys, real HTTP, no mocks.

`LocalIssuer` holds signing keys (RSA 2048, EC P-256, Ed25519, made with ``cryptography``), signs
tokens with PyJWT, and, while `LocalIssuer.serving`, answers on a free loopback port under uvicorn
(inside the test's event loop):

- ``{url}/jwks.json``: the published keys (RFC 7517 §5), counted in ``jwks_fetches``;
- ``{url}/.well-known/openid-configuration`` (OIDC Discovery §4) when ``openid``;
- ``/.well-known/oauth-authorization-server{path}`` (RFC 8414 §3.1) when ``oauth_metadata``.

Knobs for failure tests: ``jwks_status`` (answer that status instead of the keys), ``jwks_body``
(answer these bytes instead of the keys), ``stall_jwks``
(never answer until the issuer stops), ``metadata_issuer`` (claim another issuer in the metadata).
"""

from __future__ import annotations

import datetime
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import jwt
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.servers import ReadyServer

KeyKind = Literal["RSA", "EC", "OKP"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

DEFAULT_AUDIENCE = "https://mcp.example.test/mcp"
DEFAULT_SCOPE = "tools:read tools:call"
STARTUP_TIMEOUT_S = 10.0
SHUTDOWN_TIMEOUT_S = 5
NATURAL_ALG: dict[KeyKind, str] = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@dataclass
class IssuerKey:
    """One signing key of the issuer and how it is published."""

    kid: str
    kind: KeyKind
    private_key: PrivateKey
    published: bool = True
    use: str | None = "sig"
    publish_alg: bool = True

    @property
    def alg(self) -> str:
        return NATURAL_ALG[self.kind]

    def jwk(self) -> dict[str, Any]:
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        jwk["kid"] = self.kid
        if self.use is not None:
            jwk["use"] = self.use
        if self.publish_alg:
            jwk["alg"] = self.alg
        return jwk


def generate_key(kind: KeyKind) -> PrivateKey:
    """A fresh RSA 2048, EC P-256 or Ed25519 private key."""
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


class LocalIssuer:
    """An issuer's keys and metadata; served over HTTP while `serving` is entered.

    Args:
        audience: default ``aud`` of signed tokens.
        path: issuer path component (``/tenant1``), to exercise RFC 8414 path insertion.
        origin: ``scheme://host:port`` used before serving (e.g. for static-key tests); replaced
            by the real loopback address while serving.
        openid: serve ``/.well-known/openid-configuration``.
        oauth_metadata: serve ``/.well-known/oauth-authorization-server``.
    """

    def __init__(
        self,
        *,
        audience: str = DEFAULT_AUDIENCE,
        path: str = "",
        origin: str = "http://issuer.invalid",
        openid: bool = True,
        oauth_metadata: bool = True,
    ) -> None:
        self.audience = audience
        self.path = path.rstrip("/")
        self.origin = origin
        self.openid = openid
        self.oauth_metadata = oauth_metadata
        self.metadata_issuer: str | None = None
        self.jwks_status = 200
        self.jwks_body: bytes | None = None
        self.stall_jwks = False
        self.jwks_fetches = 0
        self.metadata_requests: list[str] = []
        self.keys: dict[str, IssuerKey] = {}
        self.default_kid: str | None = None
        self._counter = itertools.count(1)
        self._release: anyio.Event | None = None

    @property
    def url(self) -> str:
        """The issuer identifier (the ``iss`` of its tokens)."""
        return f"{self.origin}{self.path}"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"

    def add_key(
        self,
        kind: KeyKind,
        kid: str | None = None,
        *,
        use: str | None = "sig",
        publish_alg: bool = True,
        published: bool = True,
    ) -> str:
        """Generate a key, publish it in the JWKS (unless ``published`` is False) and return its kid.
        The first key added is the default signing key."""
        kid = kid or f"{kind.lower()}-{next(self._counter)}"
        self.keys[kid] = IssuerKey(kid, kind, generate_key(kind), published, use, publish_alg)
        if self.default_kid is None:
            self.default_kid = kid
        return kid

    def remove_key(self, kid: str) -> None:
        """Stop publishing ``kid`` (tokens can still be signed with it)."""
        self.keys[kid].published = False

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys.values() if key.published]}

    def public_pem(self, kid: str) -> str:
        public = self.keys[kid].private_key.public_key()
        return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def private_pem(self, kid: str) -> str:
        private = self.keys[kid].private_key
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return pem.decode()

    def certificate_pem(self, kid: str) -> str:
        """A self-signed X.509 certificate for ``kid``'s key, valid for a day."""
        key = self.keys[kid]
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"test issuer {kid}")])
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        digest = None if key.kind == "OKP" else hashes.SHA256()
        return builder.sign(key.private_key, digest).public_bytes(serialization.Encoding.PEM).decode()

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        alg: str | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """A signed JWT.

        Args:
            claims: the whole payload; by default ``iss``=url, ``aud``=audience, ``sub``="alice",
                ``iat``=now, ``exp``=now+300, ``scope``=`DEFAULT_SCOPE`.
            kid: the signing key (default: the first key added); also the header ``kid``.
            alg: the JWS algorithm (default: the key's natural one: RS256, ES256, EdDSA).
            headers: extra or replacement header fields; a None value removes the field (``kid``).
            overrides: claims to set on the payload; a None value removes the claim.
        """
        key = self.keys[kid or self._default()]
        now = int(time.time())
        payload: dict[str, Any] = (
            dict(claims)
            if claims is not None
            else {"iss": self.url, "aud": self.audience, "sub": "alice", "iat": now, "exp": now + 300}
        )
        if claims is None:
            payload["scope"] = DEFAULT_SCOPE
        for name, value in overrides.items():
            if value is None:
                payload.pop(name, None)
            else:
                payload[name] = value
        header: dict[str, Any] = {"kid": key.kid, **(headers or {})}
        header = {name: value for name, value in header.items() if value is not None}
        return jwt.encode(payload, key.private_key, algorithm=alg or key.alg, headers=header)

    def _default(self) -> str:
        if self.default_kid is None:
            raise RuntimeError("the issuer has no key: call add_key first")
        return self.default_kid

    def metadata(self) -> dict[str, Any]:
        return {
            "issuer": self.metadata_issuer or self.url,
            "jwks_uri": self.jwks_url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        if path == f"{self.path}/jwks.json":
            self.jwks_fetches += 1
            if self.stall_jwks and self._release is not None:
                await self._release.wait()
            if self.jwks_status != 200:
                return JSONResponse({"error": "unavailable"}, status_code=self.jwks_status)
            if self.jwks_body is not None:
                return Response(self.jwks_body, media_type="application/json")
            return JSONResponse(self.jwks(), headers={"Cache-Control": "max-age=60"})
        if "/.well-known/" in path:
            self.metadata_requests.append(path)
            if self.openid and path == f"{self.path}/.well-known/openid-configuration":
                return JSONResponse(self.metadata())
            if self.oauth_metadata and path == f"/.well-known/oauth-authorization-server{self.path}":
                return JSONResponse(self.metadata())
        return JSONResponse({"error": "not_found"}, status_code=404)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[LocalIssuer]:
        """Serve on a free loopback port until exit; ``origin`` is the real address meanwhile."""
        app = Starlette(routes=[Route("/{rest:path}", self._handle, methods=["GET"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
        )
        server = ReadyServer(config)
        self._release = anyio.Event()
        previous_origin = self.origin
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server._serve)  # _serve: uvicorn's serve() without taking over the signal handlers
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                await server.ready.wait()
            self.origin = f"http://127.0.0.1:{server.port}"
            try:
                yield self
            finally:
                self._release.set()
                self.origin = previous_origin
                server.should_exit = True
                tasks.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_TIMEOUT_S


@asynccontextmanager
async def local_issuer(
    *,
    audience: str = DEFAULT_AUDIENCE,
    path: str = "",
    keys: Sequence[KeyKind] = ("RSA",),
    openid: bool = True,
    oauth_metadata: bool = True,
) -> AsyncIterator[LocalIssuer]:
    """A served `LocalIssuer` with one key of each kind in ``keys`` (the first is the default signer)."""
    issuer = LocalIssuer(audience=audience, path=path, openid=openid, oauth_metadata=oauth_metadata)
    for kind in keys:
        issuer.add_key(kind)
    async with issuer.serving():
        yield issuer
