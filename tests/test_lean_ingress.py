"""What a forwarding receiver does without (mediaserver/aiortc_hooks.py SfuRtpReceiver): no
decoder thread for a receiver the SFU forwards from, while aiortc peers in the same process
still decode. Real aiortc peers over loopback against a real server."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiortc.mediastreams import MediaStreamError

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.aiortc_hooks import SfuRtpReceiver
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
