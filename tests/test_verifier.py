"""Face verification with the default engine on real faces that dependencies ship.

The astronaut (``skimage.data.astronaut()``) is the enrolled party; Tom Hanks and the group
photo ``t1.jpg`` come from the insightface wheel (installed without its dependencies, for its
images only).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import onnx  # here, not in the test: importing it takes 1-2 s of a core, held on the loop
import pytest
import skimage.data
from onnx import TensorProto, helper

from bench.impair import ImpairedLink
from bench.peer import ImageVideoTrack, PeerClient
from control.appkeys import CUSTODY, RECORDER, VERIFIER
from mediaserver.protocols import CloseReason
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    join,
    leftovers,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)
from tests.test_resume import resume
from verifier.engine import DEFAULT_THRESHOLD

_spec = importlib.util.find_spec("insightface")
if _spec is None or not _spec.submodule_search_locations:
    raise RuntimeError(
        "the insightface wheel (for its test images) is not installed: "
        "pip install --no-deps insightface==2.1"
    )
IMAGES = Path(next(iter(_spec.submodule_search_locations))) / "data" / "images"


def _read(name: str) -> np.ndarray:
    image = cv2.imread(str(IMAGES / name))
    assert image is not None, f"cannot read {IMAGES / name}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _png(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.tobytes()


ASTRONAUT = skimage.data.astronaut()
HANKS = cv2.resize(_read("Tom_Hanks_54745.png"), (448, 448), interpolation=cv2.INTER_CUBIC)
CAT = skimage.data.chelsea()


async def _server(
    tmp_path: Path, *, media: dict[str, Any] | None = None, **verifier: Any
) -> Server:
    settings = {"alert_after": 2.0, "no_face_after": 3.0, "sample_interval": 0.5, **verifier}
    return await start_server(make_config(tmp_path, verifier=settings, media=media or {}))


async def _enroll(
    server: Any, token: str, case_id: int, party_id: int, photo: bytes
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        return await Api(http, server.base_url).call(
            "PUT", f"/api/cases/{case_id}/parties/{party_id}/reference", token, data=photo
        )


async def test_enrollment_accepts_one_clear_face_and_rejects_with_reasons(tmp_path: Path) -> None:
    server = await _server(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            wu = await officer_login(server, api, "wu", "brigade-2")
            cid, pid = await case_with_party(api, li)
        status, body = await _enroll(server, li, cid, pid, _png(ASTRONAUT))
        assert status == 200, body
        assert body["quality"]["size"] >= 80 and len(body["photo_sha256"]) == 64
        assert body["model"]["engine"] == "mtcnn-facenet-vggface2"
        cases = {
            "group": (_png(_read("t1.jpg")), "multiple_faces"),
            "cat": (_png(CAT), "no_face"),
            "blurred": (_png(cv2.GaussianBlur(ASTRONAUT, (0, 0), 6)), "too_blurred"),
            "tiny": (_png(cv2.resize(ASTRONAUT, (128, 128))), "face_too_small"),
            "garbage": (b"\x00not an image" * 10, "not_an_image"),
            "empty": (b"", "empty"),
        }
        for name, (photo, code) in cases.items():
            status, body = await _enroll(server, li, cid, pid, photo)
            assert (status, body["error"]) == (422, code), (name, body)
            assert body["message"]
        # the photo itself is not kept: only its hash and an encrypted embedding
        stored = (tmp_path / "var" / "faces" / f"case-{cid}" / f"party-{pid}.json").read_text()
        assert "ciphertext" in stored and "wrapped_key" in stored
        assert (await _enroll(server, wu, cid, pid, _png(ASTRONAUT)))[0] == 404
        assert (await _enroll(server, li, cid, pid + 1, _png(ASTRONAUT)))[0] == 404
        entries = server.app[CUSTODY].entries()
        assert [e["type"] for e in entries] == ["verification.enrolled"]
        assert entries[0]["case"] == str(cid) and entries[0]["actor"] == "officer:li"
    finally:
        await server.runner.cleanup()


async def _call(
    server: Any,
    clients: list[PeerClient],
    schedule: list[tuple[float, np.ndarray | None]],
    *,
    consent: dict[str, bool] | None = None,
    fps: int = 15,
    size: tuple[int, int] = (640, 480),
    link: ImpairedLink | None = None,
) -> tuple[PeerClient, PeerClient, str]:
    """A case session: the officer in the call, the party (the astronaut's reference) showing
    ``schedule``. Returns (officer, party, room)."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        cid, pid = await case_with_party(api, li)
        status, body = await _enroll(server, li, cid, pid, _png(ASTRONAUT))
        assert status == 200, body
        _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        redeemed = await party_link(api, li, cid, pid, consent)
    officer = PeerClient(server.base_url, session["token"], decode=False)
    clients.append(officer)
    await officer.connect()
    driver = PeerClient(server.base_url, redeemed["token"], record_payloads=True, link=link)
    clients.append(driver)
    await driver.connect()
    await driver.publish(ImageVideoTrack(schedule, width=size[0], height=size[1], fps=fps))
    return officer, driver, session["room"]


def _states(officer: PeerClient) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in officer.messages:
        if m["type"] == "verification" and (not out or out[-1] != (m["state"], m["reason"])):
            out.append((m["state"], m["reason"]))
    return out


# The server and the list its test's clients go in (closed by the fixture).
VerifierServer = tuple[Server, list[PeerClient]]


@pytest.fixture
async def verifier_server(tmp_path: Path) -> AsyncIterator[VerifierServer]:
    server = await _server(tmp_path)
    clients: list[PeerClient] = []
    yield server, clients
    for client in clients:
        await client.close()
    await server.runner.cleanup()
    assert leftovers(server.app) == {}, "left behind after the server stopped"


async def test_the_enrolled_person_is_verified(verifier_server: VerifierServer) -> None:
    server, clients = verifier_server
    officer, _, _ = await _call(server, clients, [(0, ASTRONAUT)])
    await wait_until(
        lambda: ("verified", "matches") in _states(officer), timeout=20, what="verified"
    )

    def verdicts() -> list[dict[str, Any]]:
        return [m for m in officer.messages if m["type"] == "verification"]

    # "verified" needs two of the last three samples to match; an early sample may still be
    # a no_face or low_quality one, so wait for three matches running
    await wait_until(
        lambda: len(verdicts()) >= 3 and all(v["verdict"] == "match" for v in verdicts()[-3:]),
        timeout=20,
        what="three matching samples running",
    )
    assert all(v["score"] >= v["threshold"] for v in verdicts() if v["verdict"] == "match")
    assert ("alert", "different_face") not in _states(officer)


async def test_verification_goes_on_after_the_party_resumes(tmp_path: Path) -> None:
    """Issue 18: a party whose network went dark for 4 s, and whose signalling socket died with
    it, resumes on new sockets as the same participant; the officer keeps getting its verdicts,
    matching again, from the watch that outlived the outage (no new enrollment, no leave)."""
    server = await _server(tmp_path, media={"resume_grace": 20.0})
    clients: list[PeerClient] = []
    try:
        link = ImpairedLink()
        officer, driver, _ = await _call(server, clients, [(0, ASTRONAUT)], link=link)
        await wait_until(
            lambda: ("verified", "matches") in _states(officer), timeout=20, what="verified"
        )
        pid = driver.joined["participant"]["id"]  # type: ignore[index]
        (room,) = [r for r in server.sfu.rooms.values() if pid in r.participants]
        watch = server.app[VERIFIER].watch_of(room.room_id, pid)
        tracks = set(room.participants[pid].up_tracks)
        assert watch is not None and len(tracks) == 1
        link.outage(4.0)
        await driver.close()
        await officer.wait_for(lambda m: m["type"] == "participant_reconnecting", timeout=10)
        await asyncio.sleep(4.0)
        again = await resume(server, clients, driver)
        assert again.joined is not None and again.joined["type"] == "resumed", again.joined
        await again.publish(ImageVideoTrack([(0, ASTRONAUT)], width=640, height=480, fps=15))
        resumed = await officer.wait_for(lambda m: m["type"] == "participant_resumed", timeout=10)
        since = officer.messages.index(resumed)

        def matches_after() -> list[dict[str, Any]]:
            return [
                m
                for m in officer.messages[since:]
                if m["type"] == "verification" and m.get("verdict") == "match"
            ]

        await wait_until(
            lambda: len(matches_after()) >= 2, timeout=30, what="matching verdicts after resuming"
        )
        assert {m["participant"] for m in matches_after()} == {pid}
        # the same watch on the same track: nothing restarted
        assert server.app[VERIFIER].watch_of(room.room_id, pid) is watch
        assert set(room.participants[pid].up_tracks) == tracks
        await wait_until(
            lambda: _states(officer)[-1] == ("verified", "matches"),
            timeout=20,
            what="verified again",
        )
        assert ("alert", "different_face") not in _states(officer)
        assert not [m for m in officer.messages if m["type"] == "participant_left"]
        assert server.sfu.counters["participants_resumed"] == 1
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}, "left behind after the server stopped"


