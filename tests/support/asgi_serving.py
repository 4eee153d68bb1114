"""A small ASGI app (a token endpoint, a protected resource) under real uvicorn on a free loopback port, in the
test's own event loop; ready on uvicorn's own start signal, never on a sleep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import uvicorn

from tests.support.servers import ReadyServer

WAIT_S: Final = 10.0
SHUTDOWN_S: Final = 5


@asynccontextmanager
async def serving(app: Any, *, http: Any = "auto") -> AsyncIterator[str]:
    """Serve ``app`` under uvicorn on a free loopback port until exit; yields its base URL. ``http``: uvicorn's
    HTTP protocol setting (a name or a protocol class)."""
    config = uvicorn.Config(
        app,
        http=http,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    server = ReadyServer(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server._serve)  # _serve: uvicorn's serve() without taking over the signal handlers
        with anyio.fail_after(WAIT_S):
            await server.ready.wait()
        try:
            yield f"http://127.0.0.1:{server.port}"
        finally:
            server.should_exit = True
            tasks.cancel_scope.deadline = anyio.current_time() + SHUTDOWN_S
