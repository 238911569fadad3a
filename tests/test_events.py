"""The officer's event stream: authentication, case filtering, and what a session reports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient
from tests.conftest import CONSENT, Api, make_config, officer_login, start_server


async def _next(
    ws: aiohttp.ClientWebSocketResponse, event_type: str, **match: Any
) -> dict[str, Any]:
    """The next event of this type (and these fields), skipping others."""
    async with asyncio.timeout(15):
        while True:
            event: dict[str, Any] = await ws.receive_json()
            if event["type"] == event_type and all(event.get(k) == v for k, v in match.items()):
                return event


async def test_event_stream_reports_the_session_to_officers_who_may_see_it(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            wu = await officer_login(server, api, "wu", "brigade-2")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")
            url = server.base_url.replace("http", "ws") + "/api/events"

            # no or a wrong login: an error, then the socket closes with 4001
            for first in ({"type": "auth", "token": "nope"}, {"type": "hello"}):
                async with http.ws_connect(url) as ws:
                    await ws.send_json(first)
                    assert (await ws.receive_json())["error"] == "unauthorized"
                    assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
                    assert ws.close_code == 4001
            # the error's words: Chinese by default, the upgrade request's language if asked
            for headers, words in (({}, "请先发送"), ({"Accept-Language": "en"}, "first send")):
                async with http.ws_connect(url, headers=headers) as ws:
                    await ws.send_json({"type": "hello"})
                    error = await ws.receive_json()
                    assert error["error"] == "unauthorized" and error["message"].startswith(words)

            streams = {}
            for name, token in (("li", li), ("wu", wu), ("zhao", zhao)):
                ws = await http.ws_connect(url)
                await ws.send_json({"type": "auth", "token": token})
                assert (await ws.receive_json())["type"] == "ready"
                streams[name] = ws

            _, case = await api.call(
                "POST", "/api/cases", li, {"kind": "violation", "title": "red light"}
            )
            cid = case["id"]
            await streams["wu"].send_json({"type": "subscribe", "case": cid})
            error = await streams["wu"].receive_json()
            assert error["error"] == "not_found" and error["message"].startswith("没有该案件")
            await streams["li"].send_json({"type": "subscribe", "case": cid})
            assert (await streams["li"].receive_json()) == {"type": "subscribed", "case": cid}
            await streams["li"].send_json({"type": "dance"})
            assert (await streams["li"].receive_json())["error"] == "bad_request"

            _, party = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "Wang Wei"}
            )
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            for name in ("li", "zhao"):
                event = await _next(streams[name], "session", state="opened")
                assert event["case"] == cid and event["room"] == session["room"]

            _, invite = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
            )
            _, redeemed = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": invite["token"], "consent": CONSENT},
            )
            client = PeerClient(server.base_url, redeemed["token"], decode=False)
            clients.append(client)
            await client.connect()
            await client.publish(PatternVideoTrack())
            joined = await _next(streams["li"], "participant_joined")
            assert (joined["participant"], joined["role"]) == (redeemed["participant"], "party")

            # the session's room is recorded from its first participant
            recording = await _next(streams["li"], "recording", state="recording")

            await api.call(
                "POST", f"/api/cases/{cid}/sessions/{session['id']}/end", li, {"reason": "done"}
            )
            sealed = await _next(streams["li"], "recording", state="sealed")
            assert sealed["recording"] == recording["recording"]
            left = await _next(streams["li"], "participant_left")
            assert left["reason"] == "room_closed"
            ended = await _next(streams["zhao"], "session", state="ended")
            assert ended["recording"] == recording["recording"]

            # the other brigade heard nothing of it
            await streams["wu"].send_json({"type": "subscribe", "case": None})
            assert (await streams["wu"].receive_json()) == {"type": "subscribed", "case": None}
            for ws in streams.values():
                await ws.close()
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()
