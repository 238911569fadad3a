"""Debian's Chromium as the party changes network mid-call (issue 18: "survives ... a change of
network without rejoining, and the others never see them drop out").

The party page runs in the client namespace of a :class:`bench.netns.ImpairedNetwork`; the
officer is a real aiortc client that decodes the party's video. Mid-call the namespace's
address moves to another /24 (:meth:`ImpairedNetwork.move`, as a phone going from Wi-Fi to
4G): the old address is gone, so the page's WebSocket and its ICE 5-tuples die silently (no
FIN, no RST reaches either side). The page must notice by itself (its ping heartbeat), show
"reconnecting", resume with new sockets from the new address as the same participant on the
same tracks, and the officer must never see it leave; the recording keeps one pair of tracks
for it with the outage in its presence. The times are printed (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.browsernet import CONDITIONS, chromium, snapshot, write_moving_y4m
from bench.netns import ImpairedNetwork
from bench.peer import PeerClient
from control.appkeys import RECORDER
from tests.browser_party import case_call, enter_by_link, impaired_network, server_for
from tests.conftest import (
    Server,
    wait_until,
)
from tests.test_browser_party import PATIENCE, PHONE, Shots, no_overflow

# Chromium in a namespace, a decoding officer, the move and its resume: 2 shared cores
pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

# the selected pair's local address of the page's publisher connection
LOCAL_ADDRESS = """async () => {
  const pc = window.remotecase.pub;
  if (!pc) return null;
  const stats = await pc.getStats();
  const transport = [...stats.values()].find((s) => s.type === "transport");
  const pair = transport && stats.get(transport.selectedCandidatePairId);
  const local = pair && stats.get(pair.localCandidateId);
  return local ? (local.address || local.ip) : null;
}"""


async def _local_address(page: Any) -> str | None:
    """The address the page's publisher connection sends from (its selected pair's local
    candidate), once it has one."""
    for _ in range(int(PATIENCE)):
        address = await page.evaluate(LOCAL_ADDRESS)
        if address:
            return str(address)
        await asyncio.sleep(0.5)
    return None


@pytest.fixture
async def network() -> AsyncIterator[ImpairedNetwork]:
    async with impaired_network() as net:
        yield net


@pytest.fixture
async def server(tmp_path: Path, network: ImpairedNetwork) -> AsyncIterator[Server]:
    """The server in this namespace, bound (HTTP and media) to the network's address."""
    async with server_for(network, tmp_path) as srv:
        yield srv


async def _decoded(page: Any) -> float:
    return float((await snapshot(page))["inbound"]["video"].get("framesDecoded", 0))


def _about(m: dict[str, Any], pid: str) -> bool:
    who = m.get("participant")
    return who == pid or (isinstance(who, dict) and who.get("id") == pid)


