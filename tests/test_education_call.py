"""An education session with real aiortc viewers, the real face model and sealed records.

Two drivers of two companies are on the roster, both enrolled with the astronaut's photo
(``skimage.data.astronaut()``, as ``test_verifier.py`` uses it). The first shows her face,
then leaves the camera (grey frames): her watch time stops. At the second one's camera sits
someone else (Tom Hanks, from the insightface wheel's images): flagged to the officer, no
watch time. Afterwards the session's records are made: the certificate of the first validates
offline against the deployment's root certificate; the second gets none.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from cryptography import x509

from bench.peer import ImageVideoTrack, PeerClient
from control.appkeys import ATTENDANCE, CUSTODY
from documents.verify import verify_pdf
from tests.conftest import (
    CONSENT,
    Api,
    leftovers,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_verifier import ASTRONAUT, HANKS, _png


class Camera(ImageVideoTrack):
    """A camera whose picture the test changes when it wants (not on a timetable)."""

    def __init__(self, image: np.ndarray | None) -> None:
        super().__init__([(0, image)])
        self.image = image

    def image_at(self, seconds: float) -> np.ndarray | None:
        return self.image


ROSTER = (
    "company,city,role,name,id_number\n"
    "顺达运输有限公司,保定,driver,李华,110101199003071234\n"
    "宏远物流,石家庄,driver,王强,130101199201012222\n"
)


async def test_a_session_counts_the_right_face_only_and_certifies_it(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        verifier={"alert_after": 2.0, "no_face_after": 3.0, "sample_interval": 0.5},
        education={
            "check_interval": 40.0,
            "check_window": 20.0,
            "verdict_gap": 2.0,
            "sample_interval": 0.5,
        },
    )
    server = await start_server(config)
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            status, body = await api.call(
                "POST", "/api/education/roster/import", li, data=ROSTER.encode()
            )
            assert status == 201, body
            people = body["people"]

            async def enroll(person: int) -> None:
                status, body = await api.call(
                    "PUT",
                    f"/api/education/people/{person}/photo?consent=given&basis=form-1",
                    li,
                    data=_png(ASTRONAUT),
                )
                assert status == 200, body

            await enroll(people[0])
            # no consent recorded: no photo
            status, body = await api.call(
                "PUT", f"/api/education/people/{people[0]}/photo", li, data=_png(ASTRONAUT)
            )
            assert (status, body["error"]) == (400, "consent_required")
            # a file that is no photo: refused with its code, in words of the asker's language
            photo = f"/api/education/people/{people[1]}/photo?consent=given&basis=form-1"
            for lang, words in (("zh-CN", "文件不是 JPEG、PNG 等图像"), ("en", "the file is not")):
                status, body = await api.call("PUT", photo, li, data=b"not a photo", lang=lang)
                assert (status, body["error"]) == (422, "not_an_image"), body
                assert body["message"].startswith(words) and " / " not in body["message"], body
            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"}
            )
            cid = case["id"]
            status, body = await api.call(
                "PUT",
                f"/api/cases/{cid}/education",
                li,
                {"topic": "冬季道路运输安全", "required_minutes": 0.05},  # 3 s
            )
            assert status == 200, body
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": people}
            )
            assert status == 201, body
            assert [v["reference"] for v in body["viewers"]] == [True, False]
            first, second = (v["party_id"] for v in body["viewers"])
            # enrolled once a viewer already: the case's copy follows
            await enroll(people[1])
            assert (tmp_path / "var" / "faces" / f"case-{cid}" / f"party-{second}.json").exists()
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            _, links = await api.call("POST", f"/api/cases/{cid}/education/invitations", li, {})
            tokens = {}
            for link in links["invitations"]:
                status, redeemed = await api.call(
                    "POST",
                    "/api/invitations/redeem",
                    json={"token": link["token"], "consent": CONSENT},
                )
                assert status == 200, redeemed
                tokens[link["party_id"]] = redeemed["token"]

            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            cameras = {first: Camera(ASTRONAUT), second: Camera(HANKS)}
            viewers = {}
            for party_id, camera in cameras.items():
                viewer = PeerClient(server.base_url, tokens[party_id], decode=False)
                clients.append(viewer)
                await viewer.connect()
                await viewer.publish(camera)
                viewers[party_id] = viewer
            desk = server.app[ATTENDANCE]
            room = session["room"]

            def mine(party_id: int) -> dict[str, Any]:
                live = desk.live(room)
                assert live is not None
                return live[f"party-{party_id}"]

            # the right face: the check at join passes and watch time runs
            await wait_until(
                lambda: mine(first)["watch_seconds"] >= 4.0, timeout=40, what="watch time"
            )
            assert mine(first)["checks"][0]["result"] == "passed"
            assert any(
                m["type"] == "attendance" and m["state"] == "counting"
                for m in viewers[first].messages
            )
            # she leaves the camera: the time stops and she is told. Frames of her face still
            # on their way may count a moment more; once the verifier has judged a frame of the
            # empty room (the officer hears of every verdict, after the ledger has), every later
            # frame is empty
            told_before = len(viewers[first].messages)
            heard_before = len(officer.messages)
            cameras[first].image = None
            left_at = time.time()

            def empty_room_judged() -> bool:
                return any(
                    m["type"] == "verification"
                    and m["participant"] == f"party-{first}"
                    and m["verdict"] == "no_face"
                    for m in officer.messages[heard_before:]
                )

            await wait_until(empty_room_judged, timeout=30, what="a sample of the empty room")
            assert mine(first)["state"] == "paused"
            assert mine(first)["reason"] in ("no_face", "no_picture")
            stopped = mine(first)["watch_seconds"]
            await asyncio.sleep(3.0)
            assert mine(first)["watch_seconds"] == stopped
            told = [
                m
                for m in viewers[first].messages[told_before:]
                if m["type"] == "attendance" and m["state"] == "paused"
            ]
            assert told and "/" in told[-1]["message"]
            # what was counted ends soon after she left: at most the gap after the last match,
            # and the frames in flight
            counted_until = mine(first)["counted"][-1][1]
            assert counted_until <= left_at + 2.0 + 5.0

            # someone else at the second driver's camera: flagged, never counted
            await wait_until(
                lambda: any(m["type"] == "attendance_flag" for m in officer.messages),
                timeout=40,
                what="the officer flagged",
            )
            [flag] = [m for m in officer.messages if m["type"] == "attendance_flag"]
            assert flag["participant"] == f"party-{second}"
            assert flag["reason"] == "different_face"
            assert mine(second)["watch_seconds"] == 0
            assert mine(second)["flags"][0]["reason"] == "different_face"
            await wait_until(
                lambda: mine(second)["checks"][0]["result"] == "failed",
                timeout=40,
                what="the join check failed",
            )
            assert mine(second)["checks"][0]["reason"] == "different_face"

            # the officer's view of it over the API, while it runs
            _, seen = await api.call(
                "GET", f"/api/cases/{cid}/sessions/{session['id']}/attendance", li
            )
            assert seen["live"] is True
            by_party = {v["party_id"]: v for v in seen["viewers"]}
            assert by_party[first]["meets_requirement"] is True
            assert by_party[second]["meets_requirement"] is False

            for client in clients:
                await client.close()
            status, _ = await api.call(
                "POST", f"/api/cases/{cid}/sessions/{session['id']}/end", li, {"reason": "done"}
            )
            assert status == 200
            await wait_until(lambda: desk.live(room) is None, what="the ledger closed")

            # persisted: the API reads the same after the room has gone
            _, after = await api.call(
                "GET", f"/api/cases/{cid}/sessions/{session['id']}/attendance", li
            )
            assert after["live"] is False
            kept = {v["party_id"]: v["attendance"] for v in after["viewers"]}
            assert kept[first]["watch_seconds"] == stopped
            assert kept[first]["left_at"] is not None and kept[second]["flags"]

            status, made = await api.call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/attendance/records",
                li,
                {"department_name": "某市公安局交通警察支队一大队"},
            )
            assert status == 201, made
            kinds = [(r["kind"], r["company_id"], r["party_id"]) for r in made["records"]]
            attendance = [k for k in kinds if k[0] == "education_attendance"]
            assert len(attendance) == 3  # the session, and each of the two companies
            certificates = [r for r in made["records"] if r["kind"] == "education_certificate"]
            assert [c["party_id"] for c in certificates] == [first]

            status, pdf = await api.call("GET", certificates[0]["download"], li)
            assert status == 200 and isinstance(pdf, bytes)
            _, root_pem = await api.call("GET", "/api/ca/root")
        # offline: the PDF and the deployment's published root, nothing else (the chain, the
        # CRL and the timestamp are inside the signature)
        root = x509.load_pem_x509_certificate(root_pem)
        report = await asyncio.to_thread(verify_pdf, pdf, [root])
        assert report.ok, report.problems
        assert report.state is not None and report.state.kind == "education_certificate"
        assert report.state.effective and [s.role for s in report.signatures] == ["seal"]
        tampered = pdf.replace(b"education_certificate", b"education_certificatf", 1)
        assert not (await asyncio.to_thread(verify_pdf, tampered, [root])).ok
        # the flag and the checks are evidence in the custody log
        types = [e["type"] for e in server.app[CUSTODY].entries()]
        assert "education.flag" in types and "education.check" in types
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}
    assert server.app[ATTENDANCE].dump() == {"sessions": 0, "tasks": 0}
