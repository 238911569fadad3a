"""``python -m bench.browsernet``: Chromium as the party on an impaired network (issue 18).

Every other impaired measurement (``bench.network``) impairs aiortc's own sockets. Here the party
is Debian's Chromium on the party page, run inside the client namespace of a
:class:`bench.netns.ImpairedNetwork`; the server runs in this (the root) namespace, bound to the
network's server address, so every packet of the party crosses the impaired link. The officer is
a second Chromium on the party page in the root namespace (a clean link). Both send VP8 **L1T3**
(the init script below asks it, as ``tests/test_vp8_layers_browser.py`` does): an aiortc
publisher cannot send temporal layers, and the question this answers is whether the SFU's
temporal layers give a thin Chromium receiver a moving picture.

Per condition (a fresh server, network and browsers each; joined on a clean link, then the
condition set, a settling time, then the window) it reads Chromium's own ``getStats()`` on both
pages: of the video each receives, decoded fps, Chromium's freezes and frozen seconds, packets
lost after retransmission (Chromium's ``packetsLost``), NACKs and PLIs sent; of the audio,
concealed samples; of what each sends, fps and kbit/s; and the SFU's counters (frames of upper
layers left out, congestion pauses, retransmissions).

    python -m bench.browsernet                       # every condition, 30 s windows
    python -m bench.browsernet --condition thin_down --seconds 20 --json
    python -m bench.browsernet --condition thin_down --trace reports.log   # every RR and REMB
    python -m bench.browsernet --condition loss5 --no-twcc   # publishers get REMB only

``BROWSERNET_CHROMIUM_ARGS`` adds switches to both Chromiums (``--force-fieldtrials=...``).

Needs root (namespaces), Debian's Chromium and Playwright's Python package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .impair import Impairment
from .netns import ImpairedNetwork

CHROMIUM = "/usr/bin/chromium"
CAMERA = (320, 240)  # a phone's small picture; Chromium keeps its frame rate at these rates
NOISE = 8
# the entries that keep Chromium off the network (tests/test_browser.py), plus mDNS off
DISABLED = ",".join(
    [
        "WebRtcHideLocalIpsWithMdns",
        "OptimizationHints",
        "NetworkTimeServiceQuerying",
        "AimEnabled",
        "PreconnectToSearch",
        "MediaRouter",
        "LensOverlay",
        "HttpsUpgrades",
        "PaintHolding",
    ]
)

ASK_L1T3 = """
(() => {
  const plain = RTCPeerConnection.prototype.addTransceiver;
  RTCPeerConnection.prototype.addTransceiver = function (what, init) {
    const kind = typeof what === "string" ? what : what.kind;
    if (kind === "video") {
      init = Object.assign({}, init || {}, { sendEncodings: [{ scalabilityMode: "L1T3" }] });
    }
    return plain.call(this, what, init);
  };
})();
"""

CSP_WATCH = (
    "document.addEventListener('securitypolicyviolation', (e) => window.__cspViolation("
    "`${document.location.pathname}: ${e.violatedDirective} ${e.blockedURI}`));"
)

# Every frame a page's <video> elements show (requestVideoFrameCallback): when it was shown,
# when its last packet was received, its RTP timestamp, its size. The trace's frame log: a gap
# in what is shown is a freeze; whether the RTP timestamps (the sender's capture) or the receive
# times have the same gap says whether the sender skipped frames or they reached the page late.
FRAME_WATCH = """
(() => {
  window.__frames = [];
  window.__origin = performance.timeOrigin / 1000;
  const watched = new WeakSet();
  const watch = (v) => {
    if (watched.has(v) || !v.requestVideoFrameCallback) return;
    watched.add(v);
    const step = (now, m) => {
      if (window.__frames.length < 20000) window.__frames.push([now / 1000,
        (m.receiveTime || 0) / 1000, m.rtpTimestamp || 0, m.width, m.height,
        v.dataset.participant || v.id || ""]);
      v.requestVideoFrameCallback(step);
    };
    v.requestVideoFrameCallback(step);
  };
  setInterval(() => document.querySelectorAll("video").forEach(watch), 200);
})();
"""

# One snapshot of a party page's own statistics: what its subscriber connection receives
# (summed per kind over the inbound streams) and what its publisher connection sends.
STATS = """async () => {
  const r = window.remotecase;
  const snap = { t: performance.now() / 1000, me: r.me, phase: r.phase,
                 inbound: { video: {}, audio: {} }, outbound: { video: {}, audio: {} } };
  const add = (into, s, keys) => {
    for (const k of keys) if (typeof s[k] === "number") into[k] = (into[k] || 0) + s[k];
  };
  const VIDEO_IN = ["framesDecoded", "framesReceived", "framesDropped", "framesPerSecond",
    "freezeCount", "totalFreezesDuration", "packetsLost", "packetsReceived", "nackCount",
    "pliCount", "firCount", "jitterBufferDelay", "jitterBufferEmittedCount", "bytesReceived",
    "keyFramesDecoded", "frameWidth", "frameHeight"];
  const AUDIO_IN = ["concealedSamples", "silentConcealedSamples", "concealmentEvents",
    "totalSamplesReceived", "packetsLost", "packetsReceived", "jitterBufferDelay",
    "jitterBufferEmittedCount", "insertedSamplesForDeceleration",
    "removedSamplesForAcceleration"];
  const OUT = ["framesEncoded", "framesSent", "bytesSent", "packetsSent",
    "retransmittedPacketsSent", "nackCount", "pliCount", "targetBitrate", "frameWidth",
    "frameHeight", "totalPacketSendDelay", "totalEncodeTime"];
  if (r.sub) (await r.sub.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp") add(snap.inbound[s.kind], s, s.kind === "video" ? VIDEO_IN
                                                                                  : AUDIO_IN);
  });
  if (r.pub) (await r.pub.getStats()).forEach((s) => {
    if (s.type === "outbound-rtp") {
      add(snap.outbound[s.kind], s, OUT);
      if (s.kind === "video") {
        snap.outbound.video.scalabilityMode = s.scalabilityMode;
        snap.outbound.video.qualityLimitationReason = s.qualityLimitationReason;
      }
    }
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      snap.outbound.availableOutgoingBitrate = s.availableOutgoingBitrate;
      snap.outbound.rtt = s.currentRoundTripTime;
    }
  });
  return snap;
}"""


def write_moving_y4m(path: Path, frames: int = 60) -> None:
    """A face moving over noise (every frame differs, so the encoder spends its bitrate)."""
    import av
    import numpy as np
    import skimage.data

    rng = np.random.default_rng(7)
    big = av.VideoFrame.from_ndarray(skimage.data.astronaut(), format="rgb24")
    face = big.reformat(width=CAMERA[0], height=CAMERA[1]).to_ndarray(format="rgb24")
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=30)
        stream.width, stream.height, stream.pix_fmt = CAMERA[0], CAMERA[1], "yuv420p"
        for i in range(frames):
            image = np.roll(face, 4 * i, axis=1)
            noise = rng.integers(0, NOISE, size=image.shape, dtype=np.uint8)
            image = np.clip(image.astype(np.int16) + noise - NOISE // 2, 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@dataclass
class Browser:
    """A Chromium (Playwright's ``Browser``) and the CSP violations its pages reported."""

    browser: Any
    violations: list[str]

    async def page(
        self, context: dict[str, Any] | None = None, *, layers: bool = False, frames: bool = False
    ) -> Any:
        """A page in a context of its own (``context``: Playwright's options for it, as a
        viewport or a locale); ``layers``: its video is sent as VP8 L1T3; ``frames``: every
        frame its videos show is logged (``FRAME_WATCH``)."""
        made = await self.browser.new_context(**(context or {}))
        await made.expose_function("__cspViolation", lambda text: self.violations.append(text))
        await made.add_init_script(CSP_WATCH)
        if layers:
            await made.add_init_script(ASK_L1T3)
        if frames:
            await made.add_init_script(FRAME_WATCH)
        page = await made.new_page()
        page.on("pageerror", lambda exc: self.violations.append(f"page error: {exc}"))
        return page


@contextlib.asynccontextmanager
async def chromium(
    camera: Path,
    *,
    origin: str,
    network: ImpairedNetwork | None = None,
    scratch: Path,
) -> AsyncIterator[Browser]:
    """Debian's Chromium, its fake camera playing ``camera``; in ``network``'s client namespace
    when given (through a wrapper: Playwright talks to it over a pipe, which crosses
    ``ip netns exec``). ``origin`` (``http://ADDR:PORT``) counts as secure for getUserMedia."""
    from playwright.async_api import async_playwright

    executable = CHROMIUM
    if network is not None:
        executable = str(network.wrapper(scratch / f"chromium-{network.client_ns}", CHROMIUM))
    args = [
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
        f"--unsafely-treat-insecure-origin-as-secure={origin}",
        f"--disable-features={DISABLED}",
        *os.environ.get("BROWSERNET_CHROMIUM_ARGS", "").split(),
    ]
    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=args
        )
        try:
            yield Browser(browser, [])
        finally:
            await browser.close()
    finally:
        await playwright.stop()


