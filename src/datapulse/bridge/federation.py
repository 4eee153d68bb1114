"""Several bridged servers (remote upstreams and stdio commands alike) composed into one MCP server
(``datapulse proxy --config FILE``): a federation.

Each member is a `Bridge` with everything it has alone: its own connections or child processes, filters, timeouts,
credentials and restart backoff. The federation's low-level server merges what they offer:

- tool and prompt names get the member's ``prefix`` (default: its name) and ``_``: ``github`` + ``create_issue`` is
  ``github_create_issue``. Prefixes are unique and none is another's followed by ``_`` (``a`` and ``a_b`` would make
  ``a_b_c`` ambiguous), so two members' names can never collide: a configuration that could is refused at start;
- resources keep their URIs (a URI names a thing; it is not ours to rename); a read or subscription goes to the
  member that listed the URI or a template matching it. Two members listing the same URI: the first in file order;
- lists are merged (every page of every member); a member that is down is left out of lists (logged), its own tools
  answer its error (``-32000`` with ``data.reason``), and ``/ready`` names it (`Federation.status`). It is tried
  again after its restart backoff, doubling per failure in a row: while that backoff is longer than
  ``restart_backoff_s`` its requests are refused at once (`datapulse.bridge.pool.Restarting`), a circuit breaker
  built on the pool's own restart state rather than a library (pybreaker and aiobreaker count failures per call
  site; the pool already knows when a member failed, and why);
- list changes of any member reach the sessions (each member delivers its own; they share the app's sessions);
- per-member ``scopes`` (written with the member's own names) and ``rate_limit`` become rules on the prefixed names
  (`federation_settings`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import anyio
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError

from datapulse._version import __version__
from datapulse.auth.scopes import parse_scope_policy
from datapulse.bridge.config import BridgedServer
from datapulse.bridge.proxy import (
    CHILD_UNAVAILABLE,
    RESOURCE_NOT_FOUND,
    Bridge,
    RelayedCapabilitiesServer,
    relay_handlers,
)
from datapulse.config import ConfigurationError, Settings

__all__ = ["SEPARATOR", "Federation", "check_prefixes", "federation_settings"]

log = logging.getLogger("datapulse.bridge.federation")

SEPARATOR: Final = "_"
"""Between a member's prefix and its own tool or prompt name."""
MAX_PAGES: Final = 100
"""Pages followed per member and list (a member whose cursors never end is cut off there)."""

Ctx = ServerRequestContext[Any, Any]
T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """One composed server: its prefix and its bridge."""

    prefix: str
    bridge: Bridge

    @property
    def name(self) -> str:
        return self.bridge.spec.name

    def own(self, name: str) -> str | None:
        """``name`` without this member's prefix, or None when the name is not this member's."""
        head = self.prefix + SEPARATOR
        return name[len(head) :] if name.startswith(head) and len(name) > len(head) else None


def check_prefixes(specs: Sequence[BridgedServer]) -> None:
    """Refuse prefixes under which two members' names could collide (see the module docstring).

    Raises:
        ConfigurationError: two members share a prefix, or one's prefix + ``_`` starts another's.
    """
    seen: dict[str, str] = {}
    for spec in specs:
        prefix = spec.prefix or spec.name
        for other, owner in seen.items():
            if prefix == other:
                raise ConfigurationError(
                    f"servers.{spec.name} and servers.{owner} both use the prefix {prefix!r}: their tool and prompt "
                    "names would collide; give one a prefix of its own"
                )
            if (prefix + SEPARATOR).startswith(other + SEPARATOR) or (other + SEPARATOR).startswith(prefix + SEPARATOR):
                raise ConfigurationError(
                    f"the prefixes {prefix!r} (servers.{spec.name}) and {other!r} (servers.{owner}) nest: a name "
                    f"such as {max(prefix, other, key=len)}{SEPARATOR}x could belong to either; choose prefixes "
                    "where neither starts with the other followed by '_'"
                )
        seen[prefix] = spec.name


