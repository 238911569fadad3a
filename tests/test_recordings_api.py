"""The recordings API: roles, reasons, and every access in the custody log."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
from pathlib import Path

import aiohttp
import av

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CUSTODY, RECORDER
from recorder.labels import find_label_font
from tests.conftest import (
    Api,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)


async def test_recording_lifecycle_through_the_api(tmp_path: Path) -> None:
    # the composite's labels in the configured font (here Debian's Chinese one, by another name)
    found = find_label_font()
    font = tmp_path / "configured-label-font.ttc"
    if found is not None:
        font.symlink_to(found[0])
    recording = {"segment_seconds": 1.0, **({"label_font": str(font)} if found else {})}
    server = await start_server(make_config(tmp_path, recording=recording))
    clients: list = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")
            cid, pid = await case_with_party(api, li)
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            redeemed = await party_link(api, li, cid, pid)
            driver = PeerClient(server.base_url, redeemed["token"])
            clients.append(driver)
            await driver.connect()
            await driver.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
            room_id = session["room"]
            await wait_until(lambda: len(server.sfu.rooms[room_id].up_tracks()) == 2, what="tracks")
            # the session's room records by itself from its first participant
            await wait_until(lambda: room_id in server.app[RECORDER].active, what="recording")
            auto = server.app[RECORDER].active[room_id].recording_id
            officer = {"Authorization": f"Bearer {li}"}
            party = {"Authorization": f"Bearer {redeemed['token']}"}
            stranger = {"Authorization": f"Bearer {wu}"}
            supervisor = {"Authorization": f"Bearer {zhao}"}
            base = server.base_url
            url = f"{base}/api/cases/{cid}/sessions/{session['id']}/recording"
            async with http.post(url, json={"action": "stop", "reason": "x"}) as r:
                assert r.status == 401
            async with http.post(url, json={"action": "stop", "reason": "x"}, headers=party) as r:
                assert r.status == 401 and (await r.json())["error"] == "unauthorized"
            async with http.post(
                url, json={"action": "stop", "reason": "x"}, headers=stranger
            ) as r:
                assert r.status == 404
            async with http.post(url, json={"action": "stop"}, headers=officer) as r:
                assert r.status == 400 and (await r.json())["error"] == "reason_required"
            async with http.post(url, data=b"{oops", headers=officer) as r:
                assert r.status == 400 and (await r.json())["error"] == "bad_json"
            async with http.post(
                url, json={"action": "start", "reason": "again"}, headers=officer
            ) as r:
                assert r.status == 409
            async with http.post(
                url, json={"action": "stop", "reason": "a break"}, headers=officer
            ) as r:
                assert r.status == 200 and (await r.json())["recording_id"] == auto
            async with http.post(
                url, json={"action": "start", "reason": "remote inquiry"}, headers=officer
            ) as r:
                assert r.status == 200, await r.text()
                recording_id = (await r.json())["recording_id"]
            await asyncio.sleep(2.5)
            async with http.post(
                url, json={"action": "stop", "reason": "inquiry over"}, headers=officer
            ) as r:
                assert r.status == 200 and (await r.json())["status"] == "complete"

            rec = f"{base}/api/recordings/{recording_id}"
            async with http.get(f"{base}/api/recordings", headers=stranger) as r:
                assert (await r.json())["recordings"] == []
            async with http.get(f"{base}/api/recordings", headers=officer) as r:
                assert sorted(x["recording_id"] for x in (await r.json())["recordings"]) == sorted(
                    [auto, recording_id]
                )
            async with http.get(f"{rec}/manifest", headers=officer) as r:
                assert r.status == 400  # no reason
            async with http.get(
                f"{rec}/manifest", params={"reason": "peek"}, headers=stranger
            ) as r:
                assert r.status == 404
            async with http.get(
                f"{rec}/manifest", params={"reason": "writing the record"}, headers=officer
            ) as r:
                assert r.status == 200 and (await r.json())["case"] == str(cid)
            async with http.get(
                f"{rec}/verify", params={"reason": "review"}, headers=supervisor
            ) as r:
                result = await r.json()
                assert result["ok"], result
                # each check in Chinese too, for the console's Chinese page
                seal = next(f for f in result["findings"] if f["check"] == "seal")
                assert seal["check_zh"] == "封存" and seal["detail_zh"].startswith("日志条目")
            async with http.post(
                f"{rec}/export", json={"reason": "court request"}, headers=supervisor
            ) as r:
                assert r.status == 200, await r.text()
                exported = await r.json()
            assert "composite.mp4" in exported["files"]
            path = f"{rec}/exports/{exported['export']}/REPORT.txt"
            async with http.get(path, params={"reason": "hand to court"}, headers=supervisor) as r:
                assert r.status == 200 and "remotecase export" in await r.text()
            path = f"{rec}/exports/{exported['export']}/package.json"
            async with http.get(path, params={"reason": "hand to court"}, headers=supervisor) as r:
                composite = json.loads(await r.read())["composite"]
                assert composite["label_font"] == (font.name if found else None), composite
            async with http.get(
                f"{rec}/exports/{exported['export']}/..%2F..%2Frecording.json",
                params={"reason": "x"},
                headers=supervisor,
            ) as r:
                assert r.status == 404
            async with http.get(
                f"{base}/api/recordings/REC_1_ab/manifest",
                params={"reason": "x"},
                headers=supervisor,
            ) as r:
                assert r.status == 404
            # play a track: the recorded bytes, decodable
            async with http.get(
                f"{rec}/manifest", params={"reason": "which tracks"}, headers=officer
            ) as r:
                manifest = await r.json()
            video = next(t for t in manifest["tracks"] if t["kind"] == "video")
            async with http.get(
                f"{rec}/tracks/{video['track_id']}/media",
                params={"reason": "review the inquiry"},
                headers=officer,
            ) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "video/webm"
                media = await r.read()
            assert len(media) == sum(seg["bytes"] for seg in video["segments"])
            with av.open(io.BytesIO(media), mode="r") as container:
                assert sum(1 for _ in container.decode(video=0)) == video["frames"]

            # retention: only a supervisor changes it; media goes only once it has passed
            async with http.delete(rec, params={"reason": "tidy"}, headers=supervisor) as r:
                body = await r.json()
                assert r.status == 409 and body["detail"] == "retention", body
                assert body["message"].startswith("录像") and "retained until" in body["cause"]
            retention = f"{rec}/retention"
            async with http.post(
                retention, json={"retain_until": "2020-01-01", "reason": "x"}, headers=officer
            ) as r:
                assert r.status == 403
            async with http.post(
                retention, json={"retain_until": "soon", "reason": "x"}, headers=supervisor
            ) as r:
                assert r.status == 400
            yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
            async with http.post(
                retention,
                json={"retain_until": yesterday, "reason": "case closed, no appeal"},
                headers=supervisor,
            ) as r:
                assert r.status == 200, await r.text()
            async with http.delete(rec, params={"reason": "retention ended"}, headers=officer) as r:
                assert r.status == 403
            async with http.delete(
                rec, params={"reason": "retention ended"}, headers=supervisor
            ) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["segments_removed"] >= 4
            async with http.get(
                f"{rec}/tracks/{video['track_id']}/media",
                params={"reason": "again"},
                headers=officer,
            ) as r:
                assert r.status == 409
            async with http.get(
                f"{rec}/verify", params={"reason": "after deletion"}, headers=supervisor
            ) as r:
                result = await r.json()
                assert result["ok"], result
                assert any("deleted under retention" in f["detail"] for f in result["findings"])
            async with http.get(
                f"{rec}/access-log", params={"reason": "audit"}, headers=supervisor
            ) as r:
                entries = (await r.json())["entries"]
        events = [(e["type"], e["actor"], e["reason"]) for e in entries]
        assert events[0] == ("recording.started", "officer:li", "remote inquiry")
        assert ("recording.stopped", "officer:li", "inquiry over") in events
        assert ("recording.viewed", "officer:li", "writing the record") in events
        assert ("recording.verified", "supervisor:zhao", "review") in events
        assert ("recording.exported", "supervisor:zhao", "court request") in events
        assert ("recording.downloaded", "supervisor:zhao", "hand to court") in events
        assert ("recording.streamed", "officer:li", "review the inquiry") in events
        assert (
            "recording.retention_changed",
            "supervisor:zhao",
            "case closed, no appeal",
        ) in events
        assert ("recording.deleted", "supervisor:zhao", "retention ended") in events
        # and the access-log view itself is on the record
        last = server.app[CUSTODY].entries()[-1]
        assert (last["type"], last["what"], last["reason"]) == (
            "recording.viewed",
            "access log",
            "audit",
        )
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
