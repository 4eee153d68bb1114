"""The idle-session reaper when the cluster store does not answer: a warning that says so, no traceback, no crash."""

from __future__ import annotations

import logging

import anyio
import pytest
from pydantic import SecretStr

from datapulse.app import create_app, lifespan, reap_once, runtime_of
from datapulse.config import Settings
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

WAIT_S = 20.0


async def test_a_reaper_pass_without_redis_logs_a_warning_naming_the_store_and_no_traceback(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        redis_url=SecretStr(redis_server.url),
        redis_timeout_s=1,
        token=SecretStr("t" * 32),
        request_state_keys=SecretStr("k" * 43),
    )
    runtime = runtime_of(create_app(settings))
    with anyio.fail_after(WAIT_S):
        async with lifespan(runtime):
            await reap_once(runtime)  # Redis answers: nothing to say
            assert not [record for record in caplog.records if "reaper" in record.getMessage()]
            await redis_server.stop()
            with caplog.at_level(logging.WARNING, logger="datapulse"):
                await reap_once(runtime)

    reaper = [record for record in caplog.records if "reaper" in record.getMessage()]
    assert [record.levelno for record in reaper] == [logging.WARNING]
    assert "the cluster store (Redis) did not answer" in reaper[0].getMessage()
    assert reaper[0].exc_info is None
