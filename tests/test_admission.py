"""Nobody joins a call without a case: admission against the database at every join.

A real server with the default configuration (``auth.dev_join`` off), real officers' logins,
invitations and sessions through the HTTP API, and real aiortc clients on the signalling
WebSocket. Every refusal is checked as a client sees it: an ``error`` with the code and a
Chinese-then-English message, then a close with code 4003 and the reason in the close frame.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CONFIG, DB
from control.cli import _load, build_parser
from control.config import load_config
from control.sessions.signalling import CLOSE_REFUSED
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server as `remotecase serve` runs it: not in development mode."""
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    assert not srv.app[CONFIG].auth.dev_join
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


@dataclass
class Call:
    officer: str  # the officer's login token
    case: int
    party: int
    session: dict[str, Any]  # id, room, token (the officer's signalling token)
    redeemed: dict[str, Any]  # the party's: room, participant, token
    invitation: int

    @property
    def base(self) -> str:
        return f"/api/cases/{self.case}/sessions/{self.session['id']}"


async def open_call(server: Server, api: Api, username: str = "li") -> Call:
    officer = await officer_login(server, api, username)
    case, party = await case_with_party(api, officer)
    status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
    assert status == 201, session
    redeemed = await party_link(api, officer, case, party)
    invitation = await server.app[DB].run(
        lambda c: c.execute("SELECT id FROM invitations WHERE party_id = ?", (party,)).fetchone()[
            "id"
        ]
    )
    return Call(officer, case, party, session, redeemed, invitation)


async def refused(server: Server, token: str) -> tuple[dict[str, Any], int, str]:
    """Join with ``token`` on a bare WebSocket: (the error, the close code, the close reason)."""
    error: dict[str, Any] | None = None
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.base_url}/ws") as ws:
        await ws.send_json({"type": "join", "token": token})
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(msg.data)
                assert message["type"] != "joined", "joined although it should be refused"
                if message["type"] == "error":
                    error = message
                continue
            assert msg.type == aiohttp.WSMsgType.CLOSE, msg
            assert error is not None, "closed without an error message"
            return error, int(msg.data), str(msg.extra)


def assert_refusal(result: tuple[dict[str, Any], int, str], code: str) -> None:
    error, close_code, reason = result
    assert error["code"] == code, error
    assert error["ref"] == "join"
    chinese, english = error["message"].split(" / ", 1)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese), error  # Chinese first
    assert english.isascii() and english, error
    assert close_code == CLOSE_REFUSED
    assert reason.startswith(f"{code}: ") and chinese in reason  # the close frame says why


async def joined(
    server: Server, clients: list[PeerClient], token: str, decode: bool = False
) -> PeerClient:
    client = PeerClient(server.base_url, token, decode=decode)
    clients.append(client)
    await client.connect()
    assert client.joined is not None and client.joined["type"] == "joined"
    return client


async def audit_actions(server: Server, case: int) -> list[tuple[str, str]]:
    return await server.app[DB].run(
        lambda c: [
            (r["action"], r["reason"])
            for r in c.execute(
                "SELECT action, reason FROM audit WHERE case_id = ? ORDER BY id", (case,)
            )
        ]
    )


# -- the default configuration ---------------------------------------------------------------
async def test_default_server_is_not_in_development_mode(server: Server, api: Api) -> None:
    assert load_config(None, environ={}).auth.dev_join is False
    status, health = await api.call("GET", "/healthz")
    assert status == 200 and health["dev_join"] is False
    status, body = await api.call("POST", "/dev/token", json={"room": "demo"})
    assert status == 404 and body["error"] == "dev_join_off"
    assert "remotecase serve --dev" in body["message"]
    status, page = await api.call("GET", "/")
    assert status == 200 and "加入通话需要民警发出的邀请链接" in page.decode()
    # a token signed with the server's own secret but for no session: a hand-minted one
    assert_refusal(await refused(server, server.token("demo", "mallory")), "not_admitted")
    assert_refusal(await refused(server, server.token("demo", "o", role="officer")), "not_admitted")
    assert server.sfu.rooms == {}  # refused before any room was made
    # nor does a hand-minted party token reach the party endpoints
    call = await open_call(server, api)
    hand_made = server.token(call.session["room"], call.redeemed["participant"])
    status, body = await api.call("GET", "/api/party", hand_made)
    assert (status, body["error"]) == (401, "not_admitted")
    assert (await api.call("GET", "/api/party", call.redeemed["token"]))[0] == 200


