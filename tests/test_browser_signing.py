"""The party page in Debian's Chromium signs a document with a mark drawn on the canvas and a
WebCrypto key made in the page (ECDSA P-256, non-extractable); the officer's console shows the
record editor. The face match the signing needs is a ``verification.verdict`` entry appended
the way the verifier appends its own (see test_records_documents.py)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from control.appkeys import CUSTODY, DB
from control.auth import create_officer
from documents.samples import sample
from documents.verify import extract_marks
from tests.conftest import Server
from tests.test_browser import _wait_for, browser  # noqa: F401  (the fixture)
from tests.test_records_documents import consent_body, seed_match

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"


async def test_party_page_draws_a_mark_and_signs(server: Server, browser: Any) -> None:  # noqa: F811
    await server.app[DB].run(lambda c: create_officer(c, "li", PASSWORD, "officer", "b"))
    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(
                method, server.base_url + path, json=body, headers=headers
            ) as response:
                assert response.status < 300, await response.text()
                if response.content_type == "application/json":
                    return await response.json()
                return await response.read()

        login = (await call("POST", "/api/login", None, {"username": "li", "password": PASSWORD}))[
            "token"
        ]
        case = await call("POST", "/api/cases", login, {"kind": "violation", "title": "t"})
        party = await call(
            "POST", f"/api/cases/{case['id']}/parties", login, {"role": "driver", "name": "张三"}
        )
        session = await call("POST", f"/api/cases/{case['id']}/sessions", login)
        invite = await call(
            "POST", f"/api/cases/{case['id']}/invitations", login, {"party_id": party["id"]}
        )
        doc = await call(
            "POST", f"/api/cases/{case['id']}/documents", login, consent_body(party["id"])
        )
        await seed_match(server, session["room"], party["id"])

        page = await browser.new_page()
        await page.goto(server.base_url + invite["link"] + "&lang=zh-CN")
        field = f"party-p{party['id']}"
        box = f"#party-documents .sign-box[data-field='{field}']"
        await page.wait_for_selector(box + " canvas")
        # the consent form's camera preview above settles the layout first
        await _wait_for(page, "document.getElementById('preview').videoWidth > 0")
        canvas = await page.query_selector(box + " canvas")
        assert canvas is not None
        await canvas.scroll_into_view_if_needed()
        area = await canvas.bounding_box()
        assert area is not None
        await page.mouse.move(area["x"] + 20, area["y"] + 30)
        await page.mouse.down()
        for i in range(1, 12):
            await page.mouse.move(area["x"] + 20 + i * 20, area["y"] + 30 + (i % 3) * 15)
        await page.mouse.up()
        await page.click(box + " button.sign")
        said = "document.getElementById('sign-error').textContent"
        try:
            await _wait_for(page, said + ".includes('已签名')", timeout=60)
        except AssertionError:
            raise AssertionError(f"the page said: {await page.evaluate(said)}") from None

        state = await call("GET", f"/api/cases/{case['id']}/documents/{doc['id']}", login)
        assert state["state"]["signed"] == [field]
        assert [m["field"] for m in state["state"]["missing"]] == ["officer-o1"]
        pdf = await call("GET", f"/api/cases/{case['id']}/documents/{doc['id']}/pdf", login)
        marks = extract_marks(pdf)
        strokes = json.loads(marks[field])["strokes"]
        assert len(strokes) == 1 and len(strokes[0]) >= 5  # the line drawn in the page

        console = await browser.new_page()
        await console.goto(server.base_url + "/static/console.html")
        await console.wait_for_selector("#login")


async def test_party_page_records_the_partys_own_refusal(server: Server, browser: Any) -> None:  # noqa: F811
    """The refusal button on the party page: a reason is asked for, the refusal is printed on
    the document with the party as its recorder, the custody log has it, the page says so."""
    await server.app[DB].run(lambda c: create_officer(c, "li", PASSWORD, "officer", "b"))
    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(
                method, server.base_url + path, json=body, headers=headers
            ) as response:
                assert response.status < 300, await response.text()
                if response.content_type == "application/json":
                    return await response.json()
                return await response.read()

        login = (await call("POST", "/api/login", None, {"username": "li", "password": PASSWORD}))[
            "token"
        ]
        case = await call("POST", "/api/cases", login, {"kind": "violation", "title": "t"})
        party = await call(
            "POST", f"/api/cases/{case['id']}/parties", login, {"role": "driver", "name": "张三"}
        )
        await call("POST", f"/api/cases/{case['id']}/sessions", login)
        invite = await call(
            "POST", f"/api/cases/{case['id']}/invitations", login, {"party_id": party["id"]}
        )
        s = sample("penalty_notice")
        doc = await call(
            "POST",
            f"/api/cases/{case['id']}/documents",
            login,
            {
                "kind": "penalty_notice",
                "data": {
                    "department": s["department"],
                    "case": s["case"],
                    "penalty": s["penalty"],
                    "parties": [{"id": party["id"], "id_number": "110101198503020011"}],
                },
            },
        )
        page = await browser.new_page()
        await page.goto(server.base_url + invite["link"] + "&lang=zh-CN")
        item = f"#party-documents li[data-document='{doc['id']}']"
        await page.wait_for_selector(item + " .refuse-box button.refuse")
        said = "document.getElementById('sign-error').textContent"
        await page.click(item + " button.refuse")
        await _wait_for(page, said + ".includes('拒签理由')")
        await page.fill(item + " textarea.refuse-reason", "不认可违法事实")
        await page.click(item + " button.refuse")
        try:
            await _wait_for(page, said + ".includes('已记录拒绝签名')", timeout=60)
        except AssertionError:
            raise AssertionError(f"the page said: {await page.evaluate(said)}") from None
        await page.wait_for_selector(item + " p.refused")
        assert await page.query_selector(item + " .sign-box") is None  # nothing left to sign

        field = f"party-p{party['id']}"
        state = await call("GET", f"/api/cases/{case['id']}/documents/{doc['id']}", login)
        assert state["state"]["refused"] == [field]
        assert state["refusals"][-1]["recorded_by"] == f"party:{party['id']}"
        (entry,) = [e for e in server.app[CUSTODY].entries() if e["type"] == "document.refused"]
        assert entry["actor"] == f"party:{party['id']}" and entry["reason"] == "不认可违法事实"
        assert entry["sha256"] == state["sha256"]
        pdf = await call("GET", f"/api/cases/{case['id']}/documents/{doc['id']}/pdf", login)
    import pypdfium2

    text = "".join(p.get_textpage().get_text_range() for p in pypdfium2.PdfDocument(pdf))
    assert "不认可违法事实" in text and "张三（本人）" in text


async def test_console_writes_the_record_during_the_session(server: Server, browser: Any) -> None:  # noqa: F811
    await server.app[DB].run(lambda c: create_officer(c, "li", PASSWORD, "officer", "brigade-1"))
    page = await browser.new_page()
    await page.goto(server.base_url + "/console?lang=zh-CN")
    await page.fill("#username", "li")
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button")
    await _wait_for(page, "document.getElementById('who').textContent.includes('li')")
    await page.select_option("#case-kind", "accident")
    await page.fill("#case-title", "G15 追尾")
    await page.click("#new-case button")
    await page.wait_for_selector("#case-heading:has-text('G15 追尾')")
    await page.fill("#party-name", "张三")
    await page.click("#new-party button")
    await page.wait_for_selector("#parties li:has-text('张三')")
    await page.click("#open-session button")
    await page.wait_for_selector("#session-open:not([hidden])")
    await page.wait_for_selector(
        "#records-documents:not([hidden]) #record-party option", state="attached"
    )
    await page.click("#record-new")
    await page.wait_for_selector("#record-turns li[data-phase='writing']")
    await page.fill("#turn-q", "请讲一下事故经过。")
    await page.fill("#turn-a", "我追尾了前车。")
    await page.click("#record-turn button[type=submit]")
    await page.wait_for_selector("#record-turns li:has-text('我追尾了前车。')")
    text = await page.inner_text("#record-turns")
    assert "录像" in text and "请讲一下事故经过。" in text
    assert await page.inner_text("#rd-error") == ""
