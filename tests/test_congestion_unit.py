"""mediaserver.congestion's pure logic, and the abs-send-time header extension block."""

from __future__ import annotations

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from mediaserver import congestion, rtp
from mediaserver.congestion import LinkEstimate, TokenBucket, publisher_target


def test_link_estimate_is_the_lower_of_remb_and_loss() -> None:
    link = LinkEstimate()
    assert link.estimate(0.0) is None  # nothing says the link is limited
    link.on_remb(800_000, 0.0)
    assert link.estimate(1.0) == 800_000
    # 20% lost while sending 600 kbit/s: the link takes less than that
    link.on_loss(0.20, 600_000)
    assert link.estimate(1.0) == 540_000
    # again, from what was sent (a track held to the bound sends less): no spiral to nothing
    link.on_loss(0.20, 500_000)
    assert link.estimate(2.0) == 450_000
    # a REMB lower than the loss bound wins
    link.on_remb(300_000, 3.0)
    assert link.estimate(3.0) == 300_000


def test_link_estimate_recovers_without_loss_and_forgets_an_old_remb() -> None:
    link = LinkEstimate()
    link.on_loss(0.5, 400_000)
    assert link.estimate(0.0) == 300_000
    link.on_loss(0.05, 300_000)  # between the thresholds: held
    assert link.estimate(0.0) == 300_000
    link.on_loss(0.0, 300_000)
    assert link.estimate(0.0) == int(300_000 * congestion.LOSS_INCREASE)
    for _ in range(20):
        link.on_loss(0.0, 300_000)
    assert link.estimate(0.0) is None  # far above what is sent: no longer a limit
    link.on_remb(500_000, 10.0)
    assert link.estimate(10.0 + congestion.REMB_TIMEOUT) == 500_000
    assert link.estimate(10.1 + congestion.REMB_TIMEOUT) is None


def test_publisher_target_lowest_above_the_floor_capped_by_the_uplink() -> None:
    floor = congestion.PUBLISHER_FLOOR_BPS
    assert publisher_target([], uplink=None) is None
    assert publisher_target([None, None], uplink=900_000) == 900_000
    assert publisher_target([1_200_000, 400_000, None], uplink=900_000) == 400_000
    assert publisher_target([1_200_000, 700_000], uplink=500_000) == 500_000
    # one very weak receiver does not drag the others to nothing
    assert publisher_target([1_000_000, 50_000], uplink=None) == 1_000_000
    assert publisher_target([50_000, 80_000], uplink=2_000_000) == floor
    assert publisher_target([50_000], uplink=100_000) == 100_000  # the uplink itself is thin


def test_token_bucket() -> None:
    bucket = TokenBucket(1000.0, 0.5, now=0.0)
    assert bucket.available(0.0) == 500.0
    assert bucket.take(400, 0.0)
    assert not bucket.take(200, 0.0)  # refused: nothing spent
    assert bucket.available(0.0) == 100.0
    assert bucket.take(200, 0.1)
    bucket.spend(300, 0.1)  # into debt
    assert bucket.available(0.1) == -300.0
    assert bucket.available(0.4) == pytest.approx(0.0)
    assert bucket.available(10.0) == 500.0  # never more than the depth
    bucket.set_rate(100.0, 10.0)
    assert bucket.available(10.0) == 50.0


def _parse(extension: bytes) -> RtpPacket:
    data = rtp.build_packet(96, 1, 7, 1234, 0x1111, b"payload", 0, extension)
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=rtp.MID_URI),
                RTCRtpHeaderExtensionParameters(id=3, uri=rtp.ABS_SEND_TIME_URI),
            ]
        )
    )
    return RtpPacket.parse(data, extensions)


def test_extension_block_with_mid_and_abs_send_time() -> None:
    assert rtp.extension_block(None, None) == (b"", None)
    mid_only, at = rtp.extension_block((1, "0"), None)
    assert at is None and mid_only == rtp.mid_extension(1, "0")
    block, at = rtp.extension_block((1, "video1"), 3)
    assert at is not None and len(block) % 4 == 0
    stamped = block[:at] + rtp.abs_send_time(12.5) + block[at + 3 :]
    packet = _parse(stamped)
    assert packet.extensions.mid == "video1"
    assert packet.extensions.abs_send_time == int(12.5 * 262144) & 0xFFFFFF
    assert packet.payload == b"payload"
    block, at = rtp.extension_block(None, 3)
    assert at == 5
    assert _parse(block[:at] + rtp.abs_send_time(70.0) + block[at + 3 :]).extensions.abs_send_time


def test_a_loss_bound_has_a_floor_and_rises_again_when_no_window_judges_it() -> None:
    # steady audio loss lowers the video from its estimate again and again: never to nothing
    link = LinkEstimate()
    link.on_loss(0.5, 150_000, 1.0, 0.0)
    for i in range(40):
        link.on_other_loss(0.15, 60_000, 0.1 * i)
    assert link.loss_bps == congestion.LOSS_FLOOR_BPS
    # a down-track held under its stream pauses and no window completes: the bound is not
    # left where the bad minute put it, it rises as calm windows would raise it
    held = link.estimate(4.0 + congestion.LOSS_STALE - 0.1)
    assert held == congestion.LOSS_FLOOR_BPS
    later = link.estimate(4.0 + congestion.LOSS_STALE + 5.0)
    assert later is not None and later > 1.4 * congestion.LOSS_FLOOR_BPS
    # and lapses once far above what was sent
    assert link.estimate(4.0 + congestion.LOSS_STALE + 60.0) is None


def test_retransmissions_are_paced_only_while_heavy_loss_is_recent() -> None:
    link = LinkEstimate()
    assert not link.paces_retransmissions(0.0)  # no bound: every NACK answered
    link.on_loss(0.3, 500_000, 1.0, 10.0)
    assert link.paces_retransmissions(12.0)
    # a mobile link losing a few percent keeps its bound, but its NACKs are answered again
    link.on_loss(0.05, 400_000, 1.0, 14.0)
    assert link.loss_bps is not None
    assert not link.paces_retransmissions(10.1 + congestion.RETRANSMIT_PACE_SECONDS)
