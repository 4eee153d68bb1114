"""Where JWT verification keys come from: a static PEM, a JWKS URL, or the issuer's discovery document.

Three sources, one shape (`KeySet`):

- a static PEM public key or certificate: parsed once, no network ever;
- a JWKS URL (RFC 7517 §5): fetched on first use, cached, refreshed in the background once older
  than ``cache_ttl_s``, and refetched when a token names an unknown ``kid`` (at most once per
  ``refresh_min_interval_s``, so random ``kid`` values cannot make us hammer the issuer);
- discovery: ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4), else
  ``https://host/.well-known/oauth-authorization-server{path}`` (RFC 8414 §3.1); the document's
  ``issuer`` must equal ours, and its ``jwks_uri`` is then fetched as above.

All fetches of one source share a single in-flight asyncio task (concurrent callers coalesce; a
cancelled caller does not cancel the fetch for the others), each bounded by ``timeout_s`` in total.
A failed refresh keeps the cached keys usable and logs one warning per failure streak.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

log = logging.getLogger("datapulse.auth.jwt")

MAX_DOCUMENT_BYTES = 1_048_576
"""Largest discovery document or JWK Set accepted (bytes); real ones are a few KiB."""

ALGORITHM_FAMILIES: Mapping[str, tuple[str, frozenset[str] | None]] = MappingProxyType(
    {
        "RS256": ("RSA", None),
        "RS384": ("RSA", None),
        "RS512": ("RSA", None),
        "PS256": ("RSA", None),
        "PS384": ("RSA", None),
        "PS512": ("RSA", None),
        "ES256": ("EC", frozenset({"P-256"})),
        "ES384": ("EC", frozenset({"P-384"})),
        "ES512": ("EC", frozenset({"P-521"})),
        "ES256K": ("EC", frozenset({"secp256k1"})),
        "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    }
)
"""Asymmetric JWS algorithms (RFC 7518 §3, RFC 8037 §3.1) → the JWK ``kty`` and ``crv`` values that may verify them."""

_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeysUnavailable(Exception):
    """No usable key: the issuer or its JWKS could not be fetched (unreachable, timeout, HTTP error, bad
    JSON, issuer mismatch) and nothing usable is cached. The message names what failed (URLs without
    query or credentials) and is safe to log."""


class KeyMiss(enum.Enum):
    """Why `KeySet.select` found no key."""

    ABSENT = "absent"  # no key with this kid (or, without a kid, none fits the alg): worth a refresh
    AMBIGUOUS = "ambiguous"  # no kid in the token and several keys fit
    WRONG_ALGORITHM = "wrong_algorithm"  # the key exists but cannot verify this alg (family or JWK alg)


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key: its ``kid`` and a ready `PyJWK` per allowed algorithm it may verify."""

    kid: str | None
    by_algorithm: Mapping[str, PyJWK]


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable verification keys of one source.

    Attributes:
        keys: the keys, in document order.
        match_any_kid: the static-key mode: the single key verifies tokens whatever their ``kid``.
    """

    keys: tuple[VerificationKey, ...]
    match_any_kid: bool = False

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(key.kid for key in self.keys if key.kid is not None)

    def select(self, kid: str | None, alg: str) -> PyJWK | KeyMiss:
        """The key for a token's header ``kid`` and ``alg``: the key with that ``kid`` (the first one
        that fits ``alg``), or, without a ``kid``, the only key fitting ``alg``."""
        if kid is None or self.match_any_kid:
            fitting = [key.by_algorithm[alg] for key in self.keys if alg in key.by_algorithm]
            if len(fitting) == 1:
                return fitting[0]
            if fitting:
                return KeyMiss.AMBIGUOUS
            return KeyMiss.WRONG_ALGORITHM if self.match_any_kid else KeyMiss.ABSENT
        named = [key for key in self.keys if key.kid == kid]
        for key in named:
            if alg in key.by_algorithm:
                return key.by_algorithm[alg]
        return KeyMiss.WRONG_ALGORITHM if named else KeyMiss.ABSENT


def parse_jwk_set(document: object, algorithms: Collection[str]) -> KeySet:
    """The usable keys of a JWK Set document (RFC 7517 §5).

    A member is skipped (debug log) when it is not an object, has ``use`` other than ``sig``,
    ``key_ops`` without ``verify``, a ``kid`` that is not a string, no algorithm of ``algorithms``
    fitting its ``kty``/``crv`` (and its ``alg`` if present), or an RSA modulus under 2048 bits.
    Private members (``d``, ``k``...) are ignored: only public key material is ever loaded.

    Raises:
        ValueError: ``document`` is not an object with a ``keys`` array.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (RFC 7517 §5): expected a JSON object with a 'keys' array")
    keys: list[VerificationKey] = []
    for index, member in enumerate(document["keys"]):
        key = usable_key(member, algorithms)
        if key is None:
            log.debug("JWK Set member %d is not usable for %s; ignored", index, sorted(algorithms))
        else:
            keys.append(key)
    return KeySet(tuple(keys))


