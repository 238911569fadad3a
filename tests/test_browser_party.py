"""The party's page in Debian's Chromium, at phone size with touch and at desktop size.

A real server (``auth.dev_join`` off), an officer as a real aiortc client, the party as the
page in a browser context with the fake camera. Checked: a zh-CN browser gets the Chinese page
and an en one English; the party joins, is muted by the officer and sees it, reloads and is back
without a new link, while the same link in a second context (another device) is refused; a
removed party, an ended session and a closed case are each said; a denied camera is retried on
the same link; no state overflows 360 px. Each state's screenshot goes to the test's tmp dir and,
when ``REMOTECASE_SCREENSHOTS`` names a directory, there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import DB
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_browser import CHROMIUM, _wait_for, face_image, write_y4m

PATIENCE = 60.0  # seconds: a busy two-core machine, several browsers and servers on it

pytestmark = pytest.mark.browser

CHINA = datetime.timezone(datetime.timedelta(hours=8))
PHONE = {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True}
DESKTOP = {"viewport": {"width": 1280, "height": 800}}
# the entries that keep Chromium off the network (see tests/test_browser.py), plus mDNS off
DISABLED = ",".join(
    [
        "WebRtcHideLocalIpsWithMdns",
        "OptimizationHints",
        "NetworkTimeServiceQuerying",
        "AimEnabled",
        "PreconnectToSearch",
        "MediaRouter",
        "LensOverlay",
        "HttpsUpgrades",
        "PaintHolding",
    ]
)


@contextlib.asynccontextmanager
async def chromium(camera: Path, *, fake_ui: bool = True) -> AsyncIterator[Any]:
    """One Debian Chromium for several contexts (each a device of its own). Without
    ``fake_ui`` the camera is allowed only by ``context.grant_permissions``."""
    from playwright.async_api import async_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}",
        f"--disable-features={DISABLED}",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        yield browser
    finally:
        await browser.close()
        await playwright.stop()


class Shots:
    """Screenshots of each state, in the test's tmp dir and in $REMOTECASE_SCREENSHOTS."""

    def __init__(self, tmp_path: Path, prefix: str) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir(exist_ok=True)
        self.prefix = prefix
        self.extra = os.environ.get("REMOTECASE_SCREENSHOTS")

    @staticmethod
    def _copy(path: Path, into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, into / path.name)

    async def take(self, page: Any, name: str) -> Path:
        path = self.dir / f"{self.prefix}-{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        if self.extra:
            await asyncio.to_thread(self._copy, path, Path(self.extra))
        return path


async def new_page(browser: Any, locale: str, device: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    context = await browser.new_context(locale=locale, **device)
    problems: list[str] = []
    await context.expose_function("__cspViolation", lambda text: problems.append(text))
    await context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => window.__cspViolation("
        "`CSP ${e.violatedDirective} ${e.blockedURI}`));"
    )
    page = await context.new_page()
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    return context, page, problems


async def until(page: Any, expression: str, timeout: float = PATIENCE) -> None:  # noqa: ASYNC109
    await _wait_for(page, expression, timeout=timeout)


async def phase(page: Any, name: str, timeout: float = PATIENCE) -> None:  # noqa: ASYNC109
    try:
        await until(page, f"document.body.dataset.state === '{name}'", timeout)
    except AssertionError:
        now = await page.evaluate(
            "() => [document.body.dataset.state, document.getElementById('state-text')"
            ".textContent, document.getElementById('error').textContent]"
        )
        raise AssertionError(f"waited for state {name}; the page is at {now}") from None


async def no_overflow(page: Any, what: str) -> None:
    """Neither at the context's width nor at 360 px is the page wider than its window."""
    size = page.viewport_size
    for width in sorted({size["width"], 360}, reverse=True):
        await page.set_viewport_size({"width": width, "height": size["height"]})
        widths = await page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert widths[0] <= widths[1], f"{what} overflows at {width} px: {widths}"
    await page.set_viewport_size(size)


async def texts(page: Any) -> dict[str, str]:
    found: dict[str, str] = await page.evaluate(
        "() => ({lang: document.documentElement.lang,"
        " title: document.getElementById('state-title').textContent,"
        " text: document.getElementById('state-text').textContent,"
        " status: document.getElementById('status').textContent,"
        " banner: document.getElementById('officer-muted').textContent,"
        " body: document.body.innerText})"
    )
    return found


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


@pytest.fixture
async def api(server: Server) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, server.base_url)


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    y4m = tmp_path / "face.y4m"
    write_y4m(y4m, face_image())
    return y4m


async def invite(api: Api, officer: str, case: int, party: int) -> str:
    status, body = await api.call(
        "POST", f"/api/cases/{case}/invitations", officer, {"party_id": party}
    )
    assert status == 201, body
    link: str = body["link"]
    return link


