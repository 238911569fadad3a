"""Bad input gets a clear error; the call next to it goes on."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from tests.conftest import Server, join, make_config, start_server, wait_until


class RawClient:
    """A bare WebSocket: sends whatever the test says, collects what comes back."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session, self.ws = session, ws

    @classmethod
    async def open(cls, base_url: str) -> RawClient:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{base_url}/ws")
        return cls(session, ws)

    async def send(self, payload: object) -> None:
        await self.ws.send_str(payload if isinstance(payload, str) else json.dumps(payload))

    async def receive(self, wait: float = 5.0) -> dict | None:
        msg = await self.ws.receive(timeout=wait)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return None
        return json.loads(msg.data)

    async def expect_error(self, code: str) -> dict:
        while True:
            message = await self.receive()
            assert message is not None, f"connection closed before error {code}"
            if message["type"] == "error":
                assert message["code"] == code, message
                assert message["message"]
                return message

    async def closed_with(self) -> int | None:
        while True:
            msg = await self.ws.receive(timeout=5.0)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
            ):
                return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


async def _offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


# alice, bob and the mid on which bob receives alice's video.
LiveCall = tuple[PeerClient, PeerClient, str]


@pytest.fixture
async def live_call(server: Server, clients: list[PeerClient]) -> LiveCall:
    """alice publishes, bob watches: the call that must keep going."""
    alice = await join(server, clients, "room", "alice")
    bob = await join(server, clients, "room", "bob")
    await alice.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    await wait_until(lambda: bob.mids_for_participant("alice", "video") != [], what="offer")
    (mid,) = bob.mids_for_participant("alice", "video")
    await wait_until(lambda: bob.frame_counts[mid] > 3, what="bob decodes")
    return alice, bob, mid


async def _still_flowing(bob: PeerClient, mid: str) -> None:
    before = bob.frame_counts[mid]
    await wait_until(
        lambda: bob.frame_counts[mid] > before + 3,
        timeout=5,
        what="the neighbouring call to keep going",
    )


async def test_malformed_messages_get_errors_and_the_call_continues(
    server: Server, live_call: LiveCall
) -> None:
    _, bob, mid = live_call
    mallory = await RawClient.open(server.base_url)
    try:
        await mallory.send({"type": "publish", "sdp": "v=0"})
        await mallory.expect_error("not_joined")
        await mallory.send({"type": "join", "token": server.token("room", "mallory")})
        joined = await mallory.receive()
        assert joined is not None and joined["type"] == "joined"

        await mallory.send("{not json")
        await mallory.expect_error("bad_json")
        await mallory.send("[1, 2]")
        await mallory.expect_error("bad_json")
        await mallory.send({"type": "teleport"})
        err = await mallory.expect_error("unknown_type")
        assert err["ref"] == "teleport"
        await mallory.send({"type": "publish", "sdp": "this is not sdp"})
        await mallory.expect_error("bad_sdp")
        await mallory.send({"type": "publish", "sdp": 42})
        await mallory.expect_error("bad_sdp")
        garbage = (
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:x\r\na=fingerprint:sha-256 AA\r\n"
        )
        await mallory.send({"type": "publish", "sdp": garbage})
        await mallory.expect_error("bad_sdp")
        no_fingerprint = "\r\n".join(
            line
            for line in (await _offer_sdp()).split("\r\n")
            if not line.startswith("a=fingerprint")
        )
        await mallory.send({"type": "publish", "sdp": no_fingerprint})
        await mallory.expect_error("no_fingerprint")
        await mallory.send({"type": "mute", "track": "nope", "muted": True})
        await mallory.expect_error("unknown_track")
        await mallory.send({"type": "subscribe", "tracks": "all"})
        await mallory.expect_error("bad_request")
        await mallory.send(
            {
                "type": "candidate",
                "target": "publisher",
                "candidate": {"candidate": "candidate:garbage"},
            }
        )
        await mallory.expect_error("bad_candidate")
        await mallory.send({"type": "join", "token": server.token("room", "mallory2")})
        await mallory.expect_error("already_joined")

        # after all that the connection still works
        await mallory.send({"type": "ping", "id": 7})
        while (message := await mallory.receive()) and message["type"] != "pong":
            pass
        assert message == {"type": "pong", "id": 7}
        await _still_flowing(bob, mid)

        # an answer the SFU cannot apply to its pending offer breaks that connection: closed
        await mallory.send({"type": "answer", "sdp": await _offer_sdp()})
        await mallory.expect_error("bad_sdp")
        assert await mallory.closed_with() == 4002
    finally:
        await mallory.close()
    await wait_until(
        lambda: "mallory" not in server.sfu.rooms["room"].participants, what="mallory removed"
    )
    await _still_flowing(bob, mid)
    metrics = await _metrics(server.base_url)
    assert 'remotecase_signalling_errors_total{code="bad_json"} 2' in metrics


async def test_answer_without_offer_is_refused(server: Server) -> None:
    lonely = await RawClient.open(server.base_url)
    try:
        await lonely.send({"type": "join", "token": server.token("quiet", "lonely")})
        assert (await lonely.receive() or {}).get("type") == "joined"
        await lonely.send({"type": "answer", "sdp": await _offer_sdp()})
        await lonely.expect_error("unexpected_answer")
        await lonely.send({"type": "ping"})
        assert (await lonely.receive() or {}).get("type") == "pong"
    finally:
        await lonely.close()


