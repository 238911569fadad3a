"""The browser tests' way into a case's call, in one place.

Most Chromium tests of the party page start the same way: officer li logs in, makes a case with
one party and opens its session, invites the party, and joins the call as a real aiortc client
(publishing a test pattern and a tone, so the page has someone to see); then the party's page,
opened from the invitation link, gives its consents and reaches the call, and the officer
receives its video. :func:`case_call` is the first half, :func:`enter_by_link` the page's way
in, :func:`video_flowing` the check that a participant's video arrives and
:func:`more_packets` that it goes on. The console tests'
mirror image (the officer's page in the call, the party an aiortc client) uses
:func:`party_client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.netns import ImpairedNetwork, unavailable
from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    leftovers,
    make_config,
    officer_login,
    start_server,
    wait_until,
)
from tests.test_browser import face_image, write_y4m
from tests.test_browser_party import PATIENCE, invite, phase


async def face_camera(tmp_path: Path, name: str = "face.y4m") -> Path:
    """A Y4M of a face for Chromium's fake camera (written in a thread: it is large)."""
    y4m = tmp_path / name
    await asyncio.to_thread(lambda: write_y4m(y4m, face_image()))
    return y4m


@dataclass
class CaseCall:
    """A case's call with the officer in it, waiting for its party."""

    officer: str  # officer li's login token
    case: int
    party: int  # the party's ID in the case
    session: dict[str, Any]  # the session as opened (its ``id``, the officer's ``token``)
    link: str  # the party's invitation link (a path with ``?invite=``)
    officer_client: PeerClient  # officer li in the call, a real aiortc client

    @property
    def pid(self) -> str:
        """The party's participant ID in the call."""
        return f"party-{self.party}"


async def case_call(
    server: Server,
    clients: list[PeerClient],
    *,
    name: str = "张三",
    officer_publishes: bool = True,
    decode: bool = False,
) -> CaseCall:
    """Officer li's case with the party ``name``, its session open, the party invited, and
    the officer in the call (publishing a pattern and a tone unless ``officer_publishes`` is
    false; decoding what it receives with ``decode``). The client is in ``clients``, closed at
    the test's end."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        officer = await officer_login(server, api, "li")
        case, party = await case_with_party(api, officer, name=name)
        status, session = await api.call("POST", f"/api/cases/{case}/sessions", officer)
        assert status == 201, session
        link = await invite(api, officer, case, party)
    officer_client = PeerClient(server.base_url, session["token"], decode=decode)
    clients.append(officer_client)
    await officer_client.connect()
    if officer_publishes:
        await officer_client.publish(PatternVideoTrack(), ToneAudioTrack())
    return CaseCall(officer, case, party, session, link, officer_client)


async def enter_by_link(page: Any, url: str, *, face: bool = False) -> None:
    """The party's page from its link into the call: the consents (recording; the face check
    too with ``face``), by touch, then the call."""
    await page.goto(url)
    await phase(page, "consent")
    await page.tap("#consent-recording")
    if face:
        await page.tap("#consent-face")
    await page.tap("#consent-form button[type=submit]")
    await phase(page, "in_call")


async def video_flowing(client: PeerClient, participant: str, packets: int = 30) -> str:
    """The mid on which ``client`` receives ``participant``'s one video track, once more than
    ``packets`` packets of it arrived."""
    await wait_until(
        lambda: len(client.mids_for_participant(participant, "video")) == 1,
        timeout=PATIENCE,
        what=f"{participant}'s video offered",
    )
    (mid,) = client.mids_for_participant(participant, "video")
    await wait_until(
        lambda: client.received_packets[mid] > packets,
        timeout=PATIENCE,
        what=f"{participant}'s video flowing",
    )
    return mid


async def more_packets(client: PeerClient, mid: str, since: int, packets: int, what: str) -> None:
    """Wait until ``client`` has received more than ``packets`` packets on ``mid`` beyond the
    ``since`` it had counted (the media goes on, on the same transceiver)."""
    await wait_until(
        lambda: client.received_packets[mid] > since + packets, timeout=PATIENCE, what=what
    )


async def party_client(
    server: Server,
    clients: list[PeerClient],
    api: Api,
    officer: str,
    case: int,
    party: int,
    consent: dict[str, bool] | None = None,
) -> PeerClient:
    """The case's party in the call as a real aiortc client (no camera of its own): invited,
    the link redeemed with its ``consent`` (recording and face by default), joined."""
    link = await invite(api, officer, case, party)
    consent = {"recording": True, "face": True} if consent is None else consent
    status, redeemed = await api.call(
        "POST",
        "/api/invitations/redeem",
        json={"token": link.split("invite=")[1], "consent": consent},
    )
    assert status == 200, redeemed
    watcher = PeerClient(server.base_url, redeemed["token"], decode=False)
    clients.append(watcher)
    await watcher.connect()
    return watcher


@contextlib.asynccontextmanager
async def impaired_network() -> AsyncIterator[ImpairedNetwork]:
    """A :class:`bench.netns.ImpairedNetwork` for Chromium to run in (the test skips with the
    reason where namespaces cannot be made); once closed, none of its namespaces is left."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    net = ImpairedNetwork()
    try:
        await net.start()
        yield net
    finally:
        await net.close()
    assert net.topology is not None
    listing = await asyncio.to_thread(
        lambda: subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    assert net.topology.client_ns not in listing and net.topology.middle_ns not in listing


@contextlib.asynccontextmanager
async def server_for(network: ImpairedNetwork, tmp_path: Path) -> AsyncIterator[Server]:
    """A server bound (HTTP and media) to the network's server-side address, resume on;
    nothing of it left alive once stopped."""
    config = make_config(
        tmp_path, media={"host_addresses": [network.server_address], "resume_grace": 20.0}
    )
    srv = await start_server(config, host=network.server_address)
    yield srv
    await srv.runner.cleanup()
    assert leftovers(srv.app) == {}, "left behind after the server stopped"
