"""The one place DataPulse reaches into uvicorn's private HTTP protocol module.

uvicorn's httptools protocol writes a response's status line and headers with one ``transport.write`` when the
ASGI app sends ``http.response.start``, and its body with another on ``http.response.body``: two ``send(2)``
system calls and two TCP segments for every small JSON response, which the client then reads one by one. ASGI
gives an app no way to hand both over at once, so `CoalescingHttpToolsProtocol` gives uvicorn's protocol a
transport (`CoalescedWrites`) that joins the writes made in one event-loop iteration into one ``writelines``
call at the end of the iteration: head and body of a complete response leave in one system call, and a stream's
frames written together leave together. Nothing waits for a later iteration than the current one, so a stream's
first bytes are not held back.

What this relies on in uvicorn (``uvicorn.protocols.http.httptools_impl.HttpToolsProtocol``, a private module):
the protocol keeps the transport given to ``connection_made`` and writes only through it. `check_seams` says
whether that still holds; ``tests/test_uvicorn_adapter.py`` fails loudly when an upgrade changes it.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

__all__ = ["CoalescedWrites", "CoalescingHttpToolsProtocol", "check_seams", "http_protocol"]

try:  # uvicorn's "auto" uses httptools when installed, and h11 otherwise: so do we
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is a locked dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


class CoalescedWrites(asyncio.Transport):
    """An ``asyncio.Transport`` in front of ``transport`` whose writes made in one event-loop iteration go out
    as one ``writelines`` call (one ``sendmsg``/``writev`` with uvloop) at the end of that iteration.

    ``close``, ``write_eof`` and ``set_protocol`` write what is pending first; ``abort`` drops it, as an abort
    drops the transport's own buffer. Everything else is the wrapped transport's.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what was written since the last flush to the wrapped transport (no-op when nothing is). Dropped
        when the wrapped transport is closing meanwhile: `close` flushes first, so only a connection the peer
        ended is closing here, and uvloop refuses writes to it (``RuntimeError`` in a loop callback)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        pending = self._pending
        held = 0 if pending is None else sum(len(data) for data in pending)
        return self._transport.get_write_buffer_size() + held

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


if HttpToolsProtocol is not None:

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol writing through `CoalescedWrites` (see the module docstring)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(CoalescedWrites(transport, self.loop))

else:  # pragma: no cover
    CoalescingHttpToolsProtocol = None  # type: ignore[assignment,misc]


def check_seams() -> list[str]:
    """What no longer holds of the uvicorn internals `CoalescingHttpToolsProtocol` relies on (empty: all holds).

    Returns:
        One sentence per broken assumption: the protocol class is gone, it no longer takes the transport in
        ``connection_made(transport)``, keeps it as ``self.transport``, or has no ``self.loop``.
    """
    if HttpToolsProtocol is None:
        return ["uvicorn.protocols.http.httptools_impl.HttpToolsProtocol cannot be imported"]
    problems: list[str] = []
    made = inspect.signature(HttpToolsProtocol.connection_made)
    if list(made.parameters) != ["self", "transport"]:
        problems.append(f"HttpToolsProtocol.connection_made{made} no longer takes (self, transport)")
    source = inspect.getsource(HttpToolsProtocol)
    if "self.transport = transport" not in source:
        problems.append("HttpToolsProtocol no longer keeps the transport as self.transport")
    if "self.loop = " not in source:
        problems.append("HttpToolsProtocol no longer has self.loop")
    return problems


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's ``http`` setting for DataPulse: `CoalescingHttpToolsProtocol`, or ``"auto"`` (uvicorn's own
    choice) when httptools is not installed."""
    return CoalescingHttpToolsProtocol if CoalescingHttpToolsProtocol is not None else "auto"
