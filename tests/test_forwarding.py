"""Real aiortc peers over loopback through the SFU: what arrives is exactly what was sent."""

from __future__ import annotations

import asyncio

import aioice.ice
from aiortc.rtp import RTCP_PSFB_PLI, AnyRtcpPacket, RtcpPsfbPacket

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.protocols import CloseReason
from tests.conftest import Server, join, wait_until


def _assert_byte_identical(
    publisher: PeerClient, kind: str, receiver: PeerClient, mid: str, what: str
) -> None:
    """Every packet received is the packet sent with the same (rewritten) sequence number,
    byte for byte, and between the first and the last arrival nothing is missing (call after
    _stop_sending, so that retransmissions have landed).

    The SFU rewrites sequence numbers with a constant offset: it is found from the first
    received packet whose payload occurs once among those sent.
    """
    ssrc = _ssrc_of(publisher, kind)
    sent = dict(zip(publisher.sent_seqs[ssrc], publisher.sent_hashes[ssrc], strict=True))
    received = list(zip(receiver.received_seqs[mid], receiver.received_hashes[mid], strict=True))
    assert len(received) > 20, f"{what}: only {len(received)} packets"
    counts: dict[str, int] = {}
    for h in sent.values():
        counts[h] = counts.get(h, 0) + 1
    by_hash = {h: seq for seq, h in sent.items() if counts[h] == 1}
    anchor = next(((seq, h) for seq, h in received if h in by_hash), None)
    assert anchor is not None, f"{what}: no received payload matches one sent"
    offset = (anchor[0] - by_hash[anchor[1]]) & 0xFFFF
    altered = [seq for seq, h in received if sent.get((seq - offset) & 0xFFFF) != h]
    assert not altered, f"{what}: {len(altered)} packets differ from what was sent"
    got = {(seq - offset) & 0xFFFF for seq, _ in received}
    anchor_sent = (anchor[0] - offset) & 0xFFFF
    first = min(got, key=lambda s: (s - anchor_sent) & 0xFFFF)
    last = max(got, key=lambda s: (s - first) & 0xFFFF)
    last_sent = publisher.sent_seqs[ssrc][-1]
    # NACKs recover a loss once a later packet reveals it; a loss at the very end of a stream
    # that stopped is revealed by nothing, so completeness is checked up to the last arrival
    span = (last - first) & 0xFFFF
    missing = [(first + k) & 0xFFFF for k in range(span + 1) if (first + k) & 0xFFFF not in got]
    assert not missing, (
        f"{what}: sent packets {missing[:10]} never arrived; first {first}, "
        f"last {last}, last sent {last_sent}, {len(got)} received"
    )
    assert (last_sent - last) & 0xFFFF < 100, f"{what}: stopped receiving long before the end"


async def _stop_sending(publishers: list[PeerClient]) -> None:
    """End the publishers' tracks and let what is in flight (retransmissions too) land."""
    for publisher in publishers:
        assert publisher.publisher_pc is not None
        for sender in publisher.publisher_pc.getSenders():
            if sender.track is not None:
                sender.track.stop()
    await asyncio.sleep(1.5)


def _participant_id(client: PeerClient) -> str:
    assert client.joined is not None, "not joined"
    participant_id: str = client.joined["participant"]["id"]
    return participant_id


def _ssrc_of(client: PeerClient, kind: str) -> int:
    assert client.publisher_pc is not None
    for transceiver in client.publisher_pc.getTransceivers():
        if transceiver.kind == kind:
            return transceiver.sender._ssrc
    raise AssertionError(kind)


async def test_three_parties_receive_each_other_byte_identical(
    server: Server, clients: list[PeerClient]
) -> None:
    names = ["alice", "bob", "carol"]
    parties = [await join(server, clients, "mediation", n, record_payloads=True) for n in names]
    for i, party in enumerate(parties):
        await party.publish(
            PatternVideoTrack(fps=15), ToneAudioTrack(300 + 100 * i), video_codec="video/VP8"
        )

    def everyone_has_everything() -> bool:
        for receiver in parties:
            for sender in names:
                if sender == _participant_id(receiver):
                    continue
                mids = receiver.mids_for_participant(sender)
                if len(mids) != 2 or any(receiver.received_packets[m] < 40 for m in mids):
                    return False
        return True

    await wait_until(everyone_has_everything, timeout=20, what="media from both others")
    await _stop_sending(parties)

    for receiver in parties:
        me = _participant_id(receiver)
        for publisher, name in zip(parties, names, strict=True):
            if name == me:
                continue
            for kind in ("video", "audio"):
                (mid,) = receiver.mids_for_participant(name, kind)
                _assert_byte_identical(publisher, kind, receiver, mid, f"{name} {kind} -> {me}")
                assert receiver.tracks[mid]["codec"].lower() == (
                    "video/vp8" if kind == "video" else "audio/opus"
                )
            # and the video decodes
            (video_mid,) = receiver.mids_for_participant(name, "video")
            assert receiver.frame_counts[video_mid] > 5

    stats = server.sfu.stats()
    assert stats["participants"] == 3
    assert stats["forwarded_packets_video"] > 0


