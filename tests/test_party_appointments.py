"""What the party's page reads and changes with its link: the case, the police unit, the open
session and its appointment, booked, moved and cancelled within its brigade's slots."""

from __future__ import annotations

import datetime
from pathlib import Path

import aiohttp

from control.appkeys import DB
from control.auth import create_officer
from tests.conftest import CONSENT, PASSWORD, Api, make_config, start_server


def _at(hours: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours)
    return moment.astimezone(datetime.timezone(datetime.timedelta(hours=8))).isoformat()


async def test_the_party_page_view_and_its_appointment(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    db = server.app[DB]
    await db.run(lambda c: create_officer(c, "li", PASSWORD, "officer", "高速一大队"))
    await db.run(lambda c: create_officer(c, "wu", PASSWORD, "officer", "城区二大队"))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li, wu = await api.login("li"), await api.login("wu")
            ours = []
            for hours in (24, 26):
                status, slot = await api.call(
                    "POST", "/api/slots", li, {"starts_at": _at(hours), "ends_at": _at(hours + 1)}
                )
                assert status == 201, slot
                ours.append(slot["id"])
            _, theirs = await api.call(
                "POST", "/api/slots", wu, {"starts_at": _at(25), "ends_at": _at(26)}
            )
            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "accident", "title": "G15 追尾"}
            )
            cid = case["id"]
            _, party = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "张三"}
            )
            _, invite = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
            )
            link = invite["token"]

            # before any session: the case and the unit, no session, no appointment
            status, view = await api.call("GET", "/api/party", link)
            assert status == 200, view
            assert view["case"]["title"] == "G15 追尾" and view["case"]["status"] == "open"
            assert view["unit"] == "高速一大队" == view["case"]["brigade"]
            assert view["session"] is None and view["appointment"] is None
            assert view["invitation"]["used"] is False and view["invitation"]["expires_at"]

            # only its brigade's free slots; another brigade's is refused
            _, free = await api.call("GET", "/api/party/slots", link)
            assert [s["id"] for s in free["slots"]] == ours
            status, body = await api.call(
                "POST", "/api/party/appointment", link, {"slot_id": theirs["id"]}
            )
            assert status == 404, body
            # book, then move
            status, booked = await api.call(
                "POST", "/api/party/appointment", link, {"slot_id": ours[0]}
            )
            assert status == 201 and booked["slot_id"] == ours[0], booked
            status, moved = await api.call(
                "POST", "/api/party/appointment", link, {"slot_id": ours[1]}
            )
            assert status == 200 and moved["slot_id"] == ours[1] and moved["reschedules"] == 1
            _, view = await api.call("GET", "/api/party", link)
            assert view["appointment"]["slot_id"] == ours[1]
            assert view["appointment"]["starts_at"] == moved["starts_at"]

            # a session opens: the view says so, before and after the link is used
            assert (await api.call("POST", f"/api/cases/{cid}/sessions", li))[0] == 201
            _, view = await api.call("GET", "/api/party", link)
            assert view["session"] is not None and view["session"]["opened_at"]
            status, redeemed = await api.call(
                "POST", "/api/invitations/redeem", json={"token": link, "consent": CONSENT}
            )
            assert status == 200, redeemed
            _, view = await api.call("GET", "/api/party", redeemed["token"])
            assert view["unit"] == "高速一大队" and view["session"] is not None
            assert view["invitation"] is None  # asked with the call token, not the link
            _, view = await api.call("GET", "/api/party", link)
            assert view["invitation"]["used"] is True

            # cancel needs a reason; then the appointment is gone and its slot free again
            status, body = await api.call("POST", "/api/party/appointment/cancel", link, {})
            assert (status, body["error"]) == (400, "bad_request")
            status, cancelled = await api.call(
                "POST", "/api/party/appointment/cancel", link, {"reason": "改为到现场"}
            )
            assert status == 200 and cancelled["status"] == "cancelled", cancelled
            _, view = await api.call("GET", "/api/party", link)
            assert view["appointment"] is None
            _, free = await api.call("GET", "/api/party/slots", link)
            assert [s["id"] for s in free["slots"]] == ours
    finally:
        await server.runner.cleanup()