def federation_settings(settings: Settings, specs: Sequence[BridgedServer]) -> Settings:
    """``settings`` with each member's ``scopes`` and ``rate_limit`` as rules on its prefixed names, ahead of the
    command's own rules (a member's rule wins for its items; the command's apply to the rest).

    Raises:
        ConfigurationError: a member's scope rules do not parse (the message names the member).
    """
    scope_rules: list[str] = []
    limit_rules: list[str] = []
    for spec in specs:
        prefix = (spec.prefix or spec.name) + SEPARATOR
        if spec.scopes:
            try:
                policy = parse_scope_policy(spec.scopes)
            except ValueError as exc:
                raise ConfigurationError(f"servers.{spec.name}.scopes: {exc}") from None
            for rule in policy.rules:
                pattern = rule.pattern if rule.kind == "resource" else prefix + rule.pattern
                scope_rules.append(f"{rule.kind}:{pattern}={' '.join(sorted(rule.scopes))}")
        if spec.rate_limit:
            limit_rules.append(f"{prefix}*={spec.rate_limit}")
    update: dict[str, Any] = {}
    if scope_rules:
        update["scopes"] = ";".join([*scope_rules, *([settings.scopes] if settings.scopes else [])])
    if limit_rules:
        update["tool_rate_limits"] = ",".join(
            [*limit_rules, *([settings.tool_rate_limits] if settings.tool_rate_limits else [])]
        )
    return settings.model_copy(update=update) if update else settings


