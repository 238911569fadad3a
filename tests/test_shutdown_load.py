"""SIGTERM to an overloaded `remotecase serve`: it stops within its bounded shutdown steps.

After an overloaded benchmark step the server once did not stop within 60 s of SIGTERM and was
killed. Here publishers flood a real server with valid SRTP (written with the SFU's own fast
writer, a few microseconds a packet, so that this process outruns the server's receive path
several times over) and keep flooding while it stops.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient
from common.tasks import TaskSet
from mediaserver import aiortc_hooks
from tests.conftest import serve_process

PUBLISHERS = 4
# The server's own bound (control/app.py SHUTDOWN_LIMIT) and a margin for a busy machine.
EXIT_BOUND = 45.0


async def _flood(client: PeerClient, until: asyncio.Event, sent: list[int]) -> None:
    """Valid SRTP on the client's video SSRC, as fast as this loop allows, until ``until``."""
    assert client.publisher_pc is not None
    transceiver = next(t for t in client.publisher_pc.getTransceivers() if t.kind == "video")
    sender = transceiver.sender
    codecs = transceiver._codecs  # type: ignore[attr-defined]
    payload_type = codecs[0].payloadType
    assert isinstance(payload_type, int)
    if sender.track is not None:
        sender.track.stop()  # from now on only the flood uses the SSRC
    tasks = TaskSet("flood")
    write = aiortc_hooks.fast_rtp_writer(sender.transport, tasks)
    payload = b"\x10\x00\x00" + os.urandom(1000)  # a VP8 delta partition
    ssrc = sender._ssrc
    assert ssrc is not None
    sequence, timestamp = 20000, 0
    try:
        while not until.is_set():
            for _ in range(200):
                sequence = (sequence + 1) & 0xFFFF
                timestamp = (timestamp + 300) & 0xFFFFFFFF
                try:
                    write(payload_type, 1, sequence, timestamp, ssrc, payload)
                except ConnectionError:
                    return  # the server has closed this connection
                sent[0] += 1
            await asyncio.sleep(0)
    finally:
        await tasks.close()


async def _all_connected(clients: list[PeerClient], within: float = 60.0) -> None:
    """Until every client's publisher connection is connected (DTLS done)."""
    deadline = time.monotonic() + within
    while True:
        states = [c.publisher_pc.connectionState if c.publisher_pc else None for c in clients]
        if all(state == "connected" for state in states):
            return
        assert time.monotonic() < deadline, f"publishers not connected in {within:.0f} s: {states}"
        await asyncio.sleep(0.1)


async def test_sigterm_under_a_flood_stops_within_the_bound(tmp_path: Path) -> None:
    aiortc_hooks.install()
    clients: list[PeerClient] = []
    stop = asyncio.Event()
    sent = [0]
    floods: list[asyncio.Task[None]] = []
    try:
        async with serve_process(tmp_path, AUTH__DEV_JOIN="true") as server:
            async with aiohttp.ClientSession() as http:
                for index in range(PUBLISHERS):
                    async with http.post(
                        f"{server.base}/dev/token", json={"room": f"r{index % 2}"}
                    ) as response:
                        token = (await response.json())["token"]
                    client = PeerClient(server.base, token, decode=False)
                    clients.append(client)
                    await client.connect()
                    await client.publish(PatternVideoTrack(fps=5))
                # media flowing: every publisher's DTLS is up (on a busy machine that can take
                # seconds after the answer), and the server has counted its packets
                await _all_connected(clients)
                await asyncio.sleep(1.0)
                floods = [asyncio.create_task(_flood(c, stop, sent)) for c in clients]
                # overloaded: the server's event loop falls behind, /healthz answers late
                await asyncio.sleep(4.0)
                failed = [t.exception() for t in floods if t.done() and not t.cancelled()]
                assert not any(failed), f"a flood stopped early: {failed}"
                assert sent[0] > 0, "the floods sent nothing"
                started = time.monotonic()
                async with http.get(
                    f"{server.base}/healthz", timeout=aiohttp.ClientTimeout(total=60)
                ) as response:
                    assert response.status == 200
                health_seconds = time.monotonic() - started
                flooded = sent[0]
                async with http.get(f"{server.base}/metrics") as response:
                    received = _received_video(await response.text())
                started = time.monotonic()
                server.proc.terminate()  # and the flood goes on
                try:
                    await asyncio.wait_for(server.proc.wait(), EXIT_BOUND + 30)
                except TimeoutError:
                    pass
                stopped_in = time.monotonic() - started
                log = server.log_text
            # overloaded: the server took in only part of the flood (the rest overflowed its
            # sockets' buffers), however busy the machine is
            assert received < 0.8 * flooded, f"the server kept up: {received} of {flooded}"
            assert server.proc.returncode is not None, (
                f"still running {stopped_in:.0f} s after SIGTERM (healthz took "
                f"{health_seconds:.1f} s under the flood):\n{log[-3000:]}"
            )
            assert stopped_in < EXIT_BOUND, (
                f"stopped {stopped_in:.1f} s after SIGTERM (healthz took {health_seconds:.1f} s "
                f"under the flood):\n{log[-3000:]}"
            )
            # an orderly stop (the watchdog's exit is 1), the calls ended as a shutdown
            assert server.proc.returncode == 0, log[-3000:]
            assert "did not close within" not in log, log[-3000:]
            print(
                f"flooded {flooded} packets, {received} received; healthz {health_seconds:.1f} s;"
                f" stopped in {stopped_in:.1f} s"
            )
    finally:
        stop.set()
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        for client in clients:
            await client.close()


def _received_video(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith('remotecase_sfu_received_packets_total{kind="video"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no received-packet counter in /metrics")
