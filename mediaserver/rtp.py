"""RTP helpers that work on bytes: keyframe detection per codec, header building, RTX.

Everything here is a pure function so that it can be tested on saved and malformed packets.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

_HEADER = struct.Struct("!BBHII")
_RTX_OSN = struct.Struct("!H")

# First byte of every header we write: version 2, no CSRC; padding (P) and extension (X) bits.
_V2 = 0x80
_P = 0x20
_X = 0x10
_ONE_BYTE_PROFILE = b"\xbe\xde"  # RFC 8285 section 4.2

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def build_packet(
    payload_type: int,
    marker: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    padding: int = 0,
    extension: bytes = b"",
) -> bytes:
    """Serialize an RTP packet without CSRCs; ``extension`` is a whole header extension block
    (:func:`mid_extension`), or empty for none.

    Publisher header extensions are not forwarded: their IDs were negotiated on another
    connection. The SFU writes its own, as each subscriber negotiated them.
    """
    first = _V2 | (_X if extension else 0)
    second = (marker << 7) | payload_type
    header = _HEADER.pack(first | (_P if padding else 0), second, sequence_number, timestamp, ssrc)
    if padding:
        tail = bytes(padding - 1) + bytes((padding,))
        return header + extension + payload + tail
    return header + extension + payload


def mid_extension(extension_id: int, mid: str) -> bytes:
    """The header extension block carrying ``mid`` (RFC 8843 section 15), one-byte form.

    Every packet carries it, so a receiver that demultiplexes by mid (RFC 8843 section 9.2)
    finds its stream from any packet, including the first after it joined or lost some.
    """
    value = mid.encode()
    if not 1 <= extension_id <= 14 or not 1 <= len(value) <= 16:
        raise ValueError("a one-byte header extension has an id of 1-14 and 1-16 bytes")
    element = bytes(((extension_id << 4) | (len(value) - 1),)) + value
    element += bytes(-len(element) % 4)
    return _ONE_BYTE_PROFILE + (len(element) // 4).to_bytes(2, "big") + element


def extension_block(
    mid: tuple[int, str] | None, abs_send_time_id: int | None
) -> tuple[bytes, int | None]:
    """The header extension block for ``mid`` (extension id, mid) and ``abs-send-time``
    (extension id), one-byte form, and where in the block the 3-byte send time goes (None
    without one): the writer fills it per packet (:func:`abs_send_time`)."""
    elements = b""
    at: int | None = None
    if mid is not None:
        elements = mid_extension(*mid)[4:].rstrip(b"\0")
    if abs_send_time_id is not None:
        if not 1 <= abs_send_time_id <= 14:
            raise ValueError("a one-byte header extension has an id of 1-14")
        at = 4 + len(elements) + 1
        elements += bytes(((abs_send_time_id << 4) | 2,)) + bytes(3)
    if not elements:
        return b"", None
    elements += bytes(-len(elements) % 4)
    return _ONE_BYTE_PROFILE + (len(elements) // 4).to_bytes(2, "big") + elements, at


def abs_send_time(now: float) -> bytes:
    """``now`` (seconds) as abs-send-time: 6.18 fixed point, 24 bits (wraps every 64 s)."""
    return (int(now * 262144) & 0xFFFFFF).to_bytes(3, "big")


def rtx_payload(original_sequence_number: int, payload: bytes) -> bytes:
    """RFC 4588 section 4: the original sequence number, then the original payload."""
    return _RTX_OSN.pack(original_sequence_number) + payload


def is_vp8_keyframe_start(payload: bytes) -> bool:
    """True on the first packet of a VP8 keyframe (RFC 7741 sections 4.2 and 4.3)."""
    size = len(payload)
    if size < 1:
        return False
    first = payload[0]
    # S bit (start of partition) and partition index 0
    if not first & 0x10 or first & 0x07:
        return False
    pos = 1
    if first & 0x80:  # X: extended control bits
        if size < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id
            if size <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX
            pos += 1
    if size <= pos:
        return False
    # VP8 payload header: P bit is 0 for a keyframe (RFC 6386 section 9.1)
    return not payload[pos] & 0x01


_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


def is_h264_keyframe_start(payload: bytes) -> bool:
    """True on a packet that starts an H.264 keyframe: an SPS or the start of an IDR slice.

    Handles single NAL units, STAP-A aggregates and FU-A fragments (RFC 6184).
    """
    size = len(payload)
    if size < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (_H264_IDR, _H264_SPS):
        return True
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < size:
            length = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if length == 0 or pos + length > size:
                return False
            if payload[pos] & 0x1F in (_H264_IDR, _H264_SPS):
                return True
            pos += length
        return False
    if nal_type == _H264_FU_A:
        if size < 2:
            return False
        fu_header = payload[1]
        return bool(fu_header & 0x80) and (fu_header & 0x1F) in (_H264_IDR, _H264_SPS)
    return False


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool] | None:
    """The keyframe-start test for a codec; audio codecs have no inter-frame dependency."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return is_vp8_keyframe_start
    if mime == "video/h264":
        return is_h264_keyframe_start
    if mime.startswith("video/"):
        raise ValueError(f"unsupported video codec {mime_type}")
    return None


