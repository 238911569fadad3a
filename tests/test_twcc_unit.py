"""mediaserver.twcc: transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01)
against byte strings built by hand from the draft, and the recorder that makes it: losses,
reordering, the 16-bit wrap, two-byte deltas, and what one packet cannot describe."""

from __future__ import annotations

import random

import pytest

from mediaserver import twcc
from mediaserver.twcc import TwccRecorder, build_feedback, encode_chunks, parse_feedback

MS = 1_000_000  # nanoseconds
TICK = twcc.DELTA_US * 1000  # one delta unit, in nanoseconds


def test_a_run_of_received_packets_byte_for_byte() -> None:
    # four packets from 0x0010, small deltas; reference time 5 (320 ms), feedback count 7
    packet = build_feedback(1, 2, 0x0010, 5, 7, [1, 1, 1, 1], [4, 8, 0, 255])
    expected = bytes.fromhex(
        "afcd0006"  # V=2, P (padded), FMT 15; PT 205 (RTPFB); length 6 (28 bytes)
        "00000001"  # SSRC of packet sender
        "00000002"  # SSRC of media source
        "00100004"  # base sequence number 0x0010, packet status count 4
        "00000507"  # reference time 5, feedback packet count 7
        "2004"  # run-length chunk: T=0, S=01 (small delta), run 4
        "040800ff"  # receive deltas, one byte each (x 250 us)
        "0002"  # padding: zeros, the last byte its length
    )
    assert packet == expected
    back = parse_feedback(packet)
    assert (back.sender_ssrc, back.media_ssrc, back.base, back.count) == (1, 2, 0x10, 4)
    assert (back.reference, back.feedback_count) == (5, 7)
    start = 5 * twcc.REFERENCE_TICKS
    assert back.packets == [
        (0x10, start + 4),
        (0x11, start + 12),
        (0x12, start + 12),
        (0x13, start + 267),
    ]


def test_a_one_bit_status_vector_and_losses() -> None:
    statuses = [1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1]
    # T=1, S=0, then the fourteen symbols 1 0 1 1 0 0 0 1 1 1 0 0 0 1
    assert encode_chunks(statuses) == bytes.fromhex("ac71")
    packet = build_feedback(9, 0, 0xFFFE, 0, 0, statuses, [1] * 7)
    assert packet[4 * 3 : 4 * 4] == bytes.fromhex("fffe000e")
    assert len(packet) == 32 and packet[0] & 0x20 and packet[-3:] == bytes.fromhex("000003")
    back = parse_feedback(packet)
    assert [seq for seq, at in back.packets if at is None] == [
        (0xFFFE + k) & 0xFFFF for k, s in enumerate(statuses) if s == 0
    ]
    assert back.packets[2][0] == 0  # the sequence number wraps inside a packet


def test_two_bit_vector_with_large_and_negative_deltas() -> None:
    # 10 x 250 us, then 100 ms (two bytes), then -1 ms (a reordered arrival: negative)
    packet = build_feedback(1, 2, 100, -1, 255, [1, 2, 2], [10, 400, -4])
    expected = bytes.fromhex(
        "afcd0006"
        "00000001"
        "00000002"
        "00640003"
        "ffffffff"  # reference time -1 (24-bit two's complement), feedback count 255
        "da00"  # T=1, S=1: 01 10 10 then four unused 00
        "0a"
        "0190"
        "fffc"  # one byte, two bytes signed, two bytes signed
        "01"  # one byte of padding
    )
    assert packet == expected
    back = parse_feedback(packet)
    assert back.reference == -1
    assert [at for _, at in back.packets] == [-256 + 10, -256 + 410, -256 + 406]


def test_long_runs_and_the_chunk_choice() -> None:
    # a long loss is one run chunk (up to 8191), a long run of large deltas one too
    assert encode_chunks([0] * 8191) == bytes.fromhex("1fff")
    assert encode_chunks([0] * 8192) == bytes.fromhex("1fff0001")
    assert encode_chunks([2] * 7) == bytes.fromhex("4007")
    # twenty received, then a loss and one more: a run chunk, then a one-bit vector
    assert encode_chunks([1] * 20 + [0, 1]) == bytes.fromhex("20149000")
    with pytest.raises(ValueError):
        build_feedback(0, 0, 0, 0, 0, [1], [256])  # a small delta is one byte
    with pytest.raises(ValueError):
        build_feedback(0, 0, 0, 0, 0, [1, 1], [1])


