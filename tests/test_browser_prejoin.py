"""The identity check before the call on the party page, in Debian's Chromium (issue 13).

The fake camera plays a Y4M the test makes from a real face: the astronaut (the party, whose
reference is enrolled), Tom Hanks (someone else), or a plain grey picture (nobody). The page
samples its camera as JPEG stills until the check decides; only a passed check lets it join.
The console shows the checks and records the officer's decisions; a camera too small for the
check is guidance on both pages, never an alert.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import skimage.data

from bench.peer import PeerClient
from control.appkeys import CUSTODY
from tests.conftest import Api, case_with_party, make_config, officer_login, start_server
from tests.conftest import wait_until as wait_for_condition
from tests.test_browser import _wait_for, write_y4m
from tests.test_browser import chromium as launch_chromium
from tests.test_prejoin import ASTRONAUT, HANKS, canvas
from tests.test_verifier import _png

pytestmark = pytest.mark.browser


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, picture: np.ndarray) -> AsyncIterator[Any]:
    """Chromium whose fake camera shows ``picture``."""
    y4m = tmp_path / "camera.y4m"
    write_y4m(y4m, picture)
    async with launch_chromium(y4m) as context:
        yield context


@contextlib.asynccontextmanager
async def party_at_the_door(tmp_path: Path, picture: np.ndarray) -> AsyncIterator[dict[str, Any]]:
    """A server checking parties before they join, a case whose party (the astronaut) is
    enrolled, the officer in the call, and the party's page past its consents."""
    server = await start_server(
        make_config(tmp_path, auth={"dev_join": False, "prejoin_check": True})
    )
    officer_client: PeerClient | None = None
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            login = await officer_login(server, api)
            case, party = await case_with_party(api, login)
            status, body = await api.call(
                "PUT", f"/api/cases/{case}/parties/{party}/reference", login, data=_png(ASTRONAUT)
            )
            assert status == 200, body
            status, session = await api.call("POST", f"/api/cases/{case}/sessions", login)
            assert status == 201
            status, invite = await api.call(
                "POST", f"/api/cases/{case}/invitations", login, {"party_id": party}
            )
            assert status == 201
            officer_client = PeerClient(server.base_url, session["token"])
            await officer_client.connect()
            async with chromium(tmp_path, picture) as browser:
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                # in Chinese (the page shows the half of the server's "中文 / English" advice
                # in its own language; the checks below read the Chinese)
                await page.goto(server.base_url + invite["link"] + "&lang=zh-CN")
                await page.wait_for_selector("#consent-form:not([hidden])")
                await _wait_for(page, "document.getElementById('preview').videoWidth > 0")
                await page.check("#consent-recording")
                await page.check("#consent-face")
                await page.click("#consent-form button[type=submit]")
                await page.wait_for_selector("#prejoin:not([hidden])")
                yield {
                    "server": server,
                    "api": api,
                    "login": login,
                    "case": case,
                    "party": party,
                    "session": session,
                    "page": page,
                    "officer": officer_client,
                    "errors": errors,
                    "checks": f"/api/cases/{case}/sessions/{session['id']}/prejoin",
                }
    finally:
        if officer_client is not None:
            await officer_client.close()
        await server.runner.cleanup()


async def _prejoin(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        "() => ({...window.remotecase.prejoin, joined: Boolean(window.remotecase.ws)})"
    )
    return result


async def test_a_matching_face_passes_and_the_party_joins(tmp_path: Path) -> None:
    async with party_at_the_door(tmp_path, canvas(ASTRONAUT)) as door:
        page, officer = door["page"], door["officer"]
        await _wait_for(page, "window.remotecase.prejoin.status === 'passed'", timeout=60)
        state = await _prejoin(page)
        assert state["verdicts"].count("match") == 3, state
        assert state["said"][-1].startswith("身份核验通过")
        participant = f"party-{door['party']}"
        await wait_for_condition(
            lambda: officer.mids_for_participant(participant, "video") != [],
            timeout=30,
            what="the checked party's video at the officer",
        )
        # the camera keeps its resolution: at least 640x480, and the sender is told so
        await _wait_for(page, "window.remotecase.degradation !== undefined", timeout=20)
        camera = await page.evaluate("""() => {
            const s = window.remotecase.local.getVideoTracks()[0].getSettings();
            return [s.width, s.height, window.remotecase.degradation];
        }""")
        assert camera[0] >= 640 and camera[1] >= 480, camera
        assert camera[2] == "maintain-resolution", camera
        _, view = await door["api"].call("GET", door["checks"], door["login"])
        (party,) = view["parties"]
        assert party["status"] == "passed"
        assert [v["verdict"] for v in party["verdicts"]].count("match") == 3
        logged = [
            e
            for e in door["server"].app[CUSTODY].entries()
            if e["type"] == "verification.verdict" and e.get("phase") == "prejoin"
        ]
        assert len(logged) == len(party["verdicts"])
        assert door["errors"] == []


