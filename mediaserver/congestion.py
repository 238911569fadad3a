"""Congestion control for forwarded media: pure logic, no I/O, no clocks of its own.

Three parts, each fed by :mod:`mediaserver.forwarding` with what the subscribers' RTCP says and
the loop time, and each unit-tested on its own (``tests/test_congestion_unit.py``):

* :class:`LinkEstimate`: what one subscriber link can take, in bits per second: the lower of
  its receiver's REMB (receiver-estimated maximum bitrate, from the ``abs-send-time`` header
  extension the SFU writes on every forwarded video packet) and a loss-based bound from its
  receiver reports (fraction lost above 10%: the link takes less than was sent; below 2%: it
  may take more again), as in the loss-based half of Google congestion control.
* :func:`publisher_target`: the REMB a publisher is sent: the lowest of its subscribers'
  estimates that are at or above a floor, capped by what its own uplink delivers. A subscriber
  below the floor does not drag every other one down to nothing: it is served by the next part.
  A publisher that sends VP8 temporal layers is held only to what leaves its subscribers their
  layer 0 (the floor at least): every one of them in a small room, all but the weakest tenth
  in a large one (an education room), so that one thin phone does not hold a hundred viewers'
  picture at the floor.
* :class:`TokenBucket`: a byte budget at a rate; a down-track keeps one for its link (whole
  frames are forwarded or left out at a frame's first packet) and one for retransmissions (a
  share of the link's estimate, so that NACKs on a thin link do not flood it).
"""

from __future__ import annotations

from collections.abc import Iterable

# A subscriber whose link's estimate is below this does not lower what its publisher is asked
# for: it gets fewer frames instead. Well under the 300 kbit/s of a poor mobile link, whose
# estimate wanders (measured: 170-300 kbit/s on a steady 300 kbit/s link), so such a link
# still brings the publisher down to it (aiortc's VP8 encoder stops at 250 kbit/s).
PUBLISHER_FLOOR_BPS = 150_000
# The share of a VP8 stream with three temporal layers that its layer 0 takes: libwebrtc gives
# layer 0 40% of the bitrate, layers 0-1 60% (its rate allocator for three layers), so a
# subscriber with 45% of what the publisher sends still gets every frame of layer 0 (a quarter
# of the frame rate) and a little room.
LAYER0_SHARE = 0.45
# Loss-based control (receiver reports): above HIGH the link is overloaded, below LOW it is not.
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_INCREASE = 1.08  # per report without loss, at most
# A REMB older than this (seconds) no longer counts: the receiver stopped sending it.
REMB_TIMEOUT = 5.0
# The share of a link's estimate retransmissions may take.
RETRANSMIT_SHARE = 0.3
# A layered publisher with at most this many subscribers (a call: officer, parties, a
# recorder's or verifier's local ones not counted) is held to what leaves the weakest its layer
# 0; with more (an education room), to what leaves that to all but the lowest LARGE_ROOM_QUANTILE
# of them (media.layered_small_room, media.layered_quantile).
SMALL_ROOM_SUBSCRIBERS = 4
LARGE_ROOM_QUANTILE = 0.1


