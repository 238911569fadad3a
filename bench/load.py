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
the end-to-end latency over the measured window; jitter is RFC 3550's over frames; loss comes
from sequence numbers. Join time is the signalling round trip, time to first frame the wait for
a whole first frame. By default subscribers are light (:func:`light_receive`): they count each
packet in the socket's callback and decrypt only what they read, so that a generator costs a
fraction of what the server does per packet.

Participants are spread over several generator processes; each reports its own CPU, and the
harness says when a generator was the bottleneck. A server the harness starts runs on one core
and the generators on the others (``--no-pin`` to share), so that its CPU share and its latency
are its own. From the server's ``/metrics`` each step also reports how late its event loop ran
and how long its garbage collector paused it (``control/loopwatch.py``): the latency the server
itself adds, apart from the generators'. The server's CPU and memory come from its
``/metrics`` (``process_cpu_seconds_total``, ``process_resident_memory_bytes``), so any running
server can be measured (``--url``); without one the harness starts its own.

``--capacity`` raises the number of rooms step by step until loss passes ``--max-loss`` (1%) or
p99 latency passes ``--max-p99-ms`` (50 ms), and reports the knee: the last step within both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import gc
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from control.loopwatch import BUCKETS, LoopWatch
from mediaserver.rtp import is_vp8_keyframe_start as _IS_VP8_KEYFRAME

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

    from .peer import tone_frame

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.format, codec.layout = 48000, "s16", "stereo"
    codec.bit_rate = 32000
    packets: list[bytes] = []
    for n in range(int(seconds * 50)):
        packets.extend(bytes(p) for p in codec.encode(tone_frame(n)))
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
    first_frame_at: float | None = None  # end of the first whole keyframe
    keyframe_started: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    jitter_ms: float = 0.0
    _last_transit: float | None = None

    def packet(self, seq: int, marker: int, payload: bytes) -> None:
        if self.first is None:
            self.first = self.highest = seq
        elif (seq - self.highest) & 0xFFFF < 0x8000:
            self.highest = seq
        self.count += 1
        if not self.keyframe_started and _IS_VP8_KEYFRAME(payload):
            self.keyframe_started = True
        if marker and len(payload) > TRAILER and payload[-TRAILER:-8] == TRAILER_MAGIC:
            now = time.monotonic_ns()
            sent = int.from_bytes(payload[-8:], "big")
            transit = (now - sent) / 1e6
            self.latencies_ms.append(transit)
            if self._last_transit is not None:  # RFC 3550 6.4.1, in milliseconds
                self.jitter_ms += (abs(transit - self._last_transit) - self.jitter_ms) / 16
            self._last_transit = transit
            # a subscriber sees a picture once a keyframe has arrived whole; a server that
            # forwards from any packet makes its subscribers wait for one just the same
            if self.first_frame_at is None and self.keyframe_started:
                self.first_frame_at = time.monotonic()

    @property
    def expected(self) -> int:
        return 0 if self.first is None else ((self.highest - self.first) & 0xFFFF) + 1


class LatencySink:
    """A receiver sink (mediaserver.aiortc_hooks) that measures instead of decoding; it adds
    itself to its owner's ``load_sinks`` (a PeerClient) or ``sinks`` (a Janus member).

    With ``LIGHT`` (the default, ``--receivers light``), the first packet that reaches it the
    ordinary way installs :func:`light_receive` on its peer connection, and from then on its
    packets are counted straight from the datagram."""

    LIGHT = True

    def __init__(self, owner: Any, mid: str | None, pc: Any = None) -> None:
        self.state = Receiving()
        self.video: bool | None = None
        sinks = owner.sinks if isinstance(owner, _Member) else owner.load_sinks
        sinks.append(self)
        self._pc = pc if pc is not None else getattr(owner, "subscriber_pc", None)

    def on_rtp(self, packet: Any) -> None:
        self.state.packet(packet.sequence_number, packet.marker, packet.payload)
        if self.LIGHT and self._pc is not None:
            light_receive(self._pc)

    def on_datagram(self, data: bytes, session: Any, receiver: Any) -> None:
        """One SRTP packet of this track, still encrypted. Sequence number and marker are in
        the clear; only what must be read is decrypted: the frame's last packet (the latency
        trailer) and, until it arrives, the start of the first keyframe."""
        if self.video is None:
            self.video = getattr(receiver.track, "kind", "video") == "video"
        state = self.state
        marker = data[1] >> 7
        payload = b""
        if marker or (self.video and not state.keyframe_started):
            try:
                payload = _rtp_payload(session.unprotect(data))
            except Exception:  # not authentic, or replayed: not counted
                return
        state.packet((data[2] << 8) | data[3], marker, payload)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        pass


def _rtp_payload(packet: bytes) -> bytes:
    """The payload of a decrypted RTP packet (RFC 3550 5.1: CSRCs, extension, padding)."""
    start = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10 and len(packet) >= start + 4:
        start += 4 + 4 * int.from_bytes(packet[start + 2:start + 4], "big")
    end = len(packet) - (packet[-1] if packet[0] & 0x20 and packet else 0)
    return packet[start:end] if start <= end else b""


