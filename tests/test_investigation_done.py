"""The end of an accident's investigation (调查取证结束) and the ordinary determination's 10
working days counted from it (146号令 第六十二条), with a real server.

The case is dated back in the database to September 2026, as if opened then: the count from
an investigation that ended on 2026-09-28 runs across 国庆节 (10月1日至7日, 10月10日 worked) exactly
as it would have then.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.appkeys import DB, RULES
from control.deadlines.rules import china_today
from documents.samples import sample
from tests.conftest import (
    PASSWORD,
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
)
from tests.test_browser_party import DESKTOP, Shots, chromium, new_page, no_overflow, until
from tests.test_delivery import custody, determination

PATH = "/api/cases/{}/investigation"


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    from tests.test_browser import face_image, write_y4m

    y4m = tmp_path / "face.y4m"
    write_y4m(y4m, face_image())
    return y4m


def simple(pid: int) -> dict[str, Any]:
    data = determination(pid)
    data["parties"][0]["phone"] = sample("determination_simple")["parties"][0]["phone"]
    return data


def limit(body: dict[str, Any], limit_id: str) -> list[dict[str, Any]]:
    return [i for i in body["deadlines"] if i["limit"] == limit_id]


async def backdate(server: Server, case_id: int, at: str) -> None:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE cases SET created_at = ? WHERE id = ?", (at, case_id))

    await server.app[DB].run(run)


async def test_the_investigation_end_counts_the_ordinary_determination_over_national_day(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            wu = await officer_login(server, api, "wu")
            boss = await officer_login(server, api, "boss", role="supervisor")
            cid, pid = await case_with_party(api, li)
            await backdate(server, cid, "2026-09-20T02:00:00Z")  # 北京时间 9月20日 10时

            # refused days: not a date, an impossible date, before the case, in the future
            tomorrow = (china_today() + timedelta(days=1)).isoformat()
            for bad, says in (
                ("tomorrow", "YYYY-MM-DD"),
                ("2026-02-30", "YYYY-MM-DD"),
                (20260928, "YYYY-MM-DD"),
                ("2026-09-19", "不能早于立案日 2026-09-20"),
                (tomorrow, "不能晚于今天"),
            ):
                status, body = await api.call("POST", PATH.format(cid), li, {"day": bad})
                assert status == 400 and says in body["message"], (bad, body)
            status, body = await api.call("GET", f"/api/cases/{cid}/deadlines", li)
            assert status == 200 and body["investigation"] is None
            assert limit(body, "determination_ordinary") == []

            status, row = await api.call("POST", PATH.format(cid), li, {"day": "2026-09-28"})
            assert status == 201 and row["done_on"] == "2026-09-28" and row["revision"] == 1
            # once: a second record is refused and changes nothing
            status, body = await api.call("POST", PATH.format(cid), li, {"day": "2026-09-29"})
            assert status == 409 and body["error"] == "investigation_recorded"

            # 9月29日、30日, 国庆节 skipped, 10月8日、9日、10日 (worked), 12日 to 16日: the 10th
            status, body = await api.call("GET", f"/api/cases/{cid}/deadlines", li)
            (item,) = limit(body, "determination_ordinary")
            assert item["start"] == "2026-09-28" and item["due"] == "2026-10-16"
            assert item["status"] == "overdue" and item["who"] == "department"
            assert body["investigation"]["done_on"] == "2026-09-28"
            status, over = await api.call("GET", "/api/deadlines/overdue", li)
            assert status == 200
            mine = [i for i in over["overdue"] if i["case_id"] == cid]
            assert [i["limit"] for i in mine] == ["determination_ordinary"]
            assert over["count"]["brigade-1"] >= 1

            # a correction needs a reason; another officer may not make it, a supervisor may
            fix = {"day": "2026-09-30", "reason": "笔录日期核对"}
            status, body = await api.call("PUT", PATH.format(cid), li, {"day": "2026-09-30"})
            assert status == 400
            status, body = await api.call("PUT", PATH.format(cid), wu, fix)
            assert status == 403, body
            status, body = await api.call("PUT", PATH.format(cid), li, {**fix, "day": tomorrow})
            assert status == 400
            status, row = await api.call("PUT", PATH.format(cid), boss, fix)
            assert status == 200 and row["done_on"] == "2026-09-30" and row["revision"] == 2
            status, body = await api.call("GET", f"/api/cases/{cid}/deadlines", li)
            (item,) = limit(body, "determination_ordinary")
            # 9月30日 then 10月8日、9日、10日, 12日 to 16日, 19日、20日: the 10th
            assert item["due"] == "2026-10-20" and item["status"] == "overdue"

            # the ordinary determination made: done, and no longer overdue
            status, doc = await api.call(
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {"kind": "determination_ordinary", "data": determination(pid)},
            )
            assert status == 201, doc
            status, body = await api.call("GET", f"/api/cases/{cid}/deadlines", li)
            (item,) = limit(body, "determination_ordinary")
            assert item["status"] == "done" and item["document"] == doc["id"]
            assert item["done_at"] == doc["created_at"]
            status, over = await api.call("GET", "/api/deadlines/overdue", li)
            assert not [i for i in over["overdue"] if i["limit"] == "determination_ordinary"]

            # audited (the record and the correction with its reason), in the custody log, and
            # so on the case's timeline
            status, trail = await api.call("GET", f"/api/cases/{cid}/audit", li)
            actions = [(a["action"], a["reason"]) for a in trail["audit"]]
            assert ("case.investigation_done", "") in actions
            assert ("case.investigation_corrected", "笔录日期核对") in actions
            entries = await custody(server, "case.investigation_done")
            assert [(e["case"], e["day"], e["revision"]) for e in entries] == [
                (str(cid), "2026-09-28", 1),
                (str(cid), "2026-09-30", 2),
            ]
            assert entries[1]["reason"] == "笔录日期核对"
            assert entries[1]["actor"] == "supervisor:boss"
            status, timeline = await api.call("GET", f"/api/cases/{cid}/timeline", li)
            assert status == 200
            ended = [i for i in timeline["items"] if i["kind"] == "case.investigation_done"]
            assert len(ended) == 2 and ended[0]["label"] == "调查取证结束"
            assert all(i["custody_index"] is not None for i in ended)
    finally:
        await server.runner.cleanup()


async def test_today_by_default_open_until_due_and_only_for_accidents(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            other = await officer_login(server, api, "zhao", brigade="brigade-2")
            cid, _ = await case_with_party(api, li)
            status, body = await api.call("POST", PATH.format(cid), other, {})
            assert status == 404  # another brigade's case: as if there were none
            status, row = await api.call("POST", PATH.format(cid), li, {})
            today = china_today()
            assert status == 201 and row["done_on"] == today.isoformat()
            status, body = await api.call("GET", f"/api/cases/{cid}/deadlines", li)
            (item,) = limit(body, "determination_ordinary")
            rules = server.app[RULES]
            assert item["due"] == rules.calendar.add_working_days(today, 10).isoformat()
            assert item["status"] == "open" and not item["warn"]
            assert body["next"]["limit"] == "determination_ordinary"

            vid, _ = await case_with_party(api, li, kind="violation")
            status, body = await api.call("POST", PATH.format(vid), li, {})
            assert status == 409 and body["error"] == "not_accident"
            status, body = await api.call(
                "PUT", PATH.format(cid + 100), li, {"day": "2026-10-01", "reason": "x"}
            )
            assert status == 404

            # a simple-procedure case is known by its simple determination: 3 working days
            # from the case's opening, done when it was made
            sid, spid = await case_with_party(api, li)
            await backdate(server, sid, "2026-09-29T02:00:00Z")
            status, doc = await api.call(
                "POST",
                f"/api/cases/{sid}/documents",
                li,
                {"kind": "determination_simple", "data": simple(spid)},
            )
            assert status == 201, doc
            status, body = await api.call("GET", f"/api/cases/{sid}/deadlines", li)
            (item,) = limit(body, "determination_simple")
            # 9月30日, 国庆节 skipped, 10月8日、9日: the 3rd working day
            assert item["start"] == "2026-09-29" and item["due"] == "2026-10-09"
            assert item["status"] == "done" and item["document"] == doc["id"]
    finally:
        await server.runner.cleanup()


@pytest.mark.browser
async def test_the_console_records_and_corrects_the_investigation_end(
    tmp_path: Path, camera: Path
) -> None:
    """Chromium at a desk (zh-CN): the procedure panel's form records the day, the ordinary
    determination's limit appears overdue across 国庆节, and a correction with a reason moves
    it."""
    server = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    shots = Shots(tmp_path, "investigation")
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, _ = await case_with_party(api, li)
            await backdate(server, cid, "2026-09-20T02:00:00Z")
            async with chromium(camera) as browser:
                context, page, problems = await new_page(browser, "zh-CN", DESKTOP)
                await page.goto(server.base_url + "/console")
                await page.fill("#username", "li")
                await page.fill("#password", PASSWORD)
                await page.click("#login-form button")
                await until(page, "document.getElementById('who').textContent.includes('li')")
                await page.goto(server.base_url + f"/console#case/{cid}")
                form = "#proc-investigation form.investigation"
                await page.wait_for_selector(form + "[data-recorded='0']", timeout=60000)
                assert "10个工作日" in await page.inner_text(form)
                assert await page.get_attribute(form + " .investigation-day", "min") == (
                    "2026-09-20"
                )
                await page.fill(form + " .investigation-day", "2026-09-28")
                await page.click(form + " button[type=submit]")
                await page.wait_for_selector(form + "[data-recorded='1']", timeout=60000)
                assert "2026年9月28日" in await page.inner_text("#proc-message")
                limit = "#proc-deadlines li.deadline[data-limit='determination_ordinary']"
                await page.wait_for_selector(limit + "[data-status='overdue']", timeout=60000)
                line = await page.inner_text(limit)
                assert "2026年10月16日" in line and "10 个工作日" in line, line
                await shots.take(page, "recorded")
                await no_overflow(page, "the investigation's end recorded")

                await page.fill(form + " .investigation-day", "2026-09-30")
                await page.fill(form + " .investigation-reason", "笔录日期核对")
                await page.click(form + " button[type=submit]")
                await until(
                    page,
                    'document.querySelector("' + limit + '")'
                    "?.textContent.includes('2026年10月20日')",
                )
                assert "第 2 版" in await page.inner_text(form)
                assert "已更正" in await page.inner_text("#proc-message")
                status, trail = await api.call("GET", f"/api/cases/{cid}/audit", li)
                assert status == 200
                assert ("case.investigation_corrected", "笔录日期核对") in [
                    (a["action"], a["reason"]) for a in trail["audit"]
                ]
                await shots.take(page, "corrected")
                await no_overflow(page, "the investigation's end corrected")
                assert problems == [], problems
                await context.close()
    finally:
        await server.runner.cleanup()
