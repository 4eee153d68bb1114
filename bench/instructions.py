"""What one call costs in machine instructions, per layer: deterministic counts under valgrind, for changes too small
for a throughput benchmark to see on a machine whose speed drifts.

Not a same-run benchmark (see ``bench.run``): each row drives an ASGI app in-process (no sockets, no HTTP server),
with the 2026-07-28 ``tools/call`` echo `bench.run` sends (`bench.layers`' request), under ``valgrind
--tool=cachegrind --cache-sim=no``, and reports the instructions the process executes per call: (instructions after
``--calls`` more calls minus instructions after none) ÷ ``--calls``, both after the same warm-up, with
``PYTHONHASHSEED=0``. Two runs of the same code agree to within about 0.5%. Instructions are not time (a cache miss
costs more than an add), but they move with the work a change removes, and they do not drift.

Rows: DataPulse with every layer `bench.run` turns on (bearer token, scope rule, rate limits, audit file), then
without each layer in turn (so each row's Δ is that layer's cost), with none of them, and with every layer on and the
fast path off; the SDK's ``streamable_http_app(json_response=True, stateless_http=True)``; and a bare ASGI app that
answers a fixed body (the harness's own cost, in every row).

    .venv/bin/python -m bench.instructions                        # this checkout
    .venv/bin/python -m bench.instructions --against /tmp/before/src   # and another checkout's src, side by side

Needs ``valgrind`` (``apt-get install valgrind``). Each row runs two processes at once (the machine's two CPUs); a
row takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WARMUP_CALLS = 300
BASE_CALLS = 200
"""Calls made in both runs of a row after the warm-up (their cost cancels out with start-up's)."""

ALL_ON: dict[str, Any] = {
    "token": "bench-layers-token-0123456789abcdef",
    "scopes": "tool:*=bench:call",
    "rate_limit": "50000/second",
    "tool_rate_limits": "*=50000/second",
    "audit_sinks": "file:{audit}",
}
"""DataPulse's settings in `bench.run` (`bench.servers.datapulse_env`), as `Settings` fields."""

ROWS: list[tuple[str, str]] = [
    ("DataPulse, every layer on (as in bench.run)", "dp"),
    ("  without the audit file", "dp-audit_sinks"),
    ("  without the rate limits", "dp-rate_limit,tool_rate_limits"),
    ("  without the scope rule", "dp-scopes"),
    ("  with none of them (no auth at all)", "dp-token,scopes,rate_limit,tool_rate_limits,audit_sinks"),
    ("DataPulse, every layer on, fast path off", "dp-fast"),
    ("SDK streamable_http_app(json_response=True, stateless_http=True)", "sdk"),
    ("bare ASGI app, a fixed answer (the harness)", "bare"),
]
"""(label, child configuration): ``dp-A,B`` is DataPulse without the settings A and B (``fast``: the fast path)."""


def child(config: str, calls: int) -> None:
    """Make ``WARMUP_CALLS + BASE_CALLS + calls`` calls to the app of ``config``, in this process."""
    import uvloop

    from bench.layers import TOKEN, _call

    async def bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"jsonrpc":"2.0","id":1,"result":"hi %d"}' % scope["n"]})

    async def drive(app: Any, drop: Any) -> None:
        for n in range(WARMUP_CALLS + BASE_CALLS + calls):
            await _call(app, n, drop=drop)

    async def run() -> None:
        no_token = [(b"authorization", b"Bearer " + TOKEN.encode())]
        if config == "bare":
            await drive(_numbered(bare), None)
        elif config == "sdk":
            from bench.sdk_server import build

            app = build("sdk-http-json")
            async with app.router.lifespan_context(app):
                await drive(app, no_token)
        else:
            from bench.echo_app import app as server
            from datapulse.app import create_app, lifespan, runtime_of
            from datapulse.config import Settings

            dropped = set(config.removeprefix("dp").removeprefix("-").split(",")) - {""}
            audit = Path(tempfile.mkdtemp(prefix="bench-instructions-")) / "audit.jsonl"
            options = {key: value.format(audit=audit) for key, value in ALL_ON.items() if key not in dropped}
            if "token" not in options:
                options["insecure_no_auth"] = True
            settings = Settings(log_level="warning", fast_path="fast" not in dropped, **options)
            app = create_app(settings, server=server)
            async with lifespan(runtime_of(app)):
                await drive(app, no_token if "token" not in options else None)

    uvloop.run(run())


def _numbered(app: Any) -> Any:
    """``app`` with the request's number (parsed from its body) in ``scope["n"]``, for the bare answer."""

    async def numbered(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        scope["n"] = int(re.search(rb'"id":(\d+)', message["body"]).group(1))  # type: ignore[union-attr]

        async def again() -> dict[str, Any]:
            return message

        await app(scope, again, send)

    return numbered


def instructions(config: str, calls: int, src: str | None) -> int:
    """Instructions executed by one child process (valgrind's ``I refs``)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if src is not None:
        env["PYTHONPATH"] = src
    argv = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    argv += [sys.executable, "-m", "bench.instructions", "--child", config, "--calls", str(calls)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"{config}: valgrind run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_call(config: str, calls: int, src: str | None) -> float:
    """Instructions per call of ``config``: two runs, ``calls`` apart, at once."""
    with ThreadPoolExecutor(2) as pool:
        base, more = pool.map(lambda n: instructions(config, n, src), (0, calls))
    return (more - base) / calls


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="calls counted per row (default 1000)")
    parser.add_argument("--against", metavar="SRC", help="also count another checkout's src directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.calls)
        return
    columns: list[tuple[str, str | None]] = [("this checkout", None)]
    if args.against:
        columns.append((args.against, args.against))
    header = " | ".join(f"{name}: instructions per call | Δ vs every layer on" for name, _ in columns)
    print(f"| row | {header} |")
    print("|---|" + "---:|---:|" * len(columns))
    first: dict[str | None, float] = {}
    for label, config in ROWS:
        cells = []
        for _, src in columns:
            if src is not None and not config.startswith("dp"):
                cells += ["(same)", ""]
                continue
            value = per_call(config, args.calls, src)
            first.setdefault(src, value)
            delta = "" if value == first[src] else f"{value - first[src]:+,.0f}"
            cells += [f"{value:,.0f}", delta]
            print(f"{label.strip()} [{src or 'this checkout'}]: {value:,.0f}", file=sys.stderr, flush=True)
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
