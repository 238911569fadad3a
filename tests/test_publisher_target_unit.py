"""What a publisher sending VP8 temporal layers is asked for (congestion.publisher_target):
held by the weakest subscriber in a small room, by a low quantile in a large one (issue 18:
one thin phone must not hold a 100-viewer education room's presenter at the floor)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from control.config import ConfigError, load_config
from mediaserver import congestion
from mediaserver.forwarding import ForwardedUpTrack
from mediaserver.protocols import CloseReason
from tests.test_downtrack_unit import StubReceiver, _info

FLOOR = congestion.PUBLISHER_FLOOR_BPS
SHARE = congestion.LAYER0_SHARE


def _target(
    estimates: Sequence[int | None], uplink: int | None = 3_000_000, **kw: Any
) -> int | None:
    return congestion.publisher_target(estimates, uplink=uplink, layered=True, **kw)


def test_a_call_of_three_is_held_by_its_weakest() -> None:
    # the officer and two parties, one on a thin link: it gets layer 0 of what it can take
    assert _target([1_000_000, 400_000, 100_000]) == int(100_000 / SHARE)
    assert _target([1_000_000, 800_000, 250_000]) == int(250_000 / SHARE)
    # below the floor: the floor, never less (as before)
    assert _target([1_000_000, 40_000, 900_000]) == FLOOR
    # never above the best subscriber, capped by the uplink
    assert _target([300_000, 200_000, 250_000]) == 300_000
    assert _target([2_000_000, 1_500_000, 900_000], uplink=1_000_000) == 1_000_000
    # up to four subscribers the weakest holds; a fifth makes a large room, whose tenth is
    # still its weakest with so few
    assert _target([1_000_000] * 3 + [100_000]) == int(100_000 / SHARE)
    assert _target([1_000_000] * 4 + [100_000]) == int(100_000 / SHARE)


def test_one_thin_phone_does_not_hold_a_hundred_viewers_at_the_floor() -> None:
    good: Sequence[int | None] = [1_200_000] * 99
    # today's rule would give the floor (the thin one's 60 kbit/s): the many decide
    assert _target([*good, 60_000]) == 1_200_000
    assert _target([*good, 60_000], small_room=200) == FLOOR  # the weakest-first rule
    # ten thin ones of a hundred: still below the 10th percentile
    mixed: Sequence[int | None] = [1_200_000] * 90 + [80_000] * 10
    assert _target(mixed) == 1_200_000
    # eleven: the 10th percentile is one of them, and holds the room to its layer 0
    mixed = [1_200_000] * 89 + [80_000] * 11
    assert _target(mixed) == int(max(80_000 / SHARE, FLOOR))
    # a spread: the eleventh lowest (index 10) of what each needs for its layer 0
    spread = [100_000] * 5 + [300_000] * 10 + [1_000_000] * 85
    assert _target(spread) == int(300_000 / SHARE)
    assert _target(spread, quantile=0.0) == int(100_000 / SHARE)  # 0: the weakest again
    # subscribers without an estimate yet count for the room's size, not for the quantile
    waiting: Sequence[int | None] = [None] * 96 + [1_000_000, 900_000, 800_000, 90_000]
    assert _target(waiting) == int(90_000 / SHARE)  # index int(0.1 * 4) = 0 of the four known
    # the thin ones at the bottom get only layer 0 of the richer stream or a pause: the many
    # are not held to the floor, and the target never exceeds the best link
    assert _target([5_000_000] * 100, uplink=None) == 5_000_000
    assert _target([None] * 100) == 3_000_000  # nothing known: the uplink's own estimate


def test_without_layers_the_rule_is_unchanged() -> None:
    estimates: Sequence[int | None] = [1_000_000] * 99 + [60_000]
    assert congestion.publisher_target(estimates, uplink=None) == 1_000_000  # below the floor
    assert congestion.publisher_target([1_000_000, 400_000, 100_000], uplink=None) == 400_000


class _Link:
    """A network subscriber as ForwardedUpTrack sees it: a link estimate, temporal layers."""

    def __init__(self, down_id: str, estimate: int | None) -> None:
        self.down_id = down_id
        self._estimate = estimate
        self.layered = True

    def link_estimate(self, publisher_bps: float | None = None) -> int | None:
        return self._estimate

    def write(self, packet: object) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self, reason: CloseReason) -> None:
        pass


async def test_the_up_track_applies_the_configured_rule() -> None:
    """ForwardedUpTrack.publisher_bitrate (what the publisher's REMB carries) counts its
    network subscribers and uses the room-size rule it was configured with."""

    def make(**kw: Any) -> ForwardedUpTrack:
        return ForwardedUpTrack(
            _info(),
            StubReceiver(),  # type: ignore[arg-type]
            pli_min_interval=0.0,
            log_extra={},
            **kw,
        )

    default, strict = make(), make(layered_small_room=1000)
    for up in (default, strict):
        for n in range(99):
            up.add_down_track(_Link(f"sub/{n}", 1_200_000))  # type: ignore[arg-type]
        up.add_down_track(_Link("sub/thin", 60_000))  # type: ignore[arg-type]
    assert default.publisher_bitrate(3_000_000) == 1_200_000
    assert strict.publisher_bitrate(3_000_000) == FLOOR
    await asyncio.gather(*(up.close(CloseReason.UNPUBLISHED) for up in (default, strict)))


@pytest.mark.parametrize(
    ("key", "value"),
    [("layered_small_room", 0), ("layered_quantile", 0.6), ("layered_quantile", -0.1)],
)
def test_the_settings_are_checked(key: str, value: float, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides={"media": {key: value}})
    assert f"media.{key}" in str(info.value) and str(info.value).index("不在") < str(
        info.value
    ).index("is not between")
    config = load_config(
        None, environ={}, overrides={"media": {"layered_small_room": 8, "layered_quantile": 0.2}}
    )
    options = config.media_options()
    assert (options.layered_small_room, options.layered_quantile) == (8, 0.2)


def test_a_subscriber_still_ramping_up_does_not_hold_the_publisher() -> None:
    """Issue 18: an officer on a clean link whose REMB is still rising (no loss, recent) held
    the publisher at the floor, or at what it had reached so far. Below what the publisher
    sends, such an estimate leaves it REMB_HEADROOM times that; one that fell (a receiver's
    queue growing) or with a loss bound holds as before."""
    sending = 600_000.0
    officer = congestion.LinkEstimate()
    for t, remb in enumerate((80_000, 120_000, 180_000, 260_000)):  # rising, from the start
        officer.on_remb(remb, float(t))
    assert officer.ramping(3.0)
    assert officer.estimate(3.0) == 260_000  # its estimate is unchanged (its own budget)
    hold = officer.publisher_hold(3.0, sending)
    # room above what it has reached, bounded by twice its own estimate (review 10)
    assert hold == min(int(sending * congestion.REMB_HEADROOM), 260_000 * 2) == 520_000
    estimates: list[int | None] = [hold]
    assert congestion.publisher_target(estimates, uplink=None) == hold  # not the floor
    # above what the publisher sends: the estimate itself
    assert officer.publisher_hold(3.0, 200_000.0) == 260_000
    # a REMB that fell by more than RAMP_FALL: a real limit, for RAMP_CALM seconds
    officer.on_remb(150_000, 4.0)
    assert not officer.ramping(5.0)
    assert officer.publisher_hold(5.0, sending) == 150_000
    officer.on_remb(160_000, 4.0 + congestion.RAMP_CALM)
    assert officer.ramping(4.5 + congestion.RAMP_CALM)  # calm again (REMBs kept coming)
    # a loss bound holds whatever the REMB does
    lossy = congestion.LinkEstimate()
    lossy.on_remb(100_000, 0.0)
    lossy.on_remb(200_000, 1.0)
    lossy.on_loss(0.3, 400_000, 1.0, 1.0)
    assert not lossy.ramping(1.0)
    assert lossy.publisher_hold(1.0, sending) == 200_000
    # an old REMB is no estimate at all
    stale = congestion.LinkEstimate()
    stale.on_remb(100_000, 0.0)
    assert stale.publisher_hold(congestion.REMB_TIMEOUT + 1, sending) is None


async def test_the_up_track_gives_a_ramping_subscriber_room_and_a_twcc_publisher_no_uplink() -> (
    None
):
    """ForwardedUpTrack.publisher_bitrate with the down-track's own rule: None for the uplink
    (a publisher with TWCC) and no limit known gives None (no cap); a ramping subscriber
    gives room above what the publisher sends."""

    class _Ramping(_Link):
        def link_estimate(self, publisher_bps: float | None = None) -> int | None:
            link = congestion.LinkEstimate()
            link.on_remb(200_000, 0.0)
            link.on_remb(400_000, 1.0)  # rising
            return link.publisher_hold(1.0, publisher_bps or 0.0)

    up = ForwardedUpTrack(
        _info(),
        StubReceiver(),  # type: ignore[arg-type]
        pli_min_interval=0.0,
        log_extra={},
    )
    assert up.publisher_bitrate(None) is None  # no subscriber: nothing caps a TWCC publisher
    assert up.publisher_bitrate(900_000) == 900_000  # an estimated one: its uplink, as before
    up.add_down_track(_Ramping("sub/officer", None))  # type: ignore[arg-type]
    up._rate_bps = 500_000.0  # what the publisher sends (incoming_bps), as measured
    up._rate_sample = (asyncio.get_running_loop().time(), 0)
    assert up.publisher_bitrate(None) == int(500_000 * congestion.REMB_HEADROOM)
    await up.close(CloseReason.UNPUBLISHED)


def test_a_steady_thin_subscriber_does_not_ratchet_the_publisher_up() -> None:
    """Review 10: a steady REMB counted as ramping, so a publisher above it that followed its
    cap was given 1.5 times what it sent, sent that, and was given more, up to its uplink. A
    steady REMB is what the link takes: the cap stays at it for 30 simulated seconds."""
    link = congestion.LinkEstimate()
    sending = 350_000.0  # above the thin link; its own estimator would go to 2 Mbit/s
    caps: list[int] = []
    for t in range(30):
        link.on_remb(300_000, float(t))
        assert not link.ramping(float(t))
        cap = congestion.publisher_target([link.publisher_hold(float(t), sending)], uplink=None)
        assert cap is not None
        caps.append(cap)
        sending = min(cap, 2_000_000)  # the publisher follows its cap
    assert caps == [300_000] * 30
    # a REMB that creeps up by less than RAMP_RISE a step is steady too
    creeping = congestion.LinkEstimate()
    for t in range(30):
        creeping.on_remb(300_000 + 1_000 * t, float(t))
    assert not creeping.ramping(29.0)
    # one that rises by RAMP_RISE is ramping for RAMP_RISING seconds, held at most RAMP_BOUND
    # times its estimate, then steady again
    rising = congestion.LinkEstimate()
    rising.on_remb(300_000, 0.0)
    rising.on_remb(400_000, 1.0)
    assert rising.publisher_hold(1.0, 1_000_000.0) == int(400_000 * congestion.RAMP_BOUND)
    assert rising.publisher_hold(1.0, 300_000.0) == 400_000  # below it: the estimate
    rising.on_remb(400_000, 1.0 + congestion.RAMP_RISING + 0.5)
    assert rising.publisher_hold(1.0 + congestion.RAMP_RISING + 0.5, 1_000_000.0) == 400_000


def test_a_layered_thin_and_clean_pair_stays_at_the_base_rule() -> None:
    """Review 10: a layered publisher sends more than a thin subscriber served layer 0 takes;
    the thin one's hold was 1.5 times that, which became the best "estimate" and took the
    publisher above both links (1.0M, 1.5M, ... 3.75M). Served below the full stream, the thin
    one is held by its estimate; the clean one, ramping or not, by at most twice its own."""
    thin, clean = congestion.LinkEstimate(), congestion.LinkEstimate()
    sending = 600_000.0
    remb_clean = 1_000_000
    for t in range(30):
        now = float(t)
        thin.on_remb(300_000, now)
        if t < 10:
            remb_clean = int(remb_clean * 1.08)  # the clean one still ramping for a while
        clean.on_remb(remb_clean, now)
        holds = [
            thin.publisher_hold(now, sending, full_stream=False),
            clean.publisher_hold(now, sending),
        ]
        cap = congestion.publisher_target(holds, uplink=None, layered=True)
        base = congestion.publisher_target([300_000, remb_clean], uplink=None, layered=True)
        assert cap is not None and base is not None
        assert cap <= base, (t, holds, cap, base)
        sending = min(cap, 2_500_000)
    assert cap == int(300_000 / SHARE)  # the thin one's layer 0, as the base rule gives
    # steady on both: the same even if the thin one were counted as served the full stream
    a, b = congestion.LinkEstimate(), congestion.LinkEstimate()
    sending = 600_000.0
    for t in range(20):
        a.on_remb(300_000, float(t))
        b.on_remb(1_000_000, float(t))
        holds = [a.publisher_hold(float(t), sending), b.publisher_hold(float(t), sending)]
        cap = congestion.publisher_target(holds, uplink=None, layered=True)
        assert cap == int(300_000 / SHARE)
        sending = min(cap, 2_500_000)


def test_a_ramping_clean_subscriber_still_lifts_the_publisher_off_the_floor() -> None:
    """The intent of the ramp rule kept: an officer on a clean link whose REMB rises 8% a
    second (libwebrtc's increase) from a low start does not hold the publisher at the floor."""
    officer = congestion.LinkEstimate()
    sending = 400_000.0
    remb = 80_000
    for t in range(8):
        officer.on_remb(remb, float(t))
        remb = int(remb * 1.08)
    hold = officer.publisher_hold(7.0, sending)
    assert hold is not None and hold > FLOOR
    assert hold == min(int(sending * congestion.REMB_HEADROOM), officer.remb_peak * 2)
