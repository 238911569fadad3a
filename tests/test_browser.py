"""Debian's Chromium through the SFU, driven by Playwright (never Playwright's own browser).

The fake camera plays a Y4M made from a real face image that a dependency ships
(``skimage.data.astronaut()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import skimage.data

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from tests.conftest import Server, join, wait_until

CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():  # .ci/run installs it; CI must not skip
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} missing: .ci/run should have installed chromium")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

WIDTH, HEIGHT = 640, 480


def face_image() -> np.ndarray:
    """The astronaut portrait, scaled to 480x480 and centred on a 640x480 grey canvas."""
    face = skimage.data.astronaut()
    frame = av.VideoFrame.from_ndarray(face, format="rgb24").reformat(width=HEIGHT, height=HEIGHT)
    canvas = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    left = (WIDTH - HEIGHT) // 2
    canvas[:, left : left + HEIGHT] = frame.to_ndarray(format="rgb24")
    return canvas


def other_image() -> np.ndarray:
    cat = skimage.data.chelsea()
    frame = av.VideoFrame.from_ndarray(cat, format="rgb24").reformat(width=WIDTH, height=HEIGHT)
    return frame.to_ndarray(format="rgb24")


def write_y4m(path: Path, image: np.ndarray, frames: int = 30) -> None:
    """A Y4M of ``image`` at its own size, for Chromium's fake camera."""
    height, width = image.shape[:2]
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def mean_abs_diff(frame: av.VideoFrame, image: np.ndarray) -> float:
    got = frame.reformat(width=WIDTH, height=HEIGHT, format="rgb24").to_ndarray()
    return float(np.abs(got.astype(np.int16) - image.astype(np.int16)).mean())


async def _wait_for(page: Any, expression: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """``page.wait_for_function`` compiles its predicate inside the page, which the pages' CSP
    (no eval) refuses; ``page.evaluate`` goes through the debugger protocol instead."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await page.evaluate(expression):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def chromium(camera: Path) -> AsyncIterator[Any]:
    """Debian's Chromium in a fresh profile, its fake camera playing ``camera`` (a Y4M); every
    page it opens must keep to its Content-Security-Policy."""
    from playwright.async_api import async_playwright

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    playwright = await async_playwright().start()
    # Playwright passes its own --disable-features list and a second switch replaces it, so
    # this one carries the entries that keep Chromium off the network, plus ours.
    disabled = ",".join(
        [
            "WebRtcHideLocalIpsWithMdns",
            "OptimizationHints",
            "NetworkTimeServiceQuerying",
            "AimEnabled",
            "PreconnectToSearch",
            "MediaRouter",
            "LensOverlay",
            "HttpsUpgrades",
            "DestroyProfileOnBrowserClose",
            "PaintHolding",
        ]
    )
    context = await playwright.chromium.launch_persistent_context(
        user_data_dir=profile,
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}",
            f"--disable-features={disabled}",
        ],
    )
    # every page reports what its Content-Security-Policy blocked; none may be blocked
    violations: list[str] = []
    await context.expose_function("__cspViolation", lambda text: violations.append(text))
    await context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => window.__cspViolation("
        "`${document.location.pathname}: ${e.violatedDirective} ${e.blockedURI}`));"
    )
    try:
        yield context
        assert violations == [], f"the pages broke their CSP: {violations}"
    finally:
        await context.close()
        await playwright.stop()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    y4m = tmp_path / "face.y4m"
    write_y4m(y4m, face_image())
    async with chromium(y4m) as context:
        yield context


async def test_chromium_publishes_face_to_aiortc_subscriber(
    server: Server, clients: list[PeerClient], browser: Any
) -> None:
    watcher = await join(server, clients, "browser-room", "officer")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    token = server.token("browser-room", "party", name="Party")
    await page.goto(f"{server.base_url}/?token={token}")

    await wait_until(
        lambda: watcher.mids_for_participant("party", "video") != [],
        timeout=20,
        what="the browser's video offered to the aiortc subscriber",
    )
    (mid,) = watcher.mids_for_participant("party", "video")
    await wait_until(
        lambda: watcher.frame_counts[mid] >= 10,
        timeout=20,
        what="frames from Chromium decoded by aiortc",
    )
    face, other = face_image(), other_image()
    frame = watcher.frames[mid][-1]
    same = mean_abs_diff(frame, face)
    different = mean_abs_diff(frame, other)
    print(f"MAD same={same:.2f} other={different:.2f} size={frame.width}x{frame.height}")
    assert same < 12, f"decoded frame differs from the camera image (MAD {same:.1f})"
    assert different > 3 * same, (same, different)
    assert errors == []


async def test_chromium_receives_and_decodes_forwarded_stream(
    server: Server, clients: list[PeerClient], browser: Any
) -> None:
    publisher = await join(server, clients, "browser-room2", "officer")
    await publisher.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
    page = await browser.new_page()
    token = server.token("browser-room2", "party", name="Party")
    await page.goto(f"{server.base_url}/?token={token}")

    async def frames_decoded() -> int:
        result: int = await page.evaluate("""async () => {
            const pc = window.remotecase.sub;
            if (!pc) return 0;
            let decoded = 0;
            (await pc.getStats()).forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "video") decoded += s.framesDecoded || 0;
            });
            return decoded;
        }""")
        return result

    deadline = 20.0
    decoded = 0
    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while loop.time() < end:
        decoded = await frames_decoded()
        if decoded >= 10:
            break
        await asyncio.sleep(0.2)
    assert decoded >= 10, f"Chromium decoded {decoded} frames of the forwarded stream"
    size = await page.evaluate("""() => {
        const tile = document.querySelector('.tile[data-participant="officer"] video');
        return tile ? [tile.videoWidth, tile.videoHeight] : null;
    }""")
    assert size == [320, 240]


async def test_two_tabs_meet_through_the_join_form(
    server: Server, browser: Any, tmp_path: Path
) -> None:
    """The README's promise: open the page in two tabs, pick a room, see each other."""
    pages = []
    for name in ("Officer Li", "Driver Wang"):
        page = await browser.new_page()
        await page.goto(f"{server.base_url}/?room=demo")
        await page.fill("#name", name)
        await page.click("#join-form button[type=submit]")
        pages.append(page)

    async def remote_video_size(page: Any) -> list[int] | None:
        size: list[int] | None = await page.evaluate("""() => {
            const me = window.remotecase.me;
            for (const tile of document.querySelectorAll('.tile')) {
                if (tile.dataset.participant === me) continue;
                const v = tile.querySelector('video');
                if (v.videoWidth > 0) return [v.videoWidth, v.videoHeight];
            }
            return null;
        }""")
        return size

    import asyncio

    loop = asyncio.get_running_loop()
    end = loop.time() + 20
    sizes: list[list[int] | None] = [None, None]
    while loop.time() < end:
        sizes = [await remote_video_size(p) for p in pages]
        if all(sizes):
            break
        await asyncio.sleep(0.2)
    await pages[0].bring_to_front()
    await asyncio.sleep(0.5)
    await pages[0].screenshot(path=str(tmp_path / "two-tabs.png"))
    assert all(sizes), f"remote video sizes per tab: {sizes}"
    labels = await pages[0].eval_on_selector_all(
        ".tile .label", "els => els.map(e => e.textContent)"
    )
    assert "Driver Wang" in labels and "Officer Li (you)" in labels


