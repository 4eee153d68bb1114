"""The cluster's Redis URL: `parse_sentinel_url` and `check_redis_url` driven by tables of good and bad URLs, the
settings' ``redis_url`` check, and the clients `connect` builds (built only: nothing is contacted)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from datapulse.cluster.redis_url import ACCEPTED_SCHEMES, SentinelUrl, check_redis_url, parse_sentinel_url
from datapulse.cluster.store import connect
from datapulse.cluster.timed_redis import TimedRedis
from tests.support.servers import make_settings

pytestmark = pytest.mark.anyio

GOOD_URLS: list[tuple[str, SentinelUrl]] = [
    (
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379/mymaster",
        SentinelUrl(sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379)), service_name="mymaster"),
    ),
    ("redis+sentinel://s1/mymaster", SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster")),
    ("redis+sentinel://s1:5000/mymaster/", SentinelUrl(sentinels=(("s1", 5000),), service_name="mymaster")),
    ("redis+sentinel://s1,s2:26380/m/3", SentinelUrl(sentinels=(("s1", 26379), ("s2", 26380)), service_name="m", db=3)),
    (
        "redis+sentinel://:p%40ss%2Fw0rd@s1:26379/mymaster/0",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", password="p@ss/w0rd"),
    ),
    (
        "redis+sentinel://:pa?ss@s1/mymaster",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", password="pa?ss"),
    ),
    (
        "redis+sentinel://app:secret@s1/mymaster",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", username="app", password="secret"),
    ),
    (
        "redis+sentinel://app@s1/mymaster",
        SentinelUrl(sentinels=(("s1", 26379),), service_name="mymaster", username="app"),
    ),
    (
        "redis+sentinel://[::1]:26379,[fe80::2]/mymaster",
        SentinelUrl(sentinels=(("::1", 26379), ("fe80::2", 26379)), service_name="mymaster"),
    ),
    (
        "rediss+sentinel://:pw@s1:26379/mymaster/1?sentinel_password=spw&sentinel_username=sentinel-user",
        SentinelUrl(
            sentinels=(("s1", 26379),),
            service_name="mymaster",
            db=1,
            password="pw",
            sentinel_username="sentinel-user",
            sentinel_password="spw",
            ssl=True,
        ),
    ),
    ("REDIS+SENTINEL://s1/my%2Dmaster", SentinelUrl(sentinels=(("s1", 26379),), service_name="my-master")),
]

# (url, a fragment of the error message)
BAD_URLS: list[tuple[str, str]] = [
    ("redis://localhost:6379/0", "not a Sentinel URL: expected redis+sentinel:// or rediss+sentinel://"),
    ("redis+sentinel:///mymaster", "no sentinel host"),
    ("redis+sentinel://:pw@/mymaster", "no sentinel host"),
    ("redis+sentinel://s1:26379", "no service name"),
    ("redis+sentinel://s1:26379/", "no service name"),
    ("redis+sentinel://s1:26379?sentinel_password=x", "no service name"),
    ("redis+sentinel://s1,,s2/mymaster", "empty entry in the sentinel host list"),
    ("redis+sentinel://s1,/mymaster", "empty entry in the sentinel host list"),
    ("redis+sentinel://:26379/mymaster", "sentinel ':26379' has no host"),
    ("redis+sentinel://s1:/mymaster", "sentinel 's1:' has ':' but no port"),
    ("redis+sentinel://s1:0/mymaster", "port '0' is not 1-65535"),
    ("redis+sentinel://s1:65536/mymaster", "port '65536' is not 1-65535"),
    ("redis+sentinel://s1:port/mymaster", "port 'port' is not 1-65535"),
    ("redis+sentinel://::1:26379/mymaster", "put an IPv6 address in brackets"),
    ("redis+sentinel://[::1/mymaster", "malformed IPv6 sentinel"),
    ("redis+sentinel://[::1]x/mymaster", "malformed IPv6 sentinel"),
    ("redis+sentinel://s1/mymaster/zero", "db 'zero' is not a non-negative integer"),
    ("redis+sentinel://s1/mymaster/-1", "db '-1' is not a non-negative integer"),
    ("redis+sentinel://s1/mymaster/0/extra", "too many path segments"),
    ("redis+sentinel://s1/mymaster?password=x", "unknown query key 'password'"),
    ("redis+sentinel://s1/mymaster?sentinel_password=a&sentinel_password=b", "'sentinel_password' given twice"),
    ("redis+sentinel://s1/mymaster#frag", "'#' is not allowed"),
    ("redis+sentinel://:pa/ss@s1/mymaster", "percent-encode '/' in a password"),
    ("redis+sentinel://:pa/ss?x@s1/mymaster", "percent-encode '/' in a password"),
]


@pytest.mark.parametrize(("url", "expected"), GOOD_URLS)
def test_parse_sentinel_url_reads_sentinels_service_db_and_credentials(url: str, expected: SentinelUrl) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_parse_sentinel_url_rejects_a_bad_url_saying_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="Sentinel URL") as caught:
        parse_sentinel_url(url)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://:qx7zk@:1/m",
        "redis+sentinel://:qx7zk@s1/m/x",
        "redis+sentinel://:qx7zk@s1:0/m",
        "redis+sentinel://:qx7/zk9@s1/m",
        "redis+sentinel://:qx7/zk9?a@s1/m",
        "redis+sentinel://:qx7?zk9@s1",
    ],
)
def test_a_sentinel_url_error_never_repeats_any_part_of_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="Sentinel URL") as caught:
        parse_sentinel_url(url)
    assert "qx7" not in str(caught.value)
    assert "zk" not in str(caught.value)


def test_a_parsed_sentinel_url_does_not_show_its_passwords() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:hunter2@s1,s2:1/m/2?sentinel_password=swordfish")
    assert repr(parsed) == "SentinelUrl(s1:26379,s2:1/m/2, ssl=False)"


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://:pw@redis.internal:6380/1",
        "unix:///run/redis.sock",
        "redis+sentinel://s1,s2,s3/mymaster",
        "rediss+sentinel://:pw@s1/mymaster/2",
    ],
)
def test_check_redis_url_accepts_every_documented_scheme(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize("url", ["http://localhost:6379", "localhost:6379", "sentinel://s1/mymaster", "valkey://x"])
def test_check_redis_url_rejects_another_scheme_naming_every_accepted_one(url: str) -> None:
    with pytest.raises(ValueError, match="redis_url must start with") as caught:
        check_redis_url(url)
    for scheme in ACCEPTED_SCHEMES:
        assert f"{scheme}://" in str(caught.value)


def test_the_redis_url_setting_accepts_a_sentinel_url_and_rejects_a_malformed_one() -> None:
    settings = make_settings(redis_url="redis+sentinel://s1:26379,s2:26379/mymaster/0")
    assert settings.cluster
    with pytest.raises(ValidationError, match="port '99999' is not 1-65535"):
        make_settings(redis_url="redis+sentinel://s1:99999/mymaster")
    with pytest.raises(
        ValidationError, match=r"redis://, rediss://, unix://, redis\+sentinel:// or rediss\+sentinel://"
    ):
        make_settings(redis_url="memcached://x")


async def test_connect_builds_a_timed_client_on_a_sentinel_pool_with_the_plain_urls_timeouts() -> None:
    plain = connect("redis://:pw@127.0.0.1:6379/2", 1.5)
    sentinel = connect("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2?sentinel_password=s", 1.5)
    try:
        assert isinstance(sentinel, TimedRedis)
        pool = sentinel.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.is_master
        wanted = ("socket_timeout", "socket_connect_timeout", "health_check_interval", "db", "password")
        for key in wanted:
            assert pool.connection_kwargs[key] == plain.connection_pool.connection_kwargs[key], key
        retry = pool.connection_kwargs["retry"]
        assert retry.get_retries() == plain.connection_pool.connection_kwargs["retry"].get_retries() == 1
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [26379, 26380]
        assert all(s.connection_pool.connection_kwargs["password"] == "s" for s in sentinels)
        assert all(s.connection_pool.connection_kwargs["socket_timeout"] == 1.5 for s in sentinels)
    finally:
        await sentinel.aclose()
        await plain.aclose()


async def test_connect_uses_tls_connections_for_rediss_sentinel() -> None:
    client = connect("rediss+sentinel://s1/mymaster", 1.0)
    try:
        assert client.connection_pool.connection_class is SentinelManagedSSLConnection
    finally:
        await client.aclose()


def test_connect_rejects_a_malformed_sentinel_url() -> None:
    with pytest.raises(ValueError, match="no service name"):
        connect("redis+sentinel://s1:26379", 1.0)
