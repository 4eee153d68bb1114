"""This instance's membership in a cluster: its Redis client, heartbeat, channel reader and the
cluster-wide services built on them (session registry, tunnels, event journals).

Liveness: every instance refreshes ``dp:{n:<node>}:alive`` (expiring after ``node_heartbeat_ttl_s``)
three times per TTL, and deletes it on a clean shutdown, so a killed instance is declared dead at
most one TTL after its last beat and a stopped one at once.

Fencing: the heartbeat is also this instance's lease on its sessions. Other instances take a session over
only when its owner's heartbeat is gone, which cannot happen before one TTL after the owner sent its last
successful beat. So the owner serves its sessions without asking Redis while `holds_lease`; after that (Redis
paused or unreachable for longer than the TTL) it confirms a session's owner before serving it, and the first
beat that finds the heartbeat gone reconciles every session (`on_store_back`): those another instance took
over are let go here, those Redis lost are written back. Journal appends are fenced by owner as well
(`datapulse.cluster.journal`). And an instance takes sessions over only while it holds its own lease, and not
within one TTL (plus two Redis timeouts) after its own beats failed (`may_take_over`): after an outage that
expired every heartbeat at once, the live owners beat again first, so only a dead owner's sessions move.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from redis.asyncio.client import PubSub

from datapulse.cluster.journal import RedisEventJournal
from datapulse.cluster.redis_api import close_pubsub
from datapulse.cluster.registry import RedisSessionRegistry
from datapulse.cluster.store import Keys, connect, store_errors
from datapulse.cluster.tunnel import Tunnels
from datapulse.config import Settings
from datapulse.errors import Unavailable
from datapulse.sessions.registry import SessionRecord

log = logging.getLogger("datapulse.cluster")

RECONNECT_BACKOFF_MAX_S = 2.0
RECORD_CACHE_TTL_S = 2.0
RECORD_CACHE_MAX = 50_000
LEASE_FRACTION = 0.8
"""The lease ends this fraction of a heartbeat TTL after the beat was sent (a margin for clock drift)."""


class ClusterNode:
    """Cluster services for the instance ``node_id`` (create in `create_app`, run in the lifespan).

    Args:
        settings: ``redis_url`` must be set.
        node_id: this instance's id.
    """

    def __init__(self, settings: Settings, node_id: str) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.node_id = node_id
        self.redis = connect(settings.redis_url.get_secret_value(), settings.redis_timeout_s)
        self.keys = Keys(settings.redis_key_prefix)
        self.registry = RedisSessionRegistry(self.redis, self.keys, node_id, settings.session_idle_ttl_s)
        self.tunnels = Tunnels(
            self.redis,
            self.keys,
            node_id,
            forward_timeout_s=settings.forward_timeout_s,
            idle_timeout_s=2 * settings.keepalive_interval_s + settings.node_heartbeat_ttl_s,
            queue_max_frames=settings.outbound_queue_max_messages,
        )
        self.tunnels.owner_alive = self._alive_quietly
        self._records: dict[str, tuple[SessionRecord, float]] = {}
        self.listening = anyio.Event()
        self.retired = False
        """Set by `retire` (drain): the heartbeat is gone for good."""
        self.lease_until = 0.0
        """Monotonic time until which no other instance can take this one's sessions over (`holds_lease`)."""
        self.takeover_after = 0.0
        """Monotonic time before which this instance takes no session over (`may_take_over`)."""
        self.on_store_back: Callable[[bool], None] | None = None
        """Called after a beat succeeds that follows failed ones, or finds this instance's heartbeat gone, with
        ``lapsed``: True when the heartbeat had expired (Redis paused or out of reach for longer than the TTL, or
        restarted empty), so other instances may have taken sessions over and Redis may have lost records: the
        instance then reconciles its sessions with the registry. Either way, events held while the journal did
        not answer go out."""
        self.on_session_moved: Callable[[str, str], None] | None = None
        """Called with ``(session_id, new_owner)`` when a journal append finds that another instance owns a
        session held here, so the instance lets its copy go."""

    def journal(self, session_id: str) -> RedisEventJournal:
        """The Redis event journal of ``session_id`` (its SSE events, for replay after a failover)."""
        settings = self.settings

        def moved(owner: str) -> None:
            if self.on_session_moved is not None:
                self.on_session_moved(session_id, owner)

        return RedisEventJournal(
            self.redis,
            self.keys.events(session_id),
            session_key=self.keys.session(session_id),
            node_id=self.node_id,
            max_events=4 * settings.outbound_queue_max_messages,
            ttl_s=settings.event_history_ttl_s,
            on_moved=moved,
        )

    def may_take_over(self) -> bool:
        """Whether this instance may take over a session whose owner's heartbeat is missing: only while it holds
        its own lease, and not within one heartbeat TTL plus two Redis timeouts after its own beats failed. After
        an outage every heartbeat may have expired at once (a frozen or restarted Redis), although every instance
        lives; a live owner beats again within that time (its pending beat may wait out two Redis timeouts, then
        it beats three times per TTL), so waiting tells a dead owner from a live one (requests meanwhile get 503
        and retry)."""
        return self.holds_lease() and time.monotonic() >= self.takeover_after

    def holds_lease(self) -> bool:
        """Whether this instance's sessions are certainly still its own: its last successful heartbeat was sent
        less than one heartbeat TTL ago, so no other instance can have seen the heartbeat missing."""
        return not self.retired and time.monotonic() < self.lease_until

    async def is_alive(self, node_id: str) -> bool:
        """Whether ``node_id`` has a current heartbeat.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        with store_errors("checking an instance's heartbeat"):
            return bool(await self.redis.exists(self.keys.node_alive(node_id)))

    async def live_nodes(self) -> list[str]:
        """The ids of the instances with a current heartbeat (this one included while it beats), sorted.

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        pattern = self.keys.node_alive("*")
        head, tail = pattern.split("*")
        with store_errors("listing the cluster's instances"):
            keys = [key async for key in self.redis.scan_iter(match=pattern, count=1000)]
        names = (key.decode() if isinstance(key, bytes) else str(key) for key in keys)
        return sorted(name[len(head) : len(name) - len(tail)] for name in names)

    async def session_record(self, session_id: str, *, fresh: bool = False) -> SessionRecord | None:
        """The registry record of ``session_id``, from a short-lived local cache unless ``fresh``.

        Caching is safe: a session's principal never changes, and its owner changes only when the old
        owner died (a forward to it then finds no listener and the caller asks again with ``fresh``).

        Raises:
            StoreUnavailable: Redis did not answer (503).
        """
        now = time.monotonic()
        if not fresh:
            cached = self._records.get(session_id)
            if cached is not None and cached[1] > now:
                return cached[0]
        record = await self.registry.get(session_id)
        if record is None:
            self._records.pop(session_id, None)
            return None
        if len(self._records) >= RECORD_CACHE_MAX:
            self._records.clear()
        self._records[session_id] = (record, now + RECORD_CACHE_TTL_S)
        return record

    def forget_record(self, session_id: str) -> None:
        """Drop ``session_id`` from the record cache (it was closed or moved)."""
        self._records.pop(session_id, None)

    async def _alive_quietly(self, node_id: str) -> bool:
        try:
            return await self.is_alive(node_id)
        except Unavailable:
            return False

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Beat, and read this instance's channel, until cancelled; ready once subscribed."""
        async with anyio.create_task_group() as tasks:
            self.tunnels.task_group = tasks
            tasks.start_soon(self._beat_forever)
            tasks.start_soon(self.tunnels.publisher.run)
            await tasks.start(self._read_channel_forever)
            task_status.started()

    async def retire(self) -> None:
        """Stop beating and delete the heartbeat now (drain): other instances take this one's sessions over on
        their next request instead of forwarding here. Never raises (Redis may be down)."""
        self.retired = True
        with anyio.move_on_after(self.settings.redis_timeout_s, shield=True):
            try:
                await self.redis.delete(self.keys.node_alive(self.node_id))
            except Exception:
                log.info("could not delete the heartbeat while draining; it expires by itself")

    async def leave(self) -> None:
        """Delete the heartbeat (so other instances take over at once) and close the client."""
        with anyio.move_on_after(self.settings.redis_timeout_s, shield=True):
            try:
                await self.redis.delete(self.keys.node_alive(self.node_id))
            except Exception:
                log.info("could not delete the heartbeat at shutdown; it expires by itself")
        with anyio.move_on_after(1, shield=True):
            await self.redis.aclose()

    async def _beat_forever(self) -> None:
        ttl_s = self.settings.node_heartbeat_ttl_s
        key = self.keys.node_alive(self.node_id)
        value = json.dumps({"pid": os.getpid(), "started": time.time()})
        failing = False
        first = True
        while not self.retired:
            try:
                sent_at = time.monotonic()
                previous = await self.redis.set(key, value, px=int(ttl_s * 1000), get=True)
                self.lease_until = sent_at + ttl_s * LEASE_FRACTION
                lapsed = previous is None and not first
                if failing:
                    log.warning("cluster store reachable again; heartbeat restored")
                if lapsed:
                    log.warning(
                        "this instance's heartbeat had lapsed (Redis paused, out of reach or restarted); "
                        "reconciling its sessions with the registry"
                    )
                if failing or lapsed:
                    # A live owner beats again within a third of a TTL of its own next attempt, which may still be
                    # blocked for two Redis timeouts (a command and its retry) when Redis comes back.
                    self.takeover_after = time.monotonic() + ttl_s + 2 * self.settings.redis_timeout_s
                    if self.on_store_back is not None:
                        self.on_store_back(lapsed)
                failing = False
                first = False
            except Exception as exc:
                if not failing:
                    log.warning("heartbeat failed (%s); retrying", type(exc).__name__)
                failing = True
            await anyio.sleep(ttl_s / 3)

    async def _read_channel_forever(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        channel = self.keys.node_channel(self.node_id)
        backoff = 0.05
        reported = False
        while True:
            pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                self.tunnels.channel_connected = True
                self.tunnels.channel_epoch += 1
                backoff = 0.05
                if reported:
                    log.warning("cluster channel re-subscribed")
                    reported = False
                if not self.listening.is_set():
                    self.listening.set()
                    task_status.started()
                while True:
                    # A bounded wait returns None when idle (an unbounded one would trip the socket timeout).
                    message: dict[str, Any] | None = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self.tunnels.on_frame(message["data"])
            except Exception as exc:
                self.tunnels.channel_connected = False
                self.tunnels.channel_epoch += 1  # replies published meanwhile were lost
                if not reported:
                    log.warning("cluster channel lost (%s); reconnecting", type(exc).__name__)
                    reported = True
                if not self.listening.is_set():
                    self.listening.set()
                    task_status.started()
            finally:
                with anyio.move_on_after(1, shield=True), contextlib.suppress(Exception):
                    await close_pubsub(pubsub)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
