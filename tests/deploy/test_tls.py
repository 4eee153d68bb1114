"""TLS: ``datapulse serve --ssl-certfile --ssl-keyfile`` serves HTTPS that real clients verify against the CA, bad
TLS settings are refused at start by name, and behind a TLS-terminating proxy (``trusted_proxies``) every URL
DataPulse sends carries the client's scheme and host.

Certificates come from a throwaway CA (`tests.support.certs`); the servers are real (a ``datapulse serve``
subprocess, or uvicorn in-process like the other proxy tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import anyio
import httpx2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from pydantic import SecretStr, ValidationError

from datapulse.config import Settings
from datapulse.server import uvicorn_config
from tests.support.certs import CertificateFiles, make_certificates
from tests.support.mcp_http import jsonrpc
from tests.support.servers import TOKEN, RunningServer, bearer, make_settings, serve_in_process, spawn_datapulse
from tests.support.sse import open_sse

DATAPULSE = str(Path(sys.executable).parent / "datapulse")
CLIENT_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 30
METADATA = "/.well-known/oauth-protected-resource/mcp"
PROXIED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "public.example"}
"""What a TLS-terminating proxy in front of DataPulse adds to each request of a client of https://public.example."""


@pytest.fixture
def certs(tmp_path: Path) -> CertificateFiles:
    return make_certificates(tmp_path)


def tls_args(certs: CertificateFiles) -> list[str]:
    return ["--ssl-certfile", str(certs.server_cert), "--ssl-keyfile", str(certs.server_key)]


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    """``datapulse serve --port 0 --token ... ARGS`` run to its end (these all fail at start)."""
    return subprocess.run(
        [DATAPULSE, "serve", "--port", "0", "--token", TOKEN, *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


# --- serving HTTPS directly ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_serve_with_a_certificate_and_key_answers_https_that_verifies_against_the_ca(
    certs: CertificateFiles,
) -> None:
    async with spawn_datapulse([*tls_args(certs), "--token", TOKEN]) as proc:
        assert proc.url.startswith("https://127.0.0.1:"), proc.banner[0]
        await proc.banner.wait_for(lambda line: line == "}", timeout_s=CLIENT_TIMEOUT_S)  # the snippet's last line
        text = "\n".join(proc.banner)
        assert f"{proc.url}/mcp" in text
        assert "http://" not in text
        verified = certs.client_context()
        with anyio.fail_after(CLIENT_TIMEOUT_S):
            async with httpx2.AsyncClient(base_url=proc.url, verify=verified, timeout=10) as client:
                health = await client.get("/health")
                assert health.status_code == 200
                assert health.json()["status"] == "ok"
                refused = await client.post("/mcp", content=jsonrpc("tools/list"))
                assert refused.status_code == 401
                metadata_url = f"{proc.url}{METADATA}"
                assert f'resource_metadata="{metadata_url}"' in refused.headers["www-authenticate"]
                metadata = await client.get(METADATA)
                assert metadata.json()["resource"] == f"{proc.url}/mcp"
            async with (
                httpx2.AsyncClient(headers=bearer(), verify=verified, timeout=10) as http,
                Client(streamable_http_client(f"{proc.url}/mcp", http_client=http)) as mcp,
            ):
                result = await mcp.call_tool("echo", {"message": "over TLS"})
        assert result.is_error is False
        assert result.content == [TextContent(type="text", text="over TLS")]


@pytest.mark.anyio
async def test_a_client_that_does_not_trust_the_ca_fails_the_handshake(certs: CertificateFiles) -> None:
    async with spawn_datapulse([*tls_args(certs), "--token", TOKEN]) as proc:
        with anyio.fail_after(CLIENT_TIMEOUT_S):
            async with httpx2.AsyncClient(base_url=proc.url, timeout=10) as untrusting:  # the system's CAs only
                with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await untrusting.get("/health")
            plain = proc.url.replace("https://", "http://", 1)
            async with httpx2.AsyncClient(base_url=plain, timeout=10) as cleartext:
                with pytest.raises(httpx2.TransportError):  # plain HTTP to a TLS port gets no HTTP answer
                    await cleartext.get("/health")


@pytest.mark.anyio
async def test_an_encrypted_key_is_served_with_its_password_from_the_environment(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path, key_password="k3y-pass")
    env = {
        "DATAPULSE_SSL_CERTFILE": str(certs.server_cert),
        "DATAPULSE_SSL_KEYFILE": str(certs.server_key),
        "DATAPULSE_SSL_KEYFILE_PASSWORD": "k3y-pass",
    }
    async with spawn_datapulse(["--token", TOKEN], env=env) as proc:
        assert proc.url.startswith("https://")
        with anyio.fail_after(CLIENT_TIMEOUT_S):
            async with httpx2.AsyncClient(base_url=proc.url, verify=certs.client_context(), timeout=10) as client:
                assert (await client.get("/health")).status_code == 200


# --- TLS settings -------------------------------------------------------------------------------------------------


def test_uvicorn_is_given_the_certificate_key_and_password_and_keeps_its_proxy_headers_off(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path, key_password="pw")
    settings = Settings(
        ssl_certfile=str(certs.server_cert), ssl_keyfile=str(certs.server_key), ssl_keyfile_password=SecretStr("pw")
    )
    config = uvicorn_config(None, settings)
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(certs.server_cert), str(certs.server_key))
    assert config.ssl_keyfile_password == "pw"
    assert config.is_ssl
    assert config.proxy_headers is False
    assert settings.base_url == "https://127.0.0.1:8000"
    plain = uvicorn_config(None, Settings())
    assert not plain.is_ssl
    assert Settings().base_url == "http://127.0.0.1:8000"


