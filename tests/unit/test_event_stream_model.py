"""Model-based tests (hypothesis stateful) of `EventStream`: sequence assignment, journaling, delivery, replay
after a ``Last-Event-ID``, the cap, and restore after a take-over, against a simple model of what a client that
follows the protocol must see. Pure: an in-memory journal and connections, one asyncio loop, no network.

The interleavings come from the test: the journal's appends and the connection's writes yield to the loop a
drawn number of times, and emits, connects and disconnects run concurrently within one step.

The client model: it keeps every frame it received across connections and its last event id, and reconnects
with ``Last-Event-ID`` whenever it has one (as the API's clients and the SDKs do). The properties:

* on every connection, event ids strictly increase;
* the client never receives a frame twice, and receives every emitted frame, in emit order, except those a
  cap dropped, and each of those is announced (the notice's count) before the next frame it receives;
* every frame written to a connection was in the journal before it was written (cluster mode), and so was
  every frame before it;
* a stream restored from the journal (the owner died) continues: the client resumes on it with its last id
  and the two properties above still hold;
* a response that ended while the stream still wrote to it (the owner task sent its last frame first) refuses
  the write as uvicorn does; the frame stays for the resume, and nothing escapes to the writer;
* while the journal does not answer, frames are held, never written unjournaled; once it answers again
  (`EventStream.flush_pending`), a connected client has them all, in order. Each dropped frame is announced
  once, however often the client reconnects from the same id.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Coroutine, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from datapulse.errors import Unavailable
from datapulse.sessions.streams import EventStream, JournalEntry, SseConnection

FRAME = re.compile(rb"id: (?P<key>[^\n]+)\.(?P<seq>\d+)\ndata: (?P<payload>\d+)\n\n")
NOTICE = re.compile(rb"dropped: (?P<count>\d+)\n\n")
KEY = "k"


class MemoryJournal:
    """An `EventJournal` in memory whose appends yield to the loop ``delay`` times first, and fail as Redis's do
    (`Unavailable`) while ``down``."""

    def __init__(self) -> None:
        self.entries: list[JournalEntry] = []
        self.delays: list[int] = []
        self.down = False

    async def append(self, stream_key: str, events: Sequence[tuple[int, bytes]], delivered_seq: int) -> None:
        for _ in range(self.delays.pop() if self.delays else 0):
            await asyncio.sleep(0)
        if self.down:
            raise Unavailable("Service Unavailable: the cluster store (Redis) did not answer")
        self.entries.extend(JournalEntry(stream_key, seq, frame, delivered_seq) for seq, frame in events)

    async def read_all(self) -> list[JournalEntry]:
        return list(self.entries)

    def seqs(self) -> set[int]:
        return {entry.seq for entry in self.entries}


class Client:
    """What a protocol-following client saw, across its connections."""

    def __init__(self) -> None:
        self.received: list[int] = []  # payloads, in arrival order
        self.announced_drops = 0
        self.last_seq: int | None = None
        self.connections: list[list[int]] = []  # event seqs per connection
        self.ended: list[SseConnection] = []  # responses ended by their owner task while still attached

    def connection(self, journal: MemoryJournal | None) -> tuple[SseConnection, list[int]]:
        seqs: list[int] = []
        self.connections.append(seqs)

        async def send(message: Any) -> None:
            body: bytes = message["body"]
            for _ in range(self.write_delays.pop() if self.write_delays else 0):
                await asyncio.sleep(0)
            if connection in self.ended:  # as uvicorn refuses a write after the response's last frame
                raise RuntimeError("Unexpected ASGI message sent, after response already completed.")
            if connection.closed:  # the client hung up meanwhile: uvicorn drops the write without an error
                return
            if notice := NOTICE.fullmatch(body):
                self.announced_drops += int(notice["count"])
                return
            frame = FRAME.fullmatch(body)
            assert frame is not None, body
            seq = int(frame["seq"])
            if journal is not None:  # journaled before written, and so was every frame before it
                assert seq in journal.seqs()
            seqs.append(seq)
            self.received.append(int(frame["payload"]))
            self.last_seq = seq

        connection = SseConnection(send, slow_client_timeout_s=30)
        return connection, seqs

    write_delays: list[int] = []


class EventStreamMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = Client()
        self.client.write_delays = []
        self.emitted: list[int] = []  # payloads in emit order (payload n is the n-th emit)
        self.seq = 0
        self.live: SseConnection | None = None

    def teardown(self) -> None:
        self.loop.close()

    def run(self, *coroutines: Coroutine[Any, Any, Any]) -> None:
        async def together() -> None:
            await asyncio.gather(*coroutines)

        self.loop.run_until_complete(together())

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    @initialize(cap=st.integers(1, 8), clustered=st.booleans())
    def start(self, cap: int, clustered: bool) -> None:
        self.cap = cap
        self.journal = MemoryJournal() if clustered else None
        self.stream = self.new_stream()

    def new_stream(self) -> EventStream:
        return EventStream(KEY, self.cap, self.next_seq, self.journal, overflow_notice=lambda n: b"dropped: %d\n\n" % n)

    def emit(self) -> Coroutine[Any, Any, None]:
        payload = len(self.emitted)
        self.emitted.append(payload)
        return self.stream.emit(lambda event_id: b"id: %s\ndata: %d\n\n" % (event_id.encode(), payload))

    async def connect(self) -> None:
        """The client closes its connection, if any, then reconnects with its last event id, if any."""
        self.drop_connection()
        connection, _ = self.client.connection(self.journal)
        self.live = connection
        await self.stream.attach(connection, self.client.last_seq, own_counter=True)

    def drop_connection(self) -> None:
        if self.live is not None:
            self.live.mark_closed()
            self.stream.detach(self.live)
            self.live = None

    @rule(
        count=st.integers(1, 6),
        journal_delays=st.lists(st.integers(0, 3), max_size=6),
        write_delays=st.lists(st.integers(0, 3), max_size=6),
    )
    def emit_concurrently(self, count: int, journal_delays: list[int], write_delays: list[int]) -> None:
        if self.journal is not None:
            self.journal.delays = journal_delays
        self.client.write_delays = write_delays
        self.run(*(self.emit() for _ in range(count)))

    @rule(before=st.integers(0, 3), after=st.integers(0, 3), write_delays=st.lists(st.integers(0, 3), max_size=6))
    def reconnect_while_emitting(self, before: int, after: int, write_delays: list[int]) -> None:
        self.client.write_delays = write_delays
        self.run(*(self.emit() for _ in range(before)), self.connect(), *(self.emit() for _ in range(after)))

    @precondition(lambda self: self.live is not None)
    @rule()
    def client_drops_the_connection(self) -> None:
        self.drop_connection()

    @precondition(lambda self: self.live is not None)
    @rule(count=st.integers(0, 3))
    def the_response_ends_while_the_stream_still_writes_to_it(self, count: int) -> None:
        """The task owning the response sent its last frame before the stream let the connection go (it waited
        for a slow client): later writes are refused by the server; the frames wait in the history for a resume."""
        assert self.live is not None
        self.client.ended.append(self.live)
        self.run(*(self.emit() for _ in range(count)))  # must not raise; the invariants check what the client has

    @precondition(lambda self: self.journal is not None and not self.journal.down)
    @rule()
    def the_journal_stops_answering(self) -> None:
        assert self.journal is not None
        self.journal.down = True

    @precondition(lambda self: self.journal is not None and self.journal.down)
    @rule(write_delays=st.lists(st.integers(0, 3), max_size=6), emits=st.integers(0, 3))
    def the_journal_answers_again_and_held_frames_go_out(self, write_delays: list[int], emits: int) -> None:
        assert self.journal is not None
        self.journal.down = False
        self.client.write_delays = write_delays
        self.run(self.stream.flush_pending(), *(self.emit() for _ in range(emits)))

    @precondition(lambda self: self.journal is not None and not self.journal.down)
    @rule()
    def owner_dies_and_another_instance_restores_the_stream(self) -> None:
        assert self.journal is not None
        if self.live is not None:
            self.live.mark_closed()
            self.live = None
        self.stream = self.new_stream()
        for entry in self.run_value(self.journal.read_all()):
            self.seq = max(self.seq, entry.seq)
            if entry.stream_key == KEY:
                self.stream.restore(entry.seq, entry.frame, entry.delivered_seq)

    def run_value(self, coroutine: Coroutine[Any, Any, list[JournalEntry]]) -> list[JournalEntry]:
        return self.loop.run_until_complete(coroutine)

    @invariant()
    def event_ids_strictly_increase_on_every_connection(self) -> None:
        for seqs in self.client.connections:
            assert seqs == sorted(set(seqs))

    @invariant()
    def the_client_sees_each_frame_once_in_emit_order(self) -> None:
        received = self.client.received
        assert received == sorted(set(received))

    @invariant()
    def every_gap_was_announced(self) -> None:
        received = self.client.received
        if not received:
            return
        gaps = sum(1 for payload in self.emitted[: received[-1] + 1] if payload not in set(received))
        assert gaps <= self.client.announced_drops

    @invariant()
    def a_connected_client_has_everything_emitted_except_what_was_announced(self) -> None:
        if self.live is None or self.live.closed or (self.journal is not None and self.journal.down):
            return
        missing = len(self.emitted) - len(self.client.received)
        assert missing == self.client.announced_drops


EventStreamMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DATAPULSE_MODEL_EXAMPLES", "300")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_event_stream_model = EventStreamMachine.TestCase
