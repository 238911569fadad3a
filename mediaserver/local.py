"""In-process subscribers: how the recorder and the verifier join a room like any participant.

A :class:`LocalSubscriber` is a down-track of one up-track. It receives every RTP packet in a
bounded queue (dropping the oldest, and counting, when its consumer falls behind, so that a slow
consumer never slows forwarding). :meth:`LocalSubscriber.frames` decodes only when asked, in a
worker thread that the subscriber owns.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiortc.codecs import depayload, get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .protocols import CloseReason, Packet, TrackInfo, UpTrack

_ids = itertools.count(1)


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
        self.received = 0
        self.dropped = 0
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
        params: dict[str, int | str | None] = dict(info.parameters)
        codec = RTCRtpCodecParameters(
            mimeType=info.mime_type,
            clockRate=info.clock_rate,
            channels=info.channels,
            payloadType=96,
            parameters=params,
        )
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
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._on_close is not None:
            self._on_close(self)
