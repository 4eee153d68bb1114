"""Fixture server for the official MCP conformance suite (``@modelcontextprotocol/conformance``).

``app`` implements every tool, resource, prompt and server behaviour the suite's server scenarios
exercise, for both protocol generations the requirement sets cover:

* **2025-11-25 (handshake era)**: ``initialize`` plus a session; sampling, elicitation and roots are real
  server-to-client requests sent on the calling request's SSE stream; logging via ``logging/setLevel``;
  ``resources/subscribe`` with ``notifications/resources/updated``; ``*/list_changed`` notifications.
* **2026-07-28 (stateless era)**: every request carries its ``_meta`` envelope; sampling, elicitation and
  roots are asked for with an ``InputRequiredResult`` (multi-round-trip, SEP-2322) whose ``requestState`` the
  SDK seals; logging is a per-request opt-in; change notifications reach ``subscriptions/listen`` streams.

Tools that ask the client for input go through :func:`_gather`, so the same fixture behaves correctly on
either wire: it sends real requests on the handshake era and returns ``InputRequiredResult`` on the
stateless era.

The dynamic behaviours of the reference "everything server" are driven by the server lifespan (never at
import time): about two seconds after start ``test_dynamic_tool``, ``test://dynamic-resource`` and
``test_dynamic_prompt`` appear (with list-changed notifications), and ``test://watched-resource`` changes
every three seconds (with ``notifications/resources/updated`` to subscribers).

The tool, resource and prompt names, arguments and results follow the scenario sources of
``@modelcontextprotocol/conformance@0.2.0-alpha.12``. Serve it with ``app.streamable_http_app(...)`` (see
``test_conformance_sdk_reference.py``) or through any other transport that hosts an ``MCPServer``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import wave
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Annotated, Any, Final, Literal, get_args

import anyio
import anyio.abc
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts import Prompt
from mcp.server.mcpserver.resources import FunctionResource
from mcp.server.mcpserver.tools import Tool
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    ClientCapabilities,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    ElicitationCapability,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    LoggingLevel,
    MissingRequiredClientCapabilityErrorData,
    RootsCapability,
    SamplingCapability,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

__all__ = [
    "DYNAMIC_DELAY_S",
    "WATCHED_RESOURCE_URI",
    "WATCH_INTERVAL_S",
    "InMemoryEventStore",
    "app",
    "handshake_initialization_options",
]

logger = logging.getLogger(__name__)

SERVER_NAME: Final = "datapulse-conformance-fixture"
DYNAMIC_DELAY_S: Final = 2.0
"""Seconds after server start at which the dynamic tool, resource and prompt appear."""
WATCH_INTERVAL_S: Final = 3.0
"""Seconds between updates of ``test://watched-resource``."""
WATCHED_RESOURCE_URI: Final = "test://watched-resource"
DYNAMIC_RESOURCE_URI: Final = "test://dynamic-resource"
DYNAMIC_TOOL_NAME: Final = "test_dynamic_tool"
DYNAMIC_PROMPT_NAME: Final = "test_dynamic_prompt"
_MAX_TRACKED_SESSIONS: Final = 256
_NOTIFY_TIMEOUT_S: Final = 2.0
_LOG_LEVELS: Final[tuple[LoggingLevel, ...]] = get_args(LoggingLevel)


# --------------------------------------------------------------------------------------------------------------
# Test media, generated rather than embedded: a 1x1 red PNG and a few milliseconds of silent 8 kHz mono WAV.
# --------------------------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _red_pixel_png() -> bytes:
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, truecolour, no interlace
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then one RGB pixel
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels) + _png_chunk(b"IEND", b"")


def _silent_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"\x00\x00" * 16)
    return buffer.getvalue()


PNG_BYTES: Final = _red_pixel_png()
PNG_BASE64: Final = base64.b64encode(PNG_BYTES).decode("ascii")
WAV_BASE64: Final = base64.b64encode(_silent_wav()).decode("ascii")


