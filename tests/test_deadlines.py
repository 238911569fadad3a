"""Deadlines by working days: the calendar file checked at load (a bad line named), counting
over holidays and adjusted working days, the review window and the penalty procedure's order
with a real server and real PDFs.

The review test writes a brigade calendar around today (holidays between the delivery and
today) and dates the deliveries back in the database, as if made days ago: the window is then
counted exactly as it would have been on those days.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from control.appkeys import DB
from control.config import ConfigError
from control.deadlines.calendar import CalendarError, load_calendar, parse_calendar
from control.deadlines.limits import LimitsError, parse_limits
from control.deadlines.rules import CHINA, china_today, load_rules
from documents.samples import sample
from tests import samples
from tests.conftest import Api, make_config, officer_login, start_server
from tests.test_delivery import consent, custody, make_determination, party_in_session
from tests.test_records_documents import party_sign


# -- the calendar ---------------------------------------------------------------------------
def test_the_shipped_calendar_counts_holidays_and_adjusted_working_days() -> None:
    cal = load_calendar()
    assert cal.years == {2026, 2027}
    # 国庆节 2026: 10月1日至7日 rest, 10月10日 (a Saturday) a working day
    assert not cal.is_working_day(date(2026, 10, 1))
    assert cal.is_working_day(date(2026, 10, 10))
    assert cal.add_working_days(date(2026, 9, 30), 3) == date(2026, 10, 10)
    # 春节 2026: 2月15日至23日; 2月14日 (a Saturday) a working day
    assert cal.is_working_day(date(2026, 2, 14))
    assert cal.add_working_days(date(2026, 2, 13), 2) == date(2026, 2, 24)
    # calendar days: a period ending on a rest day ends on the next working day
    assert cal.add_calendar_days(date(2026, 9, 20), 15) == date(2026, 10, 8)
    assert cal.add_calendar_days(date(2026, 12, 1), 15) == date(2026, 12, 16)
    # every 2026 line is the notice's; 2027 is expected only
    assert {d.status for d in cal.days.values() if d.day.year == 2026} == {"confirmed"}
    assert {d.status for d in cal.days.values() if d.day.year == 2027} == {"expected"}
    with pytest.raises(CalendarError, match="2028"):
        cal.add_working_days(date(2027, 12, 30), 3)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("2026-02-30  holiday  春节  confirmed", "第 3 行：日期 2026-02-30 无效"),
        ("2026-10-01  vacation  国庆节  confirmed", "第 3 行：种类 vacation 无效"),
        ("2026-10-01  holiday  国庆节  maybe", "第 3 行：来源 maybe 无效"),
        ("2026-10-01  holiday  国庆节", "第 3 行：应为“日期 种类 名称 来源”四项"),
        ("2026-10-09  workday  调休  confirmed", "第 3 行：2026-10-09 是工作日"),
        ("2028-10-01  holiday  国庆节  confirmed", "第 3 行：2028 年不在 years 行中"),
        ("2026-01-01  holiday  元旦  confirmed", "第 3 行：2026-01-01 重复"),
    ],
)
def test_a_bad_calendar_line_is_refused_with_its_number(line: str, says: str) -> None:
    text = f"years 2026\n2026-01-01  holiday  元旦  confirmed\n{line}\n"
    with pytest.raises(CalendarError) as caught:
        parse_calendar(text, "brigade.txt")
    assert f"工作日历 brigade.txt {says}" in str(caught.value)
    assert "line 3" in str(caught.value)


def test_a_bad_limits_file_is_refused() -> None:
    good = 'from = "x"\nwho = "party"\nid = "a"\nname = "n"\ndays = 3\n'
    with pytest.raises(LimitsError, match="unit"):
        parse_limits(f'[[limit]]\n{good}unit = "hours"\n', "limits.toml")
    with pytest.raises(LimitsError, match="days"):
        parse_limits(
            '[[limit]]\nid = "a"\nname = "n"\ndays = 0\nunit = "working"\nfrom = "x"\n'
            'who = "party"\n',
            "limits.toml",
        )


async def test_a_bad_calendar_stops_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "calendar.txt"
    bad.write_text("years 2026\n# ok\n2026-13-01  holiday  元旦  confirmed\n", encoding="utf-8")
    with pytest.raises(CalendarError, match="第 3 行"):
        await start_server(make_config(tmp_path, deadlines={"calendar": str(bad)}))
    with pytest.raises(ConfigError, match=r"deadlines\.calendar"):
        make_config(tmp_path, deadlines={"calendar": str(tmp_path / "absent.txt")})
    with pytest.raises(ConfigError, match=r"delivery\.sms_url"):
        make_config(tmp_path, delivery={"sms_url": "ftp://127.0.0.1/x"})


# -- the review window ------------------------------------------------------------------------
def brigade_calendar(today: date, path: Path) -> dict[str, date]:
    """Around ``today`` (T): T-11 and T-5..T-1 holidays, every other day from T-12 to T+3 a
    working day (a weekend among them listed as an adjusted working day)."""
    years = sorted({(today + timedelta(days=n)).year for n in range(-15, 10)})
    lines = [f"years {' '.join(str(y) for y in years)}"]
    for n in range(-12, 4):
        day = today + timedelta(days=n)
        if n == -11 or -5 <= n <= -1:
            lines.append(f"{day.isoformat()}  holiday  测试假日  confirmed")
        elif day.weekday() >= 5:
            lines.append(f"{day.isoformat()}  workday  调休上班  confirmed")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"inside": today - timedelta(days=6), "outside": today - timedelta(days=12)}


def backdated(day: date) -> str:
    """10:00 Beijing time on ``day``, as the database stores times (UTC, ISO)."""
    return datetime.combine(day, time(10, 0), CHINA).astimezone(UTC).isoformat()


async def test_review_inside_and_after_the_window_with_holidays_between(tmp_path: Path) -> None:
    today = china_today()
    calendar = tmp_path / "brigade-calendar.txt"
    sent_on = brigade_calendar(today, calendar)
    server = await start_server(make_config(tmp_path, deadlines={"calendar": str(calendar)}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            await consent(api, li, p)
            ids: dict[str, int] = {}
            for which in ("inside", "outside"):
                doc = await make_determination(api, li, p)
                status, sent = await api.call(
                    "POST",
                    f"/api/cases/{p.cid}/deliveries",
                    li,
                    {"document_id": doc["id"], "party_id": p.pid},
                )
                assert status == 201 and sent["status"] == "sent", sent
                ids[which] = sent["id"]
                when = backdated(sent_on[which])

                def backdate(conn: sqlite3.Connection, d: int = sent["id"], w: str = when) -> None:
                    conn.execute("UPDATE deliveries SET sent_at = ? WHERE id = ?", (w, d))

                await server.app[DB].run(backdate)
            # a third determination made 12 days ago and never delivered: overdue (3 working
            # days, a holiday among them)
            late = await make_determination(api, li, p)
            made = backdated(sent_on["outside"])

            def backdate_doc(conn: sqlite3.Connection) -> None:
                conn.execute("UPDATE documents SET created_at = ? WHERE id = ?", (made, late["id"]))

            await server.app[DB].run(backdate_doc)
            # delivered 6 days ago, 5 of them holidays: day 3 of 3 is still to come; the
            # materials named must be the party's own
            status, photo = await api.call(
                "POST", "/api/party/materials?name=scene.jpg", p.token, data=samples.jpeg(64, 48)
            )
            assert status == 201, photo
            status, body = await api.call(
                "POST",
                "/api/party/reviews",
                p.token,
                {"delivery_id": ids["inside"], "reasons": "x", "materials": ["MAT_nope"]},
            )
            assert (status, body["error"]) == (400, "bad_request"), body
            status, review = await api.call(
                "POST",
                "/api/party/reviews",
                p.token,
                {
                    "delivery_id": ids["inside"],
                    "reasons": "对方突然变道，我方无责。",
                    "materials": [photo["id"]],
                },
            )
            assert status == 201, review
            assert review["materials"] == [photo["id"]]
            assert review["window_closes"] == (today + timedelta(days=2)).isoformat()
            logged = await custody(server, "review.requested")
            assert logged[-1]["review"] == review["id"]
            status, body = await api.call(
                "POST",
                "/api/party/reviews",
                p.token,
                {"delivery_id": ids["inside"], "reasons": "再次申请"},
            )
            assert (status, body["error"]) == (409, "already_requested")
            # delivered 12 days ago with a holiday the day after: closed 8 days ago
            closed = today - timedelta(days=8)
            status, body = await api.call(
                "POST",
                "/api/party/reviews",
                p.token,
                {"delivery_id": ids["outside"], "reasons": "逾期申请"},
            )
            assert (status, body["error"]) == (409, "review_window_closed"), body
            assert body["closed_on"] == closed.isoformat()
            assert f"{closed.year}年{closed.month}月{closed.day}日" in body["message"]
            assert "测试假日" in body["message"]  # the holiday counted
            # the case shows the review; an officer records its outcome, once
            status, listed = await api.call("GET", f"/api/cases/{p.cid}/reviews", li)
            assert [r["id"] for r in listed["reviews"]] == [review["id"]]
            opath = f"/api/cases/{p.cid}/reviews/{review['id']}/outcome"
            status, body = await api.call("POST", opath, li, {"outcome": "maybe", "note": "x"})
            assert status == 400
            status, decided = await api.call(
                "POST", opath, li, {"outcome": "upheld", "note": "经复核，原认定事实清楚。"}
            )
            assert status == 200 and decided["outcome_text"] == "维持原道路交通事故认定"
            assert (await api.call("POST", opath, li, {"outcome": "upheld", "note": "x"}))[0] == 409
            status, mine = await api.call("GET", "/api/party/reviews", p.token)
            assert mine["reviews"][0]["outcome"] == "upheld"
            # the case's deadlines: the review window done for one, closed for the other
            status, deadlines = await api.call("GET", f"/api/cases/{p.cid}/deadlines", li)
            assert status == 200, deadlines
            review_items = {
                i["document"]: i["status"]
                for i in deadlines["deadlines"]
                if i["limit"] == "review_request"
            }
            assert sorted(review_items.values()) == ["closed", "done"]
            delivering = {
                i["document"]: i["status"]
                for i in deadlines["deadlines"]
                if i["limit"] == "determination_delivery"
            }
            assert delivering.pop(late["id"]) == "overdue"
            assert set(delivering.values()) == {"done"}
            status, overdue = await api.call("GET", "/api/deadlines/overdue", li)
            assert status == 200, overdue
            assert [(o["case_id"], o["document"]) for o in overdue["overdue"]] == [
                (p.cid, late["id"])
            ]
            assert overdue["overdue"][0]["due"] == (today - timedelta(days=8)).isoformat()
            assert overdue["count"] == {"brigade-1": 1}
            # another brigade's officer sees none of it
            wu = await officer_login(server, api, "wu", brigade="brigade-2")
            status, theirs = await api.call("GET", "/api/deadlines/overdue", wu)
            assert status == 200 and theirs["overdue"] == []
            assert deadlines["next"] is not None  # the mediation window of the later one
    finally:
        await server.runner.cleanup()


# -- the penalty procedure ----------------------------------------------------------------------
def penalty_data(pid: int, kind: str, amount: int) -> dict[str, Any]:
    s = sample(kind)
    person = {
        k: s["parties"][0][k] for k in ("id_number", "sex", "birth_date", "address", "vehicle")
    }
    return {
        "department": s["department"],
        "case": s["case"],
        "penalty": s["penalty"] | {"amount": amount},
        "parties": [{"id": pid, **person}],
    }


async def test_a_penalty_decision_needs_the_notice_and_the_periods(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            cid, pid = p.cid, p.pid
            docs = f"/api/cases/{cid}/documents"
            decision = {
                "kind": "penalty_decision",
                "data": penalty_data(pid, "penalty_decision", 2500),
            }
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "penalty_notice_required"), body
            assert "告知" in body["message"]
            steps = f"/api/cases/{cid}/penalty/steps"
            status, body = await api.call("POST", steps, li, {"step": "statement", "text": "x"})
            assert (status, body["error"]) == (409, "penalty_order")
            # the notice, with a fine of 2,500 yuan: the hearing right is offered
            status, notice = await api.call(
                "POST",
                docs,
                li,
                {"kind": "penalty_notice", "data": penalty_data(pid, "penalty_notice", 2500)},
            )
            assert status == 201, notice
            # not signed by the party nor delivered to it: no period runs yet
            status, state = await api.call("GET", f"/api/cases/{cid}/penalty", li)
            assert state["refusal"]["error"] == "penalty_notice_unserved", state
            assert state["notice"]["statement_closes"] is None
            status, signed = await party_sign(api, p.token, notice["id"], f"party-p{pid}", p.key)
            assert status == 200, signed
            status, state = await api.call("GET", f"/api/cases/{cid}/penalty", li)
            assert state["notice"]["hearing_offered"] and not state["decision_allowed"]
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "statement_period_open"), body
            closes = date.fromisoformat(state["notice"]["statement_closes"])
            assert f"{closes.year}年{closes.month}月{closes.day}日" in body["message"]
            status, body = await api.call("POST", docs, li, decision, lang="en")
            assert state["notice"]["statement_closes"] in body["message"]
            status, state = await api.call(
                "POST", steps, li, {"step": "statement", "text": "我当时赶时间，请求从轻处罚。"}
            )
            assert status == 201 and state["refusal"]["error"] == "statement_period_open"
            status, state = await api.call(
                "POST",
                steps,
                li,
                {"step": "waiver", "right": "statement", "text": "当事人当场表示放弃"},
            )
            assert status == 201, state
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "hearing_period_open"), body
            status, state = await api.call("POST", steps, li, {"step": "hearing_requested"})
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "hearing_pending"), body
            status, state = await api.call(
                "POST", steps, li, {"step": "hearing_held", "text": "听证于视频中进行"}
            )
            assert state["decision_allowed"], state
            status, made = await api.call("POST", docs, li, decision)
            assert status == 201 and made["kind"] == "penalty_decision", made
            status, state = await api.call(
                "POST", steps, li, {"step": "payment", "reference": "12123-2026120100001"}
            )
            assert state["payment"]["detail"]["reference"] == "12123-2026120100001"
            for kind in ("penalty.statement", "penalty.waiver", "penalty.payment"):
                assert await custody(server, kind), kind
            # under 2,000 yuan no hearing is offered: the statement's waiver is enough
            q = await party_in_session(server, api, li, name="李四")
            c2, p2 = q.cid, q.pid
            status, notice2 = await api.call(
                "POST",
                f"/api/cases/{c2}/documents",
                li,
                {"kind": "penalty_notice", "data": penalty_data(p2, "penalty_notice", 200)},
            )
            assert status == 201
            status, _ = await party_sign(api, q.token, notice2["id"], f"party-p{p2}", q.key)
            assert status == 200
            await api.call(
                "POST",
                f"/api/cases/{c2}/penalty/steps",
                li,
                {"step": "waiver", "right": "statement", "text": "放弃"},
            )
            status, made = await api.call(
                "POST",
                f"/api/cases/{c2}/documents",
                li,
                {"kind": "penalty_decision", "data": penalty_data(p2, "penalty_decision", 200)},
            )
            assert status == 201, made
    finally:
        await server.runner.cleanup()


def test_rules_load_both_files() -> None:
    rules = load_rules()
    assert rules.limits["fine_payment"].unit == "calendar"
    assert rules.limits["review_request"].days == 3
    assert rules.due("review_request", date(2026, 9, 30)) == date(2026, 10, 10)
    assert "国庆节 10月1日至10月7日" in rules.skipped(date(2026, 9, 30), date(2026, 10, 10))


async def test_a_count_outside_the_calendar_answers_409_not_500() -> None:
    """Wherever a count runs past the calendar's years (a case from before it, a limit that
    reaches past its last year), the answer names the missing year instead of a 500."""
    from control.deadlines.api import calendar_errors

    calendar = parse_calendar("years 2026\n", "brigade.txt")

    async def count(request: aiohttp.web.Request) -> aiohttp.web.Response:
        calendar.add_working_days(date(2026, 12, 30), 5)  # runs into 2027
        return aiohttp.web.json_response({})

    app = aiohttp.web.Application(middlewares=[calendar_errors])
    app.router.add_get("/count", count)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/count") as response:
                body = await response.json()
        assert response.status == 409 and body["error"] == "calendar_missing", body
        assert "2027" in body["message"] and "brigade.txt" in body["message"]
    finally:
        await runner.cleanup()
