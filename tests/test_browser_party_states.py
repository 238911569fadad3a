"""The party page's superseded grant in Debian's Chromium: two tabs of one phone, one link.

A real server (``auth.dev_join`` off), the officer as a real aiortc client, the party as two
pages of one browser context (one device: the same ``localStorage``, the same device secret).
Tab A is in the call when its connection drops (its later WebSockets are held back by
Playwright's WebSocket routing, as a phone out of coverage); meanwhile the party opens the link
again in tab B, which is readmitted (the server marks A's grant superseded) and joins. When A's
connection comes back its resume and its join are refused (4003 ``superseded``): A says the link
was opened again in another page of this device and offers to take the call here; tapping it
redeems the link again with the device secret, A is back in the call (the officer receives its
video) and B is the one replaced. Each state is screenshot at 390x844, none overflows 360 px, and
no CSP violation or page error happens; the superseded state is read in English too. With the
one fake camera of this browser, the camera switch is not offered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.peer import PeerClient
from tests.browser_party import case_call, enter_by_link, face_camera, more_packets, video_flowing
from tests.conftest import (
    Server,
    make_config,
    start_server,
    wait_until,
)
from tests.test_browser_party import (
    PATIENCE,
    PHONE,
    Shots,
    chromium,
    new_page,
    no_overflow,
    phase,
    texts,
    until,
)

pytestmark = pytest.mark.browser

ZH = {
    "superseded": ("已在另一个页面重新进入", "此链接已在本设备的另一个页面重新进入"),
    "replaced": ("已在其他页面打开", "此链接已在本设备的另一个页面中进入通话。"),
}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # resume on, as the product has it (conftest turns it off for other tests)
    config = make_config(tmp_path, auth={"dev_join": False}, media={"resume_grace": 20.0})
    srv = await start_server(config)
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def camera(tmp_path: Path) -> Path:
    return await face_camera(tmp_path)


async def action(page: Any) -> tuple[bool, str]:
    shown: list[Any] = await page.evaluate(
        "() => { const b = document.getElementById('state-action');"
        " return [!b.hidden, b.textContent]; }"
    )
    return bool(shown[0]), str(shown[1])


async def test_a_superseded_tab_says_so_and_takes_the_call_back(
    server: Server, camera: Path, tmp_path: Path, clients: list[PeerClient]
) -> None:
    shots = Shots(tmp_path, "phone-zh")
    call = await case_call(server, clients)
    pid, officer_client, link = call.pid, call.officer_client, call.link

    async with chromium(camera) as browser:
        context, tab_a, problems = await new_page(browser, "zh-CN", PHONE)
        await enter_by_link(tab_a, server.base_url + link)
        # one camera: no switch offered, no camera named
        assert await tab_a.evaluate("document.getElementById('switch-camera').hidden")
        assert await tab_a.evaluate("document.getElementById('camera-name').hidden")

        # tab A's connection drops, and its attempts to come back fail for now
        released = False

        async def hold(ws: Any) -> None:
            if released:
                ws.connect_to_server()  # forwarded both ways from now on
            else:
                await ws.close(code=1001, reason="out of coverage")

        await tab_a.route_web_socket("**/ws", hold)
        await tab_a.evaluate("window.remotecase.ws.close()")
        await phase(tab_a, "reconnecting")
        await shots.take(tab_a, "reconnecting")

        # meanwhile the party opens the link again in another tab of the same phone
        tab_b = await context.new_page()
        tab_b.on("pageerror", lambda exc: problems.append(f"tab B page error: {exc}"))
        await tab_b.goto(server.base_url + link)
        await phase(tab_b, "in_call")  # readmitted: no consents asked again
        assert "consent" not in await tab_b.evaluate("window.remotecase.phases")

        # tab A's network is back: its old grant is refused, and it says what to do
        released = True
        await phase(tab_a, "superseded")
        said = await texts(tab_a)
        assert (said["title"], said["text"]) == (
            ZH["superseded"][0],
            ZH["superseded"][1]
            + "，本页面已退出通话。如要在此页面继续，请点击下方按钮，另一个页面将退出通话。",
        )
        assert said["status"] == "在另一个页面"
        assert await action(tab_a) == (True, "在此页面通话")
        assert await tab_a.inner_text("#error") == ""  # the state says it, no error besides
        assert await tab_a.evaluate("document.getElementById('call').hidden")
        # its old token uploads nothing any more: no upload offered until the call is taken back
        assert await tab_a.evaluate("document.getElementById('upload-form').hidden")
        await shots.take(tab_a, "superseded")
        await no_overflow(tab_a, "the superseded state")
        # and in English, from the switch at the top
        await tab_a.tap("#lang-switch")
        await until(tab_a, "document.documentElement.lang === 'en'")
        said = await texts(tab_a)
        assert said["title"] == "Opened again in another page"
        assert said["text"].startswith("This link was opened again in another page on this device")
        assert await action(tab_a) == (True, "Take the call here")
        assert "尚未提交材料" not in said["body"]  # the page's own words all in English
        # the inquiry record's panel (sign.js) too: no record yet, said in English
        assert "（暂无）" not in said["body"] and "(none yet)" in said["body"]
        await shots.take(tab_a, "superseded-en")
        await no_overflow(tab_a, "the superseded state in English")
        await tab_a.tap("#lang-switch")
        await until(tab_a, "document.documentElement.lang === 'zh-CN'")
        await phase(tab_b, "in_call")  # the refused join did not disturb tab B

        # take the call here: redeemed again with the device secret; tab B is replaced
        await tab_a.tap("#state-action")
        await phase(tab_a, "in_call")
        await phase(tab_b, "replaced")
        said = await texts(tab_b)
        assert (said["title"], said["text"]) == ZH["replaced"]
        assert await action(tab_b) == (True, "在此页面继续")
        await shots.take(tab_b, "replaced")
        await no_overflow(tab_b, "the replaced state")

        # the officer receives the party's video again, from tab A's new connection
        await wait_until(
            lambda: officer_client.mids_for_participant(pid, "video") != [],
            timeout=PATIENCE,
            what="the party's video at the officer after taking the call back",
        )
        (mid,) = officer_client.mids_for_participant(pid, "video")
        at = officer_client.received_packets[mid]
        await more_packets(officer_client, mid, at, 20, "the party's video packets from tab A")
        assert not officer_client.closed_reason
        # the officer saw one participant throughout: away and back, never a leave and a join
        about = [
            m["type"]
            for m in officer_client.messages
            if m["type"].startswith("participant_")
            and pid
            == (m["participant"] if isinstance(m["participant"], str) else m["participant"]["id"])
        ]
        assert about.count("participant_joined") == 1 and "participant_left" not in about, about
        await until(tab_a, "Object.keys(window.remotecase.tiles).length === 2")
        assert not await tab_a.evaluate("document.getElementById('upload-form').hidden")
        await shots.take(tab_a, "taken-back")
        await no_overflow(tab_a, "back in the call")
        await context.close()
        assert problems == [], problems


@pytest.mark.parametrize("how", ["opened", "duplicated"])
async def test_the_link_opened_in_a_second_tab_moves_the_call_there(
    server: Server, camera: Path, tmp_path: Path, clients: list[PeerClient], how: str
) -> None:
    """The same link in a second tab of the same phone while the first is in the call:
    ``opened`` (a new tab: it has no kept call, so it redeems the link again with the device
    secret, a readmission, and joins) or ``duplicated`` (the browser's "duplicate tab", which
    copies sessionStorage: it resumes with the first tab's kept call). Tab B takes the
    participant over: tab A says another page has the call and offers to take it back, and stays
    so; no media flows twice (A's connections are closed, the SFU holds the party's two tracks,
    the officer one video on the same transceiver, fed by B); the officer sees the party away
    for a moment and back, never a leave and a join."""
    shots = Shots(tmp_path, f"second-tab-{how}")
    call = await case_call(server, clients)
    pid, officer_client = call.pid, call.officer_client
    url = server.base_url + call.link

    async with chromium(camera) as browser:
        context, tab_a, problems = await new_page(browser, "zh-CN", PHONE)
        await enter_by_link(tab_a, url)
        mid = await video_flowing(officer_client, pid)
        (room,) = [r for r in server.sfu.rooms.values() if pid in r.participants]
        participant = room.participants[pid]
        tracks = set(participant.up_tracks)
        assert len(tracks) == 2
        heard = len(officer_client.messages)

        tab_b = await context.new_page()
        tab_b.on("pageerror", lambda exc: problems.append(f"tab B page error: {exc}"))
        if how == "duplicated":
            # what a duplicated tab starts with: a copy of tab A's sessionStorage
            kept = await tab_a.evaluate("sessionStorage.getItem('remotecase.call')")
            assert kept, "tab A keeps its call"
            await tab_b.add_init_script(
                "if (!sessionStorage.getItem('remotecase.call'))"
                f" sessionStorage.setItem('remotecase.call', {json.dumps(kept)});"
            )
        await tab_b.goto(url)
        await phase(tab_b, "in_call")
        assert "consent" not in await tab_b.evaluate("window.remotecase.phases")
        await phase(tab_a, "replaced")
        said = await texts(tab_a)
        assert (said["title"], said["text"]) == ZH["replaced"]
        assert await action(tab_a) == (True, "在此页面继续")
        assert await tab_a.evaluate("document.getElementById('call').hidden")
        # tab A sends nothing any more: its peer connections are closed
        assert await tab_a.evaluate(
            "window.remotecase.pub === null && window.remotecase.sub === null"
        )

        # the officer: the same participant on the same transceiver, fed by tab B now
        await officer_client.wait_for(
            lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == pid,
            timeout=PATIENCE,
        )
        at = officer_client.received_packets[mid]
        await more_packets(officer_client, mid, at, 30, "the party's video from tab B")
        assert officer_client.mids_for_participant(pid, "video") == [mid]
        assert room.participants[pid] is participant and participant.resumes == 1
        assert set(participant.up_tracks) == tracks
        await until(
            tab_b, "window.remotecase.pub && window.remotecase.pub.connectionState === 'connected'"
        )
        seen = [
            (m["type"], m.get("reason"))
            for m in officer_client.messages[heard:]
            if m["type"].startswith("participant_")
        ]
        # a join in another page, or a resume on another socket (as after a change of network)
        reason = "duplicate" if how == "opened" else "signalling_lost"
        assert seen == [("participant_reconnecting", reason), ("participant_resumed", None)]

        # tab A does not take the call back by itself
        await asyncio.sleep(3.0)
        assert await tab_a.evaluate("document.body.dataset.state") == "replaced"
        assert participant.resumes == 1 and room.participants[pid] is participant
        await shots.take(tab_a, "first-tab-replaced")
        await no_overflow(tab_a, "the first tab, replaced")
        await shots.take(tab_b, "second-tab-in-call")
        await no_overflow(tab_b, "the second tab in the call")
        await context.close()
        assert problems == [], problems
