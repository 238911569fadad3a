"""The identity check before a party joins (issue 13, item 2), through the HTTP API.

A real server as `remotecase serve` runs it (``auth.prejoin_check`` on, development mode off),
the default face engine, references and stills from real face photos (the astronaut is the
party; Tom Hanks is someone else), joins on the real signalling WebSocket. The page's side is
in tests/test_browser_prejoin.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest
import skimage.data

from bench.peer import PeerClient
from control.appkeys import CONFIG, CUSTODY
from control.config import load_config
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
)
from tests.test_admission import assert_refusal, audit_actions, joined, refused
from tests.test_verifier import HANKS, _png


def canvas(face: np.ndarray | None, *, level: int = 128) -> np.ndarray:
    """A 640x480 camera picture: ``face`` scaled to 480x480 in the middle, on grey."""
    out = np.full((480, 640, 3), level, dtype=np.uint8)
    if face is not None:
        out[:, 80:560] = cv2.resize(face, (480, 480), interpolation=cv2.INTER_AREA)
    return out


def jpeg(rgb: np.ndarray, quality: int = 85) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return data.tobytes()


ASTRONAUT = skimage.data.astronaut()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False, "prejoin_check": True}))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


@pytest.fixture
async def clients() -> AsyncIterator[list[PeerClient]]:
    made: list[PeerClient] = []
    yield made
    for client in made:
        await client.close()


async def open_call(
    api: Api, server: Server, *, face: bool = True, enroll: bool = True
) -> dict[str, Any]:
    officer = await officer_login(server, api)
    case, party = await case_with_party(api, officer)
    if enroll:
        status, body = await api.call(
            "PUT", f"/api/cases/{case}/parties/{party}/reference", officer, data=_png(ASTRONAUT)
        )
        assert status == 200, body
    status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
    assert status == 201, session
    redeemed = await party_link(api, officer, case, party, {"recording": True, "face": face})
    return {
        "officer": officer,
        "case": case,
        "party": party,
        "session": session,
        "token": redeemed["token"],
        "base": f"/api/cases/{case}/sessions/{session['id']}/prejoin",
    }


async def sample(api: Api, token: str, data: bytes) -> tuple[int, Any]:
    """One still, paced as the page paces them."""
    await asyncio.sleep(0.35)
    return await api.call("POST", "/api/party/prejoin/sample", token, data=data)


def custody(server: Server, entry_type: str) -> list[dict[str, Any]]:
    return [e for e in server.app[CUSTODY].entries() if e["type"] == entry_type]


async def test_the_default_server_checks_parties_before_they_join() -> None:
    assert load_config(None, environ={}).auth.prejoin_check is True


async def test_a_matching_face_passes_and_then_the_join_is_admitted(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    assert server.app[CONFIG].auth.prejoin_check
    call = await open_call(api, server)
    token = call["token"]
    # the join is refused until the check passed, with the reason, Chinese first
    assert_refusal(await refused(server, token), "identity_unchecked")
    status, state = await api.call("GET", "/api/party/prejoin", token)
    assert status == 200, state
    assert (state["status"], state["route"], state["needed"], state["of"], state["required"]) == (
        "checking",
        "face",
        3,
        5,
        True,
    )
    status, officer_view = await api.call("GET", call["base"], call["officer"])
    assert status == 200 and officer_view["parties"][0]["status"] == "none"

    events = await api.http.ws_connect(api.base.replace("http", "ws") + "/api/events")
    await events.send_json({"type": "auth", "token": call["officer"]})
    assert (await events.receive_json())["type"] == "ready"
    still = jpeg(canvas(ASTRONAUT))
    results = []
    for _ in range(3):
        status, body = await sample(api, token, still)
        assert status == 200, body
        results.append(body)
    assert [r["verdict"] for r in results] == ["match"] * 3, results
    assert [r["status"] for r in results] == ["checking", "checking", "passed"]
    assert results[0]["guidance"].startswith("请保持不动")
    assert results[-1]["admitted"] and "score" not in results[-1]  # the party sees no score
    # each verdict is in the custody log like the call's, and so is the result
    verdicts = custody(server, "verification.verdict")
    assert len(verdicts) == 3 and {v["phase"] for v in verdicts} == {"prejoin"}
    assert all(v["verdict"] == "match" and v["score"] >= v["threshold"] for v in verdicts)
    assert all(v["participant"] == f"party-{call['party']}" and v["still_sha256"] for v in verdicts)
    (result,) = custody(server, "verification.prejoin")
    assert (result["result"], result["matches"], result["samples"]) == ("passed", 3, 3)
    # the officer sees each verdict with its score as it comes, and the result
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["status"] != "passed":
        event = await events.receive_json(timeout=10)
        if event["type"] == "prejoin":
            seen.append(event)
    await events.close()
    assert [(e["verdict"], e["participant"]) for e in seen] == [
        ("match", f"party-{call['party']}")
    ] * 3
    assert [e["score"] for e in seen] == [v["score"] for v in verdicts]
    # ... and the result and its verdicts in the session's state before admitting
    status, officer_view = await api.call("GET", call["base"], call["officer"])
    (party,) = officer_view["parties"]
    assert party["status"] == "passed" and party["decided_by"] == "verifier"
    assert [v["verdict"] for v in party["verdicts"]] == ["match"] * 3
    assert [v["custody_index"] for v in party["verdicts"]] == [v["index"] for v in verdicts]
    # a further still is pointless: the check is decided
    status, body = await sample(api, token, still)
    assert status == 409 and body["error"] == "already_admitted"
    # and now the join goes through
    await joined(server, clients, token)
    actions = await audit_actions(server, call["case"])
    assert ("call.refused", "identity_unchecked") in actions  # the refusal is audited
    assert ("prejoin.passed", "matches") in actions


async def test_another_face_is_refused_until_the_officer_admits_by_hand(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(api, server)
    token = call["token"]
    other = jpeg(canvas(HANKS))
    bodies = []
    for _ in range(3):
        status, body = await sample(api, token, other)
        assert status == 200, body
        bodies.append(body)
    assert [b["verdict"] for b in bodies] == ["no_match"] * 3
    assert bodies[-1]["status"] == "failed" and bodies[-1]["reason"] == "different_face"
    assert bodies[-1]["message"].startswith("未能确认是您本人")
    assert bodies[-1]["attempts_left"] == 2 and "重试" in bodies[-1]["guidance"]
    status, body = await sample(api, token, other)
    assert status == 409 and body["error"] == "attempt_over"
    assert_refusal(await refused(server, token), "identity_unchecked")
    # a retry starts a new attempt, still refused to join until it passes
    status, body = await api.call("POST", "/api/party/prejoin/retry", token)
    assert status == 200 and (body["status"], body["attempt"]) == ("checking", 2)
    assert_refusal(await refused(server, token), "identity_unchecked")
    (failed,) = custody(server, "verification.prejoin")
    assert (failed["result"], failed["reason"]) == ("failed", "different_face")

    # the officer decides: a reason is needed, then the party is admitted
    path = f"{call['base']}/{call['party']}/admit"
    status, body = await api.call("POST", path, call["officer"], {})
    assert status == 400
    status, body = await api.call(
        "POST", path, call["officer"], {"reason": "known to the officer; photo on file is old"}
    )
    assert status == 200 and body["status"] == "admitted", body
    (admission,) = custody(server, "verification.manual_admission")
    assert admission["actor"] == "officer:li" and admission["index"] == body["custody_index"]
    assert admission["reason"] == "known to the officer; photo on file is old"
    status, body = await api.call("POST", path, call["officer"], {"reason": "twice"})
    assert status == 409 and body["error"] == "already_admitted"
    await joined(server, clients, token)
    actions = await audit_actions(server, call["case"])
    assert ("prejoin.failed", "different_face") in actions
    assert ("prejoin.admitted", "known to the officer; photo on file is old") in actions


async def test_no_face_and_a_dark_picture_get_guidance(server: Server, api: Api) -> None:
    call = await open_call(api, server)
    status, body = await sample(api, call["token"], jpeg(canvas(None)))
    assert status == 200 and body["verdict"] == "no_face", body
    assert body["guidance"] == "请把脸放在框内 / centre your face in the frame"
    dark = (canvas(ASTRONAUT).astype(np.float32) * 0.15).astype(np.uint8)
    status, body = await sample(api, call["token"], jpeg(dark))
    assert status == 200 and body["verdict"] in ("no_face", "low_quality"), body
    assert body["guidance"].startswith("光线太暗")
    # a picture that never shows a face gives up with that reason
    for _ in range(10):
        status, body = await sample(api, call["token"], jpeg(canvas(None)))
        assert status == 200
    assert (body["status"], body["reason"]) == ("failed", "no_face")
    assert body["message"].startswith("未检测到人脸")
    assert len(custody(server, "verification.verdict")) == 12


async def test_stills_that_are_not_usable_are_refused_and_judge_nothing(
    server: Server, api: Api
) -> None:
    call = await open_call(api, server)
    token = call["token"]
    for data, status_code, code in (
        (b"", 422, "empty"),
        (b"MZ" + bytes(200), 422, "not_a_jpeg"),
        (_png(ASTRONAUT), 422, "not_a_jpeg"),
        (jpeg(np.full((60, 80, 3), 128, np.uint8)), 422, "bad_size"),
        (jpeg(canvas(ASTRONAUT))[:400], 422, "bad_jpeg"),
        (b"\xff\xd8" + bytes(600 * 1024), 413, "too_large"),
    ):
        status, body = await sample(api, token, data)
        assert (status, body["error"]) == (status_code, code), body
        chinese = body["message"].split(" / ")[0]
        assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese), body
    # stills faster than the page sends them are refused
    still = jpeg(canvas(ASTRONAUT))
    first = api.call("POST", "/api/party/prejoin/sample", token, data=still)
    second = api.call("POST", "/api/party/prejoin/sample", token, data=still)
    statuses = sorted(s for s, _ in await asyncio.gather(first, second))
    assert statuses == [200, 429]
    assert len(custody(server, "verification.verdict")) == 1
    # the invitation token itself is not enough: the check belongs to the call token
    status, body = await api.call("GET", "/api/party/prejoin", "x" * 43)
    assert status == 401


async def test_a_party_who_declined_face_checks_is_admitted_by_an_id_attestation(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(api, server, face=False)
    token = call["token"]
    status, body = await sample(api, token, jpeg(canvas(ASTRONAUT)))
    assert status == 409 and body["error"] == "no_face_consent"
    assert custody(server, "verification.verdict") == []  # nothing face-processed
    status, state = await api.call("GET", "/api/party/prejoin", token)
    assert state["route"] == "document" and state["guidance"].startswith("请将身份证件")
    assert_refusal(await refused(server, token), "identity_unchecked")

    # the party holds its document to the camera; the officer looks at the still
    document = jpeg(canvas(skimage.data.coffee()))
    await asyncio.sleep(0.35)
    status, body = await api.call("POST", "/api/party/prejoin/still", token, data=document)
    assert status == 200, body
    status, seen = await api.call("GET", f"{call['base']}/{call['party']}/still", call["officer"])
    assert status == 200 and seen == document
    import hashlib

    digest = hashlib.sha256(document).hexdigest()
    path = f"{call['base']}/{call['party']}/attest"
    for bad in (
        {"document_type": "library_card", "document_last_digits": "1234"},
        {"document_type": "resident_id", "document_last_digits": "12-34"},
        {"document_type": "resident_id"},
    ):
        status, body = await api.call("POST", path, call["officer"], bad)
        assert status == 400, (bad, body)
    status, body = await api.call(
        "POST",
        path,
        call["officer"],
        {
            "document_type": "resident_id",
            "document_last_digits": "123X",
            "note": "居民身份证原件，照片与本人相符 / original ID card, photo matches",
        },
    )
    assert status == 200 and body["status"] == "attested", body
    (attested,) = custody(server, "verification.id_attested")
    assert attested["actor"] == "officer:li" and attested["document_type"] == "resident_id"
    assert attested["document_last_digits"] == "123X" and attested["still_sha256"] == digest
    assert attested["at"] and attested["note"].startswith("居民身份证原件")
    status, view = await api.call("GET", call["base"], call["officer"])
    (party,) = view["parties"]
    assert party["status"] == "attested" and party["attestation"]["by"] == "officer:li"
    assert party["still"] is None  # the picture is not kept once decided
    await joined(server, clients, token)
    assert ("prejoin.attested", attested["note"]) in await audit_actions(server, call["case"])


async def test_without_a_reference_the_party_waits_for_the_officer(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    call = await open_call(api, server, enroll=False)
    status, body = await sample(api, call["token"], jpeg(canvas(ASTRONAUT)))
    assert status == 409 and body["error"] == "no_reference"
    status, body = await api.call(
        "POST",
        f"{call['base']}/{call['party']}/admit",
        call["officer"],
        {"reason": "ID checked at the counter"},
    )
    assert status == 200
    await joined(server, clients, call["token"])


def test_behind_the_front_the_check_runs_on_the_worker_of_its_room(server: Server) -> None:
    """With several workers, a party's pre-join requests go where its session's room is (as
    the officer's calls on the case do), found from the room its call token names."""
    from control.front import worker_for_path, worker_for_request

    token = server.token("case-7-0a1b2c3d", "party-3", role="party")
    assert worker_for_request("/api/party/prejoin/sample", f"Bearer {token}", 4) == 7 % 4
    assert worker_for_request("/api/party/prejoin", f"Bearer {token}", 4) == worker_for_path(
        "/api/cases/7/sessions/1/prejoin", 4
    )
    # other party calls, and tokens that name no room, stay on worker 0
    assert worker_for_request("/api/party/materials", f"Bearer {token}", 4) == 0
    assert worker_for_request("/api/party/prejoin", "Bearer not-a-token", 4) == 0


async def test_observers_read_the_checks_but_neither_decide_nor_see_pictures(
    server: Server, api: Api
) -> None:
    call = await open_call(api, server, face=False)
    await asyncio.sleep(0.35)
    status, _ = await api.call(
        "POST", "/api/party/prejoin/still", call["token"], data=jpeg(canvas(ASTRONAUT))
    )
    assert status == 200
    auditor = await officer_login(server, api, "wu", brigade="brigade-1", role="observer")
    status, view = await api.call("GET", call["base"], auditor)
    assert status == 200 and view["parties"][0]["still"] is not None
    status, _ = await api.call("GET", f"{call['base']}/{call['party']}/still", auditor)
    assert status == 403
    status, _ = await api.call(
        "POST", f"{call['base']}/{call['party']}/admit", auditor, {"reason": "no"}
    )
    assert status == 403
    status, _ = await api.call(
        "POST",
        f"{call['base']}/{call['party']}/attest",
        auditor,
        {"document_type": "passport", "document_last_digits": "1234"},
    )
    assert status == 403
    # another brigade's officer does not even see the session
    stranger = await officer_login(server, api, "zhao", brigade="brigade-2")
    status, _ = await api.call("GET", call["base"], stranger)
    assert status == 404
    assert_refusal(await refused(server, call["token"]), "identity_unchecked")


def test_an_attempt_needs_three_of_the_first_five_judged_stills() -> None:
    from control.verification.prejoin import Rules, outcome

    rules = Rules()

    def run(*names: str) -> tuple[str, str]:
        return outcome([{"verdict": n.rstrip("*"), "dark": n.endswith("*")} for n in names], rules)

    assert run("match", "match") == ("checking", "")
    # stills that cannot be judged neither help nor hurt
    assert run("no_face", "match", "low_quality", "no_match", "match", "match") == (
        "passed",
        "matches",
    )
    assert run("match", "no_match", "match", "no_match", "match") == ("passed", "matches")
    assert run("no_match", "match", "no_match", "match", "no_match") == ("failed", "different_face")
    assert run("liveness_failed", "liveness_failed", "match", "no_match", "liveness_failed") == (
        "failed",
        "liveness_failed",
    )
    # twelve stills without a decision give up with the commonest reason
    assert run(*["no_face"] * 11) == ("checking", "")
    assert run(*["no_face"] * 12) == ("failed", "no_face")
    assert run(*(["no_face*"] * 7 + ["low_quality"] * 5)) == ("failed", "too_dark")
    assert run(*(["multiple_faces"] * 7 + ["match"] * 2 + ["no_face"] * 3)) == (
        "failed",
        "multiple_faces",
    )
