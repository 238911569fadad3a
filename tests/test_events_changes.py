"""The officers' event stream carries changes, not repeats: the verifier reports its state with
every sample, and the stream passes on only a state (or reason) that differs from the last one
for that participant (control/events.py, CHANGES_ONLY)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from control.appkeys import EVENTS
from tests.conftest import Api, make_config, officer_login, start_server


async def _until(ws: aiohttp.ClientWebSocketResponse, event_type: str) -> list[dict[str, Any]]:
    """Every event up to and including the next one of ``event_type``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        while True:
            event: dict[str, Any] = await ws.receive_json()
            seen.append(event)
            if event["type"] == event_type:
                return seen


async def test_verification_repeats_are_dropped_at_the_source(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            _, case = await api.call("POST", "/api/cases", li, {"kind": "accident", "title": "t"})
            _, session = await api.call("POST", f"/api/cases/{case['id']}/sessions", li)
            room = session["room"]
            ws = await http.ws_connect(server.base_url.replace("http", "ws") + "/api/events")
            await ws.send_json({"type": "auth", "token": li})
            assert (await ws.receive_json())["type"] == "ready"
            await ws.send_json({"type": "subscribe", "case": case["id"]})
            assert (await ws.receive_json())["type"] == "subscribed"

            hub = server.app[EVENTS]
            # what the verifier's listener sends, sample after sample (scores move every time)
            samples = [
                ("party-1", "verifying", None, 0.41),
                ("party-1", "verifying", None, 0.52),
                ("party-1", "verified", None, 0.81),
                ("party-1", "verified", None, 0.83),
                ("party-1", "verified", None, 0.79),
                ("party-2", "verified", None, 0.9),  # another party: its own history
                ("party-1", "alert", "mismatch", 0.2),
                ("party-1", "alert", "mismatch", 0.1),
                ("party-1", "alert", "no_face", None),  # same state, new reason: a change
                ("party-1", "verified", None, 0.8),
            ]
            for participant, state, reason, score in samples:
                hub.on_room_event(
                    room,
                    "verification",
                    participant=participant,
                    state=state,
                    reason=reason,
                    score=score,
                )
            # a party who leaves and comes back starts afresh; the room closing forgets all
            hub.on_room_event(room, "participant_left", participant="party-1", reason="left")
            hub.on_room_event(room, "verification", participant="party-1", state="verified")
            hub.on_room_event(room, "verification", participant="party-1", state="verified")
            hub.on_room_event(room, "room_closed", reason="ended")
            hub.on_room_event(room, "verification", participant="party-2", state="verified")
            hub.on_room_event(room, "recording", state="sealed", recording="REC_x")

            events = await _until(ws, "recording")
            got = [
                (e["type"], e.get("participant"), e.get("state"), e.get("reason")) for e in events
            ]
            assert got == [
                ("verification", "party-1", "verifying", None),
                ("verification", "party-1", "verified", None),
                ("verification", "party-2", "verified", None),
                ("verification", "party-1", "alert", "mismatch"),
                ("verification", "party-1", "alert", "no_face"),
                ("verification", "party-1", "verified", None),
                ("participant_left", "party-1", None, "left"),
                ("verification", "party-1", "verified", None),
                ("room_closed", None, None, "ended"),
                ("verification", "party-2", "verified", None),
                ("recording", None, "sealed", None),
            ]
            # the first of each run keeps its own fields (the score the officer sees)
            assert events[1]["score"] == 0.81
            assert hub.repeats_dropped == 5
            # nothing remembered for a room that closed
            assert all(key[0] != room or key[2] == "party-2" for key in hub._last)
            await ws.close()
    finally:
        await server.runner.cleanup()
