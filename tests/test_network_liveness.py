"""Noticing a dead client (issue 18): the WebSocket heartbeat, the application ping, and the
media connection's silence, each tested with a client that stops answering."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.impair import ImpairedLink
from bench.peer import PatternVideoTrack, PeerClient
from control.config import ConfigError, load_config
from mediaserver.protocols import CloseReason
from tests.conftest import Server, join, make_config, start_server, wait_until


@pytest.fixture
async def quick_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server that pings every 0.5 s, waits 1.5 s for a pong, and gives media connections
    2 s of silence."""
    config = make_config(
        tmp_path,
        server={"ws_heartbeat": 0.5, "ws_pong_timeout": 1.5},
        media={"media_timeout": 2.0},
    )
    server = await start_server(config)
    try:
        yield server
    finally:
        await server.runner.cleanup()


async def test_client_that_stops_answering_pings_is_dropped_within_the_heartbeat(
    quick_server: Server, clients: list[PeerClient]
) -> None:
    server = quick_server
    watcher = await join(server, clients, "hb", "watcher")
    async with (
        aiohttp.ClientSession() as http,
        # autoping off: the pings the server sends go unanswered, as from a dead phone
        http.ws_connect(f"{server.base_url}/ws", autoping=False) as ws,
    ):
        await ws.send_str(json.dumps({"type": "join", "token": server.token("hb", "mute")}))
        joined = await ws.receive_json(timeout=10)
        assert joined["type"] == "joined" and joined["participant"]["role"] == "party"
        room = server.sfu.rooms["hb"]
        participant = room.participants["mute"]
        started = asyncio.get_running_loop().time()
        await participant.wait_closed()
        took = asyncio.get_running_loop().time() - started
        assert participant.close_reason == CloseReason.SIGNALLING_LOST
        assert took < 0.5 + 1.5 + 2.0  # within interval + pong timeout, give or take a busy CPU
        left = await watcher.wait_for(lambda m: m["type"] == "participant_left")
        assert left == {
            "type": "participant_left",
            "participant": "mute",
            "reason": "signalling_lost",
        }
    # and the one that answers is still there
    await asyncio.sleep(1.5)
    assert "watcher" in server.sfu.rooms["hb"].participants


async def test_a_pong_late_by_less_than_the_timeout_keeps_the_call(
    quick_server: Server, clients: list[PeerClient]
) -> None:
    """A link that drops out for a moment: every pong comes 0.8 s late (the timeout is 1.5 s,
    twice aiohttp's own half-interval of 0.25 s): the participant stays."""
    server = quick_server
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{server.base_url}/ws", autoping=False) as ws,
    ):
        await ws.send_str(json.dumps({"type": "join", "token": server.token("late", "slow")}))
        assert (await ws.receive_json(timeout=10))["type"] == "joined"
        participant = server.sfu.rooms["late"].participants["slow"]
        pings = 0
        loop = asyncio.get_running_loop()
        until = loop.time() + 4.0
        while loop.time() < until:
            try:
                msg = await ws.receive(timeout=until - loop.time())
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.PING:
                pings += 1
                await asyncio.sleep(0.8)
                await ws.pong(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                break
        assert pings >= 2
        assert not participant.closed, participant.close_reason


async def test_application_ping_answers_pong_with_its_id(
    quick_server: Server, clients: list[PeerClient]
) -> None:
    client = await join(quick_server, clients, "ping", "p")
    await client.send({"type": "ping", "id": "t-1"})
    pong = await client.wait_for(lambda m: m["type"] == "pong")
    assert pong == {"type": "pong", "id": "t-1"}


async def test_silent_media_connection_is_closed_as_media_timeout(
    quick_server: Server, clients: list[PeerClient]
) -> None:
    """The client's network goes (its WebSocket, on TCP, stays): noticed by the media
    connection's silence within media_timeout, not by aioice's consent expiry (30 s)."""
    server = quick_server
    link = ImpairedLink()
    gone = await join(server, clients, "silent", "gone", link=link)
    other = await join(server, clients, "silent", "other")
    await gone.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["silent"]
    await wait_until(
        lambda: any(d.packets > 10 for d in room.participants["other"].down_tracks()),
        timeout=20,
        what="forwarding",
    )
    participant = room.participants["gone"]
    await asyncio.sleep(3)  # alive and publishing: more than media_timeout, still there
    assert not participant.closed
    link.cut()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(participant.wait_closed(), timeout=10)
    took = asyncio.get_running_loop().time() - started
    assert participant.close_reason == CloseReason.MEDIA_TIMEOUT
    assert 1.5 < took < 2.0 + 2.5
    left = await other.wait_for(lambda m: m["type"] == "participant_left")
    assert left["reason"] == "media_timeout"
    bye = await gone.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "media_timeout"


async def test_subscriber_only_client_stays_while_it_answers(
    quick_server: Server, clients: list[PeerClient]
) -> None:
    """A party that publishes nothing still sends RTCP and consent checks: never silent."""
    server = quick_server
    pub = await join(server, clients, "viewer", "pub")
    viewer = await join(server, clients, "viewer", "viewer", decode=False)
    await pub.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["viewer"]
    await wait_until(
        lambda: any(d.packets > 10 for d in room.participants["viewer"].down_tracks()),
        timeout=20,
        what="forwarding",
    )
    await asyncio.sleep(4)
    assert not room.participants["viewer"].closed
    assert viewer.closed_reason is None


def test_heartbeat_and_media_timeout_are_checked(tmp_path: Path) -> None:
    for section, table in (
        ("server", {"ws_heartbeat": 0.01}),
        ("server", {"ws_heartbeat": -1}),
        ("server", {"ws_pong_timeout": 0}),
        ("media", {"media_timeout": 0.1}),
    ):
        with pytest.raises(ConfigError, match=f"{section}\\."):
            make_config(tmp_path, **{section: table})
    assert make_config(tmp_path, server={"ws_heartbeat": 0}).server.ws_heartbeat == 0
    defaults = load_config(None, environ={})
    assert defaults.server.ws_heartbeat == 2.5 and defaults.server.ws_pong_timeout == 8.0
    assert defaults.media_options().media_timeout == 10.0
