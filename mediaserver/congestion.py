"""Congestion control for forwarded media: pure logic, no I/O, no clocks of its own.

Three parts, each fed by :mod:`mediaserver.forwarding` with what the subscribers' RTCP says and
the loop time, and each unit-tested on its own (``tests/test_congestion_unit.py``):

* :class:`LinkEstimate`: what one subscriber link can take, in bits per second: the lower of
  its receiver's REMB (receiver-estimated maximum bitrate, from the ``abs-send-time`` header
  extension the SFU writes on every forwarded video packet) and a loss-based bound from its
  receiver reports (fraction lost above 10%: the link takes less than was sent; below 2%: it
  may take more again), as in the loss-based half of Google congestion control.
* :class:`ReportLoss`: that loss, from the receiver reports' cumulative fields (extended
  highest sequence number, cumulative number lost) over a window of packets, not from each
  report's own "fraction lost": Chromium sends a receiver report with every NACK (RFC 4585's
  compound feedback), 30-60 a second on a lossy link, each covering one or two packets, and
  counts a retransmission that arrives as received, so the fraction in each was 0 in most
  and the loss on a link that dropped 70% of the video never showed (measured, see
  ``docs/performance.md``).
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
LOSS_INCREASE = 1.08  # per second of reports without loss, at most
# Receiver-report loss is judged over at least this many packets the receiver expected (several
# seconds of a light stream): on a link with 5% random loss one second of a small picture
# (20-60 packets) shows more than LOSS_HIGH about once in twenty, which limited the link and
# paused a stream that had nothing to pause for (measured). Over 150 packets 5% random loss
# exceeds 10% about once in a hundred windows. Heavy loss is judged sooner: over LOSS_FAST_PACKETS
# a loss of LOSS_FAST or more does not come from 5% random loss (the chance is below 1e-6), and a
# link that drops that much of its queue (a thin downlink under a stream twice its rate, and its
# retransmissions) is limited within two seconds instead of six.
# A window of a light stream (a link held to layer 0: 5-10 packets a second) that has gone on
# LOSS_CALM_SECONDS with less than LOSS_LOW lost is judged then too, so that its bound can rise
# again (a window short of packets may only raise the bound, never lower it: random loss over
# few packets says little).
LOSS_WINDOW_PACKETS = 150
LOSS_FAST_PACKETS = 50
LOSS_FAST = 0.3
LOSS_CALM_SECONDS = 2.0
LOSS_CALM_PACKETS = 10
# A loss bound never goes below this (bits/s): audio lost on the link lowers its video from
# the estimate, again and again while it lasts, and without a floor a minute of steady audio
# loss took the bound to a few kbit/s, a frozen picture for the rest of the call.
LOSS_FLOOR_BPS = 40_000
# A loss bound no window has judged for this long (seconds) rises by LOSS_INCREASE a second
# (and lapses once far above what is sent), as a calm window would raise it: a down-track
# held under its stream's rate pauses, every pause restarts the window, and the bound would
# otherwise stay where one bad minute left it. If the link is still thin, its next window
# (the fast one: LOSS_FAST_PACKETS at LOSS_FAST) lowers it again: that is the probe.
LOSS_STALE = 3.0
# Retransmissions on a link that is not limited are paced by the loss bound only while a
# window judged within this many seconds lost more than LOSS_HIGH; after that every NACK the
# history can answer is answered again.
RETRANSMIT_PACE_SECONDS = 5.0
# A REMB older than this (seconds) no longer counts: the receiver stopped sending it.
REMB_TIMEOUT = 5.0
# A down-track held to its link's estimate may send this much more than the receiver's REMB
# (the loss bound still holds it): libwebrtc's receiver never lets its estimate rise above 1.5
# times what it receives (plus 10 kbit/s), so a stream held to the REMB keeps the REMB where
# it is (measured: a 150 kbit/s link held to layers 0-1 at a REMB of 58 kbit/s for 15 s). A
# sender of its own probes for that; forwarding, this is the probe: more than the link takes
# shows as loss, and the loss bound lowers it.
REMB_HEADROOM = 1.5
# A subscriber's REMB that is still rising (raised by RAMP_RISE over its last rise within
# RAMP_RISING seconds), has not fallen (by more than RAMP_FALL of its highest) for RAMP_CALM
# seconds, on a link without a loss bound, is ramping up (a receiver's estimate starts low and
# rises at most to 1.5 times what it receives): below what the publisher sends it says nothing
# about the link, which carries that without loss. It holds the publisher to no less than
# REMB_HEADROOM times what it sends (room to grow), never to the floor, and to no more than
# RAMP_BOUND times its own estimate (publisher_hold). A steady REMB is not ramping: it is what
# the link takes, and a publisher above it is held to it (otherwise a publisher that follows
# its cap would raise the hold it is given, and the next, up to its uplink: review 10).
# A REMB that fell is the receiver's delay-based estimator finding its queue growing: that holds.
RAMP_FALL = 0.9
RAMP_CALM = 10.0
RAMP_RISE = 1.05
RAMP_RISING = 3.0
RAMP_BOUND = 2.0
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
        self.loss_time = -1e9  # when a window last set or judged the bound (LOSS_STALE)
        self.high_loss_time = -1e9  # when a window last lost more than LOSS_HIGH
        self.sent_bps = 0.0  # what was sent in the last window judged
        self.fraction_lost = 0.0
        self.rembs = 0
        self.reports = 0
        self.remb_peak = 0  # the highest REMB since it last fell (RAMP_FALL)
        self.remb_fell_time = -1e9
        self.remb_rise_base = 0  # the REMB at its last rise (RAMP_RISE), or since it fell
        self.remb_rise_time = -1e9

    def on_remb(self, bitrate: int, now: float) -> None:
        bitrate = max(0, int(bitrate))
        if bitrate < RAMP_FALL * self.remb_peak:
            self.remb_fell_time = now
            self.remb_peak = self.remb_rise_base = bitrate
        else:
            self.remb_peak = max(self.remb_peak, bitrate)
            if self.remb_rise_base <= 0:
                self.remb_rise_base = bitrate  # the first REMB: no rise known yet
            elif bitrate >= RAMP_RISE * self.remb_rise_base:
                self.remb_rise_base = bitrate
                self.remb_rise_time = now
        self.remb_bps = bitrate
        self.remb_time = now
        self.rembs += 1

    def ramping(self, now: float) -> bool:
        """Whether this link's estimate is only a receiver's REMB still on its way up: recent,
        raised by RAMP_RISE within RAMP_RISING seconds, never fallen for RAMP_CALM seconds, and
        no loss bound (no window lost more than LOSS_HIGH lately). A steady REMB is not."""
        self._age(now)
        return (
            self.loss_bps is None
            and self.remb_bps is not None
            and now - self.remb_time <= REMB_TIMEOUT
            and now - self.remb_rise_time <= RAMP_RISING
            and now - self.remb_fell_time > RAMP_CALM
        )

    def publisher_hold(
        self, now: float, publisher_bps: float, *, full_stream: bool = True
    ) -> int | None:
        """What this link holds its publisher to (publisher_target's estimates): its estimate,
        except one still ramping below what the publisher sends (``publisher_bps``), which
        leaves it REMB_HEADROOM times that to grow into, at most RAMP_BOUND times the estimate.
        ``full_stream`` False: the subscriber of a layered stream is served fewer layers than
        the publisher sends, so what the publisher sends is not what this link carries: its
        estimate holds (publisher_target's layered rule gives it layer 0)."""
        estimate = self.estimate(now)
        if (
            estimate is None
            or not full_stream
            or estimate >= publisher_bps
            or not self.ramping(now)
        ):
            return estimate
        room = min(publisher_bps * REMB_HEADROOM, estimate * RAMP_BOUND)
        return max(estimate, int(room))

    def on_loss(
        self, fraction_lost: float, sent_bps: float, seconds: float = 1.0, now: float = 0.0
    ) -> None:
        """Receiver reports over ``seconds`` up to ``now``: ``fraction_lost`` (0-1) of what was
        sent in that time, while the link was being sent ``sent_bps``."""
        self.reports += 1
        self.fraction_lost = fraction_lost
        self._age(now)
        self.loss_time = now
        self.sent_bps = sent_bps
        if fraction_lost > LOSS_HIGH:
            # from what was sent, not from the previous bound: a down-track that already keeps
            # to the bound sends less, and the bound would spiral down to nothing
            self.loss_bps = max(LOSS_FLOOR_BPS, sent_bps * (1.0 - 0.5 * fraction_lost))
            self.high_loss_time = now
        elif fraction_lost < LOSS_LOW and self.loss_bps is not None:
            self.loss_bps *= LOSS_INCREASE ** max(1.0, seconds)
            if sent_bps > 0 and self.loss_bps > 2 * sent_bps:
                self.loss_bps = None  # far above what is sent: no longer a limit

    def on_other_loss(self, fraction_lost: float, sent_bps: float, now: float) -> None:
        """Another stream of the same link (the subscriber's audio) lost ``fraction_lost``:
        above LOSS_HIGH this one's estimate (what it was sent, ``sent_bps``, without one) goes
        down as for its own loss. From the estimate, not from what was sent: that other
        stream's window is seconds long, and this one may already send less than when the
        loss began (measured: cut from what was sent then, the bound fell to 28 kbit/s on a
        150 kbit/s link). It never raises the bound."""
        if fraction_lost > LOSS_HIGH:
            base = self.estimate(now)
            if base is None:
                base = int(sent_bps)
            bound = max(LOSS_FLOOR_BPS, base * (1.0 - 0.5 * fraction_lost))
            self.loss_bps = bound if self.loss_bps is None else min(self.loss_bps, bound)
            self.loss_time = self.high_loss_time = now

    def _age(self, now: float) -> None:
        """A bound no window judged for LOSS_STALE seconds rises as calm windows would."""
        if self.loss_bps is None:
            return
        stale = now - self.loss_time - LOSS_STALE
        if stale <= 0:
            return
        self.loss_bps *= LOSS_INCREASE**stale
        self.loss_time = now - LOSS_STALE  # the rise so far is taken
        if self.sent_bps > 0 and self.loss_bps > 2 * self.sent_bps:
            self.loss_bps = None  # far above what was sent: no longer a limit

    def paces_retransmissions(self, now: float) -> bool:
        """Whether a link that is not limited still keeps its retransmissions to a share of
        the loss bound: only while a recent window lost more than LOSS_HIGH."""
        self._age(now)
        return self.loss_bps is not None and now - self.high_loss_time <= RETRANSMIT_PACE_SECONDS

    def budget(self, now: float) -> int | None:
        """What a down-track held to this link may send (bits/s): the loss bound, and the REMB
        with REMB_HEADROOM; None while nothing says anything."""
        self._age(now)
        bounds: list[float] = []
        if self.remb_bps is not None and now - self.remb_time <= REMB_TIMEOUT:
            bounds.append(self.remb_bps * REMB_HEADROOM)
        if self.loss_bps is not None:
            bounds.append(self.loss_bps)
        return int(min(bounds)) if bounds else None

    def estimate(self, now: float) -> int | None:
        """Bits per second this link takes, or None while nothing says it is limited."""
        self._age(now)
        bounds: list[float] = []
        if self.remb_bps is not None and now - self.remb_time <= REMB_TIMEOUT:
            bounds.append(self.remb_bps)
        if self.loss_bps is not None:
            bounds.append(self.loss_bps)
        return int(min(bounds)) if bounds else None


class ReportLoss:
    """The share of a stream its link lost, from the receiver's reports of it.

    Each report carries the extended highest sequence number received and the cumulative
    number lost (RFC 3550 6.4.1: expected less received, where a retransmission that arrives
    counts as received). Between two reports the receiver expected the difference of the
    first and lost the difference of the second; sequence numbers the sender skipped
    (``holes``: missing upstream, or skipped after a pause) are counted lost by the receiver
    but were never sent, and are taken off both. Judged once LOSS_WINDOW_PACKETS are expected
    (or LOSS_FAST_PACKETS with LOSS_FAST lost), then a new window starts."""

    def __init__(self) -> None:
        # at the window's first report: highest, cumulative lost, holes, time, bytes sent
        self._start: tuple[int, int, int, float, int] | None = None

    def reset(self) -> None:
        self._start = None

    def on_report(
        self, highest: int, lost: int, holes: int, sent_bytes: int, now: float
    ) -> tuple[float, float, float] | None:
        """A report (``holes``: numbers skipped up to ``highest``; ``sent_bytes``: everything
        sent so far): (fraction lost, bits/s sent, seconds) once a window is full, else None."""
        mark = (highest, lost, holes, now, sent_bytes)
        if self._start is None:
            self._start = mark
            return None
        first, first_lost, first_holes, first_time, first_bytes = self._start
        span = (highest - first) & 0xFFFFFFFF
        if span >= 0x80000000:
            if 0x100000000 - span > LOSS_WINDOW_PACKETS:
                self._start = mark  # far back: the receiver's stream started again
            return None  # a report older than the window's first (reordered): nothing new
        skipped = max(0, holes - first_holes)
        expected = span - skipped
        if expected <= 0 or now <= first_time:
            return None
        fraction = min(expected, max(0, lost - first_lost - skipped)) / expected
        seconds = now - first_time
        fast = expected >= LOSS_FAST_PACKETS and fraction >= LOSS_FAST
        calm = expected >= LOSS_CALM_PACKETS and seconds >= LOSS_CALM_SECONDS
        if expected < LOSS_WINDOW_PACKETS and not fast and not (calm and fraction < LOSS_LOW):
            return None
        self._start = mark
        return fraction, (sent_bytes - first_bytes) * 8 / seconds, seconds


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
