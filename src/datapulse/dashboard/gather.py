"""Asking every instance of a cluster the same dashboard question (``GET /dashboard/api/<view>?local=1``) through
the request tunnel, as the caller: each instance answers for what it holds, with the caller's own credential (its
auth middleware checks it again), so principal filtering happens where the data is.

Costs nothing unless a dashboard view is open: one tunnelled GET per instance per poll.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from starlette.types import Message, Scope

from datapulse.errors import DataPulseError
from datapulse.runtime import Runtime

log = logging.getLogger("datapulse.dashboard")

GATHER_TIMEOUT_S = 2.0
"""How long an instance's share may take (a dashboard view polls every 2 s; a slower instance is named unreachable
for that poll)."""
LOCAL_QUERY = b"local=1"
"""The query that asks an instance for its own share only (it then asks nobody else)."""


def asks_local_only(scope: Scope) -> bool:
    """Whether the request asks this instance for its own share only (another instance is gathering)."""
    return LOCAL_QUERY in scope.get("query_string", b"").split(b"&")


async def gather(runtime: Runtime, scope: Scope, extra_query: bytes = b"") -> tuple[list[Any], list[str]]:
    """Every other live instance's JSON answer to the request ``scope`` (a dashboard GET), asked with
    ``?local=1`` (plus ``extra_query``, e.g. ``b"limit=50"``).

    Returns:
        (answers, unreachable): the decoded JSON bodies of the instances that answered 200 within
        `GATHER_TIMEOUT_S`, and the ids of those that did not (down, too slow, or refusing). Single-process
        mode: ``([], [])``.
    """
    cluster = runtime.cluster
    if cluster is None:
        return [], []
    try:
        nodes = [node for node in await cluster.live_nodes() if node != cluster.node_id]
    except DataPulseError as exc:
        log.warning("dashboard: cannot list the cluster's instances: %s", exc.message)
        return [], ["(cluster store unreachable)"]
    answers: list[Any] = []
    unreachable: list[str] = []
    query = LOCAL_QUERY + (b"&" + extra_query if extra_query else b"")
    sub_scope = {
        **scope,
        "method": "GET",
        "query_string": query,
        "headers": [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")],
    }

    async def ask(node: str) -> None:
        status = 0
        chunks: list[bytes] = []

        body_sent = False

        async def receive() -> Message:  # the (empty) body once, then nothing until cancelled, as a client that waits
            nonlocal body_sent
            if body_sent:
                await anyio.sleep_forever()
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def collect(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        answered = False
        with anyio.move_on_after(min(GATHER_TIMEOUT_S, runtime.settings.forward_timeout_s)):
            try:
                answered = await cluster.tunnels.forward(node, sub_scope, b"", receive, collect, set())
            except DataPulseError as exc:
                log.info("dashboard: instance %s did not answer: %s", node, exc.message)
        if answered and status == 200:
            try:
                answers.append(json.loads(b"".join(chunks)))
                return
            except ValueError:
                pass
        unreachable.append(node)

    async with anyio.create_task_group() as tasks:
        for node in nodes:
            tasks.start_soon(ask, node)
    return answers, sorted(unreachable)
