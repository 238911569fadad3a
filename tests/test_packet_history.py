"""The up-track's packet history (mediaserver/history.py): bounded by time, per kind, with a
floor and a ceiling of packets; and what a closed track keeps."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.rtp import RtpPacket

from mediaserver import history
from mediaserver.forwarding import ForwardedUpTrack
from mediaserver.history import PacketHistory
from mediaserver.protocols import CloseReason, Packet, TrackInfo


def _packet(seq: int, size: int = 100) -> Packet:
    return Packet(seq & 0xFFFF, seq * 3000, 0, bytes(size), 0, False)


def test_video_keeps_two_seconds_and_not_twenty() -> None:
    """A 1.2 Mbit/s picture, 128 packets a second: after 20 s, what is kept is the last 2 s
    (a fixed 1,024 packets kept 8 s of it, and 20 s of a 500 kbit/s one)."""
    h = PacketHistory("video")
    rate = 128  # a power of two: the arrival times are exact
    for i in range(20 * rate):
        h.put(_packet(i, 1100), i / rate)
    newest = 20 * rate - 1
    assert len(h) == 2 * rate + 1  # the packets of the last 2 s, both ends in
    assert h.get(newest) is not None and h.get(newest - 2 * rate) is not None
    assert h.get(newest - 2 * rate - 1) is None
    assert [p.sequence_number for p in h.packets()] == list(range(newest - 2 * rate, newest + 1))


def test_a_light_stream_keeps_what_aiortc_may_nack_again() -> None:
    """15 packets a second: 2 s would be 30 packets, but aiortc's receiver NACKs a missing
    number again until it is 128 behind: the last 128 stay."""
    h = PacketHistory("video")
    for i in range(1000):
        h.put(_packet(i), i / 15)
    assert len(h) == history.MIN_PACKETS["video"] == 128
    assert h.get(999 - 127) is not None and h.get(999 - 128) is None


def test_audio_keeps_one_second() -> None:
    h = PacketHistory("audio")
    for i in range(640):  # 10 s of Opus at 64 packets a second (exact arrival times)
        h.put(_packet(i, 80), i / 64)
    assert len(h) == 65  # 1 s, both ends in
    assert h.get(639 - 64) is not None and h.get(639 - 65) is None


def test_at_most_max_packets_whatever_the_rate() -> None:
    h = PacketHistory("video")
    for i in range(5000):
        h.put(_packet(i), 0.0)  # all at once: only the ceiling bounds it
    assert len(h) == history.MAX_PACKETS["video"]
    assert h.get(4999) is not None and h.get(4999 - history.MAX_PACKETS["video"]) is None


def test_a_paused_stream_keeps_its_last_packets() -> None:
    """Nothing arrives for a minute (a camera off): the last packets are still answerable
    when the next one comes, down to the floor."""
    h = PacketHistory("video")
    for i in range(200):
        h.put(_packet(i), i / 30)
    h.put(_packet(200), 60.0)
    assert len(h) == history.MIN_PACKETS["video"]
    assert h.get(199) is not None and h.get(200) is not None


def test_sequence_numbers_wrap_and_a_second_copy_replaces_the_first() -> None:
    h = PacketHistory("video")
    for i in range(65_500, 65_600):  # wraps at 65,536
        h.put(_packet(i), i / 50)
    first = h.get(10)
    assert first is not None and h.get(65_535) is not None
    again = _packet(10, 50)  # the publisher's retransmission of 10
    h.put(again, 65_600 / 50)
    assert h.get(10) is again
    for i in range(65_600, 65_690):  # the first copy's time is over, not the second's
        h.put(_packet(i), i / 50)
    assert h.get(10) is again
    assert [p for p in h.packets() if p.sequence_number == 10] == [again]
    for i in range(65_690, 65_800):
        h.put(_packet(i), i / 50)
    assert h.get(10) is None


class _Receiver:
    def __init__(self) -> None:
        self.sink: Any = None

    def attach_sink(self, sink: Any) -> None:
        self.sink = sink

    def detach_sink(self) -> None:
        self.sink = None

    async def send_pli(self, media_ssrc: int) -> None:
        return None


async def test_up_track_answers_from_its_history_and_forgets_it_on_close() -> None:
    info = TrackInfo("TR_a", "pub", "audio", "audio/opus", 48000, 2, ())
    up = ForwardedUpTrack(info, _Receiver(), pli_min_interval=1.0, log_extra={})  # type: ignore[arg-type]
    for seq in range(300):
        up.on_rtp(
            RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960, payload=b"x")
        )
        if seq % 50 == 49:
            await asyncio.sleep(0)
    # arriving within a moment: the count bound alone, and audio's is 256
    assert up.get_packet(299) is not None and up.get_packet(299 - 255) is not None
    assert up.get_packet(299 - 256) is None
    await up.close(CloseReason.UNPUBLISHED)
    assert up.get_packet(299) is None  # a closed track holds no payloads