class Federation:
    """Bridged servers composed into one low-level server (see the module docstring).

    Args:
        members: each member's settled spec and handshake answer (from `datapulse.bridge.host.probe_all`), in
            file order.

    Attributes:
        server: the low-level server to pass to `datapulse.app.create_app`.
        members: the composed servers.

    Raises:
        ConfigurationError: see `check_prefixes`.
    """

    def __init__(self, members: Sequence[tuple[types.InitializeResult, BridgedServer]]) -> None:
        check_prefixes([spec for _, spec in members])
        self.members = [Member(spec.prefix or spec.name, Bridge(spec, info)) for info, spec in members]
        self._resource_owner: dict[str, Member] = {}
        self._template_owner: list[tuple[re.Pattern[str], Member]] = []
        infos = [info for info, _ in members]
        capabilities = _merged_capabilities([info.capabilities for info in infos])
        handlers = relay_handlers(capabilities, self)
        handlers["on_set_logging_level"] = self.set_logging_level
        instructions = "\n\n".join(
            f"{member.prefix}{SEPARATOR}*: {info.instructions}"
            for member, info in zip(self.members, infos, strict=True)
            if info.instructions
        )
        self.server: Server[Any] = RelayedCapabilitiesServer(
            capabilities,
            "datapulse-federation",
            version=__version__,
            instructions=instructions or None,
            lifespan=self._lifespan,
            get_tool_input_schema=self.tool_input_schema,
            **handlers,
        )

    def tool_input_schema(self, name: str) -> Mapping[str, Any] | None:
        """A (prefixed) tool's input schema as its member last listed it, for the ``Mcp-Param-*`` header check."""
        for member in self.members:
            own = member.own(name)
            if own is not None:
                return member.bridge.tool_input_schema(own)
        return None

    def status(self) -> dict[str, str | None]:
        """Each member's name and why it is down (None: up), for ``/ready``."""
        return {member.name: member.bridge.down for member in self.members}

    @asynccontextmanager
    async def _lifespan(self, _server: Server[Any]) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            for member in self.members:
                await stack.enter_async_context(member.bridge.lifespan(member.bridge.server))
            yield {}

    # --- tools and prompts: by prefix ---------------------------------------------------------------------------

    def _owner(self, name: str, what: str) -> tuple[Member, str]:
        for member in self.members:
            own = member.own(name)
            if own is not None:
                return member, own
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown {what}: {name}")

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        async def one(member: Member) -> list[types.Tool]:
            tools = await _every_page(lambda page: member.bridge.list_tools(ctx, page), lambda r: r.tools)
            return _prefixed(member, tools)

        return types.ListToolsResult(tools=await self._merged(one, "tools"))

    async def call_tool(
        self, ctx: Ctx, params: types.CallToolRequestParams
    ) -> types.CallToolResult | types.InputRequiredResult:
        member, own = self._owner(params.name, "tool")
        return await member.bridge.call_tool(ctx, params.model_copy(update={"name": own}))

    async def list_prompts(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        async def one(member: Member) -> list[types.Prompt]:
            prompts = await _every_page(lambda page: member.bridge.list_prompts(ctx, page), lambda r: r.prompts)
            return _prefixed(member, prompts)

        return types.ListPromptsResult(prompts=await self._merged(one, "prompts"))

    async def get_prompt(
        self, ctx: Ctx, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult | types.InputRequiredResult:
        member, own = self._owner(params.name, "prompt")
        return await member.bridge.get_prompt(ctx, params.model_copy(update={"name": own}))

    # --- resources: by owner ------------------------------------------------------------------------------------

    async def list_resources(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        async def one(member: Member) -> list[types.Resource]:
            found = await _every_page(lambda page: member.bridge.list_resources(ctx, page), lambda r: r.resources)
            for resource in found:
                self._resource_owner.setdefault(str(resource.uri), member)
            return found

        return types.ListResourcesResult(resources=await self._merged(one, "resources"))

    async def list_resource_templates(
        self, ctx: Ctx, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        async def one(member: Member) -> list[types.ResourceTemplate]:
            found = await _every_page(
                lambda page: member.bridge.list_resource_templates(ctx, page), lambda r: r.resource_templates
            )
            known = {pattern.pattern for pattern, _ in self._template_owner}
            for template in found:
                pattern = _template_pattern(template.uri_template)
                if pattern.pattern not in known:
                    self._template_owner.append((pattern, member))
            return found

        return types.ListResourceTemplatesResult(resource_templates=await self._merged(one, "resources"))

    async def _resource_member(self, ctx: Ctx, uri: str) -> Member:
        """The member serving ``uri``: from the lists seen so far, else after listing again (a client may read a
        URI it knows without listing first). Raises -32002 when none has it."""
        for attempt in range(2):
            owner = self._resource_owner.get(uri)
            if owner is not None:
                return owner
            for pattern, member in self._template_owner:
                if pattern.fullmatch(uri):
                    return member
            if attempt == 0:
                await self.list_resources(ctx, None)
                await self.list_resource_templates(ctx, None)
        raise MCPError(code=RESOURCE_NOT_FOUND, message=f"Resource not found: {uri}")

    async def read_resource(
        self, ctx: Ctx, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult | types.InputRequiredResult:
        member = await self._resource_member(ctx, str(params.uri))
        return await member.bridge.read_resource(ctx, params)

    async def subscribe(self, ctx: Ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        member = await self._resource_member(ctx, str(params.uri))
        if not _subscribes(member):
            raise MCPError(code=types.METHOD_NOT_FOUND, message=f"{member.name} does not support subscriptions")
        return await member.bridge.subscribe(ctx, params)

    async def unsubscribe(self, ctx: Ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        member = await self._resource_member(ctx, str(params.uri))
        if not _subscribes(member):
            return types.EmptyResult()
        return await member.bridge.unsubscribe(ctx, params)

    # --- the rest -------------------------------------------------------------------------------------------------

    async def complete(self, ctx: Ctx, params: types.CompleteRequestParams) -> types.CompleteResult:
        ref = params.ref
        if isinstance(ref, types.PromptReference):
            member, own = self._owner(ref.name, "prompt")
            params = params.model_copy(update={"ref": ref.model_copy(update={"name": own})})
        else:
            member = await self._resource_member(ctx, ref.uri)
        if member.bridge.info.capabilities.completions is None:
            return types.CompleteResult(completion=types.Completion(values=[]))
        return await member.bridge.complete(ctx, params)

    async def set_logging_level(self, ctx: Ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        """Passed to every member that takes it; one that is down or refuses is skipped (logged)."""
        for member in self.members:
            if member.bridge.info.capabilities.logging is None or member.bridge.spec.transport == "modern":
                continue  # a 2026-07-28 upstream has no logging/setLevel (its logs are opted into per request)
            try:
                await member.bridge.set_logging_level(ctx, params)
            except MCPError as exc:
                log.info("logging/setLevel not applied to %s: %s", member.name, exc.error.message)
        return types.EmptyResult()

    async def _merged(self, one: Callable[[Member], Awaitable[list[T]]], capability: str) -> list[T]:
        """Every member's items (file order), each member asked at once; members that are down are left out
        (logged), unless all of them are: then the first one's error is raised."""
        members = [m for m in self.members if getattr(m.bridge.info.capabilities, capability) is not None]
        results: dict[int, list[T] | MCPError] = {}

        async def run(index: int, member: Member) -> None:
            try:
                results[index] = await one(member)
            except MCPError as exc:
                if exc.error.code != CHILD_UNAVAILABLE:
                    raise
                log.warning("%s left out of the %s list: %s", member.name, capability, exc.error.message)
                results[index] = exc

        async with anyio.create_task_group() as tasks:
            for index, member in enumerate(members):
                tasks.start_soon(run, index, member)
        merged: list[T] = []
        failures: list[MCPError] = []
        for index in range(len(members)):
            result = results[index]
            if isinstance(result, MCPError):
                failures.append(result)
            else:
                merged.extend(result)
        if failures and len(failures) == len(members):
            raise failures[0]
        return merged


async def _every_page(fetch: Callable[[types.PaginatedRequestParams | None], Awaitable[Any]], items: Any) -> list[Any]:
    """All items of a paginated list, following ``nextCursor`` (at most `MAX_PAGES` pages)."""
    found: list[Any] = []
    page: types.PaginatedRequestParams | None = None
    for _ in range(MAX_PAGES):
        result = await fetch(page)
        found.extend(items(result))
        if not result.next_cursor:
            break
        page = types.PaginatedRequestParams(cursor=result.next_cursor)
    return found


Named = TypeVar("Named", types.Tool, types.Prompt)


def _prefixed(member: Member, items: list[Named]) -> list[Named]:
    """Tools or prompts with ``member``'s prefix on their names."""
    return [item.model_copy(update={"name": member.prefix + SEPARATOR + item.name}) for item in items]


def _subscribes(member: Member) -> bool:
    resources = member.bridge.info.capabilities.resources
    return resources is not None and bool(resources.subscribe)


def _template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression matching the URIs of an RFC 6570 URI template (each ``{...}`` expression: any
    characters but ``/``, or any characters for reserved ``{+...}`` and fragment ``{#...}`` expansions)."""
    parts: list[str] = []
    for literal, expression in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        parts.append(re.escape(literal))
        if expression:
            parts.append(".*" if expression[1:2] in ("+", "#") else "[^/]*")
    return re.compile("".join(parts))


def _merged_capabilities(each: Sequence[types.ServerCapabilities]) -> types.ServerCapabilities:
    """What the federation offers: every capability any member has (list-change and subscribe flags too)."""

    def union(name: str) -> Any:
        present = [getattr(capabilities, name) for capabilities in each if getattr(capabilities, name) is not None]
        if not present:
            return None
        flags: dict[str, Any] = {}
        for field in ("list_changed", "subscribe"):
            if any(getattr(item, field, None) for item in present):
                flags[field] = True
        return present[0].model_copy(update=flags)

    return types.ServerCapabilities(
        tools=union("tools"),
        prompts=union("prompts"),
        resources=union("resources"),
        completions=union("completions"),
        logging=types.LoggingCapability(),
    )