# --------------------------------------------------------------------------------------------------------------
# Runtime state shared by the handlers and the lifespan.
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _FixtureState:
    """Mutable fixture state. Handshake-era sessions are keyed by their ``Mcp-Session-Id``."""

    sessions: OrderedDict[str, ServerSession] = field(default_factory=OrderedDict)
    """Recently seen handshake-era sessions (bounded), the audience of list-changed notifications."""
    subscriptions: dict[str, set[str]] = field(default_factory=dict)
    """``resources/subscribe`` URIs per handshake-era session id."""
    log_levels: dict[str, LoggingLevel] = field(default_factory=dict)
    """``logging/setLevel`` minimum level per handshake-era session id."""
    watched_version: int = 0
    """How many times ``test://watched-resource`` has changed since the server started."""
    started_at: float = 0.0
    dynamic_enabled: bool = False
    active_lifespans: int = 0
    """Lifespans currently running ``app`` (a transport may enter it once per endpoint)."""
    task_groups: list[anyio.abc.TaskGroup] = field(default_factory=list)
    """The task groups of the running lifespans; handlers start background notifications in the first."""

    def remember(self, session_id: str, session: ServerSession) -> None:
        self.sessions[session_id] = session
        self.sessions.move_to_end(session_id)
        while len(self.sessions) > _MAX_TRACKED_SESSIONS:
            stale, _ = self.sessions.popitem(last=False)
            self.forget(stale)

    def forget(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        self.subscriptions.pop(session_id, None)
        self.log_levels.pop(session_id, None)

    def reset(self) -> None:
        self.sessions.clear()
        self.subscriptions.clear()
        self.log_levels.clear()
        self.watched_version = 0
        self.started_at = anyio.current_time()


_state = _FixtureState()
_bus = InMemorySubscriptionBus()


def _session_id(request: object) -> str | None:
    """The ``Mcp-Session-Id`` of the HTTP request carrying a message, if the transport exposes one."""
    headers = getattr(request, "headers", None)
    if not isinstance(headers, Mapping):
        return None
    value = headers.get("mcp-session-id")
    return value if isinstance(value, str) and value else None


def _is_modern(protocol_version: str | None) -> bool:
    return protocol_version in MODERN_PROTOCOL_VERSIONS


async def _track_handshake_sessions(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: remember handshake-era sessions so lifespan tasks can notify them."""
    if not _is_modern(ctx.protocol_version) and (sid := _session_id(ctx.request)) is not None:
        _state.remember(sid, ctx.session)
    return await call_next(ctx)


@asynccontextmanager
async def _lifespan(server: MCPServer[None]) -> AsyncIterator[None]:
    """Drive the dynamic behaviours for as long as the server runs.

    The first lifespan to start resets the fixture (so serving ``app`` again in the same process starts from
    scratch) and the last one to end removes the dynamic entries again. Overlapping lifespans share one
    timeline: the dynamic entries appear once and each watched-resource change is announced once.
    """
    if _state.active_lifespans == 0:
        _disable_dynamic(server)
        _state.reset()
    _state.active_lifespans += 1
    try:
        async with anyio.create_task_group() as tg:
            _state.task_groups.append(tg)
            tg.start_soon(_enable_dynamic_later, server)
            tg.start_soon(_update_watched_resource_forever)
            try:
                yield
            finally:
                _state.task_groups.remove(tg)
                tg.cancel_scope.cancel()
    finally:
        _state.active_lifespans -= 1
        if _state.active_lifespans == 0:
            _disable_dynamic(server)
            _state.reset()


JSON_SCHEMA_2020_12_TOOL: Final = "json_schema_2020_12_tool"
JSON_SCHEMA_2020_12_INPUT: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def _json_schema_2020_12_tool() -> str:
    return "json_schema_2020_12_tool called"


def _json_schema_2020_12_tool_registration() -> Tool:
    """A tool whose advertised inputSchema uses JSON Schema 2020-12 keywords (SEP-1613, SEP-2106)."""
    tool = Tool.from_function(
        _json_schema_2020_12_tool,
        name=JSON_SCHEMA_2020_12_TOOL,
        description="Tool with JSON Schema 2020-12 features",
        structured_output=False,
    )
    return tool.model_copy(update={"parameters": JSON_SCHEMA_2020_12_INPUT})


app: MCPServer[None] = MCPServer(
    SERVER_NAME,
    title="DataPulse conformance fixture",
    description="Every tool, resource and prompt the MCP conformance suite's server scenarios exercise.",
    version="1.0.0",
    lifespan=_lifespan,
    subscriptions=_bus,
    middleware=[_track_handshake_sessions],
    tools=[_json_schema_2020_12_tool_registration()],
)
"""The conformance fixture server."""


def handshake_initialization_options() -> InitializationOptions:
    """``InitializeResult`` payload advertising ``listChanged`` for tools, resources and prompts.

    The fixture sends list-changed notifications on the handshake era too; a transport that drives the
    server's loop itself may pass these options so the handshake advertises them.
    """
    return app._lowlevel_server.create_initialization_options(
        NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)
    )


# --------------------------------------------------------------------------------------------------------------
# Notifications to handshake-era sessions.
# --------------------------------------------------------------------------------------------------------------


_Change = Literal["tools", "resources", "prompts"]
_CHANGES: Final[tuple[_Change, ...]] = ("tools", "resources", "prompts")


async def _notify_one(sid: str, session: ServerSession, change: _Change | ResourceUpdated) -> None:
    """Send one notification on a handshake-era session's standalone stream; forget the session if it is gone."""
    try:
        with anyio.move_on_after(_NOTIFY_TIMEOUT_S):
            if isinstance(change, ResourceUpdated):
                await session.send_resource_updated(change.uri)
            elif change == "tools":
                await session.send_tool_list_changed()
            elif change == "resources":
                await session.send_resource_list_changed()
            else:
                await session.send_prompt_list_changed()
    except Exception:  # a closed or broken session must not take the server's lifespan down
        logger.debug("dropping handshake-era session %s after a failed notification", sid, exc_info=True)
        _state.forget(sid)


async def _notify_sessions(change: _Change | ResourceUpdated) -> None:
    """Notify the tracked handshake-era sessions (for a resource update: those subscribed to its URI)."""
    async with anyio.create_task_group() as tg:
        for sid, session in list(_state.sessions.items()):
            if isinstance(change, ResourceUpdated) and change.uri not in _state.subscriptions.get(sid, ()):
                continue
            tg.start_soon(_notify_one, sid, session, change)


def _notify_sessions_soon(change: _Change) -> None:
    """Notify handshake-era sessions in the background, so the calling request is not held up."""
    if _state.task_groups:
        _state.task_groups[0].start_soon(_notify_sessions, change)


async def _notify_resource_updated(uri: str) -> None:
    await _bus.publish(ResourceUpdated(uri=uri))
    await _notify_sessions(ResourceUpdated(uri=uri))


# --------------------------------------------------------------------------------------------------------------
# Dynamic tool / resource / prompt and the watched resource.
# --------------------------------------------------------------------------------------------------------------


def _dynamic_tool() -> str:
    """A tool that appears about two seconds after the server starts."""
    return "This is a dynamically added tool."


def _dynamic_resource() -> str:
    """A resource that appears about two seconds after the server starts."""
    return "This is a dynamically added resource."


def _dynamic_prompt() -> list[UserMessage]:
    """A prompt that appears about two seconds after the server starts."""
    return [UserMessage(TextContent(type="text", text="This is a dynamically added prompt."))]


def _enable_dynamic(server: MCPServer[None]) -> bool:
    """Register the dynamic tool, resource and prompt; ``False`` if they already were."""
    if _state.dynamic_enabled:
        return False
    server.add_tool(_dynamic_tool, name=DYNAMIC_TOOL_NAME, structured_output=False)
    server.add_resource(
        FunctionResource.from_function(
            _dynamic_resource, uri=DYNAMIC_RESOURCE_URI, name="dynamic_resource", mime_type="text/plain"
        )
    )
    server.add_prompt(Prompt.from_function(_dynamic_prompt, name=DYNAMIC_PROMPT_NAME))
    _state.dynamic_enabled = True
    return True


def _disable_dynamic(server: MCPServer[None]) -> None:
    """Undo :func:`_enable_dynamic`, so a second serve of ``app`` in one process starts from scratch."""
    with suppress(ToolError):
        server.remove_tool(DYNAMIC_TOOL_NAME)
    with suppress(ValueError):
        server.remove_prompt(DYNAMIC_PROMPT_NAME)
    # MCPServer has no public remove_resource().
    server._resource_manager._resources.pop(DYNAMIC_RESOURCE_URI, None)
    _state.dynamic_enabled = False


async def _enable_dynamic_later(server: MCPServer[None]) -> None:
    await anyio.sleep(max(0.0, _state.started_at + DYNAMIC_DELAY_S - anyio.current_time()))
    if not _enable_dynamic(server):
        return
    await _bus.publish(ToolsListChanged())
    await _bus.publish(ResourcesListChanged())
    await _bus.publish(PromptsListChanged())
    for change in _CHANGES:
        await _notify_sessions(change)


async def _update_watched_resource_forever() -> None:
    while True:
        elapsed = anyio.current_time() - _state.started_at
        await anyio.sleep(WATCH_INTERVAL_S - elapsed % WATCH_INTERVAL_S)
        version = round((anyio.current_time() - _state.started_at) / WATCH_INTERVAL_S)
        if version > _state.watched_version:
            _state.watched_version = version
            await _notify_resource_updated(WATCHED_RESOURCE_URI)


# --------------------------------------------------------------------------------------------------------------
# Era-independent client input: real requests on the handshake era, InputRequiredResult on 2026-07-28.
# --------------------------------------------------------------------------------------------------------------


_RESPONSE_TYPES: Final[Mapping[str, tuple[type[InputResponse], ...]]] = {
    "elicitation/create": (ElicitResult,),
    "sampling/createMessage": (CreateMessageResult, CreateMessageResultWithTools),
    "roots/list": (ListRootsResult,),
}


def _required_capability(request: InputRequest) -> ClientCapabilities:
    if isinstance(request, ElicitRequest):
        return ClientCapabilities(elicitation=ElicitationCapability())
    if isinstance(request, CreateMessageRequest):
        return ClientCapabilities(sampling=SamplingCapability())
    return ClientCapabilities(roots=RootsCapability())


def _client_supports(ctx: Context, request: InputRequest) -> bool:
    return ctx.request_context.session.check_client_capability(_required_capability(request))


def _missing_capability(request: InputRequest) -> MCPError:
    data = MissingRequiredClientCapabilityErrorData(required_capabilities=_required_capability(request))
    return MCPError(
        code=MISSING_REQUIRED_CLIENT_CAPABILITY,
        message=f"This request needs the client to support {request.method}",
        data=data.model_dump(by_alias=True, mode="json", exclude_none=True),
    )


async def _send_input_request(ctx: Context, request: InputRequest) -> InputResponse:
    """Handshake era: send ``request`` to the client on the calling request's stream and await the answer."""
    session = ctx.request_context.session
    metadata = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
    if isinstance(request, ElicitRequest):
        return await session.send_request(request, ElicitResult, metadata=metadata)
    if isinstance(request, CreateMessageRequest):
        return await session.send_request(request, CreateMessageResult, metadata=metadata)
    return await session.send_request(request, ListRootsResult, metadata=metadata)


async def _gather(
    ctx: Context, requests: Mapping[str, InputRequest], *, request_state: str | None = None
) -> dict[str, InputResponse] | InputRequiredResult:
    """Obtain the client's answer to every request in ``requests``.

    Raises ``MCPError(-32021)`` when the client did not declare a capability a request needs. On the
    handshake era the requests are sent one after another and their results returned. On 2026-07-28 the
    answers come from the retry's ``inputResponses``; any request whose answer is missing or of the wrong
    kind is (re-)requested with an ``InputRequiredResult`` that carries ``request_state``. Extra responses
    the server did not ask for are ignored.
    """
    for request in requests.values():
        if not _client_supports(ctx, request):
            raise _missing_capability(request)
    if not _is_modern(ctx.protocol_version):
        return {key: await _send_input_request(ctx, request) for key, request in requests.items()}
    supplied = ctx.input_responses or {}
    answers: dict[str, InputResponse] = {}
    for key, request in requests.items():
        answer = supplied.get(key)
        if isinstance(answer, _RESPONSE_TYPES[request.method]):
            answers[key] = answer
    missing = {key: request for key, request in requests.items() if key not in answers}
    if missing:
        return InputRequiredResult(input_requests=missing, request_state=request_state)
    return answers


def _elicitation(message: str, schema: dict[str, Any]) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sampling(text: str, *, max_tokens: int) -> CreateMessageRequest:
    return CreateMessageRequest(
        params=CreateMessageRequestParams(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=text))],
            max_tokens=max_tokens,
        )
    )


