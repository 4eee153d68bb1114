"""The history checker: what a recorded run of many clients under faults must satisfy, as a pure function.

A history is what the clients saw, in the order they saw it (`Record`s, each stamped with the seconds since the
run started), and what the nemesis did (`Fault`s). Each client writes:

* ``expect``: the server accepted something that must produce ``item`` (a result, a progress step), whose
  place in the client's order is ``order`` (``ack`` time is the record's time);
* ``result``: ``item`` arrived, on connection ``conn``, with event sequence number ``seq`` (None: the transport
  has no event ids), carrying ``tag``, the name of the client whose request produced it;
* ``indeterminate``: a request whose acceptance is unknown (the connection broke before an answer): its items
  may arrive or not, but at most once (it withdraws an earlier ``expect`` of the same item);
* ``session``: the client's session ended and a new one began (``detail`` says why); what the old session owed
  and had not delivered is counted as ``lost with session``, allowed only where the transport cannot resume
  (2024-11-05 HTTP+SSE) or the session was lost with Redis's data (``detail`` says so);
* ``error``: a request or stream failed with ``detail`` (a status code or exception name): counted by kind.

The guarantees checked, per client and session:

* **lost**: an expected item never arrived, except when a ``kill -9`` of an instance came within
  `IN_FLIGHT_WINDOW_S` after it was accepted, or `KILL_IN_TRANSIT_S` before (its handler died with the
  instance: counted apart, documented);
* **duplicated**: an item arrived more than once;
* **reordered**: an item arrived after one that comes later in the client's order although its tool finished
  first (or when finish times are not known), or a connection's event sequence numbers did not strictly
  increase (results of requests sent one after another arrive in that order when the tools finish in that
  order);
* **leaked**: a result carried another client's tag (another principal's data).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

IN_FLIGHT_WINDOW_S = 1.0
"""A result may die with a killed instance if its request was accepted this long before the kill or less."""

KILL_IN_TRANSIT_S = 0.1
"""...or up to this long after the kill was recorded: the killed instance's last answers may still be on their
way to the client (seen: a 202 recorded 2.5 ms after the kill)."""

RecordKind = Literal["expect", "result", "indeterminate", "session", "error"]


@dataclass(frozen=True)
class Record:
    """One thing a client saw. ``t`` is seconds since the run began."""

    t: float
    client: str
    kind: RecordKind
    item: str = ""
    order: int = 0
    conn: int = 0
    seq: int | None = None
    tag: str = ""
    detail: str = ""
    stream: str = ""
    """Which of the client's logical streams carried the result: order is compared only within one."""
    finished_ns: int = 0
    """When the tool that produced a result returned (CLOCK_MONOTONIC, shared by the machine's processes); 0:
    not known."""


@dataclass(frozen=True)
class Fault:
    """What the nemesis did, from ``start`` to ``end`` (seconds since the run began)."""

    name: str
    start: float
    end: float
    kills_in_flight: bool = False
    """Whether requests in flight on the target may die with it (``kill -9`` of an instance)."""


@dataclass
class ClientReport:
    transport: str = ""
    expected: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    lost_in_crash: list[str] = field(default_factory=list)
    lost_with_session: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    leaked: list[str] = field(default_factory=list)
    indeterminate: int = 0


@dataclass
class Report:
    """The verdict on a history: per client, totals, errors by kind, and recovery time per fault."""

    clients: dict[str, ClientReport]
    errors: Counter[str]
    recovery_s: list[tuple[Fault, float | None]]

    def total(self, name: str) -> int:
        return sum(len(getattr(report, name)) for report in self.clients.values())

    @property
    def expected(self) -> int:
        return sum(report.expected for report in self.clients.values())

    @property
    def delivered(self) -> int:
        return sum(report.delivered for report in self.clients.values())

    @property
    def valid(self) -> bool:
        """No loss, duplicate, reordering or leak (what the crash and session limits allow is not counted)."""
        return not any(self.total(name) for name in ("lost", "duplicated", "reordered", "leaked"))

    def table(self) -> str:
        """The report as a Markdown table by transport, then errors and recovery times."""
        by_transport: dict[str, list[ClientReport]] = defaultdict(list)
        for report in self.clients.values():
            by_transport[report.transport].append(report)
        columns = ("expected", "delivered", "lost", "lost_in_crash", "lost_with_session", "duplicated", "reordered")
        lines = [
            "| transport | clients | "
            + " | ".join(c.replace("_", " ") for c in columns)
            + " | leaked | indeterminate |",
            "|---|---:|" + "---:|" * (len(columns) + 2),
        ]
        for transport, reports in sorted(by_transport.items()):
            cells = [transport, str(len(reports))]
            for column in columns:
                values = [getattr(r, column) for r in reports]
                cells.append(str(sum(v if isinstance(v, int) else len(v) for v in values)))
            cells.append(str(sum(len(r.leaked) for r in reports)))
            cells.append(str(sum(r.indeterminate for r in reports)))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("errors by kind: " + (", ".join(f"{k} {v}" for k, v in self.errors.most_common()) or "none"))
        lines.append("")
        lines.append("| fault | at (s) | lasted (s) | recovery (s) |")
        lines.append("|---|---:|---:|---:|")
        for fault, recovery in self.recovery_s:
            shown = "not recovered" if recovery is None else f"{recovery:.2f}"
            lines.append(f"| {fault.name} | {fault.start:.1f} | {fault.end - fault.start:.1f} | {shown} |")
        return "\n".join(lines)


