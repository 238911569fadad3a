"""Join, leave, remove, close: nothing is left behind (mediasoup-style dump after every close)."""

from __future__ import annotations

import asyncio
import gc
import threading

from aiortc import RTCPeerConnection

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.forwarding import ForwardedUpTrack, RtpDownTrack
from mediaserver.protocols import CloseReason
from tests.conftest import Server, join, wait_until

EMPTY = {
    "rooms": 0,
    "participants": 0,
    "up_tracks": 0,
    "down_tracks": 0,
    "local_subscribers": 0,
    "tasks": 0,
}


def _alive(*classes: type) -> tuple[int, ...]:
    # a GC policy (control/loopwatch.py; off in these tests) freezes survivors, and frozen
    # objects are neither collected nor listed: hand any back first, so no leak hides there.
    # One collection and one pass for every class: a full collection over pytest's heap is a
    # deliberate stall of the loop, kept to one.
    gc.unfreeze()
    gc.collect()
    counts = dict.fromkeys(classes, 0)
    for o in gc.get_objects():
        for cls in classes:
            if isinstance(o, cls):
                counts[cls] += 1
    return tuple(counts[cls] for cls in classes)


async def _fifty_cycles(server: Server, clients: list[PeerClient]) -> None:
    host = await join(server, clients, "education", "host")
    await host.publish(PatternVideoTrack(fps=10), ToneAudioTrack())
    for i in range(50):
        guest = await join(server, clients, "education", f"guest{i}")
        if i % 10 == 0:  # every tenth guest publishes too, and waits for media both ways
            await guest.publish(PatternVideoTrack(fps=10))

            def has_media(g: PeerClient = guest) -> bool:
                return any(g.frame_counts.values())

            def offered(g: PeerClient = guest) -> bool:
                assert g.joined is not None
                return host.mids_for_participant(g.joined["participant"]["id"]) != []

            await wait_until(has_media, what="media at the guest")
            await wait_until(offered, what="guest's video offered to the host")
        if i % 2:
            await guest.leave()  # a polite leave...
            await guest.wait_for(lambda m: m["type"] == "bye")
        await guest.close()  # ...or the socket just goes away
        clients.remove(guest)
        await wait_until(
            lambda: len(server.sfu.rooms["education"].participants) == 1,
            what=f"guest{i} cleaned up",
        )

    room = server.sfu.rooms["education"]
    assert list(room.participants) == ["host"]
    host_participant = room.participants["host"]
    # the host's subscriber connection reuses transceivers instead of growing per guest
    assert len(host_participant.subscriber_pc.getTransceivers()) <= 2
    await wait_until(lambda: host_participant.down_tracks() == [], what="host's down-tracks freed")
    alive = server.sfu.dump()
    # the host's own tasks: its negotiator (and a keyframe request on its way, at times)
    assert alive == {
        **EMPTY,
        "rooms": 1,
        "participants": 1,
        "up_tracks": 2,
        "tasks": alive["tasks"],
    }
    assert alive["tasks"] >= 1

    await host.leave()
    await host.wait_for(lambda m: m["type"] == "bye")
    await host.close()
    clients.remove(host)


async def test_fifty_join_leave_cycles_leave_nothing_behind(
    server: Server, clients: list[PeerClient]
) -> None:
    tasks_before = len(asyncio.all_tasks())
    (pcs_before,) = _alive(RTCPeerConnection)

    await _fifty_cycles(server, clients)

    await wait_until(lambda: server.sfu.dump() == EMPTY, what="room closed")
    assert server.sfu.close_reasons["left"] == 26  # 25 odd guests + the host
    assert server.sfu.close_reasons["signalling_lost"] == 25

    # nothing of the media plane survives: peer connections, tracks, tasks, threads
    await asyncio.sleep(0.2)
    assert _alive(RTCPeerConnection, ForwardedUpTrack, RtpDownTrack) == (pcs_before, 0, 0)
    await wait_until(
        lambda: len(asyncio.all_tasks()) <= tasks_before,
        timeout=5,
        what=f"tasks back to {tasks_before}: {asyncio.all_tasks()}",
    )
    # aiortc runs one decoder thread per started receiver; the loop's executor threads stay
    await wait_until(
        lambda: not [t for t in threading.enumerate() if "decoder" in t.name],
        timeout=5,
        what=f"decoder threads gone: {threading.enumerate()}",
    )


async def test_remove_and_room_close_are_idempotent(
    server: Server, clients: list[PeerClient]
) -> None:
    a = await join(server, clients, "r", "a")
    b = await join(server, clients, "r", "b")
    await a.publish(PatternVideoTrack(fps=10))
    await wait_until(lambda: b.mids_for_participant("a") != [], what="offer")
    room = server.sfu.rooms["r"]
    participant = room.participants["a"]
    assert await room.remove("a")
    await participant.close(CloseReason.LEFT)  # a second close returns at once
    assert participant.close_reason == CloseReason.REMOVED
    assert not await room.remove("a")
    bye = await a.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "removed"
    await wait_until(lambda: b.mids_for_participant("a") == [], what="a's track gone at b")
    await room.close(CloseReason.REMOVED)
    await room.close(CloseReason.REMOVED)
    bye = await b.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "room_closed"
    assert server.sfu.dump() == EMPTY


async def test_same_participant_joining_again_replaces_the_old_connection(
    server: Server, clients: list[PeerClient]
) -> None:
    first = await join(server, clients, "r", "p")
    second = await join(server, clients, "r", "p")
    bye = await first.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "duplicate"
    room = server.sfu.rooms["r"]
    assert list(room.participants) == ["p"]
    await second.send({"type": "ping"})
    await second.wait_for(lambda m: m["type"] == "pong")


async def test_local_subscriber_gets_packets_and_decoded_frames(
    server: Server, clients: list[PeerClient]
) -> None:
    """The in-process API the recorder and the verifier use."""
    pub = await join(server, clients, "r", "pub")
    await pub.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    room = server.sfu.rooms["r"]
    await wait_until(lambda: len(room.up_tracks()) == 2, what="tracks published")
    video = next(up for up in room.up_tracks() if up.info.kind == "video")
    audio = next(up for up in room.up_tracks() if up.info.kind == "audio")

    frames_sub = room.subscribe_local(video.info.track_id)
    packets_sub = room.subscribe_local(audio.info.track_id)
    frames = []
    async for frame in frames_sub.frames():
        frames.append(frame)
        if len(frames) == 5:
            break
    assert all((f.width, f.height) == (320, 240) for f in frames)
    packets = []
    async for packet in packets_sub.packets():
        packets.append(packet)
        if len(packets) == 10:
            break
    assert all(p.payload for p in packets)
    assert server.sfu.dump()["local_subscribers"] == 2
    frames_sub.close()
    packets_sub.close()
    assert server.sfu.dump()["local_subscribers"] == 0
