"""One load level: fill the rooms from generator processes, measure a window, leave.

Participants are spread over several generator processes, rooms whole (a room's participants
share one process). After a warm-up the harness samples the server at both ends of the measured
window and the generators report what their subscribers received (:mod:`bench.load.protocol`);
the step's figures come from both (:func:`summarise`).
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from . import metrics, protocol
from .plan import RoomPlan
from .protocol import Job, Participant, R, Ready, Result, RoomJob, Stats
from .server import Target

GENERATOR_BOUND = 0.85  # a generator process over this share of a core may limit the numbers


async def room_jobs(
    http: aiohttp.ClientSession, target: Target, plans: list[RoomPlan]
) -> list[RoomJob]:
    """The rooms as generators get them: a development token per participant from remotecase
    (Janus takes none), and who publishes."""
    rooms = []
    for plan in plans:
        participants = []
        for i in range(plan.participants):
            token = ""
            if target.kind == "remotecase":
                async with http.post(
                    f"{target.base}/dev/token", json={"room": plan.room, "name": f"load{i}"}
                ) as r:
                    if r.status != 200:
                        raise RuntimeError(
                            "the server gives no development tokens "
                            f"(auth.dev_join off?): {r.status} {await r.text()}"
                        )
                    token = (await r.json())["token"]
            participants.append(Participant(token=token, publish=i < plan.publishers))
        rooms.append(RoomJob(room=plan.room, participants=participants))
    return rooms


def spread(rooms: list[RoomJob], generators: int) -> list[list[RoomJob]]:
    """The largest rooms first, each to the least loaded generator."""
    jobs: list[list[RoomJob]] = [[] for _ in range(generators)]
    for room in sorted(rooms, key=lambda r: -len(r.participants)):
        min(jobs, key=lambda j: sum(len(r.participants) for r in j)).append(room)
    return jobs


class Generator:
    """One generator process (``python -m bench.load generator``), spoken to in the line
    protocol."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, job: Job) -> Generator:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.load",
            "generator",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )  # a RESULT line carries thousands of latency samples
        generator = cls(proc)
        await generator._write(protocol.encode_job(job))
        return generator

    async def send(self, command: str) -> None:
        """``MEASURE`` or ``STOP``."""
        await self._write(command.encode() + b"\n")

    async def read(self, kind: type[R], limit: float) -> R:
        """The next report of this kind the generator prints, within ``limit`` seconds."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(limit):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"a generator exited before {kind.TAG}")
                report = protocol.decode(line, kind)
                if report is not None:
                    return report

    async def skip_stats(self) -> None:
        """Drop the STATS lines that piled up (during the warm-up)."""
        while True:
            try:
                await asyncio.wait_for(self.read(Stats, 0.05), 0.1)
            except TimeoutError:
                break

    async def wait_exit(self, limit: float) -> None:
        """It exits on its own after STOP (or the end of its stdin); killed after ``limit``."""
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.proc.wait(), limit)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()


@dataclass
class Window:
    """The measured window: the server sampled at both ends, what the subscribers received."""

    m0: dict[str, float]
    t0: float
    m1: dict[str, float] = field(default_factory=dict)
    t1: float = 0.0
    received0: list[int] | None = None  # per generator, at its first STATS in the window
    r0_at: float = 0.0
    received1: list[int] = field(default_factory=list)  # ... and at its last
    r1_at: float = 0.0
    generator_cpu: list[float] = field(default_factory=list)  # the busiest, per second


async def run_step(
    http: aiohttp.ClientSession,
    target: Target,
    plans: list[RoomPlan],
    *,
    bitrate: int,
    fps: int,
    seconds: float,
    warmup: float,
    generators: int,
    progress: bool,
    receivers: str = "light",
    cpus: list[int] | None = None,
) -> dict[str, Any]:
    """One load level: fill the rooms, measure a window, leave. Rooms are spread over the
    generator processes whole, so that a room's participants share one process."""
    rooms = await room_jobs(http, target, plans)
    procs: list[Generator] = []
    try:
        for rooms_of_one in spread(rooms, generators):
            if not rooms_of_one:
                continue
            procs.append(
                await Generator.start(
                    Job(
                        base=target.base,
                        server=target.kind,
                        address=target.address,
                        rooms=rooms_of_one,
                        bitrate=bitrate,
                        fps=fps,
                        receivers=receivers,
                        cpus=cpus,
                    )
                )
            )
        ready = [await p.read(Ready, 300) for p in procs]
        failures = [f for r in ready for f in r.failures]
        await asyncio.sleep(warmup)
        for proc in procs:  # what piled up during the warm-up
            await proc.skip_stats()
        for proc in procs:
            await proc.send(protocol.MEASURE)
        window = await _measure(http, target, procs, seconds, progress)
        for proc in procs:
            await proc.send(protocol.STOP)
        results = [await p.read(Result, 60) for p in procs]
    finally:
        for proc in procs:
            await proc.wait_exit(30)
    return summarise(target, plans, failures, window, results)