def usable_key(jwk: object, algorithms: Collection[str]) -> VerificationKey | None:
    """One JWK (RFC 7517 §4) as a `VerificationKey`, or None if it cannot verify any of ``algorithms``."""
    if not isinstance(jwk, dict):
        return None
    kid, use, key_ops, declared = jwk.get("kid"), jwk.get("use"), jwk.get("key_ops"), jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        return None
    if use is not None and use != "sig":
        return None
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        return None
    public = {name: value for name, value in jwk.items() if name not in _PRIVATE_JWK_MEMBERS}
    by_algorithm: dict[str, PyJWK] = {}
    for alg in algorithms:
        kty, curves = ALGORITHM_FAMILIES[alg]
        if public.get("kty") != kty or (curves is not None and public.get("crv") not in curves):
            continue
        if declared is not None and declared != alg:
            continue
        try:
            key = PyJWK(public, algorithm=alg)
        except PyJWTError:
            return None
        if key.Algorithm.check_key_length(key.key) is not None:
            return None
        by_algorithm[alg] = key
    return VerificationKey(kid, MappingProxyType(by_algorithm)) if by_algorithm else None


def static_key_set(pem: str, algorithms: Collection[str]) -> KeySet:
    """A one-key `KeySet` from a PEM ``PUBLIC KEY`` or ``CERTIFICATE`` (RSA, EC or Ed25519/Ed448).

    Raises:
        ValueError: not a PEM public key or certificate (a private key is refused: configure the
            public half), or the key fits none of ``algorithms``.
    """
    data = pem.strip().encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            public_key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            public_key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError("static_key_pem is not a PEM public key or certificate") from exc
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    elif isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    else:
        raise ValueError(f"static_key_pem holds an unsupported key type ({type(public_key).__name__})")
    key = usable_key(jwk, algorithms)
    if key is None:
        raise ValueError(f"static_key_pem ({jwk['kty']} key) cannot verify any of {sorted(algorithms)}")
    return KeySet((key,), match_any_kid=True)


def redact_url(url: str) -> str:
    """``url`` without userinfo, query and fragment: safe for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:  # a non-numeric port: show the host alone
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def discovery_urls(issuer: str) -> tuple[str, str]:
    """Where an issuer's metadata lives, in the order tried.

    Returns:
        ``{issuer}/.well-known/openid-configuration`` (OpenID Connect Discovery 1.0 §4: suffix
        appended), then ``scheme://host/.well-known/oauth-authorization-server{path}`` (RFC 8414
        §3.1: suffix inserted between host and path, a terminating ``/`` removed).
    """
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    oidc = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    oauth = urlunsplit((parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", ""))
    return oidc, oauth


def check_http_url(url: str, what: str) -> None:
    """Raises ValueError unless ``url`` is an absolute ``http``/``https`` URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {redact_url(url)!r}")


class KeySource(Protocol):
    """Where a verifier gets its keys (see `RemoteKeySource` for the meaning of each method)."""

    async def current(self) -> tuple[KeySet, bool]: ...

    async def refresh_for_unknown_kid(self) -> KeySet | None: ...

    async def refresh(self) -> KeySet: ...

    async def aclose(self) -> None: ...


class StaticKeySource:
    """Keys from a PEM given in configuration: no network, nothing to refresh."""

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    async def current(self) -> tuple[KeySet, bool]:
        return self._keys, False

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        return None

    async def refresh(self) -> KeySet:
        return self._keys

    async def aclose(self) -> None:
        return None


