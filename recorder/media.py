"""From forwarded RTP packets to a Matroska/WebM byte stream, without transcoding.

* :class:`FrameAssembler` groups a track's packets into encoded frames (VP8 and H.264 by RTP
  timestamp and marker bit; Opus one packet per frame), on the event loop; cheap.
* :class:`TrackMuxer` stream-copies the frames into WebM (VP8, Opus) or Matroska (H.264) with
  PyAV in live mode, so the muxer never seeks: the bytes it emits, concatenated, are the file.
  It runs in the recording's writer thread. A video stream is made from a template stream
  (:func:`_video_template`), not by codec name: PyAV opens a stream made by name as an
  *encoder* when the header is written, and libvpx's VP8 encoder starts two threads and
  allocates its look-ahead frames for every recorded camera although nothing is encoded (82 idle
  threads at 40 viewers; docs/performance.md, "Recording 100 viewers").
"""

from __future__ import annotations

import collections
import fractions
import io
import math
import struct
import threading
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs import depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from mediaserver import rtp
from mediaserver.protocols import Packet, TrackInfo


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    timestamp: int  # unwrapped RTP timestamp, relative to the track's first frame
    data: bytes
    keyframe: bool
    packets: int


GAP_CAUSES = ("loss", "outage", "muted", "left", "failure")


@dataclass(slots=True)
class Gap:
    """A span of a track in which nothing was recorded although the track was live.

    Times are on the track's RTP clock, relative to its first frame (like segment
    timestamps): ``start`` is where the last recorded frame before the gap ended, ``end`` where
    the first one after it begins. ``frames`` counts frames the SFU forwarded (at least one
    packet of each reached the recorder) that are not in the recording; ``packets_missing``
    the packets that never arrived, retransmissions included.
    """

    cause: str
    start: int
    end: int | None = None
    frames: int = 0
    packets_missing: int = 0
    detail: str = ""
    muted: bool = False
    overflow: bool = False
    # the RTP time of the last frame that reached the recorder inside the gap, and the longest
    # stretch of the gap in which none did: an outage is silence, not frames thrown away
    last_seen: int | None = None
    longest_silence: int = 0

    def saw(self, timestamp: int) -> None:
        since = self.start if self.last_seen is None else self.last_seen
        self.longest_silence = max(self.longest_silence, timestamp - since)
        self.last_seen = max(timestamp, since)

    def to_json(self, clock_rate: int) -> dict[str, Any]:
        end = self.start if self.end is None else self.end
        return {
            "cause": self.cause,
            "start_timestamp": self.start,
            "end_timestamp": end,
            "start": round(self.start / clock_rate, 3),
            "duration": round(max(0, end - self.start) / clock_rate, 3),
            "frames": self.frames,
            "packets_missing": self.packets_missing,
            "detail": self.detail,
        }


def codec_parameters(info: TrackInfo) -> RTCRtpCodecParameters:
    params: dict[str, int | str | None] = dict(info.parameters)
    return RTCRtpCodecParameters(
        mimeType=info.mime_type,
        clockRate=info.clock_rate,
        channels=info.channels,
        payloadType=96,
        parameters=params,
    )


class _Frame:
    __slots__ = ("parts", "timestamp")

    def __init__(self, timestamp: int) -> None:
        self.timestamp = timestamp
        # unwrapped sequence number -> (depayloaded data, starts a frame, marker, keyframe start)
        self.parts: dict[int, tuple[bytes, bool, bool, bool]] = {}


DECIDED_MEMORY = 2048  # recent frame timestamps kept to tell a late packet from a late frame
BUFFER_LIMIT = 4096  # packets held at most; past it missing packets are given up at once


