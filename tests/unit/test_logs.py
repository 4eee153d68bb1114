"""`datapulse.logs`: one line shape for structlog and stdlib records, context binding, and redaction."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from datapulse.logs import REDACTED, bind_log_context, configure_logging, redact, redact_data

TOKEN = "tok-3kq9ZxW1vP"  # a token value that must never reach any output line
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo configure_logging: the root handlers and level, uvicorn's loggers, structlog's configuration."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.access")
    }
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (own, propagate) in uvicorn.items():
        logging.getLogger(name).handlers[:] = own
        logging.getLogger(name).propagate = propagate
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    """Each output line parsed as JSON (fails if a line is not one JSON object)."""
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


def test_json_mode_writes_one_object_per_line_with_timestamp_level_logger_event_and_bound_context() -> None:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out, node_id="node-a")
    log = structlog.get_logger("datapulse.test")
    with bind_log_context(request_id="r-1", session_id="s-1", principal="alice"):
        log.info("tool called", tool="add")
    log.warning("after the block")

    first, second = lines(out)
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert ISO_UTC.match(first["timestamp"])
    assert first | {"timestamp": None} == {
        "timestamp": None,
        "level": "info",
        "logger": "datapulse.test",
        "event": "tool called",
        "request_id": "r-1",
        "session_id": "s-1",
        "principal": "alice",
        "node_id": "node-a",
        "tool": "add",
    }
    assert second["event"] == "after the block"
    assert second["level"] == "warning"
    assert "request_id" not in second
    assert second["node_id"] == "node-a"


def test_a_stdlib_logging_line_comes_out_in_the_same_shape() -> None:
    out = io.StringIO()
    configure_logging("info", json=True, stream=out, node_id="node-a")
    with bind_log_context(request_id="r-2", principal=None):
        logging.getLogger("datapulse.x").info("opened %s for %s", "session", "bob", extra={"stream_count": 2})
        logging.getLogger("uvicorn.error").warning("uvicorn says hi")
    logging.getLogger("datapulse.x").debug("below the level")

    stdlib, uvicorn = lines(out)
    assert list(stdlib)[:4] == ["timestamp", "level", "logger", "event"]
    assert ISO_UTC.match(stdlib["timestamp"])
    assert {key: stdlib[key] for key in ("level", "logger", "event", "request_id", "node_id", "stream_count")} == {
        "level": "info",
        "logger": "datapulse.x",
        "event": "opened session for bob",
        "request_id": "r-2",
        "node_id": "node-a",
        "stream_count": 2,
    }
    assert "principal" not in stdlib  # None values are not bound
    assert (uvicorn["logger"], uvicorn["level"], uvicorn["event"]) == ("uvicorn.error", "warning", "uvicorn says hi")


def test_nested_bindings_override_and_restore_the_outer_values() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)
    log = logging.getLogger("datapulse.nest")
    with bind_log_context(request_id="outer", session_id="s"):
        with bind_log_context(request_id="inner"):
            log.info("in")
        log.info("out")

    inner, outer = lines(out)
    assert (inner["request_id"], inner["session_id"]) == ("inner", "s")
    assert (outer["request_id"], outer["session_id"]) == ("outer", "s")


def test_configuring_twice_does_not_duplicate_lines_and_the_last_stream_wins() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second)
    logging.getLogger("datapulse.once").info("once")
    assert first.getvalue() == ""
    assert [line["event"] for line in lines(second)] == ["once"]


def test_json_is_the_default_off_a_tty_and_console_rendering_on_a_tty_is_not_json() -> None:
    pipe, tty = io.StringIO(), FakeTTY()
    configure_logging(stream=pipe)
    logging.getLogger("datapulse.mode").info("to a pipe")
    configure_logging(stream=tty)
    logging.getLogger("datapulse.mode").info("to a terminal")

    assert lines(pipe)[0]["event"] == "to a pipe"
    text = tty.getvalue()
    assert "to a terminal" in text
    assert "datapulse.mode" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("verbose", stream=io.StringIO())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [redacted]"),
        ("bearer abc, then more", "bearer [redacted], then more"),
        ('header "Bearer x/y+z=="', 'header "Bearer [redacted]"'),
        ("Bearer [redacted]", "Bearer [redacted]"),
        ("GET /mcp?token=abc&x=1", "GET /mcp?token=[redacted]&x=1"),
        (
            "password=hunter2 api_key=k1 access_token=t2",
            "password=[redacted] api_key=[redacted] access_token=[redacted]",
        ),
        ("a bearer of good news", "a bearer [redacted] good news"),
        ("nothing secret here", "nothing secret here"),
    ],
    ids=["header", "lowercase", "quoted", "idempotent", "query", "pairs", "false-positive-accepted", "plain"],
)
def test_redact_table(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_data_clears_secret_keys_at_any_depth_and_bearer_strings_everywhere() -> None:
    data = {
        "Authorization": "Bearer abc",
        "user": "alice",
        "nested": {"client_secret": "s", "X-API-Key": "k", "Cookie": "c", "list": [{"ticket": "t"}, "Bearer q"]},
        "tuple": ("password", {"refresh_token": "r"}),
        "count": 3,
    }
    assert redact_data(data) == {
        "Authorization": REDACTED,
        "user": "alice",
        "nested": {
            "client_secret": REDACTED,
            "X-API-Key": REDACTED,
            "Cookie": REDACTED,
            "list": [{"ticket": REDACTED}, "Bearer [redacted]"],
        },
        "tuple": ("password", {"refresh_token": REDACTED}),
        "count": 3,
    }
    assert data["Authorization"] == "Bearer abc"  # the input is not modified


def test_secrets_in_event_dicts_messages_extras_and_tracebacks_never_reach_the_output() -> None:
    out = io.StringIO()
    configure_logging("debug", json=True, stream=out)
    stdlib = logging.getLogger("datapulse.secrets")
    log = structlog.get_logger("datapulse.secrets")

    log.info("structlog key", token=TOKEN, authorization=f"Bearer {TOKEN}")
    log.info(
        "structlog nested", request={"headers": {"authorization": f"Bearer {TOKEN}"}, "body": [{"password": TOKEN}]}
    )
    log.info(f"structlog message Bearer {TOKEN}")
    stdlib.info("stdlib message Authorization: Bearer %s", TOKEN)
    stdlib.info("stdlib url /mcp?token=%s", TOKEN)
    stdlib.warning("stdlib extra", extra={"api_key": TOKEN, "ctx": {"secret": TOKEN}})
    with bind_log_context(request_id="r-1"):
        try:
            raise PermissionError(f"rejected Bearer {TOKEN}")
        except PermissionError:
            stdlib.exception("stdlib traceback")
            log.exception("structlog traceback")

    records = lines(out)
    assert len(records) == 8
    for line in out.getvalue().splitlines():
        assert TOKEN not in line
    assert records[0]["token"] == REDACTED
    assert records[1]["request"] == {"headers": {"authorization": REDACTED}, "body": [{"password": REDACTED}]}
    assert records[3]["event"] == "stdlib message Authorization: Bearer [redacted]"
    assert records[5]["api_key"] == REDACTED
    assert "Bearer [redacted]" in records[6]["exception"]


def test_secrets_never_reach_the_console_rendering_either() -> None:
    tty = FakeTTY()
    configure_logging("debug", stream=tty)
    logging.getLogger("datapulse.secrets").info("console Bearer %s", TOKEN)
    structlog.get_logger("datapulse.secrets").info("console key", password=TOKEN)
    try:
        raise PermissionError(f"rejected Bearer {TOKEN}")
    except PermissionError:
        logging.getLogger("datapulse.secrets").exception("console traceback")
    assert "console traceback" in tty.getvalue()
    assert TOKEN not in tty.getvalue()
