"""The DataPulse API stream delivers results in order and exactly once in cluster mode, across a dropped
connection and ``kill -9`` of the session's owner (issue: results arrived out of event-id order, and a resume
with ``Last-Event-ID`` lost some and repeated others).

The client does what the seed's client does: it opens ``GET /events``, POSTs ``call_tool`` echo messages one
after another (each answered 202 before the next is sent), reads half of the results, drops the stream, and
reconnects with the last event id it saw. Repeated in several trials, with the stream and the POSTs on one
instance and on two.
"""

from __future__ import annotations

import json
import secrets

import httpx2
import pytest

from datapulse.cluster.store import Keys, connect
from tests.cluster.test_failover import FAST_FAILOVER, kill, until_not_503
from tests.support.cluster import spawn_cluster
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer
from tests.support.servers import ServerProcess, bearer
from tests.support.sse import SseReader, open_sse

pytestmark = pytest.mark.anyio

MESSAGES = 10
TRIALS = 3


def client(process: ServerProcess) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=process.url, headers=bearer(), timeout=10.0)


async def post_sequentially(http: httpx2.AsyncClient, session_id: str, last: int, start: int = 1) -> None:
    """POST messages ``r<start>`` … ``r<last>``, each answered 202 before the next is sent."""
    for n in range(start, last + 1):
        message = {"type": "call_tool", "request_id": f"r{n}", "data": {"name": "echo", "message": f"m{n}"}}
        response = await http.post(f"/message?session_id={session_id}", json=message)
        assert response.status_code == 202, response.text


async def read_results(stream: SseReader, count: int) -> list[tuple[str, str]]:
    """``count`` result events as (request id, event id), checking each event's shape."""
    results: list[tuple[str, str]] = []
    while len(results) < count:
        event = await stream.next_event()
        if not event.data:
            continue  # the retry: preamble
        body = json.loads(event.data)
        assert body["type"] == "tool_result", body
        assert body["data"] == {"result": f"m{body['request_id'][1:]}"}, body
        assert event.event_id is not None
        results.append((body["request_id"], event.event_id))
    return results


def seq(event_id: str) -> int:
    return int(event_id.rsplit(".", 1)[1])


def assert_in_order_exactly_once(first: list[tuple[str, str]], resumed: list[tuple[str, str]]) -> None:
    delivered = first + resumed
    assert [request_id for request_id, _ in delivered] == [f"r{n}" for n in range(1, MESSAGES + 1)], delivered
    seqs = [seq(event_id) for _, event_id in delivered]
    assert seqs == sorted(set(seqs)), delivered


async def one_trial(stream_at: httpx2.AsyncClient, post_at: httpx2.AsyncClient) -> None:
    session_id = f"order-{secrets.token_hex(6)}"
    url = f"/events?session_id={session_id}"
    async with open_sse(stream_at, "GET", url) as stream:
        assert stream.response.status_code == 200
        await post_sequentially(post_at, session_id, MESSAGES)
        first = await read_results(stream, MESSAGES // 2)
    last_event_id = first[-1][1]
    async with open_sse(stream_at, "GET", url, headers={"Last-Event-ID": last_event_id}) as resumed_stream:
        assert resumed_stream.response.status_code == 200
        resumed = await read_results(resumed_stream, MESSAGES - len(first))
        # Nothing else was waiting: the next event is the result of the next message, not a duplicate.
        await post_sequentially(post_at, session_id, MESSAGES + 1, start=MESSAGES + 1)
        (after,) = await read_results(resumed_stream, 1)
        assert after[0] == f"r{MESSAGES + 1}"
    assert_in_order_exactly_once(first, resumed)


async def test_results_posted_one_after_another_arrive_in_order_exactly_once_across_a_resume_on_one_instance(
    redis_server: RedisServer,
) -> None:
    async with spawn_cluster(redis_server.url, n=1) as (instance,), client(instance) as http:
        for _ in range(TRIALS):
            await one_trial(http, http)


async def test_results_arrive_in_order_exactly_once_with_the_stream_on_one_instance_and_the_posts_on_another(
    redis_server: RedisServer,
) -> None:
    async with (
        spawn_cluster(redis_server.url, n=2) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        for _ in range(TRIALS):
            await one_trial(at_owner, elsewhere)
            await one_trial(elsewhere, at_owner)


async def test_a_session_resumed_on_another_instance_after_kill_9_of_its_owner_gets_every_later_result_once(
    redis_server: RedisServer,
) -> None:
    async with (
        spawn_cluster(redis_server.url, n=2, args=FAST_FAILOVER) as (owner, other),
        client(owner) as at_owner,
        client(other) as elsewhere,
    ):
        redis = connect(redis_server.url, 2.0)
        try:
            session_id = f"failover-{secrets.token_hex(6)}"
            url = f"/events?session_id={session_id}"
            async with open_sse(at_owner, "GET", url) as stream:
                await post_sequentially(elsewhere, session_id, MESSAGES)
                first = await read_results(stream, MESSAGES // 2)
                key = Keys("dp").events(session_id)

                async def all_stored() -> bool:
                    return int(await redis.xlen(key)) >= MESSAGES

                await eventually(all_stored)
            await kill(owner)
            headers = {"Last-Event-ID": first[-1][1]}

            async def resume() -> httpx2.Response:
                request = elsewhere.build_request("GET", url, headers={**headers, "Accept": "text/event-stream"})
                return await elsewhere.send(request, stream=True)

            response = await until_not_503(resume)
            try:
                assert response.status_code == 200, await response.aread()
                resumed = await read_results(SseReader(response), MESSAGES - len(first))
            finally:
                await response.aclose()
            assert_in_order_exactly_once(first, resumed)
        finally:
            await redis.aclose()
