"""A real ``nginx`` for tests, configured from the recipe in ``deploy/nginx/datapulse.conf``.

`render_recipe` turns the recipe into a test configuration by replacing only its tagged lines (``# @upstream``,
``# @listen``, ``# @tls``): everything else, every directive the recipe documents, runs as shipped. `run_nginx`
writes a complete ``nginx.conf`` around it (foreground, one process, pid, logs and temp files under a work
directory, an access log naming the upstream of every request) and starts the real binary on free loopback
ports, optionally with a TLS listener on a certificate from a throwaway test CA; every wait is bounded.

Tests that need nginx skip with `NGINX_MISSING` as reason when it is not installed (``apt-get install nginx``,
as ``scripts/install.sh --test`` does).
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
from anyio.abc import Process

from tests.support.certs import make_certificates
from tests.support.processes import Finished, run_collecting
from tests.support.redis_server import free_port

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
RECIPE: Final = REPO_ROOT / "deploy" / "nginx" / "datapulse.conf"
STARTUP_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
ACCESS_LOG_FORMAT: Final = "$request_method $request_uri $status $upstream_addr"
"""One access-log line per request: method, URI, status, and the instance(s) nginx sent it to."""

_TAG: Final = re.compile(r"#\s*@(?P<tag>[a-z]+)\s*$")
RECIPE_TAGS: Final = frozenset({"upstream", "listen", "tls", "name"})


def nginx_binary() -> str | None:
    """The nginx executable: on PATH, or in /usr/sbin where Debian puts it (not on a non-root PATH)."""
    found = shutil.which("nginx")
    if found is not None:
        return found
    debian = Path("/usr/sbin/nginx")
    return str(debian) if debian.is_file() and os.access(debian, os.X_OK) else None


NGINX_MISSING: Final = (
    None
    if nginx_binary() is not None
    else "nginx is not installed: apt-get install nginx (scripts/install.sh --test installs it)"
)
"""Why nginx tests cannot run here, or None when they can."""


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate for 127.0.0.1 and localhost, its key, and the throwaway CA that signed it (PEM files)."""

    certificate: Path
    key: Path
    ca: Path

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that trusts exactly the test CA."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a fresh test CA and a server certificate it signed (`tests.support.certs.make_certificates`)."""
    files = make_certificates(directory)
    return TlsFiles(files.server_cert, files.server_key, files.ca_cert)


def render_recipe(
    recipe: str, *, upstreams: Sequence[str], port: int, tls: TlsFiles | None = None, tls_port: int | None = None
) -> str:
    """The recipe with its tagged lines replaced; every other line as shipped.

    ``# @upstream`` lines become one ``server HOST:PORT;`` per entry of ``upstreams``; ``# @listen`` becomes
    ``listen 127.0.0.1:PORT;``; the ``# @tls`` lines become a TLS listener on ``tls_port`` with ``tls``'s files
    (or go when ``tls`` is None); ``# @name`` stays (nginx picks the only server on a port whatever the Host).

    Raises:
        ValueError: a tag the renderer does not know, or one it needs is missing (recipe and renderer disagree).
    """
    if not upstreams:
        raise ValueError("nginx needs at least one upstream")
    if (tls is None) != (tls_port is None):
        raise ValueError("tls and tls_port go together")
    replacements: dict[str, list[str]] = {
        "upstream": [f"server {address};" for address in upstreams],
        "listen": [f"listen 127.0.0.1:{port};"],
        "tls": []
        if tls is None
        else [
            f"listen 127.0.0.1:{tls_port} ssl;",
            f"ssl_certificate {tls.certificate};",
            f"ssl_certificate_key {tls.key};",
        ],
    }
    out: list[str] = []
    seen: set[str] = set()
    for line in recipe.splitlines():
        match = _TAG.search(line)
        if match is None:
            out.append(line)
            continue
        tag = match["tag"]
        if tag not in RECIPE_TAGS:
            raise ValueError(f"unknown tag @{tag} in the nginx recipe: {line.strip()!r}")
        if tag == "name":
            out.append(line)
        elif tag not in seen:  # the first line of a tag stands for the whole group
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + replacement for replacement in replacements[tag])
        seen.add(tag)
    missing = RECIPE_TAGS - seen
    if missing:
        raise ValueError(f"the nginx recipe lacks the tagged line(s) {sorted(missing)}")
    return "\n".join(out) + "\n"


def main_config(workdir: Path, site: Path) -> str:
    """A complete nginx.conf: foreground, one process, every file under ``workdir``, ``site`` included in http."""
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log notice;

events {{
    worker_connections 1024;
}}

http {{
    log_format upstreams '{ACCESS_LOG_FORMAT}';
    access_log {workdir}/access.log upstreams;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;

    include {site};
}}
"""


def read_recipe(recipe: Path = RECIPE) -> str:
    """The recipe's text (by default deploy/nginx/datapulse.conf)."""
    return recipe.read_text()


