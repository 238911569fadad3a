"""TURN for parties behind firewalls (issue 18): Debian's coturn on 127.0.0.1 with the shared
secret scheme (``use-auth-secret``), credentials made per participant in ``joined``, and a real
aiortc party allowed only relay candidates (``iceTransportPolicy: relay``) over UDP and over TCP
to the relay, whose media reaches another participant through the SFU.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aioice.turn import TurnClientTcpProtocol, TurnClientUdpProtocol
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from bench.forwarding import free_port
from bench.peer import PatternVideoTrack, PeerClient
from control.config import ConfigError
from control.sessions.turn import turn_credentials
from tests.conftest import Server, join, make_config, start_server, wait_until

TURNSERVER = shutil.which("turnserver")
SECRET = "test-shared-secret-not-for-production"


def test_credentials_are_coturns_rest_scheme() -> None:
    username, password = turn_credentials("s3cret", 3600, "party-7", now=1_700_000_000)
    assert username == "1700003600:party-7"
    expected = hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(password) == expected


def test_config_refuses_a_secret_with_fixed_credentials(tmp_path: Path) -> None:
    bad = {"urls": ["turn:127.0.0.1:3478"], "secret": "x", "username": "u", "credential": "c"}
    with pytest.raises(ConfigError, match="secret"):
        make_config(tmp_path, media={"ice_servers": [bad]})
    with pytest.raises(ConfigError, match="ttl"):
        make_config(
            tmp_path, media={"ice_servers": [{"urls": ["turn:127.0.0.1"], "secret": "x", "ttl": 5}]}
        )


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[int]:
    if TURNSERVER is None:
        pytest.skip("Debian's coturn is not installed (.ci/run installs it)")
    port = free_port()
    low = free_port()
    proc = await asyncio.create_subprocess_exec(
        TURNSERVER,
        "-n",
        "--listening-ip=127.0.0.1",
        f"--listening-port={port}",
        "--relay-ip=127.0.0.1",
        f"--min-port={low}",
        f"--max-port={low + 50}",
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=remotecase.test",
        "--allow-loopback-peers",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        f"--userdb={tmp_path / 'turndb'}",
        f"--pidfile={tmp_path / 'turnserver.pid'}",
        "--log-file=stdout",
        "--simple-log",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    log: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            log.append(line.decode(errors="replace"))

    reader = asyncio.get_running_loop().create_task(read())
    try:
        await _listening(port, log)
        yield port
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.gather(reader, return_exceptions=True)


async def _listening(port: int, log: list[str]) -> None:
    """Until turnserver accepts TCP on ``port`` (it opens UDP at the same time)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"turnserver did not start: {''.join(log)[-2000:]}") from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return


@pytest.fixture
async def turn_server(tmp_path: Path, coturn: int) -> AsyncIterator[Server]:
    urls = [f"turn:127.0.0.1:{coturn}?transport=udp", f"turn:127.0.0.1:{coturn}?transport=tcp"]
    config = make_config(tmp_path, media={"ice_servers": [{"urls": urls, "secret": SECRET}]})
    srv = await start_server(config)
    yield srv
    await srv.runner.cleanup()


def _relay_only(servers: list[dict[str, Any]], transport: str) -> RTCConfiguration:
    (entry,) = servers
    urls = [u for u in entry["urls"] if u.endswith(f"transport={transport}")]
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=urls, username=entry["username"], credential=entry["credential"])
        ],
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
    )


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_party_with_relay_candidates_only_reaches_the_room(
    turn_server: Server, clients: list[PeerClient], transport: str
) -> None:
    server = turn_server
    party = await join(server, clients, "turn-room", "party-1")
    assert party.joined is not None
    (entry,) = party.joined["ice_servers"]
    expiry, user = entry["username"].split(":", 1)
    assert user == "party-1" and 86000 < int(expiry) - time.time() <= 86400
    assert SECRET not in str(party.joined)
    # the party may use nothing but the relay
    party.publisher_pc = RTCPeerConnection(_relay_only(party.joined["ice_servers"], transport))
    watcher = await join(server, clients, "turn-room", "watcher", decode=False)
    await party.publish(PatternVideoTrack(fps=15))
    await wait_until(
        lambda: len(watcher.mids_for_participant("party-1", "video")) == 1,
        timeout=30,
        what="the party's track offered",
    )
    (mid,) = watcher.mids_for_participant("party-1", "video")
    await wait_until(
        lambda: watcher.received_packets[mid] > 30, timeout=40, what="media through the relay"
    )
    ice = party.publisher_pc.getTransceivers()[0].sender.transport.transport
    (pair,) = ice._connection._nominated.values()
    assert pair.local_candidate.type == "relay"
    assert pair.local_candidate.transport == "udp"  # the relayed address is UDP either way
    # and the party reached the relay over the transport asked for
    inner = pair.protocol.transport._TurnTransport__inner_protocol  # type: ignore[attr-defined]
    expected = TurnClientTcpProtocol if transport == "tcp" else TurnClientUdpProtocol
    assert isinstance(inner, expected), type(inner)
    assert not server.sfu.rooms["turn-room"].participants["party-1"].closed
