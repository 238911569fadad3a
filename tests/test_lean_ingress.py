"""What a forwarding receiver does without (mediaserver/aiortc_hooks.py SfuRtpReceiver): no
decoder thread for a receiver the SFU forwards from, while aiortc peers in the same process
still decode. Real aiortc peers over loopback against a real server."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from aiortc.mediastreams import MediaStreamError
from aiortc.rate import RateCounter, RemoteBitrateEstimator
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import RtpPacket

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.aiortc_hooks import (
    FastIngress,
    LeanNackGenerator,
    LeanStreamStatistics,
    SfuRtpReceiver,
    SfuRtpSender,
    WindowRate,
    lean_estimator,
)
from mediaserver.forwarding import RtpDownTrack
from tests.conftest import Server, join, wait_until

DECODER = "_RTCRtpReceiver__decoder_thread"


async def test_the_sfus_receivers_start_no_decoder_thread(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "lean", "alice")
    await alice.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    bob = await join(server, clients, "lean", "bob")
    await wait_until(lambda: len(bob.mids_for_participant("alice", "video")) == 1, what="offer")
    (mid,) = bob.mids_for_participant("alice", "video")
    await wait_until(lambda: bob.frame_counts[mid] > 3, timeout=20, what="bob decodes")

    participant = server.sfu.rooms["lean"].participants["alice"]
    receivers = [
        t.receiver
        for t in participant.publisher_pc.getTransceivers()
        if t.currentDirection in ("recvonly", "sendrecv")
    ]
    assert {r.track.kind for r in receivers} == {"audio", "video"}
    for receiver in receivers:
        assert isinstance(receiver, SfuRtpReceiver)
        assert receiver._RTCRtpReceiver__started  # type: ignore[attr-defined]
        assert getattr(receiver, DECODER) is None, f"{receiver.track.kind} decoder thread"
    # the server's receivers still send receiver reports (aiortc's task, started by receive)
    assert all(r._RTCRtpReceiver__rtcp_task is not None for r in receivers)  # type: ignore[attr-defined]
    # an aiortc peer in the same process (bob's subscriber connection) still decodes, in
    # aiortc's own thread
    bob_video = next(t.receiver for t in bob.subscriber_pc.getTransceivers() if t.mid == mid)
    thread = getattr(bob_video, DECODER)
    assert isinstance(thread, threading.Thread) and thread.is_alive()

    # as aiortc's decoder thread does when it exits, a stopped receiver ends its remote track
    tracks = [r.track for r in receivers]
    await alice.leave()
    await wait_until(
        lambda: "alice" not in server.sfu.rooms["lean"].participants, timeout=20, what="leave"
    )
    for track in tracks:
        with pytest.raises(MediaStreamError):
            await asyncio.wait_for(track.recv(), 10)
        assert track.readyState == "ended"


def test_window_rate_gives_aiortcs_rate_counter_figures() -> None:
    """WindowRate (one entry a frame) against aiortc's RateCounter (1,000 buckets): the same
    rate at every step, across gaps longer than the window and resets."""
    rng = random.Random(19)
    for _ in range(20):
        theirs, ours = RateCounter(1000, 8000), WindowRate(1000, 8000)
        now = rng.randrange(10**9, 10**10)
        for _ in range(400):
            now += rng.choice((0, 1, 5, 16, 33, 33, 66, 200, 999, 1000, 1001, 2500))
            if rng.random() < 0.01:
                theirs.reset()
                ours.reset()
            assert ours.rate(now) == theirs.rate(now)
            size = rng.randrange(0, 12_000)
            theirs.add(size, now)
            ours.add(size, now)
            assert ours.rate(now) == theirs.rate(now)


def test_lean_estimator_sends_what_aiortcs_sends() -> None:
    """aiortc's REMB estimator with WindowRate gives the same REMB, at the same packets, as
    aiortc's own for a stream that slows down (an overused uplink), pauses and resumes."""
    rng = random.Random(18)
    theirs, ours = RemoteBitrateEstimator(), lean_estimator()
    arrival = 3_900_000_000_000
    send = 0.0
    sent: list[tuple[int, list[int]]] = []
    for frame in range(3000):
        send += 1 / 30
        delay = 0.0 if frame < 1000 else (frame - 1000) * 0.0004  # a queue that builds
        if frame == 2000:
            send += 3.0  # the publisher paused for 3 s
        if frame > 2000:
            delay = rng.random() * 0.005
        arrival_ms = 3_900_000_000_000 + int((send + delay) * 1000)
        arrival = max(arrival, arrival_ms)
        abs_send_time = int(send * 262144) & 0xFFFFFF
        size = rng.randrange(800, 4000)
        a = theirs.add(arrival, abs_send_time, size, 1234)
        b = ours.add(arrival, abs_send_time, size, 1234)
        assert a == b, frame
        if a is not None:
            sent.append(a)
    assert len(sent) > 10
    bitrates = [bitrate for bitrate, _ in sent]
    assert min(bitrates) < max(bitrates)  # the estimate moved: the case is not trivial


