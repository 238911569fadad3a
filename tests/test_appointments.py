"""Online appointments: slots, booking by officer and by party link, reschedule, cancel."""

from __future__ import annotations

import datetime
from pathlib import Path

import aiohttp

from control.appkeys import DB
from control.auth import create_officer
from tests.conftest import PASSWORD, Api, make_config, start_server


def _at(hours: float) -> str:
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours)
    return moment.astimezone(datetime.timezone(datetime.timedelta(hours=8))).isoformat()


async def test_booking_rescheduling_and_cancelling(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    db = server.app[DB]
    await db.run(lambda c: create_officer(c, "li", PASSWORD, "officer", "brigade-1"))
    await db.run(lambda c: create_officer(c, "wu", PASSWORD, "officer", "brigade-2"))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li, wu = await api.login("li"), await api.login("wu")
            slots = []
            for hours in (24, 25, 26):
                status, slot = await api.call(
                    "POST", "/api/slots", li, {"starts_at": _at(hours), "ends_at": _at(hours + 0.5)}
                )
                assert status == 201 and slot["brigade"] == "brigade-1", slot
                slots.append(slot["id"])
            s1, s2, s3 = slots
            for bad in (
                {"starts_at": _at(-1), "ends_at": _at(-0.5)},
                {"starts_at": _at(2), "ends_at": _at(1)},
                {"starts_at": "2026-12-01T09:00:00", "ends_at": _at(30)},
                {"starts_at": "tomorrow", "ends_at": _at(30)},
            ):
                status, body = await api.call("POST", "/api/slots", li, bad)
                assert (status, body["error"]) == (400, "bad_request"), bad

            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "violation", "title": "speeding G4"}
            )
            cid = case["id"]
            _, a = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "Zhang San"}
            )
            _, b = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "owner", "name": "Li Si"}
            )
            _, invite = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": a["id"]}
            )
            link = invite["token"]

            # the party, by its link: its case, the free slots, a booking
            status, me = await api.call("GET", "/api/party", link)
            assert status == 200 and me["case"]["id"] == cid and me["appointment"] is None
            assert me["party"] == {"id": a["id"], "name": "Zhang San"}
            _, free = await api.call("GET", "/api/party/slots", link)
            assert [s["id"] for s in free["slots"]] == slots
            status, booked = await api.call("POST", "/api/party/appointment", link, {"slot_id": s1})
            assert status == 201 and booked["slot_id"] == s1 and booked["status"] == "booked"

            # a slot holds one booking; an officer books the other party elsewhere
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/appointments", li, {"party_id": b["id"], "slot_id": s1}
            )
            assert (status, body["error"]) == (409, "slot_taken")
            status, other = await api.call(
                "POST",
                f"/api/cases/{cid}/appointments",
                li,
                {"party_id": b["id"], "slot_id": s2, "reason": "by phone"},
            )
            assert status == 201
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/appointments", li, {"party_id": b["id"], "slot_id": s3}
            )
            assert (status, body["error"]) == (409, "already_booked")
            _, free = await api.call("GET", "/api/party/slots", link)
            assert [s["id"] for s in free["slots"]] == [s3]
            assert set(free["slots"][0]) == {"id", "starts_at", "ends_at"}

            # the party moves its appointment; a taken slot is refused
            status, body = await api.call("POST", "/api/party/appointment", link, {"slot_id": s2})
            assert (status, body["error"]) == (409, "slot_taken")
            status, moved = await api.call("POST", "/api/party/appointment", link, {"slot_id": s3})
            assert status == 200 and moved["slot_id"] == s3 and moved["reschedules"] == 1
            status, body = await api.call("POST", "/api/party/appointment", link, {"slot_id": "s1"})
            assert (status, body["error"]) == (400, "bad_request")

            # another brigade reaches neither the case nor the slots
            status, _ = await api.call(
                "POST", f"/api/cases/{cid}/appointments", wu, {"party_id": b["id"], "slot_id": s1}
            )
            assert status == 404
            assert (await api.call("POST", f"/api/slots/{s1}/withdraw", wu, {"reason": "x"}))[
                0
            ] == 404
            assert (await api.call("GET", "/api/slots", wu))[1]["slots"] == []

            # a booked slot cannot be withdrawn; after the cancellation it can
            status, body = await api.call(
                "POST", f"/api/slots/{s3}/withdraw", li, {"reason": "officer on leave"}
            )
            assert (status, body["error"]) == (409, "slot_taken")
            assert (await api.call("POST", "/api/party/appointment/cancel", link, {}))[0] == 400
            status, cancelled = await api.call(
                "POST", "/api/party/appointment/cancel", link, {"reason": "I will come in person"}
            )
            assert status == 200 and cancelled["status"] == "cancelled"
            assert (
                await api.call(
                    "POST", f"/api/slots/{s3}/withdraw", li, {"reason": "officer on leave"}
                )
            )[0] == 200
            status, body = await api.call(
                "POST",
                f"/api/cases/{cid}/appointments/{other['id']}/reschedule",
                li,
                {"slot_id": s3, "reason": "x"},
            )
            assert (status, body["error"]) == (404, "not_found")  # withdrawn
            status, body = await api.call(
                "POST",
                f"/api/cases/{cid}/appointments/{other['id']}/cancel",
                li,
                {"reason": "party asked by phone"},
            )
            assert status == 200 and body["status"] == "cancelled"

            _, full = await api.call("GET", f"/api/cases/{cid}", li)
            assert [x["status"] for x in full["appointments"]] == ["cancelled", "cancelled"]
            _, audit = await api.call("GET", f"/api/cases/{cid}/audit", li)
            trail = [(x["actor"], x["action"]) for x in audit["audit"]]
            party_actor = f"party:{a['id']}"
            for expected in (
                (party_actor, "appointment.booked"),
                (party_actor, "appointment.rescheduled"),
                (party_actor, "appointment.cancelled"),
                ("officer:li", "appointment.booked"),
                ("officer:li", "appointment.cancelled"),
            ):
                assert expected in trail, expected

            # a revoked link books nothing
            await api.call(
                "POST",
                f"/api/invitations/{invite['id']}/revoke",
                li,
                {"reason": "sent to the wrong phone"},
            )
            status, body = await api.call("GET", "/api/party/slots", link)
            assert (status, body["error"]) == (401, "unauthorized")
            assert (await api.call("GET", "/api/party", "not-a-link"))[0] == 401
            assert (await api.call("GET", "/api/party"))[0] == 401
    finally:
        await server.runner.cleanup()