def check(records: Sequence[Record], faults: Sequence[Fault], transports: dict[str, str]) -> Report:
    """Check a history (``records`` in the order each client saw them; ``transports``: client -> transport name).

    Pure: no I/O. See the module docstring for what each count means.
    """
    kills = [fault.start for fault in faults if fault.kills_in_flight]
    per_client: dict[str, list[Record]] = defaultdict(list)
    errors: Counter[str] = Counter()
    for record in records:
        per_client[record.client].append(record)
        if record.kind == "error":
            errors[record.detail] += 1
    clients = {
        client: _check_client(own, kills, transports.get(client, "?")) for client, own in sorted(per_client.items())
    }
    return Report(clients, errors, [(fault, _recovery(fault, records)) for fault in faults])


def _sessions(records: Iterable[Record]) -> list[tuple[list[Record], str | None]]:
    """Split a client's records at ``session`` markers: (records of the session, why it ended or None)."""
    sessions: list[tuple[list[Record], str | None]] = []
    current: list[Record] = []
    for record in records:
        if record.kind == "session":
            sessions.append((current, record.detail or "session ended"))
            current = []
        else:
            current.append(record)
    sessions.append((current, None))
    return sessions


def _check_client(records: list[Record], kills: list[float], transport: str) -> ClientReport:
    report = ClientReport(transport=transport)
    for session, ended in _sessions(records):
        expected: dict[str, Record] = {}
        maybe: set[str] = set()
        seen: Counter[str] = Counter()
        highest_order: dict[str, int] = defaultdict(lambda: -1)
        arrived: dict[str, list[Record]] = defaultdict(list)
        last_seq: dict[int, int] = {}
        for record in session:
            if record.kind == "expect":
                expected[record.item] = record
            elif record.kind == "indeterminate":  # also withdraws an earlier expect of the same item
                maybe.add(record.item)
                expected.pop(record.item, None)
                report.indeterminate += 1
            elif record.kind == "result":
                seen[record.item] += 1
                if seen[record.item] > 1:
                    report.duplicated.append(record.item)
                    continue
                if record.tag and record.tag != record.client:
                    report.leaked.append(record.item)
                if record.order < highest_order[record.stream]:
                    overtaken_by = [
                        other
                        for other in arrived[record.stream]
                        if other.order > record.order
                        and not (record.finished_ns and other.finished_ns and other.finished_ns < record.finished_ns)
                    ]
                    if overtaken_by:  # a later request's result came first, though its tool did not finish first
                        other = overtaken_by[0]
                        report.reordered.append(
                            f"{record.item} (conn {record.conn}, event {record.seq}, finished {record.finished_ns}) "
                            f"after {other.item} (conn {other.conn}, event {other.seq}, finished {other.finished_ns})"
                        )
                highest_order[record.stream] = max(highest_order[record.stream], record.order)
                arrived[record.stream].append(record)
                if record.seq is not None:
                    previous = last_seq.get(record.conn)
                    if previous is not None and record.seq <= previous:
                        report.reordered.append(f"{record.item}: event {record.seq} after {previous}")
                    last_seq[record.conn] = record.seq
        report.expected += len(expected)
        report.delivered += sum(1 for item in expected if seen[item])
        for item, accepted in expected.items():
            if seen[item]:
                continue
            if any(-KILL_IN_TRANSIT_S <= kill - accepted.t <= IN_FLIGHT_WINDOW_S for kill in kills):
                report.lost_in_crash.append(item)  # (also when its session ended later: it died with the instance)
            elif ended is not None:
                report.lost_with_session.append(item)
            else:
                report.lost.append(item)
    return report


RECOVERY_GAP_S = 1.0
"""A pause between two results of one client shorter than this is normal pacing, not an outage."""


def _recovery(fault: Fault, records: Sequence[Record]) -> float | None:
    """Seconds from the fault's start until the last client it kept from being served was served again: for each
    client that had results before the fault, the longest pause between two of its results that began during the
    fault (or just before it) and lasted over `RECOVERY_GAP_S`, counted to its end. 0.0: nobody was held up;
    None: some client was never served again."""
    times: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if record.kind == "result":
            times[record.client].append(record.t)
    worst = 0.0
    for own in times.values():
        if not own or own[0] >= fault.start:
            continue
        if own[-1] < fault.end:
            return None
        for earlier, later in itertools.pairwise(own):
            if fault.start - RECOVERY_GAP_S <= earlier <= fault.end and later - earlier > RECOVERY_GAP_S:
                worst = max(worst, later - fault.start)
    return worst
