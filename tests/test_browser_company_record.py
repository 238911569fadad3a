"""The company page in Chromium on a phone (390x844, touch): a company opens the link of its
attendance record, sees what it is and its SHA-256, downloads the sealed PDF (the record's
bytes); a link revoked by sending again says so in Chinese. No horizontal overflow at 360 px,
no CSP violation; screenshots in the test's directory."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from control.appkeys import DB
from control.delivery.channels import outbox
from tests.conftest import Api, Server, leftovers, make_config, officer_login, start_server
from tests.test_browser import _wait_for, chromium, face_image, write_y4m

pytestmark = pytest.mark.browser

ROSTER = (
    "企业名称,角色,姓名,身份证号,企业联系邮箱\n"
    "顺达运输有限公司,驾驶员,李华,110101199003071234,safety@shunda.example.cn\n"
)


# the address companies reach the server by (the default bind, 127.0.0.1, is none): the
# links start with it, and the test opens them on this server instead
PUBLIC = "https://jj.example.gov.cn"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, education={"public_url": PUBLIC}))
    yield srv
    await srv.runner.cleanup()
    assert leftovers(srv.app) == {}, "left behind after the server stopped"


async def _overflow(page: Any) -> bool:
    return bool(
        await page.evaluate(
            "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )
    )


async def test_a_company_opens_its_link_and_downloads_its_record(
    server: Server, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        _, imported = await api.call(
            "POST", "/api/education/roster/import", li, data=ROSTER.encode()
        )
        _, case = await api.call(
            "POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"}
        )
        cid = case["id"]
        await api.call(
            "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": imported["people"]}
        )
        _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        base = f"/api/cases/{cid}/sessions/{session['id']}/attendance/records"
        status, _ = await api.call("POST", base, li, {})
        assert status == 201
        status, sent = await api.call("POST", f"{base}/send", li, {})
        assert status == 201, sent
        record = sent["companies"][0]
        notice = (await server.app[DB].run(outbox))[-1]
        # the page in Chinese whatever the browser prefers (as a company in China reads it)
        link = _link(str(notice["text"])).replace("#t=", "?lang=zh-CN#t=")
        assert link.startswith(f"{PUBLIC}/company-record?"), link
        link = server.base_url + link.removeprefix(PUBLIC)

        camera = tmp_path / "camera.y4m"
        write_y4m(camera, face_image(), frames=2)
        async with chromium(camera) as context:
            page: Any = await context.new_page()
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(link)
            await _wait_for(page, "!document.getElementById('record').hidden")
            assert await page.text_content("#f-company") == "顺达运输有限公司"
            assert await page.text_content("#f-sha") == record["sha256"]
            assert "交通安全教育学习记录" in (await page.text_content("h2") or "")
            await page.set_viewport_size({"width": 360, "height": 780})
            assert not await _overflow(page)
            await page.screenshot(path=str(tmp_path / "company-record-360.png"), full_page=True)
            async with page.expect_download() as waiting:
                await page.click("#download")
            download = await waiting.value
            saved = tmp_path / "record.pdf"
            await download.save_as(str(saved))
            assert hashlib.sha256(saved.read_bytes()).hexdigest() == record["sha256"]
            await _wait_for(page, "document.getElementById('status').textContent.length > 0")

            # sent again: the old link says it was revoked, Chinese first
            status, _ = await api.call("POST", f"{base}/send", li, {})
            assert status == 201
            await page.goto("about:blank")
            await page.goto(link)
            await _wait_for(page, "document.getElementById('status').textContent.length > 0")
            assert (await page.text_content("#status") or "").startswith("此链接已作废")
            assert await page.is_hidden("#record")
            assert not await _overflow(page)
            await page.screenshot(path=str(tmp_path / "company-record-revoked.png"))

        _, overview = await api.call("GET", f"{base}/sends", li)
        assert overview["companies"][0]["state"] == "sent"  # the new link, not opened yet


def _link(text: str) -> str:
    start = text.index("http")
    return text[start:].split()[0]


async def test_the_console_panel_sends_each_company_its_record(
    server: Server, tmp_path: Path
) -> None:
    """The officer's education panel in the console's call (phone size, Chinese): make the
    records, send them to the companies, each company's state shown."""
    from tests.conftest import PASSWORD
    from tests.test_browser_console import open_page, see

    roster = ROSTER + (
        "宏远物流,驾驶员,王强,130101199201012222,13800138000\n"
        "平安客运,驾驶员,孙丽,130901198807073333,\n"
    )
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        _, imported = await api.call(
            "POST", "/api/education/roster/import", li, data=roster.encode()
        )
        _, case = await api.call(
            "POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"}
        )
        cid = case["id"]
        await api.call(
            "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": imported["people"]}
        )
        await api.call("POST", f"/api/cases/{cid}/sessions", li, {"purpose": "education"})

    camera = tmp_path / "officer.y4m"
    write_y4m(camera, face_image(), frames=2)
    async with chromium(camera) as context:
        page = await open_page(context, "zh-CN", "phone")
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base_url + "/console")
        await see(page, "#login-form")
        await page.fill("#username", "li")
        await page.fill("#password", PASSWORD)
        await page.click("#login-form button")
        await _wait_for(page, "document.getElementById('who').textContent.includes('li')")
        await page.evaluate(f"location.hash = '#case/{cid}'")
        await see(page, "#session-open:not([hidden])")
        await page.click("#join-call")
        await see(page, "#education-desk:not([hidden]) #edu-box-records h4")
        assert "尚未生成企业学习记录" in (await page.text_content("#edu-sends") or "")
        records = page.locator("#edu-box-records button", has_text="生成学习记录")
        await records.click()
        await _wait_for(page, "document.querySelectorAll('#edu-sends li[data-state]').length === 3")
        await page.locator("#edu-box-records button", has_text="发送给企业").click()
        await _wait_for(
            page, "document.querySelectorAll('#edu-sends li[data-state=sent]').length === 2"
        )
        states = await page.eval_on_selector_all(
            "#edu-sends li", "els => els.map(e => [e.dataset.state, e.textContent])"
        )
        by_state = {state: text for state, text in states}
        assert "平安客运" in by_state["no_address"] and "无联系方式" in by_state["no_address"]
        assert any("发往 safety@shunda.example.cn" in text for _, text in states)
        await page.set_viewport_size({"width": 360, "height": 780})
        assert not await _overflow(page)
        await page.locator("#education-desk").screenshot(path=str(tmp_path / "desk-sent.png"))
        assert errors == []