def test_malformed_feedback_is_refused() -> None:
    good = build_feedback(1, 2, 0x10, 5, 7, [1, 1, 1, 1], [4, 8, 0, 255])
    parse_feedback(good)
    for bad in (
        good[:12],  # shorter than the fixed part
        good[:-4],  # the length says more than is there
        bytes.fromhex("81cd0006") + good[4:],  # FMT 1: a NACK
        good[:20] + bytes.fromhex("6001") + good[22:],  # status 3 is reserved
        good[:-1] + bytes((0x40,)),  # padding longer than the packet
        good[:14] + bytes.fromhex("0010000005072010") + good[22:],  # 16 deltas, 4 there
    ):
        with pytest.raises(ValueError):
            parse_feedback(bad)


def _recorder() -> TwccRecorder:
    return TwccRecorder(sender_ssrc=0x1234, media_ssrc=0x5678, origin_ns=0)


def test_the_recorder_reports_losses_and_arrival_times() -> None:
    rec = _recorder()
    for seq, at in ((10, 100), (11, 104), (14, 170)):  # 12 and 13 lost; 14 after 66 ms
        rec.on_packet(seq, at * MS)
    rec.on_packet(None, 0)  # a packet without the extension: nothing
    [packet] = rec.build(200 * MS)
    back = parse_feedback(packet)
    assert (back.sender_ssrc, back.media_ssrc, back.base, back.count) == (0x1234, 0x5678, 10, 5)
    assert back.reference == 100 * 4 // twcc.REFERENCE_TICKS  # 100 ms in 64 ms units: 1
    ticks = {seq: at for seq, at in back.packets}
    assert ticks == {10: 400, 11: 416, 12: None, 13: None, 14: 680}
    assert rec.build(300 * MS) == []  # nothing new: nothing sent
    rec.on_packet(15, 301 * MS)
    [packet] = rec.build(310 * MS)
    back = parse_feedback(packet)
    assert (back.base, back.count, back.feedback_count) == (15, 1, 1)
    assert back.received() == {15: 1204}


def test_the_recorder_across_the_16_bit_wrap() -> None:
    rec = _recorder()
    for k, seq in enumerate((65533, 65534, 65535, 0, 2)):
        rec.on_packet(seq, (10 + k) * MS)
    [packet] = rec.build(20 * MS)
    back = parse_feedback(packet)
    assert (back.base, back.count) == (65533, 6)
    assert [seq for seq, at in back.packets if at is None] == [1]
    assert [seq for seq, _ in back.packets] == [65533, 65534, 65535, 0, 1, 2]


def test_reordering_within_and_across_feedback() -> None:
    rec = _recorder()
    # within one interval: 12 before 11; deltas stay in sequence order, one negative
    rec.on_packet(10, 10 * MS)
    rec.on_packet(12, 11 * MS)
    rec.on_packet(11, 12 * MS)
    [packet] = rec.build(20 * MS)
    back = parse_feedback(packet)
    assert back.received() == {10: 40, 11: 48, 12: 44}
    assert packet[20:22] == encode_chunks([1, 1, 2])  # 12's delta (-1 ms) takes two bytes
    # across: 14 reported lost, then it arrives: the next feedback starts at it again
    rec.on_packet(13, 30 * MS)
    rec.on_packet(15, 31 * MS)
    [packet] = rec.build(40 * MS)
    assert parse_feedback(packet).packets[1] == (14, None)
    rec.on_packet(14, 45 * MS)
    rec.on_packet(16, 46 * MS)
    rec.on_packet(16, 47 * MS)  # a duplicate counts once
    [packet] = rec.build(50 * MS)
    back = parse_feedback(packet)
    assert (back.base, back.count) == (14, 3)
    assert back.received() == {14: 180, 15: 124, 16: 184}
    # one that comes back after its neighbours were forgotten is not reported again (they
    # would be reported lost)
    rec.on_packet(17, 2000 * MS)
    rec.build(2000 * MS)
    rec.on_packet(9, 2001 * MS)
    assert rec.build(2010 * MS) == []


