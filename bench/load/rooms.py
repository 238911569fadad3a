"""How a generator's participants fill one room, on remotecase and on Janus.

Both record each participant as a :class:`~bench.load.receivers.Member` (its sinks, what to
close) and each join time (the signalling round trip, in ms) in the lists they are given.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable

import aiohttp

from .media import Media, tracks
from .protocol import Participant, RoomJob
from .receivers import LatencySink, Member

JoinRoom = Callable[
    [aiohttp.ClientSession, str, RoomJob, Media, list[Member], list[float]], Awaitable[None]
]


async def join_remotecase(
    http: aiohttp.ClientSession,
    base: str,
    room: RoomJob,
    media: Media,
    members: list[Member],
    joins: list[float],
) -> None:
    """Every participant with its development token, as a browser would (bench/peer.py)."""
    from ..peer import PeerClient

    async def bring(spec: Participant) -> None:
        member = Member(time.monotonic())
        members.append(member)
        client = PeerClient(base, spec.token, decode=False, sink_factory=LatencySink)
        client.load_sinks = member.sinks  # type: ignore[attr-defined]
        member.closers.append(client.close)
        await client.connect()
        joins.append(1000 * (time.monotonic() - member.started))
        if spec.publish:
            await client.publish(*tracks(media))

    await asyncio.gather(*(bring(s) for s in room.participants))


async def join_janus(
    http: aiohttp.ClientSession,
    base: str,
    room: RoomJob,
    media: Media,
    members: list[Member],
    joins: list[float],
) -> None:
    """The same room in Janus's VideoRoom: publishers join with an offer; then everyone
    subscribes to every other publisher's feed in one peer connection."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from mediaserver.aiortc_hooks import SfuRtpReceiver

    from ..janus import JanusSession
    from ..peer import _config

    number = 1000 + zlib.crc32(room.room.encode()) % 10**9
    specs = room.participants
    sessions = []
    for _ in specs:
        session = JanusSession(http, base)
        await session.create()
        sessions.append(session)
    admin = await sessions[0].attach()
    await sessions[0].message(
        admin,
        {
            "request": "create",
            "room": number,
            "publishers": len(specs),
            "videocodec": "vp8",
            "audiocodec": "opus",
            "bitrate": 0,
        },
    )
    feeds: dict[int, int] = {}  # participant index -> feed ID

    async def publish(i: int) -> None:
        member = Member(time.monotonic())
        members.append(member)
        session = sessions[i]
        member.closers.append(session.close)
        pc = RTCPeerConnection(_config())
        member.closers.append(pc.close)
        for track in tracks(media):
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        handle = await session.attach()
        event = await session.message(
            handle,
            {
                "request": "joinandconfigure",
                "room": number,
                "ptype": "publisher",
                "display": f"p{i}",
            },
            {"type": "offer", "sdp": pc.localDescription.sdp},
        )
        await session.candidates_done(handle)
        await pc.setRemoteDescription(RTCSessionDescription(event["jsep"]["sdp"], "answer"))
        joins.append(1000 * (time.monotonic() - member.started))
        for _ in range(200):  # a feed can be subscribed once its media is up
            if pc.connectionState == "connected":
                break
            await asyncio.sleep(0.05)
        feeds[i] = int(event["plugindata"]["data"]["id"])
        member.started = time.monotonic()  # what follows is the subscription

    async def subscribe(i: int) -> None:
        others = [feed for j, feed in feeds.items() if j != i]
        if i not in feeds:
            member = Member(time.monotonic())
            members.append(member)
            member.closers.append(sessions[i].close)
        else:
            member = next(m for m in members if sessions[i].close in m.closers)
        if not others:
            return
        session = sessions[i]
        pc = RTCPeerConnection(_config())
        member.closers.append(pc.close)
        handle = await session.attach()
        began = time.monotonic()
        event = await session.message(
            handle,
            {
                "request": "join",
                "room": number,
                "ptype": "subscriber",
                "streams": [{"feed": feed} for feed in others],
            },
        )
        await pc.setRemoteDescription(RTCSessionDescription(event["jsep"]["sdp"], "offer"))
        for transceiver in pc.getTransceivers():
            receiver = transceiver.receiver
            assert isinstance(receiver, SfuRtpReceiver), "aiortc_hooks.install() first"
            receiver.attach_sink(LatencySink(member, transceiver.mid, pc))
        await pc.setLocalDescription(await pc.createAnswer())
        await session.message(
            handle, {"request": "start"}, {"type": "answer", "sdp": pc.localDescription.sdp}
        )
        await session.candidates_done(handle)
        if i not in feeds:
            joins.append(1000 * (time.monotonic() - began))

    await asyncio.gather(*(publish(i) for i, spec in enumerate(specs) if spec.publish))
    await asyncio.gather(*(subscribe(i) for i in range(len(specs))))
