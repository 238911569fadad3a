"""The SFU's fast ingress (mediaserver/aiortc_hooks.py FastIngress): a publisher's packets are
taken in the socket's callback, and the feedback aiortc's receive path gives a publisher (NACK
for a lost packet, REMB) still reaches it. Real aiortc peers over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.aiortc_hooks import FastIngress
from tests.conftest import Server, join, wait_until


def _publisher_ingress(server: Server, room: str, name: str) -> FastIngress | None:
    participant = server.sfu.rooms[room].participants[name]
    dtls = participant.publisher_pc.getTransceivers()[0].receiver.transport
    ingress: FastIngress | None = getattr(dtls, "_remotecase_fast", None)
    return ingress


async def test_publisher_packets_take_the_fast_ingress(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "fast", "alice")
    await alice.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    bob = await join(server, clients, "fast", "bob")
    await wait_until(lambda: len(bob.mids_for_participant("alice", "video")) == 1, what="offer")
    (mid,) = bob.mids_for_participant("alice", "video")
    await wait_until(lambda: bob.frame_counts[mid] > 3, timeout=20, what="bob decodes")
    ingress = _publisher_ingress(server, "fast", "alice")
    assert ingress is not None, "the publisher's transport has no fast ingress"
    room = server.sfu.rooms["fast"]
    ups = room.up_tracks()
    assert {up.info.kind for up in ups} == {"audio", "video"}
    taken, received = ingress.taken, sum(up.packets_in for up in ups)
    frames = bob.frame_counts[mid]
    await wait_until(lambda: bob.frame_counts[mid] > frames + 10, timeout=20, what="more frames")
    # every packet since goes the fast way (both tracks: one bundled transport)
    more_taken = ingress.taken - taken
    more_received = sum(up.packets_in for up in ups) - received
    assert more_taken > 20
    assert more_taken >= more_received


async def test_feedback_from_the_fast_ingress_reaches_the_publisher(
    server: Server, clients: list[PeerClient]
) -> None:
    """A packet lost on the way in is NACKed (and, retransmitted, forwarded); the uplink
    estimate is sent as REMB, fed once a frame."""
    alice = await join(server, clients, "feedback", "alice")
    await alice.publish(PatternVideoTrack(fps=15))
    bob = await join(server, clients, "feedback", "bob", decode=False)
    await wait_until(lambda: len(bob.mids_for_participant("alice", "video")) == 1, what="offer")
    await wait_until(
        lambda: _publisher_ingress(server, "feedback", "alice") is not None,
        timeout=20,
        what="fast ingress",
    )
    ingress = _publisher_ingress(server, "feedback", "alice")
    assert ingress is not None
    assert alice.publisher_pc is not None
    sender = alice.publisher_pc.getTransceivers()[0].sender
    nacked: list[int] = []
    rembs: list[RtcpPsfbPacket] = []
    original = sender._handle_rtcp_packet

    async def tap(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            nacked.extend(packet.lost)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            rembs.append(packet)
        await original(packet)

    sender._handle_rtcp_packet = tap  # type: ignore[method-assign]  # the test taps it

    # lose one video packet between the socket and the fast ingress
    dropped: list[int] = []
    video_ssrc = sender._ssrc

    class Lossy(FastIngress):
        __slots__ = ()

        def handle(self, data: bytes) -> bool:
            ssrc = int.from_bytes(data[8:12], "big") if len(data) >= 12 else None
            if not dropped and ssrc == video_ssrc and 127 < data[0] < 192:
                dropped.append(int.from_bytes(data[2:4], "big"))
                return True  # taken, and lost
            return super().handle(data)

    ingress.__class__ = Lossy
    await wait_until(lambda: bool(dropped), timeout=10, what="a packet dropped")
    await wait_until(lambda: dropped[0] in nacked, timeout=10, what="the NACK at the publisher")
    up = server.sfu.rooms["feedback"].up_tracks()[0]
    await wait_until(
        lambda: _in_history(up, dropped[0]), timeout=10, what="the retransmission forwarded"
    )
    await wait_until(lambda: bool(rembs), timeout=10, what="REMB at the publisher")
    await asyncio.sleep(0)


def _in_history(up: Any, sequence_number: int) -> bool:
    return bool(up.get_packet(sequence_number) is not None)


async def test_ingress_bench_delivers_every_packet_on_both_paths() -> None:
    """bench/ingress.py (the A/B of docs/performance.md): each path hands every one of the
    packets to the receiver's sink (it raises when one never comes)."""
    from bench.ingress import run

    results = await run(packets=300, rounds=1)
    assert len(results["aiortc"]) == len(results["fast"]) == 1
    assert results["aiortc"][0] > 0 and results["fast"][0] > 0


async def test_whole_path_bench_forwards_every_packet() -> None:
    """bench/ingress.py --whole (docs/performance.md, session 10): every datagram goes through
    the fast ingress, the up-track and the down-track's writer (it raises when one does not),
    each stage is timed, and the paced rounds see their datagrams arrive through the socket."""
    from bench.ingress import whole_path

    results = await whole_path(packets=300, rounds=1)
    stages = ("whole", "unprotect", "parse", "receiver", "up_track", "writer", "stages_sum")
    assert all(len(results[k]) == 1 and results[k][0] > 0 for k in stages)
    paced = await whole_path(packets=60, rounds=1, paced=1000.0)
    assert len(paced["paced_path"]) == len(paced["paced_wakeup"]) == 1
    assert paced["paced_received"][0] > 0 and paced["paced_sent_only"][0] > 0


async def test_a_video_receiver_makes_its_estimator_at_its_first_packet() -> None:
    """aiortc's REMB estimator (1,000 rate buckets) is made only for a receiver that gets
    media: a server's subscriber connections never do."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = pc.addTransceiver("video", direction="recvonly").receiver
        audio = pc.addTransceiver("audio", direction="recvonly").receiver
        assert isinstance(video, aiortc_hooks.SfuRtpReceiver)
        assert isinstance(audio, aiortc_hooks.SfuRtpReceiver)
        name = "_RTCRtpReceiver__remote_bitrate_estimator"
        assert getattr(video, name) is None and getattr(audio, name) is None
        assert video._estimator() is not None  # what the first packet does
        assert getattr(video, name) is video._estimator()  # made once
        assert audio._estimator() is None  # aiortc estimates video only
    finally:
        await pc.close()
