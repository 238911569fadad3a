"""Two defects of the penalty procedure (control/delivery/penalty.py), with a real server, real
PDFs and the real signing: the statement and hearing periods run from when the party was
notified (its signature on the notice, or the notice's delivery to it), not from the notice's
creation; and a step is not recorded when the calendar cannot count the periods (a request
retried after 409 ``calendar_missing`` records it once, not twice).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import aiohttp

from control.appkeys import DB
from control.deadlines.rules import china_date, china_today
from control.delivery.penalty import notified_at, notified_from
from tests.conftest import Api, make_config, officer_login, start_server
from tests.test_deadlines import backdated, penalty_data
from tests.test_delivery import consent, custody, party_in_session
from tests.test_records_documents import party_sign


def test_the_notification_is_the_earliest_of_the_party_s_signature_and_a_delivery() -> None:
    officer = {"role": "officer", "at": "2026-11-01T01:00:00+00:00"}
    party = {"role": "party", "at": "2026-11-20T01:00:00+00:00"}
    sent = ["2026-11-18T02:00:00+00:00", "2026-11-25T02:00:00+00:00"]
    assert notified_from([officer, party], sent) == sent[0]
    assert notified_from([officer, party], []) == party["at"]
    assert notified_from([officer], sent[1:]) == sent[1]
    # an officer's signature tells the party nothing
    assert notified_from([officer], []) is None


async def test_the_periods_run_from_the_delivery_not_from_the_notice_s_creation(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            await consent(api, li, p)
            docs = f"/api/cases/{p.cid}/documents"
            status, notice = await api.call(
                "POST",
                docs,
                li,
                {"kind": "penalty_notice", "data": penalty_data(p.pid, "penalty_notice", 200)},
            )
            assert status == 201, notice
            # the party refuses to sign (noted on it), the officer signs: the notice is
            # delivered; made a month ago, it was still only notified now
            nid = notice["id"]
            status, body = await api.call(
                "POST",
                f"{docs}/{nid}/refusals",
                li,
                {"field": f"party-p{p.pid}", "reason": "当事人拒绝签名"},
            )
            assert status == 200, body
            status, body = await api.call("POST", f"{docs}/{nid}/sign", li, {"field": "officer-o1"})
            assert status == 200, body
            month_ago = backdated(china_today() - timedelta(days=30))
            await server.app[DB].run(
                lambda c: c.execute(
                    "UPDATE documents SET created_at = ? WHERE id = ?", (month_ago, nid)
                )
            )
            status, state = await api.call("GET", f"/api/cases/{p.cid}/penalty", li)
            assert state["refusal"]["error"] == "penalty_notice_unserved", state
            decision = {
                "kind": "penalty_decision",
                "data": penalty_data(p.pid, "penalty_decision", 200),
            }
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "penalty_notice_unserved"), body
            assert "尚未由当事人签名" in body["message"]

            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": nid, "party_id": p.pid},
            )
            assert status == 201 and sent["status"] == "sent", sent
            status, state = await api.call("GET", f"/api/cases/{p.cid}/penalty", li)
            assert state["notice"]["notified_at"] == sent["sent_at"]
            assert state["notice"]["notified_on"] == china_date(sent["sent_at"]).isoformat()
            assert state["notice"]["notified_on"] != china_date(month_ago).isoformat()
            # counted from the delivery, the statement period is open today
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "statement_period_open"), body
            status, deadlines = await api.call("GET", f"/api/cases/{p.cid}/deadlines", li)
            assert status == 200, deadlines
            statement = [d for d in deadlines["deadlines"] if d["limit"] == "statement"]
            assert [d["due"] for d in statement] == [state["notice"]["statement_closes"]]
            # the party refuses the delivered notice: a refused delivery notifies nobody (the
            # delivery asks for its fallback), so no period runs from it
            status, body = await api.call(
                "POST",
                f"/api/party/deliveries/{sent['id']}/refuse",
                p.token,
                {"reason": "不接受电子送达"},
            )
            assert status == 200, body
            status, state = await api.call("GET", f"/api/cases/{p.cid}/penalty", li)
            assert state["refusal"]["error"] == "penalty_notice_unserved", state
            assert state["notice"]["notified_at"] is None, state
            # its fallback notifies (157号 art.55): delivered by post today, the periods run
            # from today's first moment in China time
            fallback = f"/api/cases/{p.cid}/deliveries/{sent['id']}/fallback"
            today = china_today()
            status, posted = await api.call(
                "POST",
                fallback,
                li,
                {"action": "post", "reference": "EMS1234567890", "done_on": today.isoformat()},
            )
            assert status == 200 and posted["delivered_on"] == today.isoformat(), posted
            status, state = await api.call("GET", f"/api/cases/{p.cid}/penalty", li)
            assert state["notice"]["notified_on"] == today.isoformat(), state
            assert china_date(state["notice"]["notified_at"]) == today
            assert state["notice"]["statement_closes"] is not None
            # the post came back: a public notice notifies only when its sixty days are over,
            # so nothing runs today
            status, noticed = await api.call(
                "POST",
                fallback,
                li,
                {"action": "public_notice", "reference": "某公告〔2026〕1号", "note": "邮件退回"},
            )
            assert status == 200, noticed
            assert noticed["delivered_on"] == (today + timedelta(days=60)).isoformat()
            status, state = await api.call("GET", f"/api/cases/{p.cid}/penalty", li)
            assert state["refusal"]["error"] == "penalty_notice_unserved", state
            # sixty days on, the notice has notified: the periods run from that day
            later = today + timedelta(days=61)
            at = await server.app[DB].run(lambda c: notified_at(c, nid, later))
            assert at is not None and china_date(at) == today + timedelta(days=60)
    finally:
        await server.runner.cleanup()


async def test_a_step_retried_after_calendar_missing_is_recorded_once(tmp_path: Path) -> None:
    # a brigade calendar that knows only an earlier year: nothing in this year can be counted
    calendar = tmp_path / "old-calendar.txt"
    calendar.write_text(f"years {china_today().year - 1}\n", encoding="utf-8")
    server = await start_server(make_config(tmp_path, deadlines={"calendar": str(calendar)}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            status, notice = await api.call(
                "POST",
                f"/api/cases/{p.cid}/documents",
                li,
                {"kind": "penalty_notice", "data": penalty_data(p.pid, "penalty_notice", 2500)},
            )
            assert status == 201, notice
            status, signed = await party_sign(api, p.token, notice["id"], f"party-p{p.pid}", p.key)
            assert status == 200, signed
            steps = f"/api/cases/{p.cid}/penalty/steps"
            statement = {"step": "statement", "text": "我当时赶时间，请求从轻处罚。"}
            for _ in range(2):
                status, body = await api.call("POST", steps, li, statement)
                assert (status, body["error"]) == (409, "calendar_missing"), body
                assert str(china_today().year) in body["message"]
            rows = await server.app[DB].run(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM penalty_steps WHERE case_id = ?", (p.cid,)
                ).fetchone()[0]
            )
            audits = await server.app[DB].run(
                lambda c: c.execute(
                    "SELECT COUNT(*) FROM audit WHERE action = 'penalty.statement'"
                ).fetchone()[0]
            )
            assert (rows, audits) == (0, 0)
            assert await custody(server, "penalty.statement") == []
    finally:
        await server.runner.cleanup()
