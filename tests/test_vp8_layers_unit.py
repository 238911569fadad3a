"""The VP8 payload descriptor parser (mediaserver/vp8.py) on hand-built descriptors (RFC 7741
section 4.2), cross-checked with aiortc's own writer, including short and malformed ones."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from typing import Any

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from mediaserver import congestion, vp8
from mediaserver.forwarding import ALL_LAYERS, RtpDownTrack
from mediaserver.protocols import CloseReason
from tests.test_downtrack_unit import _make, _rtp

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
        assert vp8.temporal_layer(payload) == (None if d.tid is None else (d.tid, d.layer_sync))
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
        assert vp8.temporal_layer(short) is None, short.hex()
    # the T bit without the byte it announces; the M bit without its second byte
    assert vp8.temporal_id(bytes([0x90, 0x20])) is None
    assert vp8.parse(bytes([0x90, 0x80, 0x80])) is None
    # every two-byte and three-byte prefix: no exception, whatever it says
    for a, b in itertools.product(range(256), repeat=2):
        for payload in (bytes([a, b]), bytes([a, b, 0xFF])):
            vp8.parse(payload)
            vp8.temporal_id(payload)
            vp8.temporal_layer(payload)
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


# -- a down-track on a VP8 stream with temporal layers (L1T3), in memory -----------------------
# The up-track is a real ForwardedUpTrack, the subscriber's sender a stand-in that collects
# the packets (tests/test_downtrack_unit.py does the same for the other rewriting rules).

L1T3 = (0, 2, 1, 2)  # the TIDs of libwebrtc's three-layer pattern, frame after frame
PACKETS_PER_FRAME = 2


def _layered(picture_id: int, tid: int, *, start: bool, key: bool = False) -> bytes:
    # layer sync (Y) on the first frame of each upper layer after layer 0, as libwebrtc marks
    sync = int(tid > 0 and picture_id % 4 in (1, 2))
    body = bytes([0x00 if key else 0x01, 0x11, 0x22]) + bytes(60)
    descriptor = VpxPayloadDescriptor(
        int(start), 0, picture_id & 0x7FFF, picture_id // 4 & 0xFF, (tid, sync), None
    )
    return bytes(descriptor) + body


class Publisher:
    """Feeds an up-track L1T3 frames: keyframe first, two packets a frame."""

    def __init__(self, up: Any, seq: int = 1000) -> None:
        self.up = up
        self.seq = seq
        self.picture_id = 0
        self.sent: dict[int, bytes] = {}  # sequence number -> payload

    def frame(self, *, key: bool = False, lose: tuple[int, ...] = ()) -> int:
        tid = 0 if key else L1T3[self.picture_id % 4]
        for part in range(PACKETS_PER_FRAME):
            payload = _layered(self.picture_id, tid, start=part == 0, key=key and part == 0)
            if part not in lose:
                self.up.on_rtp(_rtp(self.seq, self.picture_id * 6000, payload, marker=part))
            self.sent[self.seq] = payload
            self.seq = (self.seq + 1) & 0xFFFF
        self.picture_id += 1
        return tid


def _limit(down: RtpDownTrack, rate: float) -> None:
    """The link is limited to ``rate`` bytes/s, with its budget behind by 0.3 s of it: more than
    lowers a layer (LAYER_DEBT), less than pauses (PAUSE_DEBT)."""
    now = time.monotonic()
    down._link_budget = congestion.TokenBucket(rate, 1.0, now)
    down._link_budget.spend(1.3 * rate, now)


async def test_thin_link_leaves_out_upper_layers_without_holes_or_keyframes() -> None:
    sent: list[RtpPacket] = []
    up, down, receiver = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    assert down.layered and down.max_layer == ALL_LAYERS
    for _ in range(7):
        pub.frame()
    assert len(sent) == 8 * PACKETS_PER_FRAME  # not limited: every frame
    plis = len(receiver.plis)
    _limit(down, 1e6)
    for _ in range(40):
        pub.frame()
    await asyncio.sleep(0)
    out = [RtpPacket.parse(bytes(p.serialize())) for p in sent]
    seqs = [p.sequence_number for p in out]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs  # no hole
    pids = []
    for p in out:
        d = vp8.parse(p.payload)
        assert d is not None and d.picture_id is not None
        if d.start:
            pids.append(d.picture_id)
    assert all((b - a) & 0x7FFF == 1 for a, b in itertools.pairwise(pids)), pids  # no gap
    assert down.layer_dropped[2] > 0 and down.layer_down >= 1
    assert down.congestion_pauses == 0 and len(receiver.plis) == plis  # no keyframe asked
    # what went out of the upper layers before the limit, and layer 0 all along
    tids = [vp8.temporal_id(p.payload) for p in out[16:]]
    assert 0 in tids and all(t is not None and t <= down.max_layer for t in tids[-20:])
    assert down._holes == 0
    await up.close(CloseReason.UNPUBLISHED)


async def test_nack_after_left_out_frames_gets_the_right_packet() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _limit(down, 1e6)
    down._max_layer = 0  # only layer 0 from now on
    down._decodable = 0
    for _ in range(12):
        pub.frame()
    # the original of every packet sent: its payload, its picture ID rewritten
    by_out = {p.sequence_number: p for p in sent}
    assert len(by_out) == 4 * PACKETS_PER_FRAME  # the keyframe and three frames of layer 0
    sent.clear()
    down.on_nack(sorted(by_out))
    assert down.retransmitted == len(by_out) and down.nack_misses == 0
    for rtx in sent:
        original_seq = int.from_bytes(rtx.payload[:2], "big")
        assert rtx.payload[2:] == by_out[original_seq].payload
    await up.close(CloseReason.UNPUBLISHED)


async def test_late_packets_keep_their_numbers_and_those_of_left_out_frames_stay_out() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _limit(down, 1e6)
    down._max_layer = 0
    down._decodable = 0
    pub.frame()  # layer 2: left out
    pub.frame()  # layer 1: left out
    pub.frame()  # layer 2
    lost_seq = pub.seq + 1
    pub.frame(lose=(1,))  # layer 0, its second packet lost upstream
    pub.frame()  # layer 2
    pub.frame()  # layer 1
    pub.frame()  # layer 2
    pub.frame()  # layer 0
    assert len(sent) == 2 + 1 + 2
    hole = (sent[2].sequence_number + 1) & 0xFFFF
    assert sent[3].sequence_number == (hole + 1) & 0xFFFF  # the lost one's number kept free
    # the publisher's retransmission arrives: it takes the number kept for it
    up.on_rtp(_rtp(lost_seq, 4 * 6000, pub.sent[lost_seq], marker=1))
    assert sent[-1].sequence_number == hole
    # with the picture ID its frame went out with (4, less the three frames left out before it)
    assert sent[-1].payload == vp8.rewrite_picture_id(pub.sent[lost_seq], -3)
    assert sent[-1].payload[1:4] == sent[2].payload[1:4]
    # a late packet of a frame left out is not forwarded
    count = len(sent)
    left_out_seq = (lost_seq - 3) & 0xFFFF
    up.on_rtp(_rtp(left_out_seq, 3 * 6000, pub.sent[left_out_seq], marker=1))
    assert len(sent) == count
    await up.close(CloseReason.UNPUBLISHED)


async def test_layers_come_back_from_a_layer_sync_frame_once_the_link_is_free() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _limit(down, 1e6)
    down._max_layer = 0
    down._decodable = 0
    for _ in range(7):
        pub.frame()
    down._link_budget = None  # the link is no longer limited
    sent.clear()
    tids = [pub.frame() for _ in range(8)]
    forwarded = [vp8.temporal_layer(p.payload) for p in sent if vp8.is_frame_start(p.payload)]
    # picture 8 (layer 0) goes, 9 (layer 2, sync) waits for layer 1, 10 (layer 1, sync) goes,
    # 11 (layer 2, no sync) goes as layer 1 is back; then everything
    assert tids == [0, 2, 1, 2, 0, 2, 1, 2]
    assert forwarded[0] == (0, False)
    assert (2, True) not in forwarded[:2] and (1, True) in forwarded
    assert [layer[0] for layer in forwarded if layer is not None][-4:] == [0, 2, 1, 2]
    assert down.max_layer == ALL_LAYERS
    await up.close(CloseReason.UNPUBLISHED)


def test_layer_goes_down_on_debt_and_up_after_a_calm_period_with_room() -> None:
    down = RtpDownTrack.__new__(RtpDownTrack)
    down._down_id = "x"
    down._max_layer, down._top_layer, down._decodable = ALL_LAYERS, 2, ALL_LAYERS
    down._layer_changed = down._layer_debt_time = -1e9
    down._layer_bytes, down._layer_bps = [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]
    down._layer_window_start = None
    down._keyframe_bytes, down._keyframe_bps = 0, 0.0
    down.layer_down = down.layer_up = 0
    budget = congestion.TokenBucket(10_000, 1.0, 0.0)  # 80 kbit/s
    budget.spend(13_000, 0.0)  # behind by 0.3 s
    down._choose_layer(budget, 0.0)
    assert down.max_layer == 1 and down._decodable == 1
    down._choose_layer(budget, 0.1)  # held: one layer's effect is seen first
    assert down.max_layer == 1
    budget.spend(5_000, 0.2)  # behind by more than PAUSE_DEBT: layer 0 at once, hold or not
    down._choose_layer(budget, 0.2)
    assert down.max_layer == 0 and down.layer_down == 2
    # calm: the budget fills; what the layers brought in over a window decides the way up
    down._layer_bytes = [5_000, 5_000, 2_500, 0]  # per layer in 2.5 s: 16, 16, 8 kbit/s
    down._choose_layer(budget, 2.5)  # the window closes
    assert down._layer_bps[:3] == [16_000.0, 16_000.0, 8_000.0]
    down._choose_layer(budget, 3.0)
    assert down.max_layer == 0  # not calm long enough
    down._choose_layer(budget, 4.0)
    assert down.max_layer == 1 and down.layer_up == 1  # 80 kbit/s >= 1.1 x 32
    down._layer_bps = [40_000.0, 30_000.0, 30_000.0, 0.0]
    down._layer_window_start = 7.0
    down._choose_layer(budget, 8.0)
    assert down.max_layer == 1  # 80 kbit/s < 1.1 x 100: no room for layer 2


def test_a_layered_publisher_is_held_only_to_what_leaves_a_thin_subscriber_layer_0() -> None:
    # without layers the one below the floor is not counted; with them it holds the publisher
    # to what leaves it layer 0
    estimates = [1_000_000, 400_000, 100_000]
    assert congestion.publisher_target(estimates, uplink=2_000_000) == 400_000
    layered = congestion.publisher_target(estimates, uplink=2_000_000, layered=True)
    assert layered == int(100_000 / congestion.LAYER0_SHARE)
    # never above the best subscriber, never below the floor, capped by the uplink
    assert congestion.publisher_target([300_000, 200_000], uplink=None, layered=True) == 300_000
    assert congestion.publisher_target([1_000_000, 50_000], uplink=None, layered=True) == 150_000
    assert congestion.publisher_target([1_000_000, 250_000], uplink=400_000, layered=True) == (
        400_000
    )
    assert congestion.publisher_target([100_000], uplink=None, layered=True) == 150_000
    assert congestion.publisher_target([None], uplink=None, layered=True) is None


async def test_a_nack_long_after_the_last_left_out_frame_gets_the_right_packet() -> None:
    """Ranges are matched within half the sequence space from their start: 40,000 packets
    forwarded after one left-out frame (minutes of video) must not send a NACK's answer from
    an older range's offset."""
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _limit(down, 1e6)
    down._max_layer = 0
    down._decodable = 0
    for _ in range(4):
        pub.frame()  # an upper-layer frame left out: the offset moves
    assert sum(down.layer_dropped) > 0
    down._link_budget = down._rtx_budget = None  # the link is free again: every layer
    down._max_layer = down._decodable = ALL_LAYERS
    for n in range(20_000):
        pub.frame(key=False)
        if n % 500 == 0:
            await asyncio.sleep(0)  # in slices: the blocking check watches this loop
    last = {p.sequence_number: p for p in sent[-6:]}
    sent.clear()
    down.on_nack(sorted(last))
    assert down.retransmitted == len(last) and down.nack_misses == 0
    for rtx in sent:
        original_seq = int.from_bytes(rtx.payload[:2], "big")
        assert rtx.payload[2:] == last[original_seq].payload
    await up.close(CloseReason.UNPUBLISHED)


