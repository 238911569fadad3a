"""Server-side tracks: video the server publishes into a room itself (evidence display, 视频示证).

A :class:`ServerTrack` is a :class:`~mediaserver.forwarding.ForwardedUpTrack` whose packets come
from the server instead of a publisher's receiver. Subscribers, the recorder and the verifier see
an ordinary up-track, so every viewer receives the same packets: whatever is encoded is encoded
once for the room, never once per viewer.

Players make the packets (their ``next_frame`` runs in the track's own thread, never on the
event loop):

* :class:`VideoFilePlayer` sends a video file's own encoded packets when its codec fits the room
  (VP8 always; H.264 Constrained Baseline when the room's video publishers send H.264), and
  otherwise decodes and encodes it once to VP8;
* :class:`StillPlayer` encodes one picture (a photo, a PDF page) once as a VP8 keyframe and
  repeats it every second, so that a viewer who joins late sees it within a second;
* :class:`AudioFilePlayer` sends a video's sound: its own Opus packets, else encoded once to
  Opus, one RTP packet per 20 ms.
"""

from __future__ import annotations

import asyncio
import fractions
import io
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket

from . import pdfium
from .aiortc_hooks import ReceiverSink
from .forwarding import ForwardedUpTrack
from .protocols import CloseReason, TrackInfo

logger = logging.getLogger(__name__)

CLOCK = 90000
AUDIO_CLOCK = 48000
OPUS_FRAME = 960  # 20 ms at 48 kHz
MAX_WIDTH, MAX_HEIGHT = 1280, 720
STILL_INTERVAL = 1.0
H264_PARAMETERS = (
    ("level-asymmetry-allowed", "1"),
    ("packetization-mode", "1"),
    ("profile-level-id", "42e01f"),
)
_TB = fractions.Fraction(1, CLOCK)


class Player(Protocol):
    mode: str  # "stream_copy" | "transcoded" | "still"
    mime_type: str  # "video/VP8", "video/H264" or "audio/opus"

    def next_frame(self, keyframe_wanted: bool) -> tuple[list[bytes], float] | None:
        """The next frame's RTP payloads and its media time in seconds; None at the end."""

    def close(self) -> None: ...


class _Source:
    """The receiver side of a server track: where packets go, and keyframe requests."""

    def __init__(self, on_keyframe_request: Callable[[], None]) -> None:
        self.sink: ReceiverSink | None = None
        self._on_keyframe_request = on_keyframe_request

    def attach_sink(self, sink: ReceiverSink) -> None:
        self.sink = sink

    def detach_sink(self) -> None:
        self.sink = None

    async def send_pli(self, media_ssrc: int) -> None:
        self._on_keyframe_request()