async def snapshot(page: Any) -> dict[str, Any]:
    snap: dict[str, Any] = await page.evaluate(STATS)
    return snap


def delta(a: dict[str, Any], b: dict[str, Any], side: str, kind: str, key: str) -> float:
    first = a[side][kind].get(key, 0) or 0
    last = b[side][kind].get(key, 0) or 0
    return float(last - first)


def longest_still(samples: list[tuple[float, float]]) -> float:
    """The longest time (s) the count in (time, count) samples stayed the same."""
    longest, since = 0.0, None
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if c1 == c0:
            since = t0 if since is None else since
            longest = max(longest, t1 - since)
        else:
            since = None
    return longest


# -- the conditions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    up: Impairment  # what the party sends
    down: Impairment  # what the party receives
    outage_at: float | None = None  # seconds into the window
    outage: float = 0.0


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        Condition(
            "clean", "no impairment (the veths and the bridge only)", Impairment(), Impairment()
        ),
        Condition(
            "loss5",
            "5% loss each way, 150 ms RTT, +-30 ms jitter",
            Impairment(loss=0.05, delay=0.075, jitter=0.03),
            Impairment(loss=0.05, delay=0.075, jitter=0.03),
        ),
        Condition(
            "thin_down",
            "150 kbit/s down (1 s queue), 40 ms RTT",
            Impairment(delay=0.02),
            Impairment(delay=0.02, rate_bps=150_000, queue=1.0),
        ),
        Condition(
            "thin_up",
            "500 kbit/s up (200 ms queue), 40 ms RTT",
            Impairment(delay=0.02, rate_bps=500_000),
            Impairment(delay=0.02),
        ),
        Condition(
            "outage5",
            "150 ms RTT, a 5 s outage both ways (TCP too) 5 s into the window",
            Impairment(delay=0.075),
            Impairment(delay=0.075),
            outage_at=5.0,
            outage=5.0,
        ),
    )
}