# -- a packet missing upstream at the edge of a frame left out --------------------------------
# The subscriber's numbering must keep a number free only for a packet it will be sent: one of
# a frame left out that arrives late (the publisher's retransmission) or is NACKed must not
# leave a hole it NACKs in vain for ever (a receiver's jitter buffer may wait on it).


def _numbers(sent: list[RtpPacket]) -> list[int]:
    return sorted({p.sequence_number for p in sent})


def _holes(sent: list[RtpPacket]) -> list[int]:
    numbers = _numbers(sent)
    first, last = numbers[0], numbers[-1]
    assert (last - first) & 0xFFFF < 0x8000
    have = set(numbers)
    return [
        (first + i) & 0xFFFF
        for i in range((last - first) & 0xFFFF)
        if (first + i) & 0xFFFF not in have
    ]


def _thin_to_layer_0(down: RtpDownTrack) -> None:
    _limit(down, 1e6)
    down._max_layer = 0
    down._decodable = 0


async def test_lost_first_packet_of_a_left_out_frame_leaves_no_hole() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)  # picture 0: forwarded, its last packet marked
    _thin_to_layer_0(down)
    head = pub.seq
    pub.frame(lose=(0,))  # picture 1, layer 2: left out, its first packet lost upstream
    pub.frame()  # 2, layer 1: left out
    pub.frame()  # 3, layer 2: left out
    pub.frame()  # 4, layer 0: forwarded
    assert len(sent) == 2 * PACKETS_PER_FRAME
    assert _holes(sent) == []  # the lost packet was the left-out frame's: no number kept
    up.on_rtp(_rtp(head, 1 * 6000, pub.sent[head]))  # the publisher's retransmission
    assert len(sent) == 2 * PACKETS_PER_FRAME and _holes(sent) == []
    assert down._holes == 0
    await up.close(CloseReason.UNPUBLISHED)


