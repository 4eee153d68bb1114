"""`PrefixRouter`: which app serves a path, and its ASGI lifespan (the served apps are real `create_app` apps)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest
from fastapi import FastAPI

from datapulse.app import create_app, runtime_of
from datapulse.mounts import Mount, PrefixRouter, runtimes_of
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio


def app_at(prefix: str) -> FastAPI:
    return create_app(make_settings(root_path=prefix))


@pytest.fixture(scope="module")
def router() -> PrefixRouter:
    return PrefixRouter([Mount("github", "/github", app_at("/github")), Mount("deep", "/team/a", app_at("/team/a"))])


@pytest.mark.parametrize(
    ("path", "served_by"),
    [
        ("/github/mcp", "github"),
        ("/github", "github"),
        ("/github/sse", "github"),
        ("/team/a/messages", "deep"),
        ("/githubx/mcp", None),  # a prefix matches whole segments only
        ("/team/ab/mcp", None),
        ("/team/mcp", None),
        ("/mcp", None),
        ("/health", None),  # answered by the router itself
        ("/.well-known/oauth-protected-resource/github/mcp", "github"),  # RFC 9728 §3.1: well-known goes first
        ("/.well-known/oauth-protected-resource/team/a/sse", "deep"),
        ("/.well-known/oauth-protected-resource/mcp", None),  # whose? no app is at the root
    ],
)
def test_a_path_is_served_by_the_app_with_the_longest_matching_prefix(
    router: PrefixRouter, path: str, served_by: str | None
) -> None:
    mount = router.match(path)
    assert (mount.name if mount is not None else None) == served_by


def test_an_app_at_the_root_serves_every_path_no_prefix_claims() -> None:
    router = PrefixRouter([Mount("root", "", app_at("")), Mount("github", "/github", app_at("/github"))])
    assert [router.match(path).name for path in ("/github/mcp", "/mcp", "/health", "/x")] == [  # type: ignore[union-attr]
        "github",
        "root",
        "root",
        "root",
    ]


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        ([], "at least one mount"),
        ([("a", "/x"), ("b", "/x")], "share a prefix"),
        ([("a", "/x"), ("a", "/y")], "share a name"),
        ([("a", "x")], "must be '' or start with '/'"),
        ([("a", "/x/")], "not end with '/'"),
    ],
)
def test_ambiguous_or_malformed_mounts_are_refused(mounts: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrefixRouter([Mount(name, prefix, app_at("")) for name, prefix in mounts])


def test_runtimes_of_names_every_mounted_apps_runtime_and_refuses_other_apps(router: PrefixRouter) -> None:
    assert runtimes_of(router) == [runtime_of(mount.app) for mount in router.mounts]
    single = app_at("")
    assert runtimes_of(single) == [runtime_of(single)]
    with pytest.raises(TypeError):
        runtimes_of(FastAPI())


async def lifespan_messages(router: PrefixRouter) -> list[MutableMapping[str, Any]]:
    """Run the ASGI lifespan protocol to its end: startup, then (if it started) shutdown; the messages sent."""
    sent: list[MutableMapping[str, Any]] = []
    inbox = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(inbox)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        await router({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


async def test_the_router_starts_every_apps_lifespan_and_stops_them_all() -> None:
    router = PrefixRouter([Mount("a", "/a", app_at("/a")), Mount("b", "/b", app_at("/b"))])
    sent = await lifespan_messages(router)
    assert [message["type"] for message in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert [runtime.shutdown.is_set() for runtime in router.runtimes] == [True, True]  # each drained on shutdown
    assert [runtime.running for runtime in router.runtimes] == [False, False]


async def test_an_app_that_cannot_start_fails_the_startup_and_the_started_ones_are_stopped() -> None:
    healthy, broken = app_at("/aa"), app_at("/b")
    runtime_of(broken).server.lifespan = lambda _server: _Failing()
    sent = await lifespan_messages(PrefixRouter([Mount("a", "/aa", healthy), Mount("b", "/b", broken)]))
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]
    assert "cannot reach the store" in sent[0]["message"]
    assert runtime_of(healthy).shutdown.is_set()  # started first (longest prefix first), then stopped
    assert not runtime_of(healthy).running


class _Failing:
    """An MCP server lifespan that fails to start."""

    async def __aenter__(self) -> None:
        raise RuntimeError("cannot reach the store")

    async def __aexit__(self, *_exc: object) -> None:
        return None