async def _metrics(base_url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/metrics") as r:
        assert r.status == 200
        return await r.text()


@pytest.mark.parametrize("case", ["bad_signature", "expired", "garbage", "missing"])
async def test_bad_tokens_are_refused_and_the_connection_closed(
    server: Server, live_call: LiveCall, case: str
) -> None:
    _, bob, mid = live_call
    token: object
    if case == "bad_signature":
        token = server.token("room", "eve")[:-3] + "AAA"
    elif case == "expired":
        token = server.signer.mint("room", "eve", ttl=60, now=time.time() - 120)
    elif case == "garbage":
        token = "hello"
    else:
        token = None
    mallory = await RawClient.open(server.base_url)
    try:
        await mallory.send({"type": "join", "token": token})
        await mallory.expect_error("token_expired" if case == "expired" else "bad_token")
        assert await mallory.closed_with() == 4001
    finally:
        await mallory.close()
    assert "eve" not in server.sfu.rooms["room"].participants
    await _still_flowing(bob, mid)


async def test_oversized_message_is_refused_and_closed(server: Server, live_call: LiveCall) -> None:
    _, bob, mid = live_call
    mallory = await RawClient.open(server.base_url)
    try:
        await mallory.send({"type": "join", "token": server.token("room", "mallory")})
        assert (await mallory.receive() or {}).get("type") == "joined"
        await mallory.send({"type": "publish", "sdp": "x" * 100_000})
        await mallory.expect_error("too_large")
        assert await mallory.closed_with() == 4009
    finally:
        await mallory.close()
    await wait_until(
        lambda: "mallory" not in server.sfu.rooms["room"].participants, what="mallory cleaned up"
    )
    await _still_flowing(bob, mid)


async def test_peer_that_vanishes_is_cleaned_up(
    server: Server, clients: list[PeerClient], live_call: LiveCall
) -> None:
    _alice, bob, mid = live_call
    carol = await join(server, clients, "room", "carol")
    await carol.publish(PatternVideoTrack(fps=15))
    await wait_until(lambda: bob.mids_for_participant("carol") != [], what="carol at bob")
    # carol's process dies: the socket drops without a leave
    assert carol._ws is not None
    await carol._ws.close()
    await wait_until(
        lambda: "carol" not in server.sfu.rooms["room"].participants, what="carol removed"
    )
    left = await bob.wait_for(
        lambda m: m["type"] == "participant_left" and m["participant"] == "carol"
    )
    assert left["reason"] == "signalling_lost"
    await wait_until(lambda: bob.mids_for_participant("carol") == [], what="carol's track gone")
    await _still_flowing(bob, mid)


async def test_peer_that_closes_its_media_but_keeps_the_socket_is_closed(
    server: Server, clients: list[PeerClient], live_call: LiveCall
) -> None:
    """A client that closes its peer connections (DTLS close_notify) and leaves its WebSocket
    open: aiortc closes the server's side by itself, and the participant must go with it,
    quietly, instead of renegotiating on a closed connection."""
    _alice, bob, mid = live_call
    dave = await join(server, clients, "room", "dave")
    await dave.publish(PatternVideoTrack(fps=15))
    await wait_until(lambda: bob.mids_for_participant("dave") != [], what="dave at bob")
    await wait_until(
        lambda: any(bob.frame_counts[m] for m in bob.mids_for_participant("dave")),
        what="dave's video decoded at bob",
    )
    assert dave.publisher_pc is not None
    await dave.publisher_pc.close()
    await dave.subscriber_pc.close()
    await wait_until(
        lambda: "dave" not in server.sfu.rooms["room"].participants, what="dave removed"
    )
    left = await bob.wait_for(
        lambda m: m["type"] == "participant_left" and m["participant"] == "dave"
    )
    assert left["reason"] == "peer_closed"
    assert server.sfu.close_reasons["peer_closed"] == 1
    await wait_until(lambda: bob.mids_for_participant("dave") == [], what="dave's track gone")
    await _still_flowing(bob, mid)


async def test_connection_stuck_in_connecting_is_closed(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, media={"connect_timeout": 1.0}))
    try:
        client = PeerClient(server.base_url, server.token("stuck", "ghost"))
        await client.connect()
        # an offer whose only candidate points nowhere: ICE can never connect
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = "\r\n".join(
            line
            if not line.startswith("a=candidate")
            else "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"
            for line in pc.localDescription.sdp.split("\r\n")
        )
        await pc.close()
        await client.send({"type": "publish", "sdp": sdp})
        bye = await client.wait_for(lambda m: m["type"] == "bye", timeout=10)
        assert bye["reason"] == "connect_timeout"
        await wait_until(lambda: server.sfu.dump()["participants"] == 0, what="ghost removed")
        await client.close()
        assert server.sfu.dump() == {
            "rooms": 0,
            "participants": 0,
            "up_tracks": 0,
            "down_tracks": 0,
            "local_subscribers": 0,
            "tasks": 0,
        }
    finally:
        await server.runner.cleanup()


async def test_join_without_token_times_out_quietly_for_others(
    server: Server, live_call: LiveCall
) -> None:
    _, bob, mid = live_call
    # many idle sockets that never join do not disturb the call
    sockets = [await RawClient.open(server.base_url) for _ in range(5)]
    try:
        await asyncio.sleep(0.2)
        await _still_flowing(bob, mid)
    finally:
        for s in sockets:
            await s.close()
