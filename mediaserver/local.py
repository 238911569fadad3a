"""In-process subscribers: how the recorder and the verifier join a room like any participant.

A :class:`LocalSubscriber` is a down-track of one up-track. It receives every RTP packet in a
bounded queue (dropping the oldest, and counting, when its consumer falls behind, so that a slow
consumer never slows forwarding). :meth:`LocalSubscriber.frames` decodes only when asked, in a
worker thread that the subscriber owns.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiortc.codecs import depayload, get_decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from .protocols import CloseReason, Packet, TrackInfo

_ids = itertools.count(1)


class LocalSubscriber:
    def __init__(
        self,
        up: Any,  # ForwardedUpTrack
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
        info: TrackInfo = self._up.info
        return info

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

    async def packets(self) -> AsyncIterator[Packet]:
        """Every forwarded packet, starting on a keyframe, until the track closes."""
        while True:
            packet = await self._queue.get()
            if packet is None:
                return
            yield packet

    async def frames(self) -> AsyncIterator[Any]:
        """Decoded frames (``av.VideoFrame`` / ``av.AudioFrame``).

        Depacketizing, frame assembly and decoding all run in the subscriber's own thread; the
        event loop only hands over the packets of each frame (at the marker bit).
        """
        info = self.info
        params: dict[str, int | str | None] = dict(info.parameters)
        codec = RTCRtpCodecParameters(
            mimeType=info.mime_type, clockRate=info.clock_rate, channels=info.channels,
            payloadType=96, parameters=params,
        )
        decoder = get_decoder(codec)
        jitter = JitterBuffer(capacity=128, is_video=True) if info.kind == "video" else None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._down_id)

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
                    rtp = RtpPacket(payload_type=96, sequence_number=packet.sequence_number,
                                    timestamp=packet.timestamp, marker=packet.marker,
                                    payload=packet.payload)
                    rtp._data = data  # type: ignore[attr-defined]
                    _, encoded = jitter.add(rtp)
                if encoded is not None:
                    out.extend(decoder.decode(encoded))
            return out

        loop = asyncio.get_running_loop()
        batch: list[Packet] = []
        async for packet in self.packets():
            batch.append(packet)
            if jitter is not None and not packet.marker and len(batch) < 64:
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
