"""RtpDownTrack's rewriting rules, on packets in memory.

The lowest tier: the up-track is a real ForwardedUpTrack, but the subscriber's sender is a
stand-in with an SSRC and a packet sink instead of a DTLS transport (a real sender needs a
connected peer; the tests in test_forwarding.py cover that path end to end).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtp import RtpPacket

from mediaserver import rtp
from mediaserver.forwarding import HISTORY_MAX_VIDEO, ForwardedUpTrack, RtpDownTrack
from mediaserver.protocols import CloseReason, TrackInfo

VP8_KEY = bytes([0x10, 0x50, 1, 2, 3])
VP8_DELTA = bytes([0x10, 0x51, 4, 5, 6])
VP8_CONT = bytes([0x00, 7, 8])


@dataclass
class StubReceiver:
    sink: Any = None
    plis: list[int] = field(default_factory=list)

    def attach_sink(self, sink: Any) -> None:
        self.sink = sink

    def detach_sink(self) -> None:
        self.sink = None

    async def send_pli(self, ssrc: int) -> None:
        self.plis.append(ssrc)


@dataclass
class StubSender:
    _ssrc: int = 1111
    _rtx_ssrc: int = 2222
    hooks: Any = None
    transport: Any = None

    def attach_hooks(self, hooks: Any) -> None:
        self.hooks = hooks


def _info() -> TrackInfo:
    return TrackInfo("TR_x", "pub", "video", "video/VP8", 90000, None, ())


def _rtp(seq: int, ts: int, payload: bytes, marker: int = 0) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96,
        sequence_number=seq,
        timestamp=ts,
        marker=marker,
        ssrc=5555,
        payload=payload,
    )
    return packet


def _make(sent: list[RtpPacket]) -> tuple[ForwardedUpTrack, RtpDownTrack, StubReceiver]:
    receiver = StubReceiver()
    up = ForwardedUpTrack(
        _info(),
        receiver,
        pli_min_interval=0.0,  # type: ignore[arg-type]
        log_extra={},
    )
    down = RtpDownTrack("sub/TR_x", up, StubSender())  # type: ignore[arg-type]
    down.on_negotiated(97, 98)
    down._writer = lambda *fields: sent.append(RtpPacket.parse(rtp.build_packet(*fields)))
    return up, down, receiver


async def test_starts_on_keyframe_keeps_gaps_and_rewrites_header() -> None:
    sent: list[RtpPacket] = []
    up, down, _receiver = _make(sent)
    up.on_rtp(_rtp(100, 9000, VP8_DELTA))  # no keyframe yet: dropped, keyframe requested
    assert sent == []
    up.on_rtp(_rtp(101, 12000, VP8_KEY))
    up.on_rtp(_rtp(102, 12000, VP8_CONT, marker=1))
    up.on_rtp(_rtp(105, 15000, VP8_DELTA))  # 103, 104 lost upstream
    assert [p.payload for p in sent] == [VP8_KEY, VP8_CONT, VP8_DELTA]
    assert all(p.ssrc == 1111 and p.payload_type == 97 for p in sent)
    assert sent[1].marker == 1
    s0 = sent[0].sequence_number
    assert [(p.sequence_number - s0) & 0xFFFF for p in sent] == [0, 1, 4]  # the gap stays
    t0 = sent[0].timestamp
    assert [(p.timestamp - t0) & 0xFFFFFFFF for p in sent] == [0, 0, 3000]
    await up.close(CloseReason.UNPUBLISHED)
    assert down.closed


async def test_nack_is_answered_from_history_as_rtx() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    up.on_rtp(_rtp(65534, 1, VP8_KEY))
    up.on_rtp(_rtp(65535, 1, VP8_CONT))
    up.on_rtp(_rtp(0, 3001, VP8_DELTA))  # wraps
    out = [p.sequence_number for p in sent]
    sent.clear()
    down.on_nack([out[1], (out[0] - 1) & 0xFFFF, (out[2] + 1) & 0xFFFF])
    # only the packet it really sent is retransmitted; before-start and future ones are not
    assert len(sent) == 1 and down.retransmitted == 1 and down.nack_misses == 2
    rtx = sent[0]
    assert rtx.payload_type == 98 and rtx.ssrc == 2222
    assert rtx.payload == out[1].to_bytes(2, "big") + VP8_CONT
    await up.close(CloseReason.UNPUBLISHED)


async def test_nack_for_packet_gone_from_history_is_a_miss() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    up.on_rtp(_rtp(10, 0, VP8_KEY))
    first = sent[0].sequence_number
    for i in range(1, HISTORY_MAX_VIDEO + 5):  # arriving at once: the count bound
        up.on_rtp(_rtp(10 + i, i * 3000, VP8_DELTA))
    sent.clear()
    down.on_nack([first])
    assert sent == [] and down.nack_misses == 1
    await up.close(CloseReason.UNPUBLISHED)


async def test_mute_resume_continues_without_a_jump() -> None:
    sent: list[RtpPacket] = []
    up, _down, _ = _make(sent)
    up.on_rtp(_rtp(1, 3000, VP8_KEY))
    up.on_rtp(_rtp(2, 6000, VP8_DELTA))
    up.set_muted(True)
    up.on_rtp(_rtp(3, 9000, VP8_DELTA))
    up.set_muted(False)
    up.on_rtp(_rtp(50, 90000, VP8_DELTA))  # waits for a keyframe after resuming
    up.on_rtp(_rtp(51, 93000, VP8_KEY))
    up.on_rtp(_rtp(52, 96000, VP8_DELTA))
    seqs = [p.sequence_number for p in sent]
    assert len(seqs) == 4
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2, 3]  # no gap the subscriber NACKs
    assert all(
        (b.timestamp - a.timestamp) & 0xFFFFFFFF < 0x80000000 for a, b in itertools.pairwise(sent)
    )  # timestamps keep moving forward
    await up.close(CloseReason.UNPUBLISHED)


async def test_keyframe_requests_are_rate_limited() -> None:
    sent: list[RtpPacket] = []
    receiver = StubReceiver()
    up = ForwardedUpTrack(
        _info(),
        receiver,
        pli_min_interval=10.0,  # type: ignore[arg-type]
        log_extra={},
    )
    up.on_rtp(_rtp(1, 0, VP8_DELTA))  # learn the publisher's SSRC
    for _ in range(5):
        up.request_keyframe()
    import asyncio

    await asyncio.sleep(0.05)
    assert receiver.plis == [5555]  # one now, the rest folded into one deferred request
    await up.close(CloseReason.UNPUBLISHED)
    assert sent == []


async def test_h264_subscriber_never_starts_at_a_second_idr_slice() -> None:
    """aiortc sends an IDR as STAP-A(SPS, PPS) + several FU-A slices, all one timestamp."""
    sent: list[RtpPacket] = []
    receiver = StubReceiver()
    info = TrackInfo("TR_h", "pub", "video", "video/H264", 90000, None, ())
    up = ForwardedUpTrack(
        info,
        receiver,
        pli_min_interval=0.0,  # type: ignore[arg-type]
        log_extra={},
    )
    stap = bytes([0x78, 0x00, 0x02, 0x67, 0x42, 0x00, 0x02, 0x68, 0xCE])
    fu_start, fu_end = bytes([0x7C, 0x85, 1]), bytes([0x7C, 0x45, 2])
    up.on_rtp(_rtp(1, 3000, stap))
    up.on_rtp(_rtp(2, 3000, fu_start))
    # the subscriber arrives here, in the middle of the keyframe
    down = RtpDownTrack("sub/TR_h", up, StubSender())  # type: ignore[arg-type]
    down.on_negotiated(97, None)
    down._writer = lambda *fields: sent.append(RtpPacket.parse(rtp.build_packet(*fields)))
    up.on_rtp(_rtp(3, 3000, fu_end))
    up.on_rtp(_rtp(4, 3000, fu_start))  # second IDR slice: not a place to start
    up.on_rtp(_rtp(5, 3000, fu_end, marker=1))
    assert sent == []
    up.on_rtp(_rtp(6, 6000, stap))  # the next keyframe, from its first packet
    up.on_rtp(_rtp(7, 6000, fu_start))
    assert [p.payload for p in sent] == [stap, fu_start]
    await up.close(CloseReason.UNPUBLISHED)


async def test_late_packet_does_not_pull_the_stream_back() -> None:
    """Issue 18: a reordered (or retransmitted) packet set ``_next_seq`` back, and every NACK
    for what had been sent after it was then refused as never sent."""
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    up.on_rtp(_rtp(10, 0, VP8_KEY))
    up.on_rtp(_rtp(12, 3000, VP8_DELTA))
    up.on_rtp(_rtp(13, 6000, VP8_DELTA))
    up.on_rtp(_rtp(11, 0, VP8_CONT))  # late
    out = {p.payload: p.sequence_number for p in sent}
    assert len(sent) == 4
    sent.clear()
    first = out[VP8_KEY]
    down.on_nack([(first + 2) & 0xFFFF, (first + 3) & 0xFFFF, (first + 1) & 0xFFFF])
    assert down.retransmitted == 3 and down.nack_misses == 0
    # and the next packet continues after the newest, not after the late one
    up.on_rtp(_rtp(14, 9000, VP8_DELTA))
    assert (sent[-1].sequence_number - first) & 0xFFFF == 4
    await up.close(CloseReason.UNPUBLISHED)


async def test_packet_older_than_the_start_is_not_forwarded() -> None:
    sent: list[RtpPacket] = []
    up, _down, _ = _make(sent)
    up.on_rtp(_rtp(20, 3000, VP8_KEY))
    up.on_rtp(_rtp(19, 0, VP8_DELTA))  # from before the keyframe this subscriber started on
    assert [p.payload for p in sent] == [VP8_KEY]
    await up.close(CloseReason.UNPUBLISHED)


async def test_nack_outcomes_are_counted_apart() -> None:
    sent: list[RtpPacket] = []
    up, down, _ = _make(sent)
    up.on_rtp(_rtp(100, 0, VP8_KEY))
    up.on_rtp(_rtp(102, 3000, VP8_DELTA))  # 101 lost upstream: never in the history
    first = sent[0].sequence_number
    down.on_nack([first, (first + 1) & 0xFFFF, (first + 5) & 0xFFFF])
    assert down.retransmitted == 1
    assert down.nack_not_in_history == 1 and down.nack_not_sent == 1 and down.nack_failed == 0
    counters = down.counters()
    assert counters["nacks"] == 3 and counters["retransmitted"] == 1
    await up.close(CloseReason.UNPUBLISHED)


async def test_audio_nack_is_answered_with_the_original_packet() -> None:
    """No RTX for audio: a NACKed audio packet goes again with its own sequence number."""
    sent: list[RtpPacket] = []
    info = TrackInfo("TR_a", "pub", "audio", "audio/opus", 48000, 2, ())
    up = ForwardedUpTrack(info, StubReceiver(), pli_min_interval=0.0, log_extra={})
    down = RtpDownTrack("sub/TR_a", up, StubSender())  # type: ignore[arg-type]
    down.on_negotiated(111, None)
    down._writer = lambda *fields: sent.append(RtpPacket.parse(rtp.build_packet(*fields)))
    for i in range(5):
        up.on_rtp(_rtp(500 + i, i * 960, bytes([i, 1, 2])))
    target = sent[2]
    sent.clear()
    down.on_nack([target.sequence_number])
    assert len(sent) == 1 and down.retransmitted == 1
    assert sent[0].sequence_number == target.sequence_number and sent[0].payload_type == 111
    assert sent[0].payload == target.payload
    await up.close(CloseReason.UNPUBLISHED)


async def test_resuming_after_a_gap_asks_a_keyframe_at_once() -> None:
    import asyncio

    receiver = StubReceiver()
    up = ForwardedUpTrack(_info(), receiver, pli_min_interval=0.0, log_extra={})
    up.on_rtp(_rtp(1, 0, VP8_KEY))
    up.on_rtp(_rtp(2, 3000, VP8_DELTA))
    await asyncio.sleep(0)
    before = len(receiver.plis)
    up.on_rtp(_rtp(3 + 200, 6000, VP8_DELTA))  # a burst of 200 lost: an outage
    await asyncio.sleep(0.01)
    assert up.gaps == 1 and len(receiver.plis) == before + 1
    up.on_rtp(_rtp(204, 9000, VP8_DELTA))  # no gap: nothing more
    await asyncio.sleep(0.01)
    assert up.gaps == 1
    await up.close(CloseReason.UNPUBLISHED)


async def test_after_a_silence_the_subscriber_restarts_on_a_keyframe_without_a_hole() -> None:
    import asyncio

    from mediaserver import forwarding

    sent: list[RtpPacket] = []
    up, _down, receiver = _make(sent)
    up.on_rtp(_rtp(1, 0, VP8_KEY))
    up.on_rtp(_rtp(2, 3000, VP8_DELTA))
    await asyncio.sleep(forwarding.RESTART_SECONDS + 0.1)  # an outage: 30 packets lost
    up.on_rtp(_rtp(33, 90000, VP8_DELTA))  # useless without what was lost
    await asyncio.sleep(0)
    assert up.gaps == 1 and receiver.plis  # a keyframe asked at once
    up.on_rtp(_rtp(34, 93000, VP8_KEY))
    up.on_rtp(_rtp(35, 96000, VP8_DELTA))
    assert [p.payload for p in sent] == [VP8_KEY, VP8_DELTA, VP8_KEY, VP8_DELTA]
    seqs = [p.sequence_number for p in sent]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == [0, 1, 2, 3]  # no hole to NACK
    await up.close(CloseReason.UNPUBLISHED)


async def test_nacks_and_late_packets_are_judged_right_after_the_sequence_wraps() -> None:
    """An hour-long call wraps the 16-bit sequence many times: a NACK for a recent packet is
    still answered and a late packet still forwarded (a difference from the first packet
    sent would have wrapped after 65,536 packets and refused them)."""
    import asyncio

    written: list[tuple[Any, ...]] = []
    up, down, _ = _make([])
    down._writer = lambda *fields: written.append(fields)  # type: ignore[assignment]
    up.on_rtp(_rtp(0, 0, VP8_KEY))
    late = 65536 + 5
    for i in range(1, 65536 + 100):
        if i != late:  # this one arrives late, after the wrap
            up.on_rtp(_rtp(i & 0xFFFF, i * 3000, VP8_DELTA))
        if i % 4096 == 0:
            await asyncio.sleep(0)  # not one long callback on the loop
    up.on_rtp(_rtp(late & 0xFFFF, late * 3000, VP8_DELTA))  # forwarded, not taken as pre-start
    assert len(written) == 65536 + 100
    recent = written[-3][2]  # a sequence number the subscriber saw
    down.on_nack([recent])
    assert down.retransmitted == 1 and down.nack_misses == 0
    await up.close(CloseReason.UNPUBLISHED)


async def test_a_stall_with_nothing_missing_is_not_a_gap() -> None:
    """The server's own event loop stalled: the packets waited in its socket, none is lost,
    so nothing is asked and no subscriber restarts."""
    import asyncio

    from mediaserver import forwarding

    sent: list[RtpPacket] = []
    up, _down, receiver = _make(sent)
    up.on_rtp(_rtp(1, 0, VP8_KEY))
    await asyncio.sleep(0)
    plis = len(receiver.plis)
    await asyncio.sleep(forwarding.RESTART_SECONDS + 0.1)
    up.on_rtp(_rtp(2, 3000, VP8_DELTA))
    await asyncio.sleep(0)
    assert up.gaps == 0 and len(receiver.plis) == plis
    assert [p.payload for p in sent] == [VP8_KEY, VP8_DELTA]
    await up.close(CloseReason.UNPUBLISHED)


async def test_publisher_nacks_are_retried_then_given_up() -> None:
    """The SFU's receiver asks again for a missing packet about every 100 ms (aiortc asks only
    when a new hole opens), at most NACK_MAX_TRIES times."""
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtcrtpreceiver import NackGenerator

    from mediaserver import aiortc_hooks

    receiver: Any = object.__new__(aiortc_hooks.SfuRtpReceiver)
    receiver._enabled = True
    receiver._RTCRtpReceiver__codecs = {
        96: RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    }
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None
    receiver._RTCRtpReceiver__remote_streams = {}
    receiver._RTCRtpReceiver__rtx_ssrc = {}
    receiver._RTCRtpReceiver__nack_generator = NackGenerator()
    forwarded: list[int] = []
    nacked: list[list[int]] = []

    class Sink:
        def on_rtp(self, packet: RtpPacket) -> None:
            forwarded.append(packet.sequence_number)

    async def send_nack(ssrc: int, lost: list[int]) -> None:
        nacked.append(lost)

    receiver._sfu_sink = Sink()
    receiver._send_rtcp_nack = send_nack
    packet = _rtp(1, 0, VP8_KEY)
    packet.payload_type = 96
    await receiver._handle_rtp_packet(packet, 0)
    seq = 3  # 2 is lost
    for _ in range(aiortc_hooks.NACK_MAX_TRIES + 5):
        receiver._last_nack = -1e9  # as if 100 ms had passed since the last NACK
        later = _rtp(seq, seq * 3000, VP8_DELTA)
        later.payload_type = 96
        await receiver._handle_rtp_packet(later, 0)
        seq += 1
    assert nacked[0] == [2]  # at once, when the hole opened
    assert nacked.count([2]) == aiortc_hooks.NACK_MAX_TRIES  # then again, up to the limit
    assert forwarded[0] == 1 and 2 not in forwarded
    # the retransmission lands: forwarded, and no longer asked for
    rtx = _rtp(2, 3000, VP8_DELTA)
    rtx.payload_type = 96
    await receiver._handle_rtp_packet(rtx, 0)
    assert forwarded[-1] == 2 and not receiver._nack_tries