class FrameAssembler:
    """Turns a track's packets, in any arrival order, into encoded frames in timestamp order.

    Packets wait in a reordering buffer keyed by sequence number. A missing packet (a hole
    below a packet that did arrive) holds the frames after it for up to ``reorder_wait``
    seconds from when the hole was seen, which is time for the SFU's NACK to be answered by a
    retransmission; then the packet is given up. After a lost frame, video delta frames are
    dropped (they would not decode) until the next complete keyframe, and
    :attr:`needs_keyframe` asks the caller to request one. Every such span is a :class:`Gap`
    (:meth:`take_gaps`); no frame leaves with a timestamp at or below one that already left.

    Accounting: every frame of which a packet arrived is counted once in ``forwarded_frames``
    and ends in exactly one of ``recorded_frames``, a gap's ``frames``, ``late_frames`` (it
    came after a newer frame had left) or ``cut_frames`` (still arriving at :meth:`flush`).
    """

    def __init__(
        self, info: TrackInfo, *, reorder_wait: float = 0.3, outage_seconds: float = 1.0
    ) -> None:
        self._codec = codec_parameters(info)
        self._video = info.kind == "video"
        self._mime = info.mime_type.lower()
        self._detector = rtp.keyframe_detector(info.mime_type)
        self._clock_rate = info.clock_rate
        self._wait = reorder_wait
        self._outage = int(outage_seconds * info.clock_rate)
        self._first_ts: int | None = None
        self._last_ts = 0
        self._unwrapped_base = 0
        self._seq_max: int | None = None  # highest unwrapped sequence number seen
        self._last_seq = 0  # every sequence number up to this one is decided
        self._frames: dict[int, _Frame] = {}
        self._where: dict[int, int | None] = {}  # buffered seq -> frame timestamp (None: no media)
        self._missing: list[tuple[int, int, float]] = []  # (first, last, seen at) of holes
        self._decided: collections.deque[int] = collections.deque(maxlen=DECIDED_MEMORY)
        self._decided_set: set[int] = set()
        self._last_emitted: int | None = None
        self._step = 0  # timestamp distance between the last two recorded frames
        self._broken = False
        self._gap: Gap | None = None
        self._gaps: list[Gap] = []
        self._muted_seen = False
        self._overflow_pending = False
        self.first_rtp_timestamp: int | None = None
        self.forwarded_frames = 0
        self.recorded_frames = 0
        self.dropped_frames = 0  # forwarded, not recorded: in gaps
        self.late_frames = 0
        self.late_packets = 0
        self.cut_frames = 0
        self.packets_missing = 0

    # -- unwrapping -------------------------------------------------------------------------
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

    def _unwrap_seq(self, seq: int) -> int:
        if self._seq_max is None:
            return seq
        low = self._seq_max & 0xFFFF
        delta = (seq - low) & 0xFFFF
        if delta < 0x8000:
            return self._seq_max + delta
        return self._seq_max - ((low - seq) & 0xFFFF)

    # -- input ------------------------------------------------------------------------------
    @property
    def needs_keyframe(self) -> bool:
        """Video frames are being dropped until a keyframe comes: ask the publisher for one."""
        return self._broken and self._video

    @property
    def last_timestamp(self) -> int | None:
        """The newest recorded frame's timestamp."""
        return self._last_emitted

    def note_muted(self) -> None:
        """The track is muted at the SFU: the next gap (or the open one) is the mute's."""
        self._muted_seen = True
        if self._gap is not None:
            self._gap.muted = True

    def note_overflow(self) -> None:
        """The recorder's own queue dropped packets: the next gap is the recorder's failure."""
        if self._gap is not None:
            self._gap.overflow = True
        else:
            self._overflow_pending = True

    def add(self, packet: Packet, now: float) -> list[EncodedFrame]:
        useq = self._unwrap_seq(packet.sequence_number)
        if self._seq_max is None:
            self._seq_max = useq
            self._last_seq = useq - 1
        if useq <= self._last_seq or useq in self._where:
            self._late(packet.timestamp)
            return self._drain(now)
        try:
            data = depayload(self._codec, packet.payload) if packet.payload else b""
        except ValueError:
            return self._drain(now)  # unreadable: a hole like a lost packet
        if useq > self._seq_max + 1:
            self._missing.append((self._seq_max + 1, useq - 1, now))
        self._seq_max = max(self._seq_max, useq)
        if not data:
            self._where[useq] = None  # padding: a sequence number without media
            return self._drain(now)
        uts = self._unwrap(packet.timestamp)
        if uts in self._decided_set or (
            self._last_emitted is not None and uts <= self._last_emitted
        ):
            self._where[useq] = None
            self._late(packet.timestamp, uts)
            return self._drain(now)
        frame = self._frames.get(uts)
        if frame is None:
            frame = self._frames[uts] = _Frame(uts)
            self.forwarded_frames += 1
        if self._video:
            starts = _starts_frame(self._mime, packet.payload)
            key = starts and self._detector is not None and self._detector(packet.payload)
            frame.parts[useq] = (data, starts, bool(packet.marker), key)
        else:
            frame.parts[useq] = (data, True, True, True)
        self._where[useq] = uts
        return self._drain(now if len(self._where) < BUFFER_LIMIT else math.inf)

    def _late(self, timestamp: int, uts: int | None = None) -> None:
        """A packet of a frame already decided, or a whole frame older than a recorded one."""
        if uts is None:
            uts = self._unwrap(timestamp)
        if uts in self._decided_set or uts in self._frames:
            self.late_packets += 1
            return
        self.forwarded_frames += 1
        self.late_frames += 1
        self._remember(uts)

    def _remember(self, uts: int) -> None:
        if len(self._decided) == self._decided.maxlen:
            self._decided_set.discard(self._decided[0])
        self._decided.append(uts)
        self._decided_set.add(uts)

    def poll(self, now: float) -> list[EncodedFrame]:
        """Frames whose wait for missing packets ran out while nothing arrived."""
        return self._drain(now)

    # -- release ----------------------------------------------------------------------------
    def _skip_padding(self) -> None:
        while self._last_seq + 1 in self._where and self._where[self._last_seq + 1] is None:
            del self._where[self._last_seq + 1]
            self._last_seq += 1

    def _first_missing(self, expected: int) -> int:
        seq = expected
        while seq in self._where:
            seq += 1
        return seq

    def _seen_missing_at(self, seq: int, now: float) -> float:
        self._missing = [r for r in self._missing if r[1] > self._last_seq]
        for first, last, seen in self._missing:
            if first <= seq <= last:
                return seen
        self._missing.append((seq, seq, now))
        return now

    def _complete(self, frame: _Frame, lo: int, hi: int) -> bool:
        parts = frame.parts
        if not parts[lo][1] or hi - lo + 1 != len(parts):
            return False
        if parts[hi][2]:
            return True
        after = self._where.get(hi + 1)  # the next packet belongs to a newer frame
        return after is not None and after != frame.timestamp

    def _drain(self, now: float) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        while True:
            self._skip_padding()
            if not self._frames:
                break
            head = self._frames[min(self._frames)]
            lo, hi = min(head.parts), max(head.parts)
            expected = self._last_seq + 1
            contiguous = lo == expected
            if self._complete(head, lo, hi) and (
                contiguous or (self._broken and head.parts[lo][3])
            ):
                if not contiguous:
                    self._lose_span(expected, lo - 1)
                self._decide(head, out)
                continue
            if contiguous and not head.parts[lo][1]:
                self._drop(head, lo, hi)  # its first packet is lost for good
                continue
            missing = self._first_missing(expected)
            assert self._seq_max is not None
            if missing > self._seq_max:
                break  # the head is still arriving; nothing is missing yet
            if now - self._seen_missing_at(missing, now) < self._wait:
                break  # a retransmission may still come
            if missing < lo:
                self._lose_span(expected, lo - 1)
            else:
                self._drop(head, lo, hi)
        return out

    def _open_gap(self, lost_at: int | None = None) -> Gap:
        """The open gap, opened if need be; ``lost_at``: a frame it loses begins there."""
        if self._gap is None:
            start = 0 if self._last_emitted is None else self._last_emitted + self._step
            self._gap = Gap(
                cause="loss", start=start, muted=self._muted_seen, overflow=self._overflow_pending
            )
            self._overflow_pending = False
        if lost_at is not None and lost_at < self._gap.start:
            self._gap.start = max(
                lost_at, 0 if self._last_emitted is None else self._last_emitted + 1
            )
        return self._gap

    def _close_gap(self, end: int) -> None:
        gap = self._gap
        if gap is None:
            return
        self._gap = None
        gap.end = max(end, gap.start)
        gap.saw(gap.end)
        if gap.overflow:
            gap.cause = "failure"
            gap.detail = "the recorder fell behind: its queue dropped packets"
        elif gap.muted:
            gap.cause = "muted"
        elif gap.longest_silence >= self._outage:
            gap.cause = "outage"
        else:
            gap.cause = "loss"
        self._gaps.append(gap)

    def _lose_span(self, first: int, last: int) -> None:
        """Sequence numbers ``first..last`` are given up: none of them carried media we hold."""
        lost = 0
        for seq in range(first, last + 1):
            if seq in self._where:
                if self._where[seq] is None:
                    del self._where[seq]  # padding
            else:
                lost += 1
        self._last_seq = last
        if lost:
            self.packets_missing += lost
            self._open_gap().packets_missing += lost
            if self._video:
                self._broken = True

    def _drop(self, head: _Frame, lo: int, hi: int) -> None:
        del self._frames[head.timestamp]
        for seq in head.parts:
            del self._where[seq]
        lost = hi - lo + 1 - len(head.parts)
        self._last_seq = hi
        self._remember(head.timestamp)
        self.packets_missing += lost
        self.dropped_frames += 1
        gap = self._open_gap(head.timestamp)
        gap.packets_missing += lost
        gap.frames += 1
        gap.saw(head.timestamp)
        if self._video:
            self._broken = True

    def _decide(self, head: _Frame, out: list[EncodedFrame]) -> None:
        del self._frames[head.timestamp]
        order = sorted(head.parts)
        for seq in order:
            del self._where[seq]
        self._last_seq = order[-1]
        self._remember(head.timestamp)
        keyframe = head.parts[order[0]][3]
        if self._broken and not keyframe:
            self.dropped_frames += 1
            gap = self._open_gap(head.timestamp)
            gap.frames += 1
            gap.saw(head.timestamp)
            return
        self._broken = False
        if self._gap is not None:
            self._close_gap(head.timestamp)
        elif self._last_emitted is not None:  # a frame's duration: only between neighbours
            self._step = head.timestamp - self._last_emitted
        self._last_emitted = head.timestamp
        self._muted_seen = False
        self.recorded_frames += 1
        out.append(
            EncodedFrame(
                head.timestamp, b"".join(head.parts[s][0] for s in order), keyframe, len(order)
            )
        )

    def take_gaps(self) -> list[Gap]:
        """Gaps that ended since the last call (a gap ends at the next recorded frame)."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def flush(self) -> list[EncodedFrame]:
        """At the end: give up every missing packet; a frame still arriving is cut off."""
        out = self._drain(math.inf)
        self.cut_frames += len(self._frames)
        self._frames.clear()
        self._where.clear()
        if self._gap is not None:  # still waiting for a keyframe: to the end of the newest frame
            self._close_gap(self._unwrapped_base + self._step)
        return out

    def add_gap(self, cause: str, end: int, *, frames: int = 0, detail: str = "") -> Gap:
        """A gap with a known cause (left, muted, outage, failure) from the last recorded frame
        to ``end`` (track clock), e.g. at the end of a track; after :meth:`flush`."""
        start = 0 if self._last_emitted is None else self._last_emitted + self._step
        gap = Gap(cause=cause, start=start, end=max(start, end), frames=frames, detail=detail)
        self._gaps.append(gap)
        return gap

    @property
    def newest_timestamp(self) -> int:
        """The newest timestamp seen on the track (recorded or not)."""
        return self._unwrapped_base


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


CONTAINERS = {
    "video/vp8": ("webm", "vp8"),
    "audio/opus": ("webm", "opus"),
    "video/h264": ("matroska", "h264"),
}


def container_for(info: TrackInfo) -> tuple[str, str]:
    try:
        return CONTAINERS[info.mime_type.lower()]
    except KeyError:
        raise ValueError(f"cannot record {info.mime_type} without transcoding") from None


_templates: dict[str, Any] = {}  # codec -> (its input container, kept open; its stream)
_templates_lock = threading.Lock()


def _video_template(fmt: str, codec: str) -> Any:
    """A stream of ``codec`` to copy an output stream's codec from, without an encoder: the
    video stream of a one-packet file muxed once per process (the only time an encoder is
    opened; it is closed at once). Shared by every recording's writer thread; read only."""
    with _templates_lock:
        found = _templates.get(codec)
        if found is None:
            sink = io.BytesIO()
            with av.open(sink, "w", format=fmt) as out:  # type: ignore[call-overload]
                stream: Any = out.add_stream(codec)
                stream.time_base = fractions.Fraction(1, 90000)
                packet = av.Packet(b"\x00" * 16)
                packet.stream = stream
                packet.pts = packet.dts = 0
                packet.time_base = stream.time_base
                packet.is_keyframe = True
                out.mux(packet)
            source = av.open(io.BytesIO(sink.getvalue()), "r")
            found = _templates[codec] = (source, source.streams.video[0])
        return found[1]


class TrackMuxer:
    """One track's muxer. Not thread-safe: used from one writer thread."""

    def __init__(self, info: TrackInfo) -> None:
        fmt, codec = container_for(info)
        self.extension = "webm" if fmt == "webm" else "mkv"
        self._sink = _Sink()
        self._container = av.open(
            self._sink,
            "w",
            format=fmt,  # type: ignore[call-overload]
            options={"live": "1", "cluster_time_limit": "250"},
        )
        if info.kind == "video":
            # a stream copied from a template opens no encoder (the module's docstring)
            template = _video_template(fmt, codec)
            self._stream: Any = self._container.add_stream_from_template(template, opaque=False)
        else:
            self._stream = self._container.add_stream(codec)
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