def _object_schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _describe_elicitation(result: ElicitResult) -> str:
    content = json.dumps(result.content or {}, sort_keys=True, separators=(",", ":"))
    return f"action={result.action}, content={content}"


def _sampled_text(result: InputResponse) -> str:
    if isinstance(result, CreateMessageResult) and isinstance(result.content, TextContent):
        return result.content.text
    return "<no text>"


async def _log(ctx: Context, level: LoggingLevel, message: str) -> None:
    """Send a log message, honouring the session's ``logging/setLevel`` on the handshake era.

    On 2026-07-28 the SDK applies the per-request ``_meta`` log-level opt-in itself.
    """
    sid = _session_id(ctx.request_context.request)
    minimum = _state.log_levels.get(sid) if sid is not None else None
    if minimum is not None and _LOG_LEVELS.index(level) < _LOG_LEVELS.index(minimum):
        return
    await ctx.log(level, message, logger_name="conformance-fixture")


# --------------------------------------------------------------------------------------------------------------
# Tools: content types.
# --------------------------------------------------------------------------------------------------------------


@app.tool(structured_output=False)
def test_simple_text() -> str:
    """Returns a single text content block."""
    return "This is a simple text response for testing."


@app.tool(structured_output=False)
def test_image_content() -> list[ImageContent]:
    """Returns a single image content block (a 1x1 PNG)."""
    return [ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")]


@app.tool(structured_output=False)
def test_audio_content() -> list[AudioContent]:
    """Returns a single audio content block (a short WAV)."""
    return [AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")]


@app.tool(structured_output=False)
def test_embedded_resource() -> list[EmbeddedResource]:
    """Returns a single embedded text resource."""
    return [
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
            ),
        )
    ]


