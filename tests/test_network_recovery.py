"""Recovery on impaired links (issue 18): real aiortc peers through the SFU, with the
impairment of :mod:`bench.impair` on a party's own sockets."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from bench.impair import ImpairedLink, Impairment
from bench.peer import PatternVideoTrack, PeerClient
from tests.conftest import Server, join, wait_until

# Packets at the very end of a stream that stopped: a loss there is revealed by no later packet,
# so nothing NACKs it; completeness is checked up to here before the last packet sent.
TAIL = 40


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


async def test_link_loses_delays_reorders_and_goes_dark() -> None:
    """The harness itself, on two UDP sockets of 127.0.0.1."""
    loop = asyncio.get_running_loop()
    rx_transport, rx = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    tx_transport, tx = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    addr = rx_transport.get_extra_info("sockname")
    link = ImpairedLink(up=Impairment(loss=0.2, delay=0.03, jitter=0.02), seed=7)
    link._wrap(tx)
    try:
        for i in range(500):
            tx.transport.sendto(i.to_bytes(2, "big"), addr)
            if i % 10 == 9:
                await asyncio.sleep(0.002)  # paced, so the receiving socket's buffer keeps up
        await wait_until(lambda: link.up.lost + link.up.delivered == 500, what="all handed on")
        # the kernel may still drop a few on a busy machine (a full receive buffer)
        await wait_until(lambda: len(rx.got) >= 0.95 * link.up.delivered, what="received")
        order = [int.from_bytes(d, "big") for d in rx.got]
        assert link.up.datagrams == 500
        assert 50 < link.up.lost < 150  # about 20%
        assert order != sorted(order) and link.up.reordered > 0  # jitter reorders
        rx.got.clear()
        link.outage(30.0)
        tx.transport.sendto(b"dark", addr)
        await asyncio.sleep(0.1)
        assert rx.got == [] and link.up.outage_dropped == 1
        link.restore()
        link.set_impairment(up=Impairment(rate_bps=80_000, queue=0.1))
        for _ in range(40):  # 40 x (1000 + 28) bytes at 80 kbit/s: 4 s; the queue holds 0.1 s
            tx.transport.sendto(bytes(1000), addr)
        assert link.up.queue_dropped > 30
    finally:
        link.close()
        rx_transport.close()
        tx_transport.close()


def _sent_seq_of(publisher: PeerClient, received: list[tuple[int, str]]) -> tuple[int, int]:
    """(offset from the publisher's sequence numbers to the subscriber's, the SSRC)."""
    assert publisher.publisher_pc is not None
    ssrc = publisher.publisher_pc.getTransceivers()[0].sender._ssrc
    sent = list(zip(publisher.sent_seqs[ssrc], publisher.sent_hashes[ssrc], strict=True))
    counts: dict[str, int] = {}
    for _, h in sent:
        counts[h] = counts.get(h, 0) + 1
    by_hash = {h: seq for seq, h in sent if counts[h] == 1}
    anchor = next((seq, h) for seq, h in received if h in by_hash)
    return (anchor[0] - by_hash[anchor[1]]) & 0xFFFF, ssrc


def _freezes(times: list[float], limit: float = 0.5) -> int:
    return sum(1 for a, b in itertools.pairwise(times) if b - a > limit)


@pytest.mark.parametrize("loss", [0.05])
async def test_lossy_jittery_publisher_loses_no_video_after_retransmission(
    server: Server, clients: list[PeerClient], loss: float
) -> None:
    # 5% loss each way and 80 +- 30 ms round trip on the publisher's link: the jitter
    # reorders its packets, the loss takes some of its media and some of the SFU's NACKs
    link = ImpairedLink(
        up=Impairment(loss=loss, delay=0.04, jitter=0.015),
        down=Impairment(loss=loss, delay=0.04, jitter=0.015),
    )
    pub = await join(server, clients, "lossy", "pub", record_payloads=True, link=link)
    sub = await join(server, clients, "lossy", "sub", record_payloads=True)
    track = PatternVideoTrack(fps=15)
    await pub.publish(track)
    await wait_until(lambda: sub.mids_for_participant("pub", "video") != [], what="offer")
    (mid,) = sub.mids_for_participant("pub", "video")
    await wait_until(lambda: sub.frame_counts[mid] > 0, timeout=20, what="first frame")
    decoded_before, sent_before = sub.frame_counts[mid], track._count
    await asyncio.sleep(8)
    frames_sent = track._count - sent_before
    freezes = _freezes(sub.frame_times[mid])  # reported: a busy machine's stalls make some
    track.stop()
    await asyncio.sleep(1.5)  # retransmissions in flight land, the decoder catches up
    decoded = sub.frame_counts[mid] - decoded_before

    received = list(zip(sub.received_seqs[mid], sub.received_hashes[mid], strict=True))
    offset, ssrc = _sent_seq_of(pub, received)
    sent = pub.sent_seqs[ssrc]
    got = {(seq - offset) & 0xFFFF for seq, _ in received}
    first = (received[0][0] - offset) & 0xFFFF
    start = sent.index(first)
    expected = sent[start : len(sent) - TAIL]
    missing = [s for s in expected if s not in got]
    assert link.up.lost > 10, "the link lost nothing: not the condition under test"
    assert not missing, f"{len(missing)} of {len(expected)} packets lost after retransmission"

    room = server.sfu.rooms["lossy"]
    (down,) = room.participants["sub"].down_tracks()
    up = room.participants["pub"].up_tracks[down.up.info.track_id]
    assert up.publisher_nacks > 0  # the SFU asked the publisher again
    # every NACK the history could answer was answered
    assert down.nack_not_sent == 0 and down.nack_failed == 0
    # nearly every frame decoded
    assert decoded >= 0.9 * frames_sent, (decoded, frames_sent)
    stats = server.sfu.stats()
    assert stats["nack_not_sent"] == 0 and stats["nack_failed"] == 0
    print(
        f"loss {loss:.0%}: decoded {decoded}/{frames_sent} frames, {freezes} freezes, "
        f"lost {link.up.lost} up {link.down.lost} down, reordered {link.up.reordered}, "
        f"publisher NACKs {up.publisher_nacks}, subscriber NACKs {down.nacks} "
        f"(answered {down.retransmitted}, not in history {down.nack_not_in_history})"
    )


async def test_lossy_subscriber_gets_every_nack_answered_from_history(
    server: Server, clients: list[PeerClient]
) -> None:
    """5% loss and jitter on the subscriber's link: each of its NACKs names a packet the SFU
    has, and each is answered (RTX), so what it still misses is what aiortc's receiver never
    asked for again (it NACKs only when a new hole opens)."""
    link = ImpairedLink(
        up=Impairment(loss=0.05, delay=0.04, jitter=0.015),
        down=Impairment(loss=0.05, delay=0.04, jitter=0.015),
        seed=3,
    )
    pub = await join(server, clients, "lossysub", "pub", record_payloads=True)
    sub = await join(server, clients, "lossysub", "sub", record_payloads=True, link=link)
    track = PatternVideoTrack(fps=15)
    await pub.publish(track)
    await wait_until(lambda: sub.mids_for_participant("pub", "video") != [], what="offer")
    (mid,) = sub.mids_for_participant("pub", "video")
    await wait_until(lambda: sub.frame_counts[mid] > 0, timeout=20, what="first frame")
    await asyncio.sleep(8)
    track.stop()
    await asyncio.sleep(1.5)
    room = server.sfu.rooms["lossysub"]
    (down,) = room.participants["sub"].down_tracks()
    assert link.down.lost > 10
    assert down.nacks > 0 and down.retransmitted > 0
    assert down.nack_not_sent == 0 and down.nack_not_in_history == 0 and down.nack_failed == 0
    assert down.retransmitted == down.nacks
    received = list(zip(sub.received_seqs[mid], sub.received_hashes[mid], strict=True))
    offset, ssrc = _sent_seq_of(pub, received)
    got = {(seq - offset) & 0xFFFF for seq, _ in received}
    sent = pub.sent_seqs[ssrc]
    start = sent.index((received[0][0] - offset) & 0xFFFF)
    expected = sent[start : len(sent) - TAIL]
    missing = [s for s in expected if s not in got]
    assert len(missing) <= 0.01 * len(expected), f"{len(missing)} of {len(expected)} lost"
    print(f"lossy subscriber: {len(missing)} of {len(expected)} lost, {down.nacks} NACKed")


async def test_metrics_count_nack_outcomes(server: Server, clients: list[PeerClient]) -> None:
    pub = await join(server, clients, "nackm", "pub")
    sub = await join(server, clients, "nackm", "sub", record_payloads=True)
    await pub.publish(PatternVideoTrack(fps=15))
    await wait_until(lambda: sub.mids_for_participant("pub", "video") != [], what="offer")
    (mid,) = sub.mids_for_participant("pub", "video")
    await wait_until(lambda: sub.received_packets[mid] > 20, what="video at sub")
    receiver = next(t.receiver for t in sub.subscriber_pc.getTransceivers() if t.mid == mid)
    _, highest, _ = sub.received_seq[mid]
    # one it sent, one from the future
    await receiver._send_rtcp_nack(
        sub.received_ssrc[mid], [(highest - 2) & 0xFFFF, (highest + 500) & 0xFFFF]
    )
    (down,) = server.sfu.rooms["nackm"].participants["sub"].down_tracks()
    await wait_until(lambda: down.nacks >= 2, what="NACK at the SFU")
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(f"{server.base_url}/metrics") as resp:
        text = await resp.text()
    answered = _sample(text, 'remotecase_sfu_nacked_packets_total{result="answered"}')
    not_sent = _sample(text, 'remotecase_sfu_nacked_packets_total{result="not_sent"}')
    assert answered >= 1 and not_sent >= 1
    assert "remotecase_sfu_publisher_gaps_total" in text


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_picture_moves_again_soon_after_an_outage(
    server: Server, clients: list[PeerClient]
) -> None:
    """A 3 s outage on the publisher's link: the call stays, the SFU asks a keyframe as soon
    as media is back, and the subscriber's picture moves again within a second or so (it
    took the outage plus 3.4 s when the subscriber had to wait out its jitter buffer)."""
    link = ImpairedLink(up=Impairment(delay=0.04), down=Impairment(delay=0.04))
    pub = await join(server, clients, "outage", "pub", link=link)
    sub = await join(server, clients, "outage", "sub")
    await pub.publish(PatternVideoTrack(fps=15))
    await wait_until(lambda: sub.mids_for_participant("pub", "video") != [], what="offer")
    (mid,) = sub.mids_for_participant("pub", "video")
    await wait_until(lambda: sub.frame_counts[mid] > 10, timeout=20, what="video")
    room = server.sfu.rooms["outage"]
    (up,) = room.participants["pub"].up_tracks.values()
    gaps = up.gaps
    loop = asyncio.get_running_loop()
    link.outage(3.0)
    back = loop.time() + 3.0
    await asyncio.sleep(3.0)
    await wait_until(
        lambda: any(t > back for t in sub.frame_times[mid]), timeout=10, what="moving again"
    )
    recovered = next(t for t in sub.frame_times[mid] if t > back) - back
    assert up.gaps > gaps  # the keyframe was asked for the gap
    assert recovered < 2.5, f"picture frozen {recovered:.1f} s after the outage ended"
    assert not room.participants["pub"].closed and not room.participants["sub"].closed
    # and it keeps moving
    count = sub.frame_counts[mid]
    await wait_until(lambda: sub.frame_counts[mid] > count + 10, timeout=10, what="frames")


async def test_network_bench_reports_a_condition() -> None:
    """``python -m bench.network`` on a short outage: the report's figures hang together."""
    from bench import network

    condition = network.Condition(
        "short", "a 2.5 s outage", Impairment(delay=0.02), Impairment(delay=0.02), 1.0, 2.5
    )
    report = await network.measure(condition, seconds=6.0, fps=15)
    assert report["frames_sent"] > 60 and 0 < report["frames_decoded"] <= report["frames_sent"]
    assert report["freezes"] >= 1 and report["frozen_seconds"] >= 2.0
    assert report["recovery_seconds"] is not None and report["recovery_seconds"] < 3.0
    assert report["gaps_keyframe_asked"] >= 1 and report["nacks_not_sent"] == 0
