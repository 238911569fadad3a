"""The party's deliveries carry a determination's review window (``review_closes``, counted on
the working-day calendar from the delivery date, and ``review_open``), for its page to show."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import aiohttp

from control.appkeys import DB, RULES
from control.deadlines.rules import china_date, china_today
from tests.conftest import Api, Server, make_config, officer_login, start_server
from tests.test_delivery import consent, make_determination, party_in_session


async def backdate(server: Server, table: str, column: str, row_id: int, days: int) -> None:
    """Move one recorded time back by ``days``: the case as it stands some days later."""

    def move(conn: Any) -> None:
        (value,) = conn.execute(f"SELECT {column} FROM {table} WHERE id = ?", (row_id,)).fetchone()
        earlier = datetime.datetime.fromisoformat(value) - datetime.timedelta(days=days)
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE id = ?", (earlier.isoformat(), row_id))

    await server.app[DB].run(move)


async def deliver(api: Api, li: str, cid: int, doc: int, pid: int) -> dict[str, Any]:
    status, row = await api.call(
        "POST", f"/api/cases/{cid}/deliveries", li, {"document_id": doc, "party_id": pid}
    )
    assert status == 201, row
    return dict(row)


async def test_party_deliveries_say_when_the_review_window_closes(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            await consent(api, li, p)
            doc = await make_determination(api, li, p)
            sent = await deliver(api, li, p.cid, doc["id"], p.pid)
            rules = server.app[RULES]
            status, mine = await api.call("GET", "/api/party/deliveries", p.token)
            assert status == 200, mine
            (row,) = mine["deliveries"]
            closes = rules.due("review_request", china_date(sent["sent_at"]))
            assert row["review_closes"] == closes.isoformat() and row["review_open"] is True
            assert closes >= china_today()

            # a month later the window has closed, and the request is refused with its day
            await backdate(server, "deliveries", "sent_at", sent["id"], 30)
            status, mine = await api.call("GET", "/api/party/deliveries", p.token)
            (row,) = mine["deliveries"]
            assert row["review_open"] is False
            status, body = await api.call(
                "POST", "/api/party/reviews", p.token, {"delivery_id": sent["id"], "reasons": "x"}
            )
            assert (status, body["error"]) == (409, "review_window_closed"), body
            assert body["closed_on"] == row["review_closes"]
    finally:
        await server.runner.cleanup()