@app.tool(structured_output=False)
def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
    """Returns text, image and embedded-resource content blocks together."""
    return [
        TextContent(type="text", text="Multiple content types test:"),
        ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
        EmbeddedResource(
            type="resource",
            resource=TextResourceContents(
                uri="test://mixed-content-resource",
                mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123}),
            ),
        ),
    ]


@app.tool(structured_output=False)
def test_error_handling() -> str:
    """Always fails: the result carries isError=true."""
    raise ToolError("This tool intentionally returns an error for testing")


# --------------------------------------------------------------------------------------------------------------
# Tools: logging and progress.
# --------------------------------------------------------------------------------------------------------------


@app.tool(structured_output=False)
async def test_tool_with_logging(ctx: Context) -> str:
    """Sends three info-level log notifications about 50 ms apart while it runs."""
    await _log(ctx, "info", "Tool execution started")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool processing data")
    await anyio.sleep(0.05)
    await _log(ctx, "info", "Tool execution completed")
    return "Tool with logging executed successfully"


@app.tool(structured_output=False)
async def test_logging_tool(ctx: Context) -> str:
    """Logs at several levels; on 2026-07-28 nothing is sent unless the request's _meta opts in to a level."""
    for level in ("debug", "info", "warning", "error"):
        await _log(ctx, level, f"{level} message from test_logging_tool")
    return "Logging tool executed"


