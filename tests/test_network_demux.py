"""Demultiplexing by mid (issue 18): the SFU writes the ``sdes:mid`` header extension each
subscriber negotiated, so a client that routes by mid (RFC 8843 section 9.2: Firefox, a
client written from the docs) needs no ``a=ssrc`` to tell two video tracks apart."""

from __future__ import annotations

import re
from typing import Any

from aiortc.rtp import RtpPacket

from bench.peer import PatternVideoTrack, PeerClient
from mediaserver import rtp
from tests.conftest import Server, join, wait_until


class MidRoutingClient(PeerClient):
    """A client that ignores the offer's SSRCs and routes every packet by its mid."""

    routed_by_mid = 0

    async def _answer(self, message: dict[str, Any]) -> None:
        sdp = message["sdp"]
        assert re.search(rf"a=extmap:\d+ {re.escape(rtp.MID_URI)}", sdp), "mid not offered"
        # no SSRCs to go by: aiortc's own router falls back on the payload type, which two
        # video tracks share
        stripped = "".join(
            line for line in sdp.splitlines(keepends=True) if not line.startswith("a=ssrc")
        )
        await super()._answer(message | {"sdp": stripped})
        for transceiver in self.subscriber_pc.getTransceivers():
            router = transceiver.receiver.transport._rtp_router
            if getattr(router, "_by_mid", False):
                continue
            router._by_mid = True  # type: ignore[attr-defined]
            original = router.route_rtp

            def route(packet: RtpPacket, _router: Any = router, _original: Any = original) -> Any:
                receiver = _router.mid_table.get(packet.extensions.mid)
                if receiver is None:
                    return _original(packet)
                self.routed_by_mid += 1
                _router.ssrc_table[packet.ssrc] = receiver  # learnt, as RFC 8843 says
                return receiver

            router.route_rtp = route  # type: ignore[method-assign]


async def test_two_video_tracks_in_the_first_offer_are_demultiplexed_by_mid(
    server: Server, clients: list[PeerClient]
) -> None:
    alice = await join(server, clients, "demux", "alice")
    bob = await join(server, clients, "demux", "bob")
    await alice.publish(PatternVideoTrack(fps=15))
    await bob.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["demux"]
    await wait_until(lambda: len(room.up_tracks()) == 2, what="both published")
    # carol's first subscriber offer carries both video tracks
    carol = MidRoutingClient(server.base_url, server.token("demux", "carol"), record_payloads=True)
    clients.append(carol)
    await carol.connect()
    await wait_until(lambda: len(carol.tracks) == 2, what="two tracks offered")
    offer = next(m for m in carol.messages if m["type"] == "offer")
    assert len(offer["tracks"]) == 2
    mids = {name: carol.mids_for_participant(name, "video")[0] for name in ("alice", "bob")}
    await wait_until(
        lambda: all(carol.frame_counts[m] > 5 for m in mids.values()),
        timeout=20,
        what="both videos decoded",
    )
    assert carol.routed_by_mid > 0
    # each mid got exactly the stream the SFU sends for that track, nothing of the other
    participant = room.participants["carol"]
    for name, mid in mids.items():
        transceiver = next(t for t in participant.subscriber_pc.getTransceivers() if t.mid == mid)
        down = next(d for d in participant.down_tracks() if d.sender is transceiver.sender)
        assert down.up.info.participant_id == name
        assert carol.received_ssrc[mid] == transceiver.sender._ssrc
    assert carol.received_ssrc[mids["alice"]] != carol.received_ssrc[mids["bob"]]


async def test_a_subscriber_that_declines_mid_gets_no_extension(
    server: Server, clients: list[PeerClient]
) -> None:
    """Negotiated per subscriber: an answer without the extmap gets no mid in its headers
    (only abs-send-time, which its answer kept, for its bandwidth estimate)."""
    alice = await join(server, clients, "nomid", "alice")
    await alice.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["nomid"]
    await wait_until(lambda: len(room.up_tracks()) == 1, what="published")

    class NoMid(PeerClient):
        async def _answer(self, message: dict[str, Any]) -> None:
            sdp = "".join(
                line for line in message["sdp"].splitlines(keepends=True) if rtp.MID_URI not in line
            )
            await super()._answer(message | {"sdp": sdp})

    plain = NoMid(server.base_url, server.token("nomid", "plain"), record_payloads=True)
    clients.append(plain)
    await plain.connect()
    await wait_until(lambda: len(plain.tracks) == 1, what="offer")
    (mid,) = plain.tracks
    await wait_until(lambda: plain.frame_counts[mid] > 3, timeout=20, what="video decoded")
    (down,) = room.participants["plain"].down_tracks()
    # the block holds one element, abs-send-time (written per packet at _abs_at), and no mid
    assert down._abs_at is not None
    assert down._extension == rtp.extension_block(None, down._extension[4] >> 4)[0]
    assert down.packets > 0


def test_mid_extension_block() -> None:
    block = rtp.mid_extension(1, "0")
    assert block == b"\xbe\xde\x00\x01\x10\x30\x00\x00"
    data = rtp.build_packet(96, 1, 7, 9, 1234, b"abc", 0, rtp.mid_extension(3, "12"))
    from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
    from aiortc.rtp import HeaderExtensionsMap

    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(headerExtensions=[RTCRtpHeaderExtensionParameters(id=3, uri=rtp.MID_URI)])
    )
    packet = RtpPacket.parse(data, extensions)
    assert packet.extensions.mid == "12" and packet.payload == b"abc" and packet.marker == 1
    padded = RtpPacket.parse(rtp.build_packet(96, 0, 8, 9, 1, b"x", 4, block), extensions)
    assert padded.payload == b"x" and padded.padding_size == 4
