from __future__ import annotations

from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcrtpreceiver import RemoteStreamTrack

from bench.peer import PatternVideoTrack, PeerClient
from tests.conftest import Server, join, wait_until


async def test_two_party_call_forwards_video_and_audio(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "r1", "alice")
    bob = await join(server, clients, "r1", "bob")
    await alice.publish(PatternVideoTrack(), AudioStreamTrack())
    await wait_until(lambda: len(bob.mids_for_participant("alice")) == 2, what="bob's offer")
    video_mid = bob.mids_for_participant("alice", "video")[0]
    audio_mid = bob.mids_for_participant("alice", "audio")[0]
    await wait_until(
        lambda: bob.frame_counts[video_mid] >= 10 and bob.frame_counts[audio_mid] >= 10,
        timeout=15,
        what="decoded frames at bob",
    )
    frame = bob.frames[video_mid][-1]
    assert (frame.width, frame.height) == (320, 240)
    # bob's frames came through the bench's guarded jitter buffer (bench/jitter.py), which on
    # a clean link drops nothing
    guarded = bob.jitter_buffers[video_mid]
    assert guarded._origin is not None  # it is the buffer that took bob's packets
    assert (guarded.frames_without_start, guarded.packets_given_up) == (0, 0)
    assert audio_mid not in bob.jitter_buffers
    stats = server.sfu.stats()
    assert stats["forwarded_packets_video"] > 0 and stats["forwarded_packets_audio"] > 0
    assert stats["participants"] == 2

    # nothing was decoded on the server: aiortc's remote tracks were never fed
    room = server.sfu.rooms["r1"]
    for transceiver in room.participants["alice"].publisher_pc.getTransceivers():
        track = transceiver.receiver.track
        assert isinstance(track, RemoteStreamTrack) and track._queue.qsize() == 0

    # and /metrics tells the story
    import re

    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.base_url}/metrics") as response,
    ):
        text = await response.text()

    def value(name: str) -> float:
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        assert match, name
        return float(match.group(1))

    assert value("remotecase_sfu_rooms") == 1
    assert value("remotecase_sfu_participants") == 2
    assert value('remotecase_sfu_forwarded_packets_total{kind="video"}') > 0
    assert value('remotecase_sfu_forwarded_bytes_total{kind="audio"}') > 0
    assert value('remotecase_sfu_received_packets_total{kind="video"}') > 0
    # whether a PLI was needed depends on timing; test_forwarding checks the relay itself
    assert value('remotecase_sfu_plis_total{direction="to_publishers"}') >= 0
    assert value('remotecase_sfu_plis_total{direction="from_subscribers"}') >= 0
    assert "remotecase_sfu_nacks_total" in text