@app.tool(structured_output=False)
async def test_tool_with_progress(ctx: Context) -> str:
    """Reports progress 0/100, 50/100 and 100/100 about 50 ms apart (when the request has a progressToken)."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(progress=step, total=100, message=f"Completed step {step} of 100")
    return "Progress tool executed: reported 0, 50 and 100 of 100"


# --------------------------------------------------------------------------------------------------------------
# Tools: sampling, elicitation, roots (era-independent via _gather).
# --------------------------------------------------------------------------------------------------------------


@app.tool(structured_output=False)
async def test_sampling(prompt: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the client's LLM to complete `prompt` (sampling/createMessage) and returns its answer."""
    answers = await _gather(ctx, {"completion": _sampling(prompt, max_tokens=100)})
    if isinstance(answers, InputRequiredResult):
        return answers
    return f"LLM response: {_sampled_text(answers['completion'])}"


_USER_INFO_SCHEMA: Final = _object_schema(
    {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    ["username", "email"],
)


@app.tool(structured_output=False)
async def test_elicitation(message: str, ctx: Context) -> str | InputRequiredResult:
    """Asks the user (elicitation/create) for a username and e-mail address, showing `message`."""
    answers = await _gather(ctx, {"user_info": _elicitation(message, _USER_INFO_SCHEMA)})
    if isinstance(answers, InputRequiredResult):
        return answers
    answer = answers["user_info"]
    assert isinstance(answer, ElicitResult)
    return f"User response: {_describe_elicitation(answer)}"


_SEP1034_SCHEMA: Final = _object_schema(
    {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    }
)


@app.tool(structured_output=False)
async def test_elicitation_sep1034_defaults(ctx: Context) -> str | InputRequiredResult:
    """Elicits a form whose string, integer, number, enum and boolean fields all carry defaults (SEP-1034)."""
    answers = await _gather(ctx, {"user_info": _elicitation("Please provide user information", _SEP1034_SCHEMA)})
    if isinstance(answers, InputRequiredResult):
        return answers
    answer = answers["user_info"]
    assert isinstance(answer, ElicitResult)
    return f"Elicitation completed: {_describe_elicitation(answer)}"


_SEP1330_SCHEMA: Final = _object_schema(
    {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy titled enum (enumNames, deprecated)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    }
)


@app.tool(structured_output=False)
async def test_elicitation_sep1330_enums(ctx: Context) -> str | InputRequiredResult:
    """Elicits a form with all five enum schema variants of SEP-1330."""
    request = _elicitation("Please select values using different enum schema types", _SEP1330_SCHEMA)
    answers = await _gather(ctx, {"choices": request})
    if isinstance(answers, InputRequiredResult):
        return answers
    answer = answers["choices"]
    assert isinstance(answer, ElicitResult)
    return f"Elicitation completed: {_describe_elicitation(answer)}"


@app.tool(structured_output=False)
async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Needs a confirmation from the user; on 2026-07-28 it asks with an InputRequiredResult, never a request."""
    confirm = _elicitation("Please confirm to continue", _object_schema({"confirmed": {"type": "boolean"}}))
    answers = await _gather(ctx, {"confirm": confirm})
    if isinstance(answers, InputRequiredResult):
        return answers
    answer = answers["confirm"]
    assert isinstance(answer, ElicitResult)
    return f"Streaming elicitation completed: {_describe_elicitation(answer)}"


@app.tool(structured_output=False)
async def test_missing_capability(ctx: Context) -> str:
    """Requires the client's sampling capability; without it the call fails with error -32021."""
    request = _sampling("Say hello", max_tokens=10)
    if not _client_supports(ctx, request):
        raise _missing_capability(request)
    return "The client declared the sampling capability."


# --------------------------------------------------------------------------------------------------------------
# Tools: InputRequiredResult (SEP-2322) scenarios.
# --------------------------------------------------------------------------------------------------------------

_NAME_SCHEMA: Final = _object_schema({"name": {"type": "string"}}, ["name"])


def _content_field(answer: InputResponse, name: str, default: str = "?") -> str:
    if isinstance(answer, ElicitResult) and answer.content is not None:
        value = answer.content.get(name)
        if isinstance(value, str):
            return value
    return default


@app.tool(structured_output=False)
async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
    """Asks for the user's name under the inputRequests key "user_name" and greets them."""
    answers = await _gather(ctx, {"user_name": _elicitation("What is your name?", _NAME_SCHEMA)})
    if isinstance(answers, InputRequiredResult):
        return answers
    return f"Hello, {_content_field(answers['user_name'], 'name', 'stranger')}!"


@app.tool(structured_output=False)
async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
    """Asks the client's LLM for the capital of France under the key "capital_question"."""
    answers = await _gather(ctx, {"capital_question": _sampling("What is the capital of France?", max_tokens=100)})
    if isinstance(answers, InputRequiredResult):
        return answers
    return f"Model said: {_sampled_text(answers['capital_question'])}"


@app.tool(structured_output=False)
async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
    """Asks for the client's roots (roots/list) under the key "client_roots" and lists them."""
    answers = await _gather(ctx, {"client_roots": ListRootsRequest()})
    if isinstance(answers, InputRequiredResult):
        return answers
    roots = answers["client_roots"]
    uris = [str(root.uri) for root in roots.roots] if isinstance(roots, ListRootsResult) else []
    return f"Client exposed {len(uris)} root(s): {', '.join(uris) or '-'}"


_REQUEST_STATE_NONCE: Final = "conformance-request-state-v1"


@app.tool(structured_output=False)
async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
    """Asks for a confirmation with a requestState and answers "state-ok" once that state comes back intact."""
    confirm = _elicitation("Please confirm", _object_schema({"ok": {"type": "boolean"}}, ["ok"]))
    if _is_modern(ctx.protocol_version) and ctx.request_state != _REQUEST_STATE_NONCE:
        # Round one, or a retry whose state did not round-trip: (re-)ask, carrying the state.
        return InputRequiredResult(input_requests={"confirm": confirm}, request_state=_REQUEST_STATE_NONCE)
    answers = await _gather(ctx, {"confirm": confirm}, request_state=_REQUEST_STATE_NONCE)
    if isinstance(answers, InputRequiredResult):
        return answers
    return "state-ok: requestState round-tripped and the confirmation was received"


@app.tool(structured_output=False)
async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
    """Asks for an elicitation, a sampling and a roots/list answer in one InputRequiredResult."""
    requests: dict[str, InputRequest] = {
        "user_name": _elicitation("What is your name?", _NAME_SCHEMA),
        "greeting": _sampling("Generate a greeting", max_tokens=50),
        "client_roots": ListRootsRequest(),
    }
    answers = await _gather(ctx, requests, request_state="multiple-inputs")
    if isinstance(answers, InputRequiredResult):
        return answers
    name = _content_field(answers["user_name"], "name")
    return f"All inputs received: name={name}, greeting={_sampled_text(answers['greeting'])}"


_COLOR_SCHEMA: Final = _object_schema({"color": {"type": "string"}}, ["color"])


@app.tool(structured_output=False)
async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
    """Three rounds: asks for a name, then a favourite colour (each with a new requestState), then answers."""
    step1 = _elicitation("Step 1: What is your name?", _NAME_SCHEMA)
    step2 = _elicitation("Step 2: What is your favorite color?", _COLOR_SCHEMA)
    if not _is_modern(ctx.protocol_version):
        answers = await _gather(ctx, {"step1": step1, "step2": step2})
        assert not isinstance(answers, InputRequiredResult)
        return f"{_content_field(answers['step1'], 'name')} likes {_content_field(answers['step2'], 'color')}."
    state: dict[str, Any] = json.loads(ctx.request_state) if ctx.request_state else {"round": 1}
    responses = ctx.input_responses or {}
    if state.get("round") == 2 and isinstance(responses.get("step1"), ElicitResult):
        state = {"round": 3, "name": _content_field(responses["step1"], "name")}
    elif state.get("round") == 3 and isinstance(responses.get("step2"), ElicitResult):
        return f"{state.get('name', '?')} likes {_content_field(responses['step2'], 'color')}."
    if state.get("round") == 3:
        return InputRequiredResult(input_requests={"step2": step2}, request_state=json.dumps(state))
    return InputRequiredResult(input_requests={"step1": step1}, request_state=json.dumps({"round": 2}))


@app.tool(structured_output=False)
async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
    """Returns an integrity-protected requestState; a tampered echo is rejected by the SDK's state boundary."""
    confirm = _elicitation("Please confirm", _object_schema({"ok": {"type": "boolean"}}, ["ok"]))
    answers = await _gather(ctx, {"confirm": confirm}, request_state="tamper-check")
    if isinstance(answers, InputRequiredResult):
        return answers
    return f"state-ok: {ctx.request_state or 'handshake era'}"


@app.tool(structured_output=False)
async def test_input_required_result_capabilities(ctx: Context) -> str | InputRequiredResult:
    """Asks only for the inputs the client declared support for (sampling and/or elicitation)."""
    wanted: dict[str, InputRequest] = {
        "sample": _sampling("Say hello", max_tokens=50),
        "ask": _elicitation("What is your name?", _NAME_SCHEMA),
    }
    supported = {key: request for key, request in wanted.items() if _client_supports(ctx, request)}
    if not supported:
        return "The client declared neither sampling nor elicitation; nothing to ask."
    answers = await _gather(ctx, supported, request_state="capability-gated")
    if isinstance(answers, InputRequiredResult):
        return answers
    return f"Received answers for: {', '.join(sorted(answers))}"


# --------------------------------------------------------------------------------------------------------------
# Tools: SSE polling, list-changed triggers, header mirroring, JSON Schema 2020-12, dynamic tool.
# --------------------------------------------------------------------------------------------------------------


@app.tool(structured_output=False)
async def test_reconnection(ctx: Context) -> str:
    """Closes its SSE response stream mid-call (SEP-1699); the result arrives after the client reconnects."""
    await _log(ctx, "info", "Before disconnect")
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)
    await _log(ctx, "info", "After reconnect")
    return "Reconnection test completed"


