"""Static bearer tokens (RFC 6750): one token for principal ``local``, or a list of ``principal:token``."""

from __future__ import annotations

import hashlib
import hmac
import time

from datapulse import _sdk
from datapulse.auth.principal import Principal

LOCAL_PRINCIPAL = "local"
STATIC_ISSUER = "datapulse:static"


def parse_token_list(spec: str) -> dict[str, str]:
    """Parse ``"alice:token1,bob:token2"`` into ``{"alice": "token1", "bob": "token2"}``.

    Raises:
        ValueError: an entry lacks ``:``, a name or token is empty, a name repeats, or two
            principals share one token. Messages never include token values.
    """
    tokens: dict[str, str] = {}
    for index, entry in enumerate(item.strip() for item in spec.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or not token:
            raise ValueError(f"token entry {index + 1} must look like 'principal:token'")
        if name in tokens:
            raise ValueError(f"principal {name!r} is listed twice")
        if token in tokens.values():
            raise ValueError(f"principal {name!r} reuses another principal's token")
        tokens[name] = token
    if not tokens:
        raise ValueError("no tokens given; expected 'principal:token,...'")
    return tokens


class StaticTokenVerifier:
    """Checks bearer tokens against a fixed set, in constant time.

    Each presented token is hashed (SHA-256) and compared with every configured token's hash using
    `hmac.compare_digest`, without stopping at a match, so timing reveals neither which token
    matched nor how much of it. Satisfies the SDK's ``TokenVerifier`` protocol too.

    Args:
        tokens: principal name → token.
    """

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(name, hashlib.sha256(token.encode()).digest()) for name, token in tokens.items()]
        self._principals = {name: Principal(name, unrestricted=True) for name in tokens}
        self._access_tokens: dict[str, _sdk.AccessToken] = {}

    def principal_for(self, token: str) -> Principal | None:
        """The principal owning ``token``, or None."""
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = name
        return self._principals[found] if found is not None else None

    def access_token(self, principal: Principal, token: str) -> _sdk.AccessToken:
        """The SDK `AccessToken` of a verified static token: made once per principal and shared by its requests
        (a long-lived stream keeps its request's token object for as long as it is open). Its ``iat`` claim is
        when this process first saw the token."""
        known = self._access_tokens.get(principal.name)  # a principal's token is fixed: it is this one
        if known is None:
            known = self._access_tokens[principal.name] = access_token_for(principal, token)
        return known

    async def verify_token(self, token: str) -> _sdk.AccessToken | None:
        """SDK ``TokenVerifier``: an `AccessToken` for a known token, else None."""
        principal = self.principal_for(token)
        return None if principal is None else self.access_token(principal, token)


def access_token_for(principal: Principal, token: str) -> _sdk.AccessToken:
    """The SDK `AccessToken` handlers see through ``get_access_token()`` for ``principal``."""
    return _sdk.AccessToken(
        token=token,
        client_id=principal.name,
        scopes=sorted(principal.scopes),
        expires_at=None,
        subject=principal.name,
        claims={"iss": STATIC_ISSUER, "sub": principal.name, "iat": int(time.time())},
    )
