"""One bridged stdio MCP server process and the SDK client session connected to it.

`Child.start` spawns COMMAND with the SDK's ``stdio_client`` (its own process group; stdin closed, then
SIGTERM, then SIGKILL at stop), performs the MCP ``initialize`` handshake within ``start_timeout_s`` and
returns once the child serves. Between the child's stdout and the SDK ``ClientSession`` sits a pump that

- logs and skips every stdout line that is not a JSON-RPC message (a child printing garbage keeps working);
- notices end of output (the child exited or crashed): the child is marked dead, ``on_exit`` is called,
  and the session's waiting requests fail at once with the SDK's ``CONNECTION_CLOSED`` error instead of
  hanging.

The child's stderr goes line by line to the ``datapulse.bridge.child`` logger. Requests the child sends to its
client (sampling, elicitation, roots) are answered by ``client_requests`` (see `ClientRequests`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterable, Callable, Mapping
from contextlib import AsyncExitStack, suppress
from typing import Any, Final, Protocol

import anyio
import httpx2
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from mcp import ClientSession, StdioServerParameters, types
from mcp.client.session import ClientRequestContext
from mcp.client.stdio import stdio_client
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from datapulse import _sdk
from datapulse.bridge import upstream
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.continuity import UpstreamSession
from datapulse.bridge.environment import child_environment
from datapulse.logs import detach_log_context

__all__ = ["Child", "ChildStartError", "ClientRequests", "cancel_when"]

log = logging.getLogger("datapulse.bridge.child")

STDERR_LINE_MAX_CHARS = 2000


CLIENT_INFO: Final = types.Implementation(name="datapulse-bridge", version="1")
"""How DataPulse names itself to the servers it bridges and the upstreams it forwards to."""


class ChildStartError(RuntimeError):
    """The child did not become ready: it could not be spawned, exited, or did not answer ``initialize`` in time."""


class ClientRequests(Protocol):
    """Answers the child's requests to its client by asking the real client behind the bridge."""

    async def sampling(
        self, child: Child, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData: ...

    async def elicitation(
        self, child: Child, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData: ...

    async def list_roots(self, child: Child) -> types.ListRootsResult | types.ErrorData: ...

    async def notification(self, child: Child, notification: types.ServerNotification) -> None:
        """Deliver a notification of the child (log message, list change, resource update) to its client(s)."""


class Child:
    """One child process serving MCP on stdio.

    Args:
        spec: the bridged server (command, args, environment allowlist and extra variables, cwd, start timeout).
        label: names the child in logs (the bridged server's name and the session or "shared").
        client_requests: answers the child's sampling / elicitation / roots requests and takes its notifications
            (except progress, which reaches its request through the call), or None (requests refused, notifications
            only logged).
        on_exit: called once when the child's output ends (exit or crash), not when `stop` stopped it.
        upstream_auth: a remote server's headers and auth flow.
        client_capabilities: what the client this child serves declared; the child's session offers its server no
            more (None: everything it can relay).
        resume: a remote Streamable HTTP session to continue instead of sending ``initialize``
            (`datapulse.bridge.continuity`).

    Remote-server attributes: ``transport`` (what the connection settled on), ``upstream_session_id`` (the
    upstream's ``Mcp-Session-Id``, once it gave one), ``recorded`` (set by the bridge once it recorded the session).

    Attributes:
        session: the SDK client session (valid after `start`).
        initialize_result: what the child answered to ``initialize``.
        alive: True from a successful `start` until the child's output ends or `stop`.
        in_flight: requests forwarded and not yet answered.
        last_used: ``time.monotonic()`` of the last request's start or end.
        context: per-child data for ``client_requests`` (the bridge keeps the in-flight request contexts here).
        key: what the child serves (a session id, ``principal:<key>`` or ``shared``; set by its pool).
    """

    def __init__(
        self,
        spec: BridgedServer,
        label: str,
        *,
        client_requests: ClientRequests | None = None,
        on_exit: Callable[[Child], None] | None = None,
        upstream_auth: tuple[Mapping[str, str], httpx2.Auth | None] = ({}, None),
        client_capabilities: types.ClientCapabilities | None = None,
        resume: UpstreamSession | None = None,
    ) -> None:
        self.spec = spec
        self.label = label
        self._client_requests = client_requests
        self.on_exit = on_exit
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._stopping = False
        self.session: ClientSession | None = None
        self.initialize_result: types.InitializeResult | None = None
        self.alive = False
        self.in_flight = 0
        self.last_used = time.monotonic()
        self.started_at = 0.0
        self.context: list[Any] = []
        self.key = ""
        self.upstream_auth = upstream_auth
        self.client_capabilities = client_capabilities
        self.resume = resume
        self.upstream_session_id: str | None = None
        self.recorded = False
        self.transport = "stdio"
        self.denied_status: int | None = None
        self._serving = False
        self._exit_reported = False
        self._kind = ""
        self._ended: anyio.Event | None = None
        self._tasks_of_connection: TaskGroup | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> types.InitializeResult:
        """Spawn the child in ``task_group`` and complete the handshake within ``spec.start_timeout_s``.

        Raises:
            ChildStartError: spawn failure, early exit, or no ``initialize`` answer in time (the process is
                stopped before this is raised).
        """
        try:
            result: types.InitializeResult = await task_group.start(self._run)
        except ChildStartError:
            raise
        except Exception as exc:  # the SDK's spawn errors (OSError, ValueError), protocol errors, or a group
            cause = _leaf(exc)
            if isinstance(cause, ChildStartError):
                raise cause from None
            if self.spec.remote and isinstance(cause, httpx2.TransportError):
                raise ChildStartError(f"{self.label}: cannot reach {self.spec.target!r}: {_reason(cause)}") from exc
            raise ChildStartError(f"{self.label}: could not start {self.spec.target!r}: {cause}") from exc
        return result

    async def stop(self) -> None:
        """Stop the child (stdin closed, SIGTERM, SIGKILL; each step bounded by the SDK) and wait for it."""
        self._stopping = True
        self._stop.set()
        with anyio.CancelScope(shield=True):
            await self._stopped.wait()

    async def _run(self, *, task_status: anyio.abc.TaskStatus[types.InitializeResult]) -> None:
        detach_log_context()  # started by some request; the child outlives it
        try:
            await self._serve(task_status)
        except Exception as exc:
            if not self._serving:
                raise  # before the handshake: `start` reports it
            # After it, a transport's own failure (an upstream that went away: the SDK's HTTP transports raise its
            # connect error out of their task group) ends this child only; the pool's task group, and with it the
            # app's lifespan, must outlive it.
            log.warning("%s: the connection failed: %s", self.label, _reason(exc), extra={"child": self.label})
            self._exited()
        finally:
            self.alive = False
            self._stopped.set()

    def _exited(self) -> None:
        """The child ended on its own (not by `stop`): tell ``on_exit``, once."""
        self.alive = False
        if not self._stopping and not self._exit_reported and self.on_exit is not None:
            self._exit_reported = True
            self.on_exit(self)

    async def _serve(self, task_status: anyio.abc.TaskStatus[types.InitializeResult]) -> None:
        spec = self.spec
        attempts = upstream.candidates(spec.transport) if spec.remote else ("stdio",)
        failures: list[str] = []
        async with AsyncExitStack() as stack:
            for kind in attempts:
                async with AsyncExitStack() as attempt:
                    try:
                        session, ended = await self._connect(attempt, kind)
                    except ChildStartError as exc:
                        if kind == "stdio" or isinstance(exc.__cause__, httpx2.TransportError):
                            raise  # unreachable, or the command cannot run: another era would not help
                        failures.append(f"{_KIND_NAMES[kind]}: {exc}")
                        continue
                    stack.push_async_exit(attempt.pop_all())
                    break
            else:
                raise ChildStartError(f"{self.label}: {spec.target} does not speak MCP here: " + "; ".join(failures))
            result = _initialize_result(session, spec.name)
            self.transport = _resolved(kind, session.protocol_version)
            if spec.transport == "modern" and self.transport != "modern":
                raise ChildStartError(
                    f"{self.label}: {spec.target} does not speak 2026-07-28 (transport = 'modern'); it answered "
                    f"the {session.protocol_version} handshake: set transport to 'auto' or 'streamable-http'"
                )
            self.session, self.initialize_result = session, result
            self.alive = self._serving = True
            self.started_at = self.last_used = time.monotonic()
            log.info("%s: started %s (%s)", self.label, spec.target, self.transport, extra={"child": self.label})
            task_status.started(result)
            with anyio.CancelScope() as watch:
                assert self._tasks_of_connection is not None
                self._tasks_of_connection.start_soon(cancel_when, ended, watch)
                await self._stop.wait()
            self._exited()

    async def _connect(self, stack: AsyncExitStack, kind: str) -> tuple[ClientSession, anyio.Event]:
        """Open one transport (``stdio``, ``streamable`` or ``sse``) in ``stack`` and complete the handshake.

        Raises:
            ChildStartError: the transport cannot be opened, or the handshake fails or times out (its cause is
                the underlying error).
        """
        spec = self.spec
        self._kind = kind
        reader: Any = None
        try:
            if kind == "stdio":
                read, write, reader = await self._open_stdio(stack)
            else:
                headers, auth = self.upstream_auth
                if self.resume is not None and kind == "streamable":
                    headers = {**headers, "Mcp-Session-Id": self.resume.session_id}
                read, write = await stack.enter_async_context(
                    upstream.open_streams(
                        spec, "sse" if kind == "sse" else "streamable", headers, auth, self._saw_response
                    )
                )
        except (OSError, httpx2.HTTPError) as exc:
            if self.denied_status is not None:
                reason = upstream.denial_message(spec.name, self.denied_status)
                raise ChildStartError(f"{self.label}: {reason}") from exc
            raise ChildStartError(f"{self.label}: cannot {_verb(spec)} {spec.target!r}: {_reason(exc)}") from exc
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)  # runs before the task group exits (LIFO)
        self._tasks_of_connection = tasks
        if reader is not None:
            tasks.start_soon(self._log_stderr, reader)
        pumped_send, pumped_receive = anyio.create_memory_object_stream[SessionMessage | Exception](16)
        ended = self._ended = anyio.Event()
        tasks.start_soon(self._pump, read, pumped_send, ended)
        session = await stack.enter_async_context(
            ClientSession(
                pumped_receive,
                write,
                read_timeout_seconds=spec.request_timeout_s if spec.remote else None,
                log_level="debug" if spec.remote else None,  # 2026-07-28: log messages are opted into per request
                sampling_callback=self._sampling if self._relays("sampling") else None,
                elicitation_callback=self._elicitation if self._relays("elicitation") else None,
                list_roots_callback=self._list_roots if self._relays("roots") else None,
                logging_callback=self._logging,
                message_handler=self._notified,
                client_info=CLIENT_INFO,
            )
        )
        try:
            with anyio.fail_after(spec.start_timeout_s):
                if self.resume is not None and kind == "streamable":
                    session.adopt(self.resume.result)  # continue the recorded upstream session: no initialize
                    self.upstream_session_id = self.resume.session_id
                    await session.send_notification(types.InitializedNotification())  # opens its GET stream
                elif kind == "streamable" and upstream.client_mode(spec.transport) == "auto":
                    await _sdk.negotiate_auto(session)  # server/discover, then initialize
                else:
                    await session.initialize()
        except TimeoutError:
            raise ChildStartError(
                f"{self.label}: {spec.target!r} did not answer the handshake within {spec.start_timeout_s:g} s"
            ) from None
        except Exception as exc:
            cause = _leaf(exc)
            if ended.is_set() and not spec.remote:
                raise ChildStartError(f"{self.label}: {spec.target!r} exited before answering initialize") from exc
            if self.denied_status is not None:
                reason = upstream.denial_message(spec.name, self.denied_status)
                raise ChildStartError(f"{self.label}: {reason}") from cause
            raise ChildStartError(f"{self.label}: {spec.target!r}: handshake failed: {_reason(cause)}") from cause
        return session, ended

    async def _open_stdio(self, stack: AsyncExitStack) -> tuple[Any, Any, Any]:
        """Spawn the command with the SDK's ``stdio_client``; its streams and the reading end of its stderr."""
        spec = self.spec
        assert spec.command is not None
        env = child_environment(spec.env_allow, spec.env, os.environ)
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=env, cwd=spec.cwd)
        stderr_read, stderr_write = os.pipe()
        errlog = os.fdopen(stderr_write, "w")
        stack.callback(_close_quietly, errlog)
        reader = os.fdopen(stderr_read, "rb", buffering=0)
        stack.callback(_close_quietly, reader)
        read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        errlog.close()  # the child holds its own copy of the write end
        return read, write, reader

    def _relays(self, capability: str) -> bool:
        """Whether the child's server is offered ``capability`` (sampling, elicitation, roots): only what the
        client this child serves declared, so a server never asks a client for what it cannot do."""
        declared = self.client_capabilities
        return declared is None or getattr(declared, capability) is not None

    def _saw_response(self, response: httpx2.Response) -> None:
        """The upstream answered. Its ``Mcp-Session-Id`` is remembered (`upstream_session_id`); a 401 or 403 is
        remembered for the error message (until the next other answer), and on SSE without an auth flow that could
        retry, it ends the connection (the SDK's SSE transport cannot carry the refusal to the waiting request)."""
        session_id = response.headers.get("mcp-session-id")
        if session_id:
            self.upstream_session_id = session_id
        status = response.status_code
        if status not in (401, 403):
            self.denied_status = None
            return
        self.denied_status = status
        if self._kind == "sse" and self.upstream_auth[1] is None and self._ended is not None:
            self._ended.set()

    async def _pump(
        self,
        read: AsyncIterable[SessionMessage | Exception],
        out: MemoryObjectSendStream[SessionMessage | Exception],
        ended: anyio.Event,
    ) -> None:
        """Forward the child's messages to the session, skipping unparseable lines; mark the end of output."""
        async with out:
            try:
                async for item in read:
                    if isinstance(item, Exception):
                        if self.spec.remote:
                            log.warning("%s: upstream transport error: %s", self.label, _reason(item))
                        else:
                            log.warning("%s: skipped a stdout line that is not JSON-RPC", self.label)
                        continue
                    await out.send(item)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
        if not self._stopping:
            log.warning("%s: the child's output ended (it exited or crashed)", self.label)
        self.alive = False
        ended.set()

    async def _log_stderr(self, reader: Any) -> None:
        loop = asyncio.get_running_loop()
        stream = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stream), reader)
        try:
            while True:
                try:
                    line = await stream.readline()
                except ValueError:  # a line longer than the limit: read on
                    continue
                if not line:
                    return
                text = line.decode(errors="replace").rstrip()[:STDERR_LINE_MAX_CHARS]
                if text:
                    log.info("%s stderr: %s", self.label, text, extra={"child": self.label})
        finally:
            transport.close()

    # --- requests from the child ------------------------------------------------------------------------------

    async def _sampling(
        self, context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData:
        if self._client_requests is None:
            return _refused("sampling/createMessage")
        return await self._client_requests.sampling(self, params)

    async def _elicitation(
        self, context: ClientRequestContext, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData:
        if self._client_requests is None:
            return _refused("elicitation/create")
        return await self._client_requests.elicitation(self, params)

    async def _list_roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        if self._client_requests is None:
            return _refused("roots/list")
        return await self._client_requests.list_roots(self)

    async def _logging(self, params: types.LoggingMessageNotificationParams) -> None:
        log.info("%s log (%s): %s", self.label, params.level, params.data, extra={"child": self.label})

    async def _notified(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, Exception) or self._client_requests is None:
            return  # transport faults end in the pump; without a client the notification is only logged
        if isinstance(message, types.ProgressNotification | types.CancelledNotification):
            return  # progress reaches its request through the call's progress callback
        await self._client_requests.notification(self, message)


_KIND_NAMES: Final = {"streamable": "Streamable HTTP (2026-07-28, then 2025)", "sse": "HTTP+SSE (2024-11-05)"}


def _initialize_result(session: ClientSession, name: str) -> types.InitializeResult:
    """The server's ``initialize`` answer, or its equivalent from a 2026-07-28 ``server/discover``."""
    if session.initialize_result is not None:
        return session.initialize_result
    version = session.protocol_version
    assert version is not None
    assert session.server_capabilities is not None
    return types.InitializeResult(
        protocol_version=version,
        capabilities=session.server_capabilities,
        server_info=session.server_info or types.Implementation(name=name, version="unknown"),
        instructions=session.instructions,
    )


def _resolved(kind: str, version: str | None) -> str:
    """The transport a connection settled on: ``stdio``, ``sse``, ``modern`` or ``streamable-http``."""
    if kind in ("stdio", "sse"):
        return kind
    return "modern" if version in MODERN_PROTOCOL_VERSIONS else "streamable-http"


def _verb(spec: BridgedServer) -> str:
    return "reach" if spec.remote else "run"


def _reason(exc: BaseException) -> str:
    """A short reason for an error (its leaf, with the type when the message is empty)."""
    leaf = _leaf(exc)
    text = str(leaf)
    return text if text else type(leaf).__name__


def _leaf(exc: BaseException) -> BaseException:
    """The first exception inside (possibly nested) exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _refused(method: str) -> types.ErrorData:
    return types.ErrorData(code=types.METHOD_NOT_FOUND, message=f"the bridge does not forward {method}")


async def cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once ``event`` is set."""
    await event.wait()
    scope.cancel()


def _close_quietly(file: Any) -> None:
    with suppress(OSError):
        file.close()
