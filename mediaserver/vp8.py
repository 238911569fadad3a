"""The VP8 payload descriptor (RFC 7741 section 4.2), read from a forwarded packet's payload.

Pure functions on ``bytes``, no state: the SFU reads a packet's temporal layer (TID) to leave
out the frames of the upper layers for a thin receiver (:class:`~mediaserver.forwarding.
RtpDownTrack`), and rewrites the picture ID so that it stays continuous for that receiver.
Bad input never raises: a payload too short for the fields its bits announce has no layer
information (``None``).

The descriptor, in the order it is sent::

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID |  PID: partition index, S: start of a VP8 partition, N: non-reference
    +-+-+-+-+-+-+-+-+
    |I|L|T|K| RSV   |  (if X) I: picture ID, L: TL0PICIDX, T: TID, K: KEYIDX present
    +-+-+-+-+-+-+-+-+
    |M| PictureID   |  (if I) M: 15-bit picture ID, the next byte carries its low 8 bits
    +-+-+-+-+-+-+-+-+
    |   TL0PICIDX   |  (if L)
    +-+-+-+-+-+-+-+-+
    |TID|Y| KEYIDX  |  (if T or K) TID: temporal layer, Y: layer sync
    +-+-+-+-+-+-+-+-+

A browser sending ``scalabilityMode: "L1T3"`` writes I, L and T in every packet (libwebrtc's
``RtpPacketizerVp8``); aiortc writes only I (a 15-bit picture ID), no temporal layers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What one packet's descriptor says. ``None``: the field is not present."""

    start: bool  # the first packet of a frame: S bit and partition index 0
    non_reference: bool  # N: no other frame references this one
    picture_id: int | None
    long_picture_id: bool  # 15 bits (M set) rather than 7
    picture_id_at: int  # byte offset of the picture ID in the payload (0: absent)
    tl0_pic_idx: int | None
    tid: int | None
    layer_sync: bool  # Y: this frame references only frames of layer 0
    key_idx: int | None
    size: int  # bytes of the descriptor; the VP8 payload follows


def parse(payload: bytes) -> Descriptor | None:
    """The whole descriptor, or None when the payload is too short for what its bits announce."""
    size = len(payload)
    if size < 1:
        return None
    first = payload[0]
    start = bool(first & 0x10) and not first & 0x07
    non_reference = bool(first & 0x20)
    picture_id: int | None = None
    long_id = False
    picture_id_at = 0
    tl0: int | None = None
    tid: int | None = None
    sync = False
    key_idx: int | None = None
    pos = 1
    if first & 0x80:  # X
        if size < 2:
            return None
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I
            if size <= pos:
                return None
            picture_id_at = pos
            if payload[pos] & 0x80:  # M: 15 bits
                if size <= pos + 1:
                    return None
                long_id = True
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pos += 2
            else:
                picture_id = payload[pos]
                pos += 1
        if ext & 0x40:  # L
            if size <= pos:
                return None
            tl0 = payload[pos]
            pos += 1
        if ext & 0x30:  # T or K share one byte
            if size <= pos:
                return None
            byte = payload[pos]
            if ext & 0x20:
                tid = byte >> 6
                sync = bool(byte & 0x20)
            if ext & 0x10:
                key_idx = byte & 0x1F
            pos += 1
    return Descriptor(
        start=start,
        non_reference=non_reference,
        picture_id=picture_id,
        long_picture_id=long_id,
        picture_id_at=picture_id_at,
        tl0_pic_idx=tl0,
        tid=tid,
        layer_sync=sync,
        key_idx=key_idx,
        size=pos,
    )


def temporal_id(payload: bytes) -> int | None:
    """The packet's temporal layer (TID), or None without one (no T bit, or too short).

    The hot-path test: reads only the bytes before TID, builds nothing."""
    size = len(payload)
    if size < 2 or not payload[0] & 0x80:
        return None
    ext = payload[1]
    if not ext & 0x20:  # T
        return None
    pos = 2
    if ext & 0x80:  # I
        if size <= pos:
            return None
        pos += 2 if payload[pos] & 0x80 else 1
    if ext & 0x40:  # L
        pos += 1
    if size <= pos:
        return None
    return payload[pos] >> 6


def temporal_layer(payload: bytes) -> tuple[int, bool] | None:
    """(TID, Y) of the packet, or None without a TID: :func:`temporal_id` with the layer sync
    bit (a frame of a layer above 0 that references only layer 0: a place to switch up)."""
    size = len(payload)
    if size < 2 or not payload[0] & 0x80:
        return None
    ext = payload[1]
    if not ext & 0x20:
        return None
    pos = 2
    if ext & 0x80:
        if size <= pos:
            return None
        pos += 2 if payload[pos] & 0x80 else 1
    if ext & 0x40:
        pos += 1
    if size <= pos:
        return None
    byte = payload[pos]
    return byte >> 6, bool(byte & 0x20)


def is_frame_start(payload: bytes) -> bool:
    """True on the first packet of a frame: S bit set and partition index 0."""
    return bool(payload) and payload[0] & 0x17 == 0x10


def rewrite_picture_id(payload: bytes, delta: int) -> bytes:
    """``payload`` with its picture ID moved by ``delta`` (modulo 2^15 or 2^7, as sent), or
    ``payload`` itself when it has none (or delta is 0). Nothing else changes."""
    if not delta or len(payload) < 3 or not payload[0] & 0x80 or not payload[1] & 0x80:
        return payload
    at = 2
    high = payload[at]
    if high & 0x80:
        if len(payload) < 4:
            return payload
        value = (((high & 0x7F) << 8 | payload[at + 1]) + delta) & 0x7FFF
        return b"".join((payload[:at], bytes((0x80 | value >> 8, value & 0xFF)), payload[at + 2 :]))
    value = (high + delta) & 0x7F
    return b"".join((payload[:at], bytes((value,)), payload[at + 1 :]))