class LinkEstimate:
    """One subscriber link's bandwidth: REMB and receiver-report loss combined."""

    def __init__(self) -> None:
        self.remb_bps: int | None = None
        self.remb_time = -1e9
        self.loss_bps: float | None = None  # None: no loss-based limit (yet)
        self.fraction_lost = 0.0
        self.rembs = 0
        self.reports = 0

    def on_remb(self, bitrate: int, now: float) -> None:
        self.remb_bps = max(0, int(bitrate))
        self.remb_time = now
        self.rembs += 1

    def on_loss(self, fraction_lost: float, sent_bps: float) -> None:
        """A receiver report: ``fraction_lost`` (0-1) of what was sent since the last one, while
        the link was being sent ``sent_bps``."""
        self.reports += 1
        self.fraction_lost = fraction_lost
        if fraction_lost > LOSS_HIGH:
            # from what was sent, not from the previous bound: a down-track that already keeps
            # to the bound sends less, and the bound would spiral down to nothing
            self.loss_bps = max(1.0, sent_bps * (1.0 - 0.5 * fraction_lost))
        elif fraction_lost < LOSS_LOW and self.loss_bps is not None:
            self.loss_bps *= LOSS_INCREASE
            if sent_bps > 0 and self.loss_bps > 2 * sent_bps:
                self.loss_bps = None  # far above what is sent: no longer a limit

    def estimate(self, now: float) -> int | None:
        """Bits per second this link takes, or None while nothing says it is limited."""
        bounds: list[float] = []
        if self.remb_bps is not None and now - self.remb_time <= REMB_TIMEOUT:
            bounds.append(self.remb_bps)
        if self.loss_bps is not None:
            bounds.append(self.loss_bps)
        return int(min(bounds)) if bounds else None


def publisher_target(
    estimates: Iterable[int | None],
    *,
    uplink: int | None,
    floor: int = PUBLISHER_FLOOR_BPS,
    layered: bool = False,
    small_room: int = SMALL_ROOM_SUBSCRIBERS,
    quantile: float = LARGE_ROOM_QUANTILE,
) -> int | None:
    """The REMB for a publisher: the lowest subscriber estimate at or above ``floor`` (the floor
    itself when every limited one is below it), never above ``uplink`` (the publisher's own link,
    as the SFU's receiver estimates it). None: nothing to say (no estimate at all).

    ``layered``: the publisher sends VP8 temporal layers, and a subscriber can be served with
    the lower ones alone: each one holds the publisher to ``estimate / LAYER0_SHARE`` (what
    leaves it layer 0 at least, a quarter of the frame rate), the floor at least, even one below
    the floor (it then gets layer 0 instead of living on keyframes); never above the best
    subscriber's estimate. The worst a thin subscriber does to the others is the floor, as a
    subscriber at the floor does without layers.

    That holds for a room of at most ``small_room`` subscribers (every estimate given counts,
    None too): there the weakest is one of the few people in the call. With more, the publisher
    is held to the ``quantile`` of what they need (the 10th percentile: with 100 subscribers,
    the eleventh lowest): the few below it get layer 0 of a richer stream where their link
    takes it, or pause until a keyframe as a subscriber without layers over its budget does,
    and the many get a picture their links carry."""
    estimates = list(estimates)
    known = [e for e in estimates if e is not None]
    target: int | None = None
    if known:
        above = [e for e in known if e >= floor]
        if layered:
            needs = sorted(max(e / LAYER0_SHARE, floor) for e in known)
            index = 0
            if len(estimates) > small_room:
                index = min(len(needs) - 1, int(quantile * len(needs)))
            target = int(max(floor, min(needs[index], max(known))))
        else:
            target = min(above) if above else floor
    if uplink is not None:
        target = uplink if target is None else min(target, uplink)
    return target


class TokenBucket:
    """Bytes at ``rate`` bytes per second, at most ``depth`` seconds of them saved up."""

    def __init__(self, rate: float, depth: float, now: float) -> None:
        self.rate = rate
        self.depth = depth
        self.tokens = rate * depth
        self.time = now

    def _fill(self, now: float) -> None:
        elapsed = max(0.0, now - self.time)
        self.time = now
        self.tokens = min(self.rate * self.depth, self.tokens + elapsed * self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        self._fill(now)
        self.rate = rate
        self.tokens = min(self.tokens, rate * self.depth)

    def available(self, now: float) -> float:
        self._fill(now)
        return self.tokens

    def take(self, size: float, now: float) -> bool:
        """Spend ``size`` bytes if there are that many; False (nothing spent) if not."""
        self._fill(now)
        if self.tokens < size:
            return False
        self.tokens -= size
        return True

    def spend(self, size: float, now: float) -> None:
        """Spend ``size`` bytes even into debt (packets of a frame already begun)."""
        self._fill(now)
        self.tokens -= size
