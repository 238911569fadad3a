"""A readmission supersedes the grant given before: of one link, only the page opened last joins.

A real server (``auth.dev_join`` off), real logins, invitations and sessions through the HTTP
API, real aiortc clients on the signalling WebSocket (control/sessions/invitations.py,
control/access.py's admission).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bench.peer import PeerClient
from control.appkeys import DB
from control.sessions.signalling import CLOSE_REPLACED
from tests.conftest import (
    CONSENT,
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_admission import assert_refusal, audit_actions, refused
from tests.test_party_device import device, invite, joined, redeem


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


async def grants(server: Server, participant: str) -> list[dict[str, object]]:
    return await server.app[DB].run(
        lambda c: [
            dict(r)
            for r in c.execute(
                "SELECT id, revoked_at, superseded_at, superseded_by FROM call_grants "
                "WHERE participant = ? ORDER BY created_at, rowid",
                (participant,),
            )
        ]
    )


async def test_the_old_grant_is_refused_and_the_new_admitted(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
    assert status == 201, session
    link = await invite(api, officer, case, party)
    mine = device()
    status, first = await redeem(api, link, consent=CONSENT, device=mine)
    assert status == 200 and first["readmitted"] is False, first
    officer_client = await joined(clients, server, session["token"])
    before = await joined(clients, server, first["token"])
    participant = first["participant"]

    # the same device opens the link again (a reload, or a second tab)
    status, again = await redeem(api, link, device=mine)
    assert status == 200 and again["readmitted"] is True, again
    rows = await grants(server, participant)
    assert len(rows) == 2
    old, new = rows
    assert old["superseded_at"] is not None and old["superseded_by"] == new["id"]
    assert old["revoked_at"] is None  # superseded, not removed
    assert new["superseded_at"] is None and new["revoked_at"] is None

    # the new token is admitted and takes the old connection's place
    after = await joined(clients, server, again["token"])
    await wait_until(lambda: before.ws_close_code is not None, what="the old connection closed")
    assert before.ws_close_code == CLOSE_REPLACED
    assert not officer_client.closed_reason

    # the old token is refused, with its reason (Chinese first), and the refusal audited
    assert_refusal(await refused(server, first["token"]), "superseded")
    assert ("call.refused", "superseded") in await audit_actions(server, case)
    assert after.ws_close_code is None  # the refused join did not disturb the live one
    # nor does it read the party's own endpoints any more; the new one does
    status, body = await api.call("GET", "/api/party", first["token"])
    assert status in (401, 403), body
    status, view = await api.call("GET", "/api/party", again["token"])
    assert status == 200 and view["party"]["id"] == party

    # a third opening supersedes the second; the first stays superseded by the second
    status, third = await redeem(api, link, device=mine)
    assert status == 200 and third["readmitted"] is True
    rows = await grants(server, participant)
    assert [r["superseded_by"] for r in rows] == [rows[1]["id"], rows[2]["id"], None]
    assert_refusal(await refused(server, again["token"]), "superseded")
    await joined(clients, server, third["token"])
    done = await audit_actions(server, case)
    readmitted = [reason for action, reason in done if action == "invitation.readmitted"]
    assert len(readmitted) == 2 and all("1 earlier grant(s) superseded" in r for r in readmitted)


async def test_a_removal_still_wins_over_readmission(
    server: Server, api: Api, clients: list[PeerClient]
) -> None:
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
    assert status == 201
    link = await invite(api, officer, case, party)
    mine = device()
    status, first = await redeem(api, link, consent=CONSENT, device=mine)
    assert status == 200
    status, again = await redeem(api, link, device=mine)
    assert status == 200 and again["readmitted"] is True
    await joined(clients, server, session["token"])
    client = await joined(clients, server, again["token"])
    base = f"/api/cases/{case}/sessions/{session['id']}"
    status, body = await api.call(
        "POST", f"{base}/remove", officer, {"participant": again["participant"], "reason": "r"}
    )
    assert status == 200, body
    await client.wait_for(lambda m: m["type"] == "bye")
    # the removal revoked every grant of the participant, the superseded one too
    rows = await grants(server, again["participant"])
    assert all(r["revoked_at"] is not None for r in rows)
    assert_refusal(await refused(server, again["token"]), "removed")
    assert_refusal(await refused(server, first["token"]), "removed")
    status, body = await redeem(api, link, device=mine)
    assert (status, body["error"]) == (403, "removed")
