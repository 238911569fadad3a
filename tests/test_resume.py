"""Staying in the call (issue 18): a party whose network dropped or changed address comes back
with new connections under the same participant (docs/signalling.md, Resume).

Real aiortc peers through the real server; the outage is :mod:`bench.impair`'s, on the party's
own sockets, and the party's signalling socket is closed as a dead network would end it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.impair import ImpairedLink
from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.access import revoke_grants
from control.appkeys import DB, RECORDER
from tests.conftest import (
    CONSENT,
    Api,
    Server,
    case_with_party,
    join,
    leftovers,
    make_config,
    officer_login,
    start_server,
    wait_until,
)

ROOM = "resume-room"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """conftest's server with resume on (conftest turns it off for the other tests)."""
    srv = await start_server(make_config(tmp_path, media={"resume_grace": 20.0}))
    yield srv
    await srv.runner.cleanup()
    assert leftovers(srv.app) == {}, "left behind after the server stopped"
    assert srv.sfu.resume_tokens == 0


@contextlib.asynccontextmanager
async def own_server(
    tmp_path: Path, clients: list[PeerClient], **sections: dict[str, Any]
) -> AsyncIterator[Server]:
    """A server of the test's own configuration; its clients closed and nothing left behind
    (no resume token either) once it stops."""
    srv = await start_server(make_config(tmp_path, **sections))
    try:
        yield srv
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()
    assert leftovers(srv.app) == {}
    assert srv.sfu.resume_tokens == 0


async def resume(
    server: Server, clients: list[PeerClient], old: PeerClient, **kw: Any
) -> PeerClient:
    """The party's client again, on new sockets (a new local port, as after a change of
    network), resuming with the token of its last joined/resumed."""
    snapshot = old.joined
    assert snapshot is not None and "resume_token" in snapshot, snapshot
    client = PeerClient(server.base_url, old.token, **kw)
    clients.append(client)
    await client.connect(join=False)
    await client.send({"type": "resume", "resume_token": snapshot["resume_token"]})
    client.joined = await client.wait_for(lambda m: m["type"] in ("resumed", "error"))
    return client


def _kinds(messages: list[dict[str, Any]], participant: str) -> list[str]:
    return [
        m["type"]
        for m in messages
        if m["type"].startswith("participant_")
        and (
            m.get("participant") == participant
            or (isinstance(m.get("participant"), dict) and m["participant"]["id"] == participant)
        )
    ]


def _received(client: PeerClient, mid: str) -> tuple[int, int, int]:
    return client.received_seq.get(mid, (0, 0, 0))


async def _publish_and_watch(
    server: Server, clients: list[PeerClient], link: ImpairedLink | None = None
) -> tuple[PeerClient, PeerClient, str]:
    party = await join(server, clients, ROOM, "party", link=link)
    await party.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
    officer = await join(server, clients, ROOM, "officer", decode=False, record_payloads=True)
    await wait_until(lambda: len(officer.mids_for_participant("party", "video")) == 1, what="offer")
    (mid,) = officer.mids_for_participant("party", "video")
    await wait_until(lambda: _received(officer, mid)[2] > 30, what="party's video at the officer")
    return party, officer, mid


def _continuous(seqs: list[int]) -> int:
    """How many sequence numbers the subscriber never received between its first and last."""
    first = seqs[0]
    unwrapped = sorted({(s - first) & 0xFFFF for s in seqs})
    return unwrapped[-1] + 1 - len(unwrapped)