class ServerTrack:
    """One server-published track; :meth:`play` feeds it from a :class:`Player`."""

    def __init__(
        self, track_id: str, participant_id: str, player: Player, *, pli_min_interval: float = 0.5
    ) -> None:
        self.player = player
        self.keyframe_wanted = threading.Event()
        self._source = _Source(self.keyframe_wanted.set)
        parameters = H264_PARAMETERS if player.mime_type == "video/H264" else ()
        self._audio = player.mime_type == "audio/opus"
        self._clock = AUDIO_CLOCK if self._audio else CLOCK
        info = TrackInfo(
            track_id,
            participant_id,
            "audio" if self._audio else "video",
            player.mime_type,
            self._clock,
            2 if self._audio else None,
            parameters,
        )
        self.up = ForwardedUpTrack(
            info,
            self._source,
            pli_min_interval=pli_min_interval,
            log_extra={"server_track": track_id},
        )
        self._ssrc = random.randint(1, 0xFFFFFFFF)
        self._seq = random.randint(0, 0x7FFF)
        self._ts_base = random.randint(0, 0x7FFFFFFF)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="server-track")
        self.frames_sent = 0
        self.packets_sent = 0

    def send_frame(self, payloads: Sequence[bytes], media_time: float) -> None:
        sink = self._source.sink
        if sink is None:
            return
        timestamp = (self._ts_base + round(media_time * self._clock)) & 0xFFFFFFFF
        last = -1 if self._audio else len(payloads) - 1  # video: the frame's last packet
        for i, payload in enumerate(payloads):
            sink.on_rtp(
                RtpPacket(
                    payload_type=96,
                    marker=int(i == last),
                    sequence_number=self._seq,
                    timestamp=timestamp,
                    ssrc=self._ssrc,
                    payload=payload,
                )
            )
            self._seq = (self._seq + 1) & 0xFFFF
            self.packets_sent += 1
        self.frames_sent += 1

    def _next(self) -> tuple[list[bytes], float] | None:
        wanted = self.keyframe_wanted.is_set()
        self.keyframe_wanted.clear()
        return self.player.next_frame(wanted)

    async def play(self) -> None:
        """Send every frame at its media time (real-time pacing) until the player ends."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending = loop.run_in_executor(self._executor, self._next)
        try:
            while True:
                item = await pending
                if item is None or self.up.closed:
                    return
                payloads, media_time = item
                pending = loop.run_in_executor(self._executor, self._next)  # prefetch
                delay = start + media_time - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.send_frame(payloads, media_time)
        finally:
            if not pending.done():
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)

    async def close(self, reason: CloseReason) -> None:
        await self.up.close(reason)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        self.player.close()


# -- players ---------------------------------------------------------------------------------
def _fit(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, MAX_WIDTH / width, MAX_HEIGHT / height)
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def _packet(data: bytes) -> av.Packet:
    packet = av.Packet(data)
    packet.pts = 0
    packet.time_base = _TB
    return packet


class StillPlayer:
    """A picture encoded once as a VP8 keyframe, repeated every :data:`STILL_INTERVAL`."""

    mode = "still"
    mime_type = "video/VP8"

    def __init__(self, frame: av.VideoFrame, *, duration: float | None = None) -> None:
        width, height = _fit(frame.width, frame.height)
        frame = frame.reformat(width=width, height=height, format="yuv420p")
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height = width, height
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = 4_000_000
        codec.time_base = fractions.Fraction(1, 30)
        codec.options = {
            "lag-in-frames": "0",
            "deadline": "good",
            "cpu-used": "4",
            "crf": "10",
            "qmin": "4",
            "qmax": "40",
        }
        frame.pts = 0
        encoded = b"".join(bytes(p) for p in codec.encode(frame))
        encoded += b"".join(bytes(p) for p in codec.encode(None))
        if not encoded:
            raise ValueError("the picture did not encode")
        self.keyframe = encoded
        self.width, self.height = width, height
        self._packer = Vp8Encoder()
        self._duration = duration
        self._n = 0

    @classmethod
    def from_image(cls, data: bytes, **kwargs: Any) -> StillPlayer:
        import cv2
        import numpy as np

        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("the image does not decode")
        pixels: np.ndarray[Any, np.dtype[np.uint8]] = np.ascontiguousarray(image, np.uint8)
        return cls(av.VideoFrame.from_ndarray(pixels, format="bgr24"), **kwargs)

    @classmethod
    def from_pdf_page(cls, data: bytes, page: int, **kwargs: Any) -> StillPlayer:
        import pypdfium2

        with pdfium.LOCK:
            return cls(cls._render_pdf_page(pypdfium2, data, page), **kwargs)

    @staticmethod
    def _render_pdf_page(pypdfium2: Any, data: bytes, page: int) -> av.VideoFrame:
        pdf = pypdfium2.PdfDocument(data)
        try:
            if not 1 <= page <= len(pdf):
                raise ValueError(f"the PDF has {len(pdf)} pages; page {page} does not exist")
            sheet = pdf[page - 1]
            width, height = sheet.get_size()
            bitmap = sheet.render(scale=min(MAX_WIDTH / width, MAX_HEIGHT / height))
            array = bitmap.to_numpy()
            fmt = "bgr24" if array.shape[2] == 3 else "bgra"
            frame = av.VideoFrame.from_ndarray(array.copy(), format=fmt)
            sheet.close()
        finally:
            pdf.close()
        return frame

    def next_frame(self, keyframe_wanted: bool) -> tuple[list[bytes], float] | None:
        media_time = self._n * STILL_INTERVAL
        if self._duration is not None and media_time > self._duration:
            return None
        self._n += 1
        payloads, _ = self._packer.pack(_packet(self.keyframe))
        return payloads, media_time

    def close(self) -> None:
        pass


def fits_room(codec: str, profile: str | None, room_video_codecs: set[str]) -> bool:
    """Whether a file's video can go to every viewer as it is (stream copy)."""
    if codec == "vp8":
        return True  # every WebRTC endpoint decodes VP8 (RFC 7742)
    if codec == "h264":
        # only where the room already carries H.264, and in the profile every decoder has
        return (
            bool(room_video_codecs)
            and room_video_codecs == {"video/h264"}
            and (profile or "").lower() in ("baseline", "constrained baseline")
        )
    return False


