"""Which instance serves a session-bound request, and taking over the sessions of a dead instance.

A request naming a session this instance does not hold is looked up in the registry: a session of
another principal is 404 (as if unknown); a live owner gets the request through a tunnel; a dead
owner's session is taken over here (Streamable HTTP and DataPulse API sessions are rebuilt from
the registry and the event journal; a 2024-11-05 HTTP+SSE session ends with its stream, so it is
forgotten and the client's next ``GET /sse`` opens a new one).

Fencing (see `datapulse.cluster.node`): a session held here is served without asking Redis only while this
instance holds its heartbeat lease; otherwise `confirm_owner` asks first, and `reconcile` checks every session
when the lease is found lapsed. A session another instance took over meanwhile is let go here.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from starlette.types import Message, Receive, Scope, Send

from datapulse.auth.principal import principal_of
from datapulse.cluster.node import ClusterNode
from datapulse.dashboard.access import is_admin
from datapulse.errors import DataPulseError, SessionNotFound, Unavailable
from datapulse.runtime import Runtime
from datapulse.sessions.live import LiveSession
from datapulse.sessions.registry import SessionKind, SessionRecord
from datapulse.transports._http import header, query_param, read_body
from datapulse.transports._negotiation import classify_era

log = logging.getLogger("datapulse.cluster")

WATCH_PATH = "/dashboard/api/watch"
SESSION_QUERY_PATHS = frozenset({"/messages", "/messages/", "/events", "/message", WATCH_PATH})
"""Paths whose ``session_id`` query parameter names the session (the request is served where it lives)."""
STREAMABLE_PATHS = frozenset({"/mcp", "/mcp/"})


def session_id_of(path: str, scope: Scope) -> str | None:
    """The session a request to ``path`` (relative to the root path) names, or None if it names none
    (it opens a new session, or is stateless)."""
    if path in STREAMABLE_PATHS:
        if classify_era(header(scope, b"mcp-protocol-version")) != "legacy":
            return None
        return header(scope, b"mcp-session-id")
    if path in SESSION_QUERY_PATHS:
        return query_param(scope, "session_id")
    return None


async def route(
    runtime: Runtime, cluster: ClusterNode, session_id: str, scope: Scope, receive: Receive, send: Send
) -> Receive | None:
    """Serve a request for ``session_id`` (not held here) where its session lives.

    Returns:
        None when the request was answered by the owning instance; otherwise the ``receive`` with
        which to serve it here (the session is unknown, or was just taken over).

    Raises:
        SessionNotFound: the session belongs to another principal (unless a dashboard admin watches it), or was
            a dead instance's HTTP+SSE session (404).
        Unavailable / StoreUnavailable / OwnerUnreachable: the owner or Redis does not answer (503).
    """
    record = await cluster.session_record(session_id)
    if record is None or record.owner == cluster.node_id:
        return receive
    caller = principal_of(scope)
    if record.principal != caller.key and not (
        scope["path"].endswith(WATCH_PATH) and is_admin(caller, runtime.settings.dashboard_admins)
    ):
        log.warning("session %s: refused a request from another principal", session_id[:16])
        raise SessionNotFound()
    body = await read_body(scope, receive, runtime.settings.max_body_bytes) if scope["method"] == "POST" else b""
    for _attempt in range(3):
        try:
            forwarded = await cluster.tunnels.forward(record.owner, scope, body, receive, send, runtime.modern_streams)
        except Unavailable:
            runtime.metrics.forwarded_requests_total.labels("unavailable").inc()
            raise
        if forwarded:
            runtime.metrics.forwarded_requests_total.labels("ok").inc()
            return None
        runtime.metrics.forwarded_requests_total.labels("owner_gone").inc()
        fresh = await cluster.session_record(session_id, fresh=True)
        if fresh is None:
            raise SessionNotFound()
        if fresh.owner != record.owner:
            record = fresh  # it moved (a takeover): forward to the new owner
            if record.owner == cluster.node_id:
                return _replay(body, receive)
            continue
        if not cluster.may_take_over() or await cluster.is_alive(record.owner):
            raise Unavailable(
                "Service Unavailable: the instance holding this session is reconnecting to the cluster; retry shortly",
                headers={"Retry-After": "1"},
            )
        session = await _take_over(runtime, cluster, record)
        if session is not None:
            return _replay(body, receive)
        record_now = await cluster.session_record(session_id, fresh=True)
        if record_now is None:
            raise SessionNotFound()
        if record_now.owner == cluster.node_id:
            return _replay(body, receive)
        record = record_now  # another instance took it over first: forward there
    raise Unavailable("Service Unavailable: the session is changing instances; retry", headers={"Retry-After": "1"})


async def _take_over(runtime: Runtime, cluster: ClusterNode, record: SessionRecord) -> LiveSession | None:
    claimed = await cluster.registry.claim(
        record.session_id, from_owner=record.owner, to_owner=cluster.node_id, now=runtime.sessions.clock()
    )
    if claimed is None:
        return None
    restore = runtime.restorers.get(claimed.kind)
    session = await restore(runtime, claimed) if restore is not None else None
    if session is None:
        await cluster.registry.remove(record.session_id)
        log.info("session %s of dead instance %s forgotten (%s)", record.session_id[:16], record.owner, record.kind)
        raise SessionNotFound()
    session.activate()
    runtime.sessions.adopt(session)
    log.info("session %s taken over from dead instance %s", record.session_id[:16], record.owner)
    return session


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read ``body`` once, then defers to the real one."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def record_of(session: LiveSession, node_id: str, now: float) -> SessionRecord:
    """The registry record describing ``session`` as held by ``node_id`` (to write it back after Redis lost it)."""
    record = SessionRecord(session.id, session.kind, session.principal, now, node_id, session.epoch)
    client_params = session.connection.client_params
    if session.kind is SessionKind.STREAMABLE_HTTP and client_params is not None:
        record = replace(
            record,
            protocol_version=session.connection.protocol_version,
            initialize_params=client_params.model_dump_json(by_alias=True, exclude_none=True),
        )
    return record


async def confirm_owner(runtime: Runtime, cluster: ClusterNode, session: LiveSession) -> bool:
    """Whether this instance still owns ``session`` (held here), asking the registry: call it when the heartbeat
    lease has lapsed. A record Redis lost is written back (the session stays here); a session another instance
    owns now is let go here (`SessionManager.relinquish`), so the caller routes the request to the new owner.

    Raises:
        StoreUnavailable: Redis did not answer, so ownership cannot be confirmed (503).
    """
    record = await cluster.session_record(session.id, fresh=True)
    if record is None:
        now = runtime.sessions.clock()
        if await cluster.registry.reinstate(record_of(session, cluster.node_id, now), now):
            return True
        record = await cluster.session_record(session.id, fresh=True)  # somebody wrote it first
    if record is not None and record.owner == cluster.node_id:
        return True
    owner = record.owner if record is not None else "nobody"
    await runtime.sessions.relinquish(session.id, f"another instance ({owner}) owns the session now")
    return False


async def reconcile(runtime: Runtime, cluster: ClusterNode, *, check_owners: bool) -> None:
    """After the cluster store answers again (never raises): with ``check_owners`` (the heartbeat had lapsed),
    confirm every session held here against the registry first (`confirm_owner`: kept, written back, or let go);
    then deliver the events each kept session held while the journal did not answer."""
    kept = let_go = 0
    try:
        for session in runtime.sessions.live_sessions():
            if check_owners and not await confirm_owner(runtime, cluster, session):
                let_go += 1
                continue
            kept += 1
            for stream in session.event_streams():
                try:
                    await stream.flush_pending()
                except DataPulseError:
                    raise
                except Exception:  # one stream's fault must not keep the others' held events, nor end the instance
                    log.exception("session %s: delivering held events failed", session.id[:16])
    except DataPulseError as exc:
        log.warning("reconciling sessions with the cluster store stopped: %s", exc.message)
    if check_owners:
        log.warning(
            "reconciled sessions with the registry: %d kept, %d let go (another instance owns them)", kept, let_go
        )