async def test_outage_resumes_same_participant_tracks_and_recording(
    server: Server, clients: list[PeerClient]
) -> None:
    link = ImpairedLink()
    party, officer, mid = await _publish_and_watch(server, clients, link)
    room = server.sfu.rooms[ROOM]
    tracks_before = set(room.participants["party"].up_tracks)
    assert len(tracks_before) == 2
    recording = await server.app[RECORDER].start(room, actor="officer", reason="test")
    await asyncio.sleep(1.0)
    ssrc_before = officer.received_ssrc[mid]
    # the in-process subscribers of the party's tracks (the recorder's; the verifier's, where
    # the party has a reference face) are the ones that must go on
    local = [sub for sub in room._locals if sub.info.participant_id == "party"]
    assert len(local) == 2
    # the network goes dark for 5 s; the signalling socket dies with it
    link.outage(5.0)
    await party.close()
    await officer.wait_for(lambda m: m["type"] == "participant_reconnecting", timeout=10)
    assert room.participants["party"].suspended
    count_at_cut = _received(officer, mid)[2]
    await asyncio.sleep(5.0)
    again = await resume(server, clients, party)
    assert again.joined is not None and again.joined["type"] == "resumed", again.joined
    assert again.joined["participant"]["id"] == "party"
    assert {p["id"] for p in again.joined["participants"]} == {"officer"}
    await again.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
    await officer.wait_for(lambda m: m["type"] == "participant_resumed", timeout=10)
    # the party's media goes on on the officer's same transceiver, same SSRC, no hole
    await wait_until(
        lambda: _received(officer, mid)[2] > count_at_cut + 30, timeout=20, what="media back"
    )
    assert officer.received_ssrc[mid] == ssrc_before
    assert officer.mids_for_participant("party", "video") == [mid]
    assert _continuous(officer.received_seqs[mid]) <= 2
    assert set(room.participants["party"].up_tracks) == tracks_before
    received = [sub.received for sub in local]
    await wait_until(
        lambda: all(sub.received > n + 20 for sub, n in zip(local, received, strict=True)),
        what="the same local subscribers fed again",
    )
    assert not any(sub.closed for sub in local)
    # the others never saw it leave
    assert _kinds(officer.messages, "party") == ["participant_reconnecting", "participant_resumed"]
    await asyncio.sleep(1.0)
    manifest = await server.app[RECORDER].stop(ROOM, actor="officer", reason="done")
    party_tracks = [t for t in manifest["tracks"] if t["participant"] == "party"]
    assert sorted(t["kind"] for t in party_tracks) == ["audio", "video"], party_tracks
    assert {t["track_id"] for t in party_tracks} == tracks_before
    outages = [g for g in manifest["gaps"] if g["cause"] == "outage"]
    assert {g["track"] for g in outages} == tracks_before, manifest["gaps"]
    assert all(g["duration"] >= 4.0 for g in outages), outages
    assert recording.recording_id == manifest["recording_id"]
    (presence,) = next(p for p in manifest["participants"] if p["id"] == "party")["presence"]
    (outage,) = presence["outages"]
    assert outage["reason"] == "signalling_lost" and outage["resumed_at"] > outage["lost_at"]
    assert presence["left_at"] is None
    assert server.sfu.counters["participants_resumed"] == 1


async def test_address_change_takes_over_while_the_old_socket_lives(
    server: Server, clients: list[PeerClient]
) -> None:
    """The party moved to another network before the server noticed: its resume on new sockets
    replaces the old ones at once; the old socket hears why and is closed."""
    party, officer, mid = await _publish_and_watch(server, clients)
    ssrc_before = officer.received_ssrc[mid]
    await officer.publish(ToneAudioTrack())
    again = await resume(server, clients, party, decode=False)
    assert again.joined is not None and again.joined["type"] == "resumed", again.joined
    bye = await party.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "resumed_elsewhere"
    count = _received(officer, mid)[2]
    await again.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
    await wait_until(lambda: _received(officer, mid)[2] > count + 30, timeout=20, what="media")
    assert officer.received_ssrc[mid] == ssrc_before
    assert _continuous(officer.received_seqs[mid]) <= 2
    assert "participant_left" not in _kinds(officer.messages, "party")
    # the resumed party receives the others again, on its new subscriber connection
    await wait_until(lambda: again.mids_for_participant("officer") != [], what="offer to party")
    (officer_mid,) = again.mids_for_participant("officer")
    await wait_until(lambda: _received(again, officer_mid)[2] > 20, what="officer's audio")
    # the old client's connections are dead for the server; closing them changes nothing
    await party.close()
    await asyncio.sleep(0.5)
    assert not server.sfu.rooms[ROOM].participants["party"].closed
    # the new socket goes on with the call: a leave is the ordinary leave
    await again.leave()
    left = await officer.wait_for(lambda m: m["type"] == "participant_left")
    assert left["reason"] == "left"