async def test_four_parties_publishing_at_once_all_receive_everything(
    server: Server, clients: list[PeerClient]
) -> None:
    """Everyone joins, then all publish together, so a subscriber's first offer already holds
    several audio and video m-lines. With aiortc's default bundle policy a second audio m-line
    got a transport of its own (on the SFU it never connected; at an aiortc client its packets
    landed in the first audio receiver): found by bench load's mediation rooms."""
    names = ["a", "b", "c", "d"]
    parties = [await join(server, clients, "mediation-4", n, decode=False) for n in names]
    await asyncio.gather(
        *(
            p.publish(PatternVideoTrack(fps=15), ToneAudioTrack(300 + 50 * i))
            for i, p in enumerate(parties)
        )
    )

    def everyone_has_everything() -> bool:
        for receiver in parties:
            me = _participant_id(receiver)
            for sender in names:
                if sender == me:
                    continue
                mids = receiver.mids_for_participant(sender)
                if len(mids) != 2 or any(receiver.received_packets[m] < 30 for m in mids):
                    return False
        return True

    await wait_until(
        everyone_has_everything, timeout=20, what="all 24 forwarded streams carrying packets"
    )


async def test_subscriber_pli_reaches_publisher_and_late_joiner_decodes(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "inquiry", "alice")
    await alice.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    bob = await join(server, clients, "inquiry", "bob")
    await wait_until(lambda: bob.mids_for_participant("alice", "video") != [], what="offer")
    (bob_mid,) = bob.mids_for_participant("alice", "video")
    await wait_until(lambda: bob.frame_counts[bob_mid] > 3, what="bob decodes")

    # count the PLIs that reach alice's video sender
    assert alice.publisher_pc is not None
    sender = next(t.sender for t in alice.publisher_pc.getTransceivers() if t.kind == "video")
    plis: list[RtcpPsfbPacket] = []
    original = sender._handle_rtcp_packet

    async def tap(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            plis.append(packet)
        await original(packet)

    sender._handle_rtcp_packet = tap  # type: ignore[method-assign]  # the test taps it
    await asyncio.sleep(0.5)  # past the relay's rate limit
    before = len(plis)
    bob_receiver = next(t.receiver for t in bob.subscriber_pc.getTransceivers() if t.mid == bob_mid)
    bob_downs = server.sfu.rooms["inquiry"].participants["bob"].down_tracks()
    media_ssrc = next(d.sender._ssrc for d in bob_downs if d.up.info.kind == "video")
    await bob_receiver._send_rtcp_pli(media_ssrc)
    await wait_until(lambda: len(plis) > before, timeout=5, what="PLI at the publisher")
    assert plis[-1].media_ssrc == sender._ssrc

    # a late joiner gets a keyframe quickly and decodes a picture
    await asyncio.sleep(2.0)
    carol = await join(server, clients, "inquiry", "carol")
    await wait_until(lambda: carol.mids_for_participant("alice", "video") != [], what="offer")
    (carol_mid,) = carol.mids_for_participant("alice", "video")
    await wait_until(
        lambda: carol.frame_counts[carol_mid] >= 1,
        timeout=5,
        what="late joiner's first decoded frame",
    )
    frame = carol.frames[carol_mid][-1]
    assert (frame.width, frame.height) == (320, 240)


async def test_h264_is_forwarded_byte_identical(server: Server, clients: list[PeerClient]) -> None:
    alice = await join(server, clients, "h264", "alice", record_payloads=True)
    bob = await join(server, clients, "h264", "bob", record_payloads=True)
    await alice.publish(PatternVideoTrack(fps=15), video_codec="video/H264")
    await wait_until(lambda: bob.mids_for_participant("alice", "video") != [], what="offer")
    (mid,) = bob.mids_for_participant("alice", "video")
    assert bob.tracks[mid]["codec"].lower() == "video/h264"
    await wait_until(lambda: bob.frame_counts[mid] >= 10, timeout=15, what="H.264 decoded")
    await _stop_sending([alice])
    _assert_byte_identical(alice, "video", bob, mid, "H.264 alice -> bob")


async def test_education_one_publisher_thirty_viewers(
    server: Server, clients: list[PeerClient]
) -> None:
    from mediaserver import aiortc_hooks

    aiortc_hooks.install()  # viewers count packets in their receivers instead of decoding
    teacher = await join(server, clients, "education", "teacher")
    await teacher.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    viewers = [
        await join(server, clients, "education", f"viewer{i}", decode=False) for i in range(30)
    ]

    def all_receiving() -> bool:
        return all(
            len(v.mids_for_participant("teacher")) == 2
            and all(v.received_packets[m] >= 20 for m in v.mids_for_participant("teacher"))
            for v in viewers
        )

    await wait_until(all_receiving, timeout=30, what="30 viewers receiving audio and video")
    room = server.sfu.rooms["education"]
    video = next(up for up in room.up_tracks() if up.info.kind == "video")
    assert len(video.down_tracks()) == 30
    # every viewer's stream is contiguous: no sequence gaps on a loss-free loopback
    for viewer in viewers:
        for mid in viewer.mids_for_participant("teacher"):
            first, highest, count = viewer.received_seq[mid]
            assert count >= ((highest - first) & 0xFFFF) + 1


async def test_subscriber_nack_is_answered_from_history(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "nack", "alice")
    bob = await join(server, clients, "nack", "bob", record_payloads=True)
    await alice.publish(PatternVideoTrack(fps=15))
    await wait_until(lambda: bob.mids_for_participant("alice", "video") != [], what="offer")
    (mid,) = bob.mids_for_participant("alice", "video")
    await wait_until(lambda: bob.received_packets[mid] > 20, what="video at bob")
    down = server.sfu.rooms["nack"].participants["bob"].down_tracks()[0]
    receiver = next(t.receiver for t in bob.subscriber_pc.getTransceivers() if t.mid == mid)
    _, highest, _ = bob.received_seq[mid]
    before = down.retransmitted
    await receiver._send_rtcp_nack(bob.received_ssrc[mid], [(highest - 3) & 0xFFFF])
    await wait_until(
        lambda: down.retransmitted == before + 1, timeout=5, what="the NACKed packet retransmitted"
    )
    assert down.nacks >= 1


class _RelayedProtocol(aioice.ice.StunProtocol):
    """A stand-in for aioice's TURN protocols (no TURN server runs here): an ICE protocol of
    another class than ``StunProtocol``, so the SFU sends over it the relayed way, through a
    task per packet; each send waits a relay's round trip before it goes out for real."""

    relay_sent: int
    relay_cancelled: int

    async def send_data(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            self.relay_cancelled += 1
            raise
        await super().send_data(data, addr)
        self.relay_sent += 1


async def test_relayed_sends_belong_to_the_participant_and_are_cancelled_on_close(
    server: Server, clients: list[PeerClient]
) -> None:
    pub = await join(server, clients, "relay", "pub")
    sub = await join(server, clients, "relay", "sub", decode=False)
    await pub.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["relay"]
    await wait_until(lambda: len(room.up_tracks()) == 1, what="track published")
    track_id = room.up_tracks()[0].info.track_id
    participant = room.participants["sub"]
    await wait_until(
        lambda: any(d.packets for d in participant.down_tracks()), timeout=20, what="forwarding"
    )

    # the subscriber connection's nominated pair becomes a relayed one...
    dtls = participant.subscriber_pc.getTransceivers()[0].sender.transport
    protocol = dtls.transport._connection._nominated[1].protocol
    protocol.__class__ = _RelayedProtocol
    assert isinstance(protocol, _RelayedProtocol)
    protocol.relay_sent = protocol.relay_cancelled = 0
    # ...which a new down-track's writer takes (the old one keeps its direct socket)
    await sub.send({"type": "unsubscribe", "tracks": [track_id]})
    await wait_until(lambda: not participant.down_tracks(), what="unsubscribed")
    await sub.send({"type": "subscribe", "tracks": [track_id]})
    await wait_until(lambda: protocol.relay_sent > 20, timeout=20, what="relayed sends")
    received = sum(sub.received_packets.values())
    await wait_until(
        lambda: sum(sub.received_packets.values()) > received + 10,
        timeout=20,
        what="relayed packets arriving",
    )

    # in flight, they are the participant's tasks, counted in the dump...
    await wait_until(lambda: len(participant.tasks) >= 3, what="relayed sends in flight")
    assert server.sfu.dump()["tasks"] >= 3
    # ...and its close cancels and awaits them (they were never cancelled before)
    await participant.close(CloseReason.REMOVED)
    assert protocol.relay_cancelled > 0
    assert len(participant.tasks) == 0 and participant.tasks.closed
