"""``python -m bench.network``: what a party on a bad link looks like to the others.

One publisher (aiortc, VP8 pattern video) on an impaired link (:mod:`bench.impair`), one
subscriber on a clean one, through an in-process server on 127.0.0.1. Per condition it reports
what the subscriber decoded: frames per second against those sent, freezes (gaps over 500 ms
between decoded frames) and the time they lasted, packets still lost after retransmission,
the NACKs the SFU answered, and after an outage the time until the picture moved again.

    python -m bench.network --seconds 20 --json
    python -m bench.network --condition loss5 --condition outage5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from .impair import ImpairedLink, Impairment
from .peer import PatternVideoTrack, PeerClient

FREEZE = 0.5  # a gap between decoded frames longer than this is a freeze
TAIL = 40  # the last packets sent: a loss there is revealed by nothing later


@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    up: Impairment
    down: Impairment
    outage_at: float | None = None  # seconds into the window
    outage: float = 0.0
    # a second subscriber whose own downlink is this (a thin receiver); the first stays clean
    receiver: Impairment | None = None


def _symmetric(**kwargs: Any) -> tuple[Impairment, Impairment]:
    return Impairment(**kwargs), Impairment(**kwargs)


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition("clean", "loopback, no impairment", *_symmetric()),
        Condition(
            "jitter",
            "150 ms RTT, +-30 ms jitter (reordering), no loss",
            *_symmetric(delay=0.075, jitter=0.03),
        ),
        Condition(
            "loss5",
            "5% loss each way, 150 ms RTT, +-10 ms jitter",
            *_symmetric(loss=0.05, delay=0.075, jitter=0.01),
        ),
        Condition(
            "loss10",
            "10% loss each way, 150 ms RTT, +-10 ms jitter",
            *_symmetric(loss=0.10, delay=0.075, jitter=0.01),
        ),
        Condition(
            "thin",
            "uplink 300 kbit/s (200 ms queue), 80 ms RTT",
            Impairment(delay=0.04, rate_bps=300_000),
            Impairment(delay=0.04),
        ),
        Condition(
            "thin_receiver",
            "one of two subscribers receives through 300 kbit/s (1 s queue), the other clean",
            Impairment(),
            Impairment(),
            receiver=Impairment(delay=0.02, rate_bps=300_000, queue=1.0),
        ),
        Condition(
            "outage5",
            "150 ms RTT, a 5 s outage both ways",
            *_symmetric(delay=0.075),
            outage_at=4.0,
            outage=5.0,
        ),
    )
}


async def _server(tmp: Path) -> tuple[web.AppRunner, str, Callable[[str, str], str]]:
    from control.app import create_app
    from control.appkeys import SIGNER
    from control.config import load_config

    config = load_config(
        None,
        environ={},
        overrides={
            "storage": {"data_dir": str(tmp / "var")},
            "keys": {"dir": str(tmp / "keys")},
            "media": {"host_addresses": ["127.0.0.1"]},
            "server": {"port": 0, "gc_freeze": False},
            "auth": {"dev_join": True, "prejoin_check": False},
            "log": {"level": "WARNING"},
        },
    )
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    signer = app[SIGNER]
    return runner, f"http://127.0.0.1:{port}", lambda room, who: signer.mint(room, who)


async def measure(condition: Condition, seconds: float, fps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        runner, base, token = await _server(Path(tmp))
        link = ImpairedLink(up=condition.up, down=condition.down)
        pub = PeerClient(base, token("net", "pub"), record_payloads=True, link=link)
        sub = PeerClient(base, token("net", "sub"), record_payloads=True)
        thin = None
        if condition.receiver is not None:
            thin_link = ImpairedLink(down=condition.receiver)
            thin = PeerClient(base, token("net", "thin"), link=thin_link)
        try:
            return await _run(condition, seconds, fps, link, pub, sub, runner, thin)
        finally:
            await pub.close()
            await sub.close()
            if thin is not None:
                await thin.close()
            await runner.cleanup()


async def _run(
    condition: Condition,
    seconds: float,
    fps: int,
    link: ImpairedLink,
    pub: PeerClient,
    sub: PeerClient,
    runner: web.AppRunner,
    thin: PeerClient | None = None,
) -> dict[str, Any]:
    from control.appkeys import SFU

    loop = asyncio.get_running_loop()
    await pub.connect()
    await sub.connect()
    if thin is not None:
        await thin.connect()
    # a thin receiver: the camera size of a phone call, so the stream is more than its link
    track = PatternVideoTrack(fps=fps) if thin is None else PatternVideoTrack(640, 480, fps)
    await pub.publish(track)
    deadline = loop.time() + 30
    while not sub.mids_for_participant("pub", "video") or not any(sub.frame_counts.values()):
        if loop.time() > deadline:
            raise RuntimeError("no video at the subscriber after 30 s")
        await asyncio.sleep(0.1)
    (mid,) = sub.mids_for_participant("pub", "video")
    await asyncio.sleep(2.0)  # past the start
    thin_mid = None
    if thin is not None:
        while not thin.mids_for_participant("pub", "video"):
            if loop.time() > deadline:
                raise RuntimeError("no video offer at the thin subscriber after 30 s")
            await asyncio.sleep(0.1)
        (thin_mid,) = thin.mids_for_participant("pub", "video")
    start, sent0, decoded0 = loop.time(), track._count, sub.frame_counts[mid]
    bytes0 = runner.app[SFU].stats().get("bytes_in_video", 0)
    thin0 = 0 if thin is None or thin_mid is None else thin.frame_counts[thin_mid]
    outage_end = None
    if condition.outage_at is not None:
        await asyncio.sleep(condition.outage_at)
        link.outage(condition.outage)
        outage_end = loop.time() + condition.outage
        await asyncio.sleep(max(0.0, seconds - condition.outage_at))
    else:
        await asyncio.sleep(seconds)
    end = loop.time()
    bytes1 = runner.app[SFU].stats().get("bytes_in_video", 0)
    frames_sent = track._count - sent0
    decoded = sub.frame_counts[mid] - decoded0
    times = [t for t in sub.frame_times[mid] if start <= t <= end]
    gaps = [b - a for a, b in itertools.pairwise([start, *times, end]) if b - a > FREEZE]
    recovery = None
    if outage_end is not None:
        after = [t for t in times if t > outage_end]
        recovery = round(after[0] - outage_end, 2) if after else None
    track.stop()
    await asyncio.sleep(1.5)

    lost, expected = _lost_after_retransmission(pub, sub, mid)
    stats = runner.app[SFU].stats()
    report = {
        "condition": condition.name,
        "description": condition.description,
        "seconds": round(end - start, 1),
        "frames_sent": frames_sent,
        "frames_decoded": decoded,
        "decoded_fps": round(decoded / (end - start), 1),
        "sent_fps": round(frames_sent / (end - start), 1),
        "freezes": len(gaps),
        "frozen_seconds": round(sum(gaps), 2),
        "packets_lost_after_retransmission": lost,
        "packets_expected": expected,
        "link_lost_up": link.up.lost,
        "link_lost_down": link.down.lost,
        "link_queue_dropped_up": link.up.queue_dropped,
        "link_reordered_up": link.up.reordered,
        "publisher_nacks": stats.get("publisher_nacks", 0),
        "subscriber_nacked": stats.get("nacks", 0),
        "nacks_answered": stats.get("retransmitted", 0),
        "nacks_not_in_history": stats.get("nack_not_in_history", 0),
        "nacks_not_sent": stats.get("nack_not_sent", 0),
        "keyframes_requested": stats.get("plis_sent", 0),
        "gaps_keyframe_asked": stats.get("gaps", 0),
    }
    if condition.outage_at is not None:
        report["recovery_seconds"] = recovery
    if thin is not None and thin_mid is not None:
        thin_times = [t for t in thin.frame_times[thin_mid] if start <= t <= end]
        thin_gaps = [
            b - a for a, b in itertools.pairwise([start, *thin_times, end]) if b - a > FREEZE
        ]
        report["thin_decoded_fps"] = round((thin.frame_counts[thin_mid] - thin0) / (end - start), 1)
        report["thin_freezes"] = len(thin_gaps)
        report["thin_frozen_seconds"] = round(sum(thin_gaps), 2)
        report["frames_left_out"] = stats.get("frames_dropped", 0)
        report["congestion_pauses"] = stats.get("congestion_pauses", 0)
        report["nacks_paced"] = stats.get("nack_paced", 0)
    report["publisher_kbps"] = round((bytes1 - bytes0) * 8 / 1000 / (end - start))
    return report


def _lost_after_retransmission(pub: PeerClient, sub: PeerClient, mid: str) -> tuple[int, int]:
    """(publisher packets the subscriber never got, packets it should have got), from the
    first it received to the last sent but the tail."""
    assert pub.publisher_pc is not None
    ssrc = pub.publisher_pc.getTransceivers()[0].sender._ssrc
    sent = list(zip(pub.sent_seqs[ssrc], pub.sent_hashes[ssrc], strict=True))
    received = list(zip(sub.received_seqs[mid], sub.received_hashes[mid], strict=True))
    counts: dict[str, int] = {}
    for _, h in sent:
        counts[h] = counts.get(h, 0) + 1
    by_hash = {h: seq for seq, h in sent if counts[h] == 1}
    anchor = next(((seq, h) for seq, h in received if h in by_hash), None)
    if anchor is None:
        return 0, 0
    offset = (anchor[0] - by_hash[anchor[1]]) & 0xFFFF
    got = {(seq - offset) & 0xFFFF for seq, _ in received}
    seqs = [seq for seq, _ in sent]
    first = (received[0][0] - offset) & 0xFFFF
    begin = seqs.index(first) if first in seqs else 0
    expected = seqs[begin : len(seqs) - TAIL]
    return sum(1 for s in expected if s not in got), len(expected)


async def run(names: list[str], seconds: float, fps: int, as_json: bool) -> int:
    reports = []
    for name in names:
        report = await measure(CONDITIONS[name], seconds, fps)
        reports.append(report)
        if not as_json:
            line = (
                f"{name:8} decoded {report['decoded_fps']:5} of {report['sent_fps']} fps, "
                f"{report['freezes']} freezes ({report['frozen_seconds']} s), "
                f"lost after retransmission {report['packets_lost_after_retransmission']}"
                f"/{report['packets_expected']}, NACKs answered {report['nacks_answered']}"
            )
            if "thin_decoded_fps" in report:
                line += (
                    f"; thin receiver {report['thin_decoded_fps']} fps, "
                    f"{report['thin_freezes']} freezes ({report['thin_frozen_seconds']} s)"
                )
            if "recovery_seconds" in report:
                line += f", moving again {report['recovery_seconds']} s after the outage"
            print(line, flush=True)
    if as_json:
        print(json.dumps(reports, indent=1))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.network", description=__doc__)
    parser.add_argument("--condition", action="append", choices=sorted(CONDITIONS))
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    aiortc_hooks.restrict_host_addresses(["127.0.0.1"])
    names = args.condition or list(CONDITIONS)
    raise SystemExit(asyncio.run(run(names, args.seconds, args.fps, args.json)))


if __name__ == "__main__":
    main()
