"""Forwarding an HTTP request to the instance that owns its session, through Redis pub/sub.

The receiving instance publishes the whole request (headers and body, bounded by
``max_body_bytes``) to the owner's channel and relays the owner's response, chunk by chunk, to its
client: JSON answers, ``202 Accepted``, and long-lived SSE streams alike. The owner serves the
request through its complete app (Host/Origin checks, bearer auth, user middleware, transport), so
it trusts nothing but the client's own credentials, and handlers see the caller's identity exactly
as for a local request. A client that disconnects cancels the owner's side; an owner that stops
answering ends the relayed response (the client reconnects and failover takes over).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import redis.asyncio as aioredis
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datapulse.cluster import frames
from datapulse.cluster.admission import BurstLimiter
from datapulse.cluster.publisher import Publisher
from datapulse.cluster.store import Keys, StoreUnavailable, store_errors
from datapulse.errors import SESSION_MOVED_HEADER, Unavailable

log = logging.getLogger("datapulse.cluster.tunnel")

TUNNELLED_SCOPE_KEY = "datapulse.tunnelled"
"""Set on the scope of a request served for another instance (never forwarded again)."""

Frame = tuple[dict[str, Any], bytes]

FAST_PATH_S = 1.0
"""A forwarded request answered in one frame within this time is relayed without a disconnect watcher."""


class OwnerUnreachable(Unavailable):
    """The owning instance did not answer a forwarded request in time (HTTP 503)."""


class Tunnels:
    """Both ends of request forwarding for one instance.

    Args:
        redis: the cluster's client (publishing).
        keys: key and channel naming.
        node_id: this instance.
        forward_timeout_s: how often a forwarded request still waiting for its response checks that the
            owner is alive (a slow tool call keeps waiting; a dead owner's request gets 503).
        idle_timeout_s: a relayed response with no frame for this long is ended (the owner died).
        queue_max_frames: frames buffered per relayed response before the client is deemed too slow.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        node_id: str,
        *,
        forward_timeout_s: float,
        idle_timeout_s: float,
        queue_max_frames: int,
    ) -> None:
        self._redis = redis
        self.publisher = Publisher(redis)
        self.admission = BurstLimiter()
        self._keys = keys
        self.node_id = node_id
        self._forward_timeout_s = forward_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._queue_max = queue_max_frames
        self._ids = itertools.count(1)
        self._relays: dict[str, MemoryObjectSendStream[Frame]] = {}
        self._served: dict[str, anyio.Event] = {}
        self.app: ASGIApp | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        self.owner_alive: Callable[[str], Awaitable[bool]] | None = None
        """Whether an instance still beats; a request waiting on a live owner's slow handler keeps waiting."""
        self.channel_connected = False
        """Whether this instance's channel is subscribed (set by the channel reader): replies reach it."""
        self.channel_epoch = 0
        """Bumped by the channel reader whenever this instance's channel is (re)subscribed or lost: a reply
        published to it in between was lost, so a request forwarded before the change stops waiting for one."""

    # --- receiving instance --------------------------------------------------------------------------------------
    async def forward(
        self, owner: str, scope: Scope, body: bytes, receive: Receive, send: Send, streams: set[anyio.CancelScope]
    ) -> bool:
        """Serve the request ``scope`` (whose body was read into ``body``) on ``owner`` and relay the response.

        ``streams`` is the runtime's set of cancel scopes ended at shutdown (the relay joins it).

        Returns:
            False if no instance listens on ``owner``'s channel (it is gone), or the owner answered that it no
            longer holds the session (`SessionMoved`, marked by its header); nothing was sent to the client then.

        Raises:
            OwnerUnreachable: the owner did not start a response within ``forward_timeout_s`` while this
                instance's channel stayed subscribed, or the channel was lost before the response started (503).
            StoreUnavailable: Redis did not answer, or this instance's channel is not subscribed (503).
        """
        if not self.channel_connected:
            raise StoreUnavailable(
                "Service Unavailable: this instance is reconnecting to the cluster store (Redis), through which it "
                "reaches the instance holding this session; retry shortly",
                headers={"Retry-After": "1"},
            )
        tunnel_id = f"{self.node_id}.{next(self._ids)}"
        inbox, outbox = anyio.create_memory_object_stream[Frame](self._queue_max)
        self._relays[tunnel_id] = inbox
        epoch = self.channel_epoch
        try:
            with store_errors("forwarding a request to the session's instance"):
                listeners = await self.publisher.publish(
                    self._keys.node_channel(owner),
                    frames.encode(frames.request_header(tunnel_id, self.node_id, scope), body),
                )
            if not listeners:
                return False
            return await self._relay(tunnel_id, owner, epoch, outbox, receive, send, streams)
        finally:
            self._relays.pop(tunnel_id, None)
            inbox.close()
            outbox.close()

    async def _relay(
        self,
        tunnel_id: str,
        owner: str,
        epoch: int,
        outbox: MemoryObjectReceiveStream[Frame],
        receive: Receive,
        send: Send,
        streams: set[anyio.CancelScope],
    ) -> bool:
        # Fast path: most answers are one frame within milliseconds; relay it without spawning a watcher.
        first: Frame | None = None
        with anyio.move_on_after(min(FAST_PATH_S, self._forward_timeout_s)):
            try:
                first = await outbox.receive()
            except anyio.EndOfStream:
                first = ({"t": "cancel", "id": tunnel_id}, b"")
        if first is not None and first[0]["t"] == "res" and not first[0].get("more"):
            if _session_moved(first[0]):
                return False
            await send(frames.response_start(first[0]))
            await send({"type": "http.response.body", "body": first[1], "more_body": False})
            return True
        started = finished = moved = False
        disconnected = anyio.Event()
        async with anyio.create_task_group() as tasks:
            streams.add(tasks.cancel_scope)
            tasks.start_soon(_cancel_on_disconnect, receive, tasks.cancel_scope, disconnected)
            try:
                while True:
                    frame = first
                    first = None
                    if frame is None:
                        frame = await self._next_frame(outbox, owner, epoch, started)
                    if frame is None or frame[0]["t"] == "cancel":
                        break
                    header, chunk = frame
                    if not started:
                        if _session_moved(header):
                            moved = True
                            break
                        await send(frames.response_start(header))
                        started = True
                    more = bool(header.get("more"))
                    await send({"type": "http.response.body", "body": chunk, "more_body": more})
                    if not more:
                        finished = True
                        break
            finally:
                streams.discard(tasks.cancel_scope)
                tasks.cancel_scope.cancel()
        if not finished and not moved:
            with anyio.CancelScope(shield=True):
                await self._publish_cancel(owner, tunnel_id)
        if moved:
            return False
        if disconnected.is_set():
            return True
        if not started and self.channel_epoch != epoch:
            raise StoreUnavailable(
                "Service Unavailable: this instance lost its channel on the cluster store (Redis) while waiting for "
                "the reply of the instance holding this session; retry shortly",
                headers={"Retry-After": "1"},
            )
        if not started:
            raise OwnerUnreachable(
                "Service Unavailable: the instance holding this session did not answer; retry shortly",
                headers={"Retry-After": "1"},
            )
        if not finished:
            with anyio.move_on_after(1, shield=True):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True

    async def _next_frame(
        self, outbox: MemoryObjectReceiveStream[Frame], owner: str, epoch: int, started: bool
    ) -> Frame | None:
        """The next frame; None when the owner is gone. Before the response starts, a slow handler is
        waited for as long as the owner's heartbeat lasts and this instance's channel has stayed subscribed since
        the request was published (``epoch``: otherwise the reply may have been lost); once streaming, a silence
        longer than ``idle_timeout_s`` (keepalives included) ends the relay."""
        while True:
            with anyio.move_on_after(self._idle_timeout_s if started else self._forward_timeout_s):
                try:
                    return await outbox.receive()
                except anyio.EndOfStream:
                    return None  # the reader dropped this relay (client too slow)
            if started or self.channel_epoch != epoch or self.owner_alive is None:
                return None
            if not await self.owner_alive(owner):
                return None

    async def _publish_cancel(self, node: str, tunnel_id: str) -> None:
        try:
            with anyio.move_on_after(1):
                await self.publisher.publish(
                    self._keys.node_channel(node), frames.encode({"t": "cancel", "id": tunnel_id})
                )
        except Exception:
            log.debug("could not tell %s to cancel tunnel %s", node, tunnel_id)

    # --- owning instance ------------------------------------------------------------------------------------------
    def on_frame(self, data: bytes) -> None:
        """Handle one message from this instance's channel (called by the channel reader, never raises)."""
        try:
            header, body = frames.decode(data)
        except frames.FrameError as exc:
            log.warning("dropped a malformed tunnel frame: %s", exc)
            return
        tunnel_id: str = header["id"]
        kind = header["t"]
        if kind == "req":
            if self.task_group is None or self.app is None:
                log.warning("dropped a forwarded request: this instance is not serving yet")
                return
            self.task_group.start_soon(self._serve, header, body)
        elif kind == "cancel":
            served = self._served.get(tunnel_id)
            if served is not None:
                served.set()
            relay = self._relays.get(tunnel_id)
            if relay is not None:
                _offer(relay, (header, body))
        else:
            relay = self._relays.get(tunnel_id)
            if relay is None:
                owner = header.get("o")
                if isinstance(owner, str) and header.get("more") and self.task_group is not None:
                    self.task_group.start_soon(self._publish_cancel, owner, tunnel_id)
                return
            if not _offer(relay, (header, body)):
                log.warning("tunnel %s: client reads too slowly; ending the relayed stream", tunnel_id)
                relay.close()

    async def _serve(self, header: dict[str, Any], body: bytes) -> None:
        tunnel_id: str = header["id"]
        reply_channel = self._keys.node_channel(str(header.get("r", "")))
        try:
            scope = frames.request_scope(header)
        except frames.FrameError as exc:
            log.warning("dropped a forwarded request: %s", exc)
            return
        scope[TUNNELLED_SCOPE_KEY] = True
        gone = self._served[tunnel_id] = anyio.Event()
        try:
            slot = await self.admission.admit()
        except BaseException:
            self._served.pop(tunnel_id, None)
            raise
        delivered = False
        pending_start: Message | None = None

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal pending_start
            if gone.is_set():
                return
            if message["type"] == "http.response.start":
                pending_start = message
                return
            if message["type"] != "http.response.body":
                return
            more = bool(message.get("more_body", False))
            reply = frames.response_header(tunnel_id, more, pending_start)
            reply["o"] = self.node_id
            frame = frames.encode(reply, message.get("body", b""))
            pending_start = None
            try:
                listeners = await self.publisher.publish(reply_channel, frame)
            except Exception as exc:
                log.warning("tunnel %s: lost the forwarding instance (%s)", tunnel_id, type(exc).__name__)
                listeners = 0
            slot.release()  # the first frame is on its way: let the next tunnelled request in
            if not listeners:
                gone.set()

        assert self.app is not None
        try:
            if not gone.is_set():  # not cancelled by the forwarding instance while waiting for a slot
                await self.app(scope, receive, send)
        except Exception:
            log.exception("forwarded request %s %s failed", scope["method"], scope["path"])
        finally:
            slot.release()
            self._served.pop(tunnel_id, None)


def _session_moved(header: dict[str, Any]) -> bool:
    """Whether a first response frame is the owner's `SessionMoved` answer (it no longer holds the session)."""
    marker = SESSION_MOVED_HEADER.lower()
    return any(str(key).lower() == marker for key, _ in header.get("h", ()))


def _offer(relay: MemoryObjectSendStream[Frame], frame: Frame) -> bool:
    try:
        relay.send_nowait(frame)
    except anyio.WouldBlock:
        return False
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        return True
    return True


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope, disconnected: anyio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            scope.cancel()
            return