def _transient_tool() -> str:
    """Registered and removed again by test_trigger_tool_change."""
    return "transient"


def _transient_prompt() -> str:
    """Registered and removed again by test_trigger_prompt_change."""
    return "transient"


@app.tool(structured_output=False)
async def test_trigger_tool_change(ctx: Context) -> str:
    """Changes the tool list (adds and removes a transient tool) and announces notifications/tools/list_changed."""
    app.add_tool(_transient_tool, name="test_transient_tool", structured_output=False)
    app.remove_tool("test_transient_tool")
    await ctx.notify_tools_changed()
    _notify_sessions_soon("tools")
    return "tool list changed"


@app.tool(structured_output=False)
async def test_trigger_prompt_change(ctx: Context) -> str:
    """Changes the prompt list (adds and removes a transient prompt) and announces the change."""
    app.add_prompt(Prompt.from_function(_transient_prompt, name="test_transient_prompt"))
    app.remove_prompt("test_transient_prompt")
    await ctx.notify_prompts_changed()
    _notify_sessions_soon("prompts")
    return "prompt list changed"


@app.tool(name="test_x_mcp_header", structured_output=False)
def x_mcp_header_tool(
    region: Annotated[
        str,
        Field(description="Mirrored into the Mcp-Param-Region header", json_schema_extra={"x-mcp-header": "Region"}),
    ] = "unspecified",
) -> str:
    """Echoes `region`, a parameter the client mirrors into the Mcp-Param-Region header (SEP-2243)."""
    return f"region={region}"