def light_receive(pc: Any) -> None:
    """Count a subscriber's media packets where they arrive, in the UDP socket's callback.

    aiortc hands every received packet through a queue, a coroutine, SRTP, a parser, a router,
    a NACK generator and a bandwidth estimator: about ten times what the server spends to
    forward it, so with ordinary receivers the generators run out of CPU long before the server
    does. Here a packet of a known SSRC goes straight to its sink (see
    :meth:`LatencySink.on_datagram`); everything else (STUN, DTLS, RTCP, unknown SSRCs) takes
    aiortc's path as before. Subscribers so send no receiver reports and no NACKs: loss is
    counted before any retransmission. Idempotent; aiortc and aioice private parts, as listed
    in mediaserver/aiortc_hooks.py."""
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls is None or id(dtls) in seen or getattr(dtls, "_bench_light", False):
            continue
        seen.add(id(dtls))
        connection = getattr(dtls.transport, "_connection", None)
        if connection is None or not connection._protocols:
            continue
        dtls._bench_light = True
        table = dtls._rtp_router.ssrc_table
        for protocol in connection._protocols:
            protocol.datagram_received = _light_handler(dtls, table,
                                                        protocol.datagram_received)


def _light_handler(dtls: Any, table: dict[int, Any], original: Any) -> Any:
    def datagram_received(data: bytes, addr: Any) -> None:
        # RTP: version 2, and not RTCP (packet types 192-223 in the second byte)
        if len(data) > 12 and 127 < data[0] < 192 and not 191 < data[1] < 224:
            receiver = table.get(int.from_bytes(data[8:12], "big"))
            sink = getattr(receiver, "_sfu_sink", None)
            session = dtls._rx_srtp
            if session is not None and isinstance(sink, LatencySink):
                sink.on_datagram(data, session, receiver)
                return
        original(data, addr)

    return datagram_received


# -- the generator process -------------------------------------------------------------------
@dataclass
class _Member:
    """One participant in a generator: what it receives, and when it started joining."""

    started: float
    sinks: list[LatencySink] = field(default_factory=list)
    closers: list[Any] = field(default_factory=list)


async def _remotecase_room(job: dict[str, Any], room: dict[str, Any], media: tuple[Any, ...],
                           members: list[_Member], joins: list[float]) -> None:
    from .peer import PeerClient

    video, audio, fps = media

    async def bring(spec: dict[str, Any]) -> None:
        member = _Member(time.monotonic())
        members.append(member)
        client = PeerClient(job["base"], spec["token"], decode=False, sink_factory=LatencySink)
        client.load_sinks = member.sinks  # type: ignore[attr-defined]
        member.closers.append(client.close)
        await client.connect()
        joins.append(1000 * (time.monotonic() - member.started))
        if spec["publish"]:
            await client.publish(*_tracks(video, audio, fps))

    await asyncio.gather(*(bring(s) for s in room["participants"]))


