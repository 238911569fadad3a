"""The VP8 payload descriptor parser (mediaserver/vp8.py) on hand-built descriptors (RFC 7741
section 4.2), cross-checked with aiortc's own writer, including short and malformed ones."""

from __future__ import annotations

import itertools

from aiortc.codecs.vpx import VpxPayloadDescriptor

from mediaserver import vp8

BODY = bytes([0x9D, 0x01, 0x2A])


def _desc(
    *,
    start: bool = True,
    pid: int = 0,
    picture_id: int | None = None,
    tl0: int | None = None,
    tid: tuple[int, int] | None = None,
    keyidx: int | None = None,
) -> bytes:
    return bytes(VpxPayloadDescriptor(int(start), pid, picture_id, tl0, tid, keyidx)) + BODY


def test_every_field_combination_round_trips_with_aiortcs_writer() -> None:
    for picture_id, tl0, tid, keyidx in itertools.product(
        (None, 0, 5, 0x7FFF), (None, 0, 200), (None, (0, 0), (2, 1), (1, 0)), (None, 0, 31)
    ):
        payload = _desc(picture_id=picture_id, tl0=tl0, tid=tid, keyidx=keyidx)
        d = vp8.parse(payload)
        assert d is not None
        assert d.start
        assert d.picture_id == picture_id
        assert d.long_picture_id == (picture_id is not None)  # aiortc writes 15 bits
        assert d.tl0_pic_idx == tl0
        assert d.tid == (None if tid is None else tid[0])
        assert d.layer_sync == (tid is not None and tid[1] == 1)
        assert d.key_idx == keyidx
        assert payload[d.size :] == BODY
        assert vp8.temporal_id(payload) == d.tid
        assert vp8.is_frame_start(payload)


def test_seven_bit_picture_id_and_the_n_bit() -> None:
    # X, N, S; I, L, T; 7-bit picture ID 0x55; TL0PICIDX 9; TID 1, Y
    payload = bytes([0xB0, 0xE0, 0x55, 9, 0x60]) + BODY
    d = vp8.parse(payload)
    assert d is not None
    assert d.non_reference and d.start
    assert (d.picture_id, d.long_picture_id, d.picture_id_at) == (0x55, False, 2)
    assert (d.tl0_pic_idx, d.tid, d.layer_sync, d.size) == (9, 1, True, 5)
    assert vp8.temporal_id(payload) == 1


def test_no_extension_means_no_layer_info() -> None:
    payload = bytes([0x10]) + BODY
    d = vp8.parse(payload)
    assert d is not None and d.tid is None and d.picture_id is None and d.size == 1
    assert vp8.temporal_id(payload) is None


def test_continuation_and_later_partitions_are_not_frame_starts() -> None:
    assert not vp8.is_frame_start(_desc(start=False))
    assert not vp8.is_frame_start(_desc(start=True, pid=1))  # S of partition 1
    assert vp8.is_frame_start(_desc(start=True, pid=0, tid=(2, 0)))
    assert not vp8.is_frame_start(b"")


def test_short_and_malformed_payloads_never_raise() -> None:
    full = _desc(picture_id=0x1234, tl0=7, tid=(2, 1), keyidx=3)
    for cut in range(len(full) - len(BODY)):
        short = full[:cut]
        assert vp8.parse(short) is None, short.hex()  # its bits promise more than it has
        assert vp8.temporal_id(short) is None, short.hex()
    # the T bit without the byte it announces; the M bit without its second byte
    assert vp8.temporal_id(bytes([0x90, 0x20])) is None
    assert vp8.parse(bytes([0x90, 0x80, 0x80])) is None
    # every two-byte and three-byte prefix: no exception, whatever it says
    for a, b in itertools.product(range(256), repeat=2):
        for payload in (bytes([a, b]), bytes([a, b, 0xFF])):
            vp8.parse(payload)
            vp8.temporal_id(payload)
            vp8.is_frame_start(payload)
            assert vp8.rewrite_picture_id(payload, 3) is not None


def test_picture_id_rewrite_wraps_and_keeps_everything_else() -> None:
    payload = _desc(picture_id=0x7FFE, tl0=7, tid=(1, 0))
    moved = vp8.rewrite_picture_id(payload, 3)
    d = vp8.parse(moved)
    assert d is not None and d.picture_id == 1 and d.long_picture_id
    assert (d.tl0_pic_idx, d.tid) == (7, 1)
    assert moved[d.size :] == BODY and len(moved) == len(payload)
    back = vp8.rewrite_picture_id(moved, -3)
    assert back == payload
    seven = bytes([0x90, 0x80, 0x7F]) + BODY
    assert vp8.rewrite_picture_id(seven, 2)[2] == 1  # 7 bits wrap at 128, M stays clear
    no_id = _desc(tl0=1, tid=(0, 0))
    assert vp8.rewrite_picture_id(no_id, 5) is no_id
    assert vp8.rewrite_picture_id(payload, 0) is payload
