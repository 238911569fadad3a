"""The generator process: participants of whole rooms, their media, and their measurements.

``python -m bench.load generator`` reads its :class:`~bench.load.protocol.Job` from stdin,
fills the rooms in small waves, then reports as :mod:`bench.load.protocol` describes until it is
told to stop. Each generator reports its own CPU and event-loop lag, so that the harness can
tell when a generator, and not the server, was the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import sys
import time

import aiohttp

from control.loopwatch import LoopWatch

from . import protocol
from .media import Media, encode_audio, encode_video
from .protocol import Job, Ready, Result, RoomJob, Stats
from .receivers import LatencySink, Member
from .rooms import JoinRoom, join_janus, join_remotecase

ROOMS_PER_WAVE = 4  # rooms fill in small waves, as people arrive
LATENCY_SAMPLES = 10000  # at most this many latencies in a RESULT line


def main() -> None:
    asyncio.run(run(protocol.decode_job(sys.stdin.readline())))


async def run(job: Job) -> None:
    """Join every room of the job, publish where asked, report until told to stop."""
    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses([job.address])
    LatencySink.LIGHT = job.receivers == "light"
    if job.cpus:
        os.sched_setaffinity(0, set(job.cpus))
    video = await asyncio.to_thread(encode_video, job.bitrate, fps=job.fps)
    audio = await asyncio.to_thread(encode_audio)
    media = Media(video, audio, job.fps)
    members: list[Member] = []
    joins: list[float] = []
    failures: list[str] = []
    join: JoinRoom = join_janus if job.server == "janus" else join_remotecase
    # no cap on connections: every Janus session holds one in its long poll, and aiohttp's
    # default of 100 made the 101st participant's requests wait behind them
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def fill(room: RoomJob) -> None:
            try:
                await join(http, job.base, room, media, members, joins)
            except Exception as exc:  # reported, not fatal: a refused join is a finding
                failures.append(f"{room.room}: {type(exc).__name__}: {exc}")

        for i in range(0, len(job.rooms), ROOMS_PER_WAVE):
            await asyncio.gather(*(fill(r) for r in job.rooms[i : i + ROOMS_PER_WAVE]))
        # A full collection over a generator's hundreds of peer connections stops it for
        # hundreds of milliseconds, which its subscribers would report as the server's latency:
        # collect once now, and not again until the window is over.
        gc.collect()
        gc.freeze()
        gc.disable()
        _emit(Ready(joined=len(joins), failures=failures))
        watch = await _report_until_stopped(members)
        _emit(_result(members, joins, failures, watch))
        if watch is not None:
            await watch.close()
        gc.enable()
        for member in members:
            for close in member.closers:
                with contextlib.suppress(Exception):
                    await close()


async def _report_until_stopped(members: list[Member]) -> LoopWatch | None:
    """STATS every second until STOP; on MEASURE, the window starts: the warm-up's latencies
    are dropped and a LoopWatch starts timing this generator's own loop (its part of the
    latency). Returns that watch (None without MEASURE)."""
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    watch: LoopWatch | None = None
    loop = asyncio.get_running_loop()
    command = loop.create_task(asyncio.to_thread(sys.stdin.readline))
    while not command.done() or protocol.is_measure(command.result()):
        if command.done():
            for member in members:
                for sink in member.sinks:
                    sink.state.latencies_ms.clear()
            watch = LoopWatch()
            watch.start()
            command = loop.create_task(asyncio.to_thread(sys.stdin.readline))
        await asyncio.wait({command}, timeout=1.0)
        received = sum(s.state.count for m in members for s in m.sinks)
        cpu = (time.process_time() - cpu0) / max(1e-6, time.monotonic() - wall0)
        _emit(Stats(received=received, cpu=round(cpu, 3)))
        cpu0, wall0 = time.process_time(), time.monotonic()
    return watch


def _result(
    members: list[Member], joins: list[float], failures: list[str], watch: LoopWatch | None
) -> Result:
    states = [(s.state, m.started) for m in members for s in m.sinks]
    return Result(
        joins_ms=joins,
        failures=failures,
        received=sum(s.count for s, _ in states),
        expected=sum(s.expected for s, _ in states),
        latencies_ms=_reservoir([v for s, _ in states for v in s.latencies_ms], LATENCY_SAMPLES),
        jitter_ms=[s.jitter_ms for s, _ in states if s.latencies_ms],
        first_frame_ms=[
            1000 * (s.first_frame_at - t) for s, t in states if s.first_frame_at is not None
        ],
        loop_lag_buckets=watch.lag.counts if watch is not None else None,
        subscriptions=len(states),
        receiving=sum(1 for s, _ in states if s.count > 0),
    )


def _emit(report: protocol.Report) -> None:
    print(protocol.encode(report), flush=True)


def _reservoir(values: list[float], limit: int) -> list[float]:
    return values if len(values) <= limit else random.Random(0).sample(values, limit)