async def test_another_face_is_refused_and_offered_a_retry(tmp_path: Path) -> None:
    async with party_at_the_door(tmp_path, canvas(HANKS)) as door:
        page = door["page"]
        await _wait_for(page, "window.remotecase.prejoin.status === 'failed'", timeout=60)
        state = await _prejoin(page)
        assert state["verdicts"] == ["no_match"] * 3, state
        assert not state["joined"]
        message = await page.inner_text("#check-message")
        assert message.startswith("未能确认是您本人"), message
        assert await page.locator("#check-retry").is_visible()
        await asyncio.sleep(2)  # nothing joins behind the party's back
        assert door["officer"].mids_for_participant(f"party-{door['party']}", "video") == []
        assert not (await _prejoin(page))["joined"]
        # a retry runs a new attempt, which fails the same way
        await page.click("#check-retry")
        await _wait_for(page, "window.remotecase.prejoin.status === 'checking'", timeout=10)
        await _wait_for(page, "window.remotecase.prejoin.status === 'failed'", timeout=60)
        _, view = await door["api"].call("GET", door["checks"], door["login"])
        assert view["parties"][0]["attempt"] == 2 and view["parties"][0]["status"] == "failed"
        assert door["errors"] == []


async def test_no_face_is_refused_with_guidance(tmp_path: Path) -> None:
    async with party_at_the_door(tmp_path, canvas(None)) as door:
        page = door["page"]
        await _wait_for(page, "window.remotecase.prejoin.status === 'failed'", timeout=90)
        state = await _prejoin(page)
        assert set(state["verdicts"]) == {"no_face"} and len(state["verdicts"]) == 12, state
        assert "请把脸放在框内" in state["said"], state["said"]  # the page's half of the advice
        assert (await page.inner_text("#check-message")).startswith("未检测到人脸")
        assert not state["joined"]
        assert door["errors"] == []


