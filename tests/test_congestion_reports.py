"""Loss from receiver reports (mediaserver.congestion.ReportLoss) and what a down-track does with
it, fed with the receiver reports a real Chromium sent.

The reports below are those Debian's Chromium (the party page, ``python -m bench.browsernet
--condition thin_down``) sent for the officer's video over 4 s of a 150 kbit/s downlink with a
1 s queue, before the fix: seconds since the first, the report's own fraction lost (of 256),
the cumulative number lost and the extended highest sequence number. Chromium sends one with
every NACK, 42 a second here, and 148 of these 170 say 0 lost: the SFU that read each
report's fraction never judged the link limited, while the cumulative fields say 61% lost.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from mediaserver import congestion
from mediaserver.congestion import LinkEstimate, ReportLoss
from mediaserver.forwarding import RtpDownTrack
from mediaserver.protocols import CloseReason, TrackInfo
from tests.test_downtrack_unit import VP8_DELTA, VP8_KEY, StubReceiver, StubSender, _make, _rtp

CHROMIUM_THIN = """
    0.05 127 1 32497, 0.09 127 2 32499, 0.11 0 2 32499, 0.16 191 5 32503, 0.18 0 5 32503
    0.22 127 6 32505, 0.23 0 6 32505, 0.27 212 16 32517, 0.30 0 16 32518, 0.33 0 16 32518
    0.34 0 16 32519, 0.38 0 16 32520, 0.41 0 16 32521, 0.44 0 16 32522, 0.45 0 16 32522
    0.46 0 16 32523, 0.49 0 16 32524, 0.52 0 16 32525, 0.55 0 16 32525, 0.58 0 16 32526
    0.59 0 16 32527, 0.62 0 16 32528, 0.66 0 16 32529, 0.67 0 16 32530, 0.69 0 16 32530
    0.72 0 16 32531, 0.73 0 16 32531, 0.77 0 16 32532, 0.80 0 16 32533, 0.82 0 16 32533
    0.84 0 16 32534, 0.88 0 16 32535, 0.90 0 16 32535, 0.90 0 16 32536, 0.94 0 16 32537
    0.95 0 16 32537, 0.98 0 16 32538, 1.02 0 16 32539, 1.05 0 16 32539, 1.09 0 16 32539
    1.10 0 16 32539, 1.13 0 16 32539, 1.14 0 16 32539, 1.19 153 19 32544, 1.22 0 19 32545
    1.24 0 19 32545, 1.25 0 19 32546, 1.29 0 19 32546, 1.30 127 20 32548, 1.33 0 20 32548
    1.35 0 20 32548, 1.38 0 20 32548, 1.41 0 20 32548, 1.41 0 20 32548, 1.44 0 20 32548
    1.46 0 20 32548, 1.48 0 20 32548, 1.49 204 24 32553, 1.52 0 24 32553, 1.56 0 24 32553
    1.57 0 24 32553, 1.59 170 26 32556, 1.59 0 26 32556, 1.62 0 26 32556, 1.63 0 26 32556
    1.64 0 26 32556, 1.66 127 27 32558, 1.68 0 27 32558, 1.69 0 27 32558, 1.72 0 27 32558
    1.73 0 27 32558, 1.75 0 27 32558, 1.77 0 27 32558, 1.80 0 27 32558, 1.83 0 27 32558
    1.83 0 27 32558, 1.86 0 27 32558, 1.88 0 27 32558, 1.91 0 27 32558, 1.94 0 27 32558
    1.95 0 27 32558, 1.99 0 27 32558, 1.99 0 27 32558, 2.00 233 38 32570, 2.02 170 40 32573
    2.05 0 40 32573, 2.08 0 40 32573, 2.08 0 40 32573, 2.10 0 40 32573, 2.11 0 40 32573
    2.13 0 40 32573, 2.16 0 40 32573, 2.19 0 40 32573, 2.20 0 40 32573, 2.22 204 44 32578
    2.24 0 44 32578, 2.27 0 44 32578, 2.30 0 44 32578, 2.30 0 44 32578, 2.31 0 44 32578
    2.33 0 44 32578, 2.35 0 44 32578, 2.38 0 44 32578, 2.40 0 44 32578, 2.41 204 48 32583
    2.44 0 48 32583, 2.47 0 48 32583, 2.49 0 48 32583, 2.52 0 48 32583, 2.54 0 48 32583
    2.55 191 51 32587, 2.58 0 51 32587, 2.60 0 51 32587, 2.64 0 51 32587, 2.67 0 51 32587
    2.70 0 51 32587, 2.72 0 51 32587, 2.73 0 51 32587, 2.77 0 51 32587, 2.78 0 51 32587
    2.80 218 57 32594, 2.83 0 57 32594, 2.84 0 57 32594, 2.88 0 57 32594, 2.93 0 57 32594
    2.94 0 57 32594, 2.94 191 60 32598, 2.96 0 60 32598, 2.98 0 60 32599, 2.99 0 60 32599
    3.02 0 60 32599, 3.05 0 60 32599, 3.09 0 60 32599, 3.10 0 60 32599, 3.14 0 60 32599
    3.16 0 60 32599, 3.18 0 60 32599, 3.19 218 66 32606, 3.21 0 66 32607, 3.22 0 66 32607
    3.27 0 66 32607, 3.30 0 66 32607, 3.33 0 66 32607, 3.38 0 66 32607, 3.40 0 66 32607
    3.41 212 71 32613, 3.45 0 71 32613, 3.48 0 71 32613, 3.53 0 71 32613, 3.55 0 71 32613
    3.55 0 71 32613, 3.58 191 74 32617, 3.61 0 74 32617, 3.63 127 75 32619, 3.67 0 75 32619
    3.68 0 75 32619, 3.69 0 75 32619, 3.73 0 75 32619, 3.74 0 75 32619, 3.77 0 75 32619
    3.80 0 75 32619, 3.80 0 75 32619, 3.83 182 80 32626, 3.86 0 80 32626, 3.88 0 80 32626
    3.88 0 80 32626, 3.91 0 80 32626, 3.94 0 80 32626, 3.96 0 80 32626, 3.99 0 80 32626
