"""The party's page and the officer's call in Debian's Chromium lose their connection for real
and resume (issue 18).

The page reaches the server through a TCP proxy that the test stops: every connection through
it is cut and new ones are refused for a few seconds, as when a phone's network drops. The page
shows "reconnecting", comes back by itself with the resume token (no new link, no rejoin), and
the officer (a real aiortc client) sees it reconnecting and resumed, never leaving, with the
party's video on the same transceiver. Each state: no overflow at 360 px, no CSP violation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import RECORDER, SIGNER
from tests.browser_party import (
    case_call,
    enter_by_link,
    face_camera,
    more_packets,
    party_client,
    video_flowing,
)
from tests.conftest import (
    PASSWORD,
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_browser_party import (
    DESKTOP,
    PATIENCE,
    PHONE,
    Shots,
    chromium,
    invite,
    new_page,
    no_overflow,
    phase,
    until,
)
from tests.test_resume import resume

pytestmark = pytest.mark.browser


class CuttableProxy:
    """127.0.0.1:port -> the server; :meth:`cut` drops every connection and refuses new ones
    until :meth:`restore`. A cut connection is reset on the page's side (its socket dies, as
    when a phone's interface goes down) and goes silent on the server's: the server hears
    nothing more of it, as of a network that went away (a reset there would be a page whose
    process died: ``gone``), until the proxy closes."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstreams: set[asyncio.StreamWriter] = set()  # the server's ends
        self._held: set[asyncio.StreamWriter] = set()  # server ends cut: open and silent
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0
        self.cuts = 0

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self.cuts += 1
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            if writer in self._upstreams:
                self._held.add(writer)
            else:
                writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.cut()
        for writer in list(self._held):
            writer.transport.abort()
        self._held.clear()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        self._upstreams.add(up_writer)
        loop = asyncio.get_running_loop()
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = loop.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if dst in self._held:
                    continue  # cut: nothing gets through to the server any more
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if dst not in self._held:
                dst.transport.abort()
            self._writers.discard(dst)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = make_config(tmp_path, auth={"dev_join": False}, media={"resume_grace": 20.0})
    srv = await start_server(config)
    yield srv
    await srv.runner.cleanup()


async def officer_joins_the_call(page: Any, base: str, case: int, *, opened: bool = False) -> str:
    """Officer li logs in to the console at ``base``, opens ``case``'s session (unless it is
    ``opened`` already) and joins its call; the participant id the console got."""
    from tests.test_browser_console import see

    await page.goto(f"{base}/console")
    await see(page, "#login-form")
    await page.fill("#username", "li")
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button")
    await until(page, "document.getElementById('who').textContent.includes('li')")
    await page.goto(f"{base}/console#case/{case}")
    await see(page, "#case:not([hidden])")
    if not opened:
        await page.click("#open-session button")
    await see(page, "#session-open:not([hidden])")
    await page.click("#join-call")
    await see(page, "#leave-call:not([hidden])")
    await until(page, "Boolean(window.remotecaseConsole.call.state?.me)")
    return str(await page.evaluate("window.remotecaseConsole.call.state.me"))