async def test_the_console_attests_an_id_document_and_admits_by_hand(tmp_path: Path) -> None:
    """The officer's console: a party who declined face checks shows an identity document to
    the camera (its still reaches the console, nothing face-processed) and the officer records
    the document; another party is admitted by hand with a reason. Both then join."""
    import hashlib

    from tests.conftest import CONSENT, party_link
    from tests.test_prejoin import jpeg

    server = await start_server(
        make_config(tmp_path, auth={"dev_join": False, "prejoin_check": True})
    )
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http, chromium(tmp_path, canvas(None)) as browser:
            api = Api(http, server.base_url)
            login = await officer_login(server, api, brigade="b1")
            case, declined = await case_with_party(api, login, name="Zhang San")
            status, other = await api.call(
                "POST", f"/api/cases/{case}/parties", login, {"role": "witness", "name": "Li Si"}
            )
            assert status == 201
            status, _ = await api.call("POST", f"/api/cases/{case}/sessions", login)
            assert status == 201
            no_face = await party_link(
                api, login, case, declined, {"recording": True, "face": False}
            )
            witness = await party_link(api, login, case, other["id"], CONSENT)

            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(server.base_url + "/console")
            await page.fill("#username", "li")
            await page.fill("#password", "correct horse battery")
            await page.click("#login-form button")
            await page.click(f"#cases li[data-case-id='{case}']")
            await page.wait_for_selector("#session-open:not([hidden])")
            await page.wait_for_selector(f"#prejoin li[data-party-id='{declined}']")

            document = jpeg(canvas(skimage.data.coffee()))
            status, body = await api.call(
                "POST", "/api/party/prejoin/still", no_face["token"], data=document
            )
            assert status == 200 and body["route"] == "document", body
            show = f"#prejoin li[data-party-id='{declined}'] button:has-text('Show picture')"
            await page.wait_for_selector(show, timeout=10000)
            await page.click(show)
            await _wait_for(page, "document.getElementById('prejoin-still').naturalWidth === 640")
            await page.select_option("#attest-party", str(declined))
            await page.select_option("#attest-type", "resident_id")
            await page.fill("#attest-digits", "0312")
            await page.fill("#attest-note", "原件核对无误 / original checked")
            await page.click("#attest button[type=submit]")
            await page.wait_for_selector(
                f"#prejoin li[data-party-id='{declined}'][data-status='attested']"
            )

            await page.fill("#action-reason", "witness known to the brigade")
            await page.click(
                f"#prejoin li[data-party-id='{other['id']}'] button:has-text('Admit manually')"
            )
            await page.wait_for_selector(
                f"#prejoin li[data-party-id='{other['id']}'][data-status='admitted']"
            )

            entries = server.app[CUSTODY].entries()
            (attested,) = [e for e in entries if e["type"] == "verification.id_attested"]
            assert attested["still_sha256"] == hashlib.sha256(document).hexdigest()
            assert (attested["document_type"], attested["document_last_digits"]) == (
                "resident_id",
                "0312",
            )
            (manual,) = [e for e in entries if e["type"] == "verification.manual_admission"]
            assert manual["reason"] == "witness known to the brigade"
            assert not [e for e in entries if e["type"] == "verification.verdict"]
            for redeemed in (no_face, witness):
                client = PeerClient(server.base_url, redeemed["token"], decode=False)
                clients.append(client)
                await client.connect()
                assert client.joined is not None and client.joined["type"] == "joined"
            assert errors == []
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_a_small_picture_is_guidance_on_both_pages_not_an_alert(tmp_path: Path) -> None:
    """A camera that cannot give 640x480 (here 320x240, the face about 45 px): the page falls
    back to what the camera has and says so; during the call the verifier finds the picture
    too small, and both the party's page and the officer's console show what to do."""
    import cv2

    small = np.full((240, 320, 3), 128, dtype=np.uint8)
    small[40:200, 80:240] = cv2.resize(ASTRONAUT, (160, 160), interpolation=cv2.INTER_AREA)
    server = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        async with aiohttp.ClientSession() as http, chromium(tmp_path, small) as browser:
            api = Api(http, server.base_url)
            login = await officer_login(server, api, brigade="b1")
            case, party = await case_with_party(api, login)
            status, body = await api.call(
                "PUT", f"/api/cases/{case}/parties/{party}/reference", login, data=_png(ASTRONAUT)
            )
            assert status == 200, body
            status, _ = await api.call("POST", f"/api/cases/{case}/sessions", login)
            assert status == 201
            status, invite = await api.call(
                "POST", f"/api/cases/{case}/invitations", login, {"party_id": party}
            )
            console = await browser.new_page()
            await console.goto(server.base_url + "/console")
            await console.fill("#username", "li")
            await console.fill("#password", "correct horse battery")
            await console.click("#login-form button")
            await console.click(f"#cases li[data-case-id='{case}']")
            await console.wait_for_selector("#session-open:not([hidden])")

            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # the page in Chinese (the browser's own preference here is English)
            await page.goto(server.base_url + invite["link"] + "&lang=zh-CN")
            await _wait_for(page, "document.getElementById('preview').videoWidth > 0")
            assert (
                await page.evaluate(
                    "() => window.remotecase.local.getVideoTracks()[0].getSettings().width"
                )
                == 320
            )
            assert (await page.inner_text("#guidance")).startswith("摄像头分辨率低于 640x480")
            await page.check("#consent-recording")
            await page.check("#consent-face")
            await page.click("#consent-form button[type=submit]")
            await _wait_for(
                page,
                "document.getElementById('guidance').textContent.startsWith('画面太小')",
                timeout=60,
            )
            shown = await page.inner_text("#guidance")
            assert "请靠近摄像头" in shown, shown
            row = console.locator("#participants li", has_text="picture:")
            await row.wait_for(timeout=30000)
            text = await row.inner_text()
            # the console is English here (the browser's preference): the English half of the
            # verifier's advice, and not the Chinese one
            assert "picture too small to check the face" in text, text
            assert "come closer to the camera" in text and "画面太小" not in text, text
            assert "alert" not in text
            states = await console.eval_on_selector_all(
                "#participants li span", "els => els.map(e => e.className)"
            )
            assert "state-alert" not in states and "state-low_quality" in states
            assert errors == []
    finally:
        await server.runner.cleanup()
