"""The fast ingress's own RTP header parse (mediaserver.rtp.parse_received) against aiortc's
RtpPacket.parse, on a corpus of packets: what both accept has the same fields and the same
extension values the SFU reads; what aiortc refuses is refused (None, not an exception).

The corpus: packets aiortc serializes (with and without extensions, padding, CSRCs; its
one-byte profile and, for a value longer than 16 bytes, its two-byte one), packets written
byte by byte (two-byte elements, padding between elements, an unknown profile), every
truncation of each of them, and flipped header bits.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from mediaserver import rtp

MID, ABS, TWCC, LEVEL = 1, 3, 5, 9
URIS = {
    MID: "urn:ietf:params:rtp-hdrext:sdes:mid",
    ABS: "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    TWCC: "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    LEVEL: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
}


def _map(*ids: int) -> HeaderExtensionsMap:
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=URIS[i]) for i in ids]
        )
    )
    return extensions_map


FULL = _map(MID, ABS, TWCC, LEVEL)


def _aiortc(data: bytes, extensions_map: HeaderExtensionsMap) -> RtpPacket | None:
    try:
        return RtpPacket.parse(data, extensions_map)
    except (ValueError, struct.error):
        return None  # what the fast ingress drops (aiortc's own path raises)


def _ours(data: bytes, abs_id: int | None = ABS, twcc_id: int | None = TWCC) -> Any:
    return rtp.parse_received(data, abs_id, twcc_id)


def _same(ours: rtp.ReceivedPacket, theirs: RtpPacket) -> None:
    for field in (
        "payload_type",
        "marker",
        "sequence_number",
        "timestamp",
        "ssrc",
        "payload",
        "padding_size",
    ):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert list(ours.csrc) == theirs.csrc
    assert ours.extensions.abs_send_time == theirs.extensions.abs_send_time
    assert ours.extensions.transport_sequence_number == theirs.extensions.transport_sequence_number


def _serialized() -> list[bytes]:
    rng = random.Random(19)
    made = []
    for k in range(200):
        packet = RtpPacket(
            payload_type=rng.choice((96, 97, 111, 127)),
            marker=k & 1,
            sequence_number=rng.randrange(0x10000),
            timestamp=rng.randrange(1 << 32),
            ssrc=rng.randrange(1 << 32),
            payload=rng.randbytes(rng.choice((0, 1, 3, 160, 1100))),
        )
        if k % 5 == 1:
            packet.csrc = [rng.randrange(1 << 32) for _ in range(rng.randrange(1, 16))]
        if k % 3 != 0:
            packet.extensions.abs_send_time = rng.randrange(1 << 24)
        if k % 4 != 0:
            packet.extensions.transport_sequence_number = rng.randrange(0x10000)
        if k % 2:
            # longer than 16 bytes: aiortc writes the two-byte profile
            packet.extensions.mid = "0" if k % 6 != 5 else "m" * 20
        if k % 7 == 3:
            packet.extensions.audio_level = (True, rng.randrange(128))
        if k % 6 == 2:
            packet.padding_size = rng.randrange(1, 256)
        made.append(packet.serialize(FULL))
    return made


def _handmade() -> list[bytes]:
    header = bytes([0x90, 96]) + struct.pack("!HII", 7, 3000, 0xABCDEF01)
    one_byte = (
        b"\xbe\xde\x00\x03"
        + bytes([(ABS << 4) | 2, 1, 2, 3])
        + b"\x00\x00"  # padding between elements
        + bytes([(TWCC << 4) | 1, 0x12, 0x34])
        + b"\x00\x00\x00"
    )
    two_byte = (
        b"\x10\x00\x00\x04"
        + bytes([ABS, 3, 9, 8, 7])
        + b"\x00"
        + bytes([TWCC, 2, 0xFE, 0xDC])
        + bytes([MID, 1, 0x30])
        + b"\x00\x00\x00"
    )
    unknown_profile = b"\xab\xcd\x00\x01" + bytes([(ABS << 4) | 2, 1, 2, 3])
    payload = b"\x10\x00" + bytes(40)
    padded = bytes([0xB0]) + header[1:] + one_byte + payload + bytes(3) + b"\x04"
    return [
        header + one_byte + payload,
        header + two_byte + payload,
        header + unknown_profile + payload,
        padded,
        # an abs-send-time of the wrong length (aiortc: struct.error)
        header + b"\xbe\xde\x00\x01" + bytes([(ABS << 4) | 1, 1, 2, 0]) + payload,
        # a transport-wide number of the wrong length
        header + b"\x10\x00\x00\x01" + bytes([TWCC, 1, 5, 0]) + payload,
        # an element longer than the block
        header + b"\xbe\xde\x00\x01" + bytes([(ABS << 4) | 5, 1, 2]) + payload,
        # an extension block longer than the packet
        header + b"\xbe\xde\x00\x40" + payload,
        bytes([0xA0]) + header[1:] + payload + b"\x00",  # padding length 0
        bytes([0xA0]) + header[1:] + b"\x05",  # more padding than the packet
        bytes([0x40]) + header[1:] + payload,  # version 1
        bytes([0x8F]) + header[1:12] + bytes(20),  # 15 CSRCs announced, 5 there
        b"",
        header[:11],
    ]


def _corpus() -> list[bytes]:
    whole = _serialized() + _handmade()
    corpus = list(whole)
    for data in whole[::7] + _handmade():
        corpus.extend(data[:cut] for cut in range(0, min(len(data), 80)))
        for bit in range(16 if len(data) > 1 else 0):  # each bit of the first two bytes
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            corpus.append(bytes(flipped))
    return corpus


def test_the_corpus_parses_as_aiortc_parses_it() -> None:
    accepted = refused = 0
    for data in _corpus():
        theirs, ours = _aiortc(data, FULL), _ours(data)
        if theirs is None:
            assert ours is None, data.hex()
            refused += 1
        else:
            assert ours is not None, data.hex()
            _same(ours, theirs)
            accepted += 1
    # the corpus has both kinds in number, extensions of each profile among the accepted
    assert accepted > 1000 and refused > 2000


def test_both_profiles_padding_and_csrcs_are_in_the_corpus() -> None:
    """The comparison above means something only if the corpus has each case."""
    corpus = _serialized() + _handmade()
    profiles = {
        data[12 + 4 * (data[0] & 0x0F) : 14 + 4 * (data[0] & 0x0F)]
        for data in corpus
        if len(data) > 16 and data[0] & 0x10
    }
    assert {b"\xbe\xde", b"\x10\x00"} <= profiles
    assert any(data and data[0] & 0x20 and _ours(data) for data in corpus)
    assert any(data and data[0] & 0x0F and _ours(data) for data in corpus)
    values = [_ours(data) for data in corpus]
    assert any(v is not None and v.abs_send_time is not None for v in values)
    assert any(v is not None and v.transport_sequence_number is not None for v in values)


def test_only_the_negotiated_ids_are_read() -> None:
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"x")
    packet.extensions.abs_send_time = 0x123456
    packet.extensions.transport_sequence_number = 0x4321
    data = packet.serialize(FULL)
    both = _ours(data)
    assert (both.abs_send_time, both.transport_sequence_number) == (0x123456, 0x4321)
    neither = _ours(data, None, None)
    assert (neither.abs_send_time, neither.transport_sequence_number) == (None, None)
    assert _aiortc(data, _map(MID)) is not None  # aiortc too reads only what is negotiated
    # ids swapped: the 3-byte value is not a transport-wide number (2 bytes): refused, as
    # aiortc refuses it (struct.error) when the map says so
    assert _ours(data, TWCC, ABS) is None
    swapped = HeaderExtensionsMap()
    swapped.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=TWCC, uri=URIS[ABS]),
                RTCRtpHeaderExtensionParameters(id=ABS, uri=URIS[TWCC]),
            ]
        )
    )
    assert _aiortc(data, swapped) is None


@pytest.mark.parametrize(
    "element",
    [
        bytes([(MID << 4) | 1, 0xFF, 0xFE]),  # a mid that is not UTF-8
        bytes([(LEVEL << 4) | 1, 1, 2]),  # an audio level of two bytes
    ],
)
def test_an_element_the_sfu_does_not_read_does_not_drop_the_packet(element: bytes) -> None:
    """Where this parse differs from aiortc's, on purpose: aiortc decodes every negotiated
    element and refuses a packet one of them fails in (a mid that is not UTF-8, an audio level
    of the wrong length); the fast ingress routes by SSRC and reads only abs-send-time and the
    transport-wide number, so such a packet is forwarded as it came."""
    header = bytes([0x90, 96]) + struct.pack("!HII", 7, 3000, 1)
    block = element + bytes([(ABS << 4) | 2, 1, 2, 3])
    block += bytes(-len(block) % 4)
    data = header + b"\xbe\xde" + struct.pack("!H", len(block) // 4) + block + b"payload"
    assert _aiortc(data, FULL) is None
    ours = _ours(data)
    assert ours is not None
    assert ours.payload == b"payload" and ours.abs_send_time == 0x010203


def test_a_received_packet_reads_as_aiortcs_for_the_receiver() -> None:
    """``extensions`` is the packet itself (what the receiver's REMB feed reads on both
    types), and aiortc's RTX unwrap takes it."""
    from aiortc.rtp import unwrap_rtx

    inner = RtpPacket(payload_type=97, sequence_number=9, timestamp=5, ssrc=77)
    inner.payload = struct.pack("!H", 1234) + b"original"
    inner.extensions.abs_send_time = 42
    ours = _ours(inner.serialize(FULL))
    assert ours.extensions is ours and ours.extensions.abs_send_time == 42
    unwrapped = unwrap_rtx(ours, payload_type=96, ssrc=55)
    theirs = unwrap_rtx(RtpPacket.parse(inner.serialize(FULL), FULL), payload_type=96, ssrc=55)
    for field in ("payload_type", "sequence_number", "timestamp", "ssrc", "payload", "marker"):
        assert getattr(unwrapped, field) == getattr(theirs, field)
    assert unwrapped.extensions.abs_send_time == 42
