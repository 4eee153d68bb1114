"""A TCP relay between one client and its server that a test can cut: a network partition between one DataPulse
instance and Redis, while the other instances still reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
import anyio.abc

CHUNK_BYTES = 65536


class TcpProxy:
    """Relays every connection made to ``port`` to ``target_port`` on 127.0.0.1, until `cut`.

    `cut` closes every relayed connection and refuses new ones (accepted, then closed at once, as a peer that
    resets would) until `heal`.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self._relays: set[anyio.CancelScope] = set()

    def redis_url(self, db: int = 0) -> str:
        """A ``redis://`` URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cut(self) -> None:
        self.is_cut = True
        for scope in list(self._relays):
            scope.cancel()

    def heal(self) -> None:
        self.is_cut = False

    async def handle(self, downstream: anyio.abc.SocketStream) -> None:
        async with downstream:
            if self.is_cut:
                return
            try:
                upstream = await anyio.connect_tcp("127.0.0.1", self.target_port)
            except OSError:
                return
            tasks = anyio.create_task_group()
            try:
                async with upstream, tasks:
                    self._relays.add(tasks.cancel_scope)
                    tasks.start_soon(_pump, downstream, upstream, tasks.cancel_scope)
                    tasks.start_soon(_pump, upstream, downstream, tasks.cancel_scope)
            finally:
                self._relays.discard(tasks.cancel_scope)


async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, both: anyio.CancelScope) -> None:
    with suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        while True:
            await sink.send(await source.receive(CHUNK_BYTES))
    both.cancel()  # one side ended: end the other


@asynccontextmanager
async def tcp_proxy(target_port: int) -> AsyncIterator[TcpProxy]:
    """A running `TcpProxy` to ``target_port`` on a free local port; stopped (every connection closed) on exit."""
    proxy = TcpProxy(target_port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tasks:
        tasks.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            proxy.cut()
            tasks.cancel_scope.cancel()