async def test_close_is_ordered_idempotent_and_logs_every_verdict_taken(
    verifier_server: VerifierServer,
) -> None:
    server, clients = verifier_server
    verifier = server.app[VERIFIER]
    _, _, room_id = await _call(server, clients, [(0, ASTRONAUT)])
    await wait_until(lambda: verifier.samples >= 2, timeout=20, what="samples taken")
    [row] = verifier.status(room_id)
    watch = verifier.watch_of(room_id, row["participant"])
    assert watch is not None
    locals_before = server.sfu.dump()["local_subscribers"]

    # two callers at once (a shutdown step and a second stop): both return when it is done
    await asyncio.gather(verifier.close(CloseReason.SHUTDOWN), verifier.close(CloseReason.SHUTDOWN))
    assert verifier.closed and verifier.close_reason == CloseReason.SHUTDOWN
    assert verifier.dump() == {"rooms": 0, "watches": 0, "tasks": 0}
    # its subscriber left the room; the call itself goes on
    assert watch.subscriber.closed
    assert server.sfu.dump()["local_subscribers"] == locals_before - 1
    assert room_id in server.sfu.rooms
    # every verdict it took was logged before close returned (waited for, not cancelled)
    entries = server.app[CUSTODY].entries()
    assert len([e for e in entries if e["type"] == "verification.verdict"]) == verifier.samples
    # a closed verifier takes on no room
    verifier.watch_room(server.sfu.rooms[room_id])
    assert verifier.dump() == {"rooms": 0, "watches": 0, "tasks": 0}
    await verifier.close(CloseReason.SHUTDOWN)  # and a third call returns at once