def write_config(workdir: Path, site_text: str) -> Path:
    """Write ``site_text`` as ``workdir/conf.d/datapulse.conf`` and a `main_config` including it; the main path."""
    (workdir / "conf.d").mkdir(parents=True, exist_ok=True)
    site = workdir / "conf.d" / "datapulse.conf"
    site.write_text(site_text)
    main = workdir / "nginx.conf"
    main.write_text(main_config(workdir, site))
    return main


def _command(binary: str, workdir: Path, main: Path, *extra: str) -> list[str]:
    # -p: relative paths resolve in workdir; -e: the start-up error log, before nginx.conf is read, is ours too.
    return [binary, "-p", f"{workdir}/", "-e", str(workdir / "error.log"), "-c", str(main), *extra]


async def check_config(workdir: Path, site_text: str, *, timeout_s: float = 20.0) -> Finished:
    """``nginx -t`` on `main_config` around ``site_text`` (written under ``workdir``)."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(NGINX_MISSING)
    main = write_config(workdir, site_text)
    return await run_collecting(_command(binary, workdir, main, "-t"), timeout_s=timeout_s)


@dataclass
class Nginx:
    """A running nginx: its addresses, its configuration as rendered, and its access log."""

    process: Process
    port: int
    workdir: Path
    site: str
    """The rendered recipe, as nginx runs it."""
    tls: TlsFiles | None = None
    tls_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        assert self.tls_port is not None, "started without TLS"
        return f"https://127.0.0.1:{self.tls_port}"

    def access_log(self) -> list[str]:
        """The access-log lines written so far (`ACCESS_LOG_FORMAT`; nginx writes a line once a request ends)."""
        path = self.workdir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text() if path.exists() else ""


async def _accepts(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


@asynccontextmanager
async def run_nginx(
    upstreams: Sequence[str],
    workdir: Path,
    *,
    port: int | None = None,
    tls: TlsFiles | None = None,
    tls_port: int | None = None,
    recipe: Path = RECIPE,
) -> AsyncIterator[Nginx]:
    """Start nginx with the rendered ``recipe`` in front of ``upstreams`` (``host:port``) and stop it on exit.

    ``port`` (default: a free one) is the plain listener; with ``tls`` there is a TLS listener on ``tls_port``
    (default: a free one) too. Ready once every listener accepts connections (bounded by `STARTUP_TIMEOUT_S`).

    Raises:
        RuntimeError: nginx is not installed, exited, or did not listen in time (its error log is in the message).
    """
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError(NGINX_MISSING)
    port = port if port is not None else free_port()
    if tls is not None and tls_port is None:
        tls_port = free_port()
    site = render_recipe(read_recipe(recipe), upstreams=upstreams, port=port, tls=tls, tls_port=tls_port)
    main = write_config(workdir, site)
    process = await anyio.open_process(
        _command(binary, workdir, main), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    nginx = Nginx(process, port, workdir, site, tls, tls_port)
    try:
        listeners = [port] if tls_port is None else [port, tls_port]
        try:
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                for listener in listeners:
                    while not await _accepts(listener):
                        if process.returncode is not None:
                            raise RuntimeError(f"nginx exited with {process.returncode}:\n{nginx.error_log()}")
                        await anyio.sleep(0.02)  # polling a starting process: no event to wait on
        except TimeoutError:
            raise RuntimeError(f"nginx did not listen within {STARTUP_TIMEOUT_S:g} s:\n{nginx.error_log()}") from None
        yield nginx
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()  # SIGTERM: fast shutdown, open streams are closed (SIGQUIT would wait for them)
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                with anyio.move_on_after(STOP_TIMEOUT_S):
                    await process.wait()
            await process.aclose()


# --- reading a configuration -------------------------------------------------------------------------------------

_UNITS_S: Final = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}
_SIZE_UNITS: Final = {"": 1, "k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2, "g": 1024**3, "G": 1024**3}


def directive_values(config: str, name: str) -> list[str]:
    """The argument text of every ``name ...;`` directive in ``config`` (comments ignored), in order."""
    values: list[str] = []
    for raw in config.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith(name + " ") and line.endswith(";"):
            values.append(line[len(name) : -1].strip())
    return values


def nginx_seconds(value: str) -> float:
    """An nginx time (``90``, ``1h``, ``1h 30m``, ``500ms``) in seconds."""
    total = 0.0
    parts = re.findall(r"(\d+)(ms|[smhdwMy]?)", value.replace(" ", ""))
    if not parts or "".join(number + unit for number, unit in parts) != value.replace(" ", ""):
        raise ValueError(f"not an nginx time: {value!r}")
    for number, unit in parts:
        total += int(number) * _UNITS_S[unit or "s"]
    return total


def nginx_bytes(value: str) -> int:
    """An nginx size (``4m``, ``512k``, ``1024``) in bytes."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    if match is None:
        raise ValueError(f"not an nginx size: {value!r}")
    return int(match[1]) * _SIZE_UNITS[match[2]]
