"""A case from booking to an ended, recorded session, through the HTTP API only.

The officer opens a case and a slot; the party books it with its link, uploads a photo before
the call, redeems the link and joins with a real aiortc client; the officer shows an evidence
video, which the party receives; the officer ends the session; the sealed recording holds the
party's video and the evidence track, and the custody log tells the whole story.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
from pathlib import Path

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CUSTODY
from control.sessions.display import PARTICIPANT
from tests import samples
from tests.conftest import (
    CONSENT,
    Api,
    make_config,
    officer_login,
    start_server,
    wait_until,
)


async def test_from_booking_to_an_ended_recorded_session(tmp_path: Path) -> None:
    server = await start_server(
        make_config(tmp_path, recording={"segment_seconds": 1.0}, verifier={"enabled": False})
    )
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            _, case = await api.call(
                "POST",
                "/api/cases",
                li,
                {"kind": "accident", "title": "G15 km 203, rear-end collision"},
            )
            cid = case["id"]
            _, party = await api.call(
                "POST",
                f"/api/cases/{cid}/parties",
                li,
                {"role": "driver", "name": "Wang Wei", "id_number": "110101199003071234"},
            )
            start = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
            _, slot = await api.call(
                "POST",
                "/api/slots",
                li,
                {
                    "starts_at": start.isoformat(),
                    "ends_at": (start + datetime.timedelta(minutes=30)).isoformat(),
                },
            )
            _, invite = await api.call(
                "POST",
                f"/api/cases/{cid}/invitations",
                li,
                {"party_id": party["id"], "valid_hours": 48},
            )
            link = invite["token"]

            # before the call, with the link: book the slot, upload the repair bill
            status, booked = await api.call(
                "POST", "/api/party/appointment", link, {"slot_id": slot["id"]}
            )
            assert status == 201 and booked["starts_at"] == slot["starts_at"]
            bill = await asyncio.to_thread(samples.jpeg)
            status, material = await api.call(
                "POST", "/api/party/materials?name=bill.jpg", link, data=bill
            )
            assert status == 201 and material["sha256"] == hashlib.sha256(bill).hexdigest()
            scene = await asyncio.to_thread(samples.webm_vp8, seconds=4)
            status, evidence = await api.call(
                "POST", f"/api/cases/{cid}/materials?name=scene.webm", li, data=scene
            )
            assert status == 201

            # the call
            status, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            assert status == 201
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            status, redeemed = await api.call(
                "POST", "/api/invitations/redeem", json={"token": link, "consent": CONSENT}
            )
            assert status == 200
            driver = PeerClient(server.base_url, redeemed["token"])
            clients.append(driver)
            await driver.connect()
            await driver.publish(PatternVideoTrack(), ToneAudioTrack())
            await wait_until(
                lambda: len(officer.mids_for_participant(redeemed["participant"])) == 2,
                what="the party's tracks at the officer",
            )

            status, shown = await api.call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/display",
                li,
                {"material_id": evidence["id"], "reason": "the scene as filmed"},
            )
            assert status == 201 and shown["mode"] == "stream_copy"

            def evidence_frames() -> int:
                mids = driver.mids_for_participant(PARTICIPANT, "video")
                return driver.frame_counts[mids[0]] if mids else 0

            await wait_until(
                lambda: evidence_frames() >= 15, timeout=20, what="the evidence video at the party"
            )
            status, ended = await api.call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/end",
                li,
                {"reason": "inquiry complete"},
            )
            assert status == 200 and ended["recording_sealed"]
            recording_id = ended["recording_sealed"]

            # the sealed recording: the party's audio and video and the evidence track
            status, manifest = await api.call(
                "GET", f"/api/recordings/{recording_id}/manifest?reason=review", li
            )
            assert status == 200 and manifest["case"] == str(cid)
            by_owner = {(t["participant"], t["kind"]) for t in manifest["tracks"]}
            assert {
                (redeemed["participant"], "video"),
                (redeemed["participant"], "audio"),
                (PARTICIPANT, "video"),
            } <= by_owner, by_owner
            status, verified = await api.call(
                "GET", f"/api/recordings/{recording_id}/verify?reason=review", li
            )
            assert status == 200 and verified["ok"], verified

            _, full = await api.call("GET", f"/api/cases/{cid}", li)
            assert full["appointments"][0]["status"] == "booked"
            assert {m["id"] for m in full["materials"]} == {material["id"], evidence["id"]}
            assert full["sessions"][0]["ended_at"]

            # the case closes: the used link still shows the party its case, changes nothing
            assert (
                await api.call("POST", f"/api/cases/{cid}/close", li, {"reason": "penalty paid"})
            )[0] == 200
            status, me = await api.call("GET", "/api/party", link)
            assert status == 200 and me["case"]["status"] == "closed"
            status, body = await api.call(
                "POST", "/api/party/materials?name=late.jpg", link, data=bill
            )
            assert (status, body["error"]) == (409, "case_closed")
            status, body = await api.call(
                "POST", "/api/party/appointment", link, {"slot_id": slot["id"]}
            )
            assert (status, body["error"]) == (409, "case_closed")
        types = [e["type"] for e in server.app[CUSTODY].entries()]
        for expected in (
            "material.received",
            "recording.started",
            "evidence.display_started",
            "evidence.display_ended",
            "recording.stopped",
            "recording.sealed",
        ):
            assert expected in types, expected
        assert (
            types.index("material.received")
            < types.index("recording.started")
            < types.index("evidence.display_started")
            < types.index("recording.sealed")
        )
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