async def test_someone_else_raises_an_alert(verifier_server: VerifierServer) -> None:
    server, clients = verifier_server
    officer, _, _ = await _call(server, clients, [(0, HANKS)])
    await wait_until(
        lambda: ("alert", "different_face") in _states(officer),
        timeout=20,
        what="alert for a different face",
    )
    assert ("verified", "matches") not in _states(officer)


async def test_a_face_swap_mid_call_is_caught_within_seconds(
    verifier_server: VerifierServer,
) -> None:
    server, clients = verifier_server
    swap_at = 6.0
    officer, _, _ = await _call(server, clients, [(0, ASTRONAUT), (swap_at, HANKS)])
    loop = asyncio.get_running_loop()
    await wait_until(
        lambda: ("verified", "matches") in _states(officer),
        timeout=20,
        what="verified before the swap",
    )
    verified_at = loop.time()
    await wait_until(
        lambda: ("alert", "different_face") in _states(officer),
        timeout=20,
        what="alert after the swap",
    )
    # alert_after (2 s) + sample interval + the rest of the pre-swap time, with slack
    assert loop.time() - verified_at <= swap_at + 2.0 + 4.0


async def test_no_face_raises_no_face(verifier_server: VerifierServer) -> None:
    server, clients = verifier_server
    # the party walks away: an empty grey room (a cat can fool a face detector now and then)
    officer, _, _ = await _call(server, clients, [(0, ASTRONAUT), (3.0, None)])
    await wait_until(
        lambda: ("alert", "no_face") in _states(officer), timeout=25, what="no-face alert"
    )
    verdicts = {m["verdict"] for m in officer.messages if m["type"] == "verification"}
    assert "no_face" in verdicts


