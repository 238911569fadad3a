"""Education: rosters and their import, attendance rules, and the records made of them.

The import and the rules run without the face model; ``test_education_call.py`` runs a
session with real aiortc viewers, the real verifier and the sealed records.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import aiohttp
import openpyxl
import pytest

from control.appkeys import DB
from control.education.attendance import Ledger, Rules
from tests.conftest import Api, Server, make_config, officer_login, start_server

HEADER = "企业,城市,角色,姓名,身份证号,电话\n"
GOOD = (
    HEADER + "顺达运输有限公司,保定,安全管理人员,张伟,110101199003071234,13800000001\n"
    "顺达运输有限公司,保定,驾驶员,李强,110101198805061111,13800000002\n"
    "宏远物流,石家庄,驾驶员,王芳,130101199201012222,\n"
)


@pytest.fixture
async def edu(tmp_path: Path) -> Any:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        token = await officer_login(server, api)
        yield server, api, token
    await server.runner.cleanup()


async def _people(server: Server) -> int:
    return int(
        await server.app[DB].run(
            lambda c: c.execute("SELECT COUNT(*) FROM edu_people").fetchone()[0]
        )
    )


async def test_an_import_with_a_bad_row_imports_nothing_and_names_the_row(edu: Any) -> None:
    server, api, li = edu
    bad = (
        GOOD
        + "宏远物流,石家庄,乘客,赵六,130101199202023333,\n"
        + "宏远物流,石家庄,驾驶员,,12,abc\n"
    )
    status, body = await api.call("POST", "/api/education/roster/import", li, data=bad.encode())
    assert status == 422 and body["error"] == "bad_rows", body
    problems = {(p["row"], p["column"]) for p in body["rows"]}
    # the header is row 1: the first bad person is on row 5, the second on row 6
    assert problems == {(5, "role"), (6, "name"), (6, "id_number"), (6, "phone")}
    assert all("/" in p["problem"] for p in body["rows"])  # Chinese / English
    assert "第 5 行" in body["message"]
    assert await _people(server) == 0
    _, listed = await api.call("GET", "/api/education/companies", li)
    assert listed["companies"] == []  # no company made half-way either

    # the same file without the bad rows goes in whole, as GB18030 (Excel's CSV in China)
    status, body = await api.call(
        "POST", "/api/education/roster/import", li, data=GOOD.encode("gb18030")
    )
    assert status == 201, body
    assert body["imported"] == 3 and body["companies_created"] == ["顺达运输有限公司", "宏远物流"]
    # a second import of someone already listed refuses the whole file, naming the row
    again = HEADER + "宏远物流,石家庄,驾驶员,孙七,130101199303034444,\n" + GOOD.splitlines()[3]
    status, body = await api.call("POST", "/api/education/roster/import", li, data=again.encode())
    assert status == 422 and [(p["row"], p["column"]) for p in body["rows"]] == [(3, "id_number")]
    assert await _people(server) == 3
    _, listed = await api.call("GET", "/api/education/companies", li)
    assert [(c["name"], c["people"]) for c in listed["companies"]] == [
        ("顺达运输有限公司", 2),
        ("宏远物流", 1),
    ]
    # the ID number is kept masked
    company = listed["companies"][0]["id"]
    _, detail = await api.call("GET", f"/api/education/companies/{company}", li)
    assert detail["people"][0]["id_number_masked"] == "**************1234"


async def test_xlsx_imports_and_bad_files_are_refused_clearly(edu: Any) -> None:
    server, api, li = edu
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["company", "role", "name", "id_number", "phone"])
    sheet.append(["顺达运输有限公司", "driver", "李强", "110101198805061111", 13800000002])
    sheet.append(["顺达运输有限公司", "manager", "张伟", "110101199003071234", None])
    sheet.append(["顺达运输有限公司", "driver", "李强", "110101198805061111", None])  # twice
    out = io.BytesIO()
    book.save(out)
    status, body = await api.call("POST", "/api/education/roster/import", li, data=out.getvalue())
    assert status == 422 and body["rows"][0]["row"] == 4 and "第 2 行" in body["rows"][0]["problem"]
    sheet.delete_rows(4)
    out = io.BytesIO()
    book.save(out)
    status, body = await api.call("POST", "/api/education/roster/import", li, data=out.getvalue())
    assert status == 201 and body["imported"] == 2, body

    for data, code in (
        (b"", "bad_file"),
        (b"PK\x03\x04not really a zip", "bad_file"),
        ("姓名,电话\n张三,1\n".encode(), "bad_rows"),  # columns missing: row 1 named
    ):
        status, body = await api.call("POST", "/api/education/roster/import", li, data=data)
        assert (status, body["error"]) == (422, code), body
    status, body = await api.call(
        "POST", "/api/education/roster/import", li, data=b"x" * (2 * 1024 * 1024 + 1)
    )
    assert status == 413
    assert await _people(server) == 2


async def test_viewers_come_from_the_roster_and_get_one_link_each(edu: Any) -> None:
    server, api, li = edu
    status, _ = await api.call("POST", "/api/education/roster/import", li, data=GOOD.encode())
    assert status == 201
    _, listed = await api.call("GET", "/api/education/companies", li)
    first = listed["companies"][0]["id"]
    _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "安全教育"})
    _, accident = await api.call("POST", "/api/cases", li, {"kind": "accident", "title": "t"})
    status, body = await api.call(
        "POST", f"/api/cases/{accident['id']}/education/viewers", li, {"company_ids": [first]}
    )
    assert (status, body["error"]) == (409, "not_education")
    status, body = await api.call(
        "POST", f"/api/cases/{case['id']}/education/viewers", li, {"company_ids": [first, 999]}
    )
    assert status == 404  # an unknown company adds nobody
    status, body = await api.call(
        "POST", f"/api/cases/{case['id']}/education/viewers", li, {"company_ids": [first]}
    )
    assert status == 201 and len(body["viewers"]) == 2, body
    assert {v["role"] for v in body["viewers"]} == {"manager", "driver"}
    # viewers are parties of the case
    _, detail = await api.call("GET", f"/api/cases/{case['id']}", li)
    assert sorted(p["role"] for p in detail["parties"]) == ["driver", "safety_manager"]
    status, links = await api.call(
        "POST", f"/api/cases/{case['id']}/education/invitations", li, {"valid_hours": 24}
    )
    assert status == 201 and len(links["invitations"]) == 2
    assert len({i["token"] for i in links["invitations"]}) == 2
    # a second call makes none: everyone still has a usable link
    _, again = await api.call("POST", f"/api/cases/{case['id']}/education/invitations", li, {})
    assert again["invitations"] == []
    wu = await officer_login(server, api, "wu", "brigade-2")
    assert (await api.call("GET", f"/api/education/companies/{first}", wu))[0] == 404
    assert (await api.call("GET", "/api/education/companies", wu))[1]["companies"] == []


# -- the rules, on their own --------------------------------------------------------------
RULES = Rules(check_interval=60.0, check_window=10.0, verdict_gap=3.0)


def test_watch_time_counts_only_while_the_right_face_is_seen() -> None:
    ledger = Ledger(RULES, ["party-1"], random.Random(1))
    told = ledger.join("party-1", 100.0)
    assert told[0].message["state"] == "checking"
    ledger.verdict("party-1", 101.0, "no_face")
    assert ledger.viewers["party-1"].watch_seconds == 0  # nothing before a match
    told = ledger.verdict("party-1", 102.0, "match", "verifying")
    assert told[0].message["state"] == "counting"
    for t in range(103, 111):
        ledger.verdict("party-1", float(t), "match", "verified")
    assert ledger.viewers["party-1"].watch_seconds == pytest.approx(8.0)
    # the face goes: paused at the sample that says so, and the viewer is told
    told = ledger.verdict("party-1", 111.0, "no_face", "verified")
    assert told[0].to == "viewer" and told[0].message["reason"] == "no_face"
    ledger.tick(130.0)
    assert ledger.viewers["party-1"].watch_seconds == pytest.approx(9.0)
    # back: counting again from the next match
    ledger.verdict("party-1", 131.0, "match", "verified")
    ledger.verdict("party-1", 133.0, "match", "verified")
    assert ledger.viewers["party-1"].watch_seconds == pytest.approx(11.0)
    # samples stop (the video froze): no more than the gap after the last match
    ledger.tick(140.0)
    viewer = ledger.viewers["party-1"]
    assert viewer.watch_seconds == pytest.approx(11.0 + RULES.verdict_gap)
    assert viewer.state == "paused" and viewer.reason == "no_picture"
    ledger.leave("party-1", 150.0)
    assert viewer.visits == [[100.0, 150.0]] and viewer.state == "left"


def test_checks_at_join_then_at_random_moments_fail_without_the_face() -> None:
    ledger = Ledger(RULES, ["party-1"], random.Random(2))
    ledger.join("party-1", 0.0)
    ledger.verdict("party-1", 2.0, "match")
    viewer = ledger.viewers["party-1"]
    assert [(c.kind, c.result) for c in viewer.checks] == [("join", "passed")]
    assert viewer.next_check_at is not None and 2.0 < viewer.next_check_at <= 2.0 + 60.0
    moment = viewer.next_check_at
    t = 3.0
    while t < moment + 1:  # the face stays until the check opens
        ledger.verdict("party-1", t, "match")
        ledger.tick(t)
        t += 1.0
    assert viewer.open_check is not None and viewer.open_check.kind == "random"
    # someone else sits down: the check fails after its window, naming why
    while t < moment + 1 + RULES.check_window + 1:
        ledger.verdict("party-1", t, "no_match", "verifying")
        ledger.tick(t)
        t += 1.0
    assert [(c.kind, c.result, c.reason) for c in viewer.checks] == [
        ("join", "passed", ""),
        ("random", "failed", "different_face"),
    ]
    assert (viewer.passed, viewer.failed) == (1, 1)
    assert viewer.next_check_at is not None  # the next one is scheduled
    # gaps between checks stay within the interval
    rng_ledger = Ledger(RULES, ["p"], random.Random(3))
    for _ in range(200):
        rng_ledger._schedule(rng_ledger.viewers["p"], 0.0)
        gap = rng_ledger.viewers["p"].next_check_at
        assert gap is not None and RULES.check_window <= gap <= RULES.check_interval


def test_someone_else_is_flagged_to_the_officer_once_per_alert() -> None:
    ledger = Ledger(RULES, ["party-1"], random.Random(4))
    ledger.join("party-1", 0.0)
    assert ledger.verdict("party-1", 1.0, "no_match", "verifying") == []
    told = ledger.verdict("party-1", 4.0, "no_match", "alert", "different_face", 0.1)
    flags = [n for n in told if n.to == "officer"]
    assert len(flags) == 1 and flags[0].message["type"] == "attendance_flag"
    assert flags[0].message["reason"] == "different_face" and "/" in flags[0].message["message"]
    assert not [
        n
        for n in ledger.verdict("party-1", 5.0, "no_match", "alert", "different_face")
        if n.to == "officer"
    ]
    assert len(ledger.viewers["party-1"].flags) == 1
    # others who are not viewers of the session are not accounted
    assert ledger.join("officer-li", 0.0) == [] and "officer-li" not in ledger.viewers


def test_a_ledger_saved_mid_session_goes_on_after_a_restart() -> None:
    ledger = Ledger(RULES, ["party-1"], random.Random(5))
    ledger.join("party-1", 0.0)
    for t in range(1, 8):
        ledger.verdict("party-1", float(t), "match")
    ledger.tick(30.0)  # a random check may open; the process then stops
    saved = ledger.viewers["party-1"].as_json()
    again = Ledger(RULES, ["party-1", "party-2"], random.Random(6))
    again.restore(saved)
    again.restore({**saved, "participant": "party-9"})  # not a viewer of this session
    viewer = again.viewers["party-1"]
    assert "party-9" not in again.viewers
    assert viewer.watch_seconds == pytest.approx(saved["watch_seconds"])
    assert viewer.checks[0].result == "passed" and viewer.open_check is None
    # the visit the stop cut short ends at its last proof
    assert viewer.visits[0][1] == pytest.approx(7.0 + RULES.verdict_gap)
    # back in the call: a check at join, and the time goes on from where it was
    again.join("party-1", 100.0)
    again.verdict("party-1", 101.0, "match")
    again.verdict("party-1", 103.0, "match")
    assert viewer.watch_seconds == pytest.approx(saved["watch_seconds"] + 2.0)
    assert [c.kind for c in viewer.checks][-1] == "join" and viewer.checks[-1].result == "passed"
