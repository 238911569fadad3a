"""In-process subscribers: how the recorder and the verifier join a room like any participant.

A :class:`LocalSubscriber` is a down-track of one up-track. Three ways to consume it:

* :meth:`LocalSubscriber.packets` (the recorder): every RTP packet from a keyframe on, in a
  bounded queue (dropping the oldest, and counting, when its consumer falls behind, so that a
  slow consumer never slows forwarding).
* :meth:`LocalSubscriber.frames` with no or a short interval (an inquiry's verifier at 1 s):
  continuous decoding of every frame, in a worker thread the subscriber owns; frames between
  samples are decoded (video needs them as references) and dropped in that thread.
* :meth:`LocalSubscriber.samples` (and ``frames(every)`` for an interval of at least
  :data:`KEYFRAME_SAMPLING_FROM` seconds, an education viewer's 20 s): **keyframe sampling**.
  Between samples every packet is dropped in :meth:`~LocalSubscriber.write` (no queue, no
  depacketizing, no thread). When a sample is due the publisher is asked for a keyframe (the
  up-track rate-limits requests, ``pli_min_interval``, and coalesces the ones it holds back), the
  keyframe's packets are gathered (packets of it that come late, behind the next frame's, are
  waited for up to :data:`LATE_WAIT`: on a lossy uplink they are retransmissions) and decoded
  alone, in a small pool shared by every sampling
  subscriber (:func:`decode_pool`, :data:`DECODE_THREADS` threads), and the subscriber goes idle
  again. A sample with no complete keyframe within its wait gives ``None`` (no picture), so a
  publisher that never sends one is reported, not waited on for ever.

Why not keyframe sampling for short intervals: a keyframe costs the publisher several times a
delta frame's bytes, and every other subscriber of the track receives it too; at one a second
a phone's encoder spends its bit rate on keyframes and the picture everyone sees gets worse.
From a few seconds apart a keyframe per sample is a small share of the stream (at 3 s and
15 fps, one frame in 45), and the decoding saved (every frame of every sampled camera, a thread
each) is what lets one machine watch 100 viewers (docs/performance.md, "Session 8").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiortc.codecs import depayload, get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .protocols import CloseReason, Packet, TrackInfo, UpTrack
from .rtp import keyframe_detector

_ids = itertools.count(1)

# from this interval (seconds) on, frames(every) samples keyframes instead of decoding everything
KEYFRAME_SAMPLING_FROM = 3.0
# threads of the pool every keyframe-sampling subscriber of the process decodes in
DECODE_THREADS = 2
# how long a sampling subscriber waits between keyframe requests while none has come
KEYFRAME_ASK_AGAIN = 1.0
# a sample's keyframe may gather at most this many packets (a 1080p keyframe is ~150)
SAMPLE_PACKETS = 1024
# how long a sampled keyframe overtaken by a later frame's packet waits for its missing
# packets (their retransmissions: the SFU NACKs at once and every 100 ms, so on a path of up
# to ~300 ms round trip a second resend still makes it) before it is given up and another asked
LATE_WAIT = 0.5
# while waiting for the asked keyframe, the last packets are kept, so that one whose first
# packet was lost and came late (a retransmission) still has the packets that came before it
WAITING_PACKETS = 256

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    """The process's keyframe-decoding pool, made on first use (its threads end with the
    process; each decode is short and owns its decoder, so nothing needs shutting down)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="sample")
        return _pool


