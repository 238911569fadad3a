"""Evidence display: an officer shows a case's video, photo or PDF page to the call.

The party is a real aiortc client in the call; what it decodes is compared with the file: a
VP8 video is forwarded as its own packets (the party's decoded frames equal the file's decoded
frames bit for bit), an MPEG-4 video is transcoded once, a photo is a still.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from bench.peer import PatternVideoTrack, PeerClient
from control.appkeys import CUSTODY, DISPLAYS, SFU
from control.sessions.display import PARTICIPANT
from tests import samples
from tests.conftest import CONSENT, Api, make_config, officer_login, start_server, wait_until


def _received(client: PeerClient, minimum: int) -> list[np.ndarray]:
    mids = client.mids_for_participant(PARTICIPANT, "video")
    assert len(mids) == 1, client.tracks
    assert client.frame_counts[mids[0]] >= minimum
    return [f.to_ndarray(format="yuv420p") for f in client.frames[mids[0]]]


def _sound_after(client: PeerClient, minimum: int) -> Any:
    """The evidence's sound track is offered and decodes."""

    def ready() -> bool:
        mids = client.mids_for_participant(PARTICIPANT, "audio")
        return len(mids) == 1 and client.frame_counts[mids[0]] >= minimum

    return ready


def _frames_after(client: PeerClient, minimum: int) -> Any:
    def ready() -> bool:
        mids = client.mids_for_participant(PARTICIPANT, "video")
        return len(mids) == 1 and client.frame_counts[mids[0]] >= minimum

    return ready