async def test_party_page_loses_its_network_and_resumes(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    camera = await face_camera(tmp_path)
    shots = Shots(tmp_path, "resume")
    proxy = CuttableProxy(int(server.base_url.rsplit(":", 1)[1]))
    await proxy.restore()
    base = f"http://127.0.0.1:{proxy.port}"
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.close)
        call = await case_call(server, clients)
        pid, officer_client = call.pid, call.officer_client

        async with chromium(camera) as browser:
            context, page, problems = await new_page(browser, "zh-CN", PHONE)
            await enter_by_link(page, base + call.link, face=True)
            mid = await video_flowing(officer_client, pid)
            joined = await page.evaluate("() => window.remotecase.me")
            assert joined == pid

            # the network drops: every connection through the proxy is cut, none gets through
            heard = len(officer_client.messages)
            await proxy.cut()
            await phase(page, "reconnecting")
            await officer_client.wait_for(
                lambda m: m["type"] == "participant_reconnecting" and m["participant"] == pid,
                timeout=PATIENCE,
            )
            await shots.take(page, "reconnecting")
            await no_overflow(page, "reconnecting")
            await asyncio.sleep(3.0)
            before = officer_client.received_packets[mid]
            await proxy.restore()

            # back by itself: the same participant, no new link, the officer saw no leave
            await until(
                page,
                "window.remotecase.phases.lastIndexOf('in_call') >"
                " window.remotecase.phases.lastIndexOf('reconnecting')",
            )
            assert await page.evaluate("() => window.remotecase.me") == pid
            await officer_client.wait_for(
                lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == pid,
                timeout=PATIENCE,
            )
            await more_packets(
                officer_client, mid, before, 30, "the party's video again, on the same transceiver"
            )
            assert officer_client.mids_for_participant(pid, "video") == [mid]
            seen = [
                m["type"]
                for m in officer_client.messages[heard:]
                if m["type"] in ("participant_left", "participant_joined")
            ]
            assert seen == [], seen
            (room,) = [r for r in server.sfu.rooms.values() if pid in r.participants]
            assert room.participants[pid].resumes == 1
            await shots.take(page, "resumed")
            await no_overflow(page, "resumed")

            # now the officer's connection is lost: the party's page says so on its tile, and
            # clears it when the officer is back
            assert officer_client.joined is not None
            officer_id = officer_client.joined["participant"]["id"]
            tile = f"document.querySelector(\"[data-participant='{officer_id}'] .note\")"
            await officer_client.close()
            await until(page, f"{tile}?.textContent === '网络中断，正在重新连接…'")
            await shots.take(page, "officer-reconnecting")
            await no_overflow(page, "officer reconnecting")
            back = await resume(server, clients, officer_client, decode=False)
            assert back.joined is not None and back.joined["type"] == "resumed", back.joined
            await back.publish(PatternVideoTrack(), ToneAudioTrack())
            await until(page, f"{tile}?.textContent === ''")
            await context.close()
            assert problems == [], problems


async def test_console_call_loses_its_network_and_resumes(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    """The officer's call in the workspace (call.js): the same cut, the same return."""
    from tests.test_browser import chromium as console_chromium
    from tests.test_browser_console import open_page

    camera = await face_camera(tmp_path, "officer.y4m")
    proxy = CuttableProxy(int(server.base_url.rsplit(":", 1)[1]))
    await proxy.restore()
    base = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.close)
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name="王伟")
        async with console_chromium(camera) as context:
            page = await open_page(context, "zh-CN", "phone")
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            me = await officer_joins_the_call(page, base, case)

            # the party, an aiortc client, watches the officer's camera
            watcher = await party_client(server, clients, api, officer, case, party)
            mid = await video_flowing(watcher, me)

            heard = len(watcher.messages)
            await proxy.cut()
            await watcher.wait_for(
                lambda m: m["type"] == "participant_reconnecting" and m["participant"] == me,
                timeout=PATIENCE,
            )
            await asyncio.sleep(3.0)
            before = watcher.received_packets[mid]
            await proxy.restore()
            await watcher.wait_for(
                lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == me,
                timeout=PATIENCE,
            )
            await until(page, f"window.remotecaseConsole.call.state.me === {me!r}")
            await more_packets(
                watcher, mid, before, 30, "the officer's camera again, on the same transceiver"
            )
            assert watcher.mids_for_participant(me, "video") == [mid]
            seen = [
                m["type"]
                for m in watcher.messages[heard:]
                if m["type"] in ("participant_left", "participant_joined")
            ]
            assert seen == [], seen
            path = tmp_path / "console-resumed.png"
            await page.screenshot(path=str(path), full_page=True)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0
            assert problems == [], problems


