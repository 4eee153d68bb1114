"""The audit log: one `AuditRecord` per tool call, resource read, prompt get and auth decision.

An `Auditor` builds each record and hands it to every configured `AuditSink`:

- `StdoutSink`: JSON lines on a stream (default ``sys.stdout``);
- `FileSink`: JSON lines in a file rotated by size (``logging.handlers.RotatingFileHandler``);
- `RedisStreamSink`: one ``XADD`` per record to a capped Redis stream (field ``record``: the JSON line).

A record is one JSON object on one line (`AuditRecord.to_json`), keys in field order, absent values as
``null``, for example::

    {"time":"2026-01-02T03:04:05.678Z","kind":"tool_call","principal":"alice","session_id":"3f2a...",
     "transport":"streamable_http","protocol_version":"2025-11-25","name":"add",
     "arguments_digest":"sha256:9b1c...","arguments":null,"outcome":"ok","duration_ms":1.25,"node_id":"node-a"}

Arguments are recorded as a digest (`arguments_digest`); the raw arguments only when the `Auditor` is
built with ``include_arguments=True``, and then with the values of secret-named keys (``token``,
``password``, ...; `datapulse.logs.redact_data`) replaced by ``"[redacted]"``. Token values are never
recorded: for ``auth`` records ``name`` is the request path (no query string) and ``outcome`` the decision. An
``upstream_auth`` record says a gateway's upstream refused DataPulse's own credentials (``name``: the upstream,
``outcome``: ``denied_401`` or ``denied_403``).

Auditing never fails a request: a sink that raises is logged (stdlib logger ``datapulse.audit``,
a warning once per failure streak) and the other sinks still get the record.

Testing: `capture_audit` is a public helper. Every record any `Auditor` writes while its block runs is
appended to the list it yields::

    with capture_audit() as records:
        ...  # drive a request
    assert [r.kind for r in records] == ["auth", "tool_call"]

Sink specs (`parse_audit_sinks`): comma-separated ``stdout``, ``file:<path>`` and ``redis``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import logging.handlers
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol, Required, TextIO, TypedDict, Unpack

import anyio
import pydantic
from redis.asyncio import Redis
from redis.exceptions import RedisError

from datapulse.logs import redact_data

__all__ = [
    "AuditFields",
    "AuditKind",
    "AuditRecord",
    "AuditSink",
    "Auditor",
    "FileSink",
    "RedisStreamSink",
    "StdoutSink",
    "arguments_digest",
    "capture_audit",
    "parse_audit_sinks",
]

logger = logging.getLogger("datapulse.audit")

AuditKind = Literal["tool_call", "resource_read", "prompt_get", "auth", "upstream_auth"]

DEFAULT_REDIS_TIMEOUT_S: Final = 5.0
"""Bound on one XADD, in seconds, when the Redis client has no ``socket_timeout``."""

_captures: list[list[AuditRecord]] = []


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited event.

    Attributes:
        time: when the record was built, ISO 8601 UTC with milliseconds (``2026-01-02T03:04:05.678Z``).
        kind: ``tool_call`` | ``resource_read`` | ``prompt_get`` | ``auth``.
        principal: the authenticated principal, if any.
        session_id: the MCP session id, if any.
        transport: ``streamable_http`` | ``sse`` | ``datapulse_api`` | ``stateless``.
        protocol_version: the negotiated MCP protocol version.
        name: tool or prompt name, resource URI, or for ``auth`` the request path.
        arguments_digest: ``"sha256:<hex>"`` of the arguments (`arguments_digest`); None without arguments.
        arguments: the raw arguments (secret-named keys redacted) when the auditor includes them, else None.
        outcome: ``ok`` | ``error`` | ``refused`` | ``rate_limited``; for ``auth``: ``allowed`` | ``denied:<reason>``.
        duration_ms: how long the operation took, in milliseconds.
        node_id: the DataPulse node that wrote the record.
    """

    time: str
    kind: AuditKind
    principal: str | None
    session_id: str | None
    transport: str | None
    protocol_version: str | None
    name: str | None
    arguments_digest: str | None
    arguments: Any | None
    outcome: str
    duration_ms: float | None
    node_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """The record's fields by name (JSON-ready except non-JSON argument values)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def to_json(self) -> str:
        """The record as one compact JSON line (no newline), keys in field order, None as ``null``, non-ASCII
        text as is. Non-JSON argument values are written as their ``str`` (NaN and infinities as ``null``)."""
        return self.to_json_bytes().decode("utf-8")

    def to_json_bytes(self) -> bytes:
        """`to_json`, UTF-8 encoded: pydantic-core's serializer compiled once for this dataclass (`_ENCODER`), which
        walks the fields in order, in one call with no intermediate ``dict`` or ``str``. Half the time of
        ``pydantic_core.to_json(record)``, which inspects the dataclass on every call: 1.1 against 2.2 µs."""
        return _ENCODER.to_json(self, fallback=str, warnings=False)


_FIELD_NAMES: Final = tuple(field.name for field in dataclasses.fields(AuditRecord))
_ENCODER: Final = pydantic.TypeAdapter(AuditRecord).serializer
"""`AuditRecord`'s JSON serializer (pydantic's defaults: NaN and infinities as ``null``; a value of another type
than its field's, as an argument's, is serialized by its own type, and one of no JSON type as its ``str``)."""


class AuditFields(TypedDict, total=False):
    """What a caller gives `Auditor.record` besides the kind (see `AuditRecord` for each field): all but
    ``arguments`` (default None) and ``duration_ms`` (default None) are required."""

    principal: Required[str | None]
    session_id: Required[str | None]
    transport: Required[str | None]
    protocol_version: Required[str | None]
    name: Required[str | None]
    arguments: Any
    outcome: Required[str]
    duration_ms: float | None


def arguments_digest(arguments: Any) -> str:
    """``"sha256:<hex>"`` of the canonical JSON of ``arguments``: ``json.dumps(arguments, sort_keys=True,
    separators=(",", ":"))`` (ASCII-escaped, non-JSON values as their ``str``), UTF-8 encoded. Key order
    does not change the digest."""
    canonical = _CANONICAL.encode(arguments)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
"""What ``json.dumps(..., sort_keys=True, separators=(",", ":"), default=str)`` builds per call, built once."""


_second: tuple[int, str] = (0, "")


def _now() -> str:
    """The time now as ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC, milliseconds truncated, as ``isoformat`` does); the
    date and time of day are formatted once per second."""
    global _second
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z"


class AuditSink(Protocol):
    """Where audit records go. `write` may raise; the `Auditor` logs and swallows it."""

    async def write(self, record: AuditRecord) -> None:
        """Store one record."""
        ...

    async def aclose(self) -> None:
        """Flush and release resources (not resources passed in by the caller)."""
        ...


class StdoutSink:
    """JSON lines on ``stream`` (default: ``sys.stdout`` as it is when the sink is built), flushed per record.

    The write is synchronous: a line into the stream's buffer, which blocks only if the reader of a pipe
    stops reading.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    async def write(self, record: AuditRecord) -> None:
        self.write_now(record)

    def write_now(self, record: AuditRecord) -> None:
        """`write` without a coroutine (it awaits nothing)."""
        self._stream.write(record.to_json() + "\n")
        self._stream.flush()

    async def aclose(self) -> None:
        """Flush the stream (it is not closed)."""
        self._stream.flush()