async def _janus_room(job: dict[str, Any], room: dict[str, Any], media: tuple[Any, ...],
                      members: list[_Member], joins: list[float]) -> None:
    """The same room in Janus's VideoRoom: publishers join with an offer; then everyone
    subscribes to every other publisher's feed in one peer connection."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from mediaserver.aiortc_hooks import SfuRtpReceiver

    from .janus import JanusSession
    from .peer import _config

    video, audio, fps = media
    http = job["_http"]
    number = 1000 + zlib.crc32(room["room"].encode()) % 10**9
    specs = room["participants"]
    sessions = []
    for _ in specs:
        session = JanusSession(http, job["base"])
        await session.create()
        sessions.append(session)
    admin = await sessions[0].attach()
    await sessions[0].message(admin, {"request": "create", "room": number,
                                      "publishers": len(specs), "videocodec": "vp8",
                                      "audiocodec": "opus", "bitrate": 0})
    feeds: dict[int, int] = {}  # participant index -> feed ID

    async def publish(i: int) -> None:
        member = _Member(time.monotonic())
        members.append(member)
        session = sessions[i]
        member.closers.append(session.close)
        pc = RTCPeerConnection(_config())
        member.closers.append(pc.close)
        for track in _tracks(video, audio, fps):
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        handle = await session.attach()
        event = await session.message(handle, {
            "request": "joinandconfigure", "room": number, "ptype": "publisher",
            "display": f"p{i}"}, {"type": "offer", "sdp": pc.localDescription.sdp})
        await session.candidates_done(handle)
        await pc.setRemoteDescription(RTCSessionDescription(event["jsep"]["sdp"], "answer"))
        joins.append(1000 * (time.monotonic() - member.started))
        for _ in range(200):  # a feed can be subscribed once its media is up
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        feeds[i] = int(event["plugindata"]["data"]["id"])
        member.started = time.monotonic()  # what follows is the subscription

    async def subscribe(i: int) -> None:
        others = [feed for j, feed in feeds.items() if j != i]
        if i not in feeds:
            member = _Member(time.monotonic())
            members.append(member)
            member.closers.append(sessions[i].close)
        else:
            member = next(m for m in members if sessions[i].close in m.closers)
        if not others:
            return
        session = sessions[i]
        pc = RTCPeerConnection(_config())
        member.closers.append(pc.close)
        handle = await session.attach()
        began = time.monotonic()
        event = await session.message(handle, {
            "request": "join", "room": number, "ptype": "subscriber",
            "streams": [{"feed": feed} for feed in others]})
        await pc.setRemoteDescription(RTCSessionDescription(event["jsep"]["sdp"], "offer"))
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            assert isinstance(receiver, SfuRtpReceiver), "aiortc_hooks.install() first"
            receiver.attach_sink(LatencySink(member, transceiver.mid, pc))
        await pc.setLocalDescription(await pc.createAnswer())
        await session.message(handle, {"request": "start"},
                              {"type": "answer", "sdp": pc.localDescription.sdp})
        await session.candidates_done(handle)
        if i not in feeds:
            joins.append(1000 * (time.monotonic() - began))

    await asyncio.gather(*(publish(i) for i, spec in enumerate(specs) if spec["publish"]))
    await asyncio.gather(*(subscribe(i) for i in range(len(specs))))


async def _generator(job: dict[str, Any]) -> None:
    """Join every room of the job, publish where asked, report until told to stop."""
    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses([job.get("address", "127.0.0.1")])
    LatencySink.LIGHT = job.get("receivers", "light") == "light"
    if job.get("cpus"):
        os.sched_setaffinity(0, set(job["cpus"]))
    fps = job["fps"]
    video = await asyncio.to_thread(encode_video, job["bitrate"], fps=fps)
    audio = await asyncio.to_thread(encode_audio)
    members: list[_Member] = []
    joins: list[float] = []
    failures: list[str] = []
    bring_room = _janus_room if job.get("server") == "janus" else _remotecase_room
    # no cap on connections: every Janus session holds one in its long poll, and aiohttp's
    # default of 100 made the 101st participant's requests wait behind them
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        job["_http"] = http

        async def room(spec: dict[str, Any]) -> None:
            try:
                await bring_room(job, spec, (video, audio, fps), members, joins)
            except Exception as exc:  # reported, not fatal: a refused join is a finding
                failures.append(f"{spec['room']}: {type(exc).__name__}: {exc}")

        rooms = job["rooms"]
        for i in range(0, len(rooms), 4):  # rooms fill in small waves, as people arrive
            await asyncio.gather(*(room(r) for r in rooms[i:i + 4]))
        # A full collection over a generator's hundreds of peer connections stops it for
        # hundreds of milliseconds, which its subscribers would report as the server's latency:
        # collect once now, and not again until the window is over.
        gc.collect()
        gc.freeze()
        gc.disable()
        print("READY " + json.dumps({"joined": len(joins), "failures": failures}), flush=True)
        cpu0 = time.process_time()
        wall0 = time.monotonic()
        watch: LoopWatch | None = None
        loop = asyncio.get_running_loop()
        stop = loop.create_task(asyncio.to_thread(sys.stdin.readline))
        while not stop.done() or stop.result().strip() == "MEASURE":
            if stop.done():  # the window starts: latencies from the warm-up are not in it
                for member in members:
                    for sink in member.sinks:
                        sink.state.latencies_ms.clear()
                # how late this generator's own loop runs: its part of the latency
                watch = LoopWatch()
                watch.start()
                stop = loop.create_task(asyncio.to_thread(sys.stdin.readline))
            await asyncio.wait({stop}, timeout=1.0)
            received = sum(s.state.count for m in members for s in m.sinks)
            cpu = (time.process_time() - cpu0) / max(1e-6, time.monotonic() - wall0)
            print("STATS " + json.dumps({"received": received, "cpu": round(cpu, 3)}),
                  flush=True)
            cpu0, wall0 = time.process_time(), time.monotonic()
        states = [(s.state, m.started) for m in members for s in m.sinks]
        result = {
            "joins_ms": joins, "failures": failures,
            "received": sum(s.count for s, _ in states),
            "expected": sum(s.expected for s, _ in states),
            "latencies_ms": _reservoir([v for s, _ in states for v in s.latencies_ms], 10000),
            "jitter_ms": [s.jitter_ms for s, _ in states if s.latencies_ms],
            "first_frame_ms": [1000 * (s.first_frame_at - t) for s, t in states
                               if s.first_frame_at is not None],
            "loop_lag_buckets": watch.lag.counts if watch is not None else None,
            "subscriptions": len(states),
            "receiving": sum(1 for s, _ in states if s.count > 0),
        }
        print("RESULT " + json.dumps(result), flush=True)
        if watch is not None:
            await watch.close()
        gc.enable()
        for member in members:
            for close in member.closers:
                with contextlib.suppress(Exception):
                    await close()


def _reservoir(values: list[float], limit: int) -> list[float]:
    return values if len(values) <= limit else random.Random(0).sample(values, limit)


# -- the harness -----------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)], 2)


@dataclass
class Target:
    """The server under load: where it answers, what it is, and how to read its CPU."""

    kind: str  # "remotecase" | "janus"
    base: str
    pid: int | None = None  # Janus's process (its CPU comes from /proc)
    address: str = "127.0.0.1"  # the address clients and server meet on

    async def sample(self, http: aiohttp.ClientSession) -> dict[str, float]:
        """CPU seconds, resident bytes, and forwarded packets when the server counts them."""
        if self.kind == "janus":
            from .janus import process_cpu_seconds, process_rss_bytes

            assert self.pid is not None
            return {"cpu": process_cpu_seconds(self.pid), "rss": process_rss_bytes(self.pid)}
        async with http.get(f"{self.base}/metrics") as r:
            text = await r.text()
        out: dict[str, float] = {"forwarded": 0.0}
        for line in text.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            name, value = line.rsplit(" ", 1)
            key = name.split("{")[0]
            if key == "remotecase_sfu_forwarded_packets_total":
                out["forwarded"] += float(value)
            elif key == "process_cpu_seconds_total":
                out["cpu"] = float(value)
            elif key == "process_resident_memory_bytes":
                out["rss"] = float(value)
            elif key in _HISTOGRAMS and 'le="' in name:  # summed over workers, as counters are
                bound = name.split('le="')[1].split('"')[0]
                sample = f"{_HISTOGRAMS[key]}:{bound}"
                out[sample] = out.get(sample, 0.0) + float(value)
            elif key == "python_gc_collections_total" and 'generation="' in name:
                generation = name.split('generation="')[1].split('"')[0]
                out[f"gc{generation}"] = out.get(f"gc{generation}", 0.0) + float(value)
            elif key == "python_gc_pause_seconds_sum":
                out["gc_pause"] = out.get("gc_pause", 0.0) + float(value)
        return out


def _bucket_summary(per_generator: list[list[int] | None]) -> dict[str, Any] | None:
    """The generators' loop-lag histograms added up, as :func:`_histogram_window` reports."""
    rows = [r for r in per_generator if r]
    if not rows:
        return None
    counts = [sum(column) for column in zip(*rows, strict=True)]
    bounds = [*BUCKETS, math.inf]
    cumulative, m0, m1 = 0, dict[str, float](), dict[str, float]()
    for bound, n in zip(bounds, counts, strict=True):
        cumulative += n
        m1[f"lag:{bound}"] = float(cumulative)
    return _histogram_window(m0, m1, "lag")


