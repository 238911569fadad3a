"""The officer's workspace in Debian's Chromium (issue 15): one tab for the whole case.

At desktop size with a Chinese browser and at 390x844 (touch) with an English one, an officer
signs in, opens a case, adds a party, books and moves its appointment on the week calendar,
attaches evidence, opens the session and joins the call from the workspace, sees the party's
video (an aiortc party whose camera shows a real face), enrols the party's reference photo from
a snapshot of that video, mutes the party, shows the evidence, writes a record turn, sees the
events without repeats, ends the session, plays and verifies the sealed recording, and reads the
statistics' charts. No page is wider than the screen. Screenshots of each page go to the test's
tmp dir and, when ``REMOTECASE_SCREENSHOTS`` is set, into that directory.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import skimage.data

from bench.peer import ImageVideoTrack, PeerClient
from control.appkeys import EVENTS
from control.sessions.display import PARTICIPANT
from tests import samples
from tests.conftest import PASSWORD, Api, Server, case_with_party, officer_login, wait_until
from tests.test_browser import _wait_for, chromium, face_image, write_y4m

pytestmark = pytest.mark.browser

WEB = Path(__file__).parent.parent / "control" / "web" / "i18n"
SIZES = {"desktop": (1366, 900, False), "phone": (390, 844, True)}


def catalog(lang: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("common", "console"):
        out.update(json.loads((WEB / lang / f"{name}.json").read_text(encoding="utf-8")))
    return out


def words(cat: dict[str, str], key: str, **params: Any) -> str:
    text = cat[key]
    for name, value in params.items():
        text = text.replace("{" + name + "}", str(value))
    return text


async def open_page(context: Any, locale: str, size: str) -> Any:
    """A tab whose browser prefers ``locale`` (navigator.languages and Accept-Language), at
    ``size``; the phone size with touch."""
    width, height, touch = SIZES[size]
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    agent = await page.evaluate("navigator.userAgent")
    await cdp.send("Network.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": locale})
    await cdp.send("Emulation.setLocaleOverride", {"locale": locale})
    if touch:
        await cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
    await page.set_viewport_size({"width": width, "height": height})
    return page


def _copy(path: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, target / path.name)


async def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """Write the whole page, and check nothing on it is wider than the screen."""
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("REMOTECASE_SCREENSHOTS")
    if target:
        await asyncio.to_thread(_copy, path, Path(target))
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"


async def see(page: Any, selector: str, wait_ms: float = 30000) -> None:
    """Wait for ``selector``; a timeout says what the page showed as its error."""
    try:
        await page.wait_for_selector(selector, timeout=wait_ms)
    except Exception as exc:
        shown = await page.evaluate(
            "[document.getElementById('error').textContent, "
            "(document.getElementById('rd-error') || {}).textContent, "
            "document.getElementById('notice').textContent]"
        )
        raise AssertionError(f"{selector} not seen; the page said {shown}") from exc


async def texts(page: Any, selector: str) -> list[str]:
    found: list[str] = await page.eval_on_selector_all(
        selector, "els => els.map(e => e.textContent.trim())"
    )
    return found


@pytest.mark.parametrize(("size", "lang"), [("desktop", "zh-CN"), ("phone", "en")])
async def test_officer_runs_a_case_in_one_tab(
    server: Server, clients: list[PeerClient], tmp_path: Path, size: str, lang: str
) -> None:
    cat = catalog(lang)
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        await officer_login(server, api, "li", "brigade-1")
    video = tmp_path / "scene.webm"
    video.write_bytes(await asyncio.to_thread(samples.webm_vp8, seconds=6))
    camera = tmp_path / "officer.y4m"
    await asyncio.to_thread(lambda: write_y4m(camera, face_image()))

    async with chromium(camera) as context:
        page = await open_page(context, lang, size)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base_url + "/console")
        await see(page, "#login-form")
        await _wait_for(page, f"document.documentElement.lang === {json.dumps(lang)}")
        assert await page.inner_text("#login h1") == cat["login.heading"]
        assert await page.title() == cat["console.title"]
        await screenshot(page, tmp_path, f"{size}-login")

        # a wrong password is said in words, in the page's language
        await page.fill("#username", "li")
        await page.fill("#password", "wrong password")
        await page.click("#login-form button")
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["error.bad_credentials"]
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await _wait_for(page, "document.getElementById('who').textContent.includes('li')")
        assert cat["officer.role.officer"] in await page.inner_text("#who")

        # a case, its party and an invitation link
        await page.select_option("#case-kind", "accident")
        await page.fill("#case-title", "G15 203 公里处追尾")
        await page.click("#new-case button")
        await see(page, "#case-heading:has-text('G15 203')")
        heading = await page.inner_text("#case-heading")
        assert cat["kind.accident"] in heading and cat["case.status.open"] in heading
        case_id = int(await page.evaluate("window.remotecaseConsole.caseId"))
        await page.fill("#party-name", "王伟")
        await page.fill("#party-id", "110101199003071234")
        await page.fill("#party-phone", "13800000000")
        await page.click("#new-party button")
        await see(page, "#parties li:has-text('王伟')")
        assert "**************1234" in await page.inner_text("#parties")
        party_id = int(await page.get_attribute("#parties li[data-party-id]", "data-party-id"))
        await page.click(f"#parties li[data-party-id='{party_id}'] button")
        await see(page, "#parties code")
        link = await page.inner_text("#parties code")
        assert "/?invite=" in link

        # the calendar: two slots tomorrow, book the first, move to the second
        await page.click("#nav a[data-view=calendar]")
        await see(page, "#view-calendar:not([hidden])")
        tomorrow = (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1, hours=8)
        ).date()
        for start in ("10:00", "14:30"):
            await page.fill("#slot-date", tomorrow.isoformat())
            await page.fill("#slot-time", start)
            await page.click("#slot-form button")
            await see(page, f"#week .slot:has-text('{start}')")
        day = page.locator(f"#week .day[data-day='{tomorrow.isoformat()}']")
        assert await day.locator(".slot.free").count() == 2
        assert cat["calendar.for_case"].split("{")[0] in await page.inner_text("#calendar-for")
        await day.locator(".slot:has-text('10:00') button.primary").click()
        booked_for = words(cat, "calendar.booked_for", name="王伟")
        await see(page, f"#week .slot.mine:has-text('{booked_for}')")
        await day.locator(".slot.mine button", has_text=cat["calendar.move"]).click()
        await see(page, "#calendar-moving:not([hidden])")
        # moving needs a reason: said in words, nothing changed
        await day.locator(".slot:has-text('14:30') button.primary").click()
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["calendar.need_reason"]
        await page.fill("#calendar-reason", "当事人下午有空")
        await day.locator(".slot:has-text('14:30') button.primary").click()
        await see(page, "#week .slot.mine:has-text('14:30')")
        assert await day.locator(".slot.mine").count() == 1
        assert await day.locator(".slot:has-text('10:00').free").count() == 1
        await screenshot(page, tmp_path, f"{size}-calendar")
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            token = await page.evaluate("window.remotecaseConsole.token")
            _, detail = await api.call("GET", f"/api/cases/{case_id}", token)
        (appointment,) = [a for a in detail["appointments"] if a["status"] == "booked"]
        assert appointment["party_id"] == party_id and appointment["reschedules"] == 1

        # back to the case: evidence, the session, the call
        await page.click("#nav a[data-view=cases]")
        await page.click(f"#cases a[href='#case/{case_id}']")
        await see(page, "#view-cases:not([hidden]) #case:not([hidden])")
        await see(page, f"#parties li:has-text('{words(cat, 'parties.appointment', when='')}')")
        await page.set_input_files("#upload-file", str(video))
        await page.click("#upload button")
        await see(page, "#materials li:has-text('scene.webm')")
        await page.click("#open-session button")
        await see(page, "#session-open:not([hidden])")
        await page.click("#join-call")
        await see(page, "#leave-call:not([hidden])")
        await _wait_for(page, "document.querySelector('#grid .tile video')?.videoWidth > 0")

        # the party comes in by its link (an aiortc client whose camera shows a face)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                server.base_url + "/api/invitations/redeem",
                json={
                    "token": link.split("invite=")[1],
                    "consent": {"recording": True, "face": True},
                },
            ) as r,
        ):
            redeemed = await r.json()
            assert r.status == 200, redeemed
        party = PeerClient(server.base_url, redeemed["token"])
        clients.append(party)
        await party.connect()
        # the astronaut's head and shoulders, big enough to enrol; small and slow frames, so
        # that this process (server, party and encoder on a shared 2-core machine) keeps up
        face = skimage.data.astronaut()[0:256, 128:384]
        await party.publish(ImageVideoTrack([(0.0, face)], width=480, height=360, fps=5))
        pid = redeemed["participant"]
        tile = f"#grid .tile[data-participant='{pid}'] video"
        await _wait_for(page, f'document.querySelector("{tile}")?.videoWidth > 0', timeout=30)
        await see(page, f"#participants li[data-participant='{pid}']:has-text('王伟')")
        # the party sees and hears the officer from the workspace
        me = await page.evaluate("window.remotecaseConsole.call.state.me")
        await wait_until(
            lambda: bool(party.mids_for_participant(me, "video")),
            timeout=20,
            what="the officer's camera offered to the party",
        )
        await screenshot(page, tmp_path, f"{size}-call")

        # the reference photo from a snapshot of the party's video
        snap = f"#participants li[data-participant='{pid}'] button"
        await page.locator(snap, has_text=cat["reference.snapshot"]).click()
        await see(page, f"#notice:has-text('{words(cat, 'reference.enrolled', name='王伟')}')")
        await see(page, "#audit li[data-action='reference.enrolled']")

        # mute the party: the party hears it from the server, the console shows it
        await page.fill("#action-reason", "核对材料时静音")
        await page.locator(snap, has_text=cat["call.mute"]).first.click()
        muted = await party.wait_for(lambda m: m["type"] == "track_muted" and m["officer_muted"])
        assert muted["participant"] == pid
        await see(
            page,
            f"#participants li[data-participant='{pid}']:has-text('{cat['call.muted.video']}')",
        )
        await page.locator(snap, has_text=cat["call.unmute"]).first.click()
        await party.wait_for(lambda m: m["type"] == "track_muted" and not m["officer_muted"])

        # a record turn (record.js, in the workspace's slot)
        await see(page, "#record-slot #records-documents:not([hidden])")
        await page.select_option("#record-party", str(party_id))
        await page.click("#record-new")
        await see(page, "#record-turns li")
        await page.fill("#turn-q", "事故发生时车速多少？")
        await page.fill("#turn-a", "大约六十公里每小时。")
        await page.click("#record-turn button[type=submit]")
        await see(page, "#record-turns li:has-text('大约六十公里每小时')")

        # the verifier reports a state with every sample (about once a second): the events
        # list shows the changes only; these come from a participant of the room's own
        # stream, as the verifier's listener sends them, so the real verifier's own reports
        # on the party (who now has a reference) do not mix with them
        hub = server.app[EVENTS]
        room = await page.inner_text("#session-room")
        for state, score in (("verifying", 0.4), ("verified", 0.8), ("verified", 0.82)):
            for _ in range(3):
                hub.on_room_event(
                    room, "verification", participant="party-99", state=state, score=score
                )
        marker = "#events li[data-type=verification]"
        await _wait_for(
            page,
            f"[...document.querySelectorAll('{marker}')]"
            ".filter((li) => li.textContent.includes('party-99')).length >= 2",
        )
        await asyncio.sleep(1)  # a repeat would have arrived by now
        face_events = await texts(page, marker)
        injected = [text for text in face_events if "party-99" in text]
        assert len(injected) == 2, face_events
        assert cat["face.verified"] in injected[0] and cat["face.verifying"] in injected[1]
        # and what the real verifier said of the party changes from one entry to the next
        real = [text.split(" ", 1)[1] for text in face_events if "王伟" in text]
        assert all(a != b for a, b in itertools.pairwise(real)), face_events
        joined = await texts(page, "#events li[data-type=participant_joined]")
        assert any("王伟" in text for text in joined), joined
        assert len([text for text in joined if "王伟" in text]) == 1, joined
        await screenshot(page, tmp_path, f"{size}-workspace")

        # evidence shown into the call
        await page.fill("#show-reason", "现场视频")
        await page.click("#show button[type=submit]")

        def evidence_frames() -> int:
            mids = party.mids_for_participant(PARTICIPANT, "video")
            return party.frame_counts[mids[0]] if mids else 0

        await wait_until(lambda: evidence_frames() >= 5, timeout=30, what="evidence at the party")

        # end the session: the reason is asked for in words, then the recording is sealed
        await page.fill("#action-reason", "")
        await page.click("#end-session")
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["session.end.need_reason"]
        await page.fill("#action-reason", "询问结束")
        await page.click("#end-session")
        await see(page, "#session-none:not([hidden])")
        bye = await party.wait_for(lambda m: m["type"] == "bye")
        assert bye["reason"] == "room_closed"
        await see(page, "#events li[data-type=recording][data-state=sealed]")
        await see(page, "#audit li[data-action='session.ended']")

        # the recording: play it, verify it
        await see(page, "#recordings li[data-state=sealed]")
        await page.locator("#recordings li button", has_text=cat["recordings.play"]).click()
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["recordings.need_reason"]
        await page.fill("#recordings-reason", "复核询问过程")
        await page.locator("#recordings li button", has_text=cat["recordings.play"]).click()
        await see(page, "#recording-player:not([hidden])")
        await _wait_for(
            page, "document.getElementById('recording-video').readyState >= 1", timeout=30
        )
        await page.locator("#recordings li button", has_text=cat["recordings.verify"]).click()
        await see(page, "#recording-result [data-verified=ok]")
        await screenshot(page, tmp_path, f"{size}-recordings")

        # statistics: the charts are drawn from the API's counts
        await page.click("#nav a[data-view=stats]")
        await see(page, "#stats-charts svg.chart")
        # cases, sessions, work done, reviews, penalty (deliveries, mediations and overdue
        # steps are a line of text while there are none)
        assert await page.locator("#stats-charts svg.chart").count() == 5
        bars = await page.eval_on_selector_all(
            "#stats-charts figure:nth-of-type(1) rect",
            "els => els.map(e => Number(e.dataset.value))",
        )
        assert bars[0] == 1, bars  # one accident case
        labels = await texts(page, "#stats-charts figcaption")
        assert labels[0] == cat["stats.cases"]
        await screenshot(page, tmp_path, f"{size}-stats")

        # the language switch turns the page to the other language and keeps the view
        await page.click("#lang")
        other = catalog("en" if lang == "zh-CN" else "zh-CN")
        await see(page, f"#stats-charts figcaption:has-text('{other['stats.cases']}')")
        assert await page.inner_text("#stats-heading") == other["stats.heading"]
        assert errors == []


async def test_reference_photo_from_a_file_and_an_appointment_cancelled(
    server: Server, tmp_path: Path
) -> None:
    """At phone size, Chinese: the case opened by its address, a reference photo uploaded from
    a file (a file that is no photo is refused in words), an appointment cancelled on the
    calendar (with its reason), and the language switch kept after a reload."""
    from tests.test_verifier import _png

    cat, en = catalog("zh-CN"), catalog("en")
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        token = await officer_login(server, api, "li", "brigade-1")
        case_id, party_id = await case_with_party(api, token, name="李娜")
        starts = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(
            days=2
        )
        status, slot = await api.call(
            "POST",
            "/api/slots",
            token,
            {
                "starts_at": starts.isoformat(),
                "ends_at": (starts + datetime.timedelta(minutes=30)).isoformat(),
            },
        )
        assert status == 201, slot
        status, booked = await api.call(
            "POST",
            f"/api/cases/{case_id}/appointments",
            token,
            {"party_id": party_id, "slot_id": slot["id"]},
        )
        assert status == 201, booked
    photo, not_photo = tmp_path / "id-photo.png", tmp_path / "notes.txt"
    photo.write_bytes(await asyncio.to_thread(_png, skimage.data.astronaut()))
    not_photo.write_text("这不是照片")
    camera = tmp_path / "camera.y4m"
    await asyncio.to_thread(lambda: write_y4m(camera, face_image(), frames=5))

    async with chromium(camera) as context:
        page = await open_page(context, "zh-CN", "phone")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{server.base_url}/console#case/{case_id}")
        await page.fill("#username", "li")
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await see(page, f"#parties li[data-party-id='{party_id}']")
        assert "李娜" in await page.inner_text("#parties")

        upload = page.locator(
            f"#parties li[data-party-id='{party_id}'] button", has_text=cat["reference.file"]
        )
        async with page.expect_file_chooser() as chooser:
            await upload.click()
        await (await chooser.value).set_files(str(not_photo))
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["error.not_an_image"]
        async with page.expect_file_chooser() as chooser:
            await upload.click()
        await (await chooser.value).set_files(str(photo))
        await see(page, f"#notice:has-text('{words(cat, 'reference.enrolled', name='李娜')}')")
        await see(page, "#audit li[data-action='reference.enrolled']")
        await screenshot(page, tmp_path, "phone-case-reference")

        # the calendar: the booked slot is the case's; cancelling asks for a reason
        await page.click("#nav a[data-view=calendar]")
        mine = page.locator(f"#week .slot.mine[data-slot-id='{slot['id']}']")
        china = datetime.timedelta(hours=8)
        today = (datetime.datetime.now(datetime.UTC) + china).date()
        day = (starts + china).date()
        if day - datetime.timedelta(days=day.weekday()) != today - datetime.timedelta(
            days=today.weekday()
        ):  # the slot falls in next week (weeks begin on Monday, China time)
            await see(page, "#week .day")
            await page.click("#week-next")
        await see(page, f"#week .slot.mine[data-slot-id='{slot['id']}']")
        cancel = mine.locator("button.danger")
        await cancel.click()
        await _wait_for(page, "document.getElementById('error').textContent.length > 0")
        assert await page.inner_text("#error") == cat["calendar.need_reason"]
        await page.fill("#calendar-reason", "当事人已到现场办理")
        await cancel.click()
        await see(page, f"#week .slot.free[data-slot-id='{slot['id']}']")
        await screenshot(page, tmp_path, "phone-calendar-cancelled")
        async with aiohttp.ClientSession() as http:
            _, detail = await Api(http, server.base_url).call("GET", f"/api/cases/{case_id}", token)
        assert [a["status"] for a in detail["appointments"]] == ["cancelled"]

        # the switch is kept: after a reload the page is English
        await page.click("#lang")
        await see(page, f"#calendar-heading:has-text('{en['calendar.heading']}')")
        await page.reload()
        await _wait_for(page, "document.documentElement.lang === 'en'")
        await see(page, f"#nav a:has-text('{en['nav.calendar']}')")
        assert await page.inner_text("#calendar-heading") == en["calendar.heading"]
        assert errors == []
