"""The live education session with real aiortc peers: raised hands and the floor enforced by
the server, questions and answers, the quiz.

The floor is the server's: a roster viewer without it publishes (its video still reaches the
room's in-process subscribers, the verifier and the recorder) but nothing of it is forwarded
to any other participant; with the floor it is, and taken back it stops again. The face model
is not needed here (the verifier is off); ``test_education_live_quiz.py`` runs it for the
certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CUSTODY, DB, LIVE
from control.db import rows
from control.education import floor as floor_rules
from control.education import quiz as quiz_rules
from control.education.chat import ChatRefused, RateLimit, clean_text
from mediaserver.local import LocalSubscriber
from mediaserver.room import SfuRoom
from tests.conftest import (
    CONSENT,
    Api,
    Server,
    leftovers,
    make_config,
    officer_login,
    start_server,
    wait_until,
)

ROSTER = (
    "company,city,role,name,id_number\n"
    "顺达运输有限公司,保定,driver,李华,110101199003071234\n"
    "顺达运输有限公司,保定,driver,王强,130101199201012222\n"
    "宏远物流,石家庄,manager,赵敏,130101198801013333\n"
)


async def education_session(
    server: Server, api: Api, li: str
) -> tuple[int, dict[str, Any], list[int], dict[int, str]]:
    """An education case with the roster's three people as viewers, its session open, and a
    redeemed signalling token per viewer."""
    status, body = await api.call("POST", "/api/education/roster/import", li, data=ROSTER.encode())
    assert status == 201, body
    _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"})
    cid = case["id"]
    status, body = await api.call(
        "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": body["people"]}
    )
    assert status == 201, body
    parties = [v["party_id"] for v in body["viewers"]]
    _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
    _, links = await api.call("POST", f"/api/cases/{cid}/education/invitations", li, {})
    tokens = {}
    for link in links["invitations"]:
        status, redeemed = await api.call(
            "POST", "/api/invitations/redeem", json={"token": link["token"], "consent": CONSENT}
        )
        assert status == 200, redeemed
        tokens[link["party_id"]] = redeemed["token"]
    return cid, session, parties, tokens


def forwarded_to(room: SfuRoom, owner: str) -> set[str]:
    """The participants that get any of ``owner``'s tracks (in-process subscribers aside)."""
    out = set()
    for up in room.participants[owner].up_tracks.values():
        for down in up.down_tracks():
            if not isinstance(down, LocalSubscriber):
                out.add(down.down_id.split("/")[0])
    return out


def packets_from(client: PeerClient, owner: str) -> int:
    return sum(client.received_packets.get(mid, 0) for mid in client.mids_for_participant(owner))


