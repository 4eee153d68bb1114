"""The short run of the history checker (CI): many clients on all four transports, three instances and one
Redis behind a round-robin proxy, and a nemesis; the recorded history must show no loss, duplicate,
reordering or leak for clients that follow the protocol. The soak is ``bench/reliability.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.history.run import FAULT_KINDS, RunConfig, run_history

pytestmark = pytest.mark.anyio

DURATION_S = float(os.environ.get("DATAPULSE_HISTORY_S", "70"))


async def test_a_history_of_many_clients_under_faults_loses_duplicates_and_reorders_nothing(tmp_path: Path) -> None:
    outcome = await run_history(tmp_path, RunConfig(duration_s=DURATION_S))
    report = outcome.report
    print("\n" + report.table())  # the table is the run's record: shown with pytest -s, and on failure
    assert {fault.name for fault in outcome.faults} == set(FAULT_KINDS), outcome.faults  # each kind at least once
    assert report.expected > 500
    assert report.valid, (
        f"history: {tmp_path / 'history.jsonl'}\n"
        + report.table()
        + "\n"
        + repr(
            {name: (c.lost[:5], c.duplicated[:5], c.reordered[:5], c.leaked[:5]) for name, c in report.clients.items()}
        )
    )
    assert all(recovery is not None for _, recovery in report.recovery_s), report.table()
