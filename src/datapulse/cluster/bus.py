"""`RedisSubscriptionBus`: the SDK's `SubscriptionBus` fanned out across DataPulse nodes over Redis pub/sub.

The SDK (mcp 2.3.0, ``mcp.server.subscriptions``; SEP-2575 ``subscriptions/listen``) publishes typed
`ServerEvent` values to a `SubscriptionBus` and ships only an in-process one. This bus wraps a local bus
(default: the SDK's `InMemorySubscriptionBus`) and relays every event through one Redis channel, so a
listen stream on any node sees list changes and resource updates published on every node.

Contract (the SDK's `SubscriptionBus` Protocol docstring and ``docs/handlers/subscriptions.md``):

- `subscribe` is synchronous local registration; listeners are synchronous, must not raise, and run on
  the event loop (the reader task calls them through ``local.publish``).
- `publish` delivers to local listeners at once, then PUBLISHes the event tagged with this node's id;
  each node's reader (`run`) delivers events from other nodes and drops its own echoes, so every
  listener sees an event once.
- At-most-once, no replay, no ordering across nodes: events are level triggers, and an event published
  while Redis is down, or while a reader is resubscribing, is lost for the other nodes (clients
  re-listen and refetch). So that no listener misses one silently, ``on_gap`` is called whenever the
  reader loses its subscription (DataPulse ends its listen streams then, and refuses new ones until the
  reader is subscribed again: `connected`), and a node whose PUBLISH failed tells the others once Redis
  answers again (a gap notice, ``{"n": node_id, "gap": true}``): each of them calls ``on_gap`` then. A frozen
  Redis breaks no subscription, so the notice is how the readers learn what they missed.

Wire format: one UTF-8 JSON object per PUBLISH, ``{"n": node_id, "m": method, "p": params}``, where
``method`` and ``params`` are the event's MCP notification (``event_to_notification``) without
``_meta``, decoded with the SDK's ``event_from_wire``. For example
``{"n":"node-a","m":"notifications/resources/updated","p":{"uri":"file:///a.txt"}}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
from mcp.server.subscriptions import InMemorySubscriptionBus, ServerEvent, SubscriptionBus
from mcp.shared.subscriptions import event_from_wire, event_to_notification
from redis.asyncio import Redis
from redis.exceptions import RedisError

from datapulse.cluster.redis_api import close_pubsub

__all__ = ["DEFAULT_PUBLISH_TIMEOUT_S", "RedisSubscriptionBus", "decode_event", "encode_event"]

logger = logging.getLogger(__name__)

DEFAULT_PUBLISH_TIMEOUT_S = 5.0
"""Bound on one PUBLISH, in seconds, when the Redis client has no ``socket_timeout``."""

_FIRST_BACKOFF_S = 0.05


def encode_event(node_id: str, event: ServerEvent) -> str:
    """The wire frame for ``event`` published by ``node_id``: JSON ``{"n": node_id, "m": method, "p": params}``."""
    wire: dict[str, Any] = event_to_notification(event, {}).model_dump(by_alias=True, exclude_none=True, mode="json")
    params = {key: value for key, value in (wire.get("params") or {}).items() if key != "_meta"}
    return json.dumps({"n": node_id, "m": wire["method"], "p": params}, separators=(",", ":"))


def encode_gap_notice(node_id: str) -> str:
    """The wire frame telling the other nodes that events ``node_id`` published were lost (its PUBLISH failed)."""
    return json.dumps({"n": node_id, "gap": True}, separators=(",", ":"))


def gap_notice_from(data: bytes | str) -> str | None:
    """The node id of a gap notice frame, or None if ``data`` is not one."""
    try:
        frame = json.loads(data)
    except ValueError:
        return None
    if isinstance(frame, dict) and frame.get("gap") is True and isinstance(frame.get("n"), str):
        return str(frame["n"])
    return None


def decode_event(data: bytes | str) -> tuple[str, ServerEvent] | None:
    """The ``(node_id, event)`` a wire frame carries, or None if it is not a frame this bus understands."""
    try:
        frame = json.loads(data)
    except ValueError:  # includes UnicodeDecodeError
        return None
    if not isinstance(frame, dict):
        return None
    node_id, method, params = frame.get("n"), frame.get("m"), frame.get("p")
    if not isinstance(node_id, str) or not isinstance(method, str) or not isinstance(params, dict | None):
        return None
    event = event_from_wire(method, params)
    return None if event is None else (node_id, event)


class RedisSubscriptionBus:
    """A `SubscriptionBus` shared by every node subscribed to ``channel`` on one Redis.

    Args:
        redis: the node's ``redis.asyncio.Redis`` client. PUBLISH uses its pool; the reader holds one
            connection of it while subscribed. Its ``socket_timeout`` (seconds) bounds each `publish`.
        channel: the pub/sub channel; scope it per deployment (e.g. ``dp:ch:bus``).
        node_id: this bus's id, unique among the buses on ``channel`` (its own echoes are dropped by it).
        local: the bus holding this node's listeners; default a new ``InMemorySubscriptionBus``.
        reconnect_backoff_max_s: cap, in seconds, of the reader's exponential backoff between
            resubscription attempts (first wait 0.05 s, doubling).

    Raises:
        ValueError: if ``reconnect_backoff_max_s`` is not positive.

    Start `run` in the server's task group (``await tg.start(bus.run)``) before serving listen streams;
    without it, events from other nodes are not delivered here (local delivery and publishing still work).
    """

    def __init__(
        self,
        redis: Redis,
        channel: str,
        node_id: str,
        local: SubscriptionBus | None = None,
        *,
        reconnect_backoff_max_s: float = 2.0,
    ) -> None:
        if reconnect_backoff_max_s <= 0:
            raise ValueError(f"reconnect_backoff_max_s must be positive, got {reconnect_backoff_max_s}")
        self._redis = redis
        self._channel = channel
        self._node_id = node_id
        self._local: SubscriptionBus = local if local is not None else InMemorySubscriptionBus()
        self._backoff_max_s = reconnect_backoff_max_s
        socket_timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._publish_timeout_s = float(socket_timeout) if socket_timeout else DEFAULT_PUBLISH_TIMEOUT_S
        self._connected = False
        self._publish_failing = False
        self._gap_owed = False  # a PUBLISH failed: the other nodes must be told (`_announce_gaps_forever`)
        self._gap_owed_changed: anyio.Event | None = None
        self.on_gap: Callable[[], None] | None = None
        """Called (synchronously, must not raise) when the reader loses its subscription, or finds that redis-py
        resubscribed it by itself: events from other nodes published meanwhile were lost here."""

    @property
    def connected(self) -> bool:
        """Whether the reader is subscribed to the channel right now (for readiness checks)."""
        return self._connected

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register ``listener`` on the local bus; returns its idempotent unsubscribe callable."""
        return self._local.subscribe(listener)

    async def publish(self, event: ServerEvent) -> None:
        """Deliver ``event`` to this node's listeners, then PUBLISH it for the other nodes.

        Never raises for Redis faults: a failed or timed-out PUBLISH (bounded by the client's
        ``socket_timeout``, else `DEFAULT_PUBLISH_TIMEOUT_S`) is logged as a warning once per outage
        and dropped; local delivery has already happened.
        """
        await self._local.publish(event)
        try:
            with anyio.fail_after(self._publish_timeout_s):
                await self._redis.publish(self._channel, encode_event(self._node_id, event))
        except (RedisError, OSError) as exc:  # OSError covers the TimeoutError of fail_after
            level = logging.DEBUG if self._publish_failing else logging.WARNING
            why = f"{type(exc).__name__}: {str(exc) or f'no answer within {self._publish_timeout_s} s'}"
            logger.log(level, "bus: PUBLISH to %r failed (%s); other nodes miss %r", self._channel, why, event)
            self._publish_failing = True
            self._gap_owed = True
            if self._gap_owed_changed is not None:
                self._gap_owed_changed.set()
            return
        if self._publish_failing:
            self._publish_failing = False
            logger.info("bus: PUBLISH to %r works again", self._channel)

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Relay events from other nodes to the local listeners, until cancelled.

        Signals ``task_status.started()`` once the first SUBSCRIBE is confirmed by Redis (so
        ``tg.start(bus.run)`` waits for Redis; bound it with a timeout if startup must not). On a Redis
        fault it logs a warning, waits (exponential backoff capped at ``reconnect_backoff_max_s``) and
        subscribes again, forever. Own echoes are dropped; undecodable messages are logged and skipped. Beside
        the reader, a task publishes a gap notice after a failed PUBLISH (retried with the same backoff), and a
        notice from another node calls ``on_gap``.
        """
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._announce_gaps_forever)
            await self._read_forever(task_status)

    async def _announce_gaps_forever(self) -> None:
        """Publish a gap notice after PUBLISH failed, retrying with the reader's backoff until Redis takes it."""
        while True:
            self._gap_owed_changed = anyio.Event()
            if not self._gap_owed:
                await self._gap_owed_changed.wait()
            delay = min(_FIRST_BACKOFF_S, self._backoff_max_s)
            while self._gap_owed:
                self._gap_owed = False  # a failure from here on owes another notice
                try:
                    with anyio.fail_after(self._publish_timeout_s):
                        await self._redis.publish(self._channel, encode_gap_notice(self._node_id))
                except (RedisError, OSError):
                    self._gap_owed = True
                    await anyio.sleep(delay)
                    delay = min(delay * 2, self._backoff_max_s)
                else:
                    logger.info("bus: told the other nodes that events published here meanwhile were lost")

    async def _read_forever(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        started = False
        failing = False  # warn once per outage, then log retries at debug
        delay = min(_FIRST_BACKOFF_S, self._backoff_max_s)
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        await self._deliver(message["data"])
                    elif message["type"] == "subscribe":
                        if self._connected:  # a second confirmation: redis-py reconnected and resubscribed itself
                            logger.warning("bus: reader reconnected to %r; events in the gap were lost", self._channel)
                            self._gap()
                        elif failing:
                            logger.info("bus: reader resubscribed to %r; events meanwhile were lost", self._channel)
                        else:
                            logger.info("bus: reader subscribed to %r as node %r", self._channel, self._node_id)
                        self._connected, failing = True, False
                        delay = min(_FIRST_BACKOFF_S, self._backoff_max_s)
                        if not started:
                            started = True
                            task_status.started()
            except (RedisError, OSError) as exc:
                level = logging.DEBUG if failing else logging.WARNING
                logger.log(level, "bus: reader lost %r (%s: %s); resubscribing", self._channel, type(exc).__name__, exc)
                failing = True
            except Exception:  # the reader must outlive any fault; an unexpected one gets its traceback once
                level = logging.DEBUG if failing else logging.ERROR
                logger.log(level, "bus: reader failed on %r; resubscribing", self._channel, exc_info=True)
                failing = True
            finally:
                if self._connected:
                    self._connected = False
                    self._gap()
                with anyio.CancelScope(shield=True):
                    await close_pubsub(pubsub)
            await anyio.sleep(delay)
            delay = min(delay * 2, self._backoff_max_s)

    def _gap(self) -> None:
        if self.on_gap is not None:
            try:
                self.on_gap()
            except Exception:
                logger.exception("bus: on_gap raised; continuing")

    async def _deliver(self, data: bytes | str) -> None:
        notifier = gap_notice_from(data)
        if notifier is not None:
            if notifier != self._node_id:
                logger.warning("bus: node %r could not publish some events; listeners here missed them", notifier)
                self._gap()
            return
        decoded = decode_event(data)
        if decoded is None:
            logger.warning("bus: skipping undecodable message on %r: %.120r", self._channel, data)
            return
        node_id, event = decoded
        if node_id == self._node_id:
            return
        try:
            await self._local.publish(event)
        except Exception:  # fan-out boundary: a raising local bus must not kill the reader
            logger.exception("bus: local delivery of %r raised; continuing", event)
