"""From forwarded RTP packets to a Matroska/WebM byte stream, without transcoding.

* :class:`FrameAssembler` groups a track's packets into encoded frames (VP8 and H.264 by RTP
  timestamp and marker bit; Opus one packet per frame), on the event loop; cheap.
* :class:`TrackMuxer` stream-copies the frames into WebM (VP8, Opus) or Matroska (H.264) with
  PyAV in live mode, so the muxer never seeks: the bytes it emits, concatenated, are the file.
  It runs in the recording's writer thread.
"""

from __future__ import annotations

import fractions
import struct
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from mediaserver.protocols import Packet, TrackInfo


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    timestamp: int  # unwrapped RTP timestamp, relative to the track's first frame
    data: bytes
    keyframe: bool
    packets: int


def codec_parameters(info: TrackInfo) -> RTCRtpCodecParameters:
    params: dict[str, int | str | None] = dict(info.parameters)
    return RTCRtpCodecParameters(mimeType=info.mime_type, clockRate=info.clock_rate,
                                 channels=info.channels, payloadType=96, parameters=params)


class FrameAssembler:
    """Turns a track's packets (in arrival order) into encoded frames; counts what it drops."""

    def __init__(self, info: TrackInfo) -> None:
        self._codec = codec_parameters(info)
        self._video = info.kind == "video"
        self._first_ts: int | None = None
        self._last_ts = 0
        self._unwrapped_base = 0
        self._current_ts: int | None = None
        self._parts: dict[int, tuple[bytes, bool, bool]] = {}  # seq -> data, key, starts
        self._mime = info.mime_type.lower()
        self._marker_seq: int | None = None
        self.dropped_frames = 0
        self.first_rtp_timestamp: int | None = None

    def _unwrap(self, ts: int) -> int:
        if self._first_ts is None:
            self._first_ts = ts
            self._last_ts = ts
            self.first_rtp_timestamp = ts
        delta = (ts - self._last_ts) & 0xFFFFFFFF
        if delta < 0x80000000:
            self._unwrapped_base += delta
            self._last_ts = ts
            return self._unwrapped_base
        return self._unwrapped_base - ((self._last_ts - ts) & 0xFFFFFFFF)

    def add(self, packet: Packet) -> list[EncodedFrame]:
        try:
            data = depayload(self._codec, packet.payload) if packet.payload else b""
        except ValueError:
            return []
        if not self._video:
            if not data:
                return []
            return [EncodedFrame(self._unwrap(packet.timestamp), data, True, 1)]
        out: list[EncodedFrame] = []
        if self._current_ts is not None and packet.timestamp != self._current_ts:
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        if self._current_ts is None:
            self._current_ts = packet.timestamp
        self._parts[packet.sequence_number] = (
            data, packet.keyframe, _starts_frame(self._mime, packet.payload))
        if packet.marker:
            self._marker_seq = packet.sequence_number
            frame = self._finish()
            if frame is not None:
                out.append(frame)
        return out

    def _finish(self) -> EncodedFrame | None:
        parts, ts, marker = self._parts, self._current_ts, self._marker_seq
        self._parts, self._current_ts, self._marker_seq = {}, None, None
        if not parts or ts is None:
            return None
        count = len(parts)
        first = ((marker if marker is not None else 0) - count + 1) & 0xFFFF
        ordered = [(first + i) & 0xFFFF for i in range(count)]
        if marker is None or any(s not in parts for s in ordered) or not parts[first][2]:
            self.dropped_frames += 1  # a hole, no start or no end: not decodable
            return None
        return EncodedFrame(self._unwrap(ts), b"".join(parts[s][0] for s in ordered),
                            parts[first][1], count)

    def flush(self) -> list[EncodedFrame]:
        """At stop: a frame still arriving is cut off, not counted as a loss."""
        if self._marker_seq is not None:
            frame = self._finish()
            return [frame] if frame is not None else []
        self._parts, self._current_ts = {}, None
        return []


def _starts_frame(mime: str, payload: bytes) -> bool:
    """Is this the first packet of a frame (RFC 7741 S bit and partition 0; RFC 6184 FU-A)?"""
    if not payload:
        return False
    if mime == "video/vp8":
        return bool(payload[0] & 0x10) and not payload[0] & 0x07
    if mime == "video/h264" and payload[0] & 0x1F == 28:
        return len(payload) > 1 and bool(payload[1] & 0x80)
    return True


def opus_head(channels: int = 2, pre_skip: int = 312, rate: int = 48000) -> bytes:
    """RFC 7845 section 5.1 identification header: what Matroska wants as Opus CodecPrivate."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, rate, 0, 0)


class _Sink:
    """A write-only file for PyAV that hands out what the muxer wrote."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.total = 0

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.total += len(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts = []
        return data


CONTAINERS = {"video/vp8": ("webm", "vp8"), "audio/opus": ("webm", "opus"),
              "video/h264": ("matroska", "h264")}


def container_for(info: TrackInfo) -> tuple[str, str]:
    try:
        return CONTAINERS[info.mime_type.lower()]
    except KeyError:
        raise ValueError(f"cannot record {info.mime_type} without transcoding") from None


class TrackMuxer:
    """One track's muxer. Not thread-safe: used from one writer thread."""

    def __init__(self, info: TrackInfo) -> None:
        fmt, codec = container_for(info)
        self.extension = "webm" if fmt == "webm" else "mkv"
        self._sink = _Sink()
        self._container = av.open(self._sink, "w", format=fmt,  # type: ignore[call-overload]
                                  options={"live": "1", "cluster_time_limit": "250"})
        self._stream: Any = self._container.add_stream(codec)
        self._time_base = fractions.Fraction(1, info.clock_rate)
        self._stream.time_base = self._time_base
        if info.kind == "audio":
            self._stream.codec_context.extradata = opus_head(info.channels or 2)
        self._sized = info.kind != "video"
        self._codec = codec
        self.frames = 0
        self._closed = False

    def _size_from_keyframe(self, frame: EncodedFrame) -> None:
        width = height = 0
        data = frame.data
        if self._codec == "vp8" and len(data) >= 10 and data[3:6] == b"\x9d\x01\x2a":
            width = struct.unpack("<H", data[6:8])[0] & 0x3FFF
            height = struct.unpack("<H", data[8:10])[0] & 0x3FFF
        elif self._codec == "h264":
            width, height = _h264_size(data)
        self._stream.width = width or 640
        self._stream.height = height or 480
        self._sized = True

    def add(self, frame: EncodedFrame) -> None:
        if not self._sized:
            self._size_from_keyframe(frame)
        packet = av.Packet(frame.data)
        packet.stream = self._stream
        packet.pts = packet.dts = frame.timestamp
        packet.time_base = self._time_base
        packet.is_keyframe = frame.keyframe
        self._container.mux(packet)
        self.frames += 1

    def take(self) -> bytes:
        """Bytes the muxer has produced since the last call."""
        return self._sink.take()

    def close(self) -> bytes:
        if not self._closed:
            self._closed = True
            self._container.close()
        return self._sink.take()


def _h264_size(annexb: bytes) -> tuple[int, int]:
    """Width and height from the SPS in an Annex-B access unit, by decoding it once."""
    try:
        codec = av.CodecContext.create("h264", "r")
        for packet in codec.parse(annexb):
            for frame in codec.decode(packet):
                return frame.width, frame.height
        for frame in codec.decode(None):
            return frame.width, frame.height
    except av.error.FFmpegError:
        pass
    return 0, 0
