"""`datapulse.audit`: record shape, argument digests, the capture helper, sinks, and spec parsing."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from datapulse.audit import (
    Auditor,
    AuditRecord,
    FileSink,
    StdoutSink,
    arguments_digest,
    capture_audit,
    parse_audit_sinks,
)

pytestmark = pytest.mark.anyio

FIELDS = [
    "time",
    "kind",
    "principal",
    "session_id",
    "transport",
    "protocol_version",
    "name",
    "arguments_digest",
    "arguments",
    "outcome",
    "duration_ms",
    "node_id",
]
ISO_UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class MemorySink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.closed = False

    async def write(self, record: AuditRecord) -> None:
        self.records.append(record)

    async def aclose(self) -> None:
        self.closed = True


class BrokenSink:
    def __init__(self) -> None:
        self.calls = 0

    async def write(self, record: AuditRecord) -> None:
        self.calls += 1
        raise RuntimeError("disk on fire")

    async def aclose(self) -> None:
        raise RuntimeError("still on fire")


async def tool_call(auditor: Auditor, arguments: Any = None, outcome: str = "ok") -> AuditRecord:
    return await auditor.record(
        "tool_call",
        principal="alice",
        session_id="s-1",
        transport="streamable_http",
        protocol_version="2025-11-25",
        name="add",
        arguments=arguments,
        outcome=outcome,
        duration_ms=1.5,
    )


def test_the_digest_ignores_key_order_and_tells_different_arguments_apart() -> None:
    a = arguments_digest({"a": 1, "b": {"x": [1, 2], "y": "é"}})
    b = arguments_digest({"b": {"y": "é", "x": [1, 2]}, "a": 1})
    assert a == b
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", a)
    assert arguments_digest({"a": 1}) != arguments_digest({"a": 2})
    assert arguments_digest({"a": 1}) != arguments_digest({"a": "1"})
    assert arguments_digest([1, 2]) != arguments_digest([2, 1])
    canonical = json.dumps({"a": 1, "b": 2}, sort_keys=True, separators=(",", ":")).encode()
    assert arguments_digest({"b": 2, "a": 1}) == "sha256:" + hashlib.sha256(canonical).hexdigest()


async def test_a_record_carries_every_field_and_serialises_to_one_line_in_field_order_with_nulls() -> None:
    auditor = Auditor([], node_id="node-a")
    record = await tool_call(auditor, {"a": 1})
    line = record.to_json()
    assert "\n" not in line
    parsed = json.loads(line)
    assert list(parsed) == FIELDS
    assert ISO_UTC_MS.match(parsed["time"])
    assert parsed | {"time": None} == {
        "time": None,
        "kind": "tool_call",
        "principal": "alice",
        "session_id": "s-1",
        "transport": "streamable_http",
        "protocol_version": "2025-11-25",
        "name": "add",
        "arguments_digest": arguments_digest({"a": 1}),
        "arguments": None,
        "outcome": "ok",
        "duration_ms": 1.5,
        "node_id": "node-a",
    }


async def test_raw_arguments_are_recorded_only_when_configured_and_secret_keys_are_redacted() -> None:
    arguments = {"query": "select 1", "password": "hunter2"}
    without = await tool_call(Auditor([]), arguments)
    included = await tool_call(Auditor([], include_arguments=True), arguments)
    assert without.arguments is None
    assert included.arguments == {"query": "select 1", "password": "[redacted]"}
    assert without.arguments_digest == included.arguments_digest == arguments_digest(arguments)
    assert "hunter2" not in included.to_json()


async def test_arguments_that_are_not_json_still_give_one_valid_json_line() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque"

    arguments = {"ratio": float("nan"), "limit": float("inf"), "thing": Opaque(), "text": "é"}
    record = await tool_call(Auditor([], include_arguments=True), arguments)
    parsed = json.loads(record.to_json_bytes(), parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert parsed["arguments"] == {"ratio": None, "limit": None, "thing": "opaque", "text": "é"}
    assert parsed["arguments_digest"] == arguments_digest(arguments)


async def test_a_record_without_arguments_has_no_digest() -> None:
    auditor = Auditor([])
    record = await auditor.record(
        "auth",
        principal=None,
        session_id=None,
        transport=None,
        protocol_version=None,
        name="/mcp",
        outcome="denied:invalid_token",
    )
    assert (record.arguments_digest, record.arguments, record.duration_ms) == (None, None, None)


async def test_capture_audit_sees_every_record_written_in_its_block_and_nests() -> None:
    first, second = Auditor([MemorySink()]), Auditor([])
    await tool_call(first, outcome="before")
    with capture_audit() as outer:
        one = await tool_call(first, outcome="one")
        with capture_audit() as inner:
            two = await tool_call(second, outcome="two")
        await tool_call(second, outcome="three")
    await tool_call(first, outcome="after")
    assert [record.outcome for record in outer] == ["one", "two", "three"]
    assert inner == [two]
    assert outer[0] is one


async def test_the_stdout_sink_writes_one_json_line_per_record() -> None:
    stream = io.StringIO()
    auditor = Auditor([StdoutSink(stream)], node_id="node-a")
    records = [await tool_call(auditor, {"n": n}) for n in range(3)]
    await auditor.aclose()
    assert stream.getvalue().splitlines() == [record.to_json() for record in records]


async def test_the_file_sink_rotates_by_size_and_both_files_hold_valid_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(str(path), max_bytes=2_000, backups=2)
    auditor = Auditor([sink])
    written: list[AuditRecord] = []
    backup = anyio.Path(f"{path}.1")
    while not await backup.exists():
        assert len(written) < 100, "no rotation after 100 records"
        written.append(await tool_call(auditor, {"n": len(written)}))
    written.append(await tool_call(auditor, {"n": len(written)}))
    await auditor.aclose()

    rotated = (await backup.read_text("utf-8")).splitlines()
    current = (await anyio.Path(path).read_text("utf-8")).splitlines()
    assert rotated
    assert current
    assert (await backup.stat()).st_size <= 2_000
    assert [json.loads(line) for line in rotated + current] == [json.loads(r.to_json()) for r in written]


def test_the_file_sink_refuses_a_non_positive_size_and_an_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        FileSink(str(tmp_path / "a.jsonl"), max_bytes=0)
    with pytest.raises(FileNotFoundError):
        FileSink(str(tmp_path / "missing-dir" / "a.jsonl"))


async def test_a_failing_sink_does_not_stop_the_others_and_is_logged_once_per_streak(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, memory = BrokenSink(), MemorySink()
    auditor = Auditor([broken, memory])
    with caplog.at_level(logging.DEBUG, logger="datapulse.audit"):
        records = [await tool_call(auditor) for _ in range(3)]
        await auditor.aclose()
    assert memory.records == records
    assert memory.closed
    assert broken.calls == 3
    failures = [r for r in caplog.records if r.levelno == logging.WARNING and "failed" in r.getMessage()]
    assert len(failures) == 2  # one write warning for the streak, one for the failed close
    assert "BrokenSink" in failures[0].getMessage()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("stdout", [("stdout", None)]),
        (
            "stdout, file:/var/log/dp-audit.jsonl ,REDIS",
            [("stdout", None), ("file", "/var/log/dp-audit.jsonl"), ("redis", None)],
        ),
        ("file:C:\\logs\\a.jsonl", [("file", "C:\\logs\\a.jsonl")]),
        ("  ", []),
    ],
)
def test_sink_specs_parse_into_kind_and_argument(spec: str, expected: list[tuple[str, str | None]]) -> None:
    assert parse_audit_sinks(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("syslog", "unknown sink"),
        ("stdout,,redis", "empty entry"),
        ("file", "needs a path"),
        ("file: ", "needs a path"),
        ("redis:dp:audit", "takes no argument"),
        ("stdout,stdout", "twice"),
    ],
)
def test_malformed_sink_specs_are_refused_with_a_clear_message(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_audit_sinks(spec)


async def test_two_file_sinks_appending_to_one_file_write_whole_lines_and_lose_none(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    first, second = Auditor([FileSink(str(path), max_bytes=10**9)]), Auditor([FileSink(str(path), max_bytes=10**9)])
    written = []
    for n in range(300):  # records of both in every turn of the loop, long enough to span the file buffer
        written.append(await tool_call(first, {"n": n, "pad": "x" * 200}))
        written.append(await tool_call(second, {"n": n, "pad": "y" * 200}))
        if n % 50 == 0:
            await anyio.lowlevel.checkpoint()  # let the end-of-turn writes happen
    await first.aclose()
    await second.aclose()
    lines = (await anyio.Path(path).read_text("utf-8")).splitlines()
    assert sorted(lines) == sorted(record.to_json() for record in written)


async def test_an_auditor_of_file_and_stdout_sinks_records_without_awaiting_and_one_with_others_refuses(
    tmp_path: Path,
) -> None:
    stream = io.StringIO()
    direct = Auditor([FileSink(str(tmp_path / "a.jsonl")), StdoutSink(stream)])
    assert not direct.may_suspend
    record = direct.record_now("auth", principal="alice", session_id=None, transport=None,
                               protocol_version=None, name="/mcp", outcome="allowed")  # fmt: skip
    assert json.loads(stream.getvalue())["outcome"] == "allowed"
    await direct.aclose()  # the file sink's batch is written at the end of the loop turn, or on close
    assert [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()] == [record.to_dict()]
    waiting = Auditor([MemorySink()])
    assert waiting.may_suspend
    with pytest.raises(RuntimeError, match=r"await auditor\.record"):
        waiting.record_now("auth", principal=None, session_id=None, transport=None,
                           protocol_version=None, name="/mcp", outcome="allowed")  # fmt: skip


async def test_a_subclass_of_the_file_sink_that_overrides_write_is_awaited(tmp_path: Path) -> None:
    class Counting(FileSink):
        writes = 0

        async def write(self, record: AuditRecord) -> None:
            Counting.writes += 1
            await super().write(record)

    auditor = Auditor([Counting(str(tmp_path / "b.jsonl"))])
    assert auditor.may_suspend
    await tool_call(auditor)
    await auditor.aclose()
    assert Counting.writes == 1
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 1
