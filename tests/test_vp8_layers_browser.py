"""VP8 temporal layers end to end (issue 18, item 2): Debian's Chromium publishes L1T3 from the
party page into a room with a clean aiortc subscriber and a thin one (150 kbit/s down, through
:mod:`bench.impair`); the thin one gets its upper layers left out, the clean one everything.

The party page itself asks no layers (control/web/client.js adds its transceivers plainly): an
init script gives its video transceiver ``sendEncodings: [{scalabilityMode: "L1T3"}]``, what
the page would ask to send layers.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from bench.impair import ImpairedLink, Impairment
from bench.peer import PeerClient
from mediaserver.forwarding import CONGESTED_KEYFRAME_RETRY, RtpDownTrack
from tests.conftest import Server, join, wait_until
from tests.test_browser import chromium, face_image

pytestmark = pytest.mark.browser

# The thin subscriber's link: below what Chromium sends of the moving picture and above its
# layer 0 (40% of it in libwebrtc's allocation). Chromium sent 130-230 kbit/s here with REMB
# from the SFU (this test's first runs; a 300 kbit/s link was never congested) and starts near
# 560 kbit/s with TWCC, the default since session 15.
THIN_BPS = 150_000
# A phone's small picture: at 640x480 Chromium kept the resolution (the party page asks it)
# and sent 3 fps at these rates; 320x240 keeps its frame rate.
CAMERA = (320, 240)
NOISE = 8  # grain over the moving face: more costs Chromium its frame rate at these rates

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


def write_moving_y4m(path: Path, frames: int = 60) -> None:
    """A face moving over noise: every frame differs, so the encoder spends its bitrate (a still
    image would cost a few kbit/s and no link would be limited)."""
    rng = np.random.default_rng(7)
    big = av.VideoFrame.from_ndarray(face_image(), format="rgb24")
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


def _video(downs: Any) -> list[RtpDownTrack]:
    return [d for d in downs if isinstance(d, RtpDownTrack) and d.up.info.kind == "video"]


def _gaps(times: list[float], start: float, end: float) -> list[float]:
    window = [start, *(t for t in times if start <= t <= end), end]
    return [b - a for a, b in itertools.pairwise(window)]


class _DecodeFailures(logging.Handler):
    """Counts aiortc's "failed to decode" warnings (both subscribers are in this process)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "failed to decode" in record.getMessage():
            self.count += 1


