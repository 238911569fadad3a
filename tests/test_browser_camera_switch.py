"""The party page's camera switch in Debian's Chromium, on a phone-sized page, with cameras
that name no facing mode (a laptop's, or a phone's that does not say).

Chromium's fake capture gives several cameras with ``--use-fake-device-for-media-stream=
device-count=N`` (a ``--use-file-for-fake-video-capture`` would replace them by one). They say
no facing mode, so ``facingMode: {exact}`` finds none and the page goes to the next camera by
``deviceId``. Their formats differ: ``fake_device_0`` is I420, ``fake_device_1`` Y16 (a depth
camera: a ``<video>`` shows it, but the video encoder takes none of its frames), ``fake_device_2``
MJPEG. Checked, with no script of the test's in the page: the switch is offered and names the
camera in use; the first switch finds the depth camera sends nothing, goes back and on to the
third, and offers the depth camera no more; the published track changes device on the same
sender; the officer (a real aiortc client) keeps receiving the party's video on the same track of
the SFU; no error is shown; the page does not overflow at 360 px. With two cameras, the second
the depth one, the switch finds no other camera that sends: the first stays on the sender, the
page says so and offers the switch no more.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.peer import PeerClient
from tests.browser_party import case_call, enter_by_link, more_packets, video_flowing
from tests.conftest import (
    Server,
    make_config,
    start_server,
    wait_until,
)
from tests.test_browser import CHROMIUM
from tests.test_browser_party import (
    DISABLED,
    PATIENCE,
    PHONE,
    Shots,
    new_page,
    no_overflow,
    until,
)

pytestmark = pytest.mark.browser


@contextlib.asynccontextmanager
async def fake_cameras(count: int) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        f"--use-fake-device-for-media-stream=device-count={count}",
        f"--disable-features={DISABLED}",
    ]
    playwright = await async_playwright().start()
    browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        yield browser
    finally:
        await browser.close()
        await playwright.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    yield srv
    await srv.runner.cleanup()


SENT = (
    "(() => { const t = window.remotecase.videoSender && window.remotecase.videoSender.track;"
    " return t ? t.getSettings().deviceId : null; })()"
)


async def test_the_party_switches_camera_and_the_officer_keeps_its_track(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    shots = Shots(tmp_path, "phone-zh")
    call = await case_call(server, clients)
    pid, officer_client = call.pid, call.officer_client

    async with fake_cameras(3) as browser:
        context, page, problems = await new_page(browser, "zh-CN", PHONE)
        await enter_by_link(page, server.base_url + call.link)
        mid = await video_flowing(officer_client, pid, packets=20)
        track_before = officer_client.tracks[mid]
        cameras = await page.evaluate(
            "async () => (await navigator.mediaDevices.enumerateDevices())"
            ".filter((d) => d.kind === 'videoinput').map((d) => d.deviceId)"
        )
        assert len(cameras) == 3, cameras
        await until(page, "!document.getElementById('switch-camera').hidden")
        assert await page.evaluate(SENT) == cameras[0]
        assert await page.evaluate("window.remotecase.facing") == "user"
        assert await page.inner_text("#camera-name") == "正在使用：前置摄像头（第 1 个，共 3 个）"

        # the next camera by deviceId: the depth camera opens but sends nothing, so the page
        # goes back to the first and on to the third, on the same sender
        await page.tap("#switch-camera")
        await until(page, f"{SENT} === {cameras[2]!r} && !window.remotecase.switching")
        assert await page.evaluate("Object.keys(window.remotecase.deadCameras)") == [cameras[1]]
        local = await page.evaluate(
            "window.remotecase.local.getVideoTracks().map((t) => t.getSettings().deviceId)"
        )
        assert local == [cameras[2]]  # the first camera's track was stopped and removed
        assert await page.inner_text("#error") == ""
        named = await page.inner_text("#camera-name")
        assert named == "正在使用：fake_device_2（第 2 个，共 2 个）"
        assert await page.evaluate("window.remotecase.facing") is None  # not mirrored
        assert not await page.evaluate("document.querySelector('.tile.self') !== null")
        # the SFU keeps the party's one video track: the officer sees it go on, on the same mid
        at_switch = officer_client.received_packets[mid]
        await more_packets(officer_client, mid, at_switch, 20, "the party's video after the switch")
        assert officer_client.mids_for_participant(pid, "video") == [mid]
        assert officer_client.tracks[mid] == track_before
        assert not officer_client.closed_reason
        await shots.take(page, "camera-switched")
        await no_overflow(page, "after the camera switch")

        # and back to the first one, the depth camera no more tried
        await page.tap("#switch-camera")
        await until(page, f"{SENT} === {cameras[0]!r} && !window.remotecase.switching")
        assert await page.inner_text("#camera-name") == "正在使用：前置摄像头（第 1 个，共 2 个）"
        assert await page.evaluate("window.remotecase.facing") == "user"
        assert await page.inner_text("#error") == ""
        at_switch = officer_client.received_packets[mid]
        await more_packets(
            officer_client, mid, at_switch, 20, "the party's video after switching back"
        )
        assert officer_client.mids_for_participant(pid, "video") == [mid]
        assert not await page.evaluate("document.getElementById('switch-camera').hidden")
        await context.close()
        assert problems == [], problems


async def test_with_one_camera_that_sends_the_switch_says_so_and_goes(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    shots = Shots(tmp_path, "phone-zh")
    call = await case_call(server, clients, officer_publishes=False)
    pid, officer_client = call.pid, call.officer_client

    async with fake_cameras(2) as browser:
        context, page, problems = await new_page(browser, "zh-CN", PHONE)
        await enter_by_link(page, server.base_url + call.link)
        await wait_until(
            lambda: officer_client.mids_for_participant(pid, "video") != [],
            timeout=PATIENCE,
            what="the party's video at the officer",
        )
        (mid,) = officer_client.mids_for_participant(pid, "video")
        first = await page.evaluate(SENT)
        await until(page, "!document.getElementById('switch-camera').hidden")

        # the other camera opens but sends nothing: the first goes on, and the switch goes away
        await page.tap("#switch-camera")
        await until(page, "!window.remotecase.switching")
        assert await page.inner_text("#error") == "无法切换摄像头，请继续使用当前摄像头"
        assert await page.evaluate(SENT) == first
        assert await page.evaluate("document.getElementById('switch-camera').hidden")
        assert await page.evaluate("document.getElementById('camera-name').hidden")
        at = officer_client.received_packets[mid]
        await more_packets(
            officer_client, mid, at, 20, "the party's video from the first camera still"
        )
        assert officer_client.mids_for_participant(pid, "video") == [mid]
        await shots.take(page, "camera-switch-none")
        await no_overflow(page, "after a switch to no camera")
        await context.close()
        assert problems == [], problems