async def test_lost_last_packet_of_a_left_out_frame_leaves_no_hole() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _thin_to_layer_0(down)
    pub.frame()  # 1, layer 2: left out
    pub.frame()  # 2, layer 1: left out
    tail = (pub.seq + 1) & 0xFFFF
    pub.frame(lose=(1,))  # 3, layer 2: left out, its last packet lost upstream
    pub.frame()  # 4, layer 0: forwarded, its first packet a frame's start
    assert _holes(sent) == []
    up.on_rtp(_rtp(tail, 3 * 6000, pub.sent[tail], marker=1))  # late: still left out
    assert len(sent) == 2 * PACKETS_PER_FRAME and _holes(sent) == []
    assert down._holes == 0
    # picture IDs stay continuous at the subscriber
    pids = [d.picture_id for p in sent if (d := vp8.parse(p.payload)) is not None and d.start]
    assert pids == [0, 1]
    await up.close(CloseReason.UNPUBLISHED)


async def test_a_number_that_turns_out_to_be_a_left_out_frames_is_filled_with_padding() -> None:
    """Three packets lost in a row: the last of a forwarded frame and a whole frame of layer 2
    after it. Nothing says which layer the lost frame was of when the next packet goes out, so
    all three numbers stay free; the forwarded frame's packet takes its number when
    retransmitted, the left-out frame's numbers get padding-only packets (a receiver counts
    them received, and they carry nothing to decode), and a NACK of such a number is answered
    the same way."""
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up, seq=0xFFF0)  # across the wrap
    pub.frame(key=True)
    _thin_to_layer_0(down)
    for _ in range(3):
        pub.frame()  # 1-3: left out
    forwarded_tail = (pub.seq + 1) & 0xFFFF
    pub.frame(lose=(1,))  # 4, layer 0: its last packet lost
    lost_frame = pub.seq
    pub.frame(lose=(0, 1))  # 5, layer 2: lost whole
    pub.frame()  # 6: left out
    pub.frame()  # 7: left out
    pub.frame()  # 8, layer 0
    free = _holes(sent)
    assert len(free) == 3
    down.on_nack(free)  # nothing to answer yet: none has come from the publisher
    assert down.retransmitted == 0 and down.nack_not_in_history == 3
    # the publisher's retransmissions arrive
    up.on_rtp(_rtp(forwarded_tail, 4 * 6000, pub.sent[forwarded_tail], marker=1))
    up.on_rtp(_rtp(lost_frame, 5 * 6000, pub.sent[lost_frame]))
    up.on_rtp(_rtp((lost_frame + 1) & 0xFFFF, 5 * 6000, pub.sent[(lost_frame + 1) & 0xFFFF], 1))
    assert _holes(sent) == []
    by_seq = {p.sequence_number: p for p in sent}
    tail_out, *pads = free
    assert by_seq[tail_out].payload == vp8.rewrite_picture_id(pub.sent[forwarded_tail], -3)
    for pad_out in pads:
        pad = by_seq[pad_out]
        assert pad.payload == b"" and pad.padding_size > 0 and pad.marker == 0
        # it belongs to the frame before it: a receiver that groups packets by timestamp
        # (aiortc's jitter buffer) adds nothing to that frame and sees no frame of its own
        assert pad.timestamp == by_seq[tail_out].timestamp
    assert down._holes == 0 and down.holes_filled == 2
    # the subscriber missed a padding packet and NACKs it: padding again, not a miss
    sent.clear()
    misses = down.nack_misses
    down.on_nack([pads[0]])
    assert [(p.sequence_number, p.payload) for p in sent] == [(pads[0], b"")]
    assert down.nack_misses == misses
    await up.close(CloseReason.UNPUBLISHED)