def _seq_after(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b`` (16 bits, wrapping)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class _Keyframe:
    """The packets of one keyframe being gathered for a sample: complete once every sequence
    number from its first packet to the one with the marker bit has come.

    A later frame's packet arriving before the keyframe is whole does not end it: on a lossy
    uplink the keyframe's missing packet is retransmitted (the SFU NACKs it, the publisher
    resends) and comes after the next frame's packets, a round trip and a NACK interval late.
    The keyframe is given up (``broken``) only when it is still not whole :data:`LATE_WAIT`
    seconds after it was first overtaken."""

    def __init__(self, first: Packet) -> None:
        self.timestamp = first.timestamp
        self.first = first.sequence_number
        self.packets: dict[int, Packet] = {first.sequence_number: first}
        self.last: int | None = first.sequence_number if first.marker else None
        self.overtaken: float | None = None  # when a later frame's packet first came
        self.late = 0  # packets of it that came after a later frame's

    def add(self, packet: Packet, now: float) -> None:
        if packet.timestamp == self.timestamp:
            if not _seq_after(self.first, packet.sequence_number):  # not before the first
                if self.overtaken is not None and packet.sequence_number not in self.packets:
                    self.late += 1
                self.packets[packet.sequence_number] = packet
                if packet.marker:
                    self.last = packet.sequence_number
        elif (
            self.overtaken is None
            and not self.complete
            and _seq_after(packet.sequence_number, self.first)
        ):
            self.overtaken = now

    def broken(self, now: float) -> bool:
        """Overtaken and still not whole after :data:`LATE_WAIT`: a packet of it is lost."""
        return self.overtaken is not None and not self.complete and now - self.overtaken > LATE_WAIT

    @property
    def complete(self) -> bool:
        if self.last is None:
            return False
        return len(self.packets) == ((self.last - self.first) & 0xFFFF) + 1

    def in_order(self) -> list[Packet]:
        return [self.packets[(self.first + i) & 0xFFFF] for i in range(len(self.packets))]


class LocalSubscriber:
    def __init__(
        self,
        up: UpTrack,
        *,
        queue_size: int = 1024,
        on_close: Callable[[LocalSubscriber], None] | None = None,
    ) -> None:
        self._down_id = f"local-{next(_ids)}"
        self._up = up
        self._queue: asyncio.Queue[Packet | None] = asyncio.Queue(maxsize=queue_size)
        self._started = False
        self._closed = False
        self._on_close = on_close
        self._executor: ThreadPoolExecutor | None = None
        # keyframe sampling (samples()): "" when not sampling (every packet is queued), else
        # "idle" between samples, "waiting" for a keyframe, "gathering" its packets
        self._sampling = ""
        self._gathered: list[Packet] = []
        self._before: collections.deque[Packet] = collections.deque(maxlen=WAITING_PACKETS)
        self._arrived = asyncio.Event()
        self._starts_keyframe = keyframe_detector(up.info.mime_type)
        self.received = 0  # packets that reached the subscriber
        self.dropped = 0  # packets the queue lost to a consumer behind
        self.frames_received = 0  # video frames that arrived (packets with the marker bit)
        self.decoded = 0  # frames handed to a decoder, in either mode
        self.idle_dropped = 0  # packets dropped at write because no sample was due
        self.keyframes_asked = 0  # keyframe requests of sampling
        self.keyframes_broken = 0  # sampled keyframes given up: a packet never came in time
        self.late_packets = 0  # packets of a sampled keyframe that came after a later frame's
        up.add_down_track(self)

    @property
    def down_id(self) -> str:
        return self._down_id

    @property
    def info(self) -> TrackInfo:
        return self._up.info

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, packet: Packet) -> None:
        if self._closed:
            return
        if packet.marker:
            self.frames_received += 1
        if self._sampling:
            self.received += 1
            if self._sampling == "waiting":
                # the up-track marks a keyframe's start only on a packet newer than all before
                # it: on a reordering path, or when it is a retransmission, its first packet
                # comes after others of it, so the payload itself is looked at while waiting
                if not packet.keyframe and not (
                    self._starts_keyframe is not None and self._starts_keyframe(packet.payload)
                ):
                    self._before.append(packet)  # a keyframe whose first packet comes late
                    return
                self._sampling = "gathering"
                # its first packet, then those of it that came before (reordered, or the
                # first one lost and this its retransmission)
                self._gathered = [packet] + [
                    p for p in self._before if p.timestamp == packet.timestamp
                ]
                self._before.clear()
                self._arrived.set()
                return
            if self._sampling != "gathering" or len(self._gathered) >= SAMPLE_PACKETS:
                self.idle_dropped += 1  # between samples: no queue, no depayload, no thread
                return
            self._gathered.append(packet)
            self._arrived.set()
            return
        if not self._started:
            if not packet.keyframe:
                return
            self._started = True
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(packet)
        self.received += 1

    def resume(self) -> None:
        """Unmuted: packets simply flow again (the consumer sees the pause as a gap)."""

    async def packets(self) -> AsyncIterator[Packet]:
        """Every forwarded packet, starting on a keyframe, until the track closes."""
        while True:
            packet = await self._queue.get()
            if packet is None:
                return
            yield packet

    async def frames(self, every: float = 0.0) -> AsyncIterator[Any]:
        """Decoded frames (``av.VideoFrame`` / ``av.AudioFrame``).

        Depacketizing, frame assembly and decoding all run in the subscriber's own thread. With
        ``every`` (seconds), only about one frame per interval comes back to the event loop
        (video must still be decoded whole; the others are dropped in the thread), and packets
        are handed over in batches of about a tenth of the interval, so a sampling consumer
        costs the loop little.
        """
        info = self.info
        if every >= KEYFRAME_SAMPLING_FROM and info.kind == "video":
            async for sample in self.samples(every):
                if sample is not None:
                    yield sample
            return
        codec = self._codec()
        decoder = get_decoder(codec)
        jitter = JitterBuffer(capacity=128, is_video=True) if info.kind == "video" else None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._down_id)

        last_kept = [-1e9]

        def decode(batch: list[Packet]) -> list[Any]:
            out: list[Any] = []
            for packet in batch:
                try:
                    data = depayload(codec, packet.payload) if packet.payload else b""
                except ValueError:
                    continue
                encoded: JitterFrame | None
                if jitter is None:  # audio: every packet is a frame
                    encoded = JitterFrame(data=data, timestamp=packet.timestamp)
                else:
                    rtp = RtpPacket(
                        payload_type=96,
                        sequence_number=packet.sequence_number,
                        timestamp=packet.timestamp,
                        marker=packet.marker,
                        payload=packet.payload,
                    )
                    rtp._data = data  # type: ignore[attr-defined]
                    _, encoded = jitter.add(rtp)
                if encoded is not None:
                    self.decoded += 1
                    for frame in decoder.decode(encoded):
                        now = time.monotonic()
                        if every and now - last_kept[0] < every:
                            continue
                        last_kept[0] = now
                        out.append(frame)
            return out

        loop = asyncio.get_running_loop()
        if every:
            # wake up a few times per interval and take whatever has arrived, instead of once
            # per packet
            hold = every / 10
            while True:
                await asyncio.sleep(hold)
                batch: list[Packet] = []
                ended = False
                while not self._queue.empty():
                    packet = self._queue.get_nowait()
                    if packet is None:
                        ended = True
                        break
                    batch.append(packet)
                if batch:
                    for frame in await loop.run_in_executor(self._executor, decode, batch):
                        yield frame
                if ended:
                    return
        batch = []
        async for packet in self.packets():
            batch.append(packet)
            if jitter is not None and not packet.marker and len(batch) < 256:
                continue
            frames = await loop.run_in_executor(self._executor, decode, batch)
            batch = []
            for frame in frames:
                yield frame

    async def samples(self, every: float, *, wait: float | None = None) -> AsyncIterator[Any]:
        """One decoded keyframe (``av.VideoFrame``) every ``every`` seconds, the first at
        once; ``None`` for a sample that got no complete keyframe within ``wait`` seconds
        (default: a third of the interval, 2 to 10 s). Video only; see the module's text."""
        if self.info.kind != "video":
            raise ValueError("keyframe sampling is for video tracks")
        if wait is None:
            wait = min(10.0, max(2.0, every / 3))
        loop = asyncio.get_running_loop()
        self._sampling = "idle"
        due = loop.time()
        try:
            while not self._closed:
                delay = due - loop.time()
                if delay > 0:
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), delay)  # or closed
                    if self._closed:
                        return
                    if loop.time() < due:
                        continue  # woken by a packet the idle state dropped: sleep on
                frame = await self._one_sample(loop, wait)
                if self._closed:
                    return
                due = max(due + every, loop.time())
                yield frame
        finally:
            self._sampling = ""
            self._gathered = []
            self._before.clear()

    async def _one_sample(self, loop: asyncio.AbstractEventLoop, wait: float) -> Any:
        codec = self._codec()
        deadline = loop.time() + wait
        state: dict[str, Any] = {}  # the decoder and the keyframe being gathered
        self._gathered = []
        self._sampling = "waiting"
        try:
            while not self._closed:
                if not self._gathered:
                    if self._sampling == "waiting":
                        self.keyframes_asked += 1
                        self._up.request_keyframe()
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None  # no picture: the publisher sent no whole keyframe
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._arrived.wait(), min(remaining, KEYFRAME_ASK_AGAIN)
                        )
                    continue
                batch, self._gathered = self._gathered, []
                frame, broken = await loop.run_in_executor(
                    decode_pool(), self._decode_keyframe, codec, state, batch
                )
                if frame is not None:
                    return frame
                if broken:  # a packet of it never came: ask for another
                    self.keyframes_broken += 1
                    state.clear()
                    self._gathered = []
                    self._before.clear()
                    self._sampling = "waiting"
            return None
        finally:
            self._sampling = "idle"
            self._gathered = []
            self._before.clear()

    def _decode_keyframe(
        self, codec: RTCRtpCodecParameters, state: dict[str, Any], batch: list[Packet]
    ) -> tuple[Any, bool]:
        """Gather a keyframe's packets; once it is whole, decode it (a pool thread). Returns
        the frame (or None), and whether the keyframe is broken."""
        keyframe: _Keyframe | None = state.get("keyframe")
        now = time.monotonic()
        if keyframe is None:  # a gathering begins with its keyframe's first packet (write)
            if not batch:
                return None, False
            keyframe = state["keyframe"] = _Keyframe(batch[0])
            batch = batch[1:]
        for packet in batch:
            keyframe.add(packet, now)
        if not keyframe.complete:
            return None, keyframe.broken(now)
        self.late_packets += keyframe.late
        try:
            data = b"".join(depayload(codec, p.payload) for p in keyframe.in_order() if p.payload)
        except ValueError:
            return None, True
        self.decoded += 1
        decoder = get_decoder(codec)
        frames = decoder.decode(JitterFrame(data=data, timestamp=keyframe.timestamp))
        return (frames[0] if frames else None), not frames

    def _codec(self) -> RTCRtpCodecParameters:
        info = self.info
        params: dict[str, int | str | None] = dict(info.parameters)
        return RTCRtpCodecParameters(
            mimeType=info.mime_type,
            clockRate=info.clock_rate,
            channels=info.channels,
            payloadType=96,
            parameters=params,
        )

    def request_keyframe(self) -> None:
        self._up.request_keyframe()

    def close(self, reason: CloseReason = CloseReason.UNSUBSCRIBED) -> None:
        if self._closed:
            return
        self._closed = True
        self._up.remove_down_track(self)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self._arrived.set()  # a sampling consumer wakes and ends
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._on_close is not None:
            self._on_close(self)
