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

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_browser_party import (
    PATIENCE,
    PHONE,
    Shots,
    chromium,
    invite,
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
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    from tests.test_browser import face_image, write_y4m

    y4m = tmp_path / "face.y4m"
    write_y4m(y4m, face_image())
    return y4m


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
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name="张三")
        status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
        assert status == 201, session
        link = await invite(api, officer, case, party)
    pid = f"party-{party}"
    officer_client = PeerClient(server.base_url, session["token"], decode=False)
    clients.append(officer_client)
    await officer_client.connect()
    await officer_client.publish(PatternVideoTrack(), ToneAudioTrack())

    async with chromium(camera) as browser:
        context, tab_a, problems = await new_page(browser, "zh-CN", PHONE)
        await tab_a.goto(server.base_url + link)
        await phase(tab_a, "consent")
        await tab_a.tap("#consent-recording")
        await tab_a.tap("#consent-form button[type=submit]")
        await phase(tab_a, "in_call")
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
        await wait_until(
            lambda: officer_client.received_packets[mid] > at + 20,
            timeout=PATIENCE,
            what="the party's video packets from tab A",
        )
        assert not officer_client.closed_reason
        await until(tab_a, "Object.keys(window.remotecase.tiles).length === 2")
        assert not await tab_a.evaluate("document.getElementById('upload-form').hidden")
        await shots.take(tab_a, "taken-back")
        await no_overflow(tab_a, "back in the call")
        await context.close()
        assert problems == [], problems
