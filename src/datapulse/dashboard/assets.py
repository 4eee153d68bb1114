"""The dashboard's files (``static/``: ``index.html``, ``app.css``, ``app.js``), served from the package at
``/dashboard/``. Public: they hold no data (every view asks the authenticated API). Read once, kept in memory,
with an ETag; a strict Content-Security-Policy (nothing from elsewhere, no inline script).
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources

from starlette.types import Receive, Scope, Send

from datapulse.errors import NotFound
from datapulse.runtime import Runtime
from datapulse.transports._http import header, send_bytes

ASSETS = {"index.html": "text/html; charset=utf-8", "app.css": "text/css; charset=utf-8", "app.js": "text/javascript"}
"""File name → Content-Type."""
PATHS = {"/dashboard": "index.html", "/dashboard/": "index.html"} | {f"/dashboard/{name}": name for name in ASSETS}
"""Request path → file name."""
CSP = (
    b"default-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@cache
def asset(name: str) -> tuple[bytes, bytes]:
    """The bytes of static file ``name`` and its ETag (quoted SHA-256 prefix).

    Raises:
        NotFound: ``name`` is not one of `ASSETS`, or the package lacks it (404).
    """
    if name not in ASSETS:
        raise NotFound(f"Not Found: no dashboard file {name!r}")
    try:
        body = resources.files("datapulse.dashboard").joinpath("static", name).read_bytes()
    except OSError:
        raise NotFound(f"Not Found: the dashboard file {name!r} is missing from this installation") from None
    return body, b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'


async def handle_asset(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /dashboard/<file>``: one static file; ``/dashboard`` redirects to ``/dashboard/`` (so relative links
    resolve); 304 when ``If-None-Match`` matches.

    Raises:
        NotFound: an unknown file (404).
    """
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if path == "/dashboard":
        location = (root + "/dashboard/").encode("latin-1")
        await send_bytes(send, 308, b"", ((b"location", location),))
        return
    name = PATHS.get(path)
    if name is None:
        raise NotFound(f"Not Found: no dashboard file at {path!r}")
    body, etag = asset(name)
    headers = (
        (b"content-type", ASSETS[name].encode()),
        (b"etag", etag),
        (b"cache-control", b"no-cache"),
        (b"content-security-policy", CSP),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    )
    if header(scope, b"if-none-match") == etag.decode():
        await send_bytes(send, 304, b"", headers)
        return
    await send_bytes(send, 200, body, headers)