# the server's own histograms (control/loopwatch.py) that a step reads at both ends
_HISTOGRAMS = {"remotecase_event_loop_lag_seconds_bucket": "lag",
               "python_gc_pause_seconds_bucket": "gc"}


def _histogram_window(m0: dict[str, float], m1: dict[str, float],
                      name: str) -> dict[str, Any] | None:
    """Observations in the window, and the bucket bounds (ms) holding its p50, p99 and max."""
    bounds = sorted((float(k.split(":")[1]), k) for k in m1 if k.startswith(name + ":"))
    if not bounds:
        return None
    counts = [(bound, m1[k] - m0.get(k, 0.0)) for bound, k in bounds]
    total = counts[-1][1]
    if total <= 0:
        return {"count": 0}

    def at(q: float) -> float | None:
        for bound, cumulative in counts:
            if cumulative >= q * total - 1e-9:
                return None if math.isinf(bound) else round(1000 * bound, 1)
        return None

    return {"count": int(total), "p50_le_ms": at(0.5), "p99_le_ms": at(0.99),
            "max_le_ms": at(1.0)}


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


async def _room_jobs(http: aiohttp.ClientSession, target: Target,
                     plans: list[RoomPlan]) -> list[dict[str, Any]]:
    rooms = []
    for plan in plans:
        participants = []
        for i in range(plan.participants):
            token = ""
            if target.kind == "remotecase":
                async with http.post(f"{target.base}/dev/token",
                                     json={"room": plan.room, "name": f"load{i}"}) as r:
                    if r.status != 200:
                        raise RuntimeError("the server gives no development tokens "
                                           f"(auth.dev_join off?): {r.status} {await r.text()}")
                    token = (await r.json())["token"]
            participants.append({"token": token, "publish": i < plan.publishers})
        rooms.append({"room": plan.room, "participants": participants})
    return rooms