def _verdicts(client: PeerClient) -> list[dict[str, Any]]:
    return [m for m in client.messages if m["type"] == "verification"]


async def test_a_320x240_stream_of_the_right_face_is_low_quality_never_an_alert(
    verifier_server: VerifierServer,
) -> None:
    """The party's stream arrives at 320x240 (CPU or bandwidth adaptation): her face, about
    35 px, is too small to judge. The officer is told so and what to do, the party too, and it
    is evidence like any verdict; it is never a no_face or different_face alert."""
    server, clients = verifier_server
    officer, driver, room = await _call(server, clients, [(0, ASTRONAUT)], size=(320, 240))
    await wait_until(
        lambda: ("low_quality", "too_small") in _states(officer),
        timeout=20,
        what="low quality: too small",
    )
    # past alert_after and no_face_after (2 s and 3 s here) and then some
    seen = len(_verdicts(officer))
    await wait_until(
        lambda: len(_verdicts(officer)) >= seen + 6, timeout=20, what="six more samples"
    )
    assert not any(state == "alert" for state, _ in _states(officer)), _states(officer)
    verdicts = _verdicts(officer)
    assert "no_match" not in {v["verdict"] for v in verdicts}
    assert all(
        v["verdict_reason"] == "too_small" for v in verdicts if v["verdict"] == "low_quality"
    )
    last = verdicts[-1]
    assert (last["state"], last["reason"]) == ("low_quality", "too_small")
    assert last["message"] == "画面太小，无法核验人脸 / picture too small to check the face"
    assert last["guidance"].startswith("请当事人靠近摄像头")
    assert " / Ask the party to come closer" in last["guidance"]
    # the party is asked to come closer (and is not shown any score)
    guidance = [m for m in driver.messages if m["type"] == "verification_guidance"]
    assert guidance and guidance[-1]["state"] == "low_quality"
    assert guidance[-1]["guidance"].startswith("画面太小，无法核验您的人脸")
    assert not any("score" in m for m in guidance)
    # evidence: each verdict with its reason and quality, and the state, in the custody log
    entries = server.app[CUSTODY].entries()
    logged = [
        e for e in entries if e["type"] == "verification.verdict" and e["verdict"] == "low_quality"
    ]
    assert logged and all(
        e["reason"] == "too_small" and e["quality"]["size"] < 60 for e in logged if e["faces"]
    )
    assert any(
        e["type"] == "verification.state"
        and e["state"] == "low_quality"
        and e["reason"] == "too_small"
        for e in entries
    )
    (status,) = server.app[VERIFIER].status(room)
    assert (status["state"], status["reason"]) == ("low_quality", "too_small")
    assert status["message"].startswith("画面太小") and status["guidance"] == last["guidance"]


async def test_a_blurred_picture_is_low_quality_then_verifies_when_sharp(
    verifier_server: VerifierServer,
) -> None:
    server, clients = verifier_server
    blurred = cv2.GaussianBlur(ASTRONAUT, (0, 0), 5)
    officer, driver, _ = await _call(server, clients, [(0, blurred), (7.0, ASTRONAUT)])
    await wait_until(
        lambda: ("low_quality", "too_blurred") in _states(officer),
        timeout=20,
        what="low quality: too blurred",
    )
    await wait_until(
        lambda: ("verified", "matches") in _states(officer), timeout=25, what="verified once sharp"
    )
    assert not any(state == "alert" for state, _ in _states(officer)), _states(officer)
    assert "no_match" not in {v["verdict"] for v in _verdicts(officer)}
    guidance = [m for m in driver.messages if m["type"] == "verification_guidance"]
    assert [m["state"] for m in guidance][-2:] == ["low_quality", "ok"]
    assert guidance[-2]["message"].startswith("画面太模糊")


