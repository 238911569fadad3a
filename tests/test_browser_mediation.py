"""Compensation mediation (docs/mediation.md) in Debian's Chromium: the officer at a desk
(zh-CN) opens the mediation on the case's mediation session in the console's panel, adds an
agent for 李四 with a power of attorney (uploaded, accepted there) and an insurer for 张三,
drafts the agreement (items, amounts, shares); 张三 on a phone (390x844, touch, the fake camera
showing the astronaut whose reference is enrolled: the real face check before the call) sees
the draft appear on its page while the officer saves it, then signs the 调解书 on the page (a
mark drawn, a WebCrypto key made there). 李四 does the same on a phone of his own (another
Chromium whose camera shows his face). The agent signs through the API (after a face match
logged as the verifier logs it); the officer signs their box in the console, which then shows
the agreement in effect. Each state: a screenshot in the test's tmp dir, no horizontal overflow
at 360 px, no CSP violation."""

from __future__ import annotations

import asyncio
import gc
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PeerClient
from control.deadlines.rules import china_today
from tests import samples
from tests.conftest import CONSENT, PASSWORD, Api, make_config, officer_login, start_server
from tests.test_browser import write_y4m
from tests.test_browser_case_flow import _draw_and_sign
from tests.test_browser_party import DESKTOP, PHONE, Shots, chromium, new_page, no_overflow, until
from tests.test_prejoin import canvas
from tests.test_records_documents import PartyKey, party_sign, seed_match
from tests.test_verifier import ASTRONAUT, HANKS, _png

pytestmark = pytest.mark.browser


async def phone_joins(browser: Any, link: str) -> tuple[Any, Any, list[str]]:
    """A party's phone opens its link, consents, passes the face check before the call (the
    real model, the fake camera) and is in the call with its mediation panel shown."""
    context, page, problems = await new_page(browser, "zh-CN", PHONE)
    await page.goto(link)
    await page.wait_for_selector("#consent-form:not([hidden])", timeout=60_000)
    await until(page, "document.getElementById('preview').videoWidth > 0")
    await page.check("#consent-recording")
    await page.check("#consent-face")
    await page.click("#consent-form button[type=submit]")
    await until(page, "window.remotecase.prejoin.status === 'passed'", timeout=90)
    await page.wait_for_selector("#party-mediation:not([hidden])", timeout=60_000)
    return context, page, problems


async def sign_on_page(api: Api, li: str, page: Any, path: str, field: str) -> None:
    """The party draws its mark in its box and signs; the document has the signature."""
    await _draw_and_sign(page, field)
    for _ in range(600):
        _, doc = await api.call("GET", path, li)
        if field in doc["state"]["signed"]:
            return
        await asyncio.sleep(0.1)
    said = await page.evaluate("document.getElementById('sign-error').textContent")
    raise AssertionError(f"the page said: {said}")


@pytest.mark.timeout(480)  # two browsers' contexts, a face check, signatures: 2 shared cores
async def test_mediation_in_the_console_and_on_the_party_s_phone(tmp_path: Path) -> None:
    try:
        await _mediation(tmp_path)
    finally:
        gc.unfreeze()