async def run_step(http: aiohttp.ClientSession, target: Target, plans: list[RoomPlan], *,
                   bitrate: int, fps: int, seconds: float, warmup: float, generators: int,
                   progress: bool, receivers: str = "light",
                   cpus: list[int] | None = None) -> dict[str, Any]:
    """One load level: fill the rooms, measure a window, leave. Rooms are spread over the
    generator processes whole, so that a room's participants share one process."""
    rooms = await _room_jobs(http, target, plans)
    jobs: list[list[dict[str, Any]]] = [[] for _ in range(generators)]
    # the largest rooms first, each to the least loaded generator
    for room in sorted(rooms, key=lambda r: -len(r["participants"])):
        min(jobs, key=lambda j: sum(len(r["participants"]) for r in j)).append(room)
    procs = []
    try:
        for job in jobs:
            if not job:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.load", "generator",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=1 << 24)  # a RESULT line carries thousands of latency samples
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({
                "base": target.base, "server": target.kind, "address": target.address,
                "rooms": job, "bitrate": bitrate, "fps": fps,
                "receivers": receivers, "cpus": cpus}).encode() + b"\n")
            await proc.stdin.drain()
            procs.append(proc)
        ready = [json.loads(await _read(p, "READY", 300)) for p in procs]
        failures = [f for r in ready for f in r["failures"]]
        await asyncio.sleep(warmup)
        for proc in procs:  # what piled up during the warm-up
            assert proc.stdout is not None
            while True:
                try:
                    await asyncio.wait_for(_read(proc, "STATS", 0.05), 0.1)
                except TimeoutError:
                    break
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"MEASURE\n")
            await proc.stdin.drain()
        m0, t0 = await target.sample(http), time.monotonic()
        generator_cpu: list[float] = []
        received0: list[int] | None = None
        received1: list[int] = []
        r0_at = r1_at = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            stats = [json.loads(await _read(p, "STATS", 10)) for p in procs]
            received1, r1_at = [s["received"] for s in stats], time.monotonic()
            if received0 is None:
                received0, r0_at = received1, r1_at
            generator_cpu.append(max(s["cpu"] for s in stats))
            if progress:
                now = await target.sample(http)
                elapsed = max(1e-6, time.monotonic() - t0)
                print("\r" if sys.stderr.isatty() else "\n", end="", file=sys.stderr)
                print(f"  {target.kind} {time.monotonic() - t0:5.1f}/{seconds:.0f} s  "
                      f"received {(sum(received1) - sum(received0)) / elapsed:8.0f}/s  "
                      f"server CPU {100 * (now['cpu'] - m0['cpu']) / elapsed:5.1f}%  "
                      f"generators up to {100 * generator_cpu[-1]:5.1f}%", end="",
                      file=sys.stderr, flush=True)
        m1, t1 = await target.sample(http), time.monotonic()
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
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    elapsed = t1 - t0
    cpu = m1["cpu"] - m0["cpu"]
    # packets the subscribers received in the window: the same measure for every server
    delivered = (sum(received1) - sum(received0)) if received0 is not None else 0
    delivered_pps = delivered / (r1_at - r0_at) if r1_at > r0_at else 0.0
    forwarded = m1["forwarded"] - m0["forwarded"] if "forwarded" in m1 else None
    received = sum(r["received"] for r in results)
    expected = sum(r["expected"] for r in results)
    latencies = [v for r in results for v in r["latencies_ms"]]
    busiest = max(generator_cpu) if generator_cpu else 0.0
    jitters = [x for r in results for x in r["jitter_ms"]]
    packets = forwarded if forwarded else delivered_pps * elapsed
    return {
        "server": target.kind,
        "rooms": len(plans), "participants": sum(p.participants for p in plans),
        "streams": sum(p.streams for p in plans),
        # forwarded streams that reached a subscriber (one per track per subscriber)
        "streams_received": sum(1 for r in results for _ in range(r["receiving"])),
        "join_failures": failures,
        "seconds": round(elapsed, 2),
        "forwarded_pps": round(forwarded / elapsed, 1) if forwarded is not None else None,
        "received_pps": round(delivered_pps, 1),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_packet": round(1e6 * cpu / packets, 2) if packets else None,
        "server_rss_mb": round(m1.get("rss", 0) / 2**20, 1),
        "loss_ratio": round(max(0.0, 1 - received / expected), 5) if expected else None,
        "latency_ms": {f"p{q}": _percentile(latencies, q) for q in (50, 90, 99)}
        | {"max": round(max(latencies), 2) if latencies else None},
        "jitter_ms_mean": round(sum(jitters) / len(jitters), 2) if jitters else None,
        "join_ms": {f"p{q}": _percentile([v for r in results for v in r["joins_ms"]], q)
                    for q in (50, 99)},
        "first_frame_ms": {f"p{q}": _percentile(
            [v for r in results for v in r["first_frame_ms"]], q) for q in (50, 99)},
        # how late the server's event loop ran (every packet may wait that long) and how long
        # its garbage collector stopped it, in the window (control/loopwatch.py)
        "server_loop_lag": _histogram_window(m0, m1, "lag"),
        "server_gc_pause_ms": round(1000 * (m1["gc_pause"] - m0.get("gc_pause", 0.0)), 1)
        if "gc_pause" in m1 else None,
        "server_gc_pauses": _histogram_window(m0, m1, "gc"),
        # the generators' loops over the same window: the clients' part of end-to-end latency
        "generator_loop_lag": _bucket_summary([r.get("loop_lag_buckets") for r in results]),
        "server_gc_collections": [int(m1[f"gc{g}"] - m0.get(f"gc{g}", 0.0)) for g in range(3)]
        if "gc2" in m1 else None,
        "generator_cpu_max": round(busiest, 3),
        # a generator process over 85% of a core may be what limits the numbers
        "generator_bound": busiest > 0.85,
    }


def _loads(start: int, limit: int) -> Iterator[int]:
    rooms = start
    while rooms <= limit:
        yield rooms
        rooms = max(rooms + 1, int(rooms * 1.5))


@contextlib.asynccontextmanager
async def serve_remotecase(url: str | None, workers: int = 1,
                           cpus: list[int] | None = None, server_log: str | None = None) -> Any:
    """A Target for the server at ``url``, or for one started here with ``workers`` worker
    processes (and stopped after)."""
    if url:
        yield Target("remotecase", url.rstrip("/"))
        return
    from .forwarding import free_port

    tmp = Path(tempfile.mkdtemp(prefix="remotecase-load-"))
    port = free_port()
    env = {**os.environ, "REMOTECASE_SERVER__PORT": str(port),
           "REMOTECASE_STORAGE__DATA_DIR": str(tmp / "var"),
           "REMOTECASE_KEYS__DIR": str(tmp / "keys"),
           "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
           "REMOTECASE_MEDIA__MAX_PARTICIPANTS": "100",
           "REMOTECASE_VERIFIER__ENABLED": "false",
           "REMOTECASE_SERVER__WORKERS": str(workers),
           "REMOTECASE_LOG__LEVEL": "WARNING",
           # its rooms are not case sessions: development tokens (/dev/token)
           "REMOTECASE_AUTH__DEV_JOIN": "true"}
    log = tmp / "server.log"
    with log.open("wb") as sink:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control.cli", "serve", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=sink)
    if cpus:
        _pin(server.pid, cpus)
    try:
        yield Target("remotecase", f"http://127.0.0.1:{port}", pid=server.pid)
    finally:
        if not await _terminate(server, 60):
            print("bench: the server did not stop within 60 s of SIGTERM; killed",
                  file=sys.stderr)
        if server_log:
            shutil.copy(log, server_log)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_janus(cpus: list[int] | None = None) -> Any:
    """Debian's Janus with a generated configuration, stopped after."""
    from .forwarding import free_port
    from .janus import janus_available, own_address, start_janus

    problem = janus_available()
    if problem:
        raise RuntimeError(problem)
    tmp = Path(tempfile.mkdtemp(prefix="remotecase-janus-"))
    port = free_port()
    address = own_address()
    janus = await start_janus(tmp, port, address)
    if cpus:
        _pin(janus.pid, cpus)
    try:
        yield Target("janus", f"http://127.0.0.1:{port}", pid=janus.pid, address=address)
    finally:
        await _terminate(janus, 10)
        shutil.rmtree(tmp, ignore_errors=True)


