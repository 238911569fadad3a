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
import tempfile
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
    "frameHeight"];
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

    async def page(self, context: dict[str, Any] | None = None, *, layers: bool = False) -> Any:
        """A page in a context of its own (``context``: Playwright's options for it, as a
        viewport or a locale); ``layers``: its video is sent as VP8 L1T3."""
        made = await self.browser.new_context(**(context or {}))
        await made.expose_function("__cspViolation", lambda text: self.violations.append(text))
        await made.add_init_script(CSP_WATCH)
        if layers:
            await made.add_init_script(ASK_L1T3)
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


async def measure(
    condition: Condition, seconds: float, settle: float, scratch: Path
) -> dict[str, Any]:
    from control.appkeys import SFU, SIGNER

    camera = scratch / "moving.y4m"
    if not camera.exists():
        await asyncio.to_thread(write_moving_y4m, camera)
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        net = await stack.enter_async_context(ImpairedNetwork())
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=scratch)))
        app, runner, base = await start_server(tmp, net.server_address)
        stack.push_async_callback(runner.cleanup)
        signer = app[SIGNER]
        officer_browser = await stack.enter_async_context(
            chromium(camera, origin=base, scratch=tmp)
        )
        party_browser = await stack.enter_async_context(
            chromium(camera, origin=base, network=net, scratch=tmp)
        )
        officer = await officer_browser.page(layers=True)
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
        await asyncio.sleep(2.0)
        await net.set(up=condition.up, down=condition.down)
        await asyncio.sleep(settle)
        load0 = os.getloadavg()[0]
        sfu0 = app[SFU].stats()
        link0 = await net.stats()
        party0, officer0 = await snapshot(party), await snapshot(officer)
        start = loop.time()
        party_samples: list[tuple[float, float]] = []
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
            officer_samples.append((t, o["inbound"]["video"].get("framesDecoded", 0)))
            phases.add(str(p["phase"]))
            await asyncio.sleep(0.25)
        end = loop.time()
        party1, officer1 = await snapshot(party), await snapshot(officer)
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
                "scalability": b["outbound"]["video"].get("scalabilityMode"),
                "limited_by": b["outbound"]["video"].get("qualityLimitationReason"),
            }

        report: dict[str, Any] = {
            # the party's video down-track at the window's end: what the SFU thinks of its link
            "party_downtrack": _downtrack_state(app, "party"),
            "condition": condition.name,
            "description": condition.description,
            "seconds": round(span, 1),
            "load_1min": round((load0 + os.getloadavg()[0]) / 2, 2),
            # the party (Chromium in the impaired namespace): what it receives and sends
            "party_receives": received(party0, party1)
            | {"longest_still": round(longest_still(party_samples), 2)},
            "party_sends": sent(party0, party1),
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
        if outage_end is not None:
            for who, samples in (("party", party_samples), ("officer", officer_samples)):
                before = [c for t, c in samples if t <= outage_end]
                after = [t for t, c in samples if t > outage_end and before and c > before[-1]]
                report[f"{who}_moving_again_s"] = round(after[0] - outage_end, 2) if after else None
        return report


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
        f"{ps['fps']} fps {ps['kbps']} kbit/s | officer gets {orx['decoded_fps']} fps "
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


async def run(names: list[str], seconds: float, settle: float, as_json: bool) -> int:
    reports = []
    with tempfile.TemporaryDirectory(prefix="browsernet-") as scratch:
        for name in names:
            report = await measure(CONDITIONS[name], seconds, settle, Path(scratch))
            reports.append(report)
            if not as_json:
                print(_line(report), flush=True)
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
        "--trace",
        type=Path,
        metavar="FILE",
        help="write every receiver report and REMB the down-tracks get (and their congestion "
        "decisions) to FILE",
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
    raise SystemExit(asyncio.run(run(names, args.seconds, args.settle, args.json)))


if __name__ == "__main__":
    main()
