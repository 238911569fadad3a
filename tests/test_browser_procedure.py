"""The procedure pages in Debian's Chromium: the party on a phone (390x844, touch, zh-CN) opens a
document delivered to it, acknowledges it and sees the receipt, asks for a review, and sees a
second determination's review window closed; the officer at a desk sees the case's deadlines
(the overdue one first), the missing consent said, an electronic delivery fail and its post and
public notice recorded, the penalty procedure's refusal in words, the overdue view per brigade,
and the panel in English after the switch. Each state: a screenshot in the test's tmp dir, no
horizontal overflow at 360 px, no CSP violation. The server, its outbox or SMS gateway, the
documents' signatures and receipts are all real (tests/test_delivery.py builds the papers)."""

from __future__ import annotations

import datetime
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from control.deadlines.rules import china_today
from tests.conftest import PASSWORD, Api, Server, make_config, officer_login, start_server
from tests.test_browser_party import (
    DESKTOP,
    PHONE,
    Shots,
    chromium,
    invite,
    new_page,
    no_overflow,
    until,
)
from tests.test_deadlines import penalty_data
from tests.test_delivery import consent, make_determination, party_in_session
from tests.test_procedure_party_view import backdate, deliver
from tests.test_records_documents import party_sign

pytestmark = pytest.mark.browser