async def test_party_page_from_invitation_link_to_call(
    server: Server, clients: list[PeerClient], browser: Any, tmp_path: Path
) -> None:
    """Issue 5's party page: the link, explicit consents, a preview, then the call."""
    import aiohttp

    from control.appkeys import DB
    from control.auth import create_officer

    password = "correct horse battery"
    await server.app[DB].run(lambda c: create_officer(c, "li", password, "officer", "b"))
    async with aiohttp.ClientSession() as http:

        async def call(method: str, path: str, token: str | None = None, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.request(
                method, server.base_url + path, json=body, headers=headers
            ) as response:
                assert response.status < 300, await response.text()
                return await response.json()

        login = (await call("POST", "/api/login", None, {"username": "li", "password": password}))[
            "token"
        ]
        case = await call("POST", "/api/cases", login, {"kind": "accident", "title": "t"})
        party = await call(
            "POST",
            f"/api/cases/{case['id']}/parties",
            login,
            {"role": "driver", "name": "Wang Wei"},
        )
        session = await call("POST", f"/api/cases/{case['id']}/sessions", login)
        invite = await call(
            "POST", f"/api/cases/{case['id']}/invitations", login, {"party_id": party["id"]}
        )
    from bench.peer import PeerClient

    officer = PeerClient(server.base_url, session["token"])
    clients.append(officer)
    await officer.connect()

    page = await browser.new_page()
    await page.goto(server.base_url + invite["link"])
    await page.wait_for_selector("#consent-form:not([hidden])")
    await _wait_for(page, "document.getElementById('preview').videoWidth > 0")
    await page.screenshot(path=str(tmp_path / "consent.png"))
    await page.check("#consent-recording")
    await page.check("#consent-face")
    await page.click("#consent-form button[type=submit]")
    participant = f"party-{party['id']}"
    await wait_until(
        lambda: officer.mids_for_participant(participant, "video") != [],
        timeout=20,
        what="the party's video offered to the officer",
    )
    (mid,) = officer.mids_for_participant(participant, "video")
    await wait_until(
        lambda: officer.frame_counts[mid] >= 5,
        timeout=20,
        what="the party's frames decoded at the officer",
    )
    same = mean_abs_diff(officer.frames[mid][-1], face_image())
    assert same < 12

    # from the page, the party sends a photo; a renamed executable is refused with the reason
    from tests import samples

    (tmp_path / "bill.jpg").write_bytes(samples.jpeg())
    (tmp_path / "photo.jpg").write_bytes(b"MZ" + bytes(500))
    await page.set_input_files("#material-file", str(tmp_path / "bill.jpg"))
    await page.click("#upload-form button")
    await page.wait_for_selector("#upload-status:has-text('received: bill.jpg')")
    await page.set_input_files("#material-file", str(tmp_path / "photo.jpg"))
    await page.click("#upload-form button")
    await page.wait_for_selector("#upload-status:has-text('Windows executable')")
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.base_url}/api/cases/{case['id']}/materials",
            headers={"Authorization": f"Bearer {login}"},
        ) as r,
    ):
        materials = (await r.json())["materials"]
    assert [(m["name"], m["party_id"]) for m in materials] == [("bill.jpg", party["id"])]


async def test_page_without_development_mode_says_joining_needs_an_invitation(
    browser: Any, tmp_path: Path
) -> None:
    """`remotecase serve` (development mode off): the page explains, Chinese first, instead of
    a join form that could only fail."""
    from tests.conftest import make_config, start_server

    server = await start_server(make_config(tmp_path, auth={"dev_join": False}))
    try:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(server.base_url + "/")
        notice = page.locator("#no-dev")
        await notice.wait_for(state="visible", timeout=10000)
        text = await notice.inner_text()
        assert text.startswith("加入通话需要民警发出的邀请链接"), text
        assert "remotecase serve --dev" in text and "invitation link" in text
        assert not await page.locator("#join-form").is_visible()
        assert errors == []
    finally:
        await server.runner.cleanup()
