"""fetch_url refuses non-public destinations — before connecting, after DNS, and on every redirect."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from datapulse.tools.demo import build_demo_server, utc_now_iso
from datapulse.tools.fetch import FetchPolicy, FetchRefused, is_public_address, safe_fetch
from tests.support.servers import ReadyServer

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.100.100.200", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:93.184.216.34", True),
    ],
)
def test_only_globally_routable_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://100.100.100.200/",
        "http://0.0.0.0:9/",
    ],
)
async def test_non_public_destinations_are_refused_by_default(url: str) -> None:
    with pytest.raises(FetchRefused, match="non-public"):
        await safe_fetch(url, FetchPolicy(timeout_s=5))


@pytest.mark.parametrize(
    ("url", "fragment"), [("file:///etc/passwd", "only http"), ("ftp://x/y", "only http"), ("http:///x", "no host")]
)
async def test_other_schemes_and_hostless_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(FetchRefused, match=fragment):
        await safe_fetch(url, FetchPolicy())


def _origin_app() -> Starlette:
    async def ok(request: Request) -> Response:
        return PlainTextResponse("hello from origin " + request.headers.get("host", ""))

    async def big(_: Request) -> Response:
        return PlainTextResponse("y" * 200_000)

    async def to_private(_: Request) -> Response:
        return RedirectResponse("http://10.0.0.1/secret", status_code=302)

    async def to_metadata(_: Request) -> Response:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/", status_code=301)

    async def to_self(request: Request) -> Response:
        return RedirectResponse(str(request.url), status_code=307)

    async def relative(_: Request) -> Response:
        return RedirectResponse("/ok", status_code=302)

    return Starlette(
        routes=[
            Route("/ok", ok),
            Route("/big", big),
            Route("/to-private", to_private),
            Route("/to-metadata", to_metadata),
            Route("/loop", to_self),
            Route("/relative", relative),
        ]
    )


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    config = uvicorn.Config(_origin_app(), host="127.0.0.1", port=0, log_level="warning", log_config=None)
    server = ReadyServer(config)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server._serve)
        with anyio.fail_after(10):
            await server.ready.wait()
        yield f"http://127.0.0.1:{server.port}"
        server.should_exit = True


ALLOW_LOCAL = FetchPolicy(timeout_s=5, max_bytes=1000, allowlist=("127.0.0.1",))


async def test_allowlisted_addresses_are_fetched_with_status_snippet_and_size_cap(origin: str) -> None:
    result = await safe_fetch(f"{origin}/ok", ALLOW_LOCAL)
    assert result.status == 200
    assert result.snippet.startswith("hello from origin 127.0.0.1:")
    assert result.truncated is False
    big = await safe_fetch(f"{origin}/big", ALLOW_LOCAL)
    assert (big.bytes_read, big.truncated, len(big.snippet)) == (1000, True, 500)
    followed = await safe_fetch(f"{origin}/relative", ALLOW_LOCAL)
    assert followed.url.endswith("/ok")
    assert followed.status == 200


@pytest.mark.parametrize(("path", "fragment"), [("/to-private", "10.0.0.1"), ("/to-metadata", "169.254.169.254")])
async def test_redirects_to_non_public_addresses_are_refused(origin: str, path: str, fragment: str) -> None:
    with pytest.raises(FetchRefused, match=fragment):
        await safe_fetch(f"{origin}{path}", ALLOW_LOCAL)


async def test_redirect_loops_stop(origin: str) -> None:
    with pytest.raises(FetchRefused, match="more than 5 redirects"):
        await safe_fetch(f"{origin}/loop", ALLOW_LOCAL)


async def test_cidr_and_hostname_allowlist_entries_work(origin: str) -> None:
    port = origin.rsplit(":", 1)[1]
    by_cidr = await safe_fetch(f"{origin}/ok", FetchPolicy(allowlist=("127.0.0.0/8",)))
    assert by_cidr.status == 200
    by_name = await safe_fetch(f"http://localhost:{port}/ok", FetchPolicy(allowlist=("localhost",)))
    assert by_name.snippet.startswith("hello from origin localhost:")


async def test_the_demo_tools_answer_as_the_seed_describes() -> None:
    from mcp import Client

    async with Client(build_demo_server(), mode="legacy") as client:
        names = [tool.name for tool in (await client.list_tools()).tools]
        assert names == ["get_time", "fetch_url", "echo", "add", "uppercase_text"]
        time = (await client.call_tool("get_time", {})).structured_content
        assert time is not None
        assert time["time"].endswith("Z")
        assert len(time["time"]) == len("2025-08-31T12:00:00Z")
        refused = await client.call_tool("fetch_url", {"url": "http://169.254.169.254/latest/meta-data/"})
        assert refused.is_error
        assert "non-public" in refused.content[0].text  # type: ignore[union-attr]
        assert (await client.call_tool("add", {"a": 2, "b": 3})).structured_content == {"result": 5.0}
        assert (await client.call_tool("uppercase_text", {"text": "abc"})).structured_content == {"result": "ABC"}
        assert (await client.call_tool("echo", {"message": "é"})).structured_content == {"result": "é"}
        resource = await client.read_resource("datapulse://about")
        assert "DataPulse" in resource.contents[0].text  # type: ignore[union-attr]
        prompt = await client.get_prompt("summarize", {"text": "abc"})
        assert "abc" in prompt.messages[0].content.text  # type: ignore[union-attr]
    assert utc_now_iso().endswith("Z")