async def test_every_verdict_is_evidence_in_the_recording(verifier_server: VerifierServer) -> None:
    server, clients = verifier_server
    officer, _, room = await _call(server, clients, [(0, ASTRONAUT)])
    # the session's room records by itself
    await wait_until(lambda: room in server.app[RECORDER].active, what="recording")
    recording = server.app[RECORDER].active[room]
    await wait_until(
        lambda: ("verified", "matches") in _states(officer), timeout=20, what="verified"
    )
    await asyncio.sleep(1.0)
    await server.app[RECORDER].stop(room, actor="officer:li", reason="done")
    entries = server.app[CUSTODY].entries()
    started = [e for e in entries if e["type"] == "verification.started"]
    assert started and started[0]["model"]["sha256"]["facenet"]
    verdicts = [
        e
        for e in entries
        if e["type"] == "verification.verdict" and e.get("recording") == recording.recording_id
    ]
    assert verdicts, "verdicts during the recording carry its ID"
    for entry in verdicts:
        assert entry["verdict"] in ("match", "no_match", "no_face", "multiple_faces", "low_quality")
        assert entry["model_id"] == started[0]["model_id"]
        assert len(entry["frame_sha256"]) == 64 and entry["threshold"] == DEFAULT_THRESHOLD
    assert started[0]["model"]["runtime"] == "onnxruntime"
    assert any(e["type"] == "verification.state" and e["state"] == "verified" for e in entries)
    status = server.app[VERIFIER].status(room)
    assert status[0]["state"] == "verified" and status[0]["samples"] >= 3


async def test_face_checks_need_consent_and_references_go_with_the_case(
    verifier_server: Any, tmp_path: Path
) -> None:
    server, clients = verifier_server
    declined = {"recording": True, "face": False, "electronic_delivery": False}
    officer, driver, room = await _call(server, clients, [(0, ASTRONAUT)], consent=declined)
    assert driver.joined is not None
    cid = int(room.split("-")[1])
    pid = int(driver.joined["participant"]["id"].split("-")[1])
    reference = tmp_path / "var" / "faces" / f"case-{cid}" / f"party-{pid}.json"
    # declining face checks deletes the reference enrolled before the call
    assert not reference.exists()
    deleted = [
        e for e in server.app[CUSTODY].entries() if e["type"] == "verification.reference_deleted"
    ]
    assert [(e["actor"], e["reason"]) for e in deleted] == [
        (f"party:{pid}", "the party declined face checks")
    ]
    # enrolled again while the party is in the call: still no comparison, and the officer
    # is told why
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await api.login("li")
        assert (await _enroll(server, li, cid, pid, _png(ASTRONAUT)))[0] == 200
        await wait_until(
            lambda: ("not_consented", "no_face_consent") in _states(officer),
            timeout=20,
            what="not_consented",
        )
        await asyncio.sleep(1.5)
        assert not any(e["type"] == "verification.verdict" for e in server.app[CUSTODY].entries())
        assert server.app[VERIFIER].status(room) == []
        # closing the case takes its face data away (after its session has ended)
        _, case = await api.call("GET", f"/api/cases/{cid}", li)
        (session,) = case["sessions"]
        status, body = await api.call(
            "POST", f"/api/cases/{cid}/close", li, {"reason": "penalty paid"}
        )
        assert (status, body["error"]) == (409, "session_open")
        await api.call(
            "POST", f"/api/cases/{cid}/sessions/{session['id']}/end", li, {"reason": "done"}
        )
        assert (await api.call("POST", f"/api/cases/{cid}/close", li, {"reason": "penalty paid"}))[
            0
        ] == 200
        assert not reference.exists()
        status, body = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        assert (status, body["error"]) == (409, "case_closed")
    last = [
        e for e in server.app[CUSTODY].entries() if e["type"] == "verification.reference_deleted"
    ][-1]
    assert (last["actor"], last["reason"]) == ("officer:li", "case closed: penalty paid")