def test_serve_dev_flag_turns_development_mode_on_for_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("REMOTECASE_")]:
        monkeypatch.delenv(key)
    assert _load(build_parser().parse_args(["serve"])).auth.dev_join is False
    assert _load(build_parser().parse_args(["serve", "--dev"])).auth.dev_join is True
    monkeypatch.setenv("REMOTECASE_SERVER__HOST", "0.0.0.0")
    assert _load(build_parser().parse_args(["serve"])).auth.dev_join is False
    with pytest.raises(SystemExit) as exit_info:
        _load(build_parser().parse_args(["serve", "--dev"]))
    assert exit_info.value.code == 2


# -- refusals at join time, with unexpired tokens --------------------------------------------
async def test_removed_participant_cannot_come_back_with_its_token(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    officer = await joined(server, clients, call.session["token"])
    party = await joined(server, clients, call.redeemed["token"])
    await party.publish(PatternVideoTrack())
    pid = call.redeemed["participant"]
    await wait_until(lambda: officer.mids_for_participant(pid) != [], what="party's video")
    assert (await api.call("GET", "/api/party", call.redeemed["token"]))[0] == 200
    status, body = await api.call(
        "POST",
        f"{call.base}/remove",
        call.officer,
        {"participant": pid, "reason": "disrupts the inquiry"},
    )
    assert status == 200, body
    bye = await party.wait_for(lambda m: m["type"] == "bye")
    assert bye["reason"] == "removed"
    assert_refusal(await refused(server, call.redeemed["token"]), "removed")
    # nor does its call token reach the party's endpoints (uploads) any more
    assert (await api.call("GET", "/api/party", call.redeemed["token"]))[0] == 401
    assert ("call.refused", "removed") in await audit_actions(server, call.case)
    # the officer's own call goes on, and a new invitation is the officer's way back in
    assert not officer.closed_reason
    again = await party_link(api, call.officer, call.case, call.party)
    back = await joined(server, clients, again["token"])
    assert back.joined is not None and back.joined["participant"]["id"] == pid


async def test_ended_session_refuses_every_token(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    officer = await joined(server, clients, call.session["token"])
    status, _ = await api.call("POST", f"{call.base}/end", call.officer, {"reason": "done"})
    assert status == 200
    await officer.wait_for(lambda m: m["type"] == "bye")
    for token in (call.session["token"], call.redeemed["token"]):
        assert_refusal(await refused(server, token), "session_ended")
    # a fresh officer token is not given for an ended session either
    status, body = await api.call("POST", f"{call.base}/token", call.officer)
    assert status == 404, body
    assert call.session["room"] not in server.sfu.rooms  # no room made again


async def test_closed_case_refuses_every_token(server: Server, api: Api) -> None:
    call = await open_call(server, api)
    assert (await api.call("POST", f"{call.base}/end", call.officer, {"reason": "done"}))[0] == 200
    assert (
        await api.call("POST", f"/api/cases/{call.case}/close", call.officer, {"reason": "settled"})
    )[0] == 200
    for token in (call.session["token"], call.redeemed["token"]):
        assert_refusal(await refused(server, token), "case_closed")


async def test_revoked_link_refuses_the_party_it_admitted(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    party = await joined(server, clients, call.redeemed["token"])
    await party.leave()
    await party.wait_for(lambda m: m["type"] == "bye")
    status, _ = await api.call(
        "POST",
        f"/api/invitations/{call.invitation}/revoke",
        call.officer,
        {"reason": "sent to the wrong person"},
    )
    assert status == 200
    assert_refusal(await refused(server, call.redeemed["token"]), "invitation_revoked")
    assert (await api.call("GET", "/api/party", call.redeemed["token"]))[0] == 401
    await joined(server, clients, call.session["token"])  # the officer is not affected


async def test_logged_out_officer_is_refused(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    status, body = await api.call("POST", f"{call.base}/token", call.officer)
    assert status == 200
    second = body["token"]
    officer = await joined(server, clients, call.session["token"])
    await officer.leave()
    await officer.wait_for(lambda m: m["type"] == "bye")
    assert (await api.call("POST", "/api/logout", call.officer))[0] == 200
    for token in (call.session["token"], second):
        assert_refusal(await refused(server, token), "logged_out")
    # the party's admission came from its invitation, not from the officer's login
    await joined(server, clients, call.redeemed["token"])
    # logging in again gives a new login and a new token that joins
    login = await api.login("li")
    status, body = await api.call("POST", f"{call.base}/token", login)
    assert status == 200
    await joined(server, clients, body["token"])


async def test_a_token_of_one_session_does_not_open_another_room(server: Server, api: Api) -> None:
    """The grant names its room: the same participant ID in another room is not admitted,
    and a token whose grant row is gone (another server's database) is refused too."""
    call = await open_call(server, api)
    forged = server.signer.mint(
        "case-999-deadbeef", call.redeemed["participant"], role="party", grant_id="0" * 32
    )
    assert_refusal(await refused(server, forged), "not_admitted")
    await server.app[DB].run(lambda c: c.execute("DELETE FROM call_grants"))
    assert_refusal(await refused(server, call.redeemed["token"]), "not_admitted")


# -- the lock is the session's ---------------------------------------------------------------
async def test_lock_survives_the_room_emptying_and_being_made_again(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    room = call.session["room"]
    officer = await joined(server, clients, call.session["token"])
    assert (await api.call("POST", f"{call.base}/lock", call.officer, {"reason": "questioning"}))[
        0
    ] == 200
    await officer.leave()
    await officer.wait_for(lambda m: m["type"] == "bye")
    await wait_until(lambda: room not in server.sfu.rooms, what="the empty room to close")

    party = PeerClient(server.base_url, call.redeemed["token"], decode=False)
    clients.append(party)
    await party.connect(join=False)
    await party.send({"type": "join", "token": party.token})
    refusal = await party.wait_for(lambda m: m["type"] == "error")
    assert refusal["code"] == "room_locked"
    assert room not in server.sfu.rooms  # the refused join left no room (nor a recording)
    # the room made again for the officer is locked as the session is
    officer = await joined(server, clients, call.session["token"])
    assert server.sfu.rooms[room].locked
    party.messages.clear()
    await party.send({"type": "join", "token": party.token})
    assert (await party.wait_for(lambda m: m["type"] == "error"))["code"] == "room_locked"
    # an empty room can be locked and unlocked too: it is the session's state
    assert (await api.call("POST", f"{call.base}/unlock", call.officer, {"reason": "next party"}))[
        0
    ] == 200
    await party.send({"type": "join", "token": party.token})
    await party.wait_for(lambda m: m["type"] == "joined")
    locked = await server.app[DB].run(
        lambda c: c.execute(
            "SELECT locked FROM sessions WHERE id = ?", (call.session["id"],)
        ).fetchone()[0]
    )
    assert locked == 0


# -- an officer's mute is the officer's ------------------------------------------------------
def _muted(client: PeerClient, track: str) -> list[dict[str, Any]]:
    return [m for m in client.messages if m["type"] == "track_muted" and m["track"] == track]


async def test_officer_mute_cannot_be_undone_by_the_party(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    pid = call.redeemed["participant"]
    officer = await joined(server, clients, call.session["token"])
    party = await joined(server, clients, call.redeemed["token"])
    await party.publish(PatternVideoTrack(), ToneAudioTrack())
    answer = await party.wait_for(lambda m: m["type"] == "publish_answer")
    tracks = {t["kind"]: t["id"] for t in answer["tracks"]}
    assert all(t["officer_muted"] is False and t["self_muted"] is False for t in answer["tracks"])
    await wait_until(lambda: len(officer.mids_for_participant(pid)) == 2, what="party's tracks")
    audio = server.sfu.rooms[call.session["room"]].participants[pid].up_tracks[tracks["audio"]]

    status, _ = await api.call(
        "POST",
        f"{call.base}/mute",
        call.officer,
        {"participant": pid, "kinds": ["audio"], "reason": "noise"},
    )
    assert status == 200
    heard = await officer.wait_for(lambda m: m["type"] == "track_muted")
    assert (heard["track"], heard["muted"], heard["officer_muted"], heard["self_muted"]) == (
        tracks["audio"],
        True,
        True,
        False,
    )
    await wait_until(lambda: _muted(party, tracks["audio"]) != [], what="the party hears it")
    assert audio.muted

    # the party's unmute is refused with the reason; the connection and the call go on
    await party.send({"type": "mute", "track": tracks["audio"], "muted": False})
    refusal = await party.wait_for(lambda m: m["type"] == "error")
    assert refusal["code"] == "muted_by_officer" and refusal["ref"] == "mute"
    assert refusal["message"].startswith("民警已将您的麦克风静音")
    assert audio.muted

    # the party's own mute is separate: it may mute itself on top, and unmuting that
    # is refused while the officer's holds
    await party.send({"type": "mute", "track": tracks["audio"], "muted": True})
    await wait_until(
        lambda: any(m["self_muted"] for m in _muted(officer, tracks["audio"])),
        what="the party's own mute",
    )
    # the officer lifts theirs: the party's own still holds
    status, _ = await api.call(
        "POST",
        f"{call.base}/unmute",
        call.officer,
        {"participant": pid, "kinds": ["audio"], "reason": "quiet now"},
    )
    assert status == 200
    await wait_until(
        lambda: not _muted(officer, tracks["audio"])[-1]["officer_muted"],
        what="the officer's unmute",
    )
    last = _muted(officer, tracks["audio"])[-1]
    assert (last["muted"], last["self_muted"]) == (True, True)
    assert audio.muted
    await party.send({"type": "mute", "track": tracks["audio"], "muted": False})
    await wait_until(
        lambda: _muted(officer, tracks["audio"])[-1]["muted"] is False,
        what="the party unmutes itself",
    )
    assert not audio.muted
    # the video track was never muted by anyone
    assert _muted(officer, tracks["video"]) == []


async def test_officer_mute_holds_when_the_party_reconnects(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(server, api)
    pid = call.redeemed["participant"]
    officer = await joined(server, clients, call.session["token"])
    party = await joined(server, clients, call.redeemed["token"])
    await party.publish(ToneAudioTrack())
    await wait_until(lambda: officer.mids_for_participant(pid) != [], what="party's audio")
    assert (
        await api.call(
            "POST",
            f"{call.base}/mute",
            call.officer,
            {"participant": pid, "kinds": ["audio"], "reason": "r"},
        )
    )[0] == 200
    await party.wait_for(lambda m: m["type"] == "track_muted")
    await party.leave()
    await party.wait_for(lambda m: m["type"] == "bye")

    # a reload is a new participant object: the session remembers the officer's mute
    again = await joined(server, clients, call.redeemed["token"])
    await again.publish(ToneAudioTrack())
    answer = await again.wait_for(lambda m: m["type"] == "publish_answer")
    (track,) = answer["tracks"]
    assert (track["muted"], track["officer_muted"], track["self_muted"]) == (True, True, False)
    offered = await officer.wait_for(
        lambda m: m["type"] == "track_published" and m["track"]["id"] == track["id"]
    )
    assert offered["track"]["officer_muted"] is True
    await again.send({"type": "mute", "track": track["id"], "muted": False})
    assert (await again.wait_for(lambda m: m["type"] == "error"))["code"] == "muted_by_officer"
    participant = server.sfu.rooms[call.session["room"]].participants[pid]
    assert participant.up_tracks[track["id"]].muted


# -- development mode keeps case rooms honest too --------------------------------------------
async def test_development_tokens_do_not_reopen_an_ended_session(tmp_path: Path) -> None:
    dev = await start_server(make_config(tmp_path, auth={"dev_join": True}))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, dev.base_url)
            call = await open_call(dev, api)
            hand_made = dev.token(call.session["room"], "bench-viewer")
            await joined(dev, clients, hand_made)  # an open session's room: the bench's case
            assert (await api.call("POST", f"{call.base}/end", call.officer, {"reason": "done"}))[
                0
            ] == 200
            assert_refusal(await refused(dev, hand_made), "session_ended")
            await joined(dev, clients, dev.token("demo", "tab-1"))  # rooms outside every case
    finally:
        for client in clients:
            await client.close()
        await dev.runner.cleanup()
