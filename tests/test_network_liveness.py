"""Noticing a dead client (issue 18): the WebSocket heartbeat, the application ping, and the
media connection's silence, each tested with a client that stops answering; and a client whose
connection ended without a close (its page's process died), told apart from both."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.impair import ImpairedLink
from bench.peer import PatternVideoTrack, PeerClient
from control import front as front_module
from control.config import ConfigError, load_config
from control.front import create_front
from control.sessions.heartbeat import socket_end
from control.sessions.signalling import SignallingSession
from mediaserver import aiortc_hooks
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


async def test_consent_expiry_is_a_failed_connection_that_may_resume(
    tmp_path: Path, clients: list[PeerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's own ICE consent expiry (no answer to its checks for CONSENT_EXPIRY) is
    the client's network gone, not a goodbye: ``connection_failed``, the participant kept for
    a resume, never ``peer_closed`` (issue 17: a presenter closed that way never came back).
    A real aiortc client whose network is cut; the silence watch is set longer than the
    expiry, so that the consent check is what notices."""
    monkeypatch.setattr(aiortc_hooks, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(aiortc_hooks, "CONSENT_EXPIRY", 3.0)
    server = await start_server(
        make_config(tmp_path, media={"media_timeout": 120.0, "resume_grace": 60.0})
    )
    try:
        link = ImpairedLink()
        gone = await join(server, clients, "consent", "gone", link=link)
        other = await join(server, clients, "consent", "other")
        await gone.publish(PatternVideoTrack(fps=15))
        room = server.sfu.rooms["consent"]
        await wait_until(
            lambda: any(d.packets > 10 for d in room.participants["other"].down_tracks()),
            timeout=20,
            what="forwarding",
        )
        participant = room.participants["gone"]
        await asyncio.sleep(2)  # checks answered: consent holds past its expiry
        assert not participant.closed and participant._suspended is None
        link.cut()
        told = await other.wait_for(
            lambda m: m["type"] in ("participant_reconnecting", "participant_left"), timeout=20
        )
        assert told == {
            "type": "participant_reconnecting",
            "participant": "gone",
            "reason": "connection_failed",
        }
        assert participant._suspended == CloseReason.CONNECTION_FAILED
        assert not participant.closed  # kept for its resume grace
    finally:
        await server.runner.cleanup()


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


# -- a socket whose connection ends without a WebSocket close: the page's process died ---------


class RawSocket:
    """A WebSocket client on a bare TCP stream, so that a test can end its connection the way
    a dying process's kernel does: a FIN (:meth:`fin`) or a reset (:meth:`reset`), with no
    close frame first."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, base_url: str) -> RawSocket:
        host, port = base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        assert len(data) < 65536
        size = (
            bytes([0x80 | len(data)]) if len(data) < 126 else b"\xfe" + struct.pack("!H", len(data))
        )
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self._writer.write(b"\x81" + size + mask + masked)
        await self._writer.drain()

    async def receive(self) -> dict[str, Any]:
        """The next text message within 10 s (the server's pings are answered on the way)."""
        while True:
            first, second = await asyncio.wait_for(self._reader.readexactly(2), 10.0)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self._reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self._reader.readexactly(8))
            payload = await self._reader.readexactly(size)
            opcode = first & 0x0F
            if opcode == 0x9:  # ping: pong with its payload, masked as a client must
                mask = os.urandom(4)
                masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                self._writer.write(b"\x8a" + bytes([0x80 | size]) + mask + masked)
            elif opcode == 0x1:
                message: dict[str, Any] = json.loads(payload)
                return message
            elif opcode == 0x8:
                raise ConnectionError(f"closed by the server: {payload!r}")

    async def wait_for(self, kind: str) -> dict[str, Any]:
        while (message := await self.receive())["type"] != kind:
            pass
        return message

    def going_away(self) -> None:
        """A close 1001 "going away" and then the connection ends, as Chromium's network
        service closes the sockets of a renderer that crashed."""
        mask = os.urandom(4)
        payload = struct.pack("!H", 1001)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._writer.write(b"\x88" + bytes([0x80 | len(payload)]) + mask + masked)
        self._writer.close()

    def fin(self) -> None:
        self._writer.close()

    def reset(self) -> None:
        self._writer.transport.abort()


async def _gone_server(tmp_path: Path, clients: list[PeerClient]) -> AsyncIterator[Server]:
    # a long resume grace, a short unload grace: which of the two a socket got is plain
    config = make_config(tmp_path, media={"resume_grace": 60.0, "unload_grace": 1.5})
    srv = await start_server(config)
    try:
        yield srv
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()


gone_server = pytest.fixture(_gone_server)


def _about(who: str, kind: str = "participant_reconnecting") -> Callable[[dict[str, Any]], bool]:
    """A message of ``kind`` about participant ``who`` (by its ID)."""
    return lambda m: m["type"] == kind and m.get("participant") == who


@pytest.mark.parametrize("end", ["fin", "reset", "going_away"])
async def test_a_page_whose_process_died_leaves_as_gone_after_the_unload_grace(
    gone_server: Server, clients: list[PeerClient], end: str
) -> None:
    """The page's process died without ``unload``: the browser killed by the phone (its
    kernel ends the TCP connection, FIN or reset, with no WebSocket close) or its renderer
    crashed (Chromium's network service closes the socket with 1001). The server tells that
    from a network that went away (nothing at all arrives: the heartbeat, ``signalling_lost``)
    and from a page closing its own socket (another close code): the participant waits the
    unload grace only, not the resume grace, and leaves as ``gone``."""
    server = gone_server
    officer = await join(server, clients, "gone", "officer", decode=False)
    party = await RawSocket.open(server.base_url)
    await party.send({"type": "join", "token": server.token("gone", "party")})
    assert (await party.wait_for("joined"))["participant"]["id"] == "party"
    participant = server.sfu.rooms["gone"].participants["party"]
    loop = asyncio.get_running_loop()
    ended = loop.time()
    {"fin": party.fin, "reset": party.reset, "going_away": party.going_away}[end]()
    away = await officer.wait_for(_about("party"))
    assert away == {"type": "participant_reconnecting", "participant": "party", "reason": "gone"}
    left = await officer.wait_for(_about("party", "participant_left"), timeout=40)
    assert left["reason"] == "gone"
    assert participant.close_reason == CloseReason.GONE
    assert loop.time() - ended < 30  # the unload grace (1.5 s), not the resume grace (60 s)


async def test_a_gone_page_that_comes_back_within_the_unload_grace_resumes(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """A browser restarted at once after it was killed (or a phone's browser reopening its
    tab) resumes within the short grace as the same participant: the others see it away and
    back, never a leave."""
    config = make_config(tmp_path, media={"resume_grace": 60.0, "unload_grace": 8.0})
    server = await start_server(config)
    try:
        officer = await join(server, clients, "back", "officer", decode=False)
        party = await RawSocket.open(server.base_url)
        await party.send({"type": "join", "token": server.token("back", "party")})
        joined = await party.wait_for("joined")
        party.reset()
        away = await officer.wait_for(_about("party"))
        assert away["type"] == "participant_reconnecting" and away["reason"] == "gone"
        again = await RawSocket.open(server.base_url)
        await again.send({"type": "resume", "resume_token": joined["resume_token"]})
        resumed = await again.wait_for("resumed")
        assert resumed["participant"]["id"] == "party"
        await officer.wait_for(
            lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == "party"
        )
        participant = server.sfu.rooms["back"].participants["party"]
        assert not participant.closed and participant.resumes == 1
        assert not any(_about("party", "participant_left")(m) for m in officer.messages)
        again.fin()
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_a_close_frame_or_a_missed_pong_is_not_gone(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """What is not ``gone``: a page closing its own socket (a close frame other than 1001, as
    the page does to a socket it found dead before it resumes on a new one) and a client that
    stops answering the heartbeat (the network went away): both wait for the resume as
    ``signalling_lost``."""
    config = make_config(
        tmp_path,
        server={"ws_heartbeat": 0.5, "ws_pong_timeout": 1.5},
        media={"resume_grace": 60.0, "unload_grace": 1.0},
    )
    server = await start_server(config)
    try:
        officer = await join(server, clients, "lost", "officer", decode=False)
        async with aiohttp.ClientSession() as http:
            closing = await http.ws_connect(f"{server.base_url}/ws")
            await closing.send_json({"type": "join", "token": server.token("lost", "closes")})
            assert (await closing.receive_json(timeout=10))["type"] == "joined"
            await closing.close()
            away = await officer.wait_for(_about("closes"))
            assert away["reason"] == "signalling_lost", away
            async with http.ws_connect(f"{server.base_url}/ws", autoping=False) as mute:
                await mute.send_json({"type": "join", "token": server.token("lost", "mute")})
                assert (await mute.receive_json(timeout=10))["type"] == "joined"
                away = await officer.wait_for(_about("mute"))
                assert away["reason"] == "signalling_lost", away
        await asyncio.sleep(2.0)  # past the unload grace: both still waited for
        room = server.sfu.rooms["lost"]
        assert room.participants["closes"].suspended and room.participants["mute"].suspended
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_behind_the_front_a_connection_that_ends_without_a_close_is_gone(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """Behind the multi-worker front the worker sees the front's socket, which closes with a
    close frame whatever happened to the client's: the front says a client's connection
    ended without a close with its own close code (4020) and passes a 1001 on, so the
    worker's participant leaves as ``gone`` as it would without the front."""
    config = make_config(tmp_path, media={"resume_grace": 60.0, "unload_grace": 1.0})
    server = await start_server(config)
    front = web.AppRunner(create_front([server.base_url], secret="s" * 32, body_timeout=30.0))
    await front.setup()
    site = web.TCPSite(front, "127.0.0.1", 0)
    await site.start()
    front_url = f"http://127.0.0.1:{front.addresses[0][1]}"
    try:
        officer = await join(server, clients, "front", "officer", decode=False)
        party = await RawSocket.open(front_url)
        await party.send({"type": "join", "token": server.token("front", "party")})
        await party.wait_for("joined")
        party.fin()
        away = await officer.wait_for(_about("party"))
        assert away["reason"] == "gone", away
        left = await officer.wait_for(_about("party", "participant_left"), timeout=40)
        assert left == {"type": "participant_left", "participant": "party", "reason": "gone"}
        # a close 1001 is passed on (a crashed renderer); a client's own close is waited for
        async with aiohttp.ClientSession() as http:
            for who, code, reason in (
                ("crashed", 1001, "gone"),
                ("other", 1000, "signalling_lost"),
            ):
                ws = await http.ws_connect(f"{front_url}/ws")
                await ws.send_json({"type": "join", "token": server.token("front", who)})
                assert (await ws.receive_json(timeout=10))["type"] == "joined"
                await ws.close(code=code)
                away = await officer.wait_for(_about(who))
                assert away["reason"] == reason, (who, away)
        assert server.sfu.rooms["front"].participants["other"].suspended
    finally:
        for client in clients:
            await client.close()
        await front.cleanup()
        await server.runner.cleanup()


# -- a missed pong is never gone, however aiohttp reports it (issue 18, review 10) -------------


@pytest.mark.parametrize(
    ("kind", "code", "exc", "reason"),
    [
        # the pong deadline passed while the session waited in receive() ...
        (aiohttp.WSMsgType.ERROR, 1006, TimeoutError("No PONG"), CloseReason.SIGNALLING_LOST),
        # ... and while it was busy (a publish, the front sending on): the next receive()
        (aiohttp.WSMsgType.CLOSED, 1006, TimeoutError("No PONG"), CloseReason.SIGNALLING_LOST),
        (aiohttp.WSMsgType.CLOSED, 1006, aiohttp.ClientConnectionResetError(), CloseReason.GONE),
        (aiohttp.WSMsgType.CLOSED, 1006, None, CloseReason.GONE),
        (aiohttp.WSMsgType.ERROR, 1006, ConnectionResetError(), CloseReason.GONE),
        (aiohttp.WSMsgType.CLOSE, 1001, None, CloseReason.GONE),
        (aiohttp.WSMsgType.CLOSE, 4020, None, CloseReason.GONE),
        (aiohttp.WSMsgType.CLOSE, 1000, None, CloseReason.SIGNALLING_LOST),
        (aiohttp.WSMsgType.CLOSING, 4012, None, CloseReason.SIGNALLING_LOST),
    ],
)
def test_socket_end_reads_a_missed_pong_as_lost_before_anything_else(
    kind: aiohttp.WSMsgType, code: int, exc: BaseException | None, reason: CloseReason
) -> None:
    assert socket_end(kind, code, exc) is reason


def _hold_on(monkeypatch: pytest.MonkeyPatch, marker: str) -> list[Any]:
    """Hold a worker's handling of a message that holds ``marker`` until its socket has
    closed (the heartbeat found the pong missing meanwhile); the sessions held, returned."""
    held: list[Any] = []
    handle = SignallingSession._handle_text

    async def held_handle(self: SignallingSession, data: str) -> None:
        if marker in data:
            held.append(self)
            await wait_until(lambda: self._ws.closed, timeout=30)
        await handle(self, data)

    monkeypatch.setattr(SignallingSession, "_handle_text", held_handle)
    return held


async def test_a_pong_missed_while_the_session_is_busy_is_not_gone(
    tmp_path: Path, clients: list[PeerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pong deadline passes while the session is inside a message's handling (a party on
    a changing network is publishing or resuming): aiohttp then gives the next ``receive()``
    ``CLOSED`` with the ``TimeoutError``, which must read as a network that went away
    (``signalling_lost``, the resume grace), not as a page that died (``gone``)."""
    held = _hold_on(monkeypatch, '"hold"')
    config = make_config(
        tmp_path,
        server={"ws_heartbeat": 0.5, "ws_pong_timeout": 1.0},
        media={"resume_grace": 60.0, "unload_grace": 1.0},
    )
    server = await start_server(config)
    try:
        officer = await join(server, clients, "busy", "officer", decode=False)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"{server.base_url}/ws", autoping=False) as ws,
        ):
            await ws.send_json({"type": "join", "token": server.token("busy", "party")})
            assert (await ws.receive_json(timeout=10))["type"] == "joined"
            await ws.send_json({"type": "ping", "id": "hold"})
            away = await officer.wait_for(_about("party"), timeout=30)
            assert held, "the handling was never held"
            assert away["reason"] == "signalling_lost", away
        participant = server.sfu.rooms["busy"].participants["party"]
        await asyncio.sleep(2.0)  # past the unload grace: still waited for
        assert participant.suspended and not participant.closed
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_behind_the_front_a_reset_is_gone_and_a_missed_pong_is_not(
    tmp_path: Path, clients: list[PeerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front reads the client's socket with the worker's own rule (socket_end): a reset
    is ``gone`` as in one process; a missed pong is ``signalling_lost`` both when the front
    waited in ``receive()`` and when it was busy sending the client's message on."""
    fronts: list[web.WebSocketResponse] = []

    class Recorded(front_module.HeartbeatSocket):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            fronts.append(self)

    monkeypatch.setattr(front_module, "HeartbeatSocket", Recorded)
    send_str = aiohttp.ClientWebSocketResponse.send_str

    async def held_send(self: aiohttp.ClientWebSocketResponse, data: str, **kw: Any) -> None:
        if '"hold"' in data:  # the front's pipe, busy sending on when the pong deadline passes
            await wait_until(lambda: fronts[-1].closed, timeout=30)
        await send_str(self, data, **kw)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "send_str", held_send)
    config = make_config(tmp_path, media={"resume_grace": 60.0, "unload_grace": 1.0})
    server = await start_server(config)
    front = web.AppRunner(
        create_front([server.base_url], secret="s" * 32, body_timeout=30.0, ws_heartbeat=(0.5, 1.0))
    )
    await front.setup()
    site = web.TCPSite(front, "127.0.0.1", 0)
    await site.start()
    front_url = f"http://127.0.0.1:{front.addresses[0][1]}"
    try:
        officer = await join(server, clients, "front", "officer", decode=False)
        for who, reason in (("reset", "gone"), ("mute", "signalling_lost")):
            party = await RawSocket.open(front_url)
            await party.send({"type": "join", "token": server.token("front", who)})
            await party.wait_for("joined")
            if who == "reset":
                party.reset()
            # mute: nothing more is read, so the front's pings go unanswered
            away = await officer.wait_for(_about(who), timeout=30)
            assert away["reason"] == reason, (who, away)
        # busy: the front is inside its send of the client's message when the deadline passes
        busy = await RawSocket.open(front_url)
        await busy.send({"type": "join", "token": server.token("front", "busy")})
        await busy.wait_for("joined")
        await busy.send({"type": "ping", "id": "hold"})
        away = await officer.wait_for(_about("busy"), timeout=30)
        assert away["reason"] == "signalling_lost", away
        busy.fin()
        await asyncio.sleep(1.5)  # past the unload grace
        room = server.sfu.rooms["front"]
        assert room.participants["mute"].suspended and room.participants["busy"].suspended
    finally:
        for client in clients:
            await client.close()
        await front.cleanup()
        await server.runner.cleanup()
