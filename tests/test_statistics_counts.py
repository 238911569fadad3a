"""Statistics of what the system does now (control/statistics.py), with a real server: documents
delivered by kind, reviews and their outcomes, penalty notices, steps overdue, mediations by
outcome; over a date range, per brigade (a second brigade's case is not counted) and per kind.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import aiohttp

from control.appkeys import DB
from control.deadlines.rules import china_today
from tests import samples
from tests.conftest import Api, make_config, officer_login, start_server
from tests.test_deadlines import backdated, penalty_data
from tests.test_delivery import consent, determination, make_determination, party_in_session


async def test_statistics_over_a_range_per_brigade_and_kind(tmp_path: Path) -> None:
    photo = await asyncio.to_thread(samples.jpeg)  # encoding it is work for a thread
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")

            # brigade-1, an accident: a determination delivered, reviewed and upheld; another
            # made three weeks ago and never delivered (its 3 working days are overdue)
            p = await party_in_session(server, api, li)
            await consent(api, li, p)
            doc = await make_determination(api, li, p)
            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": doc["id"], "party_id": p.pid},
            )
            assert status == 201, sent
            status, review = await api.call(
                "POST",
                "/api/party/reviews",
                p.token,
                {"delivery_id": sent["id"], "reasons": "对方负主要责任"},
            )
            assert status == 201, review
            status, decided = await api.call(
                "POST",
                f"/api/cases/{p.cid}/reviews/{review['id']}/outcome",
                li,
                {"outcome": "upheld", "note": "事实清楚"},
            )
            assert status == 200, decided
            late = await make_determination(api, li, p)
            weeks_ago = backdated(china_today() - timedelta(days=21))
            await server.app[DB].run(
                lambda c: c.execute(
                    "UPDATE documents SET created_at = ? WHERE id = ?", (weeks_ago, late["id"])
                )
            )
            # brigade-1, a second accident with its inquiry session
            await party_in_session(server, api, li, name="李四")
            # brigade-2: a delivered determination and a material, never counted for brigade-1
            r = await party_in_session(server, api, wu, name="王五")
            await consent(api, wu, r)
            path = f"/api/cases/{r.cid}/documents"
            status, other = await api.call(
                "POST", path, wu, {"kind": "determination_ordinary", "data": determination(r.pid)}
            )
            assert status == 201, other
            for field in ("officer-o2", "seal-department"):  # wu is the second account
                status, other = await api.call(
                    "POST", f"{path}/{other['id']}/sign", wu, {"field": field}
                )
                assert status == 200, other
            status, _ = await api.call(
                "POST",
                f"/api/cases/{r.cid}/deliveries",
                wu,
                {"document_id": other["id"], "party_id": r.pid},
            )
            assert status == 201
            status, _ = await api.call(
                "POST", "/api/party/materials?name=a.jpg", r.token, data=photo
            )
            assert status == 201
            status, notice = await api.call(
                "POST",
                f"/api/cases/{r.cid}/documents",
                wu,
                {"kind": "penalty_notice", "data": penalty_data(r.pid, "penalty_notice", 200)},
            )
            assert status == 201, notice

            status, mine = await api.call("GET", "/api/statistics", li)
            assert status == 200 and set(mine["brigades"]) == {"brigade-1"}, mine
            one = mine["brigades"]["brigade-1"]
            assert one["documents_delivered"] == {"determination_ordinary": 1}
            assert one["reviews"] == {
                "requested": 1,
                "pending": 0,
                "upheld": 1,
                "reinvestigate": 0,
                "not_accepted": 0,
            }
            assert one["overdue"] == {"determination_delivery": 1}, one
            assert one["penalty_notices"] == 0 and one["materials_received"] == 0
            assert one["mediations"] == {}  # none yet (test_mediation.py counts real ones)
            assert one["inquiries"] == 2

            status, theirs = await api.call("GET", "/api/statistics?brigade=brigade-2", zhao)
            two = theirs["brigades"]["brigade-2"]
            assert set(theirs["brigades"]) == {"brigade-2"}
            assert two["documents_delivered"] == {"determination_ordinary": 1}
            assert two["penalty_notices"] == 1 and two["materials_received"] == 1
            assert two["reviews"]["requested"] == 0 and two["overdue"] == {}
            _, both = await api.call("GET", "/api/statistics", zhao)
            assert set(both["brigades"]) == {"brigade-1", "brigade-2"}

            # a range that ends before today: what happened today is not in it; the step that
            # fell due in it is still overdue
            today = china_today()
            since = (today - timedelta(days=30)).isoformat()
            until = (today - timedelta(days=3)).isoformat()
            _, before = await api.call("GET", f"/api/statistics?from={since}&to={until}", li)
            old = before["brigades"]["brigade-1"]
            assert old["documents_delivered"] == {} and old["reviews"]["requested"] == 0
            assert old["overdue"] == {"determination_delivery": 1}
            # one kind only: the accidents
            _, accidents = await api.call("GET", "/api/statistics?kind=accident", li)
            assert accidents["kind"] == "accident"
            assert accidents["brigades"]["brigade-1"]["cases"]["accident"] == 2
            _, violations = await api.call("GET", "/api/statistics?kind=violation", li)
            assert violations["brigades"] == {}
            status, body = await api.call("GET", "/api/statistics?kind=parking", li)
            assert (status, body["error"]) == (400, "bad_request")

    finally:
        await server.runner.cleanup()