async def start_server(tmp: Path, address: str, **sections: dict[str, Any]) -> tuple[Any, Any, str]:
    """An in-process server bound to ``address`` (its media too): (app, runner, base URL)."""
    from aiohttp import web

    from control.app import create_app
    from control.config import load_config

    overrides: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(tmp / "var")},
        "keys": {"dir": str(tmp / "keys")},
        "media": {"host_addresses": [address], "resume_grace": 20.0},
        "server": {"port": 0, "gc_freeze": False},
        "auth": {"dev_join": True, "prejoin_check": False},
        "log": {"level": "WARNING"},
    }
    for name, table in sections.items():
        overrides.setdefault(name, {}).update(table)
    app = create_app(load_config(None, environ={}, overrides=overrides))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, 0)
    await site.start()
    port = runner.addresses[0][1]
    return app, runner, f"http://{address}:{port}"


async def wait_for(
    check: Callable[[], Any],
    what: str,
    timeout: float = 60.0,  # noqa: ASYNC109
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what} / 等待超时")
        await asyncio.sleep(0.25)


def _per(a: dict[str, Any], b: dict[str, Any], total: str, count: str) -> float | None:
    """The mean (ms) of an outbound video total (s) per ``count`` between two snapshots."""
    n = delta(a, b, "outbound", "video", count)
    return round(1000 * delta(a, b, "outbound", "video", total) / n, 1) if n > 0 else None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values)) if values else None


