"""Structured logging: every log line, ours or a library's, in one shape, with secrets redacted.

`configure_logging` installs one handler on the root stdlib logger whose formatter is structlog's
``ProcessorFormatter``: records from ``logging.getLogger(...)`` (DataPulse itself, uvicorn, the MCP SDK)
and from ``structlog.get_logger()`` go through the same processors and come out as

- JSON lines (``{"timestamp": "2026-01-02T03:04:05.678901Z", "level": "info", "logger": "datapulse.x",
  "event": "...", "request_id": ..., ...}``) when writing to a file or pipe, or
- readable, coloured console lines when writing to a terminal.

Keys ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and ``event`` are always present; the
`LOG_CONTEXT` keys appear when bound with `bind_log_context` (``structlog.contextvars``, so a binding
follows the request's task and is reset when the block ends); ``node_id`` comes from
`configure_logging` unless bound. Extra fields (``logger.info("x", extra={...})`` or structlog
key-values) are kept; ``exception`` holds a formatted traceback.

Redaction runs on every event dict and again on every rendered line: values of keys that name a
secret (`SECRET_KEY_PATTERN`: authorization, token, password, secret, api_key, cookie, ticket, ...)
become ``"[redacted]"`` at any depth, ``Bearer <x>`` becomes ``Bearer [redacted]`` and
``token=<x>``-style pairs in text become ``token=[redacted]`` (`redact`). A secret logged as plain text
with no such marker cannot be recognised: never log token values.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = [
    "LOG_CONTEXT",
    "REDACTED",
    "SECRET_KEY_PATTERN",
    "bind_log_context",
    "configure_logging",
    "detach_log_context",
    "is_secret_key",
    "redact",
    "redact_data",
]

LOG_CONTEXT: Final = ("request_id", "session_id", "principal", "node_id")
"""The context keys DataPulse binds per request (`bind_log_context`); each line carries those bound."""

REDACTED: Final = "[redacted]"

SECRET_KEY_PATTERN: Final = re.compile(
    r"authorization|token|passw(?:or)?d|secret|api[_-]?key|cookie|ticket|credential|private[_-]?key",
    re.IGNORECASE,
)
"""Matches (anywhere in it) a key whose value is a secret: ``Authorization``, ``access_token``, ``X-API-Key``..."""

_BEARER = re.compile(r"\b(Bearer)\s+(?!\[redacted\])[^\s\"',;\\]+", re.IGNORECASE)
_SECRET_PAIR = re.compile(
    r"\b((?:access_|refresh_|id_)?token|passw(?:or)?d|secret|client_secret|api[_-]?key|apikey|ticket)"
    r"=(?!\[redacted\])[^\s&\"',;\\]+",
    re.IGNORECASE,
)
_LEVELS: Final = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}
_FIRST_KEYS: Final = ("timestamp", "level", "logger", "event", *LOG_CONTEXT)
_UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
_NOT_REDACTED: Final = frozenset({"exc_info", "_record", "_from_structlog"})
_DROPPED_EXTRAS: Final = ("color_message",)  # uvicorn's ANSI-coloured duplicate of the message


def redact(text: str) -> str:
    """``text`` with ``Bearer <x>`` replaced by ``Bearer [redacted]`` and ``token=<x>`` (also
    ``password=``, ``secret=``, ``api_key=``, ``ticket=``, ...) by ``token=[redacted]``. Pure and idempotent."""
    return _SECRET_PAIR.sub(rf"\1={REDACTED}", _BEARER.sub(rf"\1 {REDACTED}", text))


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret (`SECRET_KEY_PATTERN`); non-string keys never do."""
    return isinstance(key, str) and SECRET_KEY_PATTERN.search(key) is not None


def redact_data(value: Any) -> Any:
    """A copy of ``value`` with secrets removed: in mappings (at any depth, also inside lists and tuples)
    the values of secret-named keys become ``"[redacted]"``, and every string goes through `redact`.
    Other values are returned unchanged (not copied)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {key: REDACTED if is_secret_key(key) else redact_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact_data(item) for item in value)
    return value


def _redact_event(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `redact_data` over the event dict (the ``exc_info`` tuple is left alone)."""
    for key, value in event_dict.items():
        if key in _NOT_REDACTED:
            continue
        event_dict[key] = REDACTED if is_secret_key(key) else redact_data(value)
    return event_dict


