"""The officer who reads only Chinese (issue 15, "done when"): one console tab, zh-CN, runs a
case from booking to the ended session, and at each step the console's visible text has no
Latin word beyond what the test typed (names, numbers, the account) and identifiers (links,
room and record numbers): a check that finds untranslated text.

Debian's Chromium: the officer's console at desktop size in one context, the party's page at
phone size (touch) in a second context (another device), both with the fake camera; a real
server (``auth.dev_join`` off). The officer signs in, makes the case and its party, publishes a
slot, takes the invitation link; the party opens it, books the slot and consents; the officer
sees the booking, opens the session and joins the call from the workspace; the party comes in;
the officer ends the session with a reason, and the party's page says it has ended.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD, Api, Server, make_config, officer_login, start_server
from tests.test_browser import _wait_for, face_image, write_y4m
from tests.test_browser_console import catalog, screenshot, see, words
from tests.test_browser_party import PATIENCE, PHONE, chromium, new_page, phase, until

pytestmark = pytest.mark.browser

CHINA = datetime.timezone(datetime.timedelta(hours=8))
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
LATIN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
URL = re.compile(r"https?://\S+")
# what is not words: links, hex identifiers, recording and track IDs, room names, ISO dates and
# times, numbers
NOT_WORDS = re.compile(
    r"https?://\S+|\b[0-9a-f]{8,}\b|\b(?:REC|TR)_[0-9A-Za-z_]+|"
    r"\bcase-\d+-[0-9a-f]+\b|\bparty-\d+\b|"
    r"\d{4}-\d{2}-\d{2}(?:T[\d:.]+Z?)?|\b\d+(?:[.:]\d+)*\b"
)


# what Chinese texts write in Latin letters themselves ("PDF 页码")
TERMS = frozenset({"PDF"})
# Panels left out of the check while their texts are not in the catalogs yet (none now: the
# record and documents panel moved there)
NOT_YET: tuple[str, ...] = ()


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


async def latin_words(page: Any, typed: set[str]) -> list[str]:
    """The Latin words of the console's visible text that the test did not type, each with
    the line it is on."""
    # the visible text and the placeholders of the visible fields (a hint is read too); the
    # language switch names the other language in that language ("English"), as it must
    text, switch, *elsewhere = await page.evaluate(
        "[document.body.innerText + '\\n' + [...document.querySelectorAll("
        "'input[placeholder], textarea[placeholder]')].filter((e) => e.offsetParent !== null"
        f" && !{json.dumps(list(NOT_YET))}.some((s) => e.closest(s)))"
        ".map((e) => e.placeholder).join('\\n'),"
        " (document.getElementById('lang') || {}).textContent || '',"
        f" ...{json.dumps(list(NOT_YET))}.map((s) => document.querySelector(s)?.innerText || '')]"
    )
    skipped = Counter(line for block in elsewhere for line in block.splitlines())
    names = re.compile(
        "|".join(
            rf"(?<![A-Za-z0-9]){re.escape(n)}(?![A-Za-z0-9])"
            for n in sorted(typed, key=len, reverse=True)
        )
    )
    found = []
    for line in text.splitlines():
        if skipped[line] > 0:
            skipped[line] -= 1
            continue
        if switch.strip() and line.strip() == switch.strip():
            continue
        rest = NOT_WORDS.sub(" ", names.sub(" ", URL.sub(" ", line)))
        for word in (w for w in LATIN.findall(rest) if w not in TERMS):
            found.append(f"{word!r} in {line.strip()!r}")
    return found


async def chinese_only(page: Any, typed: set[str], step: str) -> None:
    await _wait_for(page, "document.documentElement.lang === 'zh-CN'")
    found = await latin_words(page, typed)
    assert found == [], f"{step}: untranslated text on the console: {found}"


async def test_a_chinese_officer_runs_a_case_from_booking_to_the_end(
    server: Server, tmp_path: Path
) -> None:
    cat = catalog("zh-CN")
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        await officer_login(server, api, "li", "brigade-1")
    camera = tmp_path / "face.y4m"
    await asyncio.to_thread(lambda: write_y4m(camera, face_image()))
    # what the test types, or made the server hold for it: names, numbers, the account
    typed = {"li", "brigade-1", "G15", "王伟", "110101199003071234", "13800000000"}

    async with chromium(camera) as browser:
        console_context, page, problems = await new_page(browser, "zh-CN", DESKTOP)
        await page.goto(server.base_url + "/console")
        await see(page, "#login-form")
        await chinese_only(page, typed, "sign-in page")
        await screenshot(page, tmp_path, "zh-officer-login")
        await page.fill("#username", "li")
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await _wait_for(page, "document.getElementById('who').textContent.includes('li')")
        await chinese_only(page, typed, "signed in")

        # the case and its party
        await page.select_option("#case-kind", "accident")
        await page.fill("#case-title", "G15 追尾")
        await page.click("#new-case button")
        await see(page, "#case-heading:has-text('G15')")
        case_id = int(await page.evaluate("window.remotecaseConsole.caseId"))
        await chinese_only(page, typed, "new case")
        await page.fill("#party-name", "王伟")
        await page.fill("#party-id", "110101199003071234")
        await page.fill("#party-phone", "13800000000")
        await page.click("#new-party button")
        await see(page, "#parties li:has-text('王伟')")
        await chinese_only(page, typed, "party added")

        # a slot for tomorrow on the calendar
        await page.click("#nav a[data-view=calendar]")
        await see(page, "#view-calendar:not([hidden])")
        tomorrow = (datetime.datetime.now(CHINA) + datetime.timedelta(days=1)).date()
        await page.fill("#slot-date", tomorrow.isoformat())
        await page.fill("#slot-time", "10:00")
        await page.click("#slot-form button")
        await see(page, "#week .slot:has-text('10:00')")
        await chinese_only(page, typed, "slot published")
        await screenshot(page, tmp_path, "zh-officer-calendar")

        # the invitation link, from the case
        await page.click("#nav a[data-view=cases]")
        await page.click(f"#cases a[href='#case/{case_id}']")
        await see(page, "#view-cases:not([hidden]) #case:not([hidden])")
        party_id = int(await page.get_attribute("#parties li[data-party-id]", "data-party-id"))
        await page.click(f"#parties li[data-party-id='{party_id}'] button")
        await see(page, "#parties code")
        link = await page.inner_text("#parties code")
        await chinese_only(page, typed, "invitation made")

        # the party, on its phone, books the slot and consents
        party_context, party, party_problems = await new_page(browser, "zh-CN", PHONE)
        await party.goto(link)
        await phase(party, "consent")
        await until(party, "document.getElementById('appointment-slot').options.length === 1")
        await party.click("#appointment-book")
        await until(party, "document.getElementById('case-appointment').textContent !== '尚未预约'")
        await party.tap("#consent-recording")
        await party.tap("#consent-form button[type=submit]")
        await phase(party, "no_session")

        # the officer sees the booking on the calendar
        await page.click("#nav a[data-view=calendar]")
        booked_for = words(cat, "calendar.booked_for", name="王伟")
        await see(page, f"#week .slot.mine:has-text('{booked_for}'), #week .slot:has-text('王伟')")
        await chinese_only(page, typed, "booking seen")

        # the session, the call from the workspace, the party comes in
        await page.click("#nav a[data-view=cases]")
        await page.click(f"#cases a[href='#case/{case_id}']")
        await see(page, "#view-cases:not([hidden]) #case:not([hidden])")
        await page.click("#open-session button")
        await see(page, "#session-open:not([hidden])")
        await chinese_only(page, typed, "session open")

        # the inquiry record's header: a form prefilled from the case (no JSON to type)
        header = "#record-header:not([hidden])"
        await page.click("#record-new")
        await see(page, f"{header} [data-path='person.name']")
        assert await page.input_value(f"{header} [data-path='person.name']") == "王伟"
        assert await page.get_attribute(f"{header} [data-path='case.start_time']", "type") == (
            "datetime-local"
        )
        # the questioner and the recorder are chosen among the case's officers, not typed
        recorder = f"{header} select[data-path='officers.1.name']"
        assert await page.locator(f"{recorder} option").all_inner_texts() == ["（未指定）", "li"]
        await page.fill(f"{header} [data-path='case.place']", "远程视频询问室")
        await page.fill(f"{header} [data-path='person.birth_date']", "1990-03-07")
        await page.click("#record-header-save")
        await see(page, "#rd-error:has-text('表头已保存')")
        await _wait_for(
            page,
            'window.remotecaseConsole && document.querySelector("#record-header '
            "[data-path='person.birth_date']\").value === '1990-03-07'",
        )
        await chinese_only(page, typed, "record header")
        await screenshot(page, tmp_path, "zh-officer-record-header")
        await page.click("#join-call")
        await see(page, "#leave-call:not([hidden])")
        await phase(party, "in_call", PATIENCE)
        pid = f"party-{party_id}"
        tile = f"#grid .tile[data-participant='{pid}'] video"
        await _wait_for(page, f'document.querySelector("{tile}")?.videoWidth > 0', timeout=PATIENCE)
        await see(page, f"#participants li[data-participant='{pid}']:has-text('王伟')")
        await chinese_only(page, typed, "in the call")
        await screenshot(page, tmp_path, "zh-officer-call")

        # the end, with a reason
        await page.fill("#action-reason", "询问结束")
        await page.click("#end-session")
        await see(page, "#session-none:not([hidden])")
        await phase(party, "ended", PATIENCE)
        await see(page, "#audit li[data-action='session.ended']")
        await chinese_only(page, typed, "session ended")
        await screenshot(page, tmp_path, "zh-officer-ended")
        await party_context.close()
        await console_context.close()
        assert party_problems == [], party_problems
        assert problems == [], problems
    assert json.dumps(cat)  # the catalog the steps were worded from