"""
SENT_BPS = 150_000  # about what the SFU forwarded of that video meanwhile (its own count)


def _reports() -> list[tuple[float, int, int, int]]:
    rows = []
    for item in CHROMIUM_THIN.replace("\n", ",").split(","):
        if not item.strip():
            continue
        t, fraction, lost, highest = item.split()
        rows.append((float(t), int(fraction), int(lost), int(highest)))
    return rows


def test_chromium_reports_one_by_one_hide_the_loss_the_cumulative_fields_show() -> None:
    reports = _reports()
    assert len(reports) == 170
    zero = sum(1 for _, fraction, _, _ in reports if fraction == 0)
    assert zero / len(reports) > 0.8  # each report covers a packet or two: mostly "0 lost"
    meter = ReportLoss()
    judged = []
    for t, _, lost, highest in reports:
        result = meter.on_report(highest, lost, 0, int(SENT_BPS / 8 * t), 100.0 + t)
        if result is not None:
            judged.append(result)
    assert judged, "no window judged: the heavy loss went unseen"
    fraction, sent_bps, seconds = judged[0]
    assert fraction > congestion.LOSS_FAST  # judged early, on the fast path
    assert 0.9 * SENT_BPS < sent_bps < 1.1 * SENT_BPS and seconds < 3.0
    link = LinkEstimate()
    link.on_loss(fraction, sent_bps, seconds)
    assert link.loss_bps is not None and link.loss_bps < 0.85 * SENT_BPS


def test_skipped_numbers_are_not_the_links_loss_and_few_packets_only_raise() -> None:
    meter = ReportLoss()
    assert meter.on_report(1000, 0, 0, 0, 0.0) is None
    # 200 numbers skipped after a pause, counted lost by the receiver, never sent: no loss
    result = meter.on_report(1000 + 400, 200, 200, 40_000, 4.0)
    assert result is not None and result[0] == 0.0
    # 5 of 60 lost (random loss on a lossy link): too few packets to lower anything
    meter = ReportLoss()
    meter.on_report(0, 0, 0, 0, 0.0)
    assert meter.on_report(60, 5, 0, 60_000, 1.5) is None
    # a light stream, calm for two seconds: judged, so that its bound can rise again
    meter = ReportLoss()
    meter.on_report(0, 0, 0, 0, 0.0)
    assert meter.on_report(12, 0, 0, 12_000, 1.0) is None
    assert meter.on_report(20, 0, 0, 20_000, 2.5) == (0.0, 20_000 * 8 / 2.5, 2.5)
    # a report older than the window's first (reordered) says nothing new
    assert meter.on_report(19, 0, 0, 20_000, 2.6) is None


def test_another_streams_loss_only_lowers_and_the_remb_has_headroom() -> None:
    link = LinkEstimate()
    link.on_remb(100_000, 0.0)
    assert link.budget(0.0) == int(100_000 * congestion.REMB_HEADROOM)
    link.on_other_loss(0.05, 90_000, 0.0)  # audio lost a little: nothing
    assert link.loss_bps is None
    link.on_other_loss(0.4, 90_000, 0.0)  # from the estimate, not from what was sent
    assert link.loss_bps == 100_000 * 0.8
    link.on_other_loss(0.2, 90_000, 0.0)
    assert link.loss_bps == 80_000 * 0.9  # lower again from the (now lower) estimate
    assert link.budget(0.0) == 72_000  # the loss bound holds it under the REMB's headroom


def _audio_info() -> TrackInfo:
    return TrackInfo("TR_a", "pub", "audio", "audio/opus", 48000, 2, ())


async def test_a_thin_subscribers_reports_limit_its_video_and_its_audio_goes_first() -> None:
    sent: list[RtpPacket] = []
    up, video, _ = _make(sent)
    router = SimpleNamespace(senders={})
    video_sender: Any = video.sender  # the stand-in, given a transport with a router
    video_sender.transport = SimpleNamespace(_rtp_router=router)
    from mediaserver.forwarding import ForwardedUpTrack

    audio_up = ForwardedUpTrack(
        _audio_info(),
        StubReceiver(),
        pli_min_interval=0.0,  # type: ignore[arg-type]
        log_extra={},
    )
    audio_sender = StubSender(_ssrc=3333, _rtx_ssrc=4444)
    audio_sender.transport = video_sender.transport
    audio = RtpDownTrack("sub/TR_a", audio_up, audio_sender)  # type: ignore[arg-type]
    router.senders = {
        1111: SimpleNamespace(_sfu_hooks=video),
        3333: SimpleNamespace(_sfu_hooks=audio),
    }
    assert video._siblings("audio") == [audio] and audio._siblings("video") == [video]

    # the video: 30 frames of 8 packets (a stream well above a thin link)
    up.on_rtp(_rtp(100, 0, VP8_KEY, marker=1))
    seq = 101
    for frame in range(1, 31):
        for n in range(8):
            up.on_rtp(_rtp(seq, frame * 3000, VP8_DELTA + bytes(900), marker=int(n == 7)))
            seq += 1
    first = sent[0].sequence_number
    highest = sent[-1].sequence_number
    # Chromium's reports: 60% of it lost on the link (cumulative), each report's own fraction 0
    video.on_receiver_report(0.0, first, 0)
    video._loss._start = (first, 0, 0, time.monotonic() - 2.0, 0)  # two seconds ago
    video.bytes = 300_000 * 2 // 8  # and sent at 300 kbit/s meanwhile
    video.on_receiver_report(0.0, highest, int(0.6 * (highest - first)))
    assert video.link.loss_bps is not None and video.link.loss_bps < 300_000
    # retransmissions are paced by the loss bound even before the link counts as limited
    assert video._rtx_budget is not None
    assert video._rtx_budget.rate * 8 <= congestion.RETRANSMIT_SHARE * video.link.loss_bps + 1
    bound = video.link.loss_bps
    # the audio then loses 40% too: the video goes down further, the audio is never limited
    video.sent_bps = 150_000.0
    audio._loss._start = (0, 0, 0, time.monotonic() - 3.0, 0)
    audio.bytes = 24_000 * 3 // 8
    audio.on_receiver_report(0.4, 200, 80)
    assert video.link.loss_bps is not None and video.link.loss_bps < bound
    assert audio._link_budget is None


@pytest.mark.parametrize("receiver_cycles", [0, -1])
async def test_a_report_long_after_the_last_hole_is_read_against_the_right_mark(
    receiver_cycles: int,
) -> None:
    """Skipped numbers are marked where in the subscriber's numbering they were skipped, and
    a report is read against the marks at or before its extended highest number. More than
    32,768 numbers (5 minutes of video) after the last hole, a 16-bit comparison took every
    mark for one after the report: the window's start read none of the numbers skipped
    before it, and the next hole's window took them all for its own, hiding that window's
    loss on the link. ``receiver_cycles``: the receiver counts its cycles from its own first
    packet (-1: one fewer than the SFU, its first packet having come after a wrap), so its
    extended numbers differ from the down-track's by whole cycles."""
    import asyncio

    written: list[tuple[Any, ...]] = []
    up, down, _ = _make([])
    down._writer = lambda *fields: written.append(fields)  # type: ignore[assignment]
    cycles = 0
    last = None
    highest = 0  # the receiver's extended highest number (RFC 3550 A.1), counted from written

    def receive() -> None:
        nonlocal cycles, last, highest
        for fields in written:
            seq = fields[2]
            if last is not None and seq < last and last - seq > 0x8000:
                cycles += 0x10000
            last = seq
            highest = max(highest, cycles + seq)
        written.clear()

    def report(lost: int) -> None:
        down.on_receiver_report(0.0, (highest + receiver_cycles * 0x10000) & 0xFFFFFFFF, lost)

    skipped = 0  # numbers the subscriber never got because the publisher's uplink lost them
    up.on_rtp(_rtp(0, 0, VP8_KEY, marker=1))
    seq = 1
    for _hole in range(12):  # 12 holes of 5 (60 skipped), 10 packets apart
        for _ in range(10):
            up.on_rtp(_rtp(seq, seq * 3000, VP8_DELTA, marker=1))
            seq += 1
        seq += 5
        skipped += 5
    receive()
    first = highest
    # the down-track starts at a random number below 0x8000 and 121 packets have gone: no wrap yet
    assert first < 0x10000
    judged = []
    run_to = first + 0x10000 + 40_000  # past a whole cycle, then 40,000 more (> 32,768)
    while highest < run_to:
        for _ in range(500):
            up.on_rtp(_rtp(seq & 0xFFFF, seq * 3000, VP8_DELTA, marker=1))
            seq += 1
        receive()
        # every packet sent arrived: the receiver lost only the numbers skipped upstream
        report(skipped)
        judged.append(down.link.fraction_lost)
        await asyncio.sleep(0)  # not one long callback on the loop
    assert highest - first > 0x10000
    assert down.link.reports > 100 and set(judged) == {0.0}  # nothing lost on the link
    assert down.link.loss_bps is None
    window_start, lost_start = highest, skipped
    # a new hole of 5, then 200 numbers of which the link loses 50
    seq += 5
    skipped += 5
    for _ in range(195):
        up.on_rtp(_rtp(seq & 0xFFFF, seq * 3000, VP8_DELTA, marker=1))
        seq += 1
    receive()
    assert highest - window_start == 200
    report(lost_start + 5 + 50)
    # 50 of the 195 numbers sent in that window: the link lost a quarter of them
    assert down.link.fraction_lost == 50 / 195
    assert down.link.loss_bps is not None
    await up.close(CloseReason.UNPUBLISHED)
