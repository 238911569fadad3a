"""The console's case timeline (control/web/timeline.js) in Debian's Chromium, on a 360 px
touch screen: shown on demand with the labels of the page's language, China time, nothing wider
than the screen, no CSP violation (tests/test_browser.py's ``chromium``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from control import i18n
from tests import samples
from tests.conftest import PASSWORD, Api, Server, case_with_party, officer_login, party_link
from tests.test_browser import _wait_for, chromium, face_image, write_y4m
from tests.test_browser_console import screenshot, see

pytestmark = pytest.mark.browser
WEB = Path(__file__).parent.parent / "control" / "web" / "i18n"


def console(lang: str) -> dict[str, str]:
    return dict(json.loads((WEB / lang / "console.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_the_timeline_panel_of_a_case(server: Server, tmp_path: Path, lang: str) -> None:
    photo = await asyncio.to_thread(samples.jpeg)
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api, "li", "brigade-1")
        cid, pid = await case_with_party(api, li, name="王伟")
        status, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        assert status == 201, session
        token = (await party_link(api, li, cid, pid))["token"]
        status, material = await api.call(
            "POST", "/api/party/materials?name=scene.jpg", token, data=photo
        )
        assert status == 201, material
    camera = tmp_path / "camera.y4m"
    await asyncio.to_thread(lambda: write_y4m(camera, face_image()))

    async with chromium(camera) as context:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("Emulation.setLocaleOverride", {"locale": lang})
        await cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
        await page.set_viewport_size({"width": 360, "height": 780})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{server.base_url}/console?lang={lang}")
        await see(page, "#login-form")
        await _wait_for(page, f"document.documentElement.lang === {json.dumps(lang)}")
        await page.fill("#username", "li")
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await _wait_for(page, "document.getElementById('who').textContent.includes('li')")
        await page.evaluate(f"location.hash = '#case/{cid}'")
        await see(page, "#case:not([hidden]) #timeline-show")
        assert await page.locator("#timeline li").count() == 0  # read only when asked
        await page.click("#timeline-show")
        await see(page, "#timeline li[data-kind='material.received']")
        kinds = await page.eval_on_selector_all(
            "#timeline li", "els => els.map(e => e.dataset.kind)"
        )
        assert kinds.index("case.created") < kinds.index("party.added")
        assert kinds.index("party.added") < kinds.index("session.opened")
        assert kinds.index("session.opened") < kinds.index("material.received"), kinds
        label = await page.inner_text("#timeline li[data-kind='material.received'] strong")
        assert label == i18n.text("timeline.material.received", lang)
        proof = await page.inner_text("#timeline li[data-kind='material.received'] .muted")
        assert "#" in proof  # the custody log entry that proves it
        stamp = await page.get_attribute("#timeline li[data-kind='case.created'] time", "datetime")
        assert stamp is not None and stamp.endswith("+00:00")
        await screenshot(page, tmp_path, f"timeline-{lang}")

        # the statistics page (stats.js): the new counts drawn; a line of text for what has
        # nothing yet (deliveries, mediations, overdue steps); one kind chosen
        await page.click("#nav a[data-view=stats]")
        await see(page, "#stats-charts svg.chart")
        assert await page.locator("#stats-charts svg.chart").count() == 5
        captions = await page.eval_on_selector_all(
            "#stats-charts figcaption", "els => els.map(e => e.textContent)"
        )
        assert len(captions) == 5 and captions[0] == console(lang)["stats.cases"], captions
        notes = await page.inner_text("#stats-charts")
        assert console(lang)["stats.delivered_none"] in notes
        await page.select_option("#stats-kind", "violation")
        await page.click("#stats-form button[type=submit]")
        await see(page, f"#stats-charts p:has-text('{console(lang)['stats.none']}')")
        await screenshot(page, tmp_path, f"stats-{lang}")
        assert errors == []
