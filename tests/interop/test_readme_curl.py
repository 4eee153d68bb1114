"""README.md's DataPulse API curl examples, run as written against a real server.

The commands are read from README.md (every fenced ```bash block that runs ``curl`` against ``/events`` or
``/message``), so these tests break when the README drifts from the server. The only changes made to them: the
README's ``http://127.0.0.1:8000`` becomes the test server's URL, ``DATAPULSE_TOKEN`` is exported as the test token,
each POST gets ``-w '\\n%{http_code}'`` appended so its HTTP status is visible, and the reconnect adds the README's
``Last-Event-ID`` header. The ``curl -N`` stream runs in the background and its stdout is read as it arrives.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process

from tests.support.servers import TOKEN, RunningServer, make_settings, serve_in_process

pytestmark = [pytest.mark.interop, pytest.mark.anyio]

README: Final = Path(__file__).resolve().parents[2] / "README.md"
README_BASE_URL: Final = "http://127.0.0.1:8000"
CURL: Final = Path("/usr/bin/curl")
COMMAND_TIMEOUT_S: Final = 20.0
EVENT_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 5.0
DEMO_TOOLS: Final = ["get_time", "fetch_url", "echo", "add", "uppercase_text"]
API_EVENT_ID: Final = re.compile(r"[A-Za-z0-9_-]{8}e\.[0-9]+")
ISO_UTC_Z: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")

needs_curl: Final = pytest.mark.skipif(
    not (CURL.is_file() and os.access(CURL, os.X_OK)), reason=f"curl not found at {CURL}; the README examples need it"
)


# --- reading the README ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One SSE frame (the text up to a blank line) as curl printed it."""

    text: str

    def fields(self, name: str) -> list[str]:
        return [line.partition(": ")[2] for line in self.text.split("\n") if line.startswith(f"{name}:")]

    @property
    def event_id(self) -> str | None:
        ids = self.fields("id")
        return ids[-1] if ids else None

    @property
    def data(self) -> str | None:
        lines = self.fields("data")
        return "\n".join(lines) if lines else None


@dataclass(frozen=True)
class Post:
    """A README ``curl -X POST /message`` command and the message it sends."""

    command: str
    message: dict[str, Any]


@dataclass(frozen=True)
class ReadmeApi:
    stream_command: str
    posts: list[Post]
    expected_frames: list[Frame]
    """The README's sample stream output, one frame per result, ``[...]`` standing for elided content."""
    resume_after: str
    """The ``Last-Event-ID`` value the README's reconnect sentence uses."""


FENCE: Final = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
API_PATH: Final = re.compile(r"/(events|message)\b")  # not /messages (the 2024-11-05 transport)


def shell_commands(block: str) -> list[str]:
    """Split a bash block into its commands (a line ending in a backslash continues on the next)."""
    commands: list[str] = []
    current: list[str] = []
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current.append(line)
        if not line.endswith("\\"):
            commands.append("\n".join(current))
            current = []
    assert not current, f"dangling line continuation in README block:\n{block}"
    return commands


def posted_message(command: str) -> dict[str, Any]:
    words = shlex.split(command.replace("\\\n", " "))
    assert words.count("-d") == 1, command
    message = json.loads(words[words.index("-d") + 1])
    assert isinstance(message, dict), command
    return message


def parse_readme() -> ReadmeApi:
    text = README.read_text(encoding="utf-8")
    blocks = [(m["lang"], m["body"]) for m in FENCE.finditer(text)]
    commands = [
        command
        for lang, body in blocks
        if lang == "bash" and "curl" in body and API_PATH.search(body)
        for command in shell_commands(body)
    ]
    streams = [c for c in commands if " -N " in c and "/events" in c]
    posts = [Post(c, posted_message(c)) for c in commands if "-X POST" in c and "/message" in c]
    assert len(streams) == 1, f"expected one `curl -N .../events` command in README.md, found {streams}"
    assert len(posts) >= 2, f"expected the README's POST /message commands, found {posts}"
    assert len(streams) + len(posts) == len(commands), f"unrecognised DataPulse API commands in README: {commands}"
    samples = [body for lang, body in blocks if lang == "text" and "id: " in body and '"tool_result"' in body]
    assert len(samples) == 1, "expected one ```text block showing the event stream in README.md"
    frames = [Frame(chunk.strip("\n")) for chunk in samples[0].split("\n\n") if chunk.strip()]
    resume = re.findall(r"reconnect with `Last-Event-ID: ([^`]+)`", text)
    assert len(resume) == 1, "expected the README sentence 'A reconnect with `Last-Event-ID: ...`'"
    return ReadmeApi(streams[0], posts, frames, resume[0])


def readme_value(frame: Frame) -> dict[str, Any]:
    """The JSON of a README sample frame, with its ``[...]`` placeholders read as empty lists."""
    assert frame.data is not None, frame
    value = json.loads(frame.data.replace("[...]", "[]"))
    assert isinstance(value, dict), frame
    return value


