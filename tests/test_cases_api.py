"""Officers, cases, parties, sessions and single-use invitations, through the HTTP API."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient
from control.appkeys import DB
from control.auth import create_officer
from tests.conftest import (
    CONSENT,
    PASSWORD,
    Api,
    make_config,
    officer_login,
    start_server,
    wait_until,
)


async def test_case_flow_from_booking_to_a_party_in_the_call(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    db = server.app[DB]
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")

            status, case = await api.call(
                "POST", "/api/cases", li, {"kind": "accident", "title": "G15 km 203 rear-end"}
            )
            assert status == 201 and case["brigade"] == "brigade-1"
            cid = case["id"]
            status, body = await api.call("POST", "/api/cases", li, {"kind": "heist", "title": "x"})
            assert status == 400 and body["error"] == "bad_request"
            status, party = await api.call(
                "POST",
                f"/api/cases/{cid}/parties",
                li,
                {
                    "role": "driver",
                    "name": "Wang Wei",
                    "id_number": "110101199003071234",
                    "phone": "+86 138 0013 8000",
                },
            )
            assert status == 201
            assert party["id_number_masked"] == "*" * 14 + "1234"
            assert party["phone"] == "861****8000"

            # another brigade sees nothing; a supervisor sees everything
            assert (await api.call("GET", f"/api/cases/{cid}", wu))[0] == 404
            assert (
                await api.call(
                    "POST", f"/api/cases/{cid}/parties", wu, {"role": "driver", "name": "x"}
                )
            )[0] == 404
            assert [c["id"] for c in (await api.call("GET", "/api/cases", wu))[1]["cases"]] == []
            assert (await api.call("GET", f"/api/cases/{cid}", zhao))[0] == 200
            assert (await api.call("GET", "/api/cases"))[0] == 401

            # an invitation before any session is open cannot be used yet
            status, invite = await api.call(
                "POST",
                f"/api/cases/{cid}/invitations",
                li,
                {"party_id": party["id"], "valid_hours": 2},
            )
            assert status == 201 and invite["link"].startswith("/?invite=")
            status, body = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invite["token"], "consent": CONSENT},
            )
            assert (status, body["error"]) == (409, "no_session")

            status, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            assert status == 201 and session["room"].startswith(f"case-{cid}-")
            # without consent to recording nobody joins remotely; the token is not used up
            status, body = await api.call(
                "POST", "/api/invitations/redeem", json={"token": invite["token"]}
            )
            assert (status, body["error"]) == (400, "consent_required")
            assert (await api.call("POST", f"/api/cases/{cid}/sessions", li))[0] == 409

            # the officer joins with the session's token, the party with the redeemed one
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            assert officer.joined is not None
            assert officer.joined["participant"]["role"] == "officer"
            status, redeemed = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invite["token"], "consent": CONSENT},
            )
            assert status == 200 and redeemed["room"] == session["room"]
            party_client = PeerClient(server.base_url, redeemed["token"])
            clients.append(party_client)
            await party_client.connect()
            assert party_client.joined is not None
            assert party_client.joined["participant"]["id"] == f"party-{party['id']}"
            await party_client.publish(PatternVideoTrack())
            await wait_until(
                lambda: officer.mids_for_participant(f"party-{party['id']}") != [],
                what="the party's video at the officer",
            )

            # single use
            status, body = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invite["token"], "consent": CONSENT},
            )
            assert (status, body["error"]) == (410, "used")
            # revoked and expired ones are refused too
            status, second = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
            )
            assert (
                await api.call(
                    "POST",
                    f"/api/invitations/{second['id']}/revoke",
                    li,
                    {"reason": "sent to the wrong phone"},
                )
            )[0] == 200
            status, body = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": second["token"], "consent": CONSENT},
            )
            assert (status, body["error"]) == (410, "revoked")
            status, later = await api.call(
                "POST",
                f"/api/cases/{cid}/invitations",
                li,
                {"party_id": party["id"], "valid_from_seconds": 3600},
            )
            status, body = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": later["token"], "consent": CONSENT},
            )
            assert (status, body["error"]) == (409, "not_yet")
            await db.run(
                lambda c: c.execute(
                    "UPDATE invitations SET expires_at = 0 WHERE id = ?", (later["id"],)
                )
            )
            status, body = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": later["token"], "consent": CONSENT},
            )
            assert (status, body["error"]) == (410, "expired")
            status, body = await api.call(
                "POST", "/api/invitations/redeem", json={"token": "x" * 30, "consent": CONSENT}
            )
            assert (status, body["error"]) == (404, "unknown")

            # ending the session closes the room
            status, ended = await api.call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/end",
                li,
                {"reason": "inquiry complete"},
            )
            assert status == 200 and ended["ended"] == session["room"]
            bye = await party_client.wait_for(lambda m: m["type"] == "bye")
            assert bye["reason"] == "room_closed"

            status, audit = await api.call("GET", f"/api/cases/{cid}/audit", li)
            actions = [a["action"] for a in audit["audit"]]
            consent = next(a for a in audit["audit"] if a["action"] == "consent.given")
            assert '"face": true' in consent["detail"]
            for action in (
                "case.created",
                "party.added",
                "invitation.created",
                "session.opened",
                "invitation.redeemed",
                "invitation.revoked",
                "invitation.refused",
                "session.ended",
            ):
                assert action in actions, action
            ended_entry = next(a for a in audit["audit"] if a["action"] == "session.ended")
            assert (ended_entry["actor"], ended_entry["reason"]) == (
                "officer:li",
                "inquiry complete",
            )

            # logout revokes the login
            assert (await api.call("POST", "/api/logout", li))[0] == 200
            assert (await api.call("GET", "/api/cases", li))[0] == 401
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_login_failures_are_rate_limited(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    await server.app[DB].run(lambda c: create_officer(c, "li", PASSWORD, "officer", "b"))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            for _ in range(5):
                status, body = await api.call(
                    "POST", "/api/login", json={"username": "li", "password": "wrong!"}
                )
                assert (status, body["error"]) == (401, "bad_credentials")
            status, body = await api.call(
                "POST", "/api/login", json={"username": "li", "password": PASSWORD}
            )
            assert (status, body["error"]) == (429, "rate_limited")
            status, body = await api.call("POST", "/api/login", json=["not", "an", "object"])
            assert status == 400
    finally:
        await server.runner.cleanup()


async def test_cli_creates_officers(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
        "REMOTECASE_NEW_PASSWORD": PASSWORD,
    }
    for expected in (0, 1):  # the second time the name is taken
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "officer",
            "add",
            "--username",
            "li",
            "--brigade",
            "b",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate()
        assert proc.returncode == expected, err.decode()
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            assert await Api(http, server.base_url).login("li")
    finally:
        await server.runner.cleanup()


async def test_officer_mutes_removes_and_locks(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "violation", "title": "speeding"}
            )
            cid = case["id"]
            parties = [
                (
                    await api.call(
                        "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": n}
                    )
                )[1]
                for n in ("Zhang", "Chen")
            ]
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()

            async def invite(party: dict[str, Any]) -> PeerClient:
                _, inv = await api.call(
                    "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
                )
                _, redeemed = await api.call(
                    "POST",
                    "/api/invitations/redeem",
                    json={"token": inv["token"], "consent": CONSENT},
                )
                client = PeerClient(server.base_url, redeemed["token"])
                clients.append(client)
                return client

            zhang = await invite(parties[0])
            await zhang.connect()
            await zhang.publish(PatternVideoTrack())
            assert zhang.joined is not None
            pid = zhang.joined["participant"]["id"]
            base = f"/api/cases/{cid}/sessions/{session['id']}"

            status, _ = await api.call(
                "POST", f"{base}/mute", wu, {"participant": pid, "reason": "x"}
            )
            assert status == 404  # another brigade's case
            status, body = await api.call(
                "POST",
                f"{base}/mute",
                li,
                {"participant": pid, "reason": "background noise", "kinds": ["video"]},
            )
            assert status == 200, body
            muted = await officer.wait_for(lambda m: m["type"] == "track_muted")
            assert muted["participant"] == pid and muted["muted"] is True

            assert (await api.call("POST", f"{base}/lock", li, {"reason": "inquiry"}))[0] == 200
            chen = await invite(parties[1])
            await chen.connect(join=False)
            await chen.send({"type": "join", "token": chen.token})
            refused = await chen.wait_for(lambda m: m["type"] == "error")
            assert refused["code"] == "room_locked"
            assert (await api.call("POST", f"{base}/unlock", li, {"reason": "next"}))[0] == 200
            await chen.send({"type": "join", "token": chen.token})
            await chen.wait_for(lambda m: m["type"] == "joined")

            status, _ = await api.call(
                "POST", f"{base}/remove", li, {"participant": pid, "reason": "abusive"}
            )
            assert status == 200
            bye = await zhang.wait_for(lambda m: m["type"] == "bye")
            assert bye["reason"] == "removed"
            assert (
                await api.call(
                    "POST", f"{base}/remove", li, {"participant": pid, "reason": "again"}
                )
            )[0] == 404
            assert (await api.call("POST", f"{base}/dance", li, {"reason": "x"}))[0] == 404

            _, audit = await api.call("GET", f"/api/cases/{cid}/audit", li)
            actions = [(a["action"], a["reason"]) for a in audit["audit"]]
            for expected in (
                ("call.mute", "background noise"),
                ("call.lock", "inquiry"),
                ("call.unlock", "next"),
                ("call.remove", "abusive"),
            ):
                assert expected in actions
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