async def test_chromium_l1t3_thin_receiver_gets_fewer_frames_not_freezes(
    server: Server, clients: list[PeerClient], tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    failures = _DecodeFailures()
    logging.getLogger("aiortc.rtcrtpreceiver").addHandler(failures)
    y4m = tmp_path / "moving.y4m"
    await asyncio.to_thread(write_moving_y4m, y4m)
    thin_link = ImpairedLink(down=Impairment(delay=0.02, rate_bps=THIN_BPS, queue=1.0))
    clean = await join(server, clients, "layers", "clean")
    thin = await join(server, clients, "layers", "thin", link=thin_link)
    async with chromium(y4m) as browser:
        await browser.add_init_script(ASK_L1T3)
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        token = server.token("layers", "party", name="Party")
        await page.goto(f"{server.base_url}/?token={token}")
        for client in (clean, thin):
            await wait_until(
                lambda c=client: c.mids_for_participant("party", "video") != [],  # type: ignore[misc]
                timeout=30,
                what="the browser's video offered",
            )
        (clean_mid,) = clean.mids_for_participant("party", "video")
        (thin_mid,) = thin.mids_for_participant("party", "video")
        await wait_until(lambda: clean.frame_counts[clean_mid] > 0, timeout=30, what="clean")
        await wait_until(lambda: thin.frame_counts[thin_mid] > 0, timeout=40, what="thin")
        room = server.sfu.rooms["layers"]
        (thin_down,) = _video(room.participants["thin"].down_tracks())
        (clean_down,) = _video(room.participants["clean"].down_tracks())
        modes = await page.evaluate("""async () => {
            const modes = [];
            (await window.remotecase.pub.getStats()).forEach((s) => {
              if (s.type === "outbound-rtp" && s.kind === "video") modes.push(s.scalabilityMode);
            });
            return modes;
        }""")

        async def frames_encoded() -> int:
            count: int = await page.evaluate("""async () => {
                let encoded = 0;
                (await window.remotecase.pub.getStats()).forEach((s) => {
                  if (s.type === "outbound-rtp" && s.kind === "video") encoded += s.framesSent;
                });
                return encoded;
            }""")
            return count

        assert clean_down.layered, f"Chromium sent no TID (its outbound-rtp says {modes})"
        # the thin link is found limited and its layers go down (the first seconds overflow it)
        up = room.participants["party"].up_tracks[thin_down.up.info.track_id]

        def state() -> str:
            return (
                f"estimate {thin_down.link_estimate()} (REMB {thin_down.link.remb_bps}, loss "
                f"{thin_down.link.loss_bps}), limited {thin_down._link_budget is not None}, "
                f"publisher sends {up.incoming_bps():.0f} bit/s (asked {up.publisher_target}), "
                f"pauses {thin_down.congestion_pauses}, left out {thin_down.layer_dropped}, "
                f"thin frames {thin.frame_counts[thin_mid]}, queue-dropped "
                f"{thin_link.down.queue_dropped}"
            )

        for _ in range(20):
            print(state())
            if thin_down.layer_down > 0:
                break
            await asyncio.sleep(2)
        assert thin_down.layer_down > 0, state()
        # a pause in these 2 s (or the one still waiting for its keyframe) may be what the
        # window begins with: it explains a gap as one in the window does
        pauses_before = thin_down.congestion_pauses
        await asyncio.sleep(2)  # past the first overflow: what a call then looks like
        paused_at_start = thin_down._congested or thin_down.congestion_pauses > pauses_before
        start = loop.time()
        encoded0 = await frames_encoded()
        clean0, thin0 = clean.frame_counts[clean_mid], thin.frame_counts[thin_mid]
        pauses0, dropped0 = thin_down.congestion_pauses, sum(thin_down.layer_dropped)
        queue0, paced0, nacks0 = thin_link.down.queue_dropped, thin_down.nack_paced, thin_down.nacks
        answered0, not_sent0 = thin_down.retransmitted, thin_down.nack_not_sent
        not_in_history0 = thin_down.nack_not_in_history
        holes0 = thin_down._holes
        # what the SFU hands the thin subscriber's transport: (loop time, payload type,
        # sequence number, frame); retransmissions (RTX) have their own numbers
        forwarded: list[tuple[float, int, int, int]] = []
        writer = thin_down._writer
        assert writer is not None

        def recording(*fields: Any) -> None:
            forwarded.append((loop.time(), fields[0], fields[2], fields[3]))
            writer(*fields)

        thin_down._writer = recording  # type: ignore[assignment]
        await asyncio.sleep(10)
        end = loop.time()
        first_sent: dict[int, float] = {}
        primary = [f for f in forwarded if f[1] == thin_down._pt]
        for sent_at, _pt, _seq, frame_ts in primary:
            first_sent.setdefault(frame_ts, sent_at)
        sent_times = sorted(first_sent.values())
        forwarded_fps = len(first_sent) / (end - start)
        forwarded_gap = max(_gaps(sent_times, start, end))
        # numbers the subscriber never gets: only those the SFU itself counts as missing
        # upstream (the publisher's own loss) or skipped after a pause, never a left-out frame's
        steps = [(b[2] - a[2]) & 0xFFFF for a, b in itertools.pairwise(primary)]
        seq_holes = sum(d - 1 for d in steps if 1 < d < 0x8000)
        allowed_holes = thin_down._holes - holes0
        sent_fps = (await frames_encoded() - encoded0) / (end - start)
        clean_fps = (clean.frame_counts[clean_mid] - clean0) / (end - start)
        thin_fps = (thin.frame_counts[thin_mid] - thin0) / (end - start)
        thin_gaps = _gaps(thin.frame_times[thin_mid], start, end)
        clean_gaps = _gaps(clean.frame_times[clean_mid], start, end)
        report = (
            f"scalabilityMode {modes}; Chromium sent {sent_fps:.1f} fps; SFU to the thin one "
            f"{forwarded_fps:.1f} fps (longest gap {forwarded_gap:.2f} s, {seq_holes} sequence "
            f"holes); clean {clean_fps:.1f} "
            f"fps (longest gap {max(clean_gaps):.2f} s), thin {thin_fps:.1f} fps (longest gap "
            f"{max(thin_gaps):.2f} s, {sum(g > 1.0 for g in thin_gaps)} over 1 s); thin "
            f"max layer {thin_down.max_layer}, left out by layer {thin_down.layer_dropped}, "
            f"down/up {thin_down.layer_down}/{thin_down.layer_up}, pauses "
            f"{thin_down.congestion_pauses - pauses0} in the window ({thin_down.congestion_pauses}"
            f" in all), estimate {thin_down.link_estimate()}, clean left out "
            f"{clean_down.layer_dropped}, thin link queue-dropped {thin_link.down.queue_dropped}"
            f" ({thin_link.down.queue_dropped - queue0} in the window), thin NACKs "
            f"{thin_down.nacks - nacks0} in the window (answered "
            f"{thin_down.retransmitted - answered0}, not sent {thin_down.nack_not_sent - not_sent0}"
            f", not in history {thin_down.nack_not_in_history - not_in_history0}, paced "
            f"{thin_down.nack_paced - paced0})"
            f", decode failures {failures.count}, layer bit/s "
            f"{[round(b) for b in thin_down._layer_bps]}, publisher asked {up.publisher_target}"
        )
        print(report)
        # Chromium sends what its estimate allows (the party page keeps the resolution and gives
        # up frame rate): the clean one gets nearly all of it
        assert clean_fps >= 0.85 * sent_fps, report
        # (a stall of the whole loaded machine stops every stream alike: up to 2.5 s here)
        assert max(clean_gaps) <= 2.5, report
        assert sum(clean_down.layer_dropped) == 0, report
        # the thin one: its upper layers left out, and the SFU sends it frames steadily, with
        # sequence numbers without a hole
        # (unless its link took every layer in the window: then it is not thin, and the
        # decoding below still holds)
        assert sum(thin_down.layer_dropped) > dropped0 or forwarded_fps >= 0.85 * clean_fps, report
        assert forwarded_fps > 2, report
        # no gap longer than the clean stream's, but for a pause in the window: layer 0 alone
        # over the link's estimate still pauses until a keyframe, asked every
        # CONGESTED_KEYFRAME_RETRY seconds (the final CI run: one pause, a 1.9 s gap)
        allowed_gap = max(1.0, max(clean_gaps)) + 0.5
        if thin_down.congestion_pauses > pauses0 or paused_at_start:
            allowed_gap += CONGESTED_KEYFRAME_RETRY
        assert forwarded_gap <= allowed_gap, report
        assert seq_holes <= allowed_holes, (seq_holes, allowed_holes, report)
        # and what it is sent decodes: over a third of it (a pause costs the aiortc subscriber the
        # frame it held; session 10 decoded 0.7-4.3 of 7.6-11 fps, its jitter buffer stuck
        # after each pause's too short skip: docs/performance.md, "Temporal layers"), with no
        # freeze longer than the forwarding's own gaps allow, and a frame the jitter buffer
        # takes a moment to finish. Measured after the fix (session 11, a CPU hog running):
        # 0.61-0.99 of it; 0.46 in a run whose link was not held for most of the window and
        # overflowed (it was sent 23.7 of 29 fps); before, 0.11-0.33 in the worse runs
        assert thin_fps >= 0.35 * forwarded_fps, report
        assert max(thin_gaps) <= allowed_gap + 0.5, report
        assert thin.frame_counts[thin_mid] > thin0, report
        assert failures.count == 0, report  # what it gets decodes: no frame broken by a cut
        assert errors == []
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.base_url}/metrics") as response,
        ):
            text = await response.text()
        left_out = re.search(
            r'^remotecase_sfu_layer_dropped_frames_total\{layer="2"\} (\S+)$', text, re.M
        )
        assert left_out is not None and float(left_out.group(1)) > 0, text
        await page.screenshot(path=str(tmp_path / "party.png"))