def shape(value: Any) -> Any:
    """The structure of a JSON value: object keys and value kinds, not the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


# --- running the commands --------------------------------------------------------------------------------------------


def localize(command: str, server: RunningServer) -> str:
    assert README_BASE_URL in command, f"README command does not use {README_BASE_URL}:\n{command}"
    return command.replace(README_BASE_URL, server.url)


def curl_env() -> dict[str, str]:
    """The caller's environment with the README's token exported and no proxy between curl and 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["DATAPULSE_TOKEN"] = TOKEN
    env["PATH"] = f"{CURL.parent}:{env.get('PATH', '')}"
    return env


async def run_post(post: Post, server: RunningServer) -> tuple[int, Any]:
    """Run one README POST command; return its HTTP status and the JSON body curl printed."""
    command = localize(post.command, server) + " -w '\\n%{http_code}'"
    with anyio.fail_after(COMMAND_TIMEOUT_S):
        done = await anyio.run_process(["bash", "-c", command], env=curl_env(), check=False)
    stdout = done.stdout.decode()
    assert done.returncode == 0, f"{command}\nexit {done.returncode}\nstdout: {stdout}\nstderr: {done.stderr.decode()}"
    body, _, status = stdout.rpartition("\n")
    return int(status), json.loads(body)


class CurlStream:
    """The stdout of a running ``curl -N`` read frame by frame; every wait is bounded."""

    def __init__(self, process: Process, stdout: ByteReceiveStream, stderr: bytearray) -> None:
        self.process = process
        self._stdout = stdout
        self._stderr = stderr
        self._buffer = b""

    async def next_frame(self, timeout_s: float = EVENT_TIMEOUT_S) -> Frame:
        try:
            with anyio.fail_after(timeout_s):
                while b"\n\n" not in self._buffer:
                    self._buffer += await self._stdout.receive()
        except anyio.EndOfStream:
            raise AssertionError(f"curl's stream ended; buffered {self._buffer!r}; stderr:\n{self.stderr}") from None
        except TimeoutError:
            raise AssertionError(f"no SSE frame within {timeout_s}s; buffered {self._buffer!r}") from None
        block, _, self._buffer = self._buffer.partition(b"\n\n")
        return Frame(block.decode())

    async def next_event(self, timeout_s: float = EVENT_TIMEOUT_S) -> Frame:
        """The next frame that carries data (skipping ``retry:`` hints and ``: ping`` comments)."""
        with anyio.fail_after(timeout_s):
            while True:
                frame = await self.next_frame(timeout_s)
                if frame.data is not None:
                    return frame

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")


async def _drain(stream: ByteReceiveStream, sink: bytearray) -> None:
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError):
        async for chunk in stream:
            sink.extend(chunk)


@asynccontextmanager
async def background_stream(command: str) -> AsyncIterator[CurlStream]:
    """Run ``command`` (a ``curl -N``) in its own process group; stop the group on exit, bounded."""
    process = await anyio.open_process(
        ["bash", "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=curl_env(),
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_drain, process.stderr, stderr)
            try:
                yield CurlStream(process, process.stdout, stderr)
            finally:
                await stop(process)
    finally:
        await process.aclose()


async def stop(process: Process) -> None:
    """SIGTERM the process group we started (curl, and bash if it did not exec), then SIGKILL if it lingers."""
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with anyio.move_on_after(STOP_TIMEOUT_S, shield=True):
        await process.wait()
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with anyio.move_on_after(STOP_TIMEOUT_S, shield=True):
        await process.wait()


def seq_of(event_id: str | None) -> int:
    """The sequence number of a DataPulse API event id ``<random stream key>.<n>``."""
    assert event_id is not None
    assert API_EVENT_ID.fullmatch(event_id), event_id
    return int(event_id.rpartition(".")[2])


def stream_of(event_id: str | None) -> str:
    """The stream key of a DataPulse API event id (random per session, ending in ``e``)."""
    assert event_id is not None
    assert API_EVENT_ID.fullmatch(event_id), event_id
    return event_id.rpartition(".")[0]


# --- the tests -------------------------------------------------------------------------------------------------------


@pytest.fixture
def readme() -> ReadmeApi:
    return parse_readme()


@pytest.fixture
async def datapulse() -> AsyncIterator[RunningServer]:
    async with serve_in_process(make_settings()) as server:
        yield server


def test_readme_documents_the_datapulse_api_with_curl(readme: ReadmeApi) -> None:
    assert [post.message["type"] for post in readme.posts] == ["list_tools", "call_tool"]
    assert [seq_of(frame.event_id) for frame in readme.expected_frames] == [1, 2]
    assert len({stream_of(frame.event_id) for frame in readme.expected_frames}) == 1
    assert [readme_value(f)["request_id"] for f in readme.expected_frames] == [
        p.message["request_id"] for p in readme.posts
    ]
    assert readme.resume_after == readme.expected_frames[0].event_id
    assert ISO_UTC_Z.fullmatch(readme_value(readme.expected_frames[1])["data"]["time"])


async def post_and_receive(
    readme: ReadmeApi, server: RunningServer, stream: CurlStream
) -> tuple[list[Frame], datetime, datetime]:
    """Run the README's POSTs in order; each must be queued and its result must arrive on ``stream`` before the
    next is sent (that is what the README's sample output shows). Returns the frames and the time window."""
    frames: list[Frame] = []
    before = datetime.now(UTC).replace(microsecond=0)
    for post in readme.posts:
        status, body = await run_post(post, server)
        assert (status, body) == (202, {"status": "queued", "request_id": post.message["request_id"]})
        frames.append(await stream.next_event())
    return frames, before, datetime.now(UTC)


def assert_matches_readme(frames: list[Frame], readme: ReadmeApi, before: datetime, after: datetime) -> None:
    assert len(frames) == len(readme.expected_frames)
    for frame, expected in zip(frames, readme.expected_frames, strict=True):
        # The README's two-line frames: `id: <id>` then `data: <one-line JSON>`, nothing else.
        assert frame.text == f"id: {frame.event_id}\ndata: {frame.data}", frame.text
        assert seq_of(frame.event_id) == seq_of(expected.event_id)
        assert stream_of(frame.event_id) == stream_of(frames[0].event_id)
        actual_value = json.loads(frame.data or "")
        expected_value = readme_value(expected)
        assert shape(actual_value) == shape(expected_value), (frame.text, expected.text)
        assert actual_value["type"] == expected_value["type"]
        assert actual_value["request_id"] == expected_value["request_id"]
    listed, timed = (json.loads(frame.data or "") for frame in frames)
    assert [tool["name"] for tool in listed["data"]["tools"]] == DEMO_TOOLS
    stamp = timed["data"]["time"]
    assert ISO_UTC_Z.fullmatch(stamp), stamp
    assert before <= datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) <= after


