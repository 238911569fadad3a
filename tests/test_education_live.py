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
            assert officer.joined is not None
            officer_id = officer.joined["participant"]["id"]
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
            await wait_until(
                lambda: all(packets_from(v, officer_id) > 20 for v in viewers.values()),
                timeout=30,
                what="the officer's media at every viewer",
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
                lambda m: m["type"] == "hands" and [h["participant"] for h in m["hands"]] == [b, a],
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
            assert forwarded_to(room, a) == {officer_id, b, c}
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
            await wait_until(
                lambda: any(
                    m["type"] == "floor" and m["event"] == "expired" for m in officer.messages
                ),
                timeout=30,
                what=f"the grant expired ({[m for m in officer.messages if m['type'] == 'floor']})",
            )
            [expired] = [
                m for m in officer.messages if m["type"] == "floor" and m["event"] == "expired"
            ]
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
            assert (server.app[LIVE].state(session["room"]) or {})["holders"] == []

            # the floor given and taken is evidence (custody) and audited with the officer
            await wait_until(
                lambda: (
                    len(
                        [e for e in server.app[CUSTODY].entries() if e["type"] == "education.floor"]
                    )
                    >= 5
                ),
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


QUIZ = {
    "questions": [
        {"text": "雨天跟车距离应当？", "choices": ["缩短", "加大"], "correct": [1]},
        {
            "text": "疲劳驾驶的危害（多选）",
            "choices": ["反应变慢", "判断失误", "油耗降低"],
            "correct": [0, 1],
            "multiple": True,
        },
    ],
    "pass_mark": 100,
}


async def test_questions_and_the_quiz(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, session, parties, tokens = await education_session(server, api, li)
            base = f"/api/cases/{cid}/sessions/{session['id']}"
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            viewers = {}
            for party_id in parties[:2]:
                viewer = PeerClient(server.base_url, tokens[party_id], decode=False)
                clients.append(viewer)
                await viewer.connect()
                viewers[party_id] = viewer
            first, second = parties[:2]
            a, b = viewers[first], viewers[second]

            # a question, markup and all, reaches the officer as sent (the pages show it as
            # text) and is stored
            asked = "<img src=x onerror=alert(1)> 雨天能否超车？"
            await a.send({"type": "question", "text": asked})
            note = await officer.wait_for(lambda m: m["type"] == "question")
            assert note["message"]["text"] == asked
            assert note["message"]["participant"] == f"party-{first}"
            assert note["message"]["name"] == "李华"
            await a.wait_for(lambda m: m["type"] == "question")  # the asker sees its own
            assert not any(m["type"] == "question" for m in b.messages)  # not the others
            # too long, empty, too often: refused with a reason, nothing stored
            await a.send({"type": "question", "text": "长" * 301})
            error = await a.wait_for(lambda m: m["type"] == "error")
            assert error["code"] == "text_too_long" and "300" in error["message"]
            await a.send({"type": "question", "text": " \u200b\x07 "})
            await a.wait_for(lambda m: m["type"] == "error" and m["code"] == "text_required")
            for n in range(3):
                await a.send({"type": "question", "text": f"第{n}问"})
            limited = await a.wait_for(
                lambda m: m["type"] == "error" and m["code"] == "too_many_questions"
            )
            assert "秒后再试" in limited["message"]
            # officers do not ask
            await officer.send({"type": "question", "text": "x"})
            await officer.wait_for(
                lambda m: m["type"] == "error" and m["code"] == "question_officer"
            )
            _, live = await api.call("GET", f"{base}/live", li)
            questions = [m for m in live["messages"] if m["kind"] == "question"]
            assert [q["text"] for q in questions] == [asked, "第0问", "第1问"]

            # answered: everyone sees the answer; an announcement too
            status, body = await api.call(
                "POST", f"{base}/questions/{questions[0]['id']}/answer", li, {"text": "不能。"}
            )
            assert status == 200, body
            assert body["question"]["answered_at"] is not None
            for viewer in (a, b):
                answered = await viewer.wait_for(lambda m: m["type"] == "answered")
                assert answered["answer"]["text"] == "不能。"
                assert answered["question"]["text"] == asked
            status, _ = await api.call("POST", f"{base}/announcements", li, {"text": "休息五分钟"})
            assert status == 201
            for viewer in (a, b):
                await viewer.wait_for(lambda m: m["type"] == "announcement")
            status, body = await api.call("POST", f"{base}/announcements", li, {"text": ""})
            assert (status, body["error"]) == (400, "text_required")

            # the quiz: bad definitions refused, each naming the question
            bad = {"questions": [{"text": "q", "choices": ["a", "b"], "correct": [0, 1]}]}
            status, body = await api.call("PUT", f"{base}/quiz", li, bad | {"pass_mark": 50})
            assert (status, body["error"]) == (400, "quiz_correct")
            assert "第 1 题" in body["message"]
            status, body = await api.call("PUT", f"{base}/quiz", li, QUIZ | {"pass_mark": 0})
            assert (status, body["error"]) == (400, "quiz_pass_mark")
            status, body = await api.call("PUT", f"{base}/quiz", li, QUIZ)
            assert status == 200, body
            # viewers get it without the right choices
            for viewer in (a, b):
                got = await viewer.wait_for(lambda m: m["type"] == "quiz")
                assert "correct" not in str(got["quiz"]) and len(got["quiz"]["questions"]) == 2
            quiz_id = body["id"]
            await a.send({"type": "quiz_answer", "quiz": quiz_id, "answers": [[1], [1, 0]]})
            result = await a.wait_for(lambda m: m["type"] == "quiz_result")
            assert (result["score"], result["total"], result["passed"]) == (2, 2, True)
            await b.send({"type": "quiz_answer", "quiz": quiz_id, "answers": [[1], [0]]})
            result = await b.wait_for(lambda m: m["type"] == "quiz_result")
            assert (result["score"], result["passed"]) == (1, False)
            heard = await officer.wait_for(
                lambda m: m["type"] == "quiz_answered" and m["participant"] == f"party-{second}"
            )
            assert heard["name"] == "王强"
            # once each; malformed answers refused
            await b.send({"type": "quiz_answer", "quiz": quiz_id, "answers": [[1], [0, 1]]})
            await b.wait_for(
                lambda m: m["type"] == "error" and m["code"] == "quiz_answered_already"
            )
            await a.send({"type": "quiz_answer", "quiz": quiz_id, "answers": [[0, 1], [0]]})
            await a.wait_for(lambda m: m["type"] == "error" and m["code"] == "quiz_answer")
            # answered: the quiz can no longer change
            status, body = await api.call("PUT", f"{base}/quiz", li, QUIZ)
            assert (status, body["error"]) == (409, "quiz_answered")

            # a viewer who joins later gets what officers said, and the quiz if not answered
            late = PeerClient(server.base_url, tokens[parties[2]], decode=False)
            clients.append(late)
            await late.connect()
            said_so_far = await late.wait_for(lambda m: m["type"] == "questions")
            kinds = [m["kind"] for m in said_so_far["messages"]]
            assert kinds == ["answer", "announcement"]  # others' questions are not shown
            await late.wait_for(lambda m: m["type"] == "quiz")

            # the attendance API shows each viewer's score and question count
            _, seen = await api.call("GET", f"{base}/attendance", li)
            by_party = {v["party_id"]: v for v in seen["viewers"]}
            assert by_party[first]["quiz"]["passed"] is True
            assert by_party[second]["quiz"]["passed"] is False
            assert by_party[first]["questions"] == 3 and by_party[second]["questions"] == 0
            assert seen["quiz_pass_mark"] == 100
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}


def test_floor_rules() -> None:
    floor = floor_rules.Floor(max_holders=2, seconds=60)
    assert floor.raise_hand("a", "A", 1.0) and floor.raise_hand("b", "B", 2.0)
    assert not floor.raise_hand("a", "A", 3.0)  # keeps its place
    assert [h.participant for h in floor.hands] == ["a", "b"]
    holder = floor.give("b", "B", 10.0, "officer:li")
    assert holder.until == 70.0 and [h.participant for h in floor.hands] == ["a"]
    floor.give("c", "C", 20.0, "officer:li", seconds=0)  # until taken back
    try:
        floor.give("a", "A", 21.0, "officer:li")
        raise AssertionError("a third holder")
    except floor_rules.FloorRefused as exc:
        assert exc.code == "floor_full" and exc.params == {"max_holders": 2}
    assert not floor.raise_hand("b", "B", 30.0)  # a holder needs no hand
    assert floor.expired(69.0) == [] and [h.participant for h in floor.expired(70.0)] == ["b"]
    assert floor.left("c") is not None and floor.holders == {}
    assert floor.take("c") is None


def test_quiz_and_text_rules() -> None:
    questions = quiz_rules.parse_questions(QUIZ["questions"])
    assert quiz_rules.score(questions, [[1], [0, 1]]) == 2
    assert quiz_rules.score(questions, [[1], [0, 1, 2]]) == 1  # multiple: exactly the right ones
    assert quiz_rules.passed(1, 2, 50) and not quiz_rules.passed(1, 2, 51)
    for answers in ([[1]], [[0, 1], [0]], [[True], [0]], [[5], [0]], [[1], []], "x"):
        try:
            quiz_rules.score(questions, answers)
            raise AssertionError(answers)
        except quiz_rules.QuizRefused:
            pass
    for bad in (
        [],
        [{"text": "q", "choices": ["a"], "correct": [0]}],
        [{"text": "q", "choices": ["a", "a"], "correct": [0]}],
        [{"text": " ", "choices": ["a", "b"], "correct": [0]}],
        [{"text": "q", "choices": ["a", "b"], "correct": [2]}],
        [{"text": "q", "choices": ["a", "b"], "correct": [0], "multiple": "yes"}],
    ):
        try:
            quiz_rules.parse_questions(bad)
            raise AssertionError(bad)
        except quiz_rules.QuizRefused:
            pass
    assert clean_text("  第一行\n第二行\x00  ") == "第一行\n第二行"
    limit = RateLimit(count=2, seconds=10)
    limit.take("a", 0.0)
    limit.take("a", 1.0)
    try:
        limit.take("a", 2.0)
        raise AssertionError("a third within the window")
    except ChatRefused as exc:
        assert exc.code == "too_many_questions" and exc.params == {"seconds": 8}
    limit.take("b", 2.0)  # per participant
    limit.take("a", 10.5)  # the first has left the window


async def test_hands_and_the_floor_come_back_after_a_restart(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A server stopped mid-session: its successor gives the floor back to its holder and keeps
    the raised hands in their order; a holder who does not come back is let go."""
    from control.education import desk

    monkeypatch.setattr(desk, "RETURN_WAIT", 4.0)  # the wait for those not back (90 s)
    config = make_config(
        tmp_path, verifier={"enabled": False}, education={"floor_holders": 2, "floor_seconds": 0}
    )
    server = await start_server(config)
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, session, parties, tokens = await education_session(server, api, li)
            floor_url = f"/api/cases/{cid}/sessions/{session['id']}/floor"
            a, b, c = (f"party-{p}" for p in parties)

            async def join_all() -> tuple[PeerClient, dict[str, PeerClient]]:
                officer = PeerClient(server.base_url, session["token"], decode=False)
                clients.append(officer)
                await officer.connect()
                viewers = {}
                for party_id in parties:
                    if restarted and f"party-{party_id}" == c:
                        continue  # c does not come back after the restart
                    viewer = PeerClient(server.base_url, tokens[party_id], decode=False)
                    clients.append(viewer)
                    await viewer.connect()
                    await viewer.publish(PatternVideoTrack(), ToneAudioTrack())
                    viewers[f"party-{party_id}"] = viewer
                return officer, viewers

            restarted = False
            officer, viewers = await join_all()
            await viewers[b].send({"type": "hand", "raised": True})
            for holder in (a, c):
                status, state = await api.call(
                    "POST", floor_url, li, {"action": "give", "participant": holder}
                )
                assert status == 200, state
            await officer.wait_for(
                lambda m: m["type"] == "hands" and [h["participant"] for h in m["hands"]] == [b]
            )
            # saved as it changes (the desk writes the latest state in the background)
            await wait_until(
                lambda: _saved_floor(tmp_path) == ([a, c], [b]), what="the floor saved"
            )

            # the server stops mid-session (its clients lose it) and a successor starts
            await server.runner.cleanup()
            for client in clients:
                await client.close()
            clients.clear()
            assert _saved_floor(tmp_path) == ([a, c], [b])  # stopping let nobody go
            server = await start_server(config)
            restarted = True
            officer, viewers = await join_all()
            room = server.sfu.rooms[session["room"]]
            state = await viewers[a].wait_for(lambda m: m["type"] == "floor")
            assert [h["participant"] for h in state["holders"]] == [a, c]
            hands = await officer.wait_for(lambda m: m["type"] == "hands")
            assert [h["participant"] for h in hands["hands"]] == [b]
            await wait_until(lambda: a in room.participants, what="a back")
            assert not room.participants[a].held  # a speaks again
            assert room.participants[b].held
            await wait_until(
                lambda: packets_from(officer, a) > 20, timeout=30, what="a forwarded again"
            )
            # c is not back within the wait: its floor ends, and that is said and saved
            left = await officer.wait_for(
                lambda m: m["type"] == "floor" and m["event"] == "left", timeout=20
            )
            assert left["participant"] == c
            assert [h["participant"] for h in left["holders"]] == [a]
            await wait_until(lambda: _saved_floor(tmp_path) == ([a], [b]), what="saved again")
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}
    assert server.app[LIVE].dump() == {"rooms": 0, "tasks": 0}


def _saved_floor(tmp_path: Path) -> tuple[list[str], list[str]] | None:
    """(holders, hands) of the one saved floor state, read from the database file."""
    import json
    import sqlite3

    [path] = list(tmp_path.rglob("control.sqlite3"))
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT state FROM edu_floor").fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    state = json.loads(row[0])
    return (
        [h["participant"] for h in state["holders"]],
        [h["participant"] for h in state["hands"]],
    )
