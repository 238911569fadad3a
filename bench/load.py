"""``remotecase bench load``: drive a server as real clients would, and find where it breaks.

N rooms of a scenario's shape, every participant a real aiortc peer connection:

* ``one_to_one``: inquiries, two participants, both publishing audio and video;
* ``mediation``: four participants, all publishing;
* ``education``: one publisher (the officer) and 30 viewers;
* ``mix``: per ten rooms, six inquiries, three mediations, one education room.

Publishers send pre-encoded VP8 and Opus (encoded once when a generator starts; the load never
encodes), paced in real time, at ``--bitrate``. Each video frame carries a 12-byte trailer (a
marker and the sender's CLOCK_MONOTONIC in ns, the same clock across processes on one host):
subscribers, which count packets without decoding, read it on the frame's last packet and get
the end-to-end latency; jitter is RFC 3550's over frames; loss comes from sequence numbers. Join
time is the signalling round trip, time to first frame the wait for a whole first frame.

Participants are spread over several generator processes; each reports its own CPU, and the
harness says when a generator was the bottleneck. The server's CPU and memory come from its
``/metrics`` (``process_cpu_seconds_total``, ``process_resident_memory_bytes``), so any running
server can be measured (``--url``); without one the harness starts its own.

``--capacity`` raises the number of rooms step by step until loss passes ``--max-loss`` (1%) or
p99 latency passes ``--max-p99-ms`` (50 ms), and reports the knee: the last step within both.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

TRAILER_MAGIC = b"RCLT"
TRAILER = len(TRAILER_MAGIC) + 8
SCENARIOS = ("one_to_one", "mediation", "education", "mix")
EDUCATION_VIEWERS = 30


# -- scenarios -------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoomPlan:
    room: str
    shape: str
    publishers: int
    viewers: int

    @property
    def participants(self) -> int:
        return self.publishers + self.viewers

    @property
    def streams(self) -> int:
        """Forwarded media streams: each publisher's audio and video to everyone else."""
        return 2 * self.publishers * (self.participants - 1)


def plan_rooms(scenario: str, rooms: int, prefix: str) -> list[RoomPlan]:
    shapes = {"one_to_one": (2, 0), "mediation": (4, 0), "education": (1, EDUCATION_VIEWERS)}
    if scenario == "mix":
        # six inquiries, three mediations and one education room in every ten, interleaved
        # so that small steps already mix them
        cycle = ["one_to_one", "mediation", "one_to_one", "education", "one_to_one",
                 "mediation", "one_to_one", "one_to_one", "mediation", "one_to_one"]
        kinds = [cycle[i % len(cycle)] for i in range(rooms)]
    else:
        kinds = [scenario] * rooms
    return [RoomPlan(f"{prefix}-{i}", kind, *shapes[kind]) for i, kind in enumerate(kinds)]


