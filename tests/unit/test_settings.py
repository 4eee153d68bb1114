"""Settings: environment names (ours and the seed's aliases), comma lists, validation, secure defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from datapulse.auth.principal import Principal
from datapulse.config import ConfigurationError, Settings
from datapulse.security import build_authenticator, static_verifier


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATAPULSE_TOKEN",
        "DATAPULSE_TOKENS",
        "LOCAL_BEARER_TOKEN",
        "DATAPULSE_PORT",
        "DATAPULSE_ALLOWED_HOSTS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_local_and_sane() -> None:
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.session_idle_ttl_s == 3600
    assert settings.keepalive_interval_s == 15
    assert settings.max_body_bytes == 4 * 1024 * 1024
    assert settings.is_loopback


def test_the_seed_token_variable_is_an_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_BEARER_TOKEN", "seed-token")
    verifier = static_verifier(Settings())
    assert verifier is not None
    assert verifier.principal_for("seed-token") == Principal("local", unrestricted=True)


def test_a_token_list_names_principals_and_sits_beside_the_single_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPULSE_TOKENS", "alice:a-token,bob:b-token")
    monkeypatch.setenv("DATAPULSE_TOKEN", "l-token")
    verifier = static_verifier(Settings())
    assert verifier is not None
    assert [verifier.principal_for(t) for t in ("a-token", "b-token", "l-token")] == [
        Principal("alice", unrestricted=True),
        Principal("bob", unrestricted=True),
        Principal("local", unrestricted=True),
    ]


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPULSE_ALLOWED_HOSTS", "a.example, b.example:*")
    assert Settings().allowed_hosts == ["a.example", "b.example:*"]


def test_no_token_and_no_explicit_opt_out_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="DATAPULSE_TOKEN"):
        build_authenticator(Settings())
    assert build_authenticator(Settings(insecure_no_auth=True)) is None


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"port": 70000}, "port"),
        ({"session_idle_ttl_s": 0}, "session_idle_ttl_s"),
        ({"trusted_proxies": "not-an-ip"}, "trusted_proxies"),
        ({"root_path": "api"}, "root_path"),
        ({"log_level": "loud"}, "log_level"),
        ({"host": "0.0.0.0", "insecure_no_auth": True, "token": "t"}, "insecure_no_auth"),
    ],
)
def test_invalid_values_fail_at_load_naming_the_field(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Settings(**overrides)  # type: ignore[arg-type]


def test_the_token_never_shows_in_settings_repr() -> None:
    assert "s3cret" not in repr(Settings(token="s3cret", tokens="a:s3cret2"))  # type: ignore[arg-type]