class VideoFilePlayer:
    """A video file into the room: its own packets when they fit, else one VP8 transcode."""

    def __init__(self, data: bytes, room_video_codecs: set[str]) -> None:
        self._container = av.open(io.BytesIO(data), mode="r")
        if not self._container.streams.video:
            self._container.close()
            raise ValueError("the file has no video stream")
        self._stream = self._container.streams.video[0]
        context = self._stream.codec_context
        self.codec = context.name
        copy = fits_room(context.name, context.profile, room_video_codecs)
        self.mode = "stream_copy" if copy else "transcoded"
        self.mime_type = "video/H264" if copy and self.codec == "h264" else "video/VP8"
        self._bsf: Any = None
        if copy and self.codec == "h264":
            from av.bitstream import BitStreamFilterContext

            self._bsf = BitStreamFilterContext("h264_mp4toannexb", self._stream)
        self._h264 = H264Encoder()
        self._vp8 = Vp8Encoder()
        self._vp8.target_bitrate = 1_500_000
        self._frames: Iterator[Any] = (
            self._container.demux(self._stream) if copy else self._container.decode(self._stream)
        )
        self._first: float | None = None
        self._pending: list[tuple[list[bytes], float]] = []

    def _time(self, pts: int | None, time_base: fractions.Fraction | None) -> float:
        seconds = float(pts * time_base) if pts is not None and time_base else 0.0
        if self._first is None:
            self._first = seconds
        return max(0.0, seconds - self._first)

    def next_frame(self, keyframe_wanted: bool) -> tuple[list[bytes], float] | None:
        if self.mode == "stream_copy":
            return self._next_packet()
        for frame in self._frames:
            media_time = self._time(frame.pts, frame.time_base)
            width, height = _fit(frame.width, frame.height)
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            payloads, _ = self._vp8.encode(frame, force_keyframe=keyframe_wanted)
            if payloads:
                return payloads, media_time
        return None

    def _next_packet(self) -> tuple[list[bytes], float] | None:
        if self._pending:
            return self._pending.pop(0)
        for packet in self._frames:
            if packet.size == 0 or packet.pts is None:
                continue
            media_time = self._time(packet.pts, packet.time_base)
            if self._bsf is not None:
                for out in self._bsf.filter(packet):
                    payloads, _ = self._h264.pack(out)
                    self._pending.append((payloads, media_time))
                if self._pending:
                    return self._pending.pop(0)
                continue
            payloads, _ = self._vp8.pack(packet)
            return payloads, media_time
        return None

    def close(self) -> None:
        self._container.close()


def has_audio(data: bytes) -> bool:
    with av.open(io.BytesIO(data), mode="r") as container:
        return bool(container.streams.audio)


class AudioFilePlayer:
    """A file's sound into the room: its own Opus packets, else encoded once to Opus; one RTP
    packet (20 ms) per call, timed from the start like the picture."""

    mime_type = "audio/opus"

    def __init__(self, data: bytes) -> None:
        from aiortc.codecs.opus import OpusEncoder

        self._container = av.open(io.BytesIO(data), mode="r")
        if not self._container.streams.audio:
            self._container.close()
            raise ValueError("the file has no audio stream")
        self._stream = self._container.streams.audio[0]
        self.codec = self._stream.codec_context.name
        copy = self.codec == "opus"
        self.mode = "stream_copy" if copy else "transcoded"
        self._items: Iterator[Any] = (
            self._container.demux(self._stream) if copy else self._container.decode(self._stream)
        )
        self._copy = copy
        self._encoder = OpusEncoder()
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_CLOCK)
        self._queue: list[tuple[list[bytes], float]] = []
        self._first: float | None = None
        self._samples = 0

    def next_frame(self, keyframe_wanted: bool) -> tuple[list[bytes], float] | None:
        while not self._queue:
            item = next(self._items, None)
            if item is None:
                return None
            if self._copy:
                if item.size == 0 or item.pts is None or item.time_base is None:
                    continue
                seconds = float(item.pts * item.time_base)
                if self._first is None:
                    self._first = seconds
                self._queue.append(([bytes(item)], max(0.0, seconds - self._first)))
                continue
            for frame in self._resampler.resample(item):
                payloads, _ = self._encoder.encode(frame)
                for payload in payloads:  # one RTP packet per 20 ms Opus frame
                    self._queue.append(([payload], self._samples / AUDIO_CLOCK))
                    self._samples += OPUS_FRAME
        return self._queue.pop(0)

    def close(self) -> None:
        self._container.close()