async def _terminate(proc: asyncio.subprocess.Process, limit: float) -> bool:
    """SIGTERM, then SIGKILL after ``limit`` seconds; False when it had to be killed."""
    if proc.returncode is not None:
        return True
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), limit)
        return True
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False


async def _wait_up(http: aiohttp.ClientSession, target: Target) -> None:
    from .forwarding import wait_healthy

    path = "/janus/info" if target.kind == "janus" else "/healthz"
    await wait_healthy(http, target.base + path)


async def search(http: aiohttp.ClientSession, target: Target, *, scenario: str, rooms: int,
                 bitrate: int, fps: int, seconds: float, warmup: float, generators: int,
                 capacity: bool, max_rooms: int, max_loss: float, max_p99_ms: float,
                 progress: bool, receivers: str = "light",
                 generator_cpus: list[int] | None = None) -> dict[str, Any]:
    """One step, or steps up to the knee: the report for one server."""
    await _wait_up(http, target)
    steps: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    knee: dict[str, Any] | None = None
    for n, level in enumerate(list(_loads(rooms, max_rooms)) if capacity else [rooms]):
        if progress:
            print(f"{target.kind} step {n + 1}: {level} {scenario} room(s)", file=sys.stderr)
        try:
            step = await run_step(http, target, plan_rooms(scenario, level, f"load{n}"),
                                  bitrate=bitrate, fps=fps, seconds=seconds, warmup=warmup,
                                  generators=generators, progress=progress,
                                  receivers=receivers, cpus=generator_cpus)
        except (RuntimeError, TimeoutError, OSError, ValueError) as exc:
            # a step that could not run (a generator died, joins never finished) ends the
            # search as a finding; the steps before it stand
            failed = {"rooms": level, "error": f"{type(exc).__name__}: {exc}"}
            if progress:
                print(f"{target.kind} step {n + 1} failed: {failed['error']}", file=sys.stderr)
            if not steps:
                raise
            break
        steps.append(step)
        p99 = step["latency_ms"]["p99"]
        step["within_limits"] = (step["loss_ratio"] is not None
                                 and step["loss_ratio"] <= max_loss
                                 and p99 is not None and p99 <= max_p99_ms
                                 and not step["join_failures"])
        if step["within_limits"]:
            knee = step
        elif capacity:
            break
    report: dict[str, Any] = {
        "server": target.kind, "scenario": scenario, "bitrate": bitrate, "fps": fps,
        "receivers": receivers, "steps": steps, "failed_step": failed,
        "limits": {"max_loss": max_loss, "max_p99_ms": max_p99_ms}}
    if capacity:
        report["knee"] = None if knee is None else {
            k: knee[k] for k in ("rooms", "participants", "streams", "forwarded_pps",
                                 "received_pps", "server_cpu_percent", "latency_ms",
                                 "loss_ratio")}
    # issue 6's latency target is stated at 70% CPU: the step that ran nearest to it
    near = min(steps, key=lambda s: abs(s["server_cpu_percent"] - 70.0))
    report["near_70_percent_cpu"] = {
        k: near.get(k) for k in ("rooms", "streams", "server_cpu_percent", "latency_ms",
                                 "server_loop_lag", "loss_ratio")}
    return report


