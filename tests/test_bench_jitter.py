"""The bench subscribers' video jitter buffer (bench/jitter.py): a frame without its start never
reaches the decoder, and a packet lost for good is given up after a time instead of after 512
numbers. Packets are built by hand (VP8 payload descriptors per RFC 7741); the clock is a
number the test moves, so the time bound is exact whatever the machine's load."""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from bench.jitter import GIVE_UP, GuardedJitterBuffer

VP8 = 96
H264 = 102


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def vp8(seq: int, timestamp: int, *, start: bool, marker: bool = False) -> RtpPacket:
    descriptor = bytes([0x10 if start else 0x00])
    packet = RtpPacket(
        payload_type=VP8,
        sequence_number=seq & 0xFFFF,
        timestamp=timestamp,
        marker=int(marker),
        payload=descriptor + bytes([seq & 0xFF]) * 20,
    )
    packet._data = packet.payload[1:]  # type: ignore[attr-defined]  # what aiortc depayloads
    return packet


def frame(first_seq: int, timestamp: int, count: int = 3) -> list[RtpPacket]:
    return [
        vp8(first_seq + i, timestamp, start=i == 0, marker=i == count - 1) for i in range(count)
    ]


def buffer(clock: Clock) -> GuardedJitterBuffer:
    return GuardedJitterBuffer(is_vp8=lambda pt: pt == VP8, clock=clock)


def feed(jb: JitterBuffer, packets: list[RtpPacket]) -> tuple[list[int], int]:
    """The timestamps of the frames released, and how many adds asked for a keyframe."""
    released, plis = [], 0
    for packet in packets:
        pli, out = jb.add(packet)
        plis += pli
        if out is not None:
            released.append(out.timestamp)
    return released, plis


def test_a_frame_whose_start_was_lost_is_not_released() -> None:
    clock = Clock()
    jb = buffer(clock)
    # the first packet this buffer ever gets is a frame's second (its start lost on the link)
    tail = [vp8(11, 3000, start=False), vp8(12, 3000, start=False, marker=True)]
    released, plis = feed(jb, [*tail, *frame(13, 6000), *frame(16, 9000)])
    assert released == [6000]  # 3000 went nowhere; 9000 waits for the next frame's packet
    assert jb.frames_without_start == 1
    assert plis == 1
    # aiortc's own buffer hands the decoder the broken frame
    plain = JitterBuffer(capacity=512, is_video=True)
    released, _ = feed(plain, [*tail, *frame(13, 6000), *frame(16, 9000)])
    assert released == [3000, 6000]


def test_a_packet_lost_for_good_is_given_up_after_the_time_bound() -> None:
    clock = Clock()
    jb = buffer(clock)
    first = frame(1, 3000)
    broken = frame(4, 6000)
    del broken[0]  # seq 4, the frame's start, never comes
    later = [frame(7 + 3 * i, 9000 + 3000 * i) for i in range(10)]
    # 3000 is whole but waits for its successor's first packet, as in aiortc
    released, plis = feed(jb, [*first, *broken])
    assert released == []
    for packets in later[:3]:  # within the bound it waits (a retransmission may come)
        clock.now += GIVE_UP / 4
        released, plis = feed(jb, packets)
        assert (released, plis) == ([], 0)
    clock.now += GIVE_UP  # past it: the broken frame is skipped; the whole ones come out
    released, plis = feed(jb, later[3])
    assert released == [3000, 9000, 12000]
    assert plis == 1
    assert jb.packets_given_up == 1
    released, plis = feed(jb, later[4])  # one frame an add, so the backlog drains in order
    assert (released, plis) == ([15000, 18000], 0)
    # aiortc's own buffer is still waiting for seq 4 (until a packet 512 numbers later)
    plain = JitterBuffer(capacity=512, is_video=True)
    released, _ = feed(plain, [*first, *broken, *(p for f in later for p in f)])
    assert released == []


def test_a_late_packet_within_the_bound_completes_its_frame() -> None:
    clock = Clock()
    jb = buffer(clock)
    packets = frame(1, 3000) + frame(4, 6000) + frame(7, 9000)
    retransmitted = packets.pop(4)  # seq 5, the middle of the 6000 frame
    released, _ = feed(jb, packets)
    assert released == [3000]
    clock.now += GIVE_UP * 0.9
    released, plis = feed(jb, [retransmitted, *frame(10, 12000)])
    assert released == [6000, 9000]
    assert plis == 0 and jb.packets_given_up == 0


def test_keyframe_requests_are_spaced() -> None:
    clock = Clock()
    jb = buffer(clock)
    plis = 0
    # no frame has its start (a link that drops every first packet): each is dropped, and a
    # keyframe is asked for at most every PLI_INTERVAL (0.5 s; the clock moves 1/8 s a frame)
    for i in range(10):
        two = [vp8(2 * i, 3000 * i, start=False), vp8(2 * i + 1, 3000 * i, start=False)]
        released, asked = feed(jb, two)
        plis += asked
        assert released == []
        clock.now += 0.125
    assert jb.frames_without_start == 9  # the last waits for a packet of another frame
    assert plis == 3  # at frames 1, 5 and 9


