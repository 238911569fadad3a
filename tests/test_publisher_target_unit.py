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

    def link_estimate(self) -> int | None:
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