# -- media, encoded once ---------------------------------------------------------------------
def encode_video(bitrate: int, *, seconds: float = 4.0, fps: int = 30, width: int = 640,
                 height: int = 480) -> list[bytes]:
    """VP8 frames of a moving pattern, a keyframe every second; looped by the publishers."""
    import av
    import numpy as np

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.gop_size = fps
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                     "minrate": str(bitrate), "maxrate": str(bitrate)}
    y, x = np.mgrid[0:height, 0:width]
    frames: list[bytes] = []
    rng = np.random.default_rng(1)
    count = int(seconds * fps)
    for i in range(count):
        image = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256,
                          np.full_like(x, (i * 3) % 256)], axis=-1).astype(np.uint8)
        image = np.clip(image + rng.integers(0, 12, image.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if i % fps == 0:
            frame.pict_type = av.video.frame.PictureType.I
        frames.append(b"".join(bytes(p) for p in codec.encode(frame)))
    return [f for f in frames if f]


def encode_audio(seconds: float = 2.0) -> list[bytes]:
    """Opus packets of 20 ms (a tone), looped by the publishers."""
    import av
    import numpy as np

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.format, codec.layout = 48000, "s16", "stereo"
    codec.bit_rate = 32000
    packets: list[bytes] = []
    samples = 960
    for n in range(int(seconds * 50)):
        t = (np.arange(samples) + n * samples) / 48000
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[None], format="s16",
                                           layout="stereo")
        frame.sample_rate = 48000
        frame.pts = n * samples
        packets.extend(bytes(p) for p in codec.encode(frame))
    return packets


def _tracks(video: list[bytes], audio: list[bytes], fps: int) -> tuple[Any, Any]:
    import av
    from aiortc import MediaStreamTrack

    class PreEncoded(MediaStreamTrack):
        def __init__(self, kind: str, frames: list[bytes], rate: int, step: int,
                     trailer: bool) -> None:
            super().__init__()
            self.kind = kind
            self._frames, self._rate, self._step, self._trailer = frames, rate, step, trailer
            self._n = 0
            self._start: float | None = None

        async def recv(self) -> av.Packet:
            if self._start is None:
                self._start = time.monotonic()
            due = self._start + self._n * self._step / self._rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data = self._frames[self._n % len(self._frames)]
            if self._trailer:
                data += TRAILER_MAGIC + time.monotonic_ns().to_bytes(8, "big")
            packet = av.Packet(data)
            packet.pts = self._n * self._step
            packet.time_base = fractions.Fraction(1, self._rate)
            self._n += 1
            return packet

    return (PreEncoded("video", video, 90000, 90000 // fps, True),
            PreEncoded("audio", audio, 48000, 960, False))


# -- what a subscriber measures ----------------------------------------------------------------
@dataclass
class Receiving:
    """One forwarded track at one subscriber."""

    kind: str = "?"
    first: int | None = None
    highest: int = 0
    count: int = 0
    first_frame_at: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    jitter_ms: float = 0.0
    _last_transit: float | None = None

    def packet(self, seq: int, marker: int, payload: bytes) -> None:
        if self.first is None:
            self.first = self.highest = seq
        elif (seq - self.highest) & 0xFFFF < 0x8000:
            self.highest = seq
        self.count += 1
        if marker and len(payload) > TRAILER and payload[-TRAILER:-8] == TRAILER_MAGIC:
            now = time.monotonic_ns()
            sent = int.from_bytes(payload[-8:], "big")
            transit = (now - sent) / 1e6
            self.latencies_ms.append(transit)
            if self._last_transit is not None:  # RFC 3550 6.4.1, in milliseconds
                self.jitter_ms += (abs(transit - self._last_transit) - self.jitter_ms) / 16
            self._last_transit = transit
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()

    @property
    def expected(self) -> int:
        return 0 if self.first is None else ((self.highest - self.first) & 0xFFFF) + 1


class LatencySink:
    """A receiver sink (mediaserver.aiortc_hooks) that measures instead of decoding."""

    def __init__(self, client: Any, mid: str | None) -> None:
        self.state = Receiving()
        client.load_sinks.append(self)

    def on_rtp(self, packet: Any) -> None:
        self.state.packet(packet.sequence_number, packet.marker, packet.payload)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        pass


# -- the generator process -------------------------------------------------------------------
async def _generator(job: dict[str, Any]) -> None:
    """Join every participant of the job, publish where asked, report until told to stop."""
    from mediaserver import aiortc_hooks

    from .peer import PeerClient

    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    fps = job["fps"]
    video = await asyncio.to_thread(encode_video, job["bitrate"], fps=fps)
    audio = await asyncio.to_thread(encode_audio)
    clients: list[Any] = []
    joins: list[float] = []
    started: dict[int, float] = {}
    failures: list[str] = []

    async def bring(spec: dict[str, Any]) -> None:
        client = PeerClient(job["base"], spec["token"], decode=False, sink_factory=LatencySink)
        client.load_sinks = []  # type: ignore[attr-defined]
        clients.append(client)
        began = time.monotonic()
        started[id(client)] = began
        try:
            await client.connect()
            joins.append(1000 * (time.monotonic() - began))
            if spec["publish"]:
                await client.publish(*_tracks(video, audio, fps))
        except Exception as exc:  # reported, not fatal: a refused join is a finding
            failures.append(f"{spec['room']}: {exc}")

    specs = job["participants"]
    for i in range(0, len(specs), 8):  # joins in small waves, as people arrive
        await asyncio.gather(*(bring(s) for s in specs[i:i + 8]))
    print("READY " + json.dumps({"joined": len(joins), "failures": failures}), flush=True)
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    loop = asyncio.get_running_loop()
    stop = loop.create_task(asyncio.to_thread(sys.stdin.readline))
    while not stop.done():
        await asyncio.wait({stop}, timeout=1.0)
        received = sum(s.state.count for c in clients for s in c.load_sinks)
        cpu = (time.process_time() - cpu0) / max(1e-6, time.monotonic() - wall0)
        print("STATS " + json.dumps({"received": received, "cpu": round(cpu, 3)}), flush=True)
        cpu0, wall0 = time.process_time(), time.monotonic()
    states = [(s.state, started[id(c)]) for c in clients for s in c.load_sinks]
    result = {
        "joins_ms": joins, "failures": failures,
        "received": sum(s.count for s, _ in states),
        "expected": sum(s.expected for s, _ in states),
        "latencies_ms": _reservoir([v for s, _ in states for v in s.latencies_ms], 20000),
        "jitter_ms": [s.jitter_ms for s, _ in states if s.latencies_ms],
        "first_frame_ms": [1000 * (s.first_frame_at - t) for s, t in states
                           if s.first_frame_at is not None],
        "subscriptions": len(states),
    }
    print("RESULT " + json.dumps(result), flush=True)
    for client in clients:
        await client.close()


def _reservoir(values: list[float], limit: int) -> list[float]:
    return values if len(values) <= limit else random.Random(0).sample(values, limit)


# -- the harness -----------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 2)


async def _metrics(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        key = name.split("{")[0]
        if key == "remotecase_sfu_forwarded_packets_total":
            out["forwarded"] = out.get("forwarded", 0.0) + float(value)
        elif key in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
            out[key] = float(value)
    return out


async def _read(proc: asyncio.subprocess.Process, prefix: str, limit: float) -> str:
    """The next line the generator prints with this prefix, within ``limit`` seconds."""
    assert proc.stdout is not None
    async with asyncio.timeout(limit):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"a generator exited before {prefix}")
            if line.startswith(prefix + " "):
                return line[len(prefix) + 1:]


async def run_step(http: aiohttp.ClientSession, base: str, plans: list[RoomPlan], *,
                   bitrate: int, fps: int, seconds: float, warmup: float, generators: int,
                   progress: bool) -> dict[str, Any]:
    """One load level: join everyone, measure a window, leave."""
    participants = []
    for plan in plans:
        for i in range(plan.participants):
            async with http.post(f"{base}/dev/token",
                                 json={"room": plan.room, "name": f"load{i}"}) as r:
                if r.status != 200:
                    raise RuntimeError("the server gives no development tokens (auth.dev_join "
                                       f"off?): {r.status} {await r.text()}")
                token = (await r.json())["token"]
            participants.append({"room": plan.room, "token": token,
                                 "publish": i < plan.publishers})
    jobs: list[list[dict[str, Any]]] = [[] for _ in range(generators)]
    for n, participant in enumerate(participants):
        jobs[n % generators].append(participant)
    procs = []
    try:
        for job in jobs:
            if not job:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.load", "generator",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"base": base, "participants": job, "bitrate": bitrate,
                                         "fps": fps}).encode() + b"\n")
            await proc.stdin.drain()
            procs.append(proc)
        ready = [json.loads(await _read(p, "READY", 180)) for p in procs]
        failures = [f for r in ready for f in r["failures"]]
        await asyncio.sleep(warmup)
        m0, t0 = await _metrics(http, base), time.monotonic()
        generator_cpu: list[float] = []
        end = t0 + seconds
        while time.monotonic() < end:
            stats = [json.loads(await _read(p, "STATS", 10)) for p in procs]
            generator_cpu.append(max(s["cpu"] for s in stats))
            if progress:
                now = await _metrics(http, base)
                elapsed = max(1e-6, time.monotonic() - t0)
                # one line rewritten on a terminal, a line per second in a log
                print("\r" if sys.stderr.isatty() else "\n", end="", file=sys.stderr)
                print(f"  {time.monotonic() - t0:5.1f}/{seconds:.0f} s  forwarded "
                      f"{(now.get('forwarded', 0) - m0.get('forwarded', 0)) / elapsed:8.0f}/s"
                      f"  server CPU {100 * (now['process_cpu_seconds_total'] - m0['process_cpu_seconds_total']) / elapsed:5.1f}%"  # noqa: E501
                      f"  generators up to {100 * generator_cpu[-1]:5.1f}%", end="",
                      file=sys.stderr, flush=True)
        m1, t1 = await _metrics(http, base), time.monotonic()
        if progress:
            print(file=sys.stderr)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"STOP\n")
            await proc.stdin.drain()
        results = [json.loads(await _read(p, "RESULT", 60)) for p in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    elapsed = t1 - t0
    forwarded = m1.get("forwarded", 0) - m0.get("forwarded", 0)
    cpu = m1["process_cpu_seconds_total"] - m0["process_cpu_seconds_total"]
    received = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    latencies = [v for r in results for v in r["latencies_ms"]]
    busiest = max(generator_cpu) if generator_cpu else 0.0
    jitters = [x for r in results for x in r["jitter_ms"]]
    return {
        "rooms": len(plans), "participants": len(participants),
        "streams": sum(p.streams for p in plans),
        "join_failures": failures,
        "seconds": round(elapsed, 2),
        "forwarded_pps": round(forwarded / elapsed, 1),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_packet": round(1e6 * cpu / forwarded, 2) if forwarded else None,
        "server_rss_mb": round(m1.get("process_resident_memory_bytes", 0) / 2**20, 1),
        "loss_ratio": round(max(0.0, 1 - received / expected), 5) if expected else None,
        "latency_ms": {f"p{q}": _percentile(latencies, q) for q in (50, 90, 99)}
        | {"max": round(max(latencies), 2) if latencies else None},
        "jitter_ms_mean": round(sum(jitters) / len(jitters), 2) if jitters else None,
        "join_ms": {f"p{q}": _percentile([v for r in results for v in r["joins_ms"]], q)
                    for q in (50, 99)},
        "first_frame_ms": {f"p{q}": _percentile(
            [v for r in results for v in r["first_frame_ms"]], q) for q in (50, 99)},
        "generator_cpu_max": round(busiest, 3),
        # a generator process over 85% of a core may be what limits the numbers
        "generator_bound": busiest > 0.85,
    }


def _loads(start: int, limit: int) -> Iterator[int]:
    rooms = start
    while rooms <= limit:
        yield rooms
        rooms = max(rooms + 1, int(rooms * 1.5))


async def run_load(*, url: str | None, scenario: str, rooms: int, bitrate: int, fps: int,
                   seconds: float, warmup: float, generators: int, capacity: bool,
                   max_rooms: int, max_loss: float, max_p99_ms: float,
                   progress: bool = True) -> dict[str, Any]:
    server: asyncio.subprocess.Process | None = None
    tmp: Path | None = None
    base = url.rstrip("/") if url else ""
    try:
        if not url:
            from .forwarding import free_port

            tmp = Path(tempfile.mkdtemp(prefix="remotecase-load-"))
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {**os.environ, "REMOTECASE_SERVER__PORT": str(port),
                   "REMOTECASE_STORAGE__DATA_DIR": str(tmp / "var"),
                   "REMOTECASE_KEYS__DIR": str(tmp / "keys"),
                   "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
                   "REMOTECASE_VERIFIER__ENABLED": "false",
                   "REMOTECASE_LOG__LEVEL": "WARNING"}
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "control.cli", "serve", env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"no server answers at {base}")
            steps = []
            levels = list(_loads(rooms, max_rooms)) if capacity else [rooms]
            knee: dict[str, Any] | None = None
            for n, level in enumerate(levels):
                if progress:
                    print(f"step {n + 1}: {level} {scenario} room(s)", file=sys.stderr)
                step = await run_step(
                    http, base, plan_rooms(scenario, level, f"load{n}"), bitrate=bitrate,
                    fps=fps, seconds=seconds, warmup=warmup, generators=generators,
                    progress=progress)
                steps.append(step)
                p99 = step["latency_ms"]["p99"]
                within = (step["loss_ratio"] is not None and step["loss_ratio"] <= max_loss
                          and p99 is not None and p99 <= max_p99_ms
                          and not step["join_failures"])
                step["within_limits"] = within
                if within:
                    knee = step
                elif capacity:
                    break
    finally:
        if server is not None and server.returncode is None:
            server.terminate()
            await server.wait()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {
        "scenario": scenario, "bitrate": bitrate, "fps": fps, "steps": steps,
        "limits": {"max_loss": max_loss, "max_p99_ms": max_p99_ms},
    }
    if capacity:
        report["knee"] = None if knee is None else {
            k: knee[k] for k in ("rooms", "participants", "streams", "forwarded_pps",
                                 "server_cpu_percent", "latency_ms", "loss_ratio")}
    return report


