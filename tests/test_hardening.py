"""Smaller holes (issue 11, item 7), each tried against a real server the way an attacker or a
careless client would: deep JSON, loose route IDs, odd export paths, missing security headers,
slow bodies, logins that lock owners out or tell names apart, client addresses behind the
front, plaintext exports, chatty media logs, cheap password hashes, racing migrations."""

from __future__ import annotations

import json

import aiohttp

from tests.conftest import (
    Api,
    Server,
    case_with_party,
    officer_login,
)

DEEP = "[" * 30000


async def test_deep_json_is_a_clear_400_on_every_api(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        case_id, _ = await case_with_party(api, li)
        headers = {"Content-Type": "application/json"}
        for path, token in (("/api/login", None), ("/api/invitations/redeem", None),
                            ("/api/cases", li), (f"/api/cases/{case_id}/parties", li),
                            (f"/api/cases/{case_id}/close", li)):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(server.base_url + path, data=DEEP,
                                 headers={**headers, **auth}) as r:
                body = await r.json()
                assert r.status == 400, (path, r.status, body)
                assert body["error"] == "bad_json" and "32" in body["message"], body
        # nesting inside strings is only text; shallow nesting still parses
        status, case = await api.call("POST", "/api/cases", li,
                                      {"kind": "accident", "title": "[[[[" * 40})
        assert status == 201 and case["title"] == "[[[[" * 40


async def test_deep_json_on_the_sockets_answers_an_error_and_the_session_goes_on(
        server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        ws = await http.ws_connect(server.base_url + "/ws")
        await ws.send_str(DEEP)
        error = await ws.receive_json(timeout=10)
        assert error["type"] == "error" and error["code"] == "bad_json", error
        assert "32" in error["message"]
        await ws.send_str(json.dumps({"type": "ping", "id": 7}))  # the session still answers
        assert await ws.receive_json(timeout=10) == {"type": "pong", "id": 7}
        await ws.close()

        events = await http.ws_connect(server.base_url + "/api/events")
        await events.send_json({"type": "auth", "token": li})
        assert (await events.receive_json(timeout=10))["type"] == "ready"
        await events.send_str(DEEP[:3000])  # the stream takes messages of up to 4 KiB
        error = await events.receive_json(timeout=10)
        assert error["type"] == "error" and error["error"] == "bad_request", error
        await events.send_json({"type": "subscribe", "case": None})
        assert (await events.receive_json(timeout=10))["type"] == "subscribed"
        await events.close()

        # before authenticating: an error and a close with the auth code, not an abrupt end
        events = await http.ws_connect(server.base_url + "/api/events")
        await events.send_str(DEEP[:3000])
        error = await events.receive_json(timeout=10)
        assert error["type"] == "error" and error["error"] == "unauthorized"
        message = await events.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE and events.close_code == 4001


async def test_route_ids_are_strict_integers(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        case_id, party_id = await case_with_party(api, li)
        status, invite = await api.call("POST", f"/api/cases/{case_id}/invitations", li,
                                        {"party_id": party_id})
        assert status == 201
        for loose in (f"{invite['id']}.0", f"+{invite['id']}", f"0{invite['id']}e0", "%C2%B9",
                      "%D9%A1", "1" * 40):
            status, body = await api.call("POST", f"/api/invitations/{loose}/revoke", li,
                                          {"reason": "test"})
            assert status == 404, (loose, status, body)
        # the invitation was not revoked by any of them: it still redeems... once a session is
        # open; here it is enough that revoking it for real works once
        status, body = await api.call("POST", f"/api/invitations/{invite['id']}/revoke", li,
                                      {"reason": "test"})
        assert (status, body) == (200, {"revoked": invite["id"]})
        _, audit = await api.call("GET", f"/api/cases/{case_id}/audit", li)
        assert [e["action"] for e in audit["audit"]].count("invitation.revoked") == 1
        # unicode digits in other IDs: 404, not 500
        for loose in ("%C2%B9", "%D9%A1", "1.0"):
            status, _ = await api.call("GET", f"/api/cases/{loose}", li)
            assert status == 404, loose
            status, _ = await api.call("POST", f"/api/cases/{case_id}/sessions/{loose}/end",
                                       li, {"reason": "x"})
            assert status == 404, loose