async def test_resume_token_single_use_bound_and_refused_after_removal(
    server: Server, clients: list[PeerClient]
) -> None:
    party = await join(server, clients, ROOM, "party")
    officer = await join(server, clients, ROOM, "officer")
    assert party.joined is not None
    token = party.joined["resume_token"]
    # nobody can resume with a guess
    stranger = PeerClient(server.base_url, party.token)
    clients.append(stranger)
    await stranger.connect(join=False)
    await stranger.send({"type": "resume", "resume_token": "x" * 43})
    refused = await stranger.wait_for(lambda m: m["type"] == "error")
    assert refused["code"] == "resume_refused" and "/" in refused["message"]
    await party.close()
    await officer.wait_for(lambda m: m["type"] == "participant_reconnecting")
    first = await resume(server, clients, party)
    assert first.joined is not None and first.joined["type"] == "resumed"
    assert first.joined["resume_token"] != token
    # the token is used up: a second resume with it fails
    second = await resume(server, clients, party)
    assert second.joined is not None and second.joined["code"] == "resume_refused"
    # removed by the officer: its newest token no longer resumes it
    await first.close()
    await wait_until(
        lambda: _kinds(officer.messages, "party").count("participant_reconnecting") == 2,
        what="reconnecting again",
    )
    assert await server.sfu.rooms[ROOM].remove("party")
    left = await officer.wait_for(lambda m: m["type"] == "participant_left")
    assert left["reason"] == "removed"
    third = await resume(server, clients, first)
    assert third.joined is not None and third.joined["code"] == "resume_refused"
    assert server.sfu.resume_tokens == 1  # the officer's own


async def test_grace_expiry_is_the_ordinary_leave(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    srv = await start_server(make_config(tmp_path, media={"resume_grace": 1.0}))
    try:
        party = await join(srv, clients, ROOM, "party")
        officer = await join(srv, clients, ROOM, "officer")
        await party.close()
        await officer.wait_for(lambda m: m["type"] == "participant_reconnecting")
        left = await officer.wait_for(lambda m: m["type"] == "participant_left", timeout=10)
        assert left["participant"] == "party" and left["reason"] == "signalling_lost"
        late = await resume(srv, clients, party)
        assert late.joined is not None and late.joined["code"] == "resume_refused"
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()
    assert srv.sfu.resume_tokens == 0


async def test_lost_media_tells_the_client_to_resume(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """Media silent while the signalling socket still works: the server says reconnect."""
    srv = await start_server(
        make_config(tmp_path, media={"media_timeout": 4.0, "resume_grace": 20.0})
    )
    try:
        link = ImpairedLink()
        party, officer, mid = await _publish_and_watch(srv, clients, link)
        link.cut()
        told = await party.wait_for(lambda m: m["type"] == "reconnect", timeout=15)
        assert told["reason"] == "media_timeout"
        await officer.wait_for(lambda m: m["type"] == "participant_reconnecting")
        again = await resume(srv, clients, party)
        assert again.joined is not None and again.joined["type"] == "resumed", again.joined
        count = _received(officer, mid)[2]
        await again.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
        await wait_until(lambda: _received(officer, mid)[2] > count + 30, timeout=20, what="media")
        assert "participant_left" not in _kinds(officer.messages, "party")
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()


async def test_resume_is_admitted_again(tmp_path: Path, clients: list[PeerClient]) -> None:
    """The case's admission runs again at a resume: a party whose invitation was revoked while
    it was away is refused (4003) and leaves as removed; nothing of it stays behind."""
    async with own_server(
        tmp_path, clients, auth={"dev_join": False}, media={"resume_grace": 20.0}
    ) as srv:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            officer = await officer_login(srv, api)
            case, party_id = await case_with_party(api, officer)
            status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
            assert status == 201, session
            status, invitation = await api.call(
                "POST", f"/api/cases/{case}/invitations", officer, {"party_id": party_id}
            )
            assert status == 201, invitation
            status, redeemed = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invitation["token"], "consent": CONSENT},
            )
            assert status == 200, redeemed
            watcher = PeerClient(srv.base_url, session["token"])
            clients.append(watcher)
            await watcher.connect()
            party = PeerClient(srv.base_url, redeemed["token"])
            clients.append(party)
            await party.connect()
            pid = redeemed["participant"]
            await party.close()
            await watcher.wait_for(
                lambda m: m["type"] == "participant_reconnecting" and m["participant"] == pid
            )
            status, body = await api.call(
                "POST", f"/api/invitations/{invitation['id']}/revoke", officer, {"reason": "wrong"}
            )
            assert status == 200, body
            again = await resume(srv, clients, party)
            assert again.joined is not None and again.joined["code"] == "invitation_revoked"
            left = await watcher.wait_for(
                lambda m: m["type"] == "participant_left" and m["participant"] == pid
            )
            assert left["reason"] == "removed"
            await wait_until(lambda: again.ws_close_code is not None, what="refused socket closed")
            assert again.ws_close_code == 4003


