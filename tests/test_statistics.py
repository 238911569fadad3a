"""Statistics per brigade and kind over a date range."""

from __future__ import annotations

import datetime
from pathlib import Path

import aiohttp

from tests import samples
from tests.conftest import Api, case_with_party, make_config, officer_login, start_server


async def test_counts_per_brigade_and_kind(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")
            accident, _ = await case_with_party(api, li, kind="accident")
            await case_with_party(api, li, kind="violation")
            education, _ = await case_with_party(api, li, kind="education")
            other, other_party = await case_with_party(api, wu, kind="violation")
            for cid, body in (
                (accident, {"purpose": "mediation"}),
                (education, None),
                (other, None),
            ):
                status, session = await api.call(
                    "POST", f"/api/cases/{cid}/sessions", li if cid != other else wu, body
                )
                assert status == 201, session
            status, body = await api.call(
                "POST", f"/api/cases/{accident}/sessions", li, {"purpose": "party"}
            )
            assert status == 400  # bad purpose (and a session is open anyway)
            _, invite = await api.call(
                "POST", f"/api/cases/{other}/invitations", wu, {"party_id": other_party}
            )
            status, _ = await api.call(
                "POST", "/api/party/materials?name=a.jpg", invite["token"], data=samples.jpeg()
            )
            assert status == 201

            status, mine = await api.call("GET", "/api/statistics", li)
            assert status == 200 and set(mine["brigades"]) == {"brigade-1"}
            one = mine["brigades"]["brigade-1"]
            assert one["cases"] == {
                "accident": 1,
                "violation": 1,
                "education": 1,
                "vehicle_service": 0,
                "licence_service": 0,
            }
            assert one["sessions"]["mediation"] == 1 and one["education_sessions"] == 1
            assert one["inquiries"] == 0 and one["materials_received"] == 0

            _, everything = await api.call("GET", "/api/statistics", zhao)
            two = everything["brigades"]["brigade-2"]
            assert two["cases"]["violation"] == 1 and two["inquiries"] == 1
            assert two["materials_received"] == 1
            _, only = await api.call("GET", "/api/statistics?brigade=brigade-2", zhao)
            assert set(only["brigades"]) == {"brigade-2"}
            assert (await api.call("GET", "/api/statistics?brigade=brigade-2", li))[0] == 403

            past = (datetime.date.today() - datetime.timedelta(days=400)).isoformat()
            older = (datetime.date.today() - datetime.timedelta(days=300)).isoformat()
            _, empty = await api.call("GET", f"/api/statistics?from={past}&to={older}", zhao)
            assert empty["brigades"] == {}
            for bad in ("from=yesterday", f"from={older}&to={past}", "from=1900-01-01"):
                status, body = await api.call("GET", f"/api/statistics?{bad}", zhao)
                assert (status, body["error"]) == (400, "bad_request"), bad
            assert (await api.call("GET", "/api/statistics"))[0] == 401
    finally:
        await server.runner.cleanup()