async def test_subscriber_rtcp_takes_the_fast_path(
    server: Server, clients: list[PeerClient]
) -> None:
    """A subscriber's RTCP (receiver reports, a PLI) reaches the SFU's down-track from the
    socket's callback (FastIngress.handle_rtcp), not through aiortc's DTLS task."""
    alice = await join(server, clients, "rtcp", "alice")
    await alice.publish(PatternVideoTrack(fps=15))
    bob = await join(server, clients, "rtcp", "bob", decode=False)
    await wait_until(lambda: len(bob.mids_for_participant("alice", "video")) == 1, what="offer")
    participant = server.sfu.rooms["rtcp"].participants["bob"]
    sender = next(
        t.sender
        for t in participant.subscriber_pc.getTransceivers()
        if isinstance(t.sender, SfuRtpSender) and t.sender._sfu_hooks is not None
    )

    def ingress() -> FastIngress | None:
        fast: FastIngress | None = getattr(sender.transport, "_remotecase_fast", None)
        return fast

    await wait_until(lambda: ingress() is not None, timeout=20, what="fast ingress")
    fast = ingress()
    assert fast is not None
    # bob's aiortc receiver sends a receiver report about every second
    await wait_until(lambda: fast.rtcp_taken > 0, timeout=20, what="a receiver report")
    (up,) = [u for u in server.sfu.rooms["rtcp"].up_tracks() if u.info.kind == "video"]
    (down,) = [d for d in up.down_tracks() if d.down_id.startswith(participant.participant_id)]
    assert isinstance(down, RtpDownTrack)
    requests, taken = down.keyframe_requests, fast.rtcp_taken
    (mid,) = bob.mids_for_participant("alice", "video")
    bob_video = next(t.receiver for t in bob.subscriber_pc.getTransceivers() if t.mid == mid)
    await bob_video._send_rtcp_pli(sender._ssrc)
    await wait_until(lambda: down.keyframe_requests > requests, timeout=10, what="the PLI")
    assert fast.rtcp_taken > taken


def test_lean_nack_generator_tracks_what_aiortcs_tracks() -> None:
    """LeanNackGenerator against aiortc's NackGenerator: the same missing set and the same
    answer for every packet of a stream with losses, late and repeated packets, long gaps and
    a sequence-number wrap."""
    rng = random.Random(8)
    theirs, ours = NackGenerator(), LeanNackGenerator()
    seq = 65_000
    for _ in range(20_000):
        step = rng.choice((1, 1, 1, 1, 1, 2, 3, -1, -5, 0, 40, 200))
        seq = (seq + step) & 0xFFFF
        packet = RtpPacket(sequence_number=seq)
        assert ours.add(packet) == theirs.add(packet)
        assert ours.missing == theirs.missing and ours.max_seq == theirs.max_seq
    assert theirs.missing  # the case is not trivial


def test_lean_statistics_count_what_aiortcs_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """LeanStreamStatistics against aiortc's StreamStatistics, on one clock: the same
    counters, jitter and loss (what a receiver report carries) after every packet of a stream
    with losses, late, repeated and reordered packets, timestamps that repeat within a frame,
    jittered arrivals and two sequence-number wraps."""
    import time

    rng = random.Random(10)
    clock = [1_700_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    theirs, ours = StreamStatistics(90000), LeanStreamStatistics(90000)
    seq, frame = 60_000, 0
    for k in range(30_000):
        step = rng.choice((1, 1, 1, 1, 1, 2, 3, -1, -5, 0, 40))
        seq = (seq + step) & 0xFFFF
        if k % 3 == 0:
            frame += 1
        clock[0] += rng.choice((0.0, 0.001, 0.011, 0.033, 0.2))
        packet = RtpPacket(sequence_number=seq, timestamp=(frame * 3000) & 0xFFFFFFFF)
        theirs.add(packet)
        ours.add(packet)
        state = (
            ours.packets_received,
            ours.base_seq,
            ours.max_seq,
            ours.cycles,
            ours.jitter,
            ours.packets_lost,
        )
        assert state == (
            theirs.packets_received,
            theirs.base_seq,
            theirs.max_seq,
            theirs.cycles,
            theirs.jitter,
            theirs.packets_lost,
        ), k
        if k % 100 == 0:  # a receiver report: its fraction over the interval since the last
            assert ours.fraction_lost == theirs.fraction_lost
    assert theirs.cycles >= 2 << 16 and theirs.jitter > 0 and theirs.packets_lost > 0


def test_direct_unprotect_is_pylibsrtps() -> None:
    """FastIngress's unprotect without pylibsrtp's wrapper gives pylibsrtp's clear packet,
    and None where pylibsrtp raises: a tampered packet, a replayed one, one too long."""
    import pylibsrtp
    from pylibsrtp import Policy, Session

    from mediaserver import rtp
    from mediaserver.aiortc_hooks import _direct_unprotect

    rng = random.Random(3)
    key = rng.randbytes(30)
    sender = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    theirs = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    unprotect = _direct_unprotect(Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND)))
    for seq in range(300):
        size = rng.choice((0, 1, 160, 1100, 1300))
        clear = rtp.build_packet(96, seq & 1, seq, seq * 3000, 0x1234, rng.randbytes(size))
        data = sender.protect(clear)
        tampered = bytearray(data)
        tampered[rng.randrange(12, len(data))] ^= 0x40
        assert unprotect(bytes(tampered)) is None
        with pytest.raises(pylibsrtp.Error):
            theirs.unprotect(bytes(tampered))
        assert unprotect(data) == theirs.unprotect(data) == clear
        assert unprotect(data) is None  # a replay
        with pytest.raises(pylibsrtp.Error):
            theirs.unprotect(data)
    assert unprotect(bytes(1501)) is None
    with pytest.raises(ValueError):
        theirs.unprotect(bytes(1501))


async def test_a_video_receiver_has_the_lean_nack_generator() -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection

    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = pc.addTransceiver("video", direction="recvonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        name = "_RTCRtpReceiver__nack_generator"
        assert type(getattr(video, name)) is LeanNackGenerator
        assert getattr(audio, name) is None  # aiortc NACKs video only
    finally:
        await pc.close()