async def test_party_on_a_phone_joins_is_muted_reloads_and_is_removed(
    server: Server, api: Api, camera: Path, tmp_path: Path, clients: list[PeerClient]
) -> None:
    shots = Shots(tmp_path, "phone-zh")
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
    base = f"/api/cases/{case}/sessions/{session['id']}"

    async with chromium(camera) as browser:
        context, page, problems = await new_page(browser, "zh-CN", PHONE)
        await page.goto(server.base_url + link)
        await phase(page, "consent")
        await until(page, "document.getElementById('preview').videoWidth > 0")
        shown = await texts(page)
        assert shown["lang"] == "zh-CN" and shown["title"] == "请确认并进入通话", shown
        assert await page.inner_text("#case-title") == "test case"
        assert await page.inner_text("#case-unit") == "brigade-1"
        assert await page.inner_text("#case-appointment") == "尚未预约"
        await shots.take(page, "consent")
        await no_overflow(page, "consent")

        await page.tap("#consent-recording")
        await page.tap("#consent-face")
        await page.tap("#consent-form button[type=submit]")
        await phase(page, "in_call")
        await wait_until(
            lambda: officer_client.mids_for_participant(pid, "video") != [],
            timeout=PATIENCE,
            what="the party's video at the officer",
        )
        # the officer's tile shows, labelled as the officer's
        await until(page, "document.querySelectorAll('#grid .tile').length >= 2")
        assert "民警" in await page.inner_text("#grid")
        assert (await texts(page))["status"] == "通话中"
        await shots.take(page, "in-call")
        await no_overflow(page, "in the call")

        # the party stops its own camera: its tile shows a placeholder, not the last frame
        await page.tap("#mute-video")
        await until(
            page,
            f"document.querySelector(\"[data-participant='{pid}']\").classList.contains('off')",
        )
        await page.tap("#mute-video")
        await until(
            page,
            f"!document.querySelector(\"[data-participant='{pid}']\").classList.contains('off')",
        )

        # muted by the officer: the page says so, and the mic button cannot lift it
        status, body = await api.call(
            "POST", f"{base}/mute", officer, {"participant": pid, "kinds": ["audio"], "reason": "r"}
        )
        assert status == 200, body
        await until(page, "document.body.dataset.officerMuted === 'audio'")
        banner = (await texts(page))["banner"]
        assert banner.startswith("民警已关闭您的麦克风"), banner
        await shots.take(page, "muted-by-officer")
        await no_overflow(page, "muted by the officer")
        await page.tap("#mute-audio")  # the party's own mute on top
        await page.tap("#mute-audio")  # and its unmute, refused while the officer's holds
        await until(page, "document.getElementById('error').textContent.length > 0")
        assert "只有民警可以解除" in await page.inner_text("#error")

        # reload mid-call: back in without a new link or new consents, still muted
        await page.reload()
        await phase(page, "in_call")
        assert await page.locator("#consent-form").is_hidden()
        await until(page, "document.body.dataset.officerMuted === 'audio'")
        await wait_until(
            lambda: officer_client.mids_for_participant(pid, "video") != [],
            timeout=PATIENCE,
            what="the party's video again after the reload",
        )
        actions = await server.app[DB].run(
            lambda c: [
                r[0] for r in c.execute("SELECT action FROM audit WHERE case_id = ?", (case,))
            ]
        )
        assert actions.count("invitation.readmitted") == 1 and actions.count("consent.given") == 1

        # the same link on another device is refused, in words
        other, second, other_problems = await new_page(browser, "zh-CN", PHONE)
        await second.goto(server.base_url + link)
        await phase(second, "link_used")
        shown = await texts(second)
        assert shown["title"] == "此链接已在其他设备上使用", shown
        await shots.take(second, "link-used")
        await no_overflow(second, "link used")
        await other.close()
        assert other_problems == []

        # removed by the officer
        status, body = await api.call(
            "POST", f"{base}/remove", officer, {"participant": pid, "reason": "disrupts"}
        )
        assert status == 200, body
        await phase(page, "removed")
        assert (await texts(page))["title"] == "您已被移出会话"
        await shots.take(page, "removed")
        await no_overflow(page, "removed")
        # and a reload does not bring a removed party back
        await page.reload()
        await phase(page, "removed")
        await context.close()
        assert problems == [], problems