def test_the_tls_files_come_from_the_environment_too(certs: CertificateFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPULSE_SSL_CERTFILE", str(certs.server_cert))
    monkeypatch.setenv("DATAPULSE_SSL_KEYFILE", str(certs.server_key))
    settings = Settings()
    assert settings.tls
    assert (settings.ssl_certfile, settings.ssl_keyfile) == (str(certs.server_cert), str(certs.server_key))


def test_a_certificate_without_a_key_or_a_key_without_a_certificate_is_refused_naming_both(
    certs: CertificateFiles,
) -> None:
    for given in ({"ssl_certfile": str(certs.server_cert)}, {"ssl_keyfile": str(certs.server_key)}):
        with pytest.raises(ValidationError, match="ssl_keyfile") as refused:
            Settings(**given)  # type: ignore[arg-type]
        assert "--ssl-certfile" in str(refused.value)
        assert "give both or neither" in str(refused.value)
    assert not Settings(ssl_certfile="", ssl_keyfile="").tls  # empty (an unset environment variable): plain HTTP


@pytest.mark.parametrize(
    ("which", "path", "fragment"),
    [
        ("ssl_certfile", "missing.pem", "no such file: "),
        ("ssl_keyfile", "missing.pem", "no such file: "),
        ("ssl_certfile", ".", "not a file: "),
    ],
)
def test_a_missing_tls_file_is_refused_naming_the_option_and_the_file(
    certs: CertificateFiles, tmp_path: Path, which: str, path: str, fragment: str
) -> None:
    files = {"ssl_certfile": str(certs.server_cert), "ssl_keyfile": str(certs.server_key)}
    files[which] = str(tmp_path / path)
    with pytest.raises(ValidationError, match=which) as refused:
        Settings(**files)  # type: ignore[arg-type]
    assert f"{fragment}{str(tmp_path / path)!r}" in str(refused.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_is_refused_naming_the_option(certs: CertificateFiles) -> None:
    certs.server_key.chmod(0)
    with pytest.raises(ValidationError, match="ssl_keyfile") as refused:
        Settings(ssl_certfile=str(certs.server_cert), ssl_keyfile=str(certs.server_key))
    assert "cannot read" in str(refused.value)
    assert "Permission denied" in str(refused.value)


def test_a_key_of_another_certificate_is_refused_at_load(certs: CertificateFiles, tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    other = make_certificates(tmp_path / "other")
    with pytest.raises(ValidationError, match="is not the private key of the certificate in --ssl-certfile"):
        Settings(ssl_certfile=str(certs.server_cert), ssl_keyfile=str(other.server_key))


def test_an_encrypted_key_without_its_password_is_refused_not_prompted_for(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path, key_password="right")
    files = {"ssl_certfile": str(certs.server_cert), "ssl_keyfile": str(certs.server_key)}
    for password in (None, "wrong"):
        with pytest.raises(ValidationError, match="--ssl-keyfile-password is missing or wrong"):
            Settings(**files, ssl_keyfile_password=password)  # type: ignore[arg-type]
    assert Settings(**files, ssl_keyfile_password="right").tls  # type: ignore[arg-type]


def test_a_certificate_file_without_a_certificate_is_refused(certs: CertificateFiles) -> None:
    with pytest.raises(ValidationError, match="holds no PEM certificate"):
        Settings(ssl_certfile=str(certs.server_key), ssl_keyfile=str(certs.server_key))


def test_serve_refuses_bad_tls_options_with_the_option_named_and_no_traceback(certs: CertificateFiles) -> None:
    alone = serve("--ssl-certfile", str(certs.server_cert))
    assert alone.returncode == 2
    assert "--ssl-keyfile: Value error, required with --ssl-certfile: give both or neither" in alone.stderr
    missing = serve("--ssl-certfile", "no-such-cert.pem", "--ssl-keyfile", str(certs.server_key))
    assert missing.returncode == 2
    assert "--ssl-certfile: Value error, no such file: 'no-such-cert.pem'" in missing.stderr
    for result in (alone, missing):
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


# --- behind a TLS-terminating proxy -------------------------------------------------------------------------------


def _jwt_settings(**overrides: object) -> Settings:
    """Settings that accept JWTs (static key; no network), so the RFC 9728 metadata names an issuer."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    values: dict[str, object] = {"allowed_hosts": "public.example,127.0.0.1:*", **overrides}
    return make_settings(jwt_issuer="https://issuer.example", jwt_key=pem, **values)


@pytest.fixture
async def behind_proxy() -> AsyncIterator[RunningServer]:
    """A server whose proxy is 127.0.0.1 (the tests' own address: the tests play the proxy)."""
    async with serve_in_process(_jwt_settings(trusted_proxies="127.0.0.1")) as running:
        yield running


@pytest.fixture
async def proxy_elsewhere() -> AsyncIterator[RunningServer]:
    """A server whose proxy is at 10.0.0.0/8: the tests' requests come from an untrusted peer."""
    async with serve_in_process(_jwt_settings(trusted_proxies="10.0.0.0/8")) as running:
        yield running


@pytest.mark.anyio
async def test_behind_a_trusted_proxy_the_protected_resource_metadata_names_the_public_https_url(
    behind_proxy: RunningServer,
) -> None:
    async with behind_proxy.client(token=None) as client:
        metadata = await client.get(METADATA, headers=PROXIED)
    assert metadata.status_code == 200
    assert metadata.json()["resource"] == "https://public.example/mcp"
    assert metadata.json()["authorization_servers"] == ["https://issuer.example"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("forwarded_proto", "scheme"),
    [("https", "https"), ("HTTPS", "https"), ("https, http", "https"), ("http ,https", "http"), ("gopher", "http")],
)
async def test_the_first_forwarded_proto_of_a_proxy_chain_counts_in_any_case(
    behind_proxy: RunningServer, forwarded_proto: str, scheme: str
) -> None:
    async with behind_proxy.client(token=None) as client:
        headers = {**PROXIED, "X-Forwarded-Proto": forwarded_proto}
        metadata = await client.get(METADATA, headers=headers)
    assert metadata.json()["resource"] == f"{scheme}://public.example/mcp"


@pytest.mark.anyio
async def test_behind_a_trusted_proxy_a_401_points_to_the_public_https_metadata(behind_proxy: RunningServer) -> None:
    async with behind_proxy.client(token=None) as client:
        for method, path in (("POST", "/mcp"), ("GET", "/sse"), ("POST", "/message")):
            refused = await client.request(method, path, headers=PROXIED, content=jsonrpc("tools/list"))
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == (
                f'Bearer realm="datapulse", resource_metadata="https://public.example{METADATA}"'
            )


@pytest.mark.anyio
async def test_behind_a_trusted_proxy_the_sse_endpoint_event_resolves_to_the_public_https_url(
    behind_proxy: RunningServer,
) -> None:
    async with behind_proxy.client() as client, open_sse(client, "GET", "/sse", headers=PROXIED) as stream:
        assert stream.response.status_code == 200
        endpoint = await stream.next_event()
    assert endpoint.event == "endpoint"
    assert endpoint.data.startswith("/messages?session_id=")  # relative: the client's own scheme and host apply
    assert urljoin("https://public.example/sse", endpoint.data).startswith("https://public.example/messages?")


@pytest.mark.anyio
async def test_x_forwarded_headers_from_an_untrusted_peer_are_ignored(proxy_elsewhere: RunningServer) -> None:
    direct = proxy_elsewhere.url  # http://127.0.0.1:PORT: what the peer itself addressed
    async with proxy_elsewhere.client(token=None) as client:
        metadata = await client.get(METADATA, headers=PROXIED)
        assert metadata.json()["resource"] == f"{direct}/mcp"
        refused = await client.post("/mcp", headers=PROXIED, content=jsonrpc("tools/list"))
        assert refused.status_code == 401
        assert f'resource_metadata="{direct}{METADATA}"' in refused.headers["www-authenticate"]
        assert "public.example" not in refused.headers["www-authenticate"]


@pytest.mark.anyio
async def test_x_forwarded_host_from_an_untrusted_peer_does_not_pass_the_host_check() -> None:
    settings = _jwt_settings(trusted_proxies="10.0.0.0/8", allowed_hosts="public.example")
    async with serve_in_process(settings) as running, running.client(token=None) as client:
        misdirected = await client.get(METADATA, headers=PROXIED)
    assert misdirected.status_code == 421


@pytest.mark.anyio
async def test_a_public_url_names_every_url_whatever_the_forwarded_headers_say() -> None:
    settings = _jwt_settings(public_url="https://mcp.example.com", trusted_proxies="127.0.0.1")
    async with serve_in_process(settings) as running, running.client(token=None) as client:
        for headers in (PROXIED, {}):
            metadata = await client.get(METADATA, headers=headers)
            assert metadata.json()["resource"] == "https://mcp.example.com/mcp"
            refused = await client.post("/mcp", headers=headers, content=jsonrpc("tools/list"))
            assert f'resource_metadata="https://mcp.example.com{METADATA}"' in refused.headers["www-authenticate"]
