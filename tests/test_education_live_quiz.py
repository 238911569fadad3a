"""The quiz decides the certificate: the real face model, two aiortc viewers with the right face.

Both drivers (enrolled with the astronaut's photo, and showing it) watch long enough; the
session has a quiz. The one who passes gets a certificate (validated offline, the score printed
in it); the one who fails gets none, and the attendance record prints both scores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from bench.peer import PeerClient
from control.appkeys import ATTENDANCE, DB
from documents.verify import verify_pdf
from tests.conftest import Api, leftovers, make_config, officer_login, start_server, wait_until
from tests.test_delivery import pdf_text
from tests.test_education_call import Camera
from tests.test_education_live import QUIZ, education_session
from tests.test_verifier import ASTRONAUT, _png


@pytest.mark.timeout(360)  # the face model, and (browser) Chromium on a busy 2-core machine
async def test_a_failed_quiz_withholds_the_certificate(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        verifier={"sample_interval": 0.5},
        education={
            "check_interval": 40.0,
            "check_window": 20.0,
            "verdict_gap": 3.0,
            "sample_interval": 0.5,
        },
    )
    server = await start_server(config)
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, session, parties, tokens = await education_session(server, api, li)
            first, second = parties[:2]
            people = await server.app[DB].run(
                lambda c: [int(r["id"]) for r in c.execute("SELECT id FROM edu_people ORDER BY id")]
            )
            for person in people:
                status, body = await api.call(
                    "PUT",
                    f"/api/education/people/{person}/photo?consent=given&basis=form-1",
                    li,
                    data=_png(ASTRONAUT),
                )
                assert status == 200, body
            status, body = await api.call(
                "PUT",
                f"/api/cases/{cid}/education",
                li,
                {"topic": "冬季道路运输安全", "required_minutes": 0.05},  # 3 s
            )
            assert status == 200, body
            base = f"/api/cases/{cid}/sessions/{session['id']}"
            status, quiz = await api.call("PUT", f"{base}/quiz", li, QUIZ)
            assert status == 200, quiz

            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            viewers = {}
            for party_id in (first, second):
                viewer = PeerClient(server.base_url, tokens[party_id], decode=False)
                clients.append(viewer)
                await viewer.connect()
                await viewer.publish(Camera(ASTRONAUT))
                viewers[party_id] = viewer
            desk = server.app[ATTENDANCE]
            room = session["room"]

            def mine(party_id: int) -> dict[str, Any]:
                live = desk.live(room)
                assert live is not None
                return live[f"party-{party_id}"]

            # held back from the others (no floor), yet the verifier sees them: time counts
            await wait_until(
                lambda: all(mine(p)["watch_seconds"] >= 4.0 for p in (first, second)),
                timeout=60,
                what="watch time of both",
            )
            assert all(server.sfu.rooms[room].participants[f"party-{p}"].held for p in parties[:2])
            await viewers[first].send(
                {"type": "quiz_answer", "quiz": quiz["id"], "answers": [[1], [0, 1]]}
            )
            await viewers[second].send(
                {"type": "quiz_answer", "quiz": quiz["id"], "answers": [[0], [0, 1]]}
            )
            for party_id, passed in ((first, True), (second, False)):
                result = await viewers[party_id].wait_for(lambda m: m["type"] == "quiz_result")
                assert result["passed"] is passed
            _, seen = await api.call("GET", f"{base}/attendance", li)
            meets = {v["party_id"]: v["meets_requirement"] for v in seen["viewers"]}
            assert meets[first] is True and meets[second] is False
            assert mine(second)["watch_seconds"] >= 4.0  # the time was there: the quiz decides

            for client in clients:
                await client.close()
            status, made = await api.call(
                "POST", f"{base}/attendance/records", li, {"department_name": "某大队"}
            )
            assert status == 201, made
            certificates = [r for r in made["records"] if r["kind"] == "education_certificate"]
            assert [c["party_id"] for c in certificates] == [first]
            [whole] = [
                r
                for r in made["records"]
                if r["kind"] == "education_attendance" and r["company_id"] is None
            ]
            _, record_pdf = await api.call("GET", whole["download"], li)
            _, pdf = await api.call("GET", certificates[0]["download"], li)
            _, root_pem = await api.call("GET", "/api/ca/root")

        def words(pdf: bytes) -> str:  # the text without the line breaks of the layout
            return "".join(pdf_text(pdf).split())

        record_text = await asyncio.to_thread(words, record_pdf)
        assert "2/2题正确，及格" in record_text and "1/2题正确，不及格" in record_text
        certificate_text = await asyncio.to_thread(words, pdf)
        assert "测验：2/2题正确，及格（及格线100%）" in certificate_text
        root = x509.load_pem_x509_certificate(root_pem)
        report = await asyncio.to_thread(verify_pdf, pdf, [root])
        assert report.ok, report.problems
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
    assert leftovers(server.app) == {}