def test_other_codecs_skip_to_the_next_timestamp() -> None:
    clock = Clock()
    jb = buffer(clock)

    def h264(seq: int) -> RtpPacket:
        # two packets a frame, the marker on the second
        packet = RtpPacket(
            payload_type=H264, sequence_number=seq, timestamp=3000 * ((seq - 1) // 2)
        )
        packet.marker = int(seq % 2 == 0)
        packet._data = b"\x00\x00\x00\x01" + bytes(10)  # type: ignore[attr-defined]
        return packet

    packets = [h264(seq) for seq in range(1, 13)]
    del packets[2]  # seq 3: the first packet of timestamp 3000
    released, _ = feed(jb, packets[:5])  # seqs 1, 2, 4, 5, 6
    assert released == []
    clock.now += GIVE_UP + 0.1
    released, plis = feed(jb, packets[5:])  # seqs 7 to 12
    # 0 was whole; seq 4 (the rest of 3000) is dropped with the hole; 6000 on come out
    assert released == [0, 6000, 9000, 12000]
    assert plis == 1 and jb.packets_given_up == 1
    assert jb.frames_without_start == 0  # not VP8: no start bit is read


def test_two_losses_are_each_given_up_a_bound_after_their_own() -> None:
    clock = Clock()
    jb = buffer(clock)
    packets = [p for i in range(12) for p in frame(1 + 3 * i, 3000 * (i + 1))]
    first_lost, second_lost = packets.pop(4), packets.pop(9)  # seqs 5 and 11, 6 numbers apart
    assert (first_lost.sequence_number, second_lost.sequence_number) == (5, 11)
    released, _ = feed(jb, packets[:12])  # past both holes, within the same 20 ms
    assert released == [3000]
    clock.now += GIVE_UP + 0.01
    released, plis = feed(jb, packets[12:])
    # both frames with a hole (6000 and 12000) are given up at once, not one bound after the
    # other; the last frame waits for its successor
    assert released == [9000, 15000, 18000, 21000, 24000, 27000, 30000, 33000], released
    assert jb.packets_given_up == 2 and plis == 1


def test_a_late_copy_of_a_packet_given_up_is_dropped() -> None:
    clock = Clock()
    jb = buffer(clock)
    stream = [p for i in range(60) for p in frame(1 + 3 * i, 3000 * (i + 1))]
    lost = stream.pop(4)  # seq 5
    released, _ = feed(jb, stream[:10])
    clock.now += GIVE_UP + 0.01
    released, _ = feed(jb, stream[10:])  # 170 numbers later
    assert jb.packets_given_up == 1
    # its retransmission, 170 numbers behind: aiortc's buffer would restart on it (a misorder
    # of 100 or more) and throw away what it holds
    released, plis = feed(jb, [lost])
    assert plis == 0 and jb._origin is not None and jb._origin > 100
    released, plis = feed(jb, frame(181, 3000 * 61))
    assert released and plis == 0
    plain = JitterBuffer(capacity=512, is_video=True)
    plain._origin = jb._origin  # the same state: its origin past the loss
    assert plain.add(lost) == (True, None) and plain._origin == 5  # restarted on the old packet


def test_numbers_wrap_around_65535() -> None:
    clock = Clock()
    jb = buffer(clock)
    packets = [p for i in range(8) for p in frame(65530 + 3 * i, 3000 * (i + 1))]
    assert [p.sequence_number for p in packets[:9]] == [
        65530,
        65531,
        65532,
        65533,
        65534,
        65535,
        0,
        1,
        2,
    ]
    lost = packets.pop(6)  # seq 0, the start of the third frame, just past the wrap
    released, _ = feed(jb, packets[:9])
    assert released == [3000]  # 6000 waits for its successor's start, seq 0
    clock.now += GIVE_UP + 0.01
    released, plis = feed(jb, packets[9:])
    # 6000 was whole before the hole and still comes out; 9000 is given up
    assert released == [6000, 12000, 15000, 18000, 21000], released
    assert plis == 1 and jb.packets_given_up == 1
    assert jb._late_copy_of_given_up(lost.sequence_number)
    # once the numbers have gone round, seq 0 is a new packet ahead of the origin, not a copy
    jb._origin = 40000
    assert not jb._late_copy_of_given_up(lost.sequence_number)


def test_a_frame_cut_by_aiortcs_own_skip_ahead_is_dropped() -> None:
    """Session 14's case: a jump of over 512 numbers (the SFU's pause skip) makes aiortc's
    ``smart_remove`` restart the origin at whatever came, here a frame's second packet."""
    clock = Clock()
    jb = buffer(clock)
    plain = JitterBuffer(capacity=512, is_video=True)
    before = frame(1, 3000) + frame(4, 6000)
    jump = [vp8(1001, 9000, start=False), vp8(1002, 9000, start=False, marker=True)]
    after = frame(1003, 12000) + frame(1006, 15000)
    released, _ = feed(plain, before + jump + after)
    assert 9000 in released  # aiortc hands the decoder the frame without its start
    released, plis = feed(jb, before + jump + after)
    assert 9000 not in released and 12000 in released
    assert jb.frames_without_start == 1 and plis >= 1


def test_h264_a_frame_after_a_lost_last_packet_is_kept() -> None:
    clock = Clock()
    jb = buffer(clock)

    def h264(seq: int, timestamp: int, marker: bool) -> RtpPacket:
        packet = RtpPacket(payload_type=H264, sequence_number=seq, timestamp=timestamp)
        packet.marker = int(marker)
        packet._data = b"\x00\x00\x00\x01" + bytes(10)  # type: ignore[attr-defined]
        return packet

    # frame 3000 loses its last packet (the marker); 6000 and on are whole
    packets = [h264(1, 0, False), h264(2, 0, True), h264(3, 3000, False)]
    packets += [h264(5 + 2 * i + j, 6000 + 3000 * i, j == 1) for i in range(4) for j in (0, 1)]
    released, _ = feed(jb, packets[:5])
    clock.now += GIVE_UP + 0.01
    released += feed(jb, packets[5:])[0]
    assert released == [0, 6000, 9000, 12000], released
    assert jb.packets_given_up == 1