async def test_random_loss_and_late_retransmissions_leave_no_hole_and_the_right_content() -> None:
    """A thin subscriber at layer 0 of a stream losing a packet in eight upstream, each lost one
    retransmitted by the publisher a few frames later (some twice): once all have come, every
    number of the subscriber's stream has been sent, each with its original's payload (picture
    ID rewritten) or as padding, and every layer-0 frame is there, complete. Picture IDs go on
    without a gap but where a frame of a left-out layer was lost whole (its number was counted
    before anything said it would be left out)."""
    rng = random.Random(18)
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up, seq=0xFF00)
    pub.frame(key=True)
    _thin_to_layer_0(down)
    late: list[tuple[int, int, int, int]] = []  # (when, sequence number, picture, marker)
    lost_whole = 0
    for frame in range(1, 400):
        picture = pub.picture_id
        lose = tuple(part for part in range(PACKETS_PER_FRAME) if rng.random() < 0.125)
        first = pub.seq
        pub.frame(lose=lose)
        lost_whole += len(lose) == PACKETS_PER_FRAME and L1T3[picture % 4] > 0
        for part in lose:
            for _ in range(2 if rng.random() < 0.2 else 1):
                late.append((frame + rng.randint(1, 6), (first + part) & 0xFFFF, picture, part))
        for entry in [e for e in late if e[0] <= frame]:
            late.remove(entry)
            _, seq, pic, marker = entry
            up.on_rtp(_rtp(seq, pic * 6000, pub.sent[seq], marker=marker))
        if frame % 100 == 0:
            await asyncio.sleep(0)
    for _, seq, pic, marker in sorted(late):
        up.on_rtp(_rtp(seq, pic * 6000, pub.sent[seq], marker=marker))
    assert _holes(sent) == [], _holes(sent)
    assert down._holes == 0 and down.holes_filled > 0
    by_picture: dict[int, set[int]] = {}
    tl0s = set()
    for p in sent:
        if not p.payload:
            continue  # padding
        d = vp8.parse(p.payload)
        assert d is not None and d.tid == 0 and d.picture_id is not None  # layer 0 only
        by_picture.setdefault(d.picture_id, set()).add(p.sequence_number)
        tl0s.add(d.tl0_pic_idx)
        # the payload is its original's (publisher's numbering: the history still holds it)
        original = down._original(p.sequence_number)
        assert original is not None
        assert p.payload == vp8.rewrite_picture_id(pub.sent[original[0]], original[1])
    assert tl0s == set(range(100))  # every layer-0 frame (TL0PICIDX is not rewritten)
    assert all(len(seqs) == PACKETS_PER_FRAME for seqs in by_picture.values())  # complete
    pictures = sorted(by_picture)
    gaps = sum((b - a - 1) for a, b in itertools.pairwise(pictures))
    assert gaps <= lost_whole, (gaps, lost_whole)
    await up.close(CloseReason.UNPUBLISHED)


