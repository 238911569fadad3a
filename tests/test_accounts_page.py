"""The accounts page in Chromium at desktop size, in Chinese: a supervisor logs in, adds an
officer and disables one (with a reason, as the API asks); a screenshot is kept for review."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PASSWORD, Api, Server, officer_login
from tests.test_browser import _wait_for, chromium, face_image, write_y4m

pytestmark = pytest.mark.browser


def _keep(shot: Path) -> None:
    wanted = os.environ.get("REMOTECASE_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(wanted) / shot.name)


async def test_accounts_page_in_chinese_at_desktop_size(server: Server, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        await officer_login(server, api, "boss", role="supervisor")
        await officer_login(server, api, "li")
        async with http.get(f"{server.base_url}/favicon.ico") as r:
            assert r.status == 200 and r.content_type == "image/svg+xml"
            assert b"<svg" in await r.read()
    camera = tmp_path / "camera.y4m"
    write_y4m(camera, face_image(), frames=2)
    async with chromium(camera) as context:
        page: Any = await context.new_page()
        await page.set_viewport_size({"width": 1280, "height": 800})
        dialogs: list[str] = []

        async def answer(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept("调离本大队")

        page.on("dialog", answer)
        await page.goto(f"{server.base_url}/accounts?lang=zh-CN")
        await _wait_for(page, "!document.getElementById('login').hidden")
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        assert "账号管理" in await page.title()
        # a wrong password: the server's words, in Chinese
        await page.fill("#login-username", "boss")
        await page.fill("#login-password", "wrong password")
        await page.click("#login-form button[type=submit]")
        await _wait_for(page, "document.getElementById('status').textContent.length > 0")
        assert await page.text_content("#status") == "用户名或密码错误"

        await page.fill("#login-password", PASSWORD)
        await page.click("#login-form button[type=submit]")
        await _wait_for(page, "document.querySelectorAll('#officers tr').length === 2")
        await page.fill("#add-username", "zhang")
        await page.fill("#add-brigade", "一大队")
        await page.fill("#add-password", "a-long-enough-password")
        await page.click("#add-form button[type=submit]")
        await _wait_for(page, "document.querySelectorAll('#officers tr').length === 3")
        assert "已添加民警 zhang" in (await page.text_content("#status") or "")

        # disable li: the reason is asked for, the row shows it disabled
        row = page.locator("#officers tr", has_text="li")
        await row.get_by_role("button", name="停用").click()
        await _wait_for(page, "document.querySelector('#officers tr.disabled') !== null")
        assert dialogs and "li" in dialogs[0] and "理由" in dialogs[0]
        text = await page.text_content("#officers")
        assert text is not None and "已停用" in text and "主管" in text and "民警" in text
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth > document.documentElement.clientWidth"
        )
        assert not overflow
        shot = tmp_path / "accounts-desktop-zh-CN.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        _keep(shot)
    async with aiohttp.ClientSession() as http:
        status, body = await Api(http, server.base_url).call(
            "POST", "/api/login", json={"username": "li", "password": PASSWORD}
        )
        assert status == 401, body


async def test_setup_page_creates_the_first_supervisor(tmp_path: Path) -> None:
    from control.accounts import store
    from control.appkeys import DB
    from tests.conftest import make_config, start_server

    server = await start_server(make_config(tmp_path))
    try:
        assert await server.app[DB].run(lambda c: store.new_setup_link(c, "the-token", 600.0))
        camera = tmp_path / "camera.y4m"
        write_y4m(camera, face_image(), frames=2)
        async with chromium(camera) as context:
            page: Any = await context.new_page()
            await page.set_viewport_size({"width": 1280, "height": 800})
            await page.goto(f"{server.base_url}/setup?lang=zh-CN#t=the-token")
            await _wait_for(page, "!document.getElementById('form').hidden")
            await page.fill("#username", "chief")
            await page.fill("#brigade", "一大队")
            await page.fill("#password", PASSWORD)
            await page.fill("#password2", PASSWORD + "x")
            await page.click("#form button[type=submit]")
            await _wait_for(page, "document.getElementById('status').textContent.length > 0")
            assert await page.text_content("#status") == "两次输入的密码不一致"
            await page.fill("#password2", PASSWORD)
            await page.click("#form button[type=submit]")
            await _wait_for(page, "!document.getElementById('next').hidden")
            assert "主管 chief 已创建" in (await page.text_content("#status") or "")
            assert "the-token" not in page.url  # the spent link leaves the address
            shot = tmp_path / "setup-desktop-zh-CN.png"
            await page.screenshot(path=str(shot), full_page=True)
            _keep(shot)
        async with aiohttp.ClientSession() as http:
            await Api(http, server.base_url).login("chief")
    finally:
        await server.runner.cleanup()