@needs_curl
async def test_readme_curl_posts_are_queued_and_their_results_stream_with_event_ids(
    readme: ReadmeApi, datapulse: RunningServer
) -> None:
    async with background_stream(localize(readme.stream_command, datapulse)) as stream:
        # DataPulse opens the stream with a `retry:` hint: proof the GET is connected before anything is posted.
        opening = await stream.next_frame()
        assert opening.data is None, opening.text
        assert opening.fields("retry"), opening.text
        frames, before, after = await post_and_receive(readme, datapulse, stream)
    assert_matches_readme(frames, readme, before, after)


@needs_curl
async def test_readme_curl_reconnect_with_last_event_id_replays_exactly_the_events_after_it(
    readme: ReadmeApi, datapulse: RunningServer
) -> None:
    async with background_stream(localize(readme.stream_command, datapulse)) as first:
        await first.next_frame()
        frames, _, _ = await post_and_receive(readme, datapulse, first)
        # The client goes away (curl is stopped) before reconnecting.
    assert [seq_of(f.event_id) for f in frames] == [1, 2]

    resume_after = frames[0].event_id  # the README's id, as this server numbered it
    resumed_command = readme.stream_command.replace("curl ", f'curl -H "Last-Event-ID: {resume_after}" ', 1)
    async with background_stream(localize(resumed_command, datapulse)) as resumed:
        replayed = await resumed.next_event()
        assert replayed == frames[1], "the first event after a reconnect must be the one right after Last-Event-ID"
        # Whatever the stream carries next must be new: a fresh message's result, numbered right after e.2.
        first_post = readme.posts[0]
        fresh = Post(
            first_post.command.replace(json.dumps(first_post.message["request_id"]), '"req-3"'),
            {**first_post.message, "request_id": "req-3"},
        )
        assert fresh.command != first_post.command
        status, body = await run_post(fresh, datapulse)
        assert (status, body) == (202, {"status": "queued", "request_id": "req-3"})
        following = await resumed.next_event()
    assert following.event_id == f"{stream_of(frames[0].event_id)}.3", following.text
    assert json.loads(following.data or "")["request_id"] == "req-3"
    assert json.loads(following.data or "")["type"] == "list_tools"


@needs_curl
async def test_readme_curl_results_posted_before_the_stream_is_opened_wait_for_it(
    readme: ReadmeApi, datapulse: RunningServer
) -> None:
    # README: "the first GET or POST creates the session" and "Results wait ... while no stream is connected".
    before = datetime.now(UTC).replace(microsecond=0)
    for post in readme.posts:
        status, body = await run_post(post, datapulse)
        assert (status, body) == (202, {"status": "queued", "request_id": post.message["request_id"]})
    async with background_stream(localize(readme.stream_command, datapulse)) as stream:
        frames = [await stream.next_event() for _ in readme.posts]
    assert_matches_readme(frames, readme, before, datetime.now(UTC))
