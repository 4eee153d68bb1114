"""JwtVerifier against a real local issuer (real keys, real HTTP on loopback): claims, algorithms, key
rotation, JWKS rate limiting, discovery (OIDC and RFC 8414), failures, static PEM keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from datapulse.auth.jwks import discovery_urls, redact_url
from datapulse.auth.jwt import JwtConfig, JwtVerifier, KeysUnavailable, TokenRejected, VerifiedToken
from tests.support.issuer import DEFAULT_AUDIENCE, DEFAULT_SCOPE, KeyKind, LocalIssuer, local_issuer

pytestmark = pytest.mark.anyio

WAIT_S = 10.0
AUDIENCE = DEFAULT_AUDIENCE


class FakeClock:
    """A monotonic clock the test moves by hand (cache ages and rate limits)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWS built by hand (PyJWT refuses to make the tokens an attacker would send)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(signature)}"


def hs256_with_public_key(issuer: LocalIssuer, kid: str) -> str:
    """The key-confusion attack: an RS256 token re-signed as HS256 with the public key PEM as the secret."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    payload = {"iss": issuer.url, "aud": AUDIENCE, "sub": "mallory", "iat": now, "exp": now + 300}
    signing_input = forge(header, payload).rsplit(".", 1)[0]
    secret = issuer.public_pem(kid).encode()
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def config_for(issuer: LocalIssuer, **overrides: Any) -> JwtConfig:
    values: dict[str, Any] = {"issuer": issuer.url, "audiences": (AUDIENCE,), "jwks_url": issuer.jwks_url}
    values.update(overrides)
    return JwtConfig(**values)


@asynccontextmanager
async def verifying(config: JwtConfig, clock: FakeClock | None = None) -> AsyncIterator[JwtVerifier]:
    verifier = JwtVerifier(config, clock=clock) if clock is not None else JwtVerifier(config)
    try:
        yield verifier
    finally:
        await verifier.aclose()


async def verify(verifier: JwtVerifier, token: str) -> VerifiedToken:
    with anyio.fail_after(WAIT_S):
        return await verifier.verify(token)


async def rejection(verifier: JwtVerifier, token: str) -> str:
    """The ``reason`` the verifier rejects ``token`` with (fails the test if it is accepted)."""
    with anyio.fail_after(WAIT_S), pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    assert token not in str(caught.value) or not token
    return caught.value.reason


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with local_issuer(keys=("RSA", "EC", "OKP")) as running:
        yield running


@pytest.fixture
async def verifier(issuer: LocalIssuer) -> AsyncIterator[JwtVerifier]:
    async with verifying(config_for(issuer)) as running:
        yield running


# --- claims ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP"])
async def test_a_valid_token_is_accepted_for_rs256_es256_and_eddsa(
    issuer: LocalIssuer, verifier: JwtVerifier, kind: KeyKind
) -> None:
    kid = next(key.kid for key in issuer.keys.values() if key.kind == kind)
    token = issuer.sign(kid=kid, exp=int(time.time()) + 120)

    verified = await verify(verifier, token)

    assert (verified.subject, verified.issuer, verified.audience) == ("alice", issuer.url, AUDIENCE)
    assert verified.scopes == frozenset(DEFAULT_SCOPE.split())
    assert verified.expires_at == verified.claims["exp"]
    assert verified.client_id is None


async def test_an_expired_token_is_rejected_as_expired(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    token = issuer.sign(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    assert await rejection(verifier, token) == "expired"


async def test_a_token_whose_nbf_is_ahead_is_rejected_as_not_yet_valid(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    assert await rejection(verifier, issuer.sign(nbf=int(time.time()) + 600)) == "not_yet_valid"


async def test_a_token_issued_in_the_future_is_rejected_as_not_yet_valid(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    assert await rejection(verifier, issuer.sign(iat=int(time.time()) + 600)) == "not_yet_valid"


async def test_leeway_accepts_clock_skew_within_it_and_no_more(issuer: LocalIssuer) -> None:
    now = int(time.time())
    just_expired = issuer.sign(exp=now - 10, iat=now - 300)
    nbf_just_ahead = issuer.sign(nbf=now + 10)
    long_expired = issuer.sign(exp=now - 120, iat=now - 300)
    async with (
        verifying(config_for(issuer, leeway_s=60)) as lenient,
        verifying(config_for(issuer, leeway_s=0)) as strict,
    ):
        assert (await verify(lenient, just_expired)).subject == "alice"
        assert (await verify(lenient, nbf_just_ahead)).subject == "alice"
        assert await rejection(lenient, long_expired) == "expired"
        assert await rejection(strict, just_expired) == "expired"
        assert await rejection(strict, nbf_just_ahead) == "not_yet_valid"


async def test_a_token_from_another_issuer_is_rejected_without_fetching_keys(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    token = issuer.sign(iss="https://evil.example.test")

    assert await rejection(verifier, token) == "wrong_issuer"
    assert issuer.jwks_fetches == 0


async def test_an_issuer_differing_only_by_a_trailing_slash_is_a_wrong_issuer(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    assert await rejection(verifier, issuer.sign(iss=issuer.url + "/")) == "wrong_issuer"


async def test_a_token_for_another_audience_is_rejected_as_wrong_audience(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    token = issuer.sign(aud="https://other-server.example.test/mcp")
    assert await rejection(verifier, token) == "wrong_audience"


async def test_an_audience_list_containing_ours_is_accepted_and_names_the_matched_audience(
    issuer: LocalIssuer,
) -> None:
    token = issuer.sign(aud=["https://other.example.test", AUDIENCE])
    config = config_for(issuer, audiences=("https://first.example.test/mcp", AUDIENCE))
    async with verifying(config) as verifier:
        assert (await verify(verifier, token)).audience == AUDIENCE


@pytest.mark.parametrize("claim", ["sub", "exp", "iss", "aud"])
async def test_a_token_missing_a_required_claim_is_rejected_as_missing_claim(
    issuer: LocalIssuer, verifier: JwtVerifier, claim: str
) -> None:
    token = issuer.sign(**{claim: None})
    with anyio.fail_after(WAIT_S), pytest.raises(TokenRejected) as caught:
        await verifier.verify(token)
    assert caught.value.reason == "missing_claim"
    assert claim in str(caught.value)


async def test_a_configured_principal_claim_names_the_subject_and_is_required(issuer: LocalIssuer) -> None:
    async with verifying(config_for(issuer, principal_claim="email")) as verifier:
        assert (await verify(verifier, issuer.sign(email="alice@example.test"))).subject == "alice@example.test"
        assert await rejection(verifier, issuer.sign()) == "missing_claim"


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "files:read  files:write"}, {"files:read", "files:write"}),
        ({"scp": ["files:read", "admin"]}, {"files:read", "admin"}),
        ({"scp": "files:read admin"}, {"files:read", "admin"}),
        ({"scope": "a", "scp": ["b"]}, {"a"}),
        ({}, set()),
    ],
)
async def test_scopes_come_from_the_scope_string_or_the_scp_claim(
    issuer: LocalIssuer, verifier: JwtVerifier, claims: dict[str, Any], scopes: set[str]
) -> None:
    assert (await verify(verifier, issuer.sign(**{"scope": None, **claims}))).scopes == scopes


@pytest.mark.parametrize(
    ("claims", "client_id"),
    [
        ({"client_id": "cli-1", "azp": "azp-1"}, "cli-1"),
        ({"azp": "azp-1"}, "azp-1"),
        ({}, None),
    ],
)
async def test_client_id_comes_from_client_id_else_azp(
    issuer: LocalIssuer, verifier: JwtVerifier, claims: dict[str, Any], client_id: str | None
) -> None:
    assert (await verify(verifier, issuer.sign(**claims))).client_id == client_id


# --- signatures and algorithms --------------------------------------------------------------------


async def test_a_tampered_payload_is_rejected_as_bad_signature(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    header, _, signature = issuer.sign().split(".")
    forged_payload = b64url(json.dumps({"iss": issuer.url, "aud": AUDIENCE, "sub": "root", "exp": 2**31}).encode())
    assert await rejection(verifier, f"{header}.{forged_payload}.{signature}") == "bad_signature"


async def test_a_token_signed_by_another_key_under_a_published_kid_is_rejected_as_bad_signature(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    rogue = issuer.add_key("RSA", published=False)
    published_rsa = issuer.default_kid
    token = issuer.sign(kid=rogue, headers={"kid": published_rsa})
    assert await rejection(verifier, token) == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_an_unsigned_alg_none_token_is_refused(issuer: LocalIssuer, verifier: JwtVerifier, alg: str) -> None:
    now = int(time.time())
    token = forge({"alg": alg, "typ": "JWT"}, {"iss": issuer.url, "aud": AUDIENCE, "sub": "root", "exp": now + 60})
    assert await rejection(verifier, token) == "algorithm_not_allowed"
    assert issuer.jwks_fetches == 0


@pytest.mark.parametrize("mode", ["jwks", "static_pem"])
async def test_an_rs256_token_resigned_as_hs256_with_the_public_key_is_refused(issuer: LocalIssuer, mode: str) -> None:
    kid = issuer.default_kid
    assert kid is not None
    config = (
        config_for(issuer)
        if mode == "jwks"
        else config_for(issuer, jwks_url=None, static_key_pem=issuer.public_pem(kid))
    )
    async with verifying(config) as verifier:
        assert await rejection(verifier, hs256_with_public_key(issuer, kid)) == "algorithm_not_allowed"
    assert issuer.jwks_fetches == 0


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "none"])
def test_symmetric_and_none_algorithms_are_refused_in_the_configuration(alg: str) -> None:
    with pytest.raises(ValueError, match="refused"):
        JwtConfig(issuer="https://issuer.example.test", audiences=(AUDIENCE,), algorithms=("RS256", alg))


@pytest.mark.parametrize(
    "overrides",
    [
        {"audiences": ()},
        {"audiences": AUDIENCE},
        {"issuer": ""},
        {"algorithms": ("XS999",)},
        {"jwks_url": "ftp://issuer.example.test/jwks"},
        {"static_key_pem": "x", "jwks_url": "https://issuer.example.test/jwks"},
        {"http_timeout_s": 0},
    ],
)
def test_an_invalid_configuration_is_refused_at_construction(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"issuer": "https://issuer.example.test", "audiences": (AUDIENCE,)}
    values.update(overrides)
    with pytest.raises(ValueError):  # noqa: PT011 - one error type for every configuration mistake
        JwtConfig(**values)


async def test_an_algorithm_outside_the_allowlist_is_refused(issuer: LocalIssuer) -> None:
    ec_kid = next(key.kid for key in issuer.keys.values() if key.kind == "EC")
    async with verifying(config_for(issuer, algorithms=("RS256",))) as verifier:
        assert await rejection(verifier, issuer.sign(kid=ec_kid)) == "algorithm_not_allowed"


async def test_a_key_of_another_family_never_verifies_a_token(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    rsa_kid = issuer.default_kid
    ec_kid = next(key.kid for key in issuer.keys.values() if key.kind == "EC")
    token = issuer.sign(kid=ec_kid, headers={"kid": rsa_kid})  # ES256, pointing at the RSA key
    assert await rejection(verifier, token) == "algorithm_not_allowed"


@pytest.mark.parametrize(("publish_alg", "accepted"), [(True, False), (False, True)])
async def test_a_jwk_declaring_another_alg_is_not_used_for_the_header_alg(
    issuer: LocalIssuer, publish_alg: bool, accepted: bool
) -> None:
    kid = issuer.add_key("RSA", publish_alg=publish_alg)  # published as alg RS256, or without alg
    token = issuer.sign(kid=kid, alg="RS384")
    async with verifying(config_for(issuer, algorithms=("RS256", "RS384"))) as verifier:
        if accepted:
            assert (await verify(verifier, token)).subject == "alice"
        else:
            assert await rejection(verifier, token) == "algorithm_not_allowed"


async def test_a_jwk_published_for_encryption_is_ignored(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    kid = issuer.add_key("RSA", use="enc")
    assert await rejection(verifier, issuer.sign(kid=kid)) == "unknown_key"


async def test_a_token_without_kid_uses_the_only_fitting_key_and_is_refused_when_ambiguous(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    assert (await verify(verifier, issuer.sign(headers={"kid": None}))).subject == "alice"

    second_rsa = issuer.add_key("RSA")
    async with verifying(config_for(issuer)) as fresh_verifier:
        token = issuer.sign(kid=second_rsa, headers={"kid": None})
        assert await rejection(fresh_verifier, token) == "unknown_key"


def _random_base64() -> str:
    return b64url(secrets.token_bytes(48))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c",
        _random_base64(),
        f"{_random_base64()}.{_random_base64()}.{_random_base64()}",
        "ééé.ééé.ééé",
        "Bearer abc.def.ghi",
        f"{b64url(b'[1, 2]')}.{b64url(b'{}')}.",
        f"{b64url(json.dumps({'alg': 'RS256'}).encode())}.{b64url(b'not json')}.{b64url(b'sig')}",
        f"{b64url(json.dumps({'alg': 'RS256', 'kid': 7}).encode())}.{b64url(b'{}')}.{b64url(b'sig')}",
        "x" * 20_000,
    ],
    ids=[
        "empty",
        "two-segments",
        "three-letters",
        "random-base64",
        "random-segments",
        "non-ascii",
        "with-scheme",
        "header-array",
        "payload-not-json",
        "kid-not-string",
        "oversized",
    ],
)
async def test_garbage_bearer_values_are_rejected_as_malformed(
    issuer: LocalIssuer, verifier: JwtVerifier, token: str
) -> None:
    assert await rejection(verifier, token) == "malformed"
    assert issuer.jwks_fetches == 0


# --- rotation and rate limiting -------------------------------------------------------------------


async def test_a_new_key_published_by_the_issuer_is_accepted_on_first_use_without_restart(
    issuer: LocalIssuer, verifier: JwtVerifier
) -> None:
    assert (await verify(verifier, issuer.sign())).subject == "alice"
    new_kid = issuer.add_key("EC", kid="rotated-2")

    assert (await verify(verifier, issuer.sign(kid=new_kid))).subject == "alice"
    assert issuer.jwks_fetches == 2


async def test_a_key_removed_from_the_jwks_is_refused_after_the_next_refresh(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    old_token = issuer.sign()
    async with verifying(config_for(issuer, jwks_cache_ttl_s=600), clock) as verifier:
        await verify(verifier, old_token)
        assert issuer.default_kid is not None
        issuer.remove_key(issuer.default_kid)

        await verify(verifier, old_token)  # cache still fresh: the old key is still trusted
        assert issuer.jwks_fetches == 1

        clock.advance(600)
        await verify(verifier, old_token)  # stale keys serve while a background refresh starts
        with anyio.fail_after(WAIT_S):
            await verifier.refresh_keys()  # joins that background refresh
        assert issuer.jwks_fetches == 2

        assert await rejection(verifier, old_token) == "unknown_key"


async def test_unknown_kids_cause_at_most_one_jwks_fetch_per_interval(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    config = config_for(issuer, jwks_refresh_min_interval_s=10)

    def random_kid_token() -> str:
        return issuer.sign(headers={"kid": secrets.token_hex(8)})

    async with verifying(config, clock) as verifier:
        await verify(verifier, issuer.sign())
        assert issuer.jwks_fetches == 1

        reasons: list[str] = []

        async def attack() -> None:
            reasons.append(await rejection(verifier, random_kid_token()))

        async with anyio.create_task_group() as tasks:
            for _ in range(50):
                tasks.start_soon(attack)
        for _ in range(20):
            reasons.append(await rejection(verifier, random_kid_token()))
        assert reasons == ["unknown_key"] * 70
        assert issuer.jwks_fetches == 2

        clock.advance(9)
        assert await rejection(verifier, random_kid_token()) == "unknown_key"
        assert issuer.jwks_fetches == 2

        clock.advance(1)
        for _ in range(10):
            assert await rejection(verifier, random_kid_token()) == "unknown_key"
        assert issuer.jwks_fetches == 3


async def test_concurrent_first_verifications_share_one_jwks_fetch(issuer: LocalIssuer, verifier: JwtVerifier) -> None:
    subjects: list[str] = []
    tokens = [issuer.sign(sub=f"user-{n}") for n in range(20)]

    async def check(token: str) -> None:
        subjects.append((await verify(verifier, token)).subject)

    async with anyio.create_task_group() as tasks:
        for token in tokens:
            tasks.start_soon(check, token)

    assert sorted(subjects) == sorted(f"user-{n}" for n in range(20))
    assert issuer.jwks_fetches == 1


# --- fetch failures -------------------------------------------------------------------------------


async def test_an_unreachable_issuer_gives_keys_unavailable_quickly(issuer: LocalIssuer) -> None:
    port = free_port()
    config = JwtConfig(issuer=f"http://127.0.0.1:{port}", audiences=(AUDIENCE,), http_timeout_s=2)
    token = issuer.sign(iss=config.issuer)
    async with verifying(config) as verifier:
        with anyio.fail_after(3), pytest.raises(KeysUnavailable) as caught:
            await verifier.verify(token)
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_a_jwks_endpoint_that_never_answers_gives_keys_unavailable_within_the_timeout(
    issuer: LocalIssuer,
) -> None:
    issuer.stall_jwks = True
    async with verifying(config_for(issuer, http_timeout_s=0.3)) as verifier:
        with anyio.fail_after(3), pytest.raises(KeysUnavailable) as caught:
            await verifier.verify(issuer.sign())
    assert redact_url(issuer.jwks_url) in str(caught.value)


async def test_failure_messages_show_no_url_credentials_or_query(issuer: LocalIssuer) -> None:
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/jwks.json?api_key=s3cret"
    async with verifying(config_for(issuer, jwks_url=url)) as verifier:
        with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable) as caught:
            await verifier.verify(issuer.sign())
    message = str(caught.value)
    assert "/jwks.json" in message
    assert not any(secret in message for secret in ("user", "hunter2", "api_key", "s3cret"))


async def test_a_jwks_url_answering_an_error_status_gives_keys_unavailable(issuer: LocalIssuer) -> None:
    config = config_for(issuer, jwks_url=f"{issuer.url}/no-such-jwks.json")
    async with verifying(config) as verifier:
        with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable, match="HTTP 404"):
            await verifier.verify(issuer.sign())


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"<html>oops</html>", "not valid JSON"), (b'{"keys": "none"}', "not a JWK Set"), (b"[]", "not a JWK Set")],
)
async def test_a_jwks_that_is_not_a_jwk_set_gives_keys_unavailable(
    issuer: LocalIssuer, verifier: JwtVerifier, body: bytes, problem: str
) -> None:
    issuer.jwks_body = body
    with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable, match=problem):
        await verifier.verify(issuer.sign())


async def test_cached_keys_stay_usable_while_refreshes_fail_with_one_warning_per_streak(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="datapulse.auth.jwt")

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.name == "datapulse.auth.jwt" and r.levelno >= logging.WARNING
        ]

    clock = FakeClock()
    token = issuer.sign()
    config = config_for(issuer, jwks_cache_ttl_s=60, jwks_refresh_min_interval_s=5)
    async with verifying(config, clock) as verifier:
        await verify(verifier, token)
        issuer.jwks_status = 503

        for _ in range(3):
            clock.advance(60)
            assert (await verify(verifier, token)).subject == "alice"
            with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable, match="HTTP 503"):
                await verifier.refresh_keys()
        assert issuer.jwks_fetches == 4
        assert len(warnings()) == 1

        issuer.jwks_status = 200
        with anyio.fail_after(WAIT_S):
            await verifier.refresh_keys()
        issuer.jwks_status = 500
        with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable):
            await verifier.refresh_keys()
        assert len(warnings()) == 2
    assert all(token not in message for message in warnings())


# --- discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer_url", "oidc", "oauth"),
    [
        (
            "https://auth.example.test",
            "https://auth.example.test/.well-known/openid-configuration",
            "https://auth.example.test/.well-known/oauth-authorization-server",
        ),
        (
            "https://auth.example.test/tenant1/",
            "https://auth.example.test/tenant1/.well-known/openid-configuration",
            "https://auth.example.test/.well-known/oauth-authorization-server/tenant1",
        ),
        (
            "http://127.0.0.1:8080/a/b",
            "http://127.0.0.1:8080/a/b/.well-known/openid-configuration",
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server/a/b",
        ),
    ],
)
def test_discovery_urls_append_the_oidc_suffix_and_insert_the_rfc8414_one(
    issuer_url: str, oidc: str, oauth: str
) -> None:
    assert discovery_urls(issuer_url) == (oidc, oauth)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pw@auth.example.test:8443/keys/jwks.json?key=s#frag",
            "https://auth.example.test:8443/keys/jwks.json",
        ),
        ("http://[::1]:8080/jwks", "http://[::1]:8080/jwks"),
        ("http://auth.example.test:port/jwks", "http://auth.example.test/jwks"),
    ],
)
def test_urls_in_messages_lose_credentials_query_and_fragment(url: str, shown: str) -> None:
    assert redact_url(url) == shown


async def test_discovery_reads_the_openid_configuration_once() -> None:
    async with local_issuer() as issuer, verifying(config_for(issuer, jwks_url=None)) as verifier:
        await verify(verifier, issuer.sign())
        await verify(verifier, issuer.sign(sub="bob"))
        assert issuer.metadata_requests == ["/.well-known/openid-configuration"]
        assert issuer.jwks_fetches == 1


async def test_discovery_falls_back_to_rfc8414_metadata_with_the_issuer_path_after_the_host() -> None:
    async with (
        local_issuer(path="/tenant1", openid=False) as issuer,
        verifying(config_for(issuer, jwks_url=None)) as verifier,
    ):
        assert (await verify(verifier, issuer.sign())).issuer == issuer.url
        assert issuer.url.endswith("/tenant1")
        assert issuer.metadata_requests == [
            "/tenant1/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server/tenant1",
        ]


async def test_a_discovery_document_naming_another_issuer_gives_keys_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="datapulse.auth.jwt")
    async with local_issuer() as issuer, verifying(config_for(issuer, jwks_url=None)) as verifier:
        issuer.metadata_issuer = "https://evil.example.test"
        with anyio.fail_after(WAIT_S), pytest.raises(KeysUnavailable, match="mismatch"):
            await verifier.verify(issuer.sign())
        assert issuer.jwks_fetches == 0
    assert any("mismatch" in record.getMessage() for record in caplog.records)


# --- static keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP"])
@pytest.mark.parametrize("form", ["public_key", "certificate"])
async def test_a_static_pem_verifies_tokens_without_any_network(kind: KeyKind, form: str) -> None:
    issuer = LocalIssuer(origin="https://issuer.invalid")  # never served: no DNS, no port
    kid = issuer.add_key(kind)
    pem = issuer.public_pem(kid) if form == "public_key" else issuer.certificate_pem(kid)
    config = JwtConfig(issuer=issuer.url, audiences=(AUDIENCE,), static_key_pem=pem)
    async with verifying(config) as verifier:
        assert (await verify(verifier, issuer.sign())).subject == "alice"
        assert (await verify(verifier, issuer.sign(headers={"kid": "whatever"}))).subject == "alice"
        other = issuer.add_key(kind)
        assert await rejection(verifier, issuer.sign(kid=other)) == "bad_signature"


@pytest.mark.parametrize("what", ["private_key", "garbage"])
def test_a_static_pem_that_is_not_a_public_key_is_refused(what: str) -> None:
    issuer = LocalIssuer()
    kid = issuer.add_key("EC")
    pem = (
        issuer.private_pem(kid)
        if what == "private_key"
        else "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
    )
    config = JwtConfig(issuer=issuer.url, audiences=(AUDIENCE,), static_key_pem=pem)
    with pytest.raises(ValueError, match="static_key_pem"):
        JwtVerifier(config)


async def test_a_caller_supplied_http_client_is_used_and_left_open(issuer: LocalIssuer) -> None:
    async with httpx2.AsyncClient(trust_env=False) as http:
        verifier = JwtVerifier(config_for(issuer), http=http)
        await verify(verifier, issuer.sign())
        await verifier.aclose()
        assert not http.is_closed
        assert issuer.jwks_fetches == 1
