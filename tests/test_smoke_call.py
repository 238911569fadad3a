from __future__ import annotations

from aiortc.mediastreams import AudioStreamTrack

from bench.peer import PatternVideoTrack
from tests.conftest import join, wait_until


async def test_two_party_call_forwards_video_and_audio(server, clients) -> None:
    alice = await join(server, clients, "r1", "alice")
    bob = await join(server, clients, "r1", "bob")
    await alice.publish(PatternVideoTrack(), AudioStreamTrack())
    await wait_until(lambda: len(bob.mids_for_participant("alice")) == 2, what="bob's offer")
    video_mid = bob.mids_for_participant("alice", "video")[0]
    audio_mid = bob.mids_for_participant("alice", "audio")[0]
    await wait_until(
        lambda: bob.frame_counts[video_mid] >= 10 and bob.frame_counts[audio_mid] >= 10,
        timeout=15, what="decoded frames at bob")
    frame = bob.frames[video_mid][-1]
    assert (frame.width, frame.height) == (320, 240)
    stats = server.sfu.stats()
    assert stats["forwarded_packets_video"] > 0 and stats["forwarded_packets_audio"] > 0
    assert stats["participants"] == 2
