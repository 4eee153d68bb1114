"""Who sees what on the dashboard (pure): a principal sees its own sessions, audit records and frames; an
admin sees every principal's.

An admin is the anonymous principal (auth off: the operator on loopback), a principal whose token carries the
scope ``datapulse:admin`` explicitly (a JWT ``scope``), or one named in ``dashboard_admins`` (static tokens
carry no scopes; the default names ``local``, the principal of the single ``DATAPULSE_TOKEN``). A static
token's "every scope" (`Principal.unrestricted`) does not make an admin: listed principals are peers.
"""

from __future__ import annotations

from collections.abc import Collection

from datapulse.auth.principal import ANONYMOUS, Principal

ADMIN_SCOPE = "datapulse:admin"


def is_admin(principal: Principal, admins: Collection[str]) -> bool:
    """Whether ``principal`` sees every principal's sessions (``admins``: principal names or keys)."""
    if principal == ANONYMOUS:
        return True
    return ADMIN_SCOPE in principal.scopes or principal.name in admins or principal.key in admins


def sees(principal: Principal, owner_key: str, admins: Collection[str]) -> bool:
    """Whether ``principal`` may see what belongs to the principal whose key is ``owner_key``."""
    return principal.key == owner_key or is_admin(principal, admins)
