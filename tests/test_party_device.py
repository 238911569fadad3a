"""The party's link bound to the device that used it: back after a reload, never elsewhere.

A real server (``auth.dev_join`` off), real logins, invitations and sessions through the HTTP
API, real aiortc clients on the signalling WebSocket (control/sessions/invitations.py).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


def device() -> str:
    return secrets.token_urlsafe(32)


async def invite(api: Api, officer: str, case: int, party: int) -> str:
    status, body = await api.call(
        "POST", f"/api/cases/{case}/invitations", officer, {"party_id": party}
    )
    assert status == 201, body
    token: str = body["token"]
    return token


async def redeem(api: Api, token: str, **body: Any) -> tuple[int, Any]:
    return await api.call("POST", "/api/invitations/redeem", json={"token": token, **body})


async def actions(server: Server, case: int) -> list[str]:
    return await server.app[DB].run(
        lambda c: [
            r["action"]
            for r in c.execute("SELECT action FROM audit WHERE case_id = ? ORDER BY id", (case,))
        ]
    )


async def joined(clients: list[PeerClient], server: Server, token: str) -> PeerClient:
    client = PeerClient(server.base_url, token, decode=False)
    clients.append(client)
    await client.connect()
    assert client.joined is not None, client.closed_reason
    return client


async def test_the_same_device_is_back_and_another_is_refused(
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

    # another device (no secret, or another one) cannot reuse the link
    assert (await redeem(api, link, consent=CONSENT))[1]["error"] == "used"
    status, body = await redeem(api, link, consent=CONSENT, device=device())
    assert (status, body["error"]) == (410, "used")

    # the same device, after a reload: no consents asked again, the ones given stand
    status, again = await redeem(api, link, device=mine)
    assert status == 200, again
    assert again["readmitted"] is True and again["room"] == session["room"]
    assert again["participant"] == first["participant"]
    assert again["consent"] == CONSENT
    assert again["token"] != first["token"]
    after = await joined(clients, server, again["token"])
    # the page that was reloaded away is replaced in the room by the new one
    await wait_until(lambda: before.ws_close_code is not None, what="the old connection closed")
    assert before.ws_close_code == CLOSE_REPLACED
    assert after.joined is not None
    assert first["participant"] in {p["id"] for p in after.joined["participants"]} | {
        after.joined["participant"]["id"]
    }
    assert not officer_client.closed_reason
    # its new call token reaches the party's endpoints
    status, view = await api.call("GET", "/api/party", again["token"])
    assert status == 200 and view["party"]["id"] == party

    done = await actions(server, case)
    assert done.count("invitation.redeemed") == 1
    assert done.count("invitation.readmitted") == 1
    assert done.count("invitation.refused") == 2
    grants = await server.app[DB].run(
        lambda c: c.execute(
            "SELECT COUNT(*) FROM call_grants WHERE participant = ?", (f"party-{party}",)
        ).fetchone()[0]
    )
    assert grants == 2
    # the secret is kept hashed, never as sent
    stored = await server.app[DB].run(
        lambda c: c.execute("SELECT device_hash FROM invitations").fetchone()["device_hash"]
    )
    assert stored and mine not in stored


async def test_a_link_used_without_a_device_stays_single_use(server: Server, api: Api) -> None:
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    assert (await api.call("POST", f"/api/cases/{case}/sessions", officer))[0] == 201
    link = await invite(api, officer, case, party)
    assert (await redeem(api, link, consent=CONSENT))[0] == 200
    status, body = await redeem(api, link, consent=CONSENT, device=device())
    assert (status, body["error"]) == (410, "used")
    # a link used without a device secret (an API client) reads its party's things as before
    status, view = await api.call("GET", "/api/party", link)
    assert status == 200 and view["party"]["id"] == party


async def test_a_bound_link_reads_nothing_on_another_device(server: Server, api: Api) -> None:
    """A link the page redeemed (bound to its device secret) answers the party's endpoints only
    with that secret: a forwarded SMS shows another phone neither the case nor its documents."""
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    assert (await api.call("POST", f"/api/cases/{case}/sessions", officer))[0] == 201
    link = await invite(api, officer, case, party)
    mine = device()
    assert (await redeem(api, link, consent=CONSENT, device=mine))[0] == 200
    same = {"X-Remotecase-Device": mine}
    for path in ("/api/party", "/api/party/materials", "/api/party/documents", "/api/party/slots"):
        status, body = await api.call("GET", path, link, headers=same)
        assert status == 200, (path, body)
        for other in ({}, {"X-Remotecase-Device": device()}):
            status, body = await api.call("GET", path, link, headers=other)
            assert (status, body["error"], body["detail"]) == (403, "forbidden", "other_device")
            assert "另一台设备" in body["message"]
    status, body = await api.call("GET", "/api/party", link, lang="en")
    assert status == 403 and "another device" in body["message"]
    # nothing was changed by the refused requests: the same device still reads its case
    status, view = await api.call("GET", "/api/party", link, headers=same)
    assert status == 200 and view["party"]["id"] == party


async def test_bad_input_loses_nothing(server: Server, api: Api) -> None:
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    assert (await api.call("POST", f"/api/cases/{case}/sessions", officer))[0] == 201
    link = await invite(api, officer, case, party)
    for bad in ("short", 12345, "x" * 101, "密" * 30):
        status, body = await redeem(api, link, consent=CONSENT, device=bad)
        assert (status, body["error"]) == (400, "bad_request"), bad
        assert "device" in body["message"]
    # a device but no consent to recording, on a link never used: refused, and not used up
    mine = device()
    status, body = await redeem(api, link, consent={"recording": False}, device=mine)
    assert (status, body["error"]) == (400, "consent_required")
    status, body = await redeem(api, link, consent=CONSENT, device=mine)
    assert status == 200 and body["readmitted"] is False


async def test_removed_or_ended_is_not_readmitted(
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
    await joined(clients, server, session["token"])
    client = await joined(clients, server, first["token"])
    base = f"/api/cases/{case}/sessions/{session['id']}"
    status, body = await api.call(
        "POST", f"{base}/remove", officer, {"participant": first["participant"], "reason": "r"}
    )
    assert status == 200, body
    await client.wait_for(lambda m: m["type"] == "bye")
    # removed: the bound device is not let back in by its old link
    status, body = await redeem(api, link, device=mine)
    assert (status, body["error"]) == (403, "removed")
    # a new link is the officer's way back in, and binds the device again
    second = await invite(api, officer, case, party)
    status, back = await redeem(api, second, consent=CONSENT, device=mine)
    assert status == 200 and back["readmitted"] is False
    assert (await redeem(api, second, device=mine))[0] == 200

    # the session ends: the link was for that session, not for the next one
    status, body = await api.call("POST", f"{base}/end", officer, {"reason": "done"})
    assert status == 200, body
    status, body = await redeem(api, second, device=mine)
    assert (status, body["error"]) == (410, "session_ended")
    assert (await api.call("POST", f"/api/cases/{case}/sessions", officer))[0] == 201
    status, body = await redeem(api, second, device=mine)
    assert (status, body["error"]) == (410, "session_ended")
