"""Byte-level RTP helpers on saved and malformed payloads."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from mediaserver import rtp

# VP8 payload descriptors (RFC 7741) followed by the first byte of the VP8 frame header
VP8_KEY_EXTENDED = bytes([0x90, 0x80, 0x81, 0x23, 0x10])  # X,S; I; 15-bit picture id; P=0
VP8_DELTA_EXTENDED = bytes([0x90, 0x80, 0x81, 0x24, 0x11])  # P=1
VP8_KEY_SHORT = bytes([0x10, 0x50])  # S only, frame tag with P=0
VP8_CONTINUATION = bytes([0x80, 0x80, 0x05, 0x10])  # no S bit
VP8_SECOND_PARTITION = bytes([0x11, 0x00])  # S but partition 1


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (VP8_KEY_EXTENDED, True),
        (VP8_DELTA_EXTENDED, False),
        (VP8_KEY_SHORT, True),
        (VP8_CONTINUATION, False),
        (VP8_SECOND_PARTITION, False),
        (b"", False),
        (bytes([0x90]), False),  # X set but truncated
        (bytes([0x90, 0x80]), False),  # picture id promised, missing
        (bytes([0x90, 0x80, 0x81]), False),  # 15-bit picture id cut short
        (bytes([0x90, 0xF0, 0x01, 0x02, 0x03]), False),  # I, L, T/K present, no frame header left
    ],
)
def test_vp8_keyframe_start(payload: bytes, expected: bool) -> None:
    assert rtp.is_vp8_keyframe_start(payload) is expected


def _stap_a(*nals: bytes) -> bytes:
    out = bytes([24])
    for nal in nals:
        out += len(nal).to_bytes(2, "big") + nal
    return out


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes([0x65, 0x88]), True),  # IDR slice
        (bytes([0x67, 0x42]), True),  # SPS
        (bytes([0x41, 0x9A]), False),  # non-IDR slice
        (_stap_a(bytes([0x67, 1, 2]), bytes([0x68, 3])), True),  # SPS+PPS aggregate
        (_stap_a(bytes([0x06, 1])), False),  # SEI only
        (bytes([24, 0x00, 0x10, 0x67]), False),  # STAP-A length past the end
        (bytes([28, 0x85, 0x00]), True),  # FU-A start of an IDR
        (bytes([28, 0x05, 0x00]), False),  # FU-A continuation
        (bytes([28, 0x81, 0x00]), False),  # FU-A start of a non-IDR
        (bytes([28]), False),
        (b"", False),
    ],
)
def test_h264_keyframe_start(payload: bytes, expected: bool) -> None:
    assert rtp.is_h264_keyframe_start(payload) is expected


def test_build_packet_round_trips_through_aiortc_parser() -> None:
    data = rtp.build_packet(96, 1, 65535, 0xFFFFFFFF, 0x12345678, b"payload")
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.marker, packet.sequence_number) == (96, 1, 65535)
    assert (packet.timestamp, packet.ssrc, packet.payload) == (0xFFFFFFFF, 0x12345678, b"payload")


def test_build_packet_keeps_padding_as_padding() -> None:
    data = rtp.build_packet(100, 0, 7, 9, 1, b"", padding=200)
    packet = RtpPacket.parse(data)
    assert packet.payload == b"" and packet.padding_size == 200 and len(data) == 212


def test_rtx_payload_prefixes_original_sequence_number() -> None:
    assert rtp.rtx_payload(0xABCD, b"xy") == b"\xab\xcdxy"


def test_keyframe_detector_by_codec() -> None:
    assert rtp.keyframe_detector("video/VP8") is rtp.is_vp8_keyframe_start
    assert rtp.keyframe_detector("video/H264") is rtp.is_h264_keyframe_start
    assert rtp.keyframe_detector("audio/opus") is None
    with pytest.raises(ValueError, match="unsupported"):
        rtp.keyframe_detector("video/AV1")