async def _measure(
    http: aiohttp.ClientSession,
    target: Target,
    procs: list[Generator],
    seconds: float,
    progress: bool,
) -> Window:
    window = Window(await target.sample(http), time.monotonic())
    window.r0_at = window.r1_at = time.monotonic()
    end = window.t0 + seconds
    while time.monotonic() < end:
        stats = [await p.read(Stats, 10) for p in procs]
        window.received1, window.r1_at = [s.received for s in stats], time.monotonic()
        if window.received0 is None:
            window.received0, window.r0_at = window.received1, window.r1_at
        window.generator_cpu.append(max(s.cpu for s in stats))
        if progress:
            await _progress(http, target, window, seconds)
    window.m1, window.t1 = await target.sample(http), time.monotonic()
    if progress:
        print(file=sys.stderr)
    return window


async def _progress(
    http: aiohttp.ClientSession, target: Target, window: Window, seconds: float
) -> None:
    assert window.received0 is not None
    now = await target.sample(http)
    elapsed = max(1e-6, time.monotonic() - window.t0)
    received = sum(window.received1) - sum(window.received0)
    print("\r" if sys.stderr.isatty() else "\n", end="", file=sys.stderr)
    print(
        f"  {target.kind} {time.monotonic() - window.t0:5.1f}/{seconds:.0f} s  "
        f"received {received / elapsed:8.0f}/s  "
        f"server CPU {100 * (now['cpu'] - window.m0['cpu']) / elapsed:5.1f}%  "
        f"generators up to {100 * window.generator_cpu[-1]:5.1f}%",
        end="",
        file=sys.stderr,
        flush=True,
    )


def summarise(
    target: Target,
    plans: list[RoomPlan],
    failures: list[str],
    window: Window,
    results: list[Result],
) -> dict[str, Any]:
    """The step's figures, as ``--json`` prints them."""
    m0, m1 = window.m0, window.m1
    elapsed = window.t1 - window.t0
    cpu = m1["cpu"] - m0["cpu"]
    # packets the subscribers received in the window: the same measure for every server
    delivered = sum(window.received1) - sum(window.received0) if window.received0 is not None else 0
    delivered_pps = (
        delivered / (window.r1_at - window.r0_at) if window.r1_at > window.r0_at else 0.0
    )
    forwarded = m1["forwarded"] - m0["forwarded"] if "forwarded" in m1 else None
    received = sum(r.received for r in results)
    expected = sum(r.expected for r in results)
    latencies = [v for r in results for v in r.latencies_ms]
    busiest = max(window.generator_cpu) if window.generator_cpu else 0.0
    jitters = [x for r in results for x in r.jitter_ms]
    packets = forwarded if forwarded else delivered_pps * elapsed
    return {
        "server": target.kind,
        "rooms": len(plans),
        "participants": sum(p.participants for p in plans),
        "streams": sum(p.streams for p in plans),
        # forwarded streams that reached a subscriber (one per track per subscriber)
        "streams_received": sum(r.receiving for r in results),
        "join_failures": failures,
        "seconds": round(elapsed, 2),
        "forwarded_pps": round(forwarded / elapsed, 1) if forwarded is not None else None,
        "received_pps": round(delivered_pps, 1),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_packet": round(1e6 * cpu / packets, 2) if packets else None,
        "server_rss_mb": round(m1.get("rss", 0) / 2**20, 1),
        "loss_ratio": round(max(0.0, 1 - received / expected), 5) if expected else None,
        "latency_ms": {f"p{q}": metrics.percentile(latencies, q) for q in (50, 90, 99)}
        | {"max": round(max(latencies), 2) if latencies else None},
        "jitter_ms_mean": round(sum(jitters) / len(jitters), 2) if jitters else None,
        "join_ms": {
            f"p{q}": metrics.percentile([v for r in results for v in r.joins_ms], q)
            for q in (50, 99)
        },
        "first_frame_ms": {
            f"p{q}": metrics.percentile([v for r in results for v in r.first_frame_ms], q)
            for q in (50, 99)
        },
        # how late the server's event loop ran (every packet may wait that long) and how long
        # its garbage collector stopped it, in the window (control/loopwatch.py)
        "server_loop_lag": metrics.histogram_window(m0, m1, "lag"),
        "server_gc_pause_ms": round(1000 * (m1["gc_pause"] - m0.get("gc_pause", 0.0)), 1)
        if "gc_pause" in m1
        else None,
        "server_gc_pauses": metrics.histogram_window(m0, m1, "gc"),
        # the generators' loops over the same window: the clients' part of end-to-end latency
        "generator_loop_lag": metrics.bucket_summary([r.loop_lag_buckets for r in results]),
        "server_gc_collections": [int(m1[f"gc{g}"] - m0.get(f"gc{g}", 0.0)) for g in range(3)]
        if "gc2" in m1
        else None,
        "generator_cpu_max": round(busiest, 3),
        "generator_bound": busiest > GENERATOR_BOUND,
    }