async def test_a_page_going_away_waits_for_its_resume_and_leave_leaves_at_once(
    server: Server, clients: list[PeerClient]
) -> None:
    """A page that goes without ``unload`` closes its socket 1001 "going away" (a crashed
    renderer's, or a phone's browser dropping a background tab): that is a page that may
    come back (away as ``gone``, for the unload grace), not a leave; the ``leave`` message
    is the only way to leave at once."""
    party = await join(server, clients, ROOM, "party")
    officer = await join(server, clients, ROOM, "officer")
    assert party._ws is not None
    await party._ws.close(code=1001, message=b"page unloaded")
    away = await officer.wait_for(lambda m: m["type"] == "participant_reconnecting")
    assert away["reason"] == "gone"
    assert server.sfu.rooms[ROOM].participants["party"].suspended
    again = await resume(server, clients, party)
    assert again.joined is not None and again.joined["type"] == "resumed", again.joined
    await officer.wait_for(lambda m: m["type"] == "participant_resumed")
    await again.leave()
    left = await officer.wait_for(lambda m: m["type"] == "participant_left")
    assert left["participant"] == "party" and left["reason"] == "left"
    assert _kinds(officer.messages, "party") == [
        "participant_reconnecting",
        "participant_resumed",
        "participant_left",
    ]
    await wait_until(lambda: again.closed_reason is not None, what="the bye")
    assert again.closed_reason == "left"