# clean: the move alone; loss5: the move on a mobile link that is lossy and jittery all along
# (5% loss each way, 150 ms RTT, +-30 ms jitter: bench.browsernet's condition), the issue's
# "done when" in one case
@pytest.mark.parametrize("condition", ["clean", "loss5"])
async def test_chromium_party_changes_network_and_stays_in_the_call(
    server: Server,
    network: ImpairedNetwork,
    tmp_path: Path,
    clients: list[PeerClient],
    condition: str,
) -> None:
    loop = asyncio.get_running_loop()
    if condition != "clean":
        await network.set(up=CONDITIONS[condition].up, down=CONDITIONS[condition].down)
    camera = tmp_path / "moving.y4m"
    await asyncio.to_thread(write_moving_y4m, camera)
    shots = Shots(tmp_path, "move")
    # the officer decodes what it receives: "the party's picture again" is a decoded frame
    call = await case_call(server, clients, decode=True)
    link, pid, officer_client = call.link, call.pid, call.officer_client
    async with contextlib.AsyncExitStack() as stack:
        browser = await stack.enter_async_context(
            chromium(camera, origin=server.base_url, network=network, scratch=tmp_path)
        )
        page = await browser.page({"locale": "zh-CN", **PHONE})
        await enter_by_link(page, server.base_url + link)
        assert await page.evaluate("() => window.remotecase.me") == pid
        await wait_until(
            lambda: len(officer_client.mids_for_participant(pid, "video")) == 1,
            timeout=PATIENCE,
            what="the party's video offered to the officer",
        )
        (mid,) = officer_client.mids_for_participant(pid, "video")
        mids = sorted(officer_client.mids_for_participant(pid))
        await wait_until(
            lambda: officer_client.frame_counts[mid] > 10,
            timeout=PATIENCE,
            what="the party's video decoded at the officer",
        )
        for _ in range(int(PATIENCE)):
            if await _decoded(page) > 10:
                break
            await asyncio.sleep(1)
        assert await _decoded(page) > 10, await snapshot(page)
        old_address = network.client_address
        assert await _local_address(page) == old_address
        (room,) = [r for r in server.sfu.rooms.values() if pid in r.participants]
        tracks_before = set(room.participants[pid].up_tracks)
        assert len(tracks_before) == 2
        recording = server.app[RECORDER].active[room.room_id]

        # Wi-Fi to 4G: the old address gone, a new one up
        heard = len(officer_client.messages)
        phases_before = len(await page.evaluate("() => window.remotecase.phases"))
        page_moved_at = await page.evaluate("() => Date.now()")
        moved_at = loop.time()
        new_address = await network.move()
        assert new_address != old_address and network.client_address == new_address
        seen: dict[str, float] = {}  # what happened, when (s after the move)
        phases_seen: list[str] = []
        page_back = False
        while loop.time() - moved_at < PATIENCE * 2:
            now = loop.time() - moved_at
            for m in officer_client.messages[heard:]:
                if m["type"].startswith("participant_") and _about(m, pid):
                    seen.setdefault(m["type"], now)
                    if m["type"] == "participant_reconnecting":
                        seen.setdefault(f"away: {m.get('reason')}", now)
            current = await page.evaluate("() => window.remotecase.phase")
            if not phases_seen or phases_seen[-1] != current:
                phases_seen.append(current)
                seen.setdefault(f"page {current}", now)
                print(f"{now:.2f} s after the move: {seen}", flush=True)
            if current == "reconnecting" and "shot" not in seen:
                seen["shot"] = now
                await shots.take(page, "reconnecting")
                await no_overflow(page, "reconnecting")
            if "participant_resumed" in seen and current == "in_call":
                page_back = True
                break
            await asyncio.sleep(0.2)
        assert page_back, f"not back after {PATIENCE * 2:.0f} s: {seen}, phases {phases_seen}"

        # the officer decodes the party's picture again, on the same transceiver
        await wait_until(
            lambda: (
                any(t > moved_at for t in officer_client.frame_times[mid][-50:])
                and officer_client.frame_times[mid][-1] - moved_at > seen["participant_resumed"]
            ),
            timeout=PATIENCE,
            what="the party's video decoded at the officer after the move",
        )
        times = officer_client.frame_times[mid]
        after = [t for t in times if t > moved_at + seen["participant_resumed"] - 0.5]
        before = [t for t in times if t <= moved_at]
        last_before = max((t for t in times if t < after[0]), default=moved_at)
        officer_back = after[0] - moved_at
        # and the party decodes the officer's again (its new subscriber connection)
        for _ in range(int(PATIENCE)):
            if await _decoded(page) > 10:
                break
            await asyncio.sleep(0.5)
        party_back = loop.time() - moved_at
        assert await _decoded(page) > 10, await snapshot(page)
        assert await _local_address(page) == new_address  # a new 5-tuple

        heard_of = [
            m["type"]
            for m in officer_client.messages[heard:]
            if m["type"].startswith("participant_") and _about(m, pid)
        ]
        # the signs the page's heartbeat saw and what each probe found (heartbeat.js)
        signs = await page.evaluate(
            f"() => window.remotecaseHeartbeat.signs.filter((s) => s.at >= {page_moved_at})"
            f".map((s) => `${{((s.at - {page_moved_at}) / 1000).toFixed(2)}} s ${{s.sign}}:"
            " ${s.verdict}${s.deadline ? ` (${s.deadline} ms)` : ''}`)"
        )
        report = (
            f"moved {old_address} -> {new_address}: {seen}; signs {signs}; "
            f"the officer's last frame of the party "
            f"{last_before - moved_at:.2f} s, again at {officer_back:.2f} s; the party decoding "
            f"the officer again by {party_back:.2f} s; the officer heard {heard_of}; the page "
            f"went through {phases_seen}; frames before {len(before)}"
        )
        print(report)
        # away and back, never a leave or a new join; the same participant and tracks
        assert heard_of[-1] == "participant_resumed", report
        assert set(heard_of) <= {"participant_reconnecting", "participant_resumed"}, report
        # the page's own record of its states: back within 2-3 s, "reconnecting" can come and
        # go between two looks of the loop above
        phases = (await page.evaluate("() => window.remotecase.phases"))[phases_before:]
        assert "reconnecting" in phases, (phases, report)
        assert await page.evaluate("() => window.remotecase.me") == pid
        assert room.participants[pid].resumes >= 1 and not room.participants[pid].closed
        assert set(room.participants[pid].up_tracks) == tracks_before
        assert sorted(officer_client.mids_for_participant(pid)) == mids
        count = officer_client.frame_counts[mid]
        await wait_until(
            lambda: officer_client.frame_counts[mid] > count + 30,
            timeout=PATIENCE,
            what="the party's video goes on at the officer",
        )
        await shots.take(page, "moved")
        await no_overflow(page, "after the move")
        assert browser.violations == [], browser.violations

        # the recording: one pair of tracks for the party, the move an outage in its presence
        manifest = await server.app[RECORDER].stop(room.room_id, actor="officer:li", reason="end")
        assert manifest["recording_id"] == recording.recording_id
        party_tracks = [t for t in manifest["tracks"] if t["participant"] == pid]
        assert sorted(t["kind"] for t in party_tracks) == ["audio", "video"], party_tracks
        assert {t["track_id"] for t in party_tracks} == tracks_before
        (presence,) = next(p for p in manifest["participants"] if p["id"] == pid)["presence"]
        assert presence["outages"], presence
        for outage in presence["outages"]:
            assert outage["resumed_at"] > outage["lost_at"], presence