def test_a_delta_beyond_two_bytes_starts_a_new_packet() -> None:
    rec = _recorder()
    rec.on_packet(1, 1000 * MS)
    rec.on_packet(2, 1100 * MS)  # 100 ms: a two-byte delta
    rec.on_packet(4, 10_000 * MS)  # 8.9 s later: no delta reaches, a new reference time
    first, second = rec.build(10_000 * MS)
    a, b = parse_feedback(first), parse_feedback(second)
    assert (a.base, a.count, b.base, b.count) == (1, 2, 4, 1)
    assert a.received() == {1: 4000, 2: 4400}
    assert b.received() == {4: 40_000}
    assert (a.feedback_count, b.feedback_count) == (0, 1)
    assert first[20:22] == encode_chunks([1, 2])


def test_a_gap_longer_than_one_packet_can_count() -> None:
    rec = _recorder()
    seqs = [0, 30_000, 60_000, 90_000 & 0xFFFF]  # each jump within half the number space
    for k, seq in enumerate(seqs):
        rec.on_packet(seq, (k + 1) * MS)
    packets = [parse_feedback(p) for p in rec.build(10 * MS)]
    assert len(packets) == 2
    assert (packets[0].base, packets[0].count) == (0, 60_001)
    assert (packets[1].base, packets[1].count) == (90_000 & 0xFFFF, 1)
    assert sum(len(p.received()) for p in packets) == 4
    assert all(len(p) <= twcc.MAX_PACKET_BYTES for p in rec.build(10 * MS) or [b""])


def test_many_packets_are_split_under_the_size_limit() -> None:
    rec = _recorder()
    for seq in range(2000):  # 2,000 packets 70 ms apart: a two-byte delta each
        rec.on_packet(seq, seq * 70 * MS)
    built = rec.build(2000 * 70 * MS)
    assert len(built) > 1 and all(len(p) <= twcc.MAX_PACKET_BYTES for p in built)
    seen: dict[int, int] = {}
    for p in built:
        seen.update(parse_feedback(p).received())
    assert seen == {seq: seq * 280 for seq in range(2000)}


def test_random_loss_and_jitter_round_trip() -> None:
    """What the sender learns from the feedback is what arrived: every number once received
    or lost, each arrival to the 250 us unit."""
    rng = random.Random(18)
    rec = _recorder()
    arrivals: dict[int, int] = {}
    now = 0
    sent = 0
    received_seen: dict[int, int] = {}
    lost_seen: set[int] = set()
    for _interval in range(100):
        batch = []
        for _ in range(rng.randint(0, 30)):
            seq = sent & 0xFFFF
            sent += 1
            if rng.random() < 0.05:
                continue  # lost
            batch.append((seq, now + rng.randint(0, 40) * MS))
        rng.shuffle(batch)
        for seq, at in sorted(batch, key=lambda x: x[1]):
            rec.on_packet(seq, at)
            arrivals[seq] = at // TICK
        now += 100 * MS
        for packet in rec.build(now):
            back = parse_feedback(packet)
            for seq, got in back.packets:
                if got is None:
                    lost_seen.add(seq)
                else:
                    received_seen[seq] = got
    assert received_seen == arrivals
    # every number between the first and the last received was reported, received or lost
    first, last = min(arrivals), max(arrivals)
    assert lost_seen == {s for s in range(first, last) if s not in arrivals}


def test_undrained_arrivals_are_bounded() -> None:
    """Review 10: a builder that stopped must not leak; past MAX_PENDING the oldest half goes,
    and what is kept is still reported."""
    recorder = TwccRecorder(origin_ns=0)
    total = twcc.MAX_PENDING * 3 + 5
    for seq in range(total):
        recorder.on_packet(seq & 0xFFFF, seq * 1_000_000)
    assert len(recorder._seqs) <= twcc.MAX_PENDING
    assert recorder.packets_dropped + len(recorder._seqs) == total
    kept = len(recorder._seqs)
    packets = recorder.build(total * 1_000_000)
    assert packets and recorder.packets_recorded == kept