# --------------------------------------------------------------------------------------------------------------
# Resources.
# --------------------------------------------------------------------------------------------------------------


@app.resource("test://static-text", name="static_text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@app.resource("test://static-binary", name="static_binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a 1x1 PNG)."""
    return PNG_BYTES


@app.resource("test://template/{id}/data", name="template_data", mime_type="application/json")
def template_data(id: str) -> str:
    """A resource template whose {id} is substituted into the returned JSON."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@app.resource(WATCHED_RESOURCE_URI, name="watched_resource", mime_type="text/plain")
def watched_resource() -> str:
    """A subscribable resource whose content changes every three seconds."""
    return f"Watched resource content, version {_state.watched_version}"


# --------------------------------------------------------------------------------------------------------------
# Prompts.
# --------------------------------------------------------------------------------------------------------------


@app.prompt()
def test_simple_prompt() -> list[UserMessage]:
    """A simple prompt without arguments."""
    return [UserMessage(TextContent(type="text", text="This is a simple prompt for testing."))]


@app.prompt()
def test_prompt_with_arguments(
    arg1: Annotated[str, Field(description="First test argument")],
    arg2: Annotated[str, Field(description="Second test argument")],
) -> list[UserMessage]:
    """A prompt that substitutes two required arguments."""
    return [UserMessage(TextContent(type="text", text=f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"))]


@app.prompt()
def test_prompt_with_embedded_resource(
    resourceUri: Annotated[str, Field(description="URI of the resource to embed")],
) -> list[UserMessage]:
    """A prompt that embeds a resource."""
    return [
        UserMessage(
            EmbeddedResource(
                type="resource",
                resource=TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
                ),
            )
        ),
        UserMessage(TextContent(type="text", text="Please process the embedded resource above.")),
    ]


@app.prompt()
def test_prompt_with_image() -> list[UserMessage]:
    """A prompt that includes image content."""
    return [
        UserMessage(ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")),
        UserMessage(TextContent(type="text", text="Please analyze the image above.")),
    ]


@app.prompt()
async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
    """A prompt that first asks the user (elicitation) which context to use (SEP-2322 on prompts/get)."""
    request = _elicitation(
        "What context should the prompt use?", _object_schema({"context": {"type": "string"}}, ["context"])
    )
    answers = await _gather(ctx, {"user_context": request})
    if isinstance(answers, InputRequiredResult):
        return answers
    context = _content_field(answers["user_context"], "context")
    return [UserMessage(TextContent(type="text", text=f"Use the following context: {context}"))]


# --------------------------------------------------------------------------------------------------------------
# Completion, logging level, subscriptions.
# --------------------------------------------------------------------------------------------------------------

_COMPLETIONS: Final[Mapping[str, Sequence[str]]] = {
    "arg1": ("paris", "park", "party", "test-value", "testing"),
    "arg2": ("alpha", "beta", "gamma"),
    "id": ("1", "2", "3", "42", "123"),
    "resourceUri": ("test://static-text", "test://static-binary", "test://watched-resource"),
}


async def _complete(ctx: ServerRequestContext[Any, Any], params: CompleteRequestParams) -> CompleteResult:
    """Completes prompt and resource-template arguments from a small fixed vocabulary."""
    candidates = _COMPLETIONS.get(params.argument.name, ())
    values = [value for value in candidates if value.startswith(params.argument.value)]
    return CompleteResult(completion=Completion(values=values, total=len(values), has_more=False))


async def _set_logging_level(ctx: ServerRequestContext[Any, Any], params: SetLevelRequestParams) -> EmptyResult:
    if (sid := _session_id(ctx.request)) is not None:
        _state.log_levels[sid] = params.level
    return EmptyResult()


async def _subscribe(ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
    if (sid := _session_id(ctx.request)) is not None:
        _state.remember(sid, ctx.session)
        _state.subscriptions.setdefault(sid, set()).add(str(params.uri))
    return EmptyResult()


async def _unsubscribe(ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
    if (sid := _session_id(ctx.request)) is not None:
        _state.subscriptions.get(sid, set()).discard(str(params.uri))
    return EmptyResult()


# MCPServer has no typed public hooks for these methods. The SDK itself gates the handshake-era ones
# (logging/setLevel, resources/(un)subscribe) off on the 2026-07-28 wire.
app._lowlevel_server.add_request_handler("completion/complete", CompleteRequestParams, _complete)
app._lowlevel_server.add_request_handler("logging/setLevel", SetLevelRequestParams, _set_logging_level)
app._lowlevel_server.add_request_handler("resources/subscribe", SubscribeRequestParams, _subscribe)
app._lowlevel_server.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _unsubscribe)


# --------------------------------------------------------------------------------------------------------------
# Resumability for SSE polling (SEP-1699): an event store a transport may use with this fixture.
# --------------------------------------------------------------------------------------------------------------


class InMemoryEventStore(EventStore):
    """Keeps every SSE event in memory so a client can resume a stream with ``Last-Event-ID``.

    Bounded to ``max_events`` (oldest dropped first); priming events (``message is None``) are stored for
    their id but never replayed.
    """

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._next_id = 0
        self._max_events = max_events

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._next_id += 1
        event_id = str(self._next_id)
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self._max_events:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        entry = self._events.get(last_event_id)
        if entry is None:
            return None
        stream_id = entry[0]
        replay = False
        for event_id, (event_stream, message) in list(self._events.items()):
            if replay and event_stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
            replay = replay or event_id == last_event_id
        return stream_id