class RemoteKeySource:
    """Keys fetched from a JWKS URL, explicit or discovered from the issuer.

    Args:
        issuer: the configured issuer (exact ``iss``); used for discovery when ``jwks_url`` is None.
        jwks_url: an explicit JWKS URL, or None to discover it.
        algorithms: the allowed algorithms (only keys fitting one are kept).
        http: the client used for every fetch (not closed here).
        timeout_s: bound on each fetch, connect to last byte (seconds).
        cache_ttl_s: age after which the keys are refreshed in the background (seconds).
        refresh_min_interval_s: minimum time between unknown-``kid`` refetches, and between retries
            after a failed background refresh (seconds).
        clock: monotonic clock (seconds); tests inject a fake one.
    """

    def __init__(
        self,
        *,
        issuer: str,
        jwks_url: str | None,
        algorithms: Collection[str],
        http: httpx2.AsyncClient,
        timeout_s: float,
        cache_ttl_s: float,
        refresh_min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._issuer = issuer
        self._explicit_jwks_url = jwks_url
        self._jwks_url = jwks_url
        self._algorithms = tuple(algorithms)
        self._http = http
        self._timeout_s = timeout_s
        self._cache_ttl_s = cache_ttl_s
        self._min_interval_s = refresh_min_interval_s
        self._clock = clock
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._flight: asyncio.Task[KeySet | KeysUnavailable] | None = None
        self._last_kid_refresh_at: float | None = None
        self._last_failure_at: float | None = None

    async def current(self) -> tuple[KeySet, bool]:
        """The cached keys, fetching them first if there are none.

        Returns:
            ``(keys, fresh)``: ``fresh`` is True when this call waited for a fetch (so an unknown
            ``kid`` is not worth another one). Stale keys (older than ``cache_ttl_s``) are returned
            as they are while a background refresh runs.

        Raises:
            KeysUnavailable: nothing is cached and the fetch failed.
        """
        if self._keys is None:
            return await self._join(self._start_flight()), True
        now = self._clock()
        retry_ok = self._last_failure_at is None or now - self._last_failure_at >= self._min_interval_s
        if now - self._fetched_at >= self._cache_ttl_s and retry_ok:
            self._start_flight()
        return self._keys, False

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        """Refetch because a token names an unknown ``kid``: joins a fetch already in flight, else
        starts one unless one was started for this reason less than ``refresh_min_interval_s`` ago.

        Returns:
            The refreshed keys, or None when rate-limited.

        Raises:
            KeysUnavailable: the refetch failed.
        """
        if self._flight is not None and not self._flight.done():
            return await self._join(self._flight)
        now = self._clock()
        if self._last_kid_refresh_at is not None and now - self._last_kid_refresh_at < self._min_interval_s:
            return None
        self._last_kid_refresh_at = now
        return await self._join(self._start_flight())

    async def refresh(self) -> KeySet:
        """Fetch now (or join the fetch in flight), whatever the cache age.

        Raises:
            KeysUnavailable: the fetch failed (cached keys, if any, stay in use).
        """
        return await self._join(self._start_flight())

    async def aclose(self) -> None:
        """Cancel a fetch in flight and wait for it to end."""
        flight, self._flight = self._flight, None
        if flight is not None and not flight.done():
            flight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flight

    def _start_flight(self) -> asyncio.Task[KeySet | KeysUnavailable]:
        if self._flight is None or self._flight.done():
            self._flight = asyncio.get_running_loop().create_task(self._fly(), name="datapulse-jwks-fetch")
        return self._flight

    @staticmethod
    async def _join(flight: asyncio.Task[KeySet | KeysUnavailable]) -> KeySet:
        outcome = await asyncio.shield(flight)  # a cancelled caller leaves the fetch running for the others
        if isinstance(outcome, KeysUnavailable):
            raise KeysUnavailable(str(outcome))
        return outcome

    async def _fly(self) -> KeySet | KeysUnavailable:
        """One fetch; updates the cache and the failure streak; never raises (except cancellation)."""
        try:
            keys = await self._fetch()
        except KeysUnavailable as exc:
            return self._failed(exc)
        except Exception as exc:  # a bug must not kill the detached task silently; callers get a clean error
            log.exception("unexpected error while fetching JWT signing keys")
            return self._failed(KeysUnavailable(f"unexpected error while fetching signing keys ({type(exc).__name__})"))
        if self._last_failure_at is not None:
            log.info("JWT signing keys fetched again after failures")
        self._keys, self._fetched_at, self._last_failure_at = keys, self._clock(), None
        if not keys.keys:
            log.warning("the JWK Set at %s has no key usable for %s", self._where(), list(self._algorithms))
        log.debug("fetched %d JWT signing keys from %s: kids %s", len(keys.keys), self._where(), sorted(keys.kids))
        return keys

    def _failed(self, exc: KeysUnavailable) -> KeysUnavailable:
        if self._last_failure_at is None:  # first failure of a streak: warn once
            if self._keys is not None:
                age_s = self._clock() - self._fetched_at
                log.warning("%s; still using the signing keys fetched %.0f s ago", exc, age_s)
            else:
                log.warning("%s", exc)
        self._last_failure_at = self._clock()
        return exc

    def _where(self) -> str:
        return redact_url(self._jwks_url) if self._jwks_url else redact_url(self._issuer)

    async def _fetch(self) -> KeySet:
        discovered = self._jwks_url is None
        jwks_url = self._jwks_url if self._jwks_url is not None else await self._discover()
        try:
            document = await self._get_json(jwks_url, "JWK Set")
            try:
                return parse_jwk_set(document, self._algorithms)
            except ValueError as exc:
                raise KeysUnavailable(f"JWK Set {redact_url(jwks_url)}: {exc}") from None
        except KeysUnavailable:
            if discovered:
                self._jwks_url = None  # rediscover next time: the issuer may have moved its JWKS
            raise

    async def _discover(self) -> str:
        failures: list[str] = []
        for url in discovery_urls(self._issuer):
            try:
                document = await self._get_json(url, "issuer metadata")
            except KeysUnavailable as exc:
                failures.append(str(exc))
                continue
            problem, jwks_url = self._jwks_uri_of(document)
            if jwks_url is not None:
                self._jwks_url = jwks_url
                log.debug("discovered JWKS %s from %s", redact_url(jwks_url), redact_url(url))
                return jwks_url
            failures.append(f"issuer metadata {redact_url(url)}: {problem}")
        raise KeysUnavailable(f"discovery for issuer {redact_url(self._issuer)} failed: {'; '.join(failures)}")

    def _jwks_uri_of(self, document: object) -> tuple[str, str | None]:
        """``(problem, None)`` or ``("", jwks_uri)`` for a metadata document (RFC 8414 §3.3, OIDC Discovery §4.3)."""
        if not isinstance(document, dict):
            return "not a JSON object", None
        issuer = document.get("issuer")
        if issuer != self._issuer:
            shown = redact_url(issuer) if isinstance(issuer, str) else repr(issuer)
            return f"issuer mismatch: the document names {shown!r}, expected {redact_url(self._issuer)!r}", None
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            return "no jwks_uri", None
        try:
            check_http_url(jwks_uri, "jwks_uri")
        except ValueError as exc:
            return str(exc), None
        if urlsplit(self._issuer).scheme == "https" and urlsplit(jwks_uri).scheme != "https":
            return "jwks_uri is not https for an https issuer", None
        return "", jwks_uri

    async def _get_json(self, url: str, what: str) -> object:
        """GET ``url`` and parse its JSON body, within ``timeout_s`` in total.

        Raises:
            KeysUnavailable: connection error, timeout, non-200 status, oversized or non-JSON body.
        """
        shown = f"{what} {redact_url(url)}"
        body = bytearray()
        try:
            with anyio.fail_after(self._timeout_s):
                headers = {"Accept": "application/json"}
                async with self._http.stream("GET", url, headers=headers, timeout=self._timeout_s) as response:
                    if response.status_code != 200:
                        raise KeysUnavailable(f"{shown} answered HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_DOCUMENT_BYTES:
                            raise KeysUnavailable(f"{shown} is larger than {MAX_DOCUMENT_BYTES} bytes")
        except TimeoutError:
            raise KeysUnavailable(f"{shown} did not answer within {self._timeout_s:g} s") from None
        except httpx2.TimeoutException:
            raise KeysUnavailable(f"{shown} did not answer within {self._timeout_s:g} s") from None
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise KeysUnavailable(f"{shown} could not be fetched ({type(exc).__name__})") from None
        try:
            return json.loads(body)
        except ValueError:
            raise KeysUnavailable(f"{shown} is not valid JSON") from None