def _reconnecting(who: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "participant_reconnecting" and m["participant"] == who


async def test_resume_rechecks_the_call_tokens_expiry(
    server: Server, clients: list[PeerClient]
) -> None:
    """A resume is a join again: with the call token expired meanwhile it is refused
    (``token_expired``, Chinese first, 4001) and the participant leaves as at the end of its
    grace. A fresh call token of the same participant sent with the resume renews it (the
    console asks one for each connection)."""
    officer = await join(server, clients, ROOM, "officer")
    for who in ("party", "agent"):
        client = PeerClient(server.base_url, server.token(ROOM, who, ttl=3))
        clients.append(client)
        await client.connect()
        assert client.joined is not None and client.joined["type"] == "joined", client.joined
        await client.close()
        await officer.wait_for(_reconnecting(who))
    party, agent = clients[-2:]
    await asyncio.sleep(3.5)  # both call tokens have expired now
    # a fresh token of somebody else renews nothing: the party's own grant decides
    assert party.joined is not None
    refused = PeerClient(server.base_url, party.token)
    clients.append(refused)
    await refused.connect(join=False)
    await refused.send(
        {
            "type": "resume",
            "resume_token": party.joined["resume_token"],
            "token": server.token(ROOM, "someone-else", ttl=600),
        }
    )
    error = await refused.wait_for(lambda m: m["type"] in ("resumed", "error"))
    assert error["code"] == "token_expired", error
    zh, en = error["message"].split(" / ", 1)
    assert zh.startswith("通话凭证已过期") and "expired" in en
    await wait_until(lambda: refused.ws_close_code is not None, what="refused socket closed")
    assert refused.ws_close_code == 4001
    left = await officer.wait_for(
        lambda m: m["type"] == "participant_left" and m["participant"] == "party"
    )
    assert left["reason"] == "signalling_lost"
    # the agent's resume carries a fresh call token of its own: admitted with that one
    assert agent.joined is not None
    renewed = PeerClient(server.base_url, server.token(ROOM, "agent", ttl=600))
    clients.append(renewed)
    await renewed.connect(join=False)
    await renewed.send(
        {"type": "resume", "resume_token": agent.joined["resume_token"], "token": renewed.token}
    )
    back = await renewed.wait_for(lambda m: m["type"] in ("resumed", "error"))
    assert back["type"] == "resumed", back
    assert back["participant"]["id"] == "agent"
    await officer.wait_for(lambda m: m["type"] == "participant_resumed")
    assert "participant_left" not in _kinds(officer.messages, "agent")


@pytest.mark.parametrize("meanwhile", ["readmitted", "removed"])
async def test_resume_after_a_readmission_or_a_removal_is_refused(
    tmp_path: Path, clients: list[PeerClient], meanwhile: str
) -> None:
    """While the page was away the same device opened the link again (another tab, say), or an
    officer removed the party through a server that does not hold the room (the grant revoked
    in the database only, as behind the front with several workers): the grant the page joined
    with no longer admits it, so its resume is refused (``superseded`` / ``removed``, 4003,
    Chinese first). After a readmission the party's new page is the one in the call; after a
    removal neither the old token nor the link brings it back."""
    srv = await start_server(
        make_config(tmp_path, auth={"dev_join": False}, media={"resume_grace": 20.0})
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            officer = await officer_login(srv, api)
            case, party_id = await case_with_party(api, officer)
            status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
            assert status == 201, session
            status, invitation = await api.call(
                "POST", f"/api/cases/{case}/invitations", officer, {"party_id": party_id}
            )
            assert status == 201, invitation
            device = "d" * 43
            redeem = {"token": invitation["token"], "device": device}
            status, first = await api.call(
                "POST", "/api/invitations/redeem", json=redeem | {"consent": CONSENT}
            )
            assert status == 200, first
            watcher = PeerClient(srv.base_url, session["token"])
            clients.append(watcher)
            await watcher.connect()
            party = PeerClient(srv.base_url, first["token"])
            clients.append(party)
            await party.connect()
            pid = first["participant"]
            await party.close()
            await watcher.wait_for(
                lambda m: m["type"] == "participant_reconnecting" and m["participant"] == pid
            )
            if meanwhile == "removed":
                await srv.app[DB].run(lambda c: revoke_grants(c, session["id"], pid, "removed"))
                again = await resume(srv, clients, party)
                assert again.joined is not None and again.joined["code"] == "removed"
                assert again.joined["message"].startswith("民警已将您移出本次会话")
                await wait_until(lambda: again.ws_close_code is not None, what="closed")
                assert again.ws_close_code == 4003
                left = await watcher.wait_for(
                    lambda m: m["type"] == "participant_left" and m["participant"] == pid
                )
                assert left["reason"] == "removed"
                late = PeerClient(srv.base_url, first["token"])
                clients.append(late)
                with pytest.raises(RuntimeError, match="'code': 'removed'"):
                    await late.connect()
                status, body = await api.call("POST", "/api/invitations/redeem", json=redeem)
                assert status == 403 and body["error"] == "removed", body
                return
            status, second = await api.call("POST", "/api/invitations/redeem", json=redeem)
            assert status == 200, second
            again = await resume(srv, clients, party)
            assert again.joined is not None and again.joined["code"] == "superseded"
            assert again.joined["message"].startswith("此链接已在本设备上重新打开")
            await wait_until(lambda: again.ws_close_code is not None, what="refused socket closed")
            assert again.ws_close_code == 4003
            # the refused resume does not end the participant: the page opened last joins
            # with its own grant and takes it over, the watcher seeing it back, never leaving
            (room,) = srv.sfu.rooms.values()
            assert room.participants[pid].suspended
            newest = PeerClient(srv.base_url, second["token"])
            clients.append(newest)
            await newest.connect()
            assert newest.joined is not None and newest.joined["type"] == "joined"
            assert newest.joined["participant"]["id"] == pid
            await watcher.wait_for(
                lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == pid
            )
            assert _kinds(watcher.messages, pid) == [
                "participant_joined",
                "participant_reconnecting",
                "participant_resumed",
            ]
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()
    assert leftovers(srv.app) == {}


async def test_a_page_that_says_it_is_going_leaves_as_closed_after_the_unload_grace(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """A page sends ``unload`` as its tab closes (or reloads: it cannot tell): the participant
    waits away for ``media.unload_grace`` only, and then leaves as ``closed``, long before the
    ``resume_grace`` a lost connection gets. Its socket is closed normally (1000)."""
    media = {"resume_grace": 60.0, "unload_grace": 1.0}
    async with own_server(tmp_path, clients, media=media) as srv:
        party = await join(srv, clients, ROOM, "party")
        await party.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
        officer = await join(srv, clients, ROOM, "officer", decode=False)
        await wait_until(lambda: officer.mids_for_participant("party") != [], what="offer")
        loop = asyncio.get_running_loop()
        said = loop.time()
        await party.send({"type": "unload"})
        away = await officer.wait_for(_reconnecting("party"))
        assert away["reason"] == "closed"
        left = await officer.wait_for(
            lambda m: m["type"] == "participant_left" and m["participant"] == "party", timeout=30
        )
        assert left["reason"] == "closed"
        assert loop.time() - said < 30  # the unload grace, not the 60 s resume grace
        await wait_until(lambda: party.ws_close_code is not None, what="the socket closed")
        assert party.ws_close_code == 1000
        assert _kinds(officer.messages, "party") == [
            "participant_reconnecting",
            "participant_left",
        ]
        late = await resume(srv, clients, party)
        assert late.joined is not None and late.joined["code"] == "resume_refused"


async def test_a_page_going_then_reloaded_resumes_within_the_unload_grace(
    server: Server, clients: list[PeerClient]
) -> None:
    """The same ``unload`` from a page that reloads: its resume comes within the unload grace
    and it is back as the same participant, its tracks going on."""
    party, officer, mid = await _publish_and_watch(server, clients)
    room = server.sfu.rooms[ROOM]
    tracks_before = set(room.participants["party"].up_tracks)
    await party.send({"type": "unload"})
    away = await officer.wait_for(_reconnecting("party"))
    assert away["reason"] == "closed"
    again = await resume(server, clients, party)
    assert again.joined is not None and again.joined["type"] == "resumed", again.joined
    count = _received(officer, mid)[2]
    await again.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
    await wait_until(lambda: _received(officer, mid)[2] > count + 30, timeout=20, what="media")
    assert set(room.participants["party"].up_tracks) == tracks_before
    assert _kinds(officer.messages, "party")[-2:] == [
        "participant_reconnecting",
        "participant_resumed",
    ]
    assert "participant_left" not in _kinds(officer.messages, "party")


async def test_an_unload_grace_of_zero_leaves_at_once_as_closed(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """``media.unload_grace`` 0: a page that says it is going leaves at once, as ``closed``."""
    media = {"resume_grace": 20.0, "unload_grace": 0.0}
    async with own_server(tmp_path, clients, media=media) as srv:
        party = await join(srv, clients, ROOM, "party")
        officer = await join(srv, clients, ROOM, "officer")
        await party.send({"type": "unload"})
        left = await officer.wait_for(lambda m: m["type"] == "participant_left")
        assert left["participant"] == "party" and left["reason"] == "closed"
        assert "participant_reconnecting" not in _kinds(officer.messages, "party")


async def test_the_same_participant_joining_in_another_page_takes_it_over(
    server: Server, clients: list[PeerClient]
) -> None:
    """With resume on, a ``join`` of a participant that is in the room (the link opened again
    in another tab, readmitted) takes it over as a resume would: the old page gets ``bye``
    ``duplicate`` and 4010, the others see it away for a moment and back (never a leave and a
    join), and the new page's tracks continue the old ones on the same transceivers."""
    party, officer, mid = await _publish_and_watch(server, clients)
    room = server.sfu.rooms[ROOM]
    first = room.participants["party"]
    tracks_before = set(first.up_tracks)
    second = await join(server, clients, ROOM, "party")
    assert second.joined is not None and second.joined["type"] == "joined"
    bye = await party.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "duplicate"
    await wait_until(lambda: party.ws_close_code is not None, what="the old page's socket")
    assert party.ws_close_code == 4010
    away = await officer.wait_for(_reconnecting("party"))
    assert away["reason"] == "duplicate"
    await officer.wait_for(lambda m: m["type"] == "participant_resumed")
    assert room.participants["party"] is first and first.resumes == 1
    count = _received(officer, mid)[2]
    await second.publish(ToneAudioTrack(), PatternVideoTrack(fps=15))
    await wait_until(lambda: _received(officer, mid)[2] > count + 30, timeout=20, what="media")
    assert officer.mids_for_participant("party", "video") == [mid]
    assert set(first.up_tracks) == tracks_before
    assert _kinds(officer.messages, "party") == [
        "participant_reconnecting",
        "participant_resumed",
    ]
    # the old page's resume token counts no more: it cannot take the participant back
    late = await resume(server, clients, party)
    assert late.joined is not None and late.joined["code"] == "resume_refused"