def seq_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFF


def ts_add(a: int, b: int) -> int:
    return (a + b) & 0xFFFFFFFF


class ReceivedPacket:
    """One received RTP packet as the SFU's fast ingress parses it (:func:`parse_received`).

    The fields aiortc's :class:`~aiortc.rtp.RtpPacket` has under the same names, for the
    receiver's bookkeeping and the sinks (which take either), and of the header extensions only
    the values the SFU reads: abs-send-time (the REMB estimate) and the transport-wide
    sequence number (congestion feedback). ``extensions`` is the packet itself, so that
    ``packet.extensions.abs_send_time`` reads the same on both types. A ``__slots__`` class:
    no dict and no header-extension dataclass per packet (aiortc's parse makes both).
    """

    __slots__ = (
        "abs_send_time",
        "csrc",
        "marker",
        "padding_size",
        "payload",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
        "transport_sequence_number",
    )

    def __init__(
        self,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        csrc: tuple[int, ...],
        payload: bytes,
        padding_size: int,
        abs_send_time: int | None,
        transport_sequence_number: int | None,
    ) -> None:
        self.payload_type = payload_type
        self.marker = marker
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.csrc = csrc
        self.payload = payload
        self.padding_size = padding_size
        self.abs_send_time = abs_send_time
        self.transport_sequence_number = transport_sequence_number

    @property
    def extensions(self) -> ReceivedPacket:
        return self

    def __repr__(self) -> str:
        return (
            f"ReceivedPacket(seq={self.sequence_number}, ts={self.timestamp}, "
            f"marker={self.marker}, payload={self.payload_type}, {len(self.payload)} bytes)"
        )


_NO_CSRC: tuple[int, ...] = ()
_unpack_header = _HEADER.unpack_from
_unpack_profile = struct.Struct("!HH").unpack_from


def parse_received(
    data: bytes, abs_send_time_id: int | None, transport_cc_id: int | None
) -> ReceivedPacket | None:
    """The RTP packet in ``data`` (unprotected), or None when it is malformed.

    What aiortc's ``RtpPacket.parse`` accepts and rejects, for every field the SFU reads
    (tests/test_rtp_parse.py compares the two on a corpus): version 2, CSRCs, the extension
    block's length, every one-byte (RFC 8285 0xBEDE) or two-byte (0x1000) element's length,
    padding. Of the elements, only the ids given are read (None: not negotiated), and one of
    them with a wrong length (abs-send-time is 3 bytes, the transport-wide number 2) is
    malformed, where aiortc raises ``struct.error``. An element the SFU does not read is not
    decoded: a mid or audio level aiortc cannot decode (it raises) does not drop the packet
    here; the fast ingress routes by SSRC, never by mid.
    """
    size = len(data)
    if size < 12:
        return None
    first, second, sequence_number, timestamp, ssrc = _unpack_header(data)
    if first >> 6 != 2:
        return None
    pos = 12
    cc = first & 0x0F
    csrc = _NO_CSRC
    if cc:
        pos += 4 * cc
        if size < pos:
            return None
        csrc = struct.unpack_from(f"!{cc}I", data, 12)
    abs_send_time = transport_sequence_number = None
    if first & _X:
        if size < pos + 4:
            return None
        profile, length = _unpack_profile(data, pos)
        pos += 4
        end = pos + 4 * length
        if size < end:
            return None
        if profile == 0xBEDE:
            at = pos
            while at < end:
                byte = data[at]
                if byte == 0:  # padding between elements
                    at += 1
                    continue
                element, value_length = byte >> 4, (byte & 0x0F) + 1
                at += 1
                if end < at + value_length:
                    return None
                if element == abs_send_time_id:
                    if value_length != 3:
                        return None
                    abs_send_time = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
                elif element == transport_cc_id:
                    if value_length != 2:
                        return None
                    transport_sequence_number = (data[at] << 8) | data[at + 1]
                at += value_length
        elif profile == 0x1000:
            at = pos
            while at < end:
                element = data[at]
                if element == 0:
                    at += 1
                    continue
                if end < at + 2:
                    return None
                value_length = data[at + 1]
                at += 2
                if end < at + value_length:
                    return None
                if element == abs_send_time_id:
                    if value_length != 3:
                        return None
                    abs_send_time = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
                elif element == transport_cc_id:
                    if value_length != 2:
                        return None
                    transport_sequence_number = (data[at] << 8) | data[at + 1]
                at += value_length
        pos = end
    if first & _P:
        padding = data[-1]
        if not padding or padding > size - pos:
            return None
        payload = data[pos : size - padding]
    else:
        padding = 0
        payload = data[pos:]
    return ReceivedPacket(
        second & 0x7F,
        second >> 7,
        sequence_number,
        timestamp,
        ssrc,
        csrc,
        payload,
        padding,
        abs_send_time,
        transport_sequence_number,
    )