class ArrivalLog:
    """When each of the party's video frames (its last packet) reached the SFU: the kernel's
    receive stamp where its socket takes them (TWCC) and when the SFU handled it, both on the
    wall clock, by RTP timestamp. A wrapper around the up-track's ``on_rtp`` (bench only)."""

    def __init__(self) -> None:
        self.frames: dict[int, tuple[float | None, float]] = {}

    def wrap(self, sink: Any) -> None:
        from mediaserver import twcc

        plain = sink.on_rtp
        current = twcc.CURRENT

        def on_rtp(packet: Any) -> None:
            if packet.marker and len(self.frames) < 20000:
                now = time.time()
                ns = current.ns  # not twcc.arrival_ns(): that would ask a REMB socket for stamps
                kernel = now - (time.monotonic_ns() - ns) / 1e9 if ns else None
                self.frames.setdefault(packet.timestamp, (kernel, now))
            plain(packet)

        sink.on_rtp = on_rtp


def rtp_offset(rows: list[list[Any]], arrivals: ArrivalLog) -> int | None:
    """The down-track's RTP timestamp offset (the page's timestamp less the publisher's, as
    ``forwarding`` shifts it) under which most shown frames are in ``arrivals``; None when
    fewer than half are under any."""
    logged = arrivals.frames
    if not rows or not logged:
        return None
    best, best_count = None, 0
    for probe in {rows[0][2], rows[len(rows) // 2][2], rows[-1][2]}:
        for ts in logged:
            offset = (probe - ts) & 0xFFFFFFFF
            count = sum(((f[2] - offset) & 0xFFFFFFFF) in logged for f in rows)
            if count > best_count:
                best, best_count = offset, count
    return best if best_count * 2 >= len(rows) else None


def frame_gaps(
    frames: list[list[Any]],
    start: float,
    end: float,
    least: float = 0.15,
    origin: float = 0.0,
    arrivals: ArrivalLog | None = None,
) -> list[dict[str, Any]]:
    """The gaps of at least ``least`` s between two received frames a page showed in its
    window (``FRAME_WATCH``'s rows, page time), each with the same two frames' gap in RTP time
    (the sender's capture clock, 90 kHz) and in receive time, and their sizes: a shown gap
    that the RTP gap matches is the sender's, one the receive gap matches reached the page
    late, one neither matches waited in the page (jitter buffer, decoder)."""
    rows = [f for f in frames if f[1] > 0 and start <= f[0] <= end]
    # ``arrivals``: each frame's delay (relative: less the window's smallest, by the RTP clock)
    # to the SFU's kernel, to the SFU's handling, to the officer's page
    delays: dict[int, list[float | None]] = {}
    offset = rtp_offset(rows, arrivals) if arrivals is not None else None
    if arrivals is not None and offset is not None:
        first = rows[0][2]
        for f in rows:
            seen = arrivals.frames.get((f[2] - offset) & 0xFFFFFFFF)
            if seen is None:
                continue
            capture = ((f[2] - first) & 0xFFFFFFFF) / 90000
            kernel, handled = seen
            delays[f[2]] = [
                None if kernel is None else kernel - capture,
                handled - capture,
                origin + f[1] - capture,
            ]
        least_of = [
            min((v for d in delays.values() if (v := d[i]) is not None), default=0.0)
            for i in range(3)
        ]
        for d in delays.values():
            for i in range(3):
                v = d[i]
                d[i] = None if v is None else round((v - least_of[i]) * 1000)
    gaps = []
    for a, b in itertools.pairwise(rows):
        shown = b[0] - a[0]
        if shown >= least:
            gap: dict[str, Any] = {
                "at": round(a[0] - start, 2),
                "shown_ms": round(shown * 1000),
                "rtp_ms": round(((b[2] - a[2]) & 0xFFFFFFFF) / 90),
                "received_ms": round((b[1] - a[1]) * 1000),
                "size": f"{a[3]}x{a[4]}->{b[3]}x{b[4]}",
            }
            if b[2] in delays:
                # the late frame's extra delay (ms) at the SFU's socket, in the SFU, at the page
                gap["delay_kernel_sfu_page_ms"] = delays[b[2]]
            gaps.append(gap)
    return gaps


async def measure(
    condition: Condition,
    seconds: float,
    settle: float,
    scratch: Path,
    twcc: bool = True,
    frames: bool = False,
) -> dict[str, Any]:
    """One condition's window; ``twcc``: the server answers publishers with TWCC
    (``media.twcc``, the server's default; False: the REMB-only path); ``frames``: the
    officer's shown frames are logged and the report lists their gaps (``frame_gaps``)."""
    from control.appkeys import SFU, SIGNER

    camera = scratch / "moving.y4m"
    if not camera.exists():
        await asyncio.to_thread(write_moving_y4m, camera)
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        net = await stack.enter_async_context(ImpairedNetwork())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=scratch)))
        app, runner, base = await start_server(tmp, net.server_address, media={"twcc": twcc})
        stack.push_async_callback(runner.cleanup)
        signer = app[SIGNER]
        officer_browser = await stack.enter_async_context(
            chromium(camera, origin=base, scratch=tmp)
        )
        party_browser = await stack.enter_async_context(
            chromium(camera, origin=base, network=net, scratch=tmp)
        )
        officer = await officer_browser.page(layers=True, frames=frames)
        party = await party_browser.page(layers=True)
        officer_token = signer.mint("net", "officer", name="Officer", role="officer")
        party_token = signer.mint("net", "party", name="Party")
        await officer.goto(f"{base}/?token={officer_token}")
        await party.goto(f"{base}/?token={party_token}")

        async def both_decode() -> bool:
            a, b = await snapshot(officer), await snapshot(party)
            return bool(
                a["inbound"]["video"].get("framesDecoded")
                and b["inbound"]["video"].get("framesDecoded")
            )

        await wait_for(both_decode, "video both ways", timeout=60)
        arrivals = ArrivalLog() if frames else None
        if arrivals is not None:
            for transceiver in (
                app[SFU].rooms["net"].participants["party"].publisher_pc.getTransceivers()
            ):
                sink = getattr(transceiver.receiver, "_sfu_sink", None)
                if transceiver.kind == "video" and sink is not None:
                    arrivals.wrap(sink)
        await asyncio.sleep(2.0)
        await net.set(up=condition.up, down=condition.down)
        await asyncio.sleep(settle)
        load0 = os.getloadavg()[0]
        sfu0 = app[SFU].stats()
        link0 = await net.stats()
        party0, officer0 = await snapshot(party), await snapshot(officer)
        start = loop.time()
        party_samples: list[tuple[float, float]] = []
        # the party's encoder target and its transport's send estimate (bits/s), as sampled
        party_target: list[float] = []
        party_available: list[float] = []
        party_remb: list[float] = []  # the REMB the SFU last sent it (TWCC: the cap)
        officer_samples: list[tuple[float, float]] = []
        phases: set[str] = set()
        outage_end = None
        while (now := loop.time()) - start < seconds:
            if condition.outage_at is not None and outage_end is None:
                if now - start >= condition.outage_at:
                    await net.outage(condition.outage)
                    outage_end = loop.time() + condition.outage
            p, o = await snapshot(party), await snapshot(officer)
            t = loop.time()
            party_samples.append((t, p["inbound"]["video"].get("framesDecoded", 0)))
            if isinstance(p["outbound"]["video"].get("targetBitrate"), (int, float)):
                party_target.append(p["outbound"]["video"]["targetBitrate"])
            if isinstance(p["outbound"].get("availableOutgoingBitrate"), (int, float)):
                party_available.append(p["outbound"]["availableOutgoingBitrate"])
            state = _publisher_state(app, "party")
            if state is not None and state["remb_bps"] is not None:
                party_remb.append(state["remb_bps"])
            officer_samples.append((t, o["inbound"]["video"].get("framesDecoded", 0)))
            phases.add(str(p["phase"]))
            await asyncio.sleep(0.25)
        end = loop.time()
        party1, officer1 = await snapshot(party), await snapshot(officer)
        shown: list[list[Any]] = await officer.evaluate("window.__frames || []") if frames else []
        origin = float(await officer.evaluate("window.__origin || 0")) if frames else 0.0
        link1 = await net.stats()
        sfu1 = app[SFU].stats()
        span = end - start

        def received(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            audio_samples = delta(a, b, "inbound", "audio", "totalSamplesReceived")
            concealed = delta(a, b, "inbound", "audio", "concealedSamples")
            return {
                "decoded_fps": round(delta(a, b, "inbound", "video", "framesDecoded") / span, 1),
                "freezes": int(delta(a, b, "inbound", "video", "freezeCount")),
                "frozen_seconds": round(delta(a, b, "inbound", "video", "totalFreezesDuration"), 2),
                "packets_lost": int(delta(a, b, "inbound", "video", "packetsLost")),
                "packets_received": int(delta(a, b, "inbound", "video", "packetsReceived")),
                "nacks_sent": int(delta(a, b, "inbound", "video", "nackCount")),
                "plis_sent": int(delta(a, b, "inbound", "video", "pliCount")),
                "kbps": round(delta(a, b, "inbound", "video", "bytesReceived") * 8 / 1000 / span),
                "height": b["inbound"]["video"].get("frameHeight"),
                "audio_concealed_pct": round(100 * concealed / audio_samples, 1)
                if audio_samples
                else None,
            }

        def sent(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
            return {
                "fps": round(delta(a, b, "outbound", "video", "framesSent") / span, 1),
                "kbps": round(delta(a, b, "outbound", "video", "bytesSent") * 8 / 1000 / span),
                "retransmitted": int(delta(a, b, "outbound", "video", "retransmittedPacketsSent")),
                # what a packet waited in the sender's pacer, a frame in its encoder (ms, mean)
                "pacer_ms": _per(a, b, "totalPacketSendDelay", "packetsSent"),
                "encode_ms": _per(a, b, "totalEncodeTime", "framesEncoded"),
                "scalability": b["outbound"]["video"].get("scalabilityMode"),
                "limited_by": b["outbound"]["video"].get("qualityLimitationReason"),
            }

        report: dict[str, Any] = {
            "twcc": twcc,
            # the party's video down-track at the window's end: what the SFU thinks of its link
            "party_downtrack": _downtrack_state(app, "party"),
            "condition": condition.name,
            "description": condition.description,
            "seconds": round(span, 1),
            "load_1min": round((load0 + os.getloadavg()[0]) / 2, 2),
            # the party (Chromium in the impaired namespace): what it receives and sends
            "party_receives": received(party0, party1)
            | {"longest_still": round(longest_still(party_samples), 2)},
            "party_sends": sent(party0, party1)
            | {
                # medians over the window (kbit/s): what the party's encoder aimed at, and what
                # its congestion control thought the path takes
                "target_kbps": _median([v / 1000 for v in party_target]),
                "available_kbps": _median([v / 1000 for v in party_available]),
                "remb_kbps": _median([v / 1000 for v in party_remb]),
            },
            # what the SFU sent the party as a publisher: TWCC feedback, its REMB
            "party_publisher": _publisher_state(app, "party"),
            # the officer (Chromium, clean link): what it receives from the party
            "officer_receives": received(officer0, officer1)
            | {"longest_still": round(longest_still(officer_samples), 2)},
            "officer_sends": sent(officer0, officer1),
            "same_participant": party0["me"] == party1["me"] == "party",
            "party_phases": sorted(phases),
            "sfu": {
                key: sfu1.get(key, 0) - sfu0.get(key, 0)
                for key in (
                    "frames_dropped",
                    "congestion_pauses",
                    "retransmitted",
                    "nacks",
                    "nack_not_in_history",
                    "nack_paced",
                    "plis_sent",
                    "publisher_nacks",
                )
            },
            "link": {
                d: {k: link1[d][k] - link0[d][k] for k in ("datagrams", "lost", "queue_dropped")}
                for d in ("up", "down")
            },
            "problems": officer_browser.violations + party_browser.violations,
        }
        if frames:
            rows = [f for f in shown if f[1] > 0 and officer0["t"] <= f[0] <= officer1["t"]]
            gaps = frame_gaps(shown, officer0["t"], officer1["t"], origin=origin, arrivals=arrivals)
            still = [g["shown_ms"] for g in gaps if g["shown_ms"] >= 200]
            report["officer_frames"] = {
                "shown": len(rows),
                # the picture still for 200 ms or more: how often, how long in all (s). Unlike
                # Chromium's freezeCount, whose threshold (3 frame intervals, at least 150 ms
                # more than one) grows as the frame rate falls, so a stream that collapsed to
                # 3 fps counts fewer freezes than one at 27 fps with a few late frames
                "stills_200ms": len(still),
                "still_200ms_s": round(sum(still) / 1000, 2),
                "sizes": sorted({f"{f[3]}x{f[4]}" for f in rows}),
                # the party's frames the SFU logged, and of the shown ones how many it logged
                "sfu_logged": None if arrivals is None else len(arrivals.frames),
                "sfu_offset": None if arrivals is None else rtp_offset(rows, arrivals),
                "gaps": gaps,
            }
        if outage_end is not None:
            for who, samples in (("party", party_samples), ("officer", officer_samples)):
                before = [c for t, c in samples if t <= outage_end]
                after = [t for t, c in samples if t > outage_end and before and c > before[-1]]
                report[f"{who}_moving_again_s"] = round(after[0] - outage_end, 2) if after else None
        return report


def _publisher_state(app: Any, participant: str) -> dict[str, Any] | None:
    from control.appkeys import SFU

    room = app[SFU].rooms.get("net")
    if room is None or participant not in room.participants:
        return None
    state: dict[str, Any] = {"twcc_feedback": 0, "twcc_packets": 0, "remb_bps": None}
    pc = room.participants[participant].publisher_pc
    answer = pc.localDescription.sdp if pc.localDescription is not None else ""
    # the kinds of the answer's m-lines that carry transport-cc feedback
    state["answer_transport_cc"] = sorted(
        section.split(" ", 1)[0] for section in answer.split("m=")[1:] if "transport-cc" in section
    )
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        recorder = getattr(receiver, "_twcc", None)
        if recorder is not None:
            state["twcc_feedback"] = recorder.feedback_sent
            state["twcc_packets"] = recorder.packets_recorded
        if transceiver.kind == "video":
            state["remb_bps"] = getattr(receiver, "remb_sent", None)
    return state


def _downtrack_state(app: Any, participant: str) -> dict[str, Any] | None:
    from control.appkeys import SFU

    room = app[SFU].rooms.get("net")
    if room is None or participant not in room.participants:
        return None
    for down in room.participants[participant].down_tracks():
        if down.up.info.kind != "video":
            continue
        incoming = getattr(down.up, "incoming_bps", None)
        return {
            "estimate_bps": down.link_estimate(),
            "remb_bps": down.link.remb_bps,
            "loss_bps": down.link.loss_bps,
            "limited": down._link_budget is not None,
            "publisher_bps": round(incoming()) if incoming is not None else None,
            "retransmitted": down.retransmitted,
        }
    return None


def _line(r: dict[str, Any]) -> str:
    pr, orx, ps = r["party_receives"], r["officer_receives"], r["party_sends"]
    line = (
        f"{r['condition']:9} party gets {pr['decoded_fps']:4} fps ({pr['kbps']} kbit/s, "
        f"{pr['freezes']} freezes {pr['frozen_seconds']} s, still <= {pr['longest_still']} s, "
        f"lost {pr['packets_lost']}/{pr['packets_received']}, NACK {pr['nacks_sent']}, "
        f"PLI {pr['plis_sent']}, audio concealed {pr['audio_concealed_pct']}%) | party sends "
        f"{ps['fps']} fps {ps['kbps']} kbit/s (target {ps.get('target_kbps')}, available "
        f"{ps.get('available_kbps')}; TWCC {r.get('twcc')}, {r.get('party_publisher')}) | "
        f"officer gets {orx['decoded_fps']} fps "
        f"({orx['freezes']} freezes {orx['frozen_seconds']} s, lost {orx['packets_lost']}, "
        f"audio concealed {orx['audio_concealed_pct']}%) | SFU left out "
        f"{r['sfu']['frames_dropped']}, pauses {r['sfu']['congestion_pauses']} | load "
        f"{r['load_1min']}"
    )
    if "party_moving_again_s" in r:
        line += (
            f" | moving again: party {r['party_moving_again_s']} s, officer "
            f"{r['officer_moving_again_s']} s after the outage"
        )
    return line


async def run(
    names: list[str],
    seconds: float,
    settle: float,
    as_json: bool,
    twcc: bool = True,
    frames: bool = False,
) -> int:
    reports = []
    with tempfile.TemporaryDirectory(prefix="browsernet-") as scratch:
        for name in names:
            report = await measure(CONDITIONS[name], seconds, settle, Path(scratch), twcc, frames)
            reports.append(report)
            if not as_json:
                print(_line(report), flush=True)
                if frames:
                    print(f"  officer's frames: {report['officer_frames']}", flush=True)
    if as_json:
        print(json.dumps(reports, indent=1, ensure_ascii=False))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.browsernet", description=__doc__)
    parser.add_argument("--condition", action="append", choices=sorted(CONDITIONS))
    parser.add_argument("--seconds", type=float, default=30.0, help="the window per condition")
    parser.add_argument("--settle", type=float, default=5.0, help="after the condition is set")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--twcc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="answer publishers with TWCC (media.twcc, the server's default); --no-twcc: REMB "
        "only, from the SFU's delay-based estimate",
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="write every receiver report and REMB the down-tracks get (and their congestion "
        "decisions) to FILE",
    )
    parser.add_argument(
        "--frames",
        action="store_true",
        help="log every frame the officer's page shows and list the gaps of 150 ms or more "
        "with their RTP and receive gaps (whose a freeze is: the sender's, the path's, the page's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.trace is not None:
        handler = logging.FileHandler(args.trace)
        handler.setFormatter(logging.Formatter("%(relativeCreated).0f ms %(message)s"))
        forwarding = logging.getLogger("mediaserver.forwarding")
        forwarding.addHandler(handler)
        forwarding.setLevel(logging.DEBUG)
        forwarding.propagate = False  # to the file only
    from mediaserver import aiortc_hooks

    aiortc_hooks.install()
    names = args.condition or list(CONDITIONS)
    raise SystemExit(
        asyncio.run(run(names, args.seconds, args.settle, args.json, args.twcc, args.frames))
    )


if __name__ == "__main__":
    main()