def _redact_line(logger: WrappedLogger, method_name: str, line: Any) -> str:
    """Last processor: `redact` over the rendered line (catches secrets in tracebacks and reprs)."""
    return redact(line.decode("utf-8", "replace") if isinstance(line, bytes) else str(line))


def _drop_extras(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    for key in _DROPPED_EXTRAS:
        event_dict.pop(key, None)
    return event_dict


def _order_keys(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """timestamp, level, logger, event and the context keys first, then the rest in insertion order."""
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _add_node_id(node_id: str | None) -> Processor:
    def add_node_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if node_id is not None:
            event_dict.setdefault("node_id", node_id)
        return event_dict

    return add_node_id


def _is_tty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class _DataPulseHandler(logging.StreamHandler[TextIO]):
    """The root handler `configure_logging` installs (a type of its own so reconfiguring replaces it)."""


def configure_logging(
    level: str = "info", *, json: bool | None = None, stream: TextIO = sys.stderr, node_id: str | None = None
) -> None:
    """Route all stdlib ``logging`` and structlog output through one structlog formatter on ``stream``.

    Args:
        level: minimum level, ``debug`` | ``info`` | ``warning`` | ``error`` | ``critical`` (any case),
            set on the root logger.
        json: JSON lines if True, console rendering if False; None picks JSON unless ``stream`` is a TTY.
        stream: where lines go (default ``sys.stderr``).
        node_id: added as ``node_id`` to every line that has no ``node_id`` bound.

    Idempotent: a previous handler installed by this function is replaced, not duplicated; other
    handlers on the root logger are left alone. uvicorn's own handlers are removed and its loggers
    propagate to the root (pass ``log_config=None`` to uvicorn so it does not install them again).

    Raises:
        ValueError: unknown ``level``.
    """
    level_no = _LEVELS.get(level.lower())
    if level_no is None:
        raise ValueError(f"unknown log level {level!r}; expected one of debug, info, warning, error, critical")
    as_json = not _is_tty(stream) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _merge_bound,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_node_id(node_id),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Processor]
    if as_json:
        renderer = [
            structlog.processors.format_exc_info,
            _redact_event,
            _order_keys,
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [_redact_event, structlog.dev.ConsoleRenderer(colors=True)]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_extras],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer, _redact_line],
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,  # so a later configure_logging applies to existing loggers
    )

    handler = _DataPulseHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for previous in [h for h in root.handlers if isinstance(h, _DataPulseHandler)]:
        root.removeHandler(previous)
        previous.close()
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in _UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        for own_handler in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(own_handler)
        uvicorn_logger.propagate = True


_BOUND: ContextVar[Mapping[str, str] | None] = ContextVar("datapulse_log_context", default=None)
"""The `bind_log_context` values of the current request: one context variable set per request (binding each
key in ``structlog.contextvars`` costs a variable per key, per request), merged into lines by `_merge_bound`."""


def push_log_context(**values: str | None) -> Token[Mapping[str, str] | None]:
    """Bind the non-None ``values`` (usually `LOG_CONTEXT` keys) to every log line emitted until
    `pop_log_context` is called with the returned token (`bind_log_context` without a ``with`` block)."""
    outer = _BOUND.get()
    bound = {key: value for key, value in values.items() if value is not None}
    return _BOUND.set(bound if outer is None else {**outer, **bound})


def pop_log_context(token: Token[Mapping[str, str] | None]) -> None:
    """Restore the bindings from before the `push_log_context` that returned ``token``."""
    _BOUND.reset(token)


@contextmanager
def bind_log_context(**values: str | None) -> Iterator[None]:
    """Bind the non-None ``values`` (usually `LOG_CONTEXT` keys) to every log line emitted in the block.

    Bindings follow the current task (and tasks it starts, which copy its context) and the previous values
    are restored when the block ends, so blocks nest. Keys a line sets itself win over bound ones.
    """
    token = push_log_context(**values)
    try:
        yield
    finally:
        pop_log_context(token)


def _merge_bound(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    bound = _BOUND.get()
    if bound:
        for key, value in bound.items():
            event_dict.setdefault(key, value)
    return event_dict


def detach_log_context() -> None:
    """Drop every `bind_log_context` binding in the current context: for a long-lived task started from inside a
    request (a bridged child process), whose later lines must not carry that request's id, session or principal.
    The task runs in a copy of its starter's context, so the request itself keeps its bindings."""
    _BOUND.set(None)
    structlog.contextvars.clear_contextvars()
