"""约谈: an officer's one-to-one talk with a driver of an education case, drafted as questions
and answers, made into the numbered 约谈记录 (talk_record), signed by the driver on the party's
side (after a face match in the case's session) and by the officer, and validated offline with
the deployment's root alone. Real server, real CA and time-stamp authority; the face match is a
``verification.verdict`` custody entry as the verifier appends it (``test_records_documents``)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from control.appkeys import CUSTODY
from documents.verify import verify_pdf
from tests.conftest import Api, make_config, officer_login, party_link, start_server
from tests.test_records_documents import PartyKey, party_sign, seed_match

ROSTER = (
    "company,city,role,name,id_number\n"
    "顺达运输有限公司,保定,driver,李华,110101199003071234\n"
    "宏远物流,石家庄,driver,王强,130101199201012222\n"
)


@pytest.fixture
async def edu(tmp_path: Path) -> Any:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        status, body = await api.call(
            "POST", "/api/education/roster/import", li, data=ROSTER.encode()
        )
        assert status == 201, body
        _, case = await api.call(
            "POST", "/api/cases", li, {"kind": "education", "title": "警示约谈"}
        )
        cid = case["id"]
        status, body = await api.call(
            "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": body["people"]}
        )
        assert status == 201, body
        parties = [v["party_id"] for v in body["viewers"]]
        _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        yield server, api, li, cid, parties, session
    await server.runner.cleanup()


async def test_a_talk_is_drafted_recorded_signed_by_both_and_validates_offline(
    edu: Any, tmp_path: Path
) -> None:
    server, api, li, cid, (driver, other), session = edu
    status, talk = await api.call(
        "POST",
        f"/api/cases/{cid}/education/talks",
        li,
        {"party_id": driver, "session_id": session["id"], "subject": "超速行驶警示约谈"},
    )
    assert status == 201, talk
    assert talk["party_id"] == driver and talk["document_id"] is None
    path = f"/api/education/talks/{talk['id']}"
    # nothing to record yet
    status, body = await api.call("POST", path + "/record", li, {})
    assert (status, body["error"]) == (409, "talk_empty"), body
    turns = [
        {"q": "你于11月3日在京港澳高速超速50%以上，是否属实？", "a": "属实。"},
        {"q": "公司是否对你进行过安全教育？", "a": "每月一次。"},
    ]
    status, drafted = await api.call(
        "PUT", path, li, {"turns": turns, "requirements": "七日内参加安全学习"}
    )
    assert status == 200, drafted
    assert [t["q"] for t in drafted["turns"]] == [t["q"] for t in turns]
    first_at = drafted["turns"][0]["at"]
    # a turn added later keeps the first ones' times
    turns.append({"q": "今后如何改正？", "a": "严格遵守限速规定。"})
    status, drafted = await api.call("PUT", path, li, {"turns": turns})
    assert status == 200 and drafted["turns"][0]["at"] == first_at and len(drafted["turns"]) == 3

    status, made = await api.call("POST", path + "/record", li, {})
    assert status == 201, made
    doc = made["document"]
    assert doc["kind"] == "talk_record" and made["talk"]["document_id"] == doc["id"]
    assert "谈" in doc["number"]
    # the driver talked to is the only party who signs, then the officer
    boxes = {(b["role"], b["signer_id"]): b["field"] for b in doc["required"]}
    assert {role for role, _ in boxes} == {"party", "officer"}
    assert [s for r, s in boxes if r == "party"] == [f"p{driver}"]
    # the draft is closed now
    status, body = await api.call("PUT", path, li, {"content": "改"})
    assert (status, body["error"]) == (409, "talk_recorded"), body
    status, body = await api.call("POST", path + "/record", li, {})
    assert (status, body["error"]) == (409, "talk_recorded"), body

    # the driver signs on its own device after a face match in the session; the other
    # driver of the case does not see this record
    token = (await party_link(api, li, cid, driver))["token"]
    other_token = (await party_link(api, li, cid, other))["token"]
    assert (await api.call("GET", f"/api/party/documents/{doc['id']}", other_token))[0] == 404
    await seed_match(server, session["room"], driver)
    key = PartyKey()
    party_field = boxes[("party", f"p{driver}")]
    status, state = await party_sign(api, token, doc["id"], party_field, key)
    assert status == 200, state
    officer_field = next(f for (r, _), f in boxes.items() if r == "officer")
    status, state = await api.call(
        "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": officer_field}
    )
    assert status == 200, state
    assert state["state"]["effective"], state

    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.base_url}/api/cases/{cid}/documents/{doc['id']}/pdf",
            headers={"Authorization": f"Bearer {li}"},
        ) as r,
    ):
        assert r.status == 200
        pdf = await r.read()
    assert hashlib.sha256(pdf).hexdigest() == state["sha256"]
    _, root_pem = await api.call("GET", "/api/ca/root")
    report = await asyncio.to_thread(verify_pdf, pdf, [x509.load_pem_x509_certificate(root_pem)])
    assert report.ok, report.problems
    assert report.state is not None and report.state.kind == "talk_record"
    assert sorted(str(s.role) for s in report.signatures) == ["officer", "party"]
    (tmp_path / "talk.pdf").write_bytes(pdf)

    # custody: the talk opened and recorded, the document generated and signed
    entries = server.app[CUSTODY].entries()
    types = [e["type"] for e in entries]
    assert "education.talk_opened" in types and "education.talk_recorded" in types
    recorded = next(e for e in entries if e["type"] == "education.talk_recorded")
    assert recorded["document"] == doc["id"] and recorded["number"] == doc["number"]
    assert types.count("document.signed") == 2


async def test_bad_talks_are_refused_clearly(edu: Any) -> None:
    server, api, li, cid, (driver, _), _session = edu
    url = f"/api/cases/{cid}/education/talks"
    status, body = await api.call("POST", url, li, {"party_id": 99999, "subject": "s"})
    assert (status, body["error"]) == (400, "bad_request") and "party_id" in body["message"]
    status, body = await api.call("POST", url, li, {"party_id": driver})
    assert status == 400, body  # no subject
    status, body = await api.call(
        "POST", url, li, {"party_id": driver, "subject": "s", "session_id": 99999}
    )
    assert status == 400 and "session_id" in body["message"], body
    # a talk belongs to an education case
    _, accident = await api.call("POST", "/api/cases", li, {"kind": "accident", "title": "t"})
    status, body = await api.call(
        "POST",
        f"/api/cases/{accident['id']}/education/talks",
        li,
        {"party_id": driver, "subject": "s"},
    )
    assert status == 400, body
    # without a session: a talk held on its own
    status, talk = await api.call("POST", url, li, {"party_id": driver, "subject": "s"})
    assert status == 201 and talk["session_id"] is None, talk
    path = f"/api/education/talks/{talk['id']}"
    for bad in (
        {"turns": "x"},
        {"turns": [{"a": "no question"}]},
        {},
        {"turns": [{"q": "q" * 5000}]},
    ):
        status, body = await api.call("PUT", path, li, bad)
        assert status == 400, (bad, body)
    # another brigade's officer does not see it
    stranger = await officer_login(server, api, "wang", brigade="其他大队")
    assert (await api.call("GET", path, stranger))[0] == 404
