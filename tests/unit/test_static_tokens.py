"""Static bearer tokens: parsing the list, and verifying without revealing which token matched."""

from __future__ import annotations

import pytest

from datapulse.auth.principal import Principal
from datapulse.auth.static import StaticTokenVerifier, parse_token_list


def test_token_list_maps_principals_to_tokens() -> None:
    assert parse_token_list("alice:t1, bob:t2 ,") == {"alice": "t1", "bob": "t2"}
    assert parse_token_list("svc:a:b") == {"svc": "a:b"}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("alice", "principal:token"),
        (":t1", "principal:token"),
        ("alice:", "principal:token"),
        ("alice:t1,alice:t2", "twice"),
        ("alice:t1,bob:t1", "reuses"),
        ("", "no tokens"),
    ],
)
def test_malformed_token_lists_are_refused_without_echoing_tokens(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        parse_token_list(spec)
    assert "t1" not in str(caught.value)
    assert "t2" not in str(caught.value)


@pytest.mark.anyio
async def test_verifier_finds_the_principal_of_each_token() -> None:
    verifier = StaticTokenVerifier({"alice": "t-alice", "bob": "t-bob"})
    assert verifier.principal_for("t-alice") == Principal("alice", unrestricted=True)
    assert verifier.principal_for("t-bob") == Principal("bob", unrestricted=True)
    assert verifier.principal_for("t-alic") is None
    assert verifier.principal_for("") is None
    token = await verifier.verify_token("t-bob")
    assert token is not None
    assert token.client_id == "bob"
    assert token.subject == "bob"
    assert await verifier.verify_token("nope") is None
