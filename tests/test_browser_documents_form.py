"""Documents without JSON (issue 15): the officer generates a determination (一般程序) for a
case with two parties through the form built from the template, in Debian's Chromium, at desktop
size in Chinese and at phone size (390x844, touch) in English. A field left empty is refused by
the server and shown at that field (in the party's group), the document is made once it is
filled, its PDF downloads; the panel shows no untranslated text (zh-CN), nothing is wider than
360 px, no CSP violation; screenshots in the test's tmp dir."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD, Api, Server, case_with_party, officer_login
from tests.test_browser import _wait_for, face_image, write_y4m
from tests.test_browser_console import see
from tests.test_browser_officer_zh import DESKTOP, chinese_only
from tests.test_browser_party import PHONE, Shots, chromium, new_page, no_overflow

pytestmark = pytest.mark.browser

WEB = Path(__file__).parent.parent / "control" / "web" / "i18n"


def record_words(lang: str) -> dict[str, str]:
    out: dict[str, str] = json.loads((WEB / lang / "record.json").read_text(encoding="utf-8"))
    return out


# what the form asks for a determination (the case fills the rest), by the data-path of its input
FILLED_IN = {
    "department.name": "某市公安局交通警察支队一大队",
    "case.time": "2026-11-30T08:15",
    "case.place": "沈海高速 203 公里处",
    "case.weather": "晴",
    "findings.road": "高速公路，干燥路面",
    "findings.facts": "甲车追尾乙车。",
    "findings.evidence": "现场照片、行车记录仪视频。",
    "case.issue_date": "2026-12-01",
}
PARTY_FIELDS = {
    "id_number": ("110101199003071234", "110101199105081234"),
    "vehicle.plate": ("苏A12345", "苏B54321"),
    "responsibility": ("全部责任", "无责任"),
}


async def _open_case(page: Any, base_url: str, case_id: int, lang: str, user: str = "li") -> None:
    await page.goto(base_url + "/console")
    await see(page, "#login-form")
    await _wait_for(page, f"document.documentElement.lang === {json.dumps(lang)}")
    await page.fill("#username", user)
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button")
    await _wait_for(page, f"document.getElementById('who').textContent.includes('{user}')")
    await page.click("#nav a[data-view=cases]")
    await page.click(f"#cases a[href='#case/{case_id}']")
    await see(page, "#records-documents:not([hidden]) #doc-fields fieldset")


async def _generate(
    page: Any, shots: Shots, words: dict[str, str], lang: str, supervisor: bool = False
) -> str:
    """Fill the determination's form but the second party's responsibility, see it refused
    there, fill it, and see the document made: its number. A supervisor may also read the
    data the form sends."""
    await page.select_option("#doc-kind", "determination_ordinary")
    made = page.locator("#doc-list li[data-kind=determination_ordinary]")
    before = await made.count()
    await see(page, "#doc-fields fieldset[data-party-id] >> nth=1")
    # one group per party, by name; no raw path or JSON in the panel
    legends = await page.locator("#doc-fields legend").all_inner_texts()
    assert any("王伟" in x for x in legends) and any("李娜" in x for x in legends), legends
    panel = await page.inner_text("#records-documents")
    for raw in ("findings.", "parties[", "{", "determination_ordinary", "JSON"):
        assert raw not in panel, (raw, panel)
    # the raw data: supervisors only, read-only, closed until asked for
    assert await page.locator("#doc-raw").is_visible() == supervisor
    # long texts in text areas, dates in date pickers
    assert await page.get_attribute('[data-path="findings.facts"]', "rows") is not None
    assert await page.get_attribute('[data-path="case.issue_date"]', "type") == "date"
    assert await page.get_attribute('[data-path="case.time"]', "type") == "datetime-local"
    for path, value in FILLED_IN.items():
        await page.fill(f'[data-path="{path}"]', value)
    for name, (first, second) in PARTY_FIELDS.items():
        await page.fill(f'[data-path="parties[0].{name}"]', first)
        if name != "responsibility":
            await page.fill(f'[data-path="parties[1].{name}"]', second)
    if supervisor:
        await page.click("#doc-raw summary")
        raw = json.loads(await page.inner_text("#doc-raw-data"))
        assert raw["kind"] == "determination_ordinary"
        assert raw["data"]["findings"]["facts"] == FILLED_IN["findings.facts"]
        assert raw["data"]["case"]["issue_date"] == "2026年12月01日"
        assert raw["data"]["case"]["time"] == "2026年11月30日 08时15分"
        assert [p.get("responsibility") for p in raw["data"]["parties"]] == ["全部责任", None]
        await page.click("#doc-raw summary")
    await page.click("#doc-new button[type=submit]")
    left = '[data-path="parties[1].responsibility"]'
    await see(page, f'{left}[aria-invalid="true"]')
    note = page.locator(f"label:has({left}) .field-error")
    assert await note.inner_text() == words["rec.doc.missing_here"]
    assert await page.locator('#doc-new [aria-invalid="true"]').count() == 1
    assert words["rec.doc.missing"].replace("{n}", "1") in await page.inner_text("#rd-error")
    assert await made.count() == before  # nothing numbered
    await shots.take(page, f"{lang}-missing")
    await no_overflow(page, f"{lang} missing field")

    await page.fill(left, PARTY_FIELDS["responsibility"][1])
    await page.click("#doc-new button[type=submit]")
    await _wait_for(
        page,
        "document.querySelectorAll('#doc-list li[data-kind=determination_ordinary]').length"
        f" === {before + 1}",
    )
    assert await page.locator('#doc-new [aria-invalid="true"]').count() == 0
    item = await made.last.inner_text()
    assert words["rec.kind.determination_ordinary"] in item
    await shots.take(page, f"{lang}-made")
    await no_overflow(page, f"{lang} document made")
    return item


async def _pdf_head(page: Any, case_id: int) -> str:
    head: str = await page.evaluate(
        """async (caseId) => {
          const con = window.remotecaseConsole;
          const auth = { Authorization: `Bearer ${con.token}` };
          const list = await fetch(`/api/cases/${caseId}/documents`, { headers: auth });
          const docs = await list.json();
          const id = docs.documents[docs.documents.length - 1].id;
          const pdf = await fetch(`/api/cases/${caseId}/documents/${id}/pdf`, { headers: auth });
          return new TextDecoder().decode((await pdf.arrayBuffer()).slice(0, 5));
        }""",
        case_id,
    )
    return head


async def test_a_determination_through_the_form(server: Server, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api, "li", "brigade-1")
        await officer_login(server, api, "wu", "brigade-1", role="supervisor")
        case_id, _ = await case_with_party(api, li, name="王伟")
        status, body = await api.call(
            "POST", f"/api/cases/{case_id}/parties", li, {"role": "driver", "name": "李娜"}
        )
        assert status == 201, body
    camera = tmp_path / "face.y4m"
    await asyncio.to_thread(lambda: write_y4m(camera, face_image()))
    shots = Shots(tmp_path, "documents-form")
    typed = {"li", "brigade-1", "test", "case"}  # the account, and the case's title from the API

    async with chromium(camera) as browser:
        context, page, problems = await new_page(browser, "zh-CN", DESKTOP)
        await _open_case(page, server.base_url, case_id, "zh-CN")
        await chinese_only(page, typed, "documents form")
        await _generate(page, shots, record_words("zh-CN"), "zh-CN")
        await chinese_only(page, typed, "document made")
        assert await _pdf_head(page, case_id) == "%PDF-"
        await context.close()
        assert problems == [], problems

        # the second language at phone size, a supervisor: English labels from the catalog
        context, page, problems = await new_page(browser, "en", PHONE)
        await _open_case(page, server.base_url, case_id, "en", "wu")
        en = record_words("en")
        labels = await page.locator("#doc-fields label > span:first-child").all_inner_texts()
        assert any(en["rec.field.parties[].responsibility"] in x for x in labels), labels
        await _generate(page, shots, en, "en", supervisor=True)
        assert await _pdf_head(page, case_id) == "%PDF-"
        await context.close()
        assert problems == [], problems