# -- plots -----------------------------------------------------------------------------------
def plot(report: dict[str, Any], path: Path) -> None:
    """CPU per stream, latency percentiles and loss against load (streams), one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = report["steps"]
    streams = [s["streams"] for s in steps]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    cpu_per_stream = [s["server_cpu_percent"] / max(1, s["streams"]) for s in steps]
    axes[0].plot(streams, cpu_per_stream, "o-")
    axes[0].set(title="server CPU per stream", xlabel="forwarded streams",
                ylabel="% of a core per stream")
    for q in ("p50", "p90", "p99"):
        axes[1].plot(streams, [s["latency_ms"][q] for s in steps], "o-", label=q)
    axes[1].axhline(report["limits"]["max_p99_ms"], color="red", linestyle=":",
                    label="p99 limit")
    axes[1].set(title="end-to-end latency", xlabel="forwarded streams", ylabel="ms")
    axes[1].legend()
    axes[2].plot(streams, [100 * (s["loss_ratio"] or 0) for s in steps], "o-")
    axes[2].axhline(100 * report["limits"]["max_loss"], color="red", linestyle=":")
    axes[2].set(title="loss", xlabel="forwarded streams", ylabel="%")
    figure.suptitle(f"remotecase bench load: {report['scenario']}, "
                    f"{report['bitrate'] // 1000} kbps video")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _print(report: dict[str, Any]) -> None:
    print(f"{'rooms':>6} {'streams':>8} {'fwd pkt/s':>10} {'CPU %':>6} {'us/pkt':>7} "
          f"{'RSS MB':>7} {'loss %':>7} {'p50':>6} {'p99':>6} {'join p99':>9} "
          f"{'ttff p99':>9} {'gen CPU':>8}")
    for s in report["steps"]:
        print(f"{s['rooms']:>6} {s['streams']:>8} {s['forwarded_pps']:>10} "
              f"{s['server_cpu_percent']:>6} {s['server_cpu_us_per_packet']!s:>7} "
              f"{s['server_rss_mb']:>7} {100 * (s['loss_ratio'] or 0):>7.2f} "
              f"{s['latency_ms']['p50']!s:>6} {s['latency_ms']['p99']!s:>6} "
              f"{s['join_ms']['p99']!s:>9} {s['first_frame_ms']['p99']!s:>9} "
              f"{100 * s['generator_cpu_max']:>7.0f}%")
        if s["generator_bound"]:
            print("       a generator process used more than 85% of a core: the numbers may "
                  "say more about the generator than the server (use more --generators or "
                  "another machine)")
        for failure in s["join_failures"][:5]:
            print(f"       join failed: {failure}")
    if "knee" in report:
        knee = report["knee"]
        if knee is None:
            print("knee: even the first step exceeded the limits")
        else:
            print(f"knee: {knee['rooms']} rooms, {knee['streams']} streams, "
                  f"{knee['forwarded_pps']} forwarded packets/s at "
                  f"{knee['server_cpu_percent']}% server CPU")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="a running server (with auth.dev_join); default: start one")
    parser.add_argument("--scenario", choices=SCENARIOS, default="one_to_one")
    parser.add_argument("--rooms", type=int, default=2, help="rooms (the first step with "
                        "--capacity)")
    parser.add_argument("--bitrate", type=int, default=500_000, help="video bits per second")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--capacity", action="store_true", help="raise the load to the knee")
    parser.add_argument("--max-rooms", type=int, default=200)
    parser.add_argument("--max-loss", type=float, default=0.01)
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--plot", help="PNG: CPU per stream, latency and loss against load")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")


def main(args: argparse.Namespace) -> int:
    if args.rooms < 1 or args.seconds <= 0 or args.generators < 1 or not 1 <= args.fps <= 60:
        print("bench load: --rooms >= 1, --seconds > 0, --generators >= 1, --fps 1-60",
              file=sys.stderr)
        return 2
    report = asyncio.run(run_load(
        url=args.url, scenario=args.scenario, rooms=args.rooms, bitrate=args.bitrate,
        fps=args.fps, seconds=args.seconds, warmup=args.warmup, generators=args.generators,
        capacity=args.capacity, max_rooms=args.max_rooms, max_loss=args.max_loss,
        max_p99_ms=args.max_p99_ms))
    _print(report)
    if args.plot:
        plot(report, Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["generator"]:
        asyncio.run(_generator(json.loads(sys.stdin.readline())))
    else:
        parser = argparse.ArgumentParser(prog="python -m bench.load")
        add_arguments(parser)
        raise SystemExit(main(parser.parse_args()))
