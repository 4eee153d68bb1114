"""The history checker's soak: the workload of ``tests/history`` for ten minutes or more, under the same nemesis.

Usage (from the repository root)::

    .venv/bin/python -m bench.reliability                         # 600 s, the figures in bench/RELIABILITY.md
    .venv/bin/python -m bench.reliability --duration 60           # a short run, as in CI
    .venv/bin/python -m bench.reliability --duration 900 --api-clients 8 --json out.json
    .venv/bin/python -m bench.reliability --duration 180 --faults "Redis restarted" --keep /tmp/run   # one fault kind

Three ``datapulse serve`` instances and one ``redis-server`` (fsynced append-only file) behind a round-robin
proxy; clients on all four transports (DataPulse API, 2025-11-25 Streamable HTTP with progress streams,
2024-11-05 HTTP+SSE, 2026-07-28 stateless); a nemesis that cuts connections, ``kill -9``s and drains instances
(restarting them), pauses and restarts Redis, and slows readers, one fault every ``--fault-every`` seconds. It
prints the checker's table (requests, results, lost / duplicated / reordered, leaks, errors by kind, recovery
per fault) and exits 1 if the history breaks a guarantee. Correctness, not speed: nothing here is timed
against a baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # `python bench/reliability.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
from tests.history.run import FAULT_KINDS, RunConfig, run_history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of workload (default 600)")
    parser.add_argument("--api-clients", type=int, default=4)
    parser.add_argument("--streamable-clients", type=int, default=2)
    parser.add_argument("--sse-clients", type=int, default=2)
    parser.add_argument("--modern-clients", type=int, default=2)
    parser.add_argument("--listen-clients", type=int, default=2)
    parser.add_argument("--fault-every", type=float, default=6.0, help="seconds between faults (default 6)")
    parser.add_argument(
        "--faults",
        help="only these faults, by a word of their names, comma-separated (e.g. 'Redis restarted,kill'); default all",
    )
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--keep", type=Path, help="keep the run's files here (history.jsonl, instance logs)")
    args = parser.parse_args()
    kinds: tuple[str, ...] = FAULT_KINDS
    if args.faults:
        words = [word.strip().lower() for word in args.faults.split(",") if word.strip()]
        kinds = tuple(name for name in FAULT_KINDS if any(word in name.lower() for word in words))
        if not kinds:
            parser.error(f"--faults {args.faults!r} names none of: {'; '.join(FAULT_KINDS)}")
    config = RunConfig(
        duration_s=args.duration,
        api_clients=args.api_clients,
        streamable_clients=args.streamable_clients,
        sse_clients=args.sse_clients,
        modern_clients=args.modern_clients,
        listen_clients=args.listen_clients,
        fault_every_s=args.fault_every,
        fault_kinds=kinds,
    )
    started = time.monotonic()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        outcome = anyio.run(run_history, args.keep, config)
    else:
        with tempfile.TemporaryDirectory(prefix="datapulse-reliability-") as workdir:
            outcome = anyio.run(run_history, Path(workdir), config)
    report = outcome.report
    print(f"# DataPulse reliability soak: {args.duration:.0f} s of workload, {time.monotonic() - started:.0f} s in all")
    print(f"# {platform.platform()}, Python {platform.python_version()}, {len(outcome.faults)} faults")
    print(f"# requests sent {outcome.requests}, results expected {report.expected}, delivered {report.delivered}")
    print(f"# requests per instance (proxy): {outcome.hits}")
    print()
    print(report.table())
    print()
    print("verdict:", "VALID (0 lost, 0 duplicated, 0 reordered, 0 leaked)" if report.valid else "INVALID")
    if args.json:
        document = {
            "config": asdict(config),
            "requests": outcome.requests,
            "expected": report.expected,
            "delivered": report.delivered,
            "valid": report.valid,
            "clients": {name: asdict(client) for name, client in report.clients.items()},
            "errors": dict(report.errors),
            "faults": [
                {"name": f.name, "start_s": f.start, "end_s": f.end, "recovery_s": recovery}
                for f, recovery in report.recovery_s
            ],
        }
        args.json.write_text(json.dumps(document, indent=2))
    return 0 if report.valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
