"""Issue 17: viewers never offered the presenter's tracks. The orders of events that could
lose a subscriber offer, each forced on purpose with real aiortc peers: an answer held back
while the room changes (renegotiation while an offer is unanswered), an ``unsubscribe`` while
the offer is out, a ``publish`` crossing the server's offer (the offer before
``publish_answer``), and many viewers joining at once while each drops the others' cameras as
the education bench does. In every one the presenter's tracks reach the viewer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from tests.conftest import Server, join, wait_until


class HeldAnswers(PeerClient):
    """A client that answers the server's offers only when let: the answer is late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.offers_seen = 0

    async def _answer(self, message: dict[str, Any]) -> None:
        self.offers_seen += 1
        await self.gate.wait()
        await super()._answer(message)


def owners(client: PeerClient) -> set[str]:
    return {t["participant"] for t in client.tracks.values()}


def presenter_packets(client: PeerClient, presenter: str) -> int:
    return sum(client.received_packets.get(m, 0) for m in client.mids_for_participant(presenter))


async def held_viewer(server: Server, clients: list[PeerClient], room: str) -> HeldAnswers:
    viewer = HeldAnswers(server.base_url, server.token(room, "viewer"), decode=False)
    clients.append(viewer)
    await viewer.connect()
    return viewer


async def test_a_track_published_while_the_offer_is_unanswered(
    server: Server, clients: list[PeerClient]
) -> None:
    officer = await join(server, clients, "race-a", "officer", decode=False)
    await officer.publish(ToneAudioTrack())
    viewer = await held_viewer(server, clients, "race-a")
    await wait_until(lambda: viewer.offers_seen == 1, what="the first offer")
    # the presenter adds its camera while the viewer's answer to the first offer is late
    await officer.publish(PatternVideoTrack())
    participant = server.sfu.rooms["race-a"].participants["viewer"]
    await wait_until(
        lambda: len(server.sfu.rooms["race-a"].participants["officer"].up_tracks) == 2,
        what="the camera published",
    )
    assert participant.counters.offers_sent == 1  # one offer at a time
    viewer.gate.set()
    await wait_until(
        lambda: len(viewer.mids_for_participant("officer")) == 2,
        timeout=20,
        what="an offer with the camera after the late answer",
    )
    assert participant.counters.offers_sent == 2
    await wait_until(
        lambda: all(viewer.received_packets.get(m) for m in viewer.mids_for_participant("officer")),
        timeout=20,
        what="both presenter tracks flowing",
    )


async def test_an_unsubscribe_while_the_offer_is_out(
    server: Server, clients: list[PeerClient]
) -> None:
    officer = await join(server, clients, "race-b", "officer", decode=False)
    await officer.publish(PatternVideoTrack(), ToneAudioTrack())
    other = await join(server, clients, "race-b", "other", decode=False)
    await other.publish(PatternVideoTrack())
    viewer = await held_viewer(server, clients, "race-b")
    await wait_until(lambda: viewer.offers_seen == 1, what="the first offer")
    others = [
        t["id"]
        for p in (viewer.joined or {})["participants"]
        if p["id"] == "other"
        for t in p["tracks"]
    ]
    assert others
    # the bench's viewer drops the other viewers' cameras as soon as it hears of them, here
    # while the offer that carries them is still unanswered
    await viewer.send({"type": "unsubscribe", "tracks": others})
    await asyncio.sleep(0.2)
    viewer.gate.set()
    await wait_until(
        lambda: owners(viewer) == {"officer"} and viewer.messages[-1].get("type") != "offer",
        timeout=20,
        what="the other's camera gone, the presenter's kept",
    )
    await wait_until(
        lambda: (
            len(viewer.mids_for_participant("officer")) == 2
            and presenter_packets(viewer, "officer") > 0
        ),
        timeout=20,
        what="the presenter flowing",
    )


async def test_a_publish_crossing_the_servers_offer(
    server: Server, clients: list[PeerClient]
) -> None:
    officer = await join(server, clients, "race-c", "officer", decode=False)
    await officer.publish(PatternVideoTrack(), ToneAudioTrack())
    viewer = await held_viewer(server, clients, "race-c")
    await wait_until(lambda: viewer.offers_seen == 1, what="the first offer")
    # the viewer publishes while the server's offer is out: the publish_answer comes first
    publishing = asyncio.ensure_future(viewer.publish(PatternVideoTrack()))
    await asyncio.sleep(0.3)
    viewer.gate.set()  # the reader answers the offer, then reads the publish_answer
    await publishing
    await wait_until(
        lambda: (
            presenter_packets(viewer, "officer") > 0
            and len(viewer.mids_for_participant("officer")) == 2
        ),
        timeout=20,
        what="the presenter flowing",
    )
    assert server.sfu.rooms["race-c"].participants["viewer"].counters.tracks_published == 1


async def test_many_viewers_join_at_once_dropping_each_others_cameras(
    server: Server, clients: list[PeerClient]
) -> None:
    officer = await join(server, clients, "race-d", "officer", decode=False)
    await officer.publish(PatternVideoTrack(), ToneAudioTrack())
    viewers: list[PeerClient] = []

    async def drop_others(viewer: PeerClient, seen: set[str]) -> None:
        ids = [
            t["id"]
            for p in (viewer.joined or {}).get("participants", [])
            if p["id"] != "officer"
            for t in p["tracks"]
        ] + [
            m["track"]["id"]
            for m in list(viewer.messages)
            if m.get("type") == "track_published" and m["track"]["participant"] != "officer"
        ]
        fresh = [i for i in ids if i not in seen]
        if fresh:
            seen.update(fresh)
            await viewer.send({"type": "unsubscribe", "tracks": fresh})

    async def one(n: int) -> None:
        viewer = await join(server, clients, "race-d", f"viewer-{n}", decode=False)
        viewers.append(viewer)
        seen: set[str] = set()
        await drop_others(viewer, seen)
        await viewer.publish(ToneAudioTrack())
        for _ in range(10):
            await drop_others(viewer, seen)
            await asyncio.sleep(0.2)

    await asyncio.gather(*(one(n) for n in range(16)))
    await wait_until(
        lambda: all(presenter_packets(v, "officer") > 0 for v in viewers),
        timeout=40,
        what="the presenter at every viewer",
    )
    for viewer in viewers:
        assert len(viewer.mids_for_participant("officer")) == 2