async def test_a_pause_skips_past_aiortcs_jitter_buffer_so_the_keyframe_decodes_at_once() -> None:
    # the subscriber is aiortc's own jitter buffer (as rtcrtpreceiver.py makes it for video):
    # after a pause it holds the last frame forwarded, waiting for the next frame's first
    # packet; the keyframe the pause ends on must empty it at once, not 512 packets later
    from aiortc.jitterbuffer import JitterBuffer

    sent: list[RtpPacket] = []
    up, down, receiver = _make(sent)
    pub = Publisher(up)
    buffer = JitterBuffer(capacity=512, is_video=True)
    released: list[bytes] = []  # the frames it hands its decoder

    def deliver() -> None:
        for packet in sent:
            packet._data = packet.payload  # type: ignore[attr-defined]
            _, frame = buffer.add(packet)
            if frame is not None:
                released.append(frame.data)
        sent.clear()

    def keyframe(data: bytes) -> bool:
        d = vp8.parse(data)
        return d is not None and data[d.size] & 1 == 0  # the VP8 frame tag's P bit clear

    pub.frame(key=True)
    for _ in range(7):
        pub.frame()
    deliver()
    assert len(released) == 7  # every frame but the last (it waits for the next one)
    _thin_to_layer_0(down)
    down._link_budget.spend(10 * 1e6, time.monotonic())  # type: ignore[union-attr]
    while not down._congested:
        pub.frame()  # layer 0 behind by far more than PAUSE_DEBT: a pause
    await asyncio.sleep(0)
    assert down.congestion_pauses == 1 and len(receiver.plis) >= 1  # the keyframe asked
    down._link_budget = None
    for _ in range(3):
        pub.frame()  # left out: no keyframe yet
    deliver()
    before = len(released)
    pub.frame(key=True)
    pub.frame()
    deliver()
    # the keyframe came out as soon as the frame after it began: the buffer did not wait on
    # the frame it held from before the pause (it drops that one, unfinished)
    assert [keyframe(data) for data in released[before:]] == [True], len(released) - before
    # its receiver's keyframe request for the jump is not passed on to the publisher
    up_plis = len(receiver.plis)
    down.on_keyframe_request()
    assert down.resume_plis_ignored == 1 and len(receiver.plis) == up_plis
    await up.close(CloseReason.UNPUBLISHED)