async def test_party_page_reloads_mid_call_as_the_same_participant(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    """A reload (or a phone's browser reopening a tab it dropped) resumes with the token this
    tab kept in sessionStorage: no new redemption, the officer sees the party reconnecting and
    resumed (never leaving), and the recording keeps one pair of tracks for it. The leave
    button then leaves at once."""
    camera = await face_camera(tmp_path)
    shots = Shots(tmp_path, "reload")
    call = await case_call(server, clients)
    pid, officer_client = call.pid, call.officer_client

    async with chromium(camera) as browser:
        context, page, problems = await new_page(browser, "zh-CN", PHONE)
        await enter_by_link(page, server.base_url + call.link, face=True)
        mid = await video_flowing(officer_client, pid)
        (room,) = [r for r in server.sfu.rooms.values() if pid in r.participants]
        tracks_before = set(room.participants[pid].up_tracks)
        assert len(tracks_before) == 2
        # a case session's room is recorded from the party's consent on
        recording = server.app[RECORDER].active[room.room_id]
        # the resume token is this tab's: in sessionStorage, nowhere in localStorage
        kept = await page.evaluate("() => JSON.parse(sessionStorage.getItem('remotecase.call'))")
        assert kept["participant"] == pid and kept["resume"], kept
        local = await page.evaluate("() => JSON.stringify({...localStorage})")
        assert kept["resume"] not in local and kept["token"] not in local

        # the party's own mute before the reload: the reloaded page's microphone is on again,
        # and says so (the resumed track would keep the old mute otherwise)
        await page.tap("#mute-audio")
        await officer_client.wait_for(
            lambda m: m["type"] == "track_muted" and m["participant"] == pid and m["muted"],
            timeout=PATIENCE,
        )
        heard = len(officer_client.messages)
        await page.reload()
        await phase(page, "in_call")
        await wait_until(
            lambda: any(
                m["type"] == "track_muted" and m["participant"] == pid and not m["muted"]
                for m in officer_client.messages[heard:]
            ),
            timeout=PATIENCE,
            what="the party's microphone on again after the reload",
        )
        await officer_client.wait_for(
            lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == pid,
            timeout=PATIENCE,
        )
        assert await page.evaluate("() => window.remotecase.me") == pid
        phases = await page.evaluate("() => window.remotecase.phases")
        assert "consent" not in phases and "checking" not in phases, phases
        seen = [
            m["type"]
            for m in officer_client.messages[heard:]
            if m["type"].startswith("participant_")
        ]
        assert seen == ["participant_reconnecting", "participant_resumed"], seen
        # the page said it was going as it reloaded: away as "closed", back within the
        # unload grace
        away = next(
            m for m in officer_client.messages[heard:] if m["type"] == "participant_reconnecting"
        )
        assert away["reason"] == "closed", away
        assert room.participants[pid].resumes == 1
        assert set(room.participants[pid].up_tracks) == tracks_before
        before = officer_client.received_packets[mid]
        await more_packets(
            officer_client,
            mid,
            before,
            30,
            "the party's video after the reload, on the same transceiver",
        )
        assert officer_client.mids_for_participant(pid, "video") == [mid]
        rotated = await page.evaluate("() => JSON.parse(sessionStorage.getItem('remotecase.call'))")
        assert rotated["resume"] != kept["resume"]
        # the page asked a fresh call token of the same admission before resuming (a call past
        # the token's hour resumes too): the same grant, participant and room
        signer = server.app[SIGNER]
        fresh, first = signer.verify(rotated["token"]), signer.verify(kept["token"])
        assert (fresh.grant_id, fresh.participant, fresh.room) == (
            first.grant_id,
            first.participant,
            first.room,
        )
        await shots.take(page, "after-reload")
        await no_overflow(page, "after the reload")

        # the leave button leaves at once, and forgets the call
        await page.tap("#leave")
        await phase(page, "left")
        left = await officer_client.wait_for(
            lambda m: m["type"] == "participant_left" and m["participant"] == pid,
            timeout=PATIENCE,
        )
        assert left["reason"] == "left"
        assert await page.evaluate("() => sessionStorage.getItem('remotecase.call')") is None
        manifest = await server.app[RECORDER].stop(room.room_id, actor="officer:li", reason="end")
        assert manifest["recording_id"] == recording.recording_id
        party_tracks = [t for t in manifest["tracks"] if t["participant"] == pid]
        assert sorted(t["kind"] for t in party_tracks) == ["audio", "video"], party_tracks
        assert {t["track_id"] for t in party_tracks} == tracks_before
        (presence,) = next(p for p in manifest["participants"] if p["id"] == pid)["presence"]
        (outage,) = presence["outages"]
        # the reload said it was going (unload): away as "closed", back within the unload grace
        assert outage["reason"] == "closed" and outage["resumed_at"] > outage["lost_at"]
        await context.close()
        assert problems == [], problems


async def test_console_reloads_mid_call_as_the_same_participant(
    server: Server, tmp_path: Path, clients: list[PeerClient]
) -> None:
    """The officer reloads the workspace during the call: the console opens the case from the
    address and resumes the call by itself with the token kept in sessionStorage; the party (an
    aiortc client) sees the officer reconnecting and resumed, the officer's camera on the same
    transceiver. Then "leave" leaves at once."""
    from tests.test_browser import chromium as console_chromium
    from tests.test_browser_console import open_page, see

    camera = await face_camera(tmp_path, "officer.y4m")
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name="王伟")
        async with console_chromium(camera) as context:
            page = await open_page(context, "zh-CN", "phone")
            problems: list[str] = []
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            me = await officer_joins_the_call(page, server.base_url, case)

            watcher = await party_client(
                server, clients, api, officer, case, party, {"recording": True}
            )
            mid = await video_flowing(watcher, me)
            kept = await page.evaluate(
                "() => JSON.parse(sessionStorage.getItem('remotecase.console.call'))"
            )
            assert kept["token"], kept

            heard = len(watcher.messages)
            await page.reload()
            await watcher.wait_for(
                lambda m: m["type"] == "participant_resumed" and m["participant"]["id"] == me,
                timeout=PATIENCE,
            )
            await until(page, f"window.remotecaseConsole.call.state?.me === {me!r}")
            await see(page, "#leave-call:not([hidden])")
            seen = [
                m["type"] for m in watcher.messages[heard:] if m["type"].startswith("participant_")
            ]
            assert seen == ["participant_reconnecting", "participant_resumed"], seen
            (room,) = [r for r in server.sfu.rooms.values() if me in r.participants]
            assert room.participants[me].resumes == 1
            before = watcher.received_packets[mid]
            await more_packets(
                watcher,
                mid,
                before,
                30,
                "the officer's camera after the reload, on the same transceiver",
            )
            assert watcher.mids_for_participant(me, "video") == [mid]
            await page.screenshot(path=str(tmp_path / "console-reloaded.png"), full_page=True)
            overflow = await page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0

            await page.click("#leave-call")
            left = await watcher.wait_for(
                lambda m: m["type"] == "participant_left" and m["participant"] == me,
                timeout=PATIENCE,
            )
            assert left["reason"] == "left"
            assert (
                await page.evaluate("() => sessionStorage.getItem('remotecase.console.call')")
                is None
            )
            # a console left (pagehide) longer ago than the grace period does not join the call
            # by itself when the officer comes back to it: the kept call is dropped on load
            await page.evaluate(
                "(s) => sessionStorage.setItem('remotecase.console.call', JSON.stringify("
                "{session: s, token: 'x'.repeat(43), grace: 20, leftAt: Date.now() - 60000}))",
                kept["session"],
            )
            heard = len(watcher.messages)
            await page.reload()
            await see(page, "#join-call:not([hidden])")
            assert (
                await page.evaluate("() => sessionStorage.getItem('remotecase.console.call')")
                is None
            )
            await asyncio.sleep(2.0)
            assert not await page.evaluate("window.remotecaseConsole.call.joined")
            assert [m for m in watcher.messages[heard:] if m["type"] == "participant_joined"] == []
            assert problems == [], problems


