"""Running a helper program (Node clients, the conformance suite) to completion with its output collected."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import ByteReceiveStream

KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class Finished:
    """What a program left behind: its exit status (negative: killed by that signal), its output, decoded, and
    whether it was killed for running past its timeout."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool


async def drain(stream: ByteReceiveStream | None, sink: bytearray) -> None:
    """Append everything ``stream`` yields to ``sink`` until it ends."""
    if stream is None:
        return
    async for chunk in stream:
        sink.extend(chunk)


async def run_collecting(
    argv: Sequence[str], *, timeout_s: float, cwd: Path | str | None = None, env: Mapping[str, str] | None = None
) -> Finished:
    """Run ``argv`` (stdin closed), reading stdout and stderr while it runs so a full pipe never blocks it.

    Past ``timeout_s`` seconds the program is killed (waited for at most `KILL_WAIT_S`) and the result has
    ``timed_out`` set; the caller decides what that means.
    """
    stdout, stderr = bytearray(), bytearray()
    timed_out = False
    async with await anyio.open_process(
        list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env
    ) as process:
        try:
            with anyio.fail_after(timeout_s):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(drain, process.stdout, stdout)
                    tg.start_soon(drain, process.stderr, stderr)
                    await process.wait()
        except TimeoutError:
            timed_out = True
            process.kill()
            with anyio.move_on_after(KILL_WAIT_S, shield=True):
                await process.wait()
        returncode = process.returncode
    return Finished(returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"), timed_out)