def cn_day(day: datetime.date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def camera(tmp_path: Path) -> Path:
    from tests.test_browser import face_image, write_y4m

    y4m = tmp_path / "face.y4m"
    write_y4m(y4m, face_image())
    return y4m


@pytest.fixture
async def outbox_server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


async def test_party_on_a_phone_opens_acknowledges_and_asks_for_a_review(
    outbox_server: Server, camera: Path, tmp_path: Path
) -> None:
    """...and the officer records the review's outcome in the console, which the party sees."""
    server = outbox_server
    shots = Shots(tmp_path, "party-procedure")
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        p = await party_in_session(server, api, li, name="张三")
        await consent(api, li, p)
        first = await make_determination(api, li, p)
        sent = await deliver(api, li, p.cid, first["id"], p.pid)
        assert sent["status"] == "sent", sent
        # a second determination delivered a month ago: its review window has closed
        second = await make_determination(api, li, p)
        old = await deliver(api, li, p.cid, second["id"], p.pid)
        await backdate(server, "deliveries", "sent_at", old["id"], 30)
        link = await invite(api, li, p.cid, p.pid)

        async with chromium(camera) as browser:
            context, page, problems = await new_page(browser, "zh-CN", PHONE)
            await page.goto(server.base_url + link)
            item = f"#party-case li[data-delivery='{sent['id']}']"
            await page.wait_for_selector(item + "[data-status='new'] button.open", timeout=60000)
            assert await page.evaluate("document.documentElement.lang") == "zh-CN"
            text = await page.inner_text("#party-case")
            assert "送达给您的法律文书" in text and first["number"] in text
            await shots.take(page, "delivered")
            await no_overflow(page, "the delivered document")

            # open: the PDF in a tab of its own, the opening recorded
            async with context.expect_page() as opened:
                await page.tap(item + " button.open")
            pdf_tab = await opened.value
            await pdf_tab.close()
            await page.wait_for_selector(item + "[data-status='opened'] button.acknowledge")
            status, listed = await api.call("GET", f"/api/cases/{p.cid}/deliveries", li)
            row = next(d for d in listed["deliveries"] if d["id"] == sent["id"])
            assert row["opened_at"] and not row["acknowledged_at"]

            await page.tap(item + " button.acknowledge")
            await page.wait_for_selector(
                item + "[data-status='acknowledged'] .pc-receipt", timeout=60000
            )
            assert "已签收" in await page.inner_text("#pc-message")
            assert "电子送达凭证" in await page.inner_text(item + " .pc-receipt")
            status, listed = await api.call("GET", f"/api/cases/{p.cid}/deliveries", li)
            row = next(d for d in listed["deliveries"] if d["id"] == sent["id"])
            assert row["acknowledged_at"] and row["receipt_id"], row
            await shots.take(page, "acknowledged")
            await no_overflow(page, "the receipt")

            # the review window: its closing day shown; a review asked with reasons
            window = await page.inner_text(item + " .pc-review .window")
            assert "申请复核" in window and "日" in window
            await page.tap(item + " button.ask-review")
            await until(
                page, "document.getElementById('pc-message').textContent.includes('复核的理由')"
            )
            await page.fill(item + " textarea.review-reasons", "对方车辆未打转向灯，责任划分有误。")
            await page.tap(item + " button.ask-review")
            await page.wait_for_selector(item + " .pc-review p.asked")
            status, reviews = await api.call("GET", f"/api/cases/{p.cid}/reviews", li)
            assert status == 200
            (review,) = reviews["reviews"]
            assert review["delivery_id"] == sent["id"]
            assert review["reasons"] == "对方车辆未打转向灯，责任划分有误。"

            # the older determination: the window closed, said with its date
            late = f"#party-case li[data-delivery='{old['id']}'] .pc-review p.closed"
            closed = await page.inner_text(late)
            assert "已于" in closed and "届满" in closed, closed
            assert (
                await page.query_selector(
                    f"#party-case li[data-delivery='{old['id']}'] button.ask-review"
                )
                is None
            )
            await shots.take(page, "review-asked")
            await no_overflow(page, "the review asked")

            # the officer, at a desk, sees the request and records the outcome
            desk, console, desk_problems = await new_page(browser, "zh-CN", DESKTOP)
            await console.goto(server.base_url + "/console")
            await console.fill("#username", "li")
            await console.fill("#password", PASSWORD)
            await console.click("#login-form button")
            await until(console, "document.getElementById('who').textContent.includes('li')")
            await console.goto(server.base_url + f"/console#case/{p.cid}")
            asked = f"#proc-reviews li[data-review='{review['id']}']"
            await console.wait_for_selector(asked + " form", timeout=60000)
            assert "对方车辆未打转向灯" in await console.inner_text(asked)
            await console.select_option(asked + " select.outcome-pick", "upheld")
            await console.fill(asked + " textarea.outcome-note", "经复核，原认定事实清楚。")
            await console.click(asked + " button[type=submit]")
            await console.wait_for_selector(asked + " .outcome")
            assert desk_problems == [], desk_problems
            await desk.close()
            # ... and the party's page says it
            outcome = item + " .pc-review p.outcome"
            await until(
                page,
                f'(document.querySelector("{outcome}") || {{}}).textContent'
                "?.includes('维持原道路交通事故认定')",
            )
            assert "经复核，原认定事实清楚。" in await page.inner_text(outcome)
            assert problems == [], problems
            await context.close()


async def test_console_deadlines_and_a_failed_delivery_with_its_fallback(
    tmp_path: Path, camera: Path
) -> None:
    gateway = f"http://127.0.0.1:{closed_port()}/sms"  # nobody listens: every SMS fails
    server = await start_server(
        make_config(
            tmp_path, auth={"dev_join": False}, delivery={"sms_url": gateway, "timeout": 2.0}
        )
    )
    shots = Shots(tmp_path, "console-procedure")
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li, name="张三")
            await consent(api, li, p)
            doc = await make_determination(api, li, p)
            # a party added later, without a consent to electronic delivery
            status, other = await api.call(
                "POST", f"/api/cases/{p.cid}/parties", li, {"role": "witness", "name": "李四"}
            )
            assert status == 201, other
            # made eight days ago and not delivered: the 3 working days to deliver have passed
            await backdate(server, "documents", "created_at", doc["id"], 8)
            # an old violation: the penalty notice of a 3,000 yuan fine (a hearing is offered),
            # signed by the driver (the periods run from when the party was notified)
            v = await party_in_session(server, api, li, name="王五", kind="violation")
            vcase = {"id": v.cid}
            status, notice = await api.call(
                "POST",
                f"/api/cases/{v.cid}/documents",
                li,
                {"kind": "penalty_notice", "data": penalty_data(v.pid, "penalty_notice", 3000)},
            )
            assert status == 201, notice
            status, signed = await party_sign(api, v.token, notice["id"], f"party-p{v.pid}", v.key)
            assert status == 200, signed

            async with chromium(camera) as browser:
                context, page, problems = await new_page(browser, "zh-CN", DESKTOP)
                await page.goto(server.base_url + "/console")
                await page.fill("#username", "li")
                await page.fill("#password", PASSWORD)
                await page.click("#login-form button")
                await until(page, "document.getElementById('who').textContent.includes('li')")
                await page.goto(server.base_url + f"/console#case/{p.cid}")
                late = "#proc-deadlines li.deadline[data-limit='determination_delivery']"
                await page.wait_for_selector(late + "[data-status='overdue'].next", timeout=60000)
                line = await page.inner_text(late)
                assert "已超期" in line and "3 个工作日" in line and "146号令" in line, line
                assert "下一个期限" in await page.inner_text("#proc-next")
                # the party without a signed consent: said, with what to do
                missing = f"#proc-deliveries li[data-party-id='{other['id']}'] .consent-missing"
                assert "尚未签署送达地址确认书" in await page.inner_text(missing)
                signed = f"#proc-deliveries li[data-party-id='{p.pid}']"
                assert "已签署送达地址确认书" in await page.inner_text(signed)
                # the penalty procedure: no notice, the refusal in words
                assert "尚无行政处罚告知笔录" in await page.inner_text("#proc-penalty")
                await shots.take(page, "deadlines")
                await no_overflow(page, "the case's procedure panel")

                # deliver: the SMS gateway fails, the fallback opens
                row = f"{signed} li.delivery-doc[data-document='{doc['id']}']"
                await page.click(row + " button.deliver")
                await page.wait_for_selector(
                    row + " .delivery[data-status='failed'] form.fallback[data-action='post']",
                    timeout=60000,
                )
                assert "电子送达未成功" in await page.inner_text("#proc-message")
                await page.fill(row + " form.fallback .fallback-reference", "EMS1234567890")
                await page.click(row + " form.fallback button[type=submit]")
                await page.wait_for_selector(row + " form.fallback[data-action='public_notice']")
                posted = await page.inner_text(row + " .fallback-done[data-action='post']")
                assert "EMS1234567890" in posted and cn_day(china_today()) in posted, posted
                await page.fill(row + " form.fallback .fallback-reference", "某公告〔2026〕1号")
                await page.fill(row + " form.fallback .fallback-note", "邮件退回，地址不详")
                await page.click(row + " form.fallback button[type=submit]")
                noticed = row + " .fallback-done[data-action='public_notice']"
                await page.wait_for_selector(noticed)
                ends = cn_day(china_today() + datetime.timedelta(days=60))
                assert ends in await page.inner_text(noticed)
                assert ends in await page.inner_text("#proc-message")
                status, listed = await api.call("GET", f"/api/cases/{p.cid}/deliveries", li)
                (made,) = listed["deliveries"]
                assert made["status"] == "failed"
                assert [f["action"] for f in made["fallbacks"]] == ["post", "public_notice"]
                assert made["fallbacks"][1]["note"] == "邮件退回，地址不详"
                await shots.take(page, "fallback")
                await no_overflow(page, "the fallback recorded")

                # the overdue view: the brigade's overdue step, linking to the case
                await page.click("#nav a[data-view='overdue']")
                link = (
                    f"#overdue section[data-brigade='brigade-1'] li.overdue a[href='#case/{p.cid}']"
                )
                await page.wait_for_selector(link, timeout=60000)
                heading = await page.inner_text("#overdue section[data-brigade='brigade-1'] h3")
                assert "超期 1 项" in heading, heading
                await shots.take(page, "overdue")
                await no_overflow(page, "the overdue view")
                await page.click(link)
                await page.wait_for_selector("#procedure-panel:visible")

                # the penalty procedure of the violation: the periods, a step refused in words,
                # the waiver recorded, and what still stops the decision
                await page.goto(server.base_url + f"/console#case/{vcase['id']}")
                await page.wait_for_selector("#proc-penalty form.penalty-step", timeout=60000)
                penalty = await page.inner_text("#proc-penalty")
                assert notice["number"] in penalty and "拟罚款 3000 元" in penalty, penalty
                assert "有权要求听证" in penalty
                assert "陈述、申辩期限尚未届满" in await page.inner_text("#proc-decision")
                form = "#proc-penalty form.penalty-step"
                await page.select_option(form + " select.step-pick", "payment")
                await page.fill(form + " input.step-reference", "12123-0001")
                await page.click(form + " button[type=submit]")
                await until(
                    page,
                    "document.getElementById('proc-message').textContent"
                    ".includes('尚未作出处罚决定')",
                )
                await page.select_option(form + " select.step-pick", "waiver")
                await page.select_option(form + " select.step-right", "statement")
                await page.fill(form + " textarea.step-text", "当事人当场表示放弃陈述、申辩")
                await page.click(form + " button[type=submit]")
                await page.wait_for_selector("#proc-penalty li[data-step='waiver']")
                decision = await page.inner_text("#proc-decision")
                assert "要求听证" in decision and "陈述、申辩期限尚未届满" not in decision, decision
                status, state = await api.call("GET", f"/api/cases/{vcase['id']}/penalty", li)
                assert [s["step"] for s in state["steps"]] == ["waiver"]
                assert state["refusal"]["error"] == "hearing_period_open"
                await shots.take(page, "penalty")
                await no_overflow(page, "the penalty procedure")
                await page.goto(server.base_url + f"/console#case/{p.cid}")
                await page.wait_for_selector(late)

                # English once: the panel's words switch with the page
                await page.click("#lang")
                await until(
                    page,
                    "document.getElementById('procedure-heading').textContent"
                    ".includes('Delivery, deadlines')",
                )
                await until(
                    page,
                    "document.getElementById('proc-deadlines').textContent.includes('overdue')",
                )
                assert "working days" in await page.inner_text(late)
                await shots.take(page, "english")
                assert problems == [], problems
                await context.close()
    finally:
        await server.runner.cleanup()