SEEN = (
    "() => { window.__seen = [];"
    " window.addEventListener('remotecase:message', (e) => window.__seen.push(e.detail)); }"
)


async def test_a_closed_tab_leaves_as_closed_both_ways(server: Server, tmp_path: Path) -> None:
    """Closing the tab is not a lost network: the page says "unload" as it goes, and the others
    see it leave as ``closed`` after ``media.unload_grace`` (8 s), well within the 20 s resume
    grace, instead of "reconnecting" till that ends. Both ways, in one Chromium: the officer
    closes the console (the party's page hears ``participant_left`` ``closed`` and waits for
    the officer again), then, back in the call from a new console, sees the party close its tab:
    the console says 当事人已关闭页面 and its events list 关闭了页面."""
    camera = await face_camera(tmp_path)
    shots = Shots(tmp_path, "closed")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name="张三")
        async with chromium(camera) as browser:
            console_context, console, problems = await new_page(browser, "zh-CN", DESKTOP)
            me = await officer_joins_the_call(console, server.base_url, case)
            link = await invite(api, officer, case, party)
            context, page, party_problems = await new_page(browser, "zh-CN", PHONE)
            await enter_by_link(page, server.base_url + link)
            pid = f"party-{party}"
            await until(page, f"Boolean(window.remotecase.tiles[{me!r}])")
            await page.evaluate(SEEN)

            # the officer closes the console's tab (CDP Target.closeTarget)
            closed_at = loop.time()
            await console.close()
            await until(
                page,
                "window.__seen.some((m) => m.type === 'participant_left'"
                f" && m.participant === {me!r} && m.reason === 'closed')",
            )
            took = loop.time() - closed_at
            assert took < 20.0, f"the officer's close took {took:.1f} s to be said"
            heard = await page.evaluate(
                "window.__seen.filter((m) => m.type.startsWith('participant_'))"
                ".map((m) => [m.type, m.reason || null])"
            )
            assert heard == [["participant_reconnecting", "closed"], ["participant_left", "closed"]]
            await phase(page, "waiting")
            await shots.take(page, "officer-closed")
            await no_overflow(page, "the officer closed the console")
            await console_context.close()

            # the officer comes back in a new console and joins; then the party closes its tab
            console_context, console, console_problems = await new_page(browser, "zh-CN", DESKTOP)
            assert await officer_joins_the_call(console, server.base_url, case, opened=True) == me
            await phase(page, "in_call")
            await until(console, f"Boolean(window.remotecaseConsole.call.state.tiles[{pid!r}])")
            closed_at = loop.time()
            await page.close()
            await until(
                console,
                "document.getElementById('notice').textContent"
                " === '当事人已关闭页面：张三 已离开通话'",
            )
            took = loop.time() - closed_at
            assert took < 20.0, f"the party's close took {took:.1f} s to be said"
            await until(console, "document.body.innerText.includes('离开通话（关闭了页面）')")
            await until(console, f"!window.remotecaseConsole.call.state.tiles[{pid!r}]")
            assert all(pid not in room.participants for room in server.sfu.rooms.values())
            await shots.take(console, "party-closed")
            await no_overflow(console, "the party closed its page")
            await context.close()
            await console_context.close()
            assert problems == [] and party_problems == [] and console_problems == [], (
                problems,
                party_problems,
                console_problems,
            )