async def test_layer_0_that_fits_pays_a_keyframes_debt_off_instead_of_pausing() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up)
    pub.frame(key=True)
    _thin_to_layer_0(down)
    rate = 10_000.0  # bytes/s: 80 kbit/s
    now = time.monotonic()
    down._link_budget = congestion.TokenBucket(rate, 1.0, now)
    down._link_budget.spend(2.0 * rate, now)  # behind by 1 s: past PAUSE_DEBT, within 2.5 s
    down._keyframe_time = now - 10  # long past the keyframe's grace
    down._layer_window_start = now
    # layer 0 brought 90 kbit/s over the window, 50 of it a keyframe: its frames take 40
    down._layer_bps, down._keyframe_bps = [90_000.0, 0.0, 0.0, 0.0], 50_000.0
    for _ in range(8):
        pub.frame()
    assert down.congestion_pauses == 0 and not down._congested
    assert any(vp8.temporal_id(p.payload) == 0 for p in sent[PACKETS_PER_FRAME:])
    # layer 0's own frames over the budget: the debt would only grow, so it pauses
    down._layer_bps, down._keyframe_bps = [90_000.0, 0.0, 0.0, 0.0], 0.0
    now = time.monotonic()
    down._link_budget = congestion.TokenBucket(rate, 1.0, now)
    down._link_budget.spend(2.0 * rate, now)  # behind by 1 s again, as above
    for _ in range(4):
        pub.frame()
    assert down.congestion_pauses == 1 and down._congested
    await up.close(CloseReason.UNPUBLISHED)