def _pin(pid: int, cpus: list[int]) -> None:
    """Every thread of a process on these cores (threads it starts later inherit it)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(task), set(cpus))


def split_cores(pin: bool, workers: int = 1) -> tuple[list[int] | None, list[int] | None]:
    """With ``pin``: the server on one core, the generators (and this harness) on the others,
    so that the server's CPU and latency are its own and not its share of a contended machine.
    Not when the server has several workers, or there is only one core."""
    cores = sorted(os.sched_getaffinity(0))
    if not pin or workers != 1 or len(cores) < 2:
        return None, None
    return cores[:1], cores[1:]


def _pinned(server: list[int] | None,
            generators: list[int] | None) -> dict[str, list[int] | None] | None:
    return None if server is None else {"server": server, "generators": generators}


@contextlib.contextmanager
def _harness_on(cpus: list[int] | None) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


async def run_load(*, url: str | None, server_workers: int = 1, progress: bool = True,
                   pin: bool = True, server_log: str | None = None,
                   **options: Any) -> dict[str, Any]:
    server_cpus, generator_cpus = split_cores(pin and not url, server_workers)
    with _harness_on(generator_cpus):
        async with serve_remotecase(url, server_workers, server_cpus, server_log) as target, \
                aiohttp.ClientSession() as http:
            report = await search(http, target, progress=progress,
                                  generator_cpus=generator_cpus, **options)
    report["server_workers"] = None if url else server_workers
    report["pinned"] = _pinned(server_cpus, generator_cpus)
    return report


async def run_compare(*, progress: bool = True, pin: bool = True, server_log: str | None = None,
                      **options: Any) -> dict[str, Any]:
    """The same scenario against remotecase and against Janus, one after the other."""
    server_cpus, generator_cpus = split_cores(pin)
    with _harness_on(generator_cpus):
        async with aiohttp.ClientSession() as http:
            async with serve_remotecase(None, 1, server_cpus, server_log) as target:
                ours = await search(http, target, progress=progress,
                                    generator_cpus=generator_cpus, **options)
            async with serve_janus(server_cpus) as target:
                theirs = await search(http, target, progress=progress,
                                      generator_cpus=generator_cpus, **options)
    ours["pinned"] = theirs["pinned"] = _pinned(server_cpus, generator_cpus)
    return {"remotecase": ours, "janus": theirs}


# -- plots -----------------------------------------------------------------------------------
def plot(reports: list[dict[str, Any]], path: Path) -> None:
    """CPU per stream, latency percentiles and loss against load (streams), one PNG; with two
    reports (remotecase and Janus) both servers on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for report in reports:
        steps, name = report["steps"], report["server"]
        streams = [s["streams"] for s in steps]
        axes[0].plot(streams, [s["server_cpu_percent"] / max(1, s["streams"]) for s in steps],
                     "o-", label=name)
        for q, style in (("p50", "o-"), ("p99", "s--")):
            axes[1].plot(streams, [s["latency_ms"][q] for s in steps], style,
                         label=f"{name} {q}")
        axes[2].plot(streams, [100 * (s["loss_ratio"] or 0) for s in steps], "o-", label=name)
    limits = reports[0]["limits"]
    axes[0].set(title="server CPU per stream", xlabel="forwarded streams",
                ylabel="% of a core per stream")
    axes[1].axhline(limits["max_p99_ms"], color="red", linestyle=":", label="p99 limit")
    axes[1].set(title="end-to-end latency", xlabel="forwarded streams", ylabel="ms (log)",
                yscale="log")
    axes[2].axhline(100 * limits["max_loss"], color="red", linestyle=":", label="limit")
    axes[2].set(title="loss", xlabel="forwarded streams", ylabel="%")
    for axis in axes:
        axis.legend(fontsize=8)
    first = reports[0]
    figure.suptitle(f"bench load: {first['scenario']}, {first['bitrate'] // 1000} kbps video, "
                    f"{first['fps']} fps")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _print(report: dict[str, Any]) -> None:
    print(f"{'server':>10} {'rooms':>5} {'streams':>7} {'recv pkt/s':>10} {'CPU %':>6} "
          f"{'us/pkt':>7} {'RSS MB':>7} {'loss %':>7} {'p50':>6} {'p99':>6} {'join p99':>9} "
          f"{'ttff p99':>9} {'gen CPU':>8}")
    for s in report["steps"]:
        print(f"{s['server']:>10} {s['rooms']:>5} {s['streams']:>7} {s['received_pps']:>10} "
              f"{s['server_cpu_percent']:>6} {s['server_cpu_us_per_packet']!s:>7} "
              f"{s['server_rss_mb']:>7} {100 * (s['loss_ratio'] or 0):>7.2f} "
              f"{s['latency_ms']['p50']!s:>6} {s['latency_ms']['p99']!s:>6} "
              f"{s['join_ms']['p99']!s:>9} {s['first_frame_ms']['p99']!s:>9} "
              f"{100 * s['generator_cpu_max']:>7.0f}%")
        if s["generator_bound"]:
            print("           a generator process used more than 85% of a core: the numbers "
                  "may say more about the generator than the server (more --generators, or "
                  "generators on another machine)")
        for failure in s["join_failures"][:5]:
            print(f"           join failed: {failure}")
    if report.get("failed_step"):
        failed = report["failed_step"]
        print(f"{report['server']}: the step with {failed['rooms']} rooms did not run: "
              f"{failed['error']}")
    near = report.get("near_70_percent_cpu")
    if near and near.get("server_loop_lag"):
        print(f"{report['server']} nearest 70% CPU: {near['rooms']} rooms at "
              f"{near['server_cpu_percent']}% CPU, end-to-end p99 {near['latency_ms']['p99']} ms,"
              f" event-loop lag p99 <= {near['server_loop_lag'].get('p99_le_ms')} ms")
    if "knee" in report:
        knee = report["knee"]
        if knee is None:
            print(f"{report['server']} knee: even the first step exceeded the limits")
        else:
            print(f"{report['server']} knee: {knee['rooms']} rooms, {knee['streams']} streams, "
                  f"{knee['received_pps']} packets/s delivered at "
                  f"{knee['server_cpu_percent']}% server CPU")


def add_arguments(parser: argparse.ArgumentParser, *, compare: bool = False) -> None:
    if not compare:
        parser.add_argument("--url", help="a running server (with auth.dev_join); default: "
                                          "start one")
    parser.add_argument("--scenario", choices=SCENARIOS, default="one_to_one")
    parser.add_argument("--rooms", type=int, default=2, help="rooms (the first step with "
                        "--capacity)")
    parser.add_argument("--bitrate", type=int, default=500_000, help="video bits per second")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per step")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--generators", type=int, default=2, help="generator processes")
    parser.add_argument("--server-log", help="keep the log (warnings) of the remotecase server "
                                             "the harness starts in this file")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not put the server it starts on one core and the generators "
                             "on the others (pinning needs two cores and one server worker)")
    parser.add_argument("--receivers", choices=("light", "full"), default="light",
                        help="light: subscribers count packets as they arrive and decrypt only "
                             "what they read (no NACKs, no receiver reports); full: aiortc's "
                             "whole receive path, ten times the CPU per packet")
    if compare:
        parser.add_argument("--no-capacity", dest="capacity", action="store_false",
                            help="one step each instead of a search for each knee")
    else:
        parser.add_argument("--capacity", action="store_true", help="raise the load to the knee")
    parser.add_argument("--max-rooms", type=int, default=200)
    parser.add_argument("--max-loss", type=float, default=0.01)
    parser.add_argument("--max-p99-ms", type=float, default=50.0)
    parser.add_argument("--plot", help="PNG: CPU per stream, latency and loss against load")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    if not compare:
        parser.add_argument("--server-workers", type=int, default=1,
                            help="worker processes of the server the harness starts")
        parser.add_argument("--scaling", action="store_true",
                            help="the same load against one worker, then two")