async def _mediation(tmp_path: Path) -> None:
    server = await start_server(
        make_config(
            tmp_path,
            auth={"dev_join": False, "prejoin_check": True},
            verifier={"alert_after": 30.0, "no_face_after": 30.0, "sample_interval": 10.0},
        )
    )
    gc.freeze()  # as a real server does at start (see tests/test_browser_case_flow.py)
    camera = tmp_path / "astronaut.y4m"
    await asyncio.to_thread(write_y4m, camera, canvas(ASTRONAUT))
    camera2 = tmp_path / "hanks.y4m"  # 李四's phone: another Chromium, another camera
    await asyncio.to_thread(write_y4m, camera2, canvas(HANKS))
    shots = Shots(tmp_path, "mediation")
    officer: PeerClient | None = None
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            status, case = await api.call(
                "POST", "/api/cases", li, {"kind": "accident", "title": "追尾事故"}
            )
            assert status == 201, case
            cid = case["id"]
            ids = []
            for name in ("张三", "李四"):
                status, party = await api.call(
                    "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": name}
                )
                assert status == 201, party
                ids.append(party["id"])
            p1, p2 = ids
            status, body = await api.call(
                "PUT", f"/api/cases/{cid}/parties/{p1}/reference", li, data=_png(ASTRONAUT)
            )
            assert status == 200, body
            status, body = await api.call(
                "PUT", f"/api/cases/{cid}/parties/{p2}/reference", li, data=_png(HANKS)
            )
            assert status == 200, body
            status, session = await api.call(
                "POST", f"/api/cases/{cid}/sessions", li, {"purpose": "mediation"}
            )
            assert status == 201, session
            # 李四's power of attorney for his lawyer, uploaded to the case
            status, poa = await api.call(
                "POST",
                f"/api/cases/{cid}/materials?name=授权委托书.pdf",
                li,
                data=await asyncio.to_thread(samples.pdf, 1),
            )
            assert status == 201, poa
            status, invite = await api.call(
                "POST", f"/api/cases/{cid}/invitations", li, {"party_id": p1}
            )
            assert status == 201, invite
            officer = PeerClient(server.base_url, session["token"], decode=False)
            await officer.connect()

            async with chromium(camera) as browser:
                desk, console, desk_problems = await new_page(browser, "zh-CN", DESKTOP)
                await console.goto(server.base_url + "/console")
                await console.fill("#username", "li")
                await console.fill("#password", PASSWORD)
                await console.click("#login-form button")
                await until(console, "document.getElementById('who').textContent.includes('li')")
                await console.goto(server.base_url + f"/console#case/{cid}")

                # open the mediation: both parties are sides, the dates given
                await console.wait_for_selector("#mediation-open", timeout=60_000)
                today = china_today()
                dates = console.locator("#mediation-open input[type=date]")
                await dates.nth(0).fill((today - timedelta(days=7)).isoformat())
                await dates.nth(1).fill((today - timedelta(days=2)).isoformat())
                await console.click("#mediation-open button[type=submit]")
                await console.wait_for_selector("#mediation-status", timeout=30_000)
                assert "调解中" in await console.inner_text("#mediation-status")
                status, listed = await api.call("GET", f"/api/cases/{cid}/mediations", li)
                (med,) = listed["mediations"]
                mid = med["id"]
                sides = {p["party_id"]: p["id"] for p in med["participants"]}

                # the agent with the power of attorney, accepted; the insurer
                await console.select_option("#mediation-add select >> nth=0", str(p2))
                await console.select_option("#mediation-add select >> nth=1", "agent")
                await console.fill("#mediation-add input >> nth=0", "王律师")
                await console.fill("#mediation-add input >> nth=1", "13900000003")
                await console.select_option("#mediation-add select >> nth=2", str(poa["id"]))
                await console.click("#mediation-add button[type=submit]")
                accept = "#mediation-people li button:has-text('通过授权委托书')"
                await console.wait_for_selector(accept, timeout=30_000)
                await console.click(accept)
                await console.wait_for_selector(
                    "#mediation-people li:has-text('授权委托书已通过')", timeout=30_000
                )
                await console.select_option("#mediation-add select >> nth=0", str(p1))
                await console.select_option("#mediation-add select >> nth=1", "insurer")
                await console.fill("#mediation-add input >> nth=0", "中国人保财险苏州分公司")
                await console.click("#mediation-add button[type=submit]")
                await console.wait_for_selector(
                    "#mediation-people li:has-text('中国人保财险苏州分公司')", timeout=30_000
                )
                status, med = await api.call("GET", f"/api/cases/{cid}/mediations/{mid}", li)
                people = {p["name"]: p for p in med["participants"]}
                assert people["王律师"]["attorney_status"] == "accepted", people
                assert people["中国人保财险苏州分公司"]["kind"] == "insurer", people
                await shots.take(console, "console-people")

                # 张三 on the phone: the face check before the call, then its page
                context, page, problems = await phone_joins(
                    browser, server.base_url + invite["link"]
                )
                assert "尚无草案" in await page.inner_text("#party-mediation")

                # the draft, written in the console, appears on the phone
                form = "#mediation-draft"
                await console.fill(f"{form} textarea >> nth=0", "苏E12345车辆维修费8,600元")
                # an item added and removed again keeps what was typed
                await console.click(f"{form} button:has-text('添加项目')")
                await console.wait_for_selector(f"{form} legend:has-text('赔偿项目 2')")
                assert "8,600" in await console.input_value(f"{form} textarea >> nth=0")
                await console.click(f"{form} fieldset >> nth=1 >> button:has-text('删除项目')")
                await console.wait_for_selector(
                    f"{form} legend:has-text('赔偿项目 2')", state="detached"
                )
                assert "8,600" in await console.input_value(f"{form} textarea >> nth=0")
                item = f"{form} fieldset >> nth=0"
                await console.fill(f"{item} >> input >> nth=0", "车辆维修费")
                await console.fill(f"{item} >> input >> nth=1", "8600")
                await console.select_option(
                    f"{item} >> select >> nth=0", str(people["中国人保财险苏州分公司"]["id"])
                )
                await console.select_option(f"{item} >> select >> nth=1", str(sides[p2]))
                await console.fill(f"{item} >> input >> nth=2", "银行转账")
                due = (today + timedelta(days=9)).isoformat()
                await console.fill(f"{item} >> input[type=date]", due)
                shares = console.locator(f"{form} fieldset:has-text('赔偿比例') input")
                await shares.nth(0).fill("100")
                await shares.nth(1).fill("0")
                await console.click(f"{form} > button[type=submit]")
                await console.wait_for_selector("#mediation:has-text('第 1 稿')", timeout=30_000)
                await page.wait_for_selector("#party-mediation:has-text('第 1 稿')", timeout=30_000)
                text = await page.inner_text("#party-mediation")
                assert "车辆维修费" in text and "8,600" in text, text
                await shots.take(page, "party-draft")
                await no_overflow(page, "the party's draft")
                await shots.take(console, "console-draft")

                # the 调解书, generated in the console; 张三 signs it on the phone
                await console.fill("#mediation-agreement textarea", "张三驾车追尾李四车辆。")
                await console.click("#mediation-agreement button[type=submit]")
                await console.wait_for_selector("#mediation-agreement-state", timeout=30_000)
                status, med = await api.call("GET", f"/api/cases/{cid}/mediations/{mid}", li)
                doc_id = med["agreement_id"]
                assert doc_id, med
                await page.wait_for_selector(
                    "#party-mediation:has-text('请在下方')", timeout=30_000
                )
                path = f"/api/cases/{cid}/documents/{doc_id}"
                await sign_on_page(api, li, page, path, f"party-p{p1}")
                await shots.take(page, "party-signed")
                await no_overflow(page, "the signed agreement")

                # 李四 on a phone of his own: his face checked, he signs there too
                status, invite2 = await api.call(
                    "POST", f"/api/cases/{cid}/invitations", li, {"party_id": p2}
                )
                assert status == 201, invite2
                async with chromium(camera2) as browser2:
                    context2, page2, problems2 = await phone_joins(
                        browser2, server.base_url + invite2["link"]
                    )
                    await page2.wait_for_selector(
                        "#party-mediation:has-text('请在下方')", timeout=30_000
                    )
                    await sign_on_page(api, li, page2, path, f"party-p{p2}")
                    await shots.take(page2, "second-party-signed")
                    await no_overflow(page2, "the second party's signed agreement")
                    assert problems2 == [], problems2
                    await context2.close()

                # the agent through the API, then the officer in the console: in effect
                agent = people["王律师"]["party_id"]
                for pid in (agent,):
                    status, link = await api.call(
                        "POST", f"/api/cases/{cid}/invitations", li, {"party_id": pid}
                    )
                    assert status == 201, link
                    status, redeemed = await api.call(
                        "POST",
                        "/api/invitations/redeem",
                        json={"token": link["token"], "consent": CONSENT},
                    )
                    assert status == 200, redeemed
                    await seed_match(server, session["room"], pid)
                    status, state = await party_sign(
                        api, redeemed["token"], doc_id, f"party-p{pid}", PartyKey()
                    )
                    assert status == 200, state
                mine = "#doc-list li:has-text('调解书') button:has-text('签名（调解人）')"
                await console.wait_for_selector(mine, timeout=30_000)
                await console.click(mine)
                await console.wait_for_selector(
                    "#mediation-agreement-state:has-text('已生效')", timeout=30_000
                )
                assert "调解书已生效" in await console.inner_text("#mediation-status")
                await shots.take(console, "console-effective")
                await no_overflow(console, "the console's effective agreement")
                await page.wait_for_selector(
                    "#party-mediation:has-text('调解书已生效')", timeout=30_000
                )
                shown = await page.inner_text("#party-mediation")
                assert "调解书已生效" in shown and "民警正在拟写" not in shown, shown
                assert "请在下方" not in shown, shown
                # the console's list of what happened names the steps in words
                effective = "#events li[data-type='mediation.effective']"
                assert "调解书已生效" in await console.inner_text(effective)
                await shots.take(page, "party-effective")
                assert problems == [], problems
                assert desk_problems == [], desk_problems
                await context.close()
                await desk.close()
    finally:
        if officer is not None:
            await officer.close()
        await server.runner.cleanup()