async def test_officer_shows_video_photo_and_pdf_to_the_party(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    custody = server.app[CUSTODY]
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "accident", "title": "G15 km 203"}
            )
            cid = case["id"]
            _, party = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "Wang Wei"}
            )
            # encoding the samples is the test's own heavy work: off the event loop
            webm, mp4, jpeg, pdf = await asyncio.gather(
                asyncio.to_thread(samples.webm_vp8, seconds=6, audio="libopus"),
                asyncio.to_thread(samples.mp4_mpeg4, seconds=6, audio="aac"),
                asyncio.to_thread(samples.jpeg),
                asyncio.to_thread(samples.pdf),
            )
            items = {}
            for name, data in (
                ("scene.webm", webm),
                ("dashcam.mp4", mp4),
                ("photo.jpg", jpeg),
                ("report.pdf", pdf),
            ):
                status, item = await api.call(
                    "POST", f"/api/cases/{cid}/materials?name={name}", li, data=data
                )
                assert status == 201, item
                items[name] = item["id"]

            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            base = f"/api/cases/{cid}/sessions/{session['id']}/display"
            status, body = await api.call(
                "POST", base, li, {"material_id": items["scene.webm"], "reason": "show the scene"}
            )
            assert (status, body["error"]) == (409, "empty")  # nobody to show it to yet

            _, invite = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
            )
            _, redeemed = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invite["token"], "consent": CONSENT},
            )
            viewer = PeerClient(server.base_url, redeemed["token"])
            clients.append(viewer)
            await viewer.connect()
            await viewer.publish(PatternVideoTrack())
            party_pid = redeemed["participant"]

            # wrong input, other brigade, and a party's token are refused
            for body_in, code in (
                ({"material_id": "MAT_nope", "reason": "x"}, 404),
                ({"material_id": items["scene.webm"]}, 400),
                ({"material_id": items["report.pdf"], "page": 9, "reason": "x"}, 422),
            ):
                assert (await api.call("POST", base, li, body_in))[0] == code, body_in
            assert (
                await api.call(
                    "POST", base, wu, {"material_id": items["scene.webm"], "reason": "x"}
                )
            )[0] == 404
            assert (
                await api.call(
                    "POST",
                    base,
                    redeemed["token"],
                    {"material_id": items["scene.webm"], "reason": "x"},
                )
            )[0] == 401

            # a VP8 video goes out as its own packets: frames decode bit-identical to the file
            status, shown = await api.call(
                "POST",
                base,
                li,
                {"material_id": items["scene.webm"], "reason": "the scene as filmed"},
            )
            assert status == 201 and shown["mode"] == "stream_copy", shown
            assert shown["audio"] == "stream_copy"  # the file's own Opus packets
            await wait_until(_frames_after(viewer, 20), timeout=20, what="evidence frames")
            await wait_until(_sound_after(viewer, 25), timeout=20, what="evidence sound")
            file_frames = await asyncio.to_thread(samples.decoded_frames, webm)
            for frame in _received(viewer, 20):
                assert any(np.array_equal(frame, f) for f in file_frames)
            assert server.app[DISPLAYS].displays[session["room"]].display_id == shown["display"]

            # an MPEG-4 video is transcoded once for the room; it replaces the first item
            status, shown2 = await api.call(
                "POST", base, li, {"material_id": items["dashcam.mp4"], "reason": "the dash camera"}
            )
            assert status == 201 and shown2["mode"] == "transcoded", shown2
            assert shown2["audio"] == "transcoded"  # AAC, encoded once to Opus
            await viewer.wait_for(
                lambda m: (
                    m["type"] == "tracks"
                    and any(t["id"] == shown2["track"] for t in m["tracks"].values())
                )
            )
            await wait_until(_frames_after(viewer, 15), timeout=20, what="transcoded frames")
            await wait_until(
                lambda: any(t["id"] == f"{shown2['track']}-audio" for t in viewer.tracks.values()),
                what="the transcoded sound track offered",
            )
            (sound_mid,) = viewer.mids_for_participant(PARTICIPANT, "audio")
            before = viewer.frame_counts[sound_mid]  # a reused slot keeps counting
            await wait_until(
                lambda: viewer.frame_counts[sound_mid] >= before + 25,
                timeout=20,
                what="transcoded sound decoded",
            )
            file_frames = await asyncio.to_thread(samples.decoded_frames, mp4)
            for frame in _received(viewer, 15)[-3:]:
                # lossy, but recognisably the same pictures
                best = min(np.abs(frame.astype(int) - f.astype(int)).mean() for f in file_frames)
                assert best < 6, best

            # a photo is a still; stopping takes it off and logs who saw it
            status, shown3 = await api.call(
                "POST", base, li, {"material_id": items["photo.jpg"], "reason": "damage to the car"}
            )
            assert status == 201 and shown3["mode"] == "still"
            await viewer.wait_for(
                lambda m: (
                    m["type"] == "tracks"
                    and any(t["id"] == shown3["track"] for t in m["tracks"].values())
                )
            )
            await wait_until(_frames_after(viewer, 2), timeout=20, what="the photo")
            status, stopped = await api.call("POST", base + "/stop", li, {"reason": "done"})
            assert status == 200 and party_pid in stopped["viewers"]
            assert (await api.call("POST", base + "/stop", li, {"reason": "again"}))[0] == 409

            # a PDF page, then the session ends while it is on screen
            status, shown4 = await api.call(
                "POST",
                base,
                li,
                {"material_id": items["report.pdf"], "page": 2, "reason": "the report"},
            )
            assert status == 201 and shown4["mode"] == "still"
            await api.call(
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/end",
                li,
                {"reason": "inquiry complete"},
            )
            await wait_until(lambda: not server.app[DISPLAYS].displays, what="display end")
            await wait_until(
                lambda: (
                    server.app[SFU].dump()
                    == {
                        "rooms": 0,
                        "participants": 0,
                        "up_tracks": 0,
                        "down_tracks": 0,
                        "local_subscribers": 0,
                        "tasks": 0,
                    }
                ),
                what="everything closed",
            )

            entries = [e for e in custody.entries() if e["type"].startswith("evidence.")]
            started = [e for e in entries if e["type"] == "evidence.display_started"]
            ended = [e for e in entries if e["type"] == "evidence.display_ended"]
            assert [e["mode"] for e in started] == ["stream_copy", "transcoded", "still", "still"]
            assert [e["ended"] for e in ended] == ["replaced", "replaced", "stopped", "room_closed"]
            assert all(party_pid in e["viewers"] for e in started + ended)
            assert started[0]["sha256"] and started[0]["actor"] == "officer:li"
            assert started[3]["page"] == 2
            assert ended[0]["frames_sent"] >= 20
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
