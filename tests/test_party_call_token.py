"""The party's call outlives its first token (issue 18): ``POST /api/party/call-token`` gives
the device a link is bound to a fresh call token of the same admission while that admission
stands, and a resume with it after the first token expired goes on as the same participant
(real server, real aiortc peers, a real short ``auth.token_ttl``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PeerClient
from control.access import revoke_grants
from control.appkeys import DB, SIGNER
from tests.conftest import (
    CONSENT,
    Api,
    case_with_party,
    leftovers,
    make_config,
    officer_login,
    start_server,
)

DEVICE = "d" * 43
OTHER_DEVICE = "e" * 43
RENEW = "/api/party/call-token"


def _about(message: dict[str, Any], pid: str) -> bool:
    who = message.get("participant")
    return (who.get("id") if isinstance(who, dict) else who) == pid


def _device(secret: str) -> dict[str, str]:
    return {"X-Remotecase-Device": secret}


async def _inquiry(api: Api, srv: Any) -> dict[str, Any]:
    """An officer, an open session, a party's link redeemed by the party's page (bound)."""
    officer = await officer_login(srv, api)
    case, party_id = await case_with_party(api, officer)
    status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
    assert status == 201, session
    status, invitation = await api.call(
        "POST", f"/api/cases/{case}/invitations", officer, {"party_id": party_id}
    )
    assert status == 201, invitation
    link = invitation["token"]
    status, redeemed = await api.call(
        "POST",
        "/api/invitations/redeem",
        json={"token": link, "consent": CONSENT, "device": DEVICE},
    )
    assert status == 200, redeemed
    return {
        "officer": officer,
        "case": case,
        "party_id": party_id,
        "session": session,
        "link": link,
        "redeemed": redeemed,
    }


async def test_a_fresh_token_only_for_the_bound_device_while_the_admission_stands(
    tmp_path: Path,
) -> None:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            world = await _inquiry(api, srv)
            link, first = world["link"], world["redeemed"]
            signer = srv.app[SIGNER]
            status, body = await api.call("POST", RENEW, link, headers=_device(DEVICE))
            assert status == 200, body
            old, fresh = signer.verify(first["token"]), signer.verify(body["token"])
            # the same admission (grant), participant and room; a later expiry
            assert (fresh.room, fresh.participant, fresh.role, fresh.grant_id) == (
                old.room,
                old.participant,
                "party",
                old.grant_id,
            )
            assert body["participant"] == first["participant"] and body["room"] == old.room
            assert fresh.expires_at >= old.expires_at
            # the fresh token reads the party's own things, as the first one does
            status, view = await api.call("GET", "/api/party", body["token"])
            assert status == 200, view

            # another device, or none: the link alone (a forwarded SMS) renews nothing
            for headers in (_device(OTHER_DEVICE), {}):
                status, refused = await api.call("POST", RENEW, link, headers=headers)
                assert status == 403 and refused["detail"] == "other_device", refused
                assert refused["message"].startswith("此链接已在另一台设备上使用")
            status, refused = await api.call("POST", RENEW, "x" * 32, headers=_device(DEVICE))
            assert status == 401 and refused["detail"] == "link_invalid", refused
            status, refused = await api.call("POST", RENEW, headers=_device(DEVICE))
            assert status == 401, refused
            # a call token is no link: it renews nothing (only the bound device does)
            status, refused = await api.call("POST", RENEW, body["token"], headers=_device(DEVICE))
            assert status == 401, refused
            # in English when asked
            status, refused = await api.call(
                "POST", RENEW, link, headers=_device(OTHER_DEVICE), lang="en"
            )
            assert status == 403 and "another device" in refused["message"], refused

            # a link not redeemed yet (another party's) admits nobody: nothing to renew, even
            # with a device secret
            status, other = await api.call(
                "POST",
                f"/api/cases/{world['case']}/parties",
                world["officer"],
                {"role": "witness", "name": "Zhao Lei"},
            )
            assert status == 201, other
            status, second = await api.call(
                "POST",
                f"/api/cases/{world['case']}/invitations",
                world["officer"],
                {"party_id": other["id"]},
            )
            assert status == 201, second
            status, refused = await api.call(
                "POST", RENEW, second["token"], headers=_device(DEVICE)
            )
            assert status == 403 and refused["detail"] == "other_device", refused

            # readmitted (the same device opened the link again): the renewal follows the new
            # admission, the superseded one renews nothing
            status, again = await api.call(
                "POST", "/api/invitations/redeem", json={"token": link, "device": DEVICE}
            )
            assert status == 200 and again["readmitted"], again
            status, body = await api.call("POST", RENEW, link, headers=_device(DEVICE))
            assert status == 200, body
            assert signer.verify(body["token"]).grant_id == signer.verify(again["token"]).grant_id
            assert signer.verify(body["token"]).grant_id != old.grant_id
            # the older page says which token it holds: it gets nothing, so it cannot take the
            # call back with the newer page's admission (it is told it was superseded); the
            # newer page gets its fresh token; a forged token is refused
            status, refused = await api.call(
                "POST", RENEW, link, {"token": first["token"]}, headers=_device(DEVICE)
            )
            assert status == 409 and refused["error"] == "superseded", refused
            assert refused["message"].startswith("此链接已在本设备的另一个页面重新进入")
            status, renewed = await api.call(
                "POST", RENEW, link, {"token": again["token"]}, headers=_device(DEVICE)
            )
            assert status == 200, renewed
            assert (
                signer.verify(renewed["token"]).grant_id == signer.verify(again["token"]).grant_id
            )
            status, refused = await api.call(
                "POST", RENEW, link, {"token": again["token"][:-2] + "xx"}, headers=_device(DEVICE)
            )
            assert status == 400 and refused["error"] == "bad_token", refused

            # removed by the officer: no token any more
            session = world["session"]
            await srv.app[DB].run(
                lambda c: revoke_grants(c, session["id"], first["participant"], "removed")
            )
            status, refused = await api.call("POST", RENEW, link, headers=_device(DEVICE))
            assert status == 403 and refused["error"] == "removed", refused
            assert refused["message"].startswith("民警已将您移出本次会话")

            # every renewal is in the audit log, with the room
            rows = await srv.app[DB].run(
                lambda c: c.execute(
                    "SELECT actor, detail FROM audit WHERE action = 'invitation.call_token'"
                ).fetchall()
            )
            assert len(rows) == 3 and all(r["actor"] == f"party:{world['party_id']}" for r in rows)
    finally:
        await srv.runner.cleanup()
    assert leftovers(srv.app) == {}


async def test_no_token_once_the_session_ended(tmp_path: Path) -> None:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            world = await _inquiry(api, srv)
            status, body = await api.call(
                "POST",
                f"/api/cases/{world['case']}/sessions/{world['session']['id']}/end",
                world["officer"],
                {"reason": "done"},
            )
            assert status == 200, body
            status, refused = await api.call("POST", RENEW, world["link"], headers=_device(DEVICE))
            assert status == 410 and refused["error"] == "session_ended", refused
    finally:
        await srv.runner.cleanup()
    assert leftovers(srv.app) == {}


async def test_a_resume_after_the_first_token_expired_goes_on_with_a_fresh_one(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    """auth.token_ttl of 10 s: the party's first call token expires while its connection is
    lost; the page asks a fresh one with its link and device secret and resumes with it: the
    same participant, and the officer sees it reconnecting and resumed, never leaving."""
    ttl = 10
    srv = await start_server(
        make_config(
            tmp_path, auth={"dev_join": False, "token_ttl": ttl}, media={"resume_grace": 30.0}
        )
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            world = await _inquiry(api, srv)
            issued = time.time()
            first = world["redeemed"]
            watcher = PeerClient(srv.base_url, world["session"]["token"])
            clients.append(watcher)
            await watcher.connect()
            party = PeerClient(srv.base_url, first["token"])
            clients.append(party)
            await party.connect()
            pid = first["participant"]
            assert party.joined is not None and party.joined["type"] == "joined"
            resume_token = party.joined["resume_token"]
            await party.close()  # the network is gone
            await watcher.wait_for(
                lambda m: m["type"] == "participant_reconnecting" and m["participant"] == pid
            )
            await asyncio.sleep(max(0.0, issued + ttl + 1.5 - time.time()))
            # the first token is dead now, for the party's endpoints too
            status, refused = await api.call("GET", "/api/party", first["token"])
            assert status == 401 and refused["error"] == "token_expired", refused
            status, body = await api.call("POST", RENEW, world["link"], headers=_device(DEVICE))
            assert status == 200, body
            back = PeerClient(srv.base_url, body["token"])
            clients.append(back)
            await back.connect(join=False)
            await back.send(
                {"type": "resume", "resume_token": resume_token, "token": body["token"]}
            )
            resumed = await back.wait_for(lambda m: m["type"] in ("resumed", "error"))
            assert resumed["type"] == "resumed", resumed
            assert resumed["participant"]["id"] == pid
            await watcher.wait_for(
                lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == pid
            )
            seen = [m["type"] for m in watcher.messages if _about(m, pid)]
            assert "participant_left" not in seen and "participant_joined" not in seen[1:], seen
            status, view = await api.call("GET", "/api/party", body["token"])
            assert status == 200, view
    finally:
        for client in clients:
            await client.close()
        await srv.runner.cleanup()
    assert leftovers(srv.app) == {}


async def test_a_malformed_renewal_answers_400_never_500(tmp_path: Path) -> None:
    """Whatever the page sends as ``token`` (any JSON type, a string that is no token, one
    with non-ASCII parts), as the body, as the device's secret or as the link, the renewal
    answers in the usual error format with a 4xx and a code, never a 500; and the party can
    still renew afterwards."""
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            world = await _inquiry(api, srv)
            link, first = world["link"], world["redeemed"]
            body_part, signature = first["token"].split(".")[1:]
            for held in (
                123,
                1.5,
                True,
                [],
                [first["token"]],
                {"token": first["token"]},
                "",
                "x" * 3000,
                "v1.a.b",
                "v2." + body_part + "." + signature,
                "v1." + body_part + ".签名",  # a non-ASCII signature
                "v1." + body_part + "." + signature[:-1] + "\ud800",  # a lone surrogate
                "v1.令牌." + signature,
                "v1..",
            ):
                status, refused = await api.call(
                    "POST", RENEW, link, {"token": held}, headers=_device(DEVICE)
                )
                assert status == 400 and refused["error"] == "bad_token", (held, refused)
                assert refused["message"], refused
            # a body that is no JSON object
            for raw in (b"[1]", b'"token"', b"{", b"\xff\xfe", b"null"):
                status, refused = await api.call(
                    "POST",
                    RENEW,
                    link,
                    data=raw,
                    headers={**_device(DEVICE), "Content-Type": "application/json"},
                )
                assert status == 400 and refused["error"] == "bad_json", (raw, refused)
            # a device secret or a link that is no text the server ever gave
            for device in ("设备" * 20, "é" * 43, "x" * 5000):
                status, refused = await api.call("POST", RENEW, link, headers=_device(device))
                assert 400 <= status < 500 and refused["error"], (device, refused)
            for wrong in ("链接" * 20, "é" * 32, "x" * 5000):
                status, refused = await api.call("POST", RENEW, wrong, headers=_device(DEVICE))
                assert 400 <= status < 500 and refused["error"], (wrong, refused)
            # nothing of it broke the party's renewal
            status, body = await api.call(
                "POST", RENEW, link, {"token": first["token"]}, headers=_device(DEVICE)
            )
            assert status == 200, body
    finally:
        await srv.runner.cleanup()


async def _raw(base: str, method: str, path: str, headers: dict[str, bytes]) -> tuple[int, Any]:
    """A request whose header values are the given bytes (not UTF-8 ones too, which no HTTP
    client library here sends): (status, JSON body)."""
    import json

    import yarl

    url = yarl.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [
            f"{method} {path} HTTP/1.1".encode(),
            f"Host: {url.host}:{url.port}".encode(),
            b"Connection: close",
            b"Content-Length: 0",
            *(name.encode() + b": " + value for name, value in headers.items()),
        ]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:  # (not JSON: a 500's plain text)
        return status, {"error": None, "detail": None, "field": None, "text": body}


async def test_header_bytes_that_are_no_token_answer_4xx_never_500(tmp_path: Path) -> None:
    """A link, a login or a device secret in a header whose bytes are not ASCII (not even
    UTF-8: the server reads them as lone surrogates, which no hash takes) is refused in the
    usual error format, 401 bad_token or 400 bad_request, never a 500; the party still renews."""
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, srv.base_url)
            world = await _inquiry(api, srv)
            link = world["link"].encode()
            for value in (b"\xff" * 32, b"\xc3\x28" * 20, "链接".encode() * 10, b"\x80"):
                for path in (RENEW, "/api/cases"):
                    method = "POST" if path == RENEW else "GET"
                    status, body = await _raw(
                        srv.base_url,
                        method,
                        path,
                        {
                            "Authorization": b"Bearer " + value,
                            "X-Remotecase-Device": DEVICE.encode(),
                        },
                    )
                    assert (status, body["error"], body["detail"]) == (
                        401,
                        "unauthorized",
                        "bad_token",
                    ), (value, path, body)
                    assert body["message"].startswith("令牌无效"), body
                # the link's device secret (the renewal, and a party endpoint's own check)
                for method, path in (("POST", RENEW), ("GET", "/api/party/slots")):
                    status, body = await _raw(
                        srv.base_url,
                        method,
                        path,
                        {"Authorization": b"Bearer " + link, "X-Remotecase-Device": value},
                    )
                    assert (status, body["error"], body["field"]) == (
                        400,
                        "bad_request",
                        "X-Remotecase-Device",
                    ), (value, path, body)
                    assert "ASCII" in body["message"], body
            # a link redeemed (in the body) that is not ASCII: lone surrogates are valid JSON
            for token in ("\ud800" * 20, "链接" * 10):
                status, body = await api.call(
                    "POST", "/api/invitations/redeem", json={"token": token, "consent": CONSENT}
                )
                assert (status, body["error"], body["field"]) == (400, "bad_request", "token")
            # nothing of it broke the party's renewal
            status, body = await api.call("POST", RENEW, world["link"], headers=_device(DEVICE))
            assert status == 200, body
    finally:
        await srv.runner.cleanup()