async def test_a_crashed_party_page_leaves_as_gone_within_the_unload_grace(
    server: Server, tmp_path: Path
) -> None:
    """The party's page dies without ``pagehide`` (its renderer crashed: CDP ``Page.crash``; a
    phone's browser killed by the system is the same to the server): no ``unload`` is sent, and
    its socket's TCP connection ends without a WebSocket close. The officer's console sees the
    party away (``gone``, not ``closed``: so no unload came) and then leaving as ``gone``
    within the unload grace (8 s), not "reconnecting" for the whole 20 s resume grace, and says
    so in Chinese: 当事人页面已关闭或崩溃."""
    camera = await face_camera(tmp_path)
    shots = Shots(tmp_path, "crashed")
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name="张三")
        async with chromium(camera) as browser:
            console_context, console, problems = await new_page(browser, "zh-CN", DESKTOP)
            await officer_joins_the_call(console, server.base_url, case)
            await console.evaluate(
                "() => { window.__seen = []; window.addEventListener('remotecase:call-message',"
                " (e) => window.__seen.push(e.detail)); }"
            )
            link = await invite(api, officer, case, party)
            context, page, party_problems = await new_page(browser, "zh-CN", PHONE)
            await enter_by_link(page, server.base_url + link)
            pid = f"party-{party}"
            await until(console, f"Boolean(window.remotecaseConsole.call.state.tiles[{pid!r}])")
            # the page would send "unload" on pagehide: a crash gives it no pagehide
            cdp = await context.new_cdp_session(page)
            crashed_at = loop.time()
            crashed = loop.create_future()

            def on_crash(_: Any) -> None:
                if not crashed.done():
                    crashed.set_result(None)

            page.on("crash", on_crash)
            # the page's target dies under the call: no answer comes
            send = asyncio.ensure_future(cdp.send("Page.crash"))
            await asyncio.wait_for(crashed, timeout=PATIENCE)
            send.cancel()
            await asyncio.gather(send, return_exceptions=True)
            await until(
                console,
                "document.getElementById('notice').textContent"
                " === '当事人页面已关闭或崩溃：张三 已离开通话'",
                timeout=30,
            )
            took = loop.time() - crashed_at
            heard = await console.evaluate(
                "window.__seen.filter((m) => m.type.startsWith('participant_')"
                f" && m.participant === {pid!r}).map((m) => [m.type, m.reason || null])"
            )
            assert heard == [["participant_reconnecting", "gone"], ["participant_left", "gone"]], (
                heard
            )
            # the unload grace (8 s) and a little, well short of the 20 s resume grace
            assert 7.0 < took < 16.0, f"the crash was said after {took:.1f} s"
            await until(console, "document.body.innerText.includes('离开通话（页面已关闭或崩溃）')")
            await until(console, f"!window.remotecaseConsole.call.state.tiles[{pid!r}]")
            assert all(pid not in room.participants for room in server.sfu.rooms.values())
            print(f"a crashed party page: left as gone {took:.2f} s after the crash")
            await shots.take(console, "party-crashed")
            await no_overflow(console, "the party's page crashed")
            with contextlib.suppress(Exception):
                await context.close()
            await console_context.close()
            assert problems == [] and party_problems == [], (problems, party_problems)