async def test_probe_copies_of_recent_packets_through_layer_changes_never_reuse_a_number() -> None:
    """A publisher on transport-wide congestion control (TWCC) probes its link by sending copies
    of packets it sent a moment ago (libwebrtc's payload padding, on RTX), so the SFU sees many
    duplicates, of frames it forwarded and of frames it left out, while a thin subscriber's
    layers go down and up. Whatever arrives, one number of the subscriber's stream never carries
    two different packets (a receiver would put one frame's data in another's), and every packet
    sent is its original's, picture ID rewritten, with its original's timestamp."""
    rng = random.Random(1813)
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    pub = Publisher(up, seq=0xFE00)
    pub.frame(key=True)
    timestamps: dict[int, int] = {}  # publisher's sequence number -> timestamp
    late: list[tuple[int, int]] = []  # (when, sequence number): lost, retransmitted later
    for frame in range(1, 600):
        if frame % 40 == 0:
            _thin_to_layer_0(down)  # the link thins: down to layer 0
        elif frame % 40 == 20:
            down._link_budget = None  # and frees: the layers come back from a sync frame
        picture, first = pub.picture_id, pub.seq
        lose = tuple(part for part in range(PACKETS_PER_FRAME) if rng.random() < 0.05)
        pub.frame(lose=lose)
        for part in range(PACKETS_PER_FRAME):
            timestamps[(first + part) & 0xFFFF] = picture * 6000
        late.extend((frame + rng.randint(1, 4), (first + part) & 0xFFFF) for part in lose)
        # probes: copies of packets from the last few frames, some of them twice
        probes = [(pub.seq - rng.randint(1, 24)) & 0xFFFF for _ in range(rng.randint(0, 6))]
        retransmitted = [seq for when, seq in late if when <= frame]
        late = [(when, seq) for when, seq in late if when > frame]
        for seq in probes + retransmitted:
            if seq in pub.sent:
                marker = int((seq - 0xFE00) % PACKETS_PER_FRAME == PACKETS_PER_FRAME - 1)
                up.on_rtp(_rtp(seq, timestamps.get(seq, 0), pub.sent[seq], marker=marker))
        if frame % 100 == 0:
            await asyncio.sleep(0)
    # upper layers left out while thin, and forwarded again in each free period
    assert down.layer_dropped[1] > 0 and down.layer_dropped[2] > 0
    upper = [p for p in sent if p.payload and vp8.temporal_id(p.payload) == 2]
    assert len({p.timestamp for p in upper}) > 10 * 12, len(upper)
    carried: dict[int, tuple[int, bytes]] = {}
    base_ts = sent[0].timestamp  # the key frame's, publisher timestamp 0
    for p in sent:
        if not p.payload:
            continue  # padding for a number left free
        before = carried.setdefault(p.sequence_number, (p.timestamp, p.payload))
        assert before == (p.timestamp, p.payload), f"number {p.sequence_number} carried two packets"
        original = down._original(p.sequence_number)
        if original is None:
            continue  # older than the ranges kept
        seq, pid_delta = original
        assert p.payload == vp8.rewrite_picture_id(pub.sent[seq], pid_delta), p.sequence_number
        assert (p.timestamp - base_ts) & 0xFFFFFFFF == timestamps.get(seq, 0), p.sequence_number
    await up.close(CloseReason.UNPUBLISHED)