class FileSink:
    """JSON lines appended to ``path``, rotated by size with ``logging.handlers.RotatingFileHandler``.

    When a write would take the file past ``max_bytes`` bytes, ``path`` is renamed ``path.1`` (``path.1``
    to ``path.2``, ... up to ``path.<backups>``, the oldest dropped) and a new file is started.

    Records written in one turn of the event loop are appended together, in one write call of whole lines, at the
    end of that turn (and on close); the file is not fsynced. Several processes may append to one file (lines never
    interleave), but each rotates by its own count, so with ``--workers`` prefer one file per process, or the
    ``redis`` or ``stdout`` sink.

    Args:
        path: the file; its directory must exist. Opened (and created) here, so a bad path fails at startup.
        max_bytes: rotation threshold in bytes, > 0.
        backups: rotated files kept, >= 0 (0: the file is never rotated, as with the stdlib handler).

    Raises:
        ValueError: ``max_bytes`` or ``backups`` out of range.
        OSError: ``path`` cannot be opened for appending.
    """

    def __init__(self, path: str, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = path
        self._handler = logging.handlers.RotatingFileHandler(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
        )
        self._max_bytes = max_bytes
        self._rotates = backups > 0 and os.path.isfile(path)  # never rename a device or a pipe (/dev/null)
        stream = self._handler.stream
        assert stream is not None  # opened now (delay=False)
        self._size = stream.tell() if self._rotates else 0
        self._pending: list[bytes] = []
        self._failing = False

    async def write(self, record: AuditRecord) -> None:
        self.write_now(record)

    def write_now(self, record: AuditRecord) -> None:
        """`write` without a coroutine (it awaits nothing): the line joins this loop turn's batch."""
        line = record.to_json_bytes() + b"\n"
        size = len(line)
        if self._rotates and self._size and self._size + size > self._max_bytes:
            self._flush()  # what is waiting belongs to the file being rotated
            self._handler.doRollover()  # the handler's own rotation (renames, then a fresh file)
            self._size = 0
        self._size += size
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:  # one write for every record of this turn of the event loop
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Append every waiting line in one write call: whole lines only, so processes appending to the same
        file (``O_APPEND``) never interleave inside a line."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        stream = self._handler.stream
        if stream is None or stream.closed:
            return
        try:
            stream.buffer.write(data)
            stream.buffer.flush()
        except OSError as exc:
            level = logging.DEBUG if self._failing else logging.WARNING  # once per failure streak
            logger.log(level, "audit: writing %s failed (%s: %s); records dropped", self.path, type(exc).__name__, exc)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            logger.info("audit: writing %s works again", self.path)

    async def aclose(self) -> None:
        self._flush()
        self._handler.close()


class RedisStreamSink:
    """One ``XADD key MAXLEN ~ max_len * record <json>`` per record.

    Never raises for Redis faults: a failed or timed-out XADD (bounded by the client's ``socket_timeout``,
    else `DEFAULT_REDIS_TIMEOUT_S`) drops the record and logs a warning on logger ``datapulse.audit``
    once per failure streak (later failures at debug; recovery at info).

    Args:
        redis: a ``redis.asyncio.Redis`` client, plain or Sentinel-backed (`datapulse.cluster.store.connect`:
            records go to the current master); owned by the caller (`aclose` does not close it).
        key: the stream key (e.g. ``dp:audit``).
        max_len: approximate cap on the stream's length (entries), > 0.

    Raises:
        ValueError: ``max_len`` is not positive.
    """

    def __init__(self, redis: Redis, key: str, *, max_len: int = 100_000) -> None:
        if max_len <= 0:
            raise ValueError(f"max_len must be positive, got {max_len}")
        self._redis = redis
        self._key = key
        self._max_len = max_len
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._timeout_s = float(socket_timeout) if socket_timeout else DEFAULT_REDIS_TIMEOUT_S
        self._failing = False

    async def write(self, record: AuditRecord) -> None:
        try:
            with anyio.fail_after(self._timeout_s):
                await self._redis.xadd(self._key, {"record": record.to_json()}, maxlen=self._max_len, approximate=True)
        except (RedisError, OSError) as exc:  # OSError covers the TimeoutError of fail_after
            level = logging.DEBUG if self._failing else logging.WARNING
            why = f"{type(exc).__name__}: {str(exc) or f'no answer within {self._timeout_s} s'}"
            logger.log(level, "audit: XADD to %r failed (%s); %s record dropped", self._key, why, record.kind)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            logger.info("audit: XADD to %r works again", self._key)

    async def aclose(self) -> None:
        """Nothing to release: the Redis client belongs to the caller."""


RECENT_RECORDS = 500
"""How many of its latest audit records a process keeps in memory for the dashboard."""


class Auditor:
    """Builds audit records and writes each to every sink, in order.

    Args:
        sinks: where records go (may be empty: records then reach only `capture_audit`).
        node_id: written into every record.
        include_arguments: also record the raw arguments (secret-named keys redacted); the digest is
            always recorded.
    """

    def __init__(
        self, sinks: Sequence[AuditSink], *, node_id: str | None = None, include_arguments: bool = False
    ) -> None:
        self._sinks = tuple(sinks)
        # sinks that await nothing are written without a coroutine (exactly these classes: a subclass may
        # override write)
        writers: list[tuple[int, AuditSink, Callable[[AuditRecord], None] | None]] = []
        for index, sink in enumerate(self._sinks):
            if isinstance(sink, StdoutSink | FileSink) and type(sink) in (StdoutSink, FileSink):
                writers.append((index, sink, sink.write_now))
            else:
                writers.append((index, sink, None))
        self._writers = tuple(writers)
        self._may_suspend = any(write_now is None for _, _, write_now in writers)
        self._node_id = node_id
        self._include_arguments = include_arguments
        self._failing: set[int] = set()
        self.recent: deque[AuditRecord] = deque(maxlen=RECENT_RECORDS)
        """This process's latest records, oldest first (the dashboard's audit view); kept only while a sink is
        configured, since records are built only then."""

    @property
    def may_suspend(self) -> bool:
        """Whether writing a record can wait (any sink but the file and stdout sinks, which await nothing): callers
        that must not lose a record to a cancellation shield the write only then."""
        return self._may_suspend

    @property
    def active(self) -> bool:
        """Whether a record would go anywhere (a sink, or a `capture_audit` block): callers skip building it if not."""
        return bool(self._sinks) or bool(_captures)

    async def record(self, kind: AuditKind, **fields: Unpack[AuditFields]) -> AuditRecord:
        """Build the record (``kind`` and `AuditFields`; see `AuditRecord` for each field), write it to every sink,
        and return it.

        ``arguments_digest`` is set whenever ``arguments`` is not None. Never raises for a sink's
        failure: it is logged (warning once per failure streak of that sink) and the next sink is tried.
        """
        record = self._build(kind, fields)
        for index, sink, write_now in self._writers:
            try:
                if write_now is not None:
                    write_now(record)
                else:
                    await sink.write(record)
            except Exception as exc:  # audit boundary: a sink must never fail the request
                self._failed(index, sink, exc)
                continue
            if index in self._failing:
                self._recovered(index, sink)
        return record

    def record_now(self, kind: AuditKind, **fields: Unpack[AuditFields]) -> AuditRecord:
        """`record` without a coroutine, for an auditor whose sinks await nothing (not `may_suspend`).

        Raises:
            RuntimeError: a sink would have to be awaited (the caller must use `record`).
        """
        if self._may_suspend:
            raise RuntimeError("this auditor has a sink that awaits (redis): use `await auditor.record(...)`")
        record = self._build(kind, fields)
        self._write_now(record)
        return record

    def _write_now(self, record: AuditRecord) -> None:
        for index, sink, write_now in self._writers:
            assert write_now is not None
            try:
                write_now(record)
            except Exception as exc:  # audit boundary: a sink must never fail the request
                self._failed(index, sink, exc)
                continue
            if index in self._failing:
                self._recovered(index, sink)

    def _build(self, kind: AuditKind, fields: AuditFields) -> AuditRecord:
        arguments = fields.get("arguments")
        record = AuditRecord(
            _now(),
            kind,
            fields["principal"],
            fields["session_id"],
            fields["transport"],
            fields["protocol_version"],
            fields["name"],
            None if arguments is None else arguments_digest(arguments),
            redact_data(arguments) if self._include_arguments else None,
            fields["outcome"],
            fields.get("duration_ms"),
            self._node_id,
        )
        for capture in _captures:
            capture.append(record)
        if self._sinks:
            self.recent.append(record)
        return record

    def _failed(self, index: int, sink: AuditSink, exc: Exception) -> None:
        if index not in self._failing:
            self._failing.add(index)
            logger.warning("audit: sink %s failed (%s: %s); record dropped", _sink_name(sink), type(exc).__name__, exc)

    def _recovered(self, index: int, sink: AuditSink) -> None:
        self._failing.discard(index)
        logger.info("audit: sink %s works again", _sink_name(sink))

    async def aclose(self) -> None:
        """Close every sink; a sink whose close raises is logged and the others are still closed."""
        for sink in self._sinks:
            try:
                await sink.aclose()
            except Exception as exc:  # closing must reach every sink
                logger.warning("audit: closing sink %s failed (%s: %s)", _sink_name(sink), type(exc).__name__, exc)


def _sink_name(sink: AuditSink) -> str:
    path = getattr(sink, "path", None)
    return f"{type(sink).__name__}({path!r})" if path else type(sink).__name__


@contextmanager
def capture_audit() -> Iterator[list[AuditRecord]]:
    """Test helper: yield a list that collects every record any `Auditor` writes until the block ends.

    Process-wide (all auditors, all tasks); blocks nest, each list gets the records of its own block.
    """
    records: list[AuditRecord] = []
    _captures.append(records)
    try:
        yield records
    finally:
        for index, capture in enumerate(_captures):
            if capture is records:
                del _captures[index]
                break


_SINK_KINDS: Final = ("stdout", "file", "redis")


def parse_audit_sinks(spec: str) -> list[tuple[str, str | None]]:
    """Parse a comma-separated sink spec into ``(kind, argument)`` pairs.

    ``"stdout, file:/var/log/dp-audit.jsonl, redis"`` gives ``[("stdout", None), ("file",
    "/var/log/dp-audit.jsonl"), ("redis", None)]``. Kinds are case-insensitive; a blank spec gives ``[]``.

    Raises:
        ValueError: an empty entry, an unknown kind, ``file`` without a path, an argument to ``stdout``
            or ``redis``, or the same entry twice.
    """
    if not spec.strip():
        return []
    sinks: list[tuple[str, str | None]] = []
    for raw in spec.split(","):
        entry = raw.strip()
        kind, colon, argument = entry.partition(":")
        kind = kind.strip().lower()
        if not entry:
            raise ValueError(f"audit sinks {spec!r}: empty entry; expected e.g. 'stdout,file:/path,redis'")
        if kind not in _SINK_KINDS:
            raise ValueError(f"audit sinks {spec!r}: unknown sink {entry!r}; expected stdout, file:<path> or redis")
        if kind == "file":
            if not argument.strip():
                raise ValueError(f"audit sinks {spec!r}: 'file' needs a path, as in 'file:/var/log/dp-audit.jsonl'")
            parsed: tuple[str, str | None] = ("file", argument.strip())
        elif colon:
            raise ValueError(f"audit sinks {spec!r}: {kind!r} takes no argument, got {entry!r}")
        else:
            parsed = (kind, None)
        if parsed in sinks:
            raise ValueError(f"audit sinks {spec!r}: {entry!r} is listed twice")
        sinks.append(parsed)
    return sinks