def _liveness_model(path: Path, *, inputs: int = 3) -> str:
    """A stand-in liveness model (no real one installs from the registry; this one has the
    contract's shapes and answers the mean brightness of the aligned crop, about 0.4 for the
    astronaut): enough to drive the verdicts both ways with the threshold."""
    import hashlib

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["crop"], ["live"], axes=[1, 2, 3], keepdims=0)],
        "liveness",
        [helper.make_tensor_value_info("crop", TensorProto.FLOAT, ["N", inputs, 80, 80])],
        [helper.make_tensor_value_info("live", TensorProto.FLOAT, ["N"])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_liveness_model_when_configured_fails_a_spoof(tmp_path: Path) -> None:
    from verifier.engine import ModelError
    from verifier.liveness import LivenessModel, LivenessSpec

    model = tmp_path / "liveness.onnx"
    digest = _liveness_model(model)
    # the stand-in scores the astronaut about 0.4: a threshold of 0.9 makes it a spoof
    server = await _server(
        tmp_path, liveness_model=str(model), liveness_sha256=digest, liveness_threshold=0.9
    )
    clients: list[PeerClient] = []
    try:
        officer, _, _ = await _call(server, clients, [(0, ASTRONAUT)])
        await wait_until(
            lambda: ("alert", "liveness_failed") in _states(officer),
            timeout=20,
            what="liveness alert",
        )
        reported = [m for m in officer.messages if m["type"] == "verification"]
        assert all(m["verdict"] != "match" for m in reported)
        assert any(
            m["verdict"] == "liveness_failed" and 0.2 < m["liveness"] < 0.9 for m in reported
        )
        entries = server.app[CUSTODY].entries()
        started = next(e for e in entries if e["type"] == "verification.started")
        assert started["model"]["liveness_sha256"] == digest
        verdict = next(e for e in entries if e["type"] == "verification.verdict")
        assert verdict["verdict"] == "liveness_failed" and verdict["liveness"] < 0.9
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    # below the threshold the same face is live and compared as usual
    server = await _server(
        tmp_path / "again",
        liveness_model=str(model),
        liveness_sha256=digest,
        liveness_threshold=0.1,
    )
    clients = []
    try:
        officer, _, _ = await _call(server, clients, [(0, ASTRONAUT)])
        await wait_until(
            lambda: ("verified", "matches") in _states(officer),
            timeout=20,
            what="verified with liveness",
        )
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    # a tampered file or the wrong shapes are refused before anything runs
    with pytest.raises(RuntimeError, match="refusing to load"):
        await _server(tmp_path / "tampered", liveness_model=str(model), liveness_sha256="0" * 64)
    wrong = tmp_path / "wrong.onnx"
    with pytest.raises(ModelError, match=r"expected one float input \[N, 3, 80, 80\]"):
        LivenessModel(LivenessSpec(str(wrong), _liveness_model(wrong, inputs=1)))


async def test_a_saturated_verifier_never_costs_forwarding_a_packet(tmp_path: Path) -> None:
    # a sample every frame of 30 fps for one worker, with the slower FaceNet runtime (about
    # 80 ms a sample): more than twice what it can do, on a faster machine too
    server = await _server(tmp_path, sample_interval=0.02, workers=1, facenet_runtime="opencv")
    clients: list[PeerClient] = []
    try:
        _officer, driver, room = await _call(server, clients, [(0, ASTRONAUT)], fps=30)
        assert driver.joined is not None
        pid = driver.joined["participant"]["id"]
        watcher = await join(server, clients, room, "watcher", record_payloads=True)
        await wait_until(lambda: watcher.mids_for_participant(pid) != [], what="offer")
        (mid,) = watcher.mids_for_participant(pid)
        await wait_until(
            lambda: server.app[VERIFIER].skipped >= 5,
            timeout=20,
            what="samples skipped under overload",
        )
        await asyncio.sleep(2.0)
        from tests.test_forwarding import _assert_byte_identical, _stop_sending

        await _stop_sending([driver])
        _assert_byte_identical(driver, "video", watcher, mid, "driver -> watcher")
        assert server.app[VERIFIER].samples > 0
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


def _labelled_set(directory: Path) -> None:
    rng = np.random.default_rng(3)
    t1 = _read("t1.jpg")
    crops = []
    for x1, y1, x2, y2 in ((907, 60, 1011, 199), (52, 260, 169, 394), (267, 146, 372, 264)):
        w = x2 - x1
        crop = t1[max(0, y1 - w // 2) : y2 + w // 2, max(0, x1 - w // 2) : x2 + w // 2]
        crops.append(cv2.resize(crop, (crop.shape[1] * 2, crop.shape[0] * 2)))
    noisy = np.clip(
        cv2.resize(ASTRONAUT, (460, 460)) + rng.normal(0, 6, (460, 460, 3)), 0, 255
    ).astype(np.uint8)
    images = {
        "a/astronaut.png": ASTRONAUT,
        "a/noisy.png": noisy,
        "a/bright.png": np.clip(ASTRONAUT.astype(np.int16) + 35, 0, 255).astype(np.uint8),
        "b/hanks.png": HANKS,
        "c/t1a.png": crops[0],
        "d/t1b.png": crops[1],
        "e/t1c.png": crops[2],
        "x/cat.png": CAT,
    }
    for name, rgb in images.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(directory / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    rows = [
        "image_a,image_b,label",
        "a/astronaut.png,a/noisy.png,same",
        "a/astronaut.png,a/bright.png,same",
        "a/noisy.png,a/bright.png,same",
    ]
    others = ["b/hanks.png", "c/t1a.png", "d/t1b.png", "e/t1c.png"]
    for a in ["a/astronaut.png", *others]:
        for b in others:
            if a < b:
                rows.append(f"{a},{b},different")
    rows.append("a/astronaut.png,x/cat.png,different")
    (directory / "pairs.csv").write_text("\n".join(rows) + "\n")


async def test_eval_reports_accuracy_far_support_and_plots(tmp_path: Path) -> None:
    import json
    import os
    import sys

    data = tmp_path / "set"
    _labelled_set(data)
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "verifier",
        "eval",
        str(data),
        "--json",
        "--plot",
        str(tmp_path / "roc.png"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1])
    for key in ("pairs", "accuracy", "best_threshold", "detect_failures", "ms_per_image"):
        assert key in report
    assert report["pairs"] == 14 and report["same_pairs"] == 3
    assert report["detect_failures"] == 1 and report["failed_images"] == ["x/cat.png"]
    assert report["accuracy"] == 1.0  # the cat pair is a rejection, never a match
    assert report["same_scores"]["min"] > report["different_scores"]["max"]
    assert not report["tar_at_far"][0]["supported"]
    assert "cannot support FAR 0.01" in out.decode()
    # the report's lines: Chinese, then the same in English
    rows = out.decode().strip().splitlines()[:-1]
    assert rows[0].startswith("引擎：") and " / engine: " in rows[0]
    assert any(r.startswith("准确率：1.0000（配置的阈值 ") for r in rows)
    for row in rows:
        zh, en = row.split(" / ", 1)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in zh) and en.isascii(), row
    assert len(report["dataset_sha256"]) == 64
    assert (tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    (data / "pairs.csv").write_text("a,b\n1,2\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        "verifier",
        "eval",
        str(data),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2 and b"image_a,image_b,label" in err


async def test_cli_enrollment_and_a_model_file_that_does_not_match_its_pin(tmp_path: Path) -> None:
    import os
    import sys

    from verifier.engine import ModelError, check_files, default_spec

    photo = tmp_path / "id.png"
    photo.write_bytes(_png(ASTRONAUT))
    group = tmp_path / "group.jpg"
    group.write_bytes((IMAGES / "t1.jpg").read_bytes())
    server = await _server(tmp_path, enabled=False)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            cid, pid = await case_with_party(api, await officer_login(server, api))
    finally:
        await server.runner.cleanup()
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
    }
    errors = []
    for path, case, code in ((photo, cid, 0), (group, cid, 1), (photo, cid + 1, 2)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "verifier",
            "enroll",
            "--case",
            str(case),
            "--party",
            str(pid),
            str(path),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _out, err = await proc.communicate()
        assert proc.returncode == code, err.decode()
        errors.append(err)
    assert b"multiple_faces" in errors[1] and b"has no party" in errors[2]
    assert (tmp_path / "var" / "faces" / f"case-{cid}" / f"party-{pid}.json").exists()

    spec = default_spec()
    pinned = dict(spec.sha256, onet="0" * 64)
    with pytest.raises(ModelError, match="refusing to load"):
        check_files(default_spec(sha256=pinned))


def _message(*fields: tuple[int, bytes | int]) -> bytes:
    """A protobuf message of varint and length-delimited fields (for hand-made graphs)."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    data = b""
    for number, value in fields:
        if isinstance(value, int):
            data += varint(number << 3) + varint(value)
        else:
            data += varint(number << 3 | 2) + varint(len(value)) + value
    return data


def _node(name: str, op: str, *inputs: str) -> tuple[int, bytes]:
    return (1, _message((1, name.encode()), (2, op.encode()), *((3, i.encode()) for i in inputs)))


def test_facenet_runs_the_same_in_onnxruntime_and_opencv() -> None:
    """The default runtime runs FaceNet's graph rewritten as ONNX (verifier/tf_graph.py);
    it must compute what OpenCV DNN computes from the graph itself, on real faces, so that
    one threshold serves both."""
    from verifier.engine import default_spec, load_engine

    fast = load_engine(default_spec(runtime="onnxruntime"))
    reference = load_engine(default_spec(runtime="opencv"))
    assert fast.spec.identity()["runtime"] == "onnxruntime"
    embeddings = {}
    for name, rgb in (("astronaut", ASTRONAUT), ("hanks", HANKS), ("group", _read("t1.jpg"))):
        faces = fast.faces(rgb)
        assert faces, name
        for i, face in enumerate(faces[:3]):
            a, b = fast.embed(rgb, face), reference.embed(rgb, face)
            assert a.shape == (512,) and abs(float(np.linalg.norm(a)) - 1) < 1e-6
            assert float(a @ b) > 0.99999, (name, i, float(a @ b))
            embeddings[f"{name}{i}"] = a
    # and the embeddings still tell people apart
    assert float(embeddings["astronaut0"] @ embeddings["hanks0"]) < DEFAULT_THRESHOLD


def test_the_graph_rewrite_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    from verifier.engine import DefaultEngine, ModelError, default_spec
    from verifier.tf_graph import GraphError, read_graph, to_onnx

    with pytest.raises(GraphError):
        read_graph(b"\x0a\xff\xff\xff\x0f not a graph")
    with pytest.raises(GraphError, match="no nodes"):
        read_graph(b"")
    unknown = _message(
        _node("input", "Placeholder"), _node("x", "Sigmoid", "input"), _node("out", "Relu", "x")
    )
    with pytest.raises(GraphError, match="Sigmoid is not supported"):
        to_onnx(read_graph(unknown), output="out")
    with pytest.raises(GraphError, match="no node"):
        to_onnx(read_graph(unknown), output="missing")
    # a graph file that is pinned but is not FaceNet's stops the engine with a ModelError
    import hashlib

    fake = tmp_path / "graph.pb"
    fake.write_bytes(unknown)
    spec = default_spec()
    files = dict(spec.files, facenet=str(fake))
    pins = dict(spec.sha256, facenet=hashlib.sha256(unknown).hexdigest())
    from dataclasses import replace

    with pytest.raises(ModelError, match="FaceNet"):
        DefaultEngine(replace(spec, files=files, sha256=pins))


async def test_the_server_converts_in_a_child_process_and_reports_its_refusal(
    tmp_path: Path,
) -> None:
    """At start-up the graph is rewritten in a child process (the conversion would hold the
    server's GIL); a graph it refuses comes back as the child's reason."""
    from verifier.facenet import _CONVERTED, _key, prepare
    from verifier.tf_graph import GraphError

    fake = tmp_path / "graph.pb"
    fake.write_bytes(
        _message(
            _node("input", "Placeholder"),
            _node("x", "Sigmoid", "input"),
            _node(OUTPUT_NAME, "Relu", "x"),
        )
    )
    with pytest.raises(GraphError, match="Sigmoid is not supported"):
        await prepare(fake)
    assert _key(fake) not in _CONVERTED
    from verifier.engine import default_spec

    real = Path(default_spec().files["facenet"])
    _CONVERTED.pop(_key(real), None)  # convert it here, even if another test already did
    await prepare(real)
    assert _CONVERTED[_key(real)][:2] == b"\x08\x08"  # an ONNX ModelProto: ir_version 8


OUTPUT_NAME = "InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"