def _options(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.rooms < 1 or args.seconds <= 0 or args.generators < 1 or not 1 <= args.fps <= 60:
        print("bench load: --rooms >= 1, --seconds > 0, --generators >= 1, --fps 1-60",
              file=sys.stderr)
        return None
    return {"scenario": args.scenario, "rooms": args.rooms, "bitrate": args.bitrate,
            "fps": args.fps, "seconds": args.seconds, "warmup": args.warmup,
            "generators": args.generators, "capacity": args.capacity,
            "max_rooms": args.max_rooms, "max_loss": args.max_loss,
            "max_p99_ms": args.max_p99_ms, "receivers": args.receivers, "pin": args.pin,
            "server_log": args.server_log}


def main(args: argparse.Namespace) -> int:
    options = _options(args)
    if options is None:
        return 2
    if args.scaling:
        if args.url:
            print("bench load: --scaling starts its own servers; drop --url", file=sys.stderr)
            return 2
        # two workers need both cores: neither run is pinned, so that they compare
        options["pin"] = False
        reports = [asyncio.run(run_load(url=None, server_workers=n, **options))
                   for n in (1, 2)]
        for report in reports:
            report["server"] = f"{report['server_workers']} worker(s)"
            for step in report["steps"]:
                step["server"] = report["server"]
            _print(report)
        one, two = _common_step(reports[0], reports[1])
        knees = [(r.get("knee") or {}).get("streams") for r in reports]
        summary: dict[str, Any] = {"scaling": {
            "rooms": one["rooms"], "streams": one["streams"],
            "one_worker": {k: one[k] for k in ("server_cpu_percent", "received_pps",
                                               "latency_ms", "loss_ratio")},
            "two_workers": {k: two[k] for k in ("server_cpu_percent", "received_pps",
                                                "latency_ms", "loss_ratio")},
            "knee_streams": knees},
            "reports": reports}
        print(f"at {one['rooms']} room(s): one worker p99 {one['latency_ms']['p99']} ms at "
              f"{one['server_cpu_percent']}% CPU, two workers p99 "
              f"{two['latency_ms']['p99']} ms at {two['server_cpu_percent']}% CPU")
        if options["capacity"]:
            print(f"knees: one worker {knees[0]} streams, two workers {knees[1]} streams")
        if args.plot:
            plot(reports, Path(args.plot))
            print(f"plot: {args.plot}")
        if args.json:
            print(json.dumps(summary))
        return 0
    report = asyncio.run(run_load(url=args.url, server_workers=args.server_workers, **options))
    _print(report)
    if args.plot:
        plot([report], Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(report))
    return 0


def _common_step(ours: dict[str, Any],
                 theirs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The heaviest load both servers ran: fixed costs (timers, RTCP, ICE consent) weigh least
    there, so CPU per packet compares what forwarding costs."""
    by_rooms = {s["rooms"]: s for s in theirs["steps"]}
    common = [s for s in ours["steps"] if s["rooms"] in by_rooms]
    step = common[-1]
    return step, by_rooms[step["rooms"]]


def main_compare(args: argparse.Namespace) -> int:
    options = _options(args)
    if options is None:
        return 2
    from .janus import janus_available

    problem = janus_available()
    if problem:
        print(f"bench compare-janus: {problem}", file=sys.stderr)
        return 2
    both = asyncio.run(run_compare(**options))
    ours, theirs = both["remotecase"], both["janus"]
    _print(ours)
    _print(theirs)
    a, b = _common_step(ours, theirs)
    ours_us, theirs_us = a["server_cpu_us_per_packet"], b["server_cpu_us_per_packet"]
    summary = {
        "scenario": options["scenario"], "rooms": a["rooms"], "streams": a["streams"],
        "remotecase_cpu_us_per_packet": ours_us, "janus_cpu_us_per_packet": theirs_us,
        # Janus CPU per packet over ours: 1.0 means as efficient as Janus
        "efficiency_ratio": round(theirs_us / ours_us, 3) if ours_us and theirs_us else None,
        "remotecase_latency_ms": a["latency_ms"], "janus_latency_ms": b["latency_ms"],
        "remotecase_loss": a["loss_ratio"], "janus_loss": b["loss_ratio"],
        "ratio_by_rooms": {
            s["rooms"]: round(t["server_cpu_us_per_packet"] / s["server_cpu_us_per_packet"], 3)
            for s in ours["steps"] for t in theirs["steps"]
            if s["rooms"] == t["rooms"] and s["server_cpu_us_per_packet"]
            and t["server_cpu_us_per_packet"]},
        "remotecase_knee_streams": (ours.get("knee") or {}).get("streams"),
        "janus_knee_streams": (theirs.get("knee") or {}).get("streams"),
        "remotecase": ours, "janus": theirs,
    }
    print(f"at {a['rooms']} {options['scenario']} room(s), {a['streams']} streams: "
          f"remotecase {ours_us} us/packet, Janus {theirs_us} us/packet, efficiency ratio "
          f"{summary['efficiency_ratio']} (Janus CPU per packet / ours)")
    if options["capacity"]:
        print(f"knees: remotecase {summary['remotecase_knee_streams']} streams, Janus "
              f"{summary['janus_knee_streams']} streams")
    if args.plot:
        plot([ours, theirs], Path(args.plot))
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["generator"]:
        asyncio.run(_generator(json.loads(sys.stdin.readline())))
    else:
        parser = argparse.ArgumentParser(prog="python -m bench.load")
        add_arguments(parser)
        raise SystemExit(main(parser.parse_args()))