async def test_only_the_floor_holder_is_forwarded(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, verifier={"enabled": False}, education={"floor_holders": 1, "floor_seconds": 0}
    )
    server = await start_server(config)
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, session, parties, tokens = await education_session(server, api, li)
            sid = session["id"]
            floor_url = f"/api/cases/{cid}/sessions/{sid}/floor"
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            await officer.publish(PatternVideoTrack(), ToneAudioTrack())
            viewers = {}
            for party_id in parties:
                viewer = PeerClient(server.base_url, tokens[party_id], decode=False)
                clients.append(viewer)
                await viewer.connect()
                await viewer.publish(PatternVideoTrack(), ToneAudioTrack())
                viewers[f"party-{party_id}"] = viewer
            a, b, c = viewers
            room = server.sfu.rooms[session["room"]]
            # each viewer hears who holds the floor as it joins (nobody)
            for viewer in viewers.values():
                state = await viewer.wait_for(lambda m: m["type"] == "floor")
                assert state["event"] == "state" and state["holders"] == []
            # the officer is forwarded to every viewer; no viewer to anyone
            for viewer in viewers.values():
                await wait_until(
                    lambda v=viewer: packets_from(v, officer.joined["participant"]["id"]) > 20,
                    timeout=30,
                    what="the officer's media at a viewer",
                )
            await wait_until(
                lambda: all(len(room.participants[p].up_tracks) == 2 for p in viewers),
                what="every viewer published",
            )
            for p in viewers:
                assert room.participants[p].held
                assert forwarded_to(room, p) == set()
            assert packets_from(officer, a) == 0 and packets_from(viewers[b], a) == 0

            # hands go up in order; the officers see the queue
            await viewers[b].send({"type": "hand", "raised": True})
            await viewers[a].send({"type": "hand", "raised": True})
            await viewers[c].send({"type": "hand", "raised": True})
            await viewers[c].send({"type": "hand", "raised": False})
            hands = await officer.wait_for(
                lambda m: m["type"] == "hands"
                and [h["participant"] for h in m["hands"]] == [b, a],
            )
            assert hands["hands"][0]["name"] == "王强"
            _, live = await api.call("GET", f"/api/cases/{cid}/sessions/{sid}/live", li)
            assert [h["participant"] for h in live["floor"]["hands"]] == [b, a]

            # the floor to a: forwarded to everyone, everyone told
            status, state = await api.call(
                "POST", floor_url, li, {"action": "give", "participant": a}
            )
            assert status == 200, state
            assert [h["participant"] for h in state["holders"]] == [a]
            assert [h["participant"] for h in state["hands"]] == [b]  # a's hand went down
            for client in (officer, *viewers.values()):
                given = await client.wait_for(
                    lambda m: m["type"] == "floor" and m["event"] == "given"
                )
                assert given["participant"] == a
            assert not room.participants[a].held
            await wait_until(
                lambda: packets_from(officer, a) > 20 and packets_from(viewers[b], a) > 20,
                timeout=30,
                what="a's media forwarded",
            )
            assert forwarded_to(room, a) == {officer.joined["participant"]["id"], b, c}
            assert forwarded_to(room, b) == set()  # the others still held
            # one at a time (configured): the second is refused and nothing changes
            status, body = await api.call(
                "POST", floor_url, li, {"action": "give", "participant": b}
            )
            assert (status, body["error"]) == (409, "floor_full")
            assert "同时最多 1 人发言" in body["message"]
            assert room.participants[b].held
            # bad input: a clear error
            status, body = await api.call(
                "POST", floor_url, li, {"action": "steal", "participant": b}
            )
            assert status == 400 and body["error"] == "bad_request"
            status, body = await api.call(
                "POST", floor_url, li, {"action": "give", "participant": "party-999"}
            )
            assert (status, body["error"]) == (404, "not_in_room")

            # taken back: a's publication stops being forwarded
            status, state = await api.call(
                "POST", floor_url, li, {"action": "take", "participant": a}
            )
            assert status == 200 and state["holders"] == []
            await viewers[b].wait_for(lambda m: m["type"] == "floor" and m["event"] == "taken")
            assert room.participants[a].held
            await wait_until(lambda: forwarded_to(room, a) == set(), what="a no longer forwarded")
            await wait_until(
                lambda: viewers[b].mids_for_participant(a) == [], what="a's tracks gone at b"
            )
            # still published (the verifier and the recorder see it), only not forwarded
            assert len(room.participants[a].up_tracks) == 2

            # a limited grant ends by itself
            status, state = await api.call(
                "POST", floor_url, li, {"action": "give", "participant": b, "seconds": 5}
            )
            assert status == 200 and state["holders"][0]["until"] is not None
            await wait_until(lambda: not room.participants[b].held, what="b forwarded")
            expired = await officer.wait_for(
                lambda m: m["type"] == "floor" and m["event"] == "expired", timeout=20
            )
            assert expired["participant"] == b and expired["holders"] == []
            assert room.participants[b].held

            # leaving ends the floor, and a hand left up goes down
            status, _ = await api.call("POST", floor_url, li, {"action": "give", "participant": c})
            assert status == 200
            await viewers[c].close()
            left = await officer.wait_for(
                lambda m: m["type"] == "floor" and m["event"] == "left", timeout=20
            )
            assert left["participant"] == c
            assert server.app[LIVE].state(session["room"])["holders"] == []

            # the floor given and taken is evidence (custody) and audited with the officer
            await wait_until(
                lambda: len(
                    [e for e in server.app[CUSTODY].entries() if e["type"] == "education.floor"]
                )
                >= 5,
                what="custody entries",
            )
            floor_entries = [
                (e["event"], e["participant"], e["by"])
                for e in server.app[CUSTODY].entries()
                if e["type"] == "education.floor"
            ]
            assert floor_entries[:5] == [
                ("given", a, "officer:li"),
                ("taken", a, "officer:li"),
                ("given", b, "officer:li"),
                ("expired", b, "server"),
                ("given", c, "officer:li"),
            ]
            audit = await server.app[DB].run(
                lambda conn: rows(
                    conn.execute(
                        "SELECT actor, action, object FROM audit WHERE action LIKE "
                        "'education.floor%' ORDER BY id"
                    )
                )
            )
            assert [(r["actor"], r["action"]) for r in audit] == [
                ("officer:li", "education.floor_given"),
                ("officer:li", "education.floor_taken"),
                ("officer:li", "education.floor_given"),
                ("server", "education.floor_expired"),
                ("officer:li", "education.floor_given"),
                ("server", "education.floor_left"),
            ]
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}
    assert server.app[LIVE].dump() == {"rooms": 0, "tasks": 0}
