"""What publishers send: VP8 and Opus encoded once, paced in real time, with a latency trailer.

Publishers send pre-encoded VP8 and Opus (encoded once when a generator starts; the load never
encodes), looped and paced in real time, at ``--bitrate``. Each video frame carries a 12-byte
trailer (:data:`TRAILER_MAGIC` and the sender's CLOCK_MONOTONIC in ns, the same clock across
processes on one host), which subscribers read on the frame's last packet to get the end-to-end
latency (:mod:`bench.load.receivers`).
"""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Any, NamedTuple

TRAILER_MAGIC = b"RCLT"
TRAILER = len(TRAILER_MAGIC) + 8


def with_trailer(frame: bytes) -> bytes:
    """The frame with the trailer appended: the marker and the time it is sent."""
    return frame + TRAILER_MAGIC + time.monotonic_ns().to_bytes(8, "big")


def trailer_sent_ns(payload: bytes) -> int | None:
    """When the frame ending in this payload was sent (CLOCK_MONOTONIC ns), or None."""
    if len(payload) > TRAILER and payload[-TRAILER:-8] == TRAILER_MAGIC:
        return int.from_bytes(payload[-8:], "big")
    return None


class Media(NamedTuple):
    """A generator's media, encoded once and shared by all its publishers."""

    video: list[bytes]
    audio: list[bytes]
    fps: int


def encode_video(
    bitrate: int, *, seconds: float = 4.0, fps: int = 30, width: int = 640, height: int = 480
) -> list[bytes]:
    """VP8 frames of a moving pattern, a keyframe every second; looped by the publishers."""
    import av
    import numpy as np

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = fractions.Fraction(1, fps)
    codec.bit_rate = bitrate
    codec.gop_size = fps
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
    }
    y, x = np.mgrid[0:height, 0:width]
    frames: list[bytes] = []
    rng = np.random.default_rng(1)
    count = int(seconds * fps)
    for i in range(count):
        image = np.stack(
            [(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, (i * 3) % 256)], axis=-1
        ).astype(np.uint8)
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

    from ..peer import tone_frame

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate, codec.format, codec.layout = 48000, "s16", "stereo"
    codec.bit_rate = 32000
    packets: list[bytes] = []
    for n in range(int(seconds * 50)):
        packets.extend(bytes(p) for p in codec.encode(tone_frame(n)))
    return packets


def tracks(media: Media) -> tuple[Any, Any]:
    """A publisher's video and audio tracks (aiortc MediaStreamTracks) over the encoded media;
    video frames carry the trailer."""
    import av
    from aiortc import MediaStreamTrack

    class PreEncoded(MediaStreamTrack):
        def __init__(
            self, kind: str, frames: list[bytes], rate: int, step: int, trailer: bool
        ) -> None:
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
                data = with_trailer(data)
            packet = av.Packet(data)
            packet.pts = self._n * self._step
            packet.time_base = fractions.Fraction(1, self._rate)
            self._n += 1
            return packet

    return (
        PreEncoded("video", media.video, 90000, 90000 // media.fps, True),
        PreEncoded("audio", media.audio, 48000, 960, False),
    )