async def test_english_desktop_party_books_waits_reconnects_and_sees_the_end(
    server: Server, api: Api, camera: Path, tmp_path: Path, clients: list[PeerClient]
) -> None:
    shots = Shots(tmp_path, "desktop-en")
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer, name="Wang Wei")
    slots = []
    for hours in (24, 48):
        start = datetime.datetime.now(CHINA) + datetime.timedelta(hours=hours)
        status, slot = await api.call(
            "POST",
            "/api/slots",
            officer,
            {
                "starts_at": start.isoformat(),
                "ends_at": (start + datetime.timedelta(minutes=30)).isoformat(),
            },
        )
        assert status == 201, slot
        slots.append(slot["id"])
    link = await invite(api, officer, case, party)

    async with chromium(camera) as browser:
        context, page, problems = await new_page(browser, "en-US", DESKTOP)
        await page.goto(server.base_url + link)
        await phase(page, "consent")
        shown = await texts(page)
        assert shown["lang"] == "en" and shown["title"] == "Confirm and join", shown
        assert await page.inner_text("#case-appointment") == "None booked"

        # the party books a free slot of the brigade, moves it, cancels it, from its page
        await until(page, "document.getElementById('appointment-slot').options.length === 2")
        await page.select_option("#appointment-slot", str(slots[0]))
        await page.click("#appointment-book")
        await until(page, "document.getElementById('appointment-status').textContent === 'Saved'")
        booked = await page.inner_text("#case-appointment")
        assert booked != "None booked" and " to " in booked, booked
        assert await page.inner_text("#appointment-book") == "Move to this time"
        await page.select_option("#appointment-slot", str(slots[1]))
        await page.click("#appointment-book")
        await until(page, f"document.getElementById('case-appointment').textContent !== {booked!r}")
        _, mine = await api.call("GET", "/api/party", link.split("=", 1)[1])
        assert mine["appointment"]["slot_id"] == slots[1]
        await shots.take(page, "appointment")
        await page.fill("#cancel-reason", "I will come in person")
        await page.click("#appointment-cancel button")
        await until(
            page, "document.getElementById('case-appointment').textContent === 'None booked'"
        )
        _, mine = await api.call("GET", "/api/party", link.split("=", 1)[1])
        assert mine["appointment"] is None

        # the officer has not opened the session: the page says so and joins once it is open
        await page.check("#consent-recording")
        await page.click("#consent-form button[type=submit]")
        await phase(page, "no_session")
        await shots.take(page, "no-session")
        await no_overflow(page, "no session")
        status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
        assert status == 201
        # nobody from the police in the room yet
        await phase(page, "waiting")
        assert (await texts(page))["title"] == "Waiting for the officer"
        await shots.take(page, "waiting")
        await no_overflow(page, "waiting")

        # the switch: Chinese, kept for the next visit
        await page.click("#lang-switch")
        await until(page, "document.documentElement.lang === 'zh-CN'")
        assert (await texts(page))["title"] == "等待民警进入"
        await page.click("#lang-switch")
        await until(page, "document.documentElement.lang === 'en'")

        officer_client = PeerClient(server.base_url, session["token"], decode=False)
        clients.append(officer_client)
        await officer_client.connect()
        await officer_client.publish(PatternVideoTrack())
        await phase(page, "in_call")
        await shots.take(page, "in-call")
        # the connection drops: the page reconnects by itself
        await page.evaluate("() => window.remotecase.ws.close()")
        await until(page, "window.remotecase.phases.includes('reconnecting')")
        await until(
            page,
            "window.remotecase.phases.lastIndexOf('in_call') >"
            " window.remotecase.phases.lastIndexOf('reconnecting')",
            timeout=PATIENCE,
        )
        # the officer stops its camera: its tile shows a placeholder, not a frozen frame
        officer_id = officer_client.joined["participant"]["id"] if officer_client.joined else ""
        tile = f"document.querySelector(\"[data-participant='{officer_id}']\")"
        await until(page, f"{tile} !== null && !{tile}.classList.contains('off')")
        answer = next(m for m in officer_client.messages if m["type"] == "publish_answer")
        video = next(t for t in answer["tracks"] if t["kind"] == "video")
        await officer_client.send({"type": "mute", "track": video["id"], "muted": True})
        await until(page, f"{tile}.classList.contains('off')")
        assert "Camera off" in await page.inner_text("#grid")
        await shots.take(page, "officer-camera-off")

        status, body = await api.call(
            "POST", f"/api/cases/{case}/sessions/{session['id']}/end", officer, {"reason": "done"}
        )
        assert status == 200, body
        await phase(page, "ended")
        assert (await texts(page))["title"] == "The session has ended"
        await shots.take(page, "ended")
        await no_overflow(page, "ended")

        status, body = await api.call(
            "POST", f"/api/cases/{case}/close", officer, {"reason": "settled"}
        )
        assert status == 200, body
        await page.reload()
        await phase(page, "closed")
        assert (await texts(page))["title"] == "The case is closed"
        await shots.take(page, "closed")
        await no_overflow(page, "closed")
        await context.close()
        assert problems == [], problems


async def test_a_denied_camera_is_retried_on_the_same_link(
    server: Server, api: Api, camera: Path, tmp_path: Path
) -> None:
    shots = Shots(tmp_path, "phone-zh")
    officer = await officer_login(server, api, "li")
    case, party = await case_with_party(api, officer)
    assert (await api.call("POST", f"/api/cases/{case}/sessions", officer))[0] == 201
    link = await invite(api, officer, case, party)
    async with chromium(camera, fake_ui=False) as browser:
        context, page, problems = await new_page(browser, "zh-CN", PHONE)
        await page.goto(server.base_url + link)
        await phase(page, "camera_denied")
        shown = await texts(page)
        assert shown["title"] == "无法使用摄像头和麦克风", shown
        assert "NotAllowedError" not in shown["body"]
        assert await page.locator("#camera-retry").is_visible()
        await shots.take(page, "camera-denied")
        await no_overflow(page, "camera denied")
        await context.grant_permissions(["camera", "microphone"], origin=server.base_url)
        await page.tap("#camera-retry")
        await phase(page, "consent")
        await until(page, "document.getElementById('preview').videoWidth > 0")
        await context.close()
        assert problems == [], problems
