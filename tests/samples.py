"""Real media files made on the spot: a JPEG, a PDF, a VP8 WebM and an MPEG-4 Part 2 MP4."""

from __future__ import annotations

import fractions
import io
from typing import Any

import av
import cv2
import numpy as np

from bench.peer import tone_frame


def pattern(i: int, width: int = 320, height: int = 240) -> np.ndarray:
    """A moving box over a gradient: frame ``i`` differs from its neighbours."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack(
        [(x * 255 // width), (y * 255 // height), np.full_like(x, (i * 9) % 256)], axis=-1
    ).astype(np.uint8)
    left = (i * 7) % (width - 60)
    image[80:140, left : left + 60] = (250, 250, 250)
    return image


def jpeg(width: int = 640, height: int = 480) -> bytes:
    ok, encoded = cv2.imencode(".jpg", pattern(3, width, height))
    assert ok
    return encoded.tobytes()


def pdf(pages: int = 2) -> bytes:
    import pypdfium2

    document = pypdfium2.PdfDocument.new()
    for _ in range(pages):
        document.new_page(595, 842)
    out = io.BytesIO()
    document.save(out)
    document.close()
    return out.getvalue()


def video(
    container: str,
    codec: str,
    seconds: float = 4.0,
    fps: int = 15,
    gop: int = 15,
    audio: str | None = None,
) -> bytes:
    """A moving pattern; with ``audio`` (an encoder name) also a 440 Hz tone."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as output:
        sound: av.AudioStream | None = None
        if audio is not None:
            added = output.add_stream(audio, rate=48000)
            assert isinstance(added, av.AudioStream), audio
            added.layout = "stereo"
            sound = added
        stream = output.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream), codec
        stream.width, stream.height = 320, 240
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.time_base = fractions.Fraction(1, fps)
        if codec == "libvpx":
            stream.codec_context.options = {"deadline": "realtime", "cpu-used": "8"}
        for i in range(int(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
        if sound is not None:
            for n in range(int(seconds * 50)):  # 20 ms frames
                for packet in sound.encode(tone_frame(n)):
                    output.mux(packet)
            for packet in sound.encode(None):
                output.mux(packet)
    return out.getvalue()


def webm_vp8(**kwargs: Any) -> bytes:
    return video("webm", "libvpx", **kwargs)


def mp4_mpeg4(**kwargs: Any) -> bytes:
    return video("mp4", "mpeg4", **kwargs)


def decoded_frames(data: bytes) -> list[np.ndarray]:
    """Every frame of a file's video as decoded straight from the file (YUV 4:2:0 planes)."""
    with av.open(io.BytesIO(data), mode="r") as container:
        return [
            frame.to_ndarray(format="yuv420p")
            for frame in container.decode(container.streams.video[0])
        ]
