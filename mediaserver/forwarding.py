"""Packet forwarding: one :class:`ForwardedUpTrack` per published track, one
:class:`RtpDownTrack` per subscriber of it.

The hot path is ``ForwardedUpTrack.on_rtp`` -> ``RtpDownTrack.write`` for every down-track:
one 12-byte header packed with ``struct`` into the SRTP buffer, one SRTP protect in place, one
``sendto`` (:func:`~mediaserver.aiortc_hooks.fast_rtp_writer`). Nothing is parsed
per subscriber and nothing is decoded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from common.tasks import TaskSet

from . import congestion, history, rtp, vp8
from .aiortc_hooks import (
    ReceivedRtp,
    ReceiverSink,
    RtpWriter,
    SendDrops,
    SfuRtpSender,
    fast_rtp_writer,
    transport_sender_hooks,
)
from .history import PacketHistory
from .protocols import CloseReason, DownTrack, Packet, TrackInfo, UpTrack

logger = logging.getLogger(__name__)

# Packets kept for NACKs: by time, per kind (mediaserver/history.py), at most this many.
HISTORY_MAX_VIDEO = history.MAX_PACKETS["video"]
KEYFRAME_RETRY = 1.0  # seconds between a waiting down-track's keyframe requests
# A publisher's video that resumes after this long a silence, or after this many packets
# went missing at once, cannot be repaired by retransmission (aiortc's sender keeps 128
# packets, browsers about 1 s): ask for a keyframe at once instead of waiting for every
# subscriber's decoder to give up and send its own PLI. After a longer silence (an outage, a
# camera paused) the down-tracks also start again on that keyframe, as after a mute, with
# sequence numbers that continue: a subscriber sees no hole it would NACK in vain, and a
# jitter buffer that waits for a hole to fill (aiortc's waits for 128 packets) plays at once.
# A silence counts only with packets missing after it: an event loop that stalled itself
# finds every packet waiting in its socket, and has nothing to repair.
GAP_SECONDS = 1.0
GAP_PACKETS = 64
RESTART_SECONDS = 2.0
# A down-track paused because its link takes less than the publisher sends asks its keyframe
# at most this often: every keyframe asked costs every other subscriber a large frame too.
CONGESTED_KEYFRAME_RETRY = 2.0
# How much of a link's estimate (seconds of it) a down-track may send ahead in a burst (a
# keyframe) before whole frames are left out: at the estimate, a longer queue only delays.
LINK_BURST = 1.0
# Frames are left out once the link is behind by more than this (seconds of its estimate):
# the keyframe a pause ends on may put it that far behind, and the frames after it still go.
PAUSE_DEBT = 0.5
# After such a pause the subscriber's stream goes on this many sequence numbers further: a
# receiver still waiting on a packet its link lost before the pause, or on the packet after the
# last frame it got (aiortc releases a frame only once the next frame's first packet follows
# it), then gives that up at once and decodes the keyframe, instead of waiting for the hole to
# be filled. aiortc 1.16's video jitter buffer holds 512 numbers and empties only for a packet
# at least that far ahead of its oldest (JitterBuffer(capacity=512) in rtcrtpreceiver.py): the
# 200 skipped before left it stuck, releasing one frame per packet from 512 packets back and
# asking a keyframe with each (measured on a 150 kbit/s link: 1.0 of 8.8 fps forwarded decoded,
# 18 such PLIs in 10 s, each a keyframe over the thin link). libwebrtc keeps up to 1000 numbers
# in its NACK list before it clears it and asks a keyframe itself, and clears them once the
# keyframe decodes: 600 is past the one and short of the other.
PAUSE_SKIP = 600
# A subscriber's keyframe request this soon after its down-track resumed on a keyframe is its
# receiver's answer to the skip above (aiortc asks one whenever its jitter buffer empties for
# a jump), not a loss: the keyframe is already there, and asking another costs the thin link
# (and every other subscriber) a second large frame. It is counted, not passed on.
RESUME_PLI_IGNORE = 0.5
# A link counts as limited (its down-track keeps to its estimate) once its receiver reports
# heavy loss (congestion.LOSS_HIGH) and while the estimate is below this share of what the
# publisher sends. REMB alone does not: a receiver's REMB follows what it receives, and on a
# busy machine its delay-based detector sees the event loop's stalls as overuse (measured:
# aiortc subscribers on clean loopback reported REMB far below the stream), so it only lowers
# what the publisher is asked for, where the floor bounds it.
LIMITED_SHARE = 0.9
# Receiver-report loss is judged over a window of packets (congestion.ReportLoss,
# congestion.LOSS_WINDOW_PACKETS), from the reports' cumulative fields.
# Retransmissions on a link whose receiver reports have set a loss bound take at most
# congestion.RETRANSMIT_SHARE of it, limited or not (the loss alone says the link takes less
# than it was sent); on a limited link that share of its budget, counted against the budget
# with the frames. A bound in multiples of the stream where no loss says anything was tried
# and left out: aiortc's receiver NACKs a missing packet again with every packet that arrives,
# so on a link with 5% loss and 80 ms of RTT its NACKs asked for about as many bytes as the
# stream, in bursts (a lost keyframe), and even four times the stream left some unanswered.
# Audio goes first on a limited link: when the subscriber's audio (its own receiver reports,
# judged as the video's) loses more than congestion.LOSS_HIGH, the video down-tracks on the
# same transport take that loss as their own (their bound goes to their estimate times 1 - loss/2),
# so that the queue of a thin link does not fill with video and drop speech. Estimates and budgets
# count what a packet takes on the wire: for 20 ms Opus packets the UDP/IP and SRTP overhead
# is half of it.
PACKET_OVERHEAD = 40  # bytes: IPv4 20, UDP 8, SRTP tag 10, padding to 4
WIRE_HEADER = 12 + PACKET_OVERHEAD  # with the RTP header
# A keyframe is large against a thin link's estimate (8 KB at 320x240 is a second of 64 kbit/s):
# for KEYFRAME_GRACE seconds after one, frames are left out (paused) only once the link is
# behind by KEYFRAME_DEBT seconds more than PAUSE_DEBT; meanwhile a layered stream keeps to
# layer 0. Without it, the keyframe that ended a pause began the next one (measured: 38
# pauses in 20 s on a 150 kbit/s link, every keyframe followed by a pause).
KEYFRAME_GRACE = 2.0
KEYFRAME_DEBT = 2.0
# A layered stream already down to layer 0 whose layer 0 (its delta frames, measured over
# LAYER_WINDOW) fits the link's budget pays a debt off by itself: the budget fills faster than
# layer 0 takes it. A pause cannot help it (it ends on a keyframe, the largest frame there is,
# and the debt comes back: measured on a 150 kbit/s link, pauses 2.1 s after each keyframe,
# just past KEYFRAME_GRACE), so such a stream pauses only when behind by KEYFRAME_DEBT more
# than PAUSE_DEBT, as in a keyframe's grace, grace or not.
# Skipped sequence numbers remembered, by where in the subscriber's numbering they were
# skipped, for the receiver reports that come after them (ReportLoss's holes).
HOLE_MARKS_KEPT = 256
# VP8 temporal layers (a browser's L1T2/L1T3; mediaserver/vp8.py): on a limited link a
# down-track forwards only the frames of layers up to its current maximum, so the receiver
# decodes every frame it gets (a frame of layer 0 references only layer 0) at a lower rate
# instead of waiting for a keyframe. The maximum goes one layer down when the link's budget is
# behind by more than LAYER_DEBT seconds of its estimate (at most every LAYER_DOWN_HOLD
# seconds, so that one layer's effect is seen before the next goes; straight to layer 0 when
# it is behind by PAUSE_DEBT, where a stream without layers pauses), and one layer up again
# after LAYER_UP_CALM seconds without such a debt, when the estimate has room for what the
# layers up to the next one brought in (measured per layer over LAYER_WINDOW seconds) with
# LAYER_UP_HEADROOM to spare. Still behind by PAUSE_DEBT with layer 0 alone: a pause, as
# without layers.
LAYER_DEBT = 0.2
LAYER_DOWN_HOLD = 0.5
LAYER_UP_CALM = 3.0
LAYER_UP_HEADROOM = 1.1
LAYER_WINDOW = 2.0
ALL_LAYERS = 3  # TID is two bits: 0-3
# Ranges of the subscriber's numbering kept for NACKs and late packets (a new one after each
# run of left-out packets): as many as the up-track's history holds packets at most, so that
# every packet still in the history has its range (a deque: it grows only with the runs).
LAYER_RANGES = HISTORY_MAX_VIDEO
# A run this long (numbers) without a frame left out starts a fresh range (see _write_layered).
RANGE_REFRESH = 0x4000
DROPPED_FRAMES_KEPT = 64  # timestamps of the frames left out, for their late packets
# Numbers of the subscriber's stream kept free for packets missing upstream (layered streams):
# as many as the history holds packets at most, so a late packet or a NACK still finds its
# number's timestamp (see _fill_hole; a dict: it grows only with the holes).
HOLES_KEPT = HISTORY_MAX_VIDEO
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


def ntp_now() -> int:
    now = time.time()
    return (int(now + NTP_EPOCH_OFFSET) << 32) | int((now % 1) * (1 << 32))


class PacketSource(Protocol):
    """Where an up-track's packets come from: a publisher's receiver
    (:class:`~mediaserver.aiortc_hooks.SfuRtpReceiver`) or a server-side source
    (:mod:`mediaserver.server_track`)."""

    def attach_sink(self, sink: ReceiverSink) -> None: ...

    def detach_sink(self) -> None: ...

    async def send_pli(self, media_ssrc: int) -> None: ...


class ForwardedUpTrack:
    """A published track: receives packets from a :class:`PacketSource`, fans them out."""

    def __init__(
        self,
        info: TrackInfo,
        receiver: PacketSource,
        *,
        pli_min_interval: float,
        log_extra: dict[str, str],
        layered_small_room: int = congestion.SMALL_ROOM_SUBSCRIBERS,
        layered_quantile: float = congestion.LARGE_ROOM_QUANTILE,
    ) -> None:
        self._info = info
        self._layered_small_room = layered_small_room
        self._layered_quantile = layered_quantile
        self._receiver = receiver
        self._downs: dict[str, DownTrack] = {}
        self._fanout: tuple[DownTrack, ...] = ()
        self._is_keyframe = rtp.keyframe_detector(info.mime_type)
        # Audio too: a subscriber that NACKs audio (it is negotiated per peer) gets it again.
        self._history = PacketHistory(info.kind)
        self._muted = False
        self._closed = False
        self._media_ssrc: int | None = None
        self._last_seq: int | None = None
        self._last_timestamp: int | None = None
        self._last_arrival: float | None = None
        self._loop = asyncio.get_running_loop()
        self._pli_min_interval = pli_min_interval
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self._log = logging.LoggerAdapter(logger, {**log_extra, "track": info.track_id})
        self._tasks = TaskSet(f"up-track {info.track_id}", self._log)  # PLIs on their way
        # publisher's last sender report: (ntp, rtp timestamp, loop time of arrival)
        self.sender_report: tuple[int, int, float] | None = None
        self.packets_in = 0
        self.bytes_in = 0
        self.keyframes_requested = 0
        self.gaps = 0  # resumptions after a gap (silence or a burst lost) that asked a keyframe
        self.resumptions = 0  # times the publisher came back on new connections (resume)
        self.publisher_target: int | None = None  # the last REMB asked of the publisher
        self._rate_sample: tuple[float, int] | None = None  # (loop time, bytes_in) a while ago
        self._rate_bps = 0.0
        self._continue_from: tuple[int | None, int | None, float | None] | None = None
        receiver.attach_sink(self)

    # -- protocol UpTrack ------------------------------------------------------------------
    @property
    def info(self) -> TrackInfo:
        return self._info

    @property
    def muted(self) -> bool:
        return self._muted

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def task_count(self) -> int:
        return len(self._tasks)

    @property
    def publisher_nacks(self) -> int:
        """NACK messages sent to the publisher for this track (0 for a server-side source)."""
        return int(getattr(self._receiver, "nacks_sent", 0))

    def down_tracks(self) -> tuple[DownTrack, ...]:
        return self._fanout

    def add_down_track(self, down: DownTrack) -> None:
        if self._closed:
            raise RuntimeError("up-track closed")
        self._downs[down.down_id] = down
        self._fanout = tuple(self._downs.values())
        if self._info.kind == "video":
            self.request_keyframe()

    def remove_down_track(self, down: DownTrack) -> None:
        if self._downs.pop(down.down_id, None) is not None:
            self._fanout = tuple(self._downs.values())

    def get_packet(self, sequence_number: int) -> Packet | None:
        return self._history.get(sequence_number)

    def request_keyframe(self) -> None:
        if self._closed or self._info.kind != "video":
            return
        now = self._loop.time()
        wait = self._last_pli + self._pli_min_interval - now
        if wait <= 0:
            self._send_pli()
        elif self._pli_timer is None:
            self._pli_timer = self._loop.call_later(wait, self._send_pli)

    # -- receiver sink ---------------------------------------------------------------------
    def on_rtp(self, packet: ReceivedRtp) -> None:
        self._media_ssrc = packet.ssrc
        payload = packet.payload
        seq = packet.sequence_number
        timestamp = packet.timestamp
        detector = self._is_keyframe
        now = self._loop.time()
        if detector is None:
            keyframe = True
        else:
            # A keyframe starts at the first packet of its frame: an IDR may be several slices
            # (several FU-A starts), and a subscriber must not begin at the second one.
            last_seq = self._last_seq
            newer = last_seq is None or (seq - last_seq) & 0xFFFF < 0x8000
            keyframe = newer and timestamp != self._last_timestamp and detector(payload)
            if newer:
                if last_seq is not None and not keyframe and not self._muted:
                    missing = ((seq - last_seq) & 0xFFFF) - 1
                    silence = 0.0 if self._last_arrival is None else now - self._last_arrival
                    if missing > GAP_PACKETS or (missing > 0 and silence > GAP_SECONDS):
                        self.gaps += 1
                        self.request_keyframe()
                        if missing > 0 and silence > RESTART_SECONDS:
                            for down in self._fanout:
                                down.resume()
                self._last_seq = seq
                self._last_timestamp = timestamp
                self._last_arrival = now
        out = Packet(seq, timestamp, packet.marker, payload, packet.padding_size, keyframe)
        self.packets_in += 1
        self.bytes_in += len(payload)
        self._history.put(out, now)
        if self._muted:
            return
        for down in self._fanout:
            down.write(out)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.sender_report = (ntp_timestamp, rtp_timestamp, self._loop.time())

    def incoming_bps(self) -> float:
        """What the publisher sends on this track (bits/s), over the last second or two."""
        now = self._loop.time()
        sample = self._rate_sample
        if sample is None:
            self._rate_sample = (now, self.bytes_in)
        elif now - sample[0] >= 1.0:
            self._rate_bps = (self.bytes_in - sample[1]) * 8 / (now - sample[0])
            self._rate_sample = (now, self.bytes_in)
        return self._rate_bps

    def publisher_bitrate(self, uplink_bps: int | None) -> int | None:
        """The REMB the publisher is sent: its uplink's estimate (None: a publisher with TWCC,
        whose own estimator has it), lowered to what its subscribers' links take
        (:func:`congestion.publisher_target`; a subscriber whose estimate is still ramping up
        below what the publisher sends leaves it room, ``LinkEstimate.publisher_hold``); None:
        nothing limits it."""
        # down-tracks over a network (RtpDownTrack); a local one (recorder, verifier) has none
        sending = self.incoming_bps()
        estimates = [
            estimate(sending)
            for down in self._fanout
            if (estimate := getattr(down, "link_estimate", None)) is not None
        ]
        # a subscriber of a stream with temporal layers can be served with fewer of them
        layered = any(getattr(down, "layered", False) for down in self._fanout)
        target = congestion.publisher_target(
            estimates,
            uplink=uplink_bps,
            layered=layered,
            small_room=self._layered_small_room,
            quantile=self._layered_quantile,
        )
        self.publisher_target = uplink_bps if target is None else target
        return self.publisher_target

    # -- control ---------------------------------------------------------------------------
    def set_muted(self, muted: bool) -> None:
        if muted == self._muted:
            return
        self._muted = muted
        if not muted:
            for down in self._fanout:
                down.resume()
            self.request_keyframe()

    def _send_pli(self) -> None:
        self._pli_timer = None
        if self._closed or self._media_ssrc is None:
            # Nothing received yet: the first packets will start with a keyframe anyway.
            return
        self._last_pli = self._loop.time()
        self.keyframes_requested += 1
        self._tasks.spawn(self._receiver.send_pli(self._media_ssrc), "pli")

    # -- a publisher that reconnected (resume) ----------------------------------------------
    def detach_source(self, last_heard: float | None = None) -> None:
        """The publisher's connection is gone but it may resume: keep the track (its ID, its
        down-tracks, the recorder's and verifier's subscribers), receive nothing meanwhile.
        ``last_heard``: loop time the connection last delivered anything (when the silence
        began, for an audio track, whose arrivals are not timed per packet)."""
        self._receiver.detach_sink()
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        seq, timestamp = self._last_seq, self._last_timestamp
        if seq is None or timestamp is None:
            newest = self._newest_in_history()
            if newest is not None:
                seq, timestamp = newest.sequence_number, newest.timestamp
        arrival = self._last_arrival
        if arrival is None:
            arrival = last_heard if last_heard is not None else self._loop.time()
        self._continue_from = (seq, timestamp, arrival)

    def _newest_in_history(self) -> Packet | None:
        """The packet with the latest timestamp in the history (an audio track keeps no
        last sequence number of its own)."""
        packets = self._history.packets()
        if not packets:
            return None
        reference = packets[0].timestamp
        return max(
            packets,
            key=lambda p: (
                (((p.timestamp - reference + 0x80000000) & 0xFFFFFFFF) - 0x80000000),
                (p.sequence_number - packets[0].sequence_number) & 0xFFFF,
            ),
        )

    def replace_source(self, source: PacketSource) -> None:
        """Receive from ``source`` (the resumed publisher's new receiver) from now on.

        The new connection numbers its packets afresh (new SSRC, random sequence numbers and
        timestamps); a :class:`ContinuedSource` between it and this track renumbers them so the
        track's own numbering goes on: a few sequence numbers skipped (a hole that marks the
        gap for the recorder, see docs/recording.md) and the timestamps advanced by the time the
        publisher was away. Every down-track starts again on the next keyframe, asked at once,
        with its own sequence numbers continuous, so a subscriber sees one stream go on.
        """
        if self._closed:
            return
        self._receiver.detach_sink()
        self._receiver = source
        self._media_ssrc = None  # a PLI goes to the new SSRC, once a packet has shown it
        self._last_pli = -1e9
        source.attach_sink(ContinuedSource(self))
        for down in self._fanout:
            down.resume()
        self.resumptions += 1

    @property
    def last_arrival(self) -> float | None:
        """Loop time this track's newest packet arrived (video only: audio's arrivals are
        not timed per packet); None before one."""
        return self._last_arrival

    def continuation(self) -> tuple[int | None, int | None, float | None]:
        """(last sequence number, last timestamp, loop time it arrived) of this track before
        its source was detached."""
        if self._continue_from is not None:
            return self._continue_from
        return self._last_seq, self._last_timestamp, self._last_arrival

    async def close(self, reason: CloseReason) -> None:
        """Detach from the receiver and close every down-track. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._receiver.detach_sink()
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        for down in list(self._downs.values()):
            down.close(CloseReason.UNPUBLISHED)
        self._downs.clear()
        self._fanout = ()
        self._history.clear()  # its payloads, at once (a closed track may wait for the GC)
        await self._tasks.close()
        self._log.debug("up-track closed: %s", reason.value)


# Sequence numbers left out between a track's last packet before its publisher reconnected
# and the first one after: the hole tells the recorder that media is missing there (with the
# silence, an outage), and keeps a late packet of the old connection apart from the new ones.
RESUME_SKIP = 4


class ContinuedSource:
    """Between a resumed publisher's new receiver and its up-track: renumbers every packet into
    the track's own sequence and timeline (see :meth:`ForwardedUpTrack.replace_source`).

    The offsets are fixed by the first packet the new connection delivers: its sequence number
    goes ``RESUME_SKIP + 1`` past the track's last, its timestamp past the last one by the
    wall time in between (on the track's clock), so the recording places it where it happened.
    """

    def __init__(self, up: ForwardedUpTrack) -> None:
        self._up = up
        self._clock_rate = up.info.clock_rate
        self._seq_offset: int | None = None
        self._ts_offset = 0

    def _anchor(self, packet: ReceivedRtp) -> None:
        last_seq, last_ts, arrived = self._up.continuation()
        if last_seq is None or last_ts is None or arrived is None:
            self._seq_offset, self._ts_offset = 0, 0  # nothing before: nothing to continue
            return
        elapsed = max(0.0, asyncio.get_running_loop().time() - arrived)
        target_seq = (last_seq + RESUME_SKIP + 1) & 0xFFFF
        target_ts = (last_ts + max(1, int(elapsed * self._clock_rate))) & 0xFFFFFFFF
        self._seq_offset = (target_seq - packet.sequence_number) & 0xFFFF
        self._ts_offset = (target_ts - packet.timestamp) & 0xFFFFFFFF

    def on_rtp(self, packet: ReceivedRtp) -> None:
        first = self._seq_offset is None
        if first:
            self._anchor(packet)
        assert self._seq_offset is not None
        packet.sequence_number = (packet.sequence_number + self._seq_offset) & 0xFFFF
        packet.timestamp = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        self._up.on_rtp(packet)
        if first:
            # the new SSRC is known now: a keyframe at once, for every restarted down-track
            self._up.request_keyframe()

    def publisher_bitrate(self, uplink_bps: int | None) -> int | None:
        return self._up.publisher_bitrate(uplink_bps)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        if self._seq_offset is None:
            return  # no packet yet: the mapping to the track's timeline is not known
        self._up.on_sender_report(ntp_timestamp, (rtp_timestamp + self._ts_offset) & 0xFFFFFFFF)


class RtpDownTrack:
    """One subscriber's copy of an up-track, written through an :class:`SfuRtpSender`.

    Per packet it rewrites payload type, SSRC, sequence number and timestamp. The offsets stay
    constant while forwarding, so gaps the publisher's loss left stay gaps and the subscriber's
    NACKs map back to the publisher's sequence numbers; they are recomputed only when forwarding
    resumes after a pause, so that the subscriber sees no jump.
    """

    def __init__(
        self,
        down_id: str,
        up: UpTrack,
        sender: SfuRtpSender,
        *,
        on_close: Callable[[RtpDownTrack], None] | None = None,
        continue_from: RtpDownTrack | None = None,
        tasks: TaskSet | None = None,
    ) -> None:
        """``tasks``: who owns the sends over a relayed (TURN) pair, which go through tasks;
        the participant's set, so that its close cancels and awaits them. Without one the
        down-track owns them itself and cancels them when it closes."""
        self._down_id = down_id
        self._own_tasks = tasks is None
        self._tasks = tasks if tasks is not None else TaskSet(f"down-track {down_id}", logger)
        self.up = up
        self._sender = sender
        self._ssrc = sender._ssrc
        self._rtx_ssrc = sender._rtx_ssrc
        self._clock_rate = up.info.clock_rate
        self._on_close = on_close
        self._writer: RtpWriter | None = None
        self._started = False
        self._closed = False
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_keyframe_request = -1e9
        self._pt: int | None = None
        self._rtx_pt: int | None = None
        self._extension = b""  # sdes:mid and abs-send-time, as this subscriber negotiated them
        self._abs_at: int | None = None  # where in it the send time goes
        self._next_seq = random.randint(0, 0x7FFF)  # a low start avoids an early wrap
        self._rtx_seq = random.randint(0, 0x7FFF)
        self._last_ts = random.randint(0, 0xFFFFFFFF)
        self._last_time: float | None = None
        # sequence numbers this down-track has gone through since it (re)started, not wrapped:
        # what a late packet or a NACK is checked against (a 16-bit difference from the first
        # one would wrap after 65,536 packets, 11 minutes of video)
        self._span = 0
        self.packets = 0
        self.bytes = 0
        # packets its writer lost on a full socket send buffer (the server's loss)
        self.send_drops = SendDrops()
        if continue_from is not None:
            # a reused transceiver: same SSRC, so continue its sequence and timeline
            self._pt = continue_from._pt
            self._rtx_pt = continue_from._rtx_pt
            self._extension = continue_from._extension
            self._abs_at = continue_from._abs_at
            self._next_seq = continue_from._next_seq
            self._rtx_seq = continue_from._rtx_seq
            self._last_ts = continue_from._last_ts
            self._last_time = continue_from._last_time
        self.retransmitted = 0  # NACKed packets sent again (answered)
        self.nacks = 0  # sequence numbers NACKed
        # NACKed sequence numbers not answered, by why: this down-track never sent them (before
        # it started, or not yet arrived from the publisher); gone from the history or never
        # received from the publisher; the send itself failed
        self.nack_not_sent = 0
        self.nack_not_in_history = 0
        self.nack_failed = 0
        self.keyframe_requests = 0
        # congestion (mediaserver.congestion): the link's estimate from the subscriber's REMB
        # and receiver reports, a byte budget at it for whole frames and a share of it for
        # retransmissions; both unlimited while nothing says the link is limited
        self.link = congestion.LinkEstimate()
        self._link_budget: congestion.TokenBucket | None = None
        self._rtx_budget: congestion.TokenBucket | None = None
        # sequence numbers skipped because the publisher's packet had not arrived (its uplink
        # lost it) or after a pause: the subscriber's receiver reports count them as lost,
        # though its link is fine. Marks (first number from which on, total skipped) tell a
        # report which of them it has seen. Numbers there are extended (not wrapped, as RTCP's
        # extended highest sequence number): a 16-bit comparison reads a report more than
        # 32,768 numbers past the newest mark (5 minutes of video without a new hole) against
        # the wrong mark.
        self._holes = 0
        self._hole_marks: deque[tuple[int, int]] = deque()
        self._hole_base = 0  # the total before the oldest mark kept
        self._seq_reached = self._next_seq  # _next_seq extended, as last seen (_extended_next)
        self._report_offset: int | None = None  # ours less the receiver's extended numbers
        self._loss = congestion.ReportLoss()
        self.rtx_bytes = 0  # retransmitted bytes (payload and RTP header)
        self._keyframe_time = -1e9  # when the last keyframe was forwarded (KEYFRAME_GRACE)
        self._keyframe_ts: int | None = None  # and its timestamp
        self.sent_bps = 0.0  # what this down-track sends (with retransmissions, on the wire)
        self._rate_mark: tuple[float, int] | None = None  # (time, wire bytes) at the last rate
        self._frame_ts: int | None = None  # the frame whose packets are being forwarded
        self._congested = False  # paused by the link budget: waiting for a keyframe
        self.nack_paced = 0  # NACKed sequence numbers not answered: over the link's share
        self.frames_dropped = 0  # frames left out for the link's estimate
        self.congestion_pauses = 0  # times forwarding paused for the link until a keyframe
        # VP8 temporal layers (see LAYER_DEBT): None until a keyframe with a TID has been seen,
        # then the subscriber's numbering as ranges (first original sequence number, sequence
        # offset, picture ID delta) from which on they hold, newest last
        self._vp8 = up.info.mime_type.lower() == "video/vp8"
        self._ranges: deque[tuple[int, int, int]] | None = None
        self._pid_delta = 0  # added to the picture ID: minus the frames left out so far
        self._max_layer = ALL_LAYERS
        self._top_layer = 0  # the highest TID seen
        self._frame_tid = 0
        self._frame_left_out = False  # the frame being forwarded is left out for its layer
        # the highest layer whose frames have all their references at the subscriber
        self._decodable = ALL_LAYERS
        self._dropping = False  # the last newer packet was left out (a run of them)
        self._last_in = 0  # original sequence number of the last newer packet
        self._last_marker = 0  # its marker bit (the last packet of its frame)
        self._last_in_ts = 0  # the timestamp of the last one left out
        # numbers left free for packets missing upstream: (timestamp of the packet sent before
        # the free number, filled with padding yet), oldest first
        self._free: dict[int, tuple[int, bool]] = {}
        self.holes_filled = 0  # free numbers a left-out frame's packet turned out to have
        self._dropped_ts: deque[int] = deque(maxlen=DROPPED_FRAMES_KEPT)
        self._sent_ts: deque[int] = deque(maxlen=DROPPED_FRAMES_KEPT)  # frames forwarded
        self._layer_changed = -1e9
        self._layer_debt_time = -1e9  # when the budget was last behind by LAYER_DEBT
        self._layer_bytes = [0, 0, 0, 0]
        self._layer_bps = [0.0, 0.0, 0.0, 0.0]
        self._layer_window_start: float | None = None
        self._keyframe_bytes = 0  # of layer 0's bytes in the window, those of keyframes
        self._keyframe_bps = 0.0
        self._resumed_time = -1e9  # when it last resumed on a keyframe after a pause
        self.resume_plis_ignored = 0  # keyframe requests not passed on (RESUME_PLI_IGNORE)
        self.layer_dropped = [0, 0, 0, 0]  # frames left out for their layer, by TID
        self.layer_down = 0  # times the maximum layer went down
        self.layer_up = 0
        sender.attach_hooks(self)
        up.add_down_track(self)

    @property
    def down_id(self) -> str:
        return self._down_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def started(self) -> bool:
        return self._started

    @property
    def sender(self) -> SfuRtpSender:
        return self._sender

    @property
    def nack_misses(self) -> int:
        """NACKed sequence numbers not answered, whatever the reason."""
        return self.nack_not_sent + self.nack_not_in_history + self.nack_failed + self.nack_paced

    def counters(self) -> dict[str, int]:
        """What /metrics sums over down-tracks (live and closed)."""
        return {
            "forwarded_packets": self.packets,
            "forwarded_bytes": self.bytes,
            "send_dropped": self.send_drops.packets,
            "retransmitted": self.retransmitted,
            "nacks": self.nacks,
            "nack_not_sent": self.nack_not_sent,
            "nack_not_in_history": self.nack_not_in_history,
            "nack_failed": self.nack_failed,
            "nack_paced": self.nack_paced,
            "plis_received": self.keyframe_requests,
            "frames_dropped": self.frames_dropped,
            "congestion_pauses": self.congestion_pauses,
            "layer_dropped_frames_1": self.layer_dropped[1],
            "layer_dropped_frames_2": self.layer_dropped[2],
            "layer_dropped_frames_3": self.layer_dropped[3],
            "layer_switches_down": self.layer_down,
            "layer_switches_up": self.layer_up,
            "layer_holes_filled": self.holes_filled,
        }

    @property
    def layered(self) -> bool:
        """The publisher's VP8 carries temporal layers (seen on the keyframe started on)."""
        return self._ranges is not None

    @property
    def max_layer(self) -> int:
        """The highest temporal layer forwarded now (ALL_LAYERS: every one)."""
        return self._max_layer

    # -- hot path --------------------------------------------------------------------------
    def write(self, packet: Packet) -> None:
        if not self._started:
            if not self._start(packet):
                return
        if self._ranges is not None:
            self._write_layered(packet)
            return
        seq = (packet.sequence_number + self._seq_offset) & 0xFFFF
        ahead = (seq - self._next_seq) & 0xFFFF
        newer = ahead < 0x8000
        if not newer and 0x10000 - ahead > self._span:
            return  # late, from before the keyframe this subscriber started on: useless to it
        budget = self._link_budget
        if budget is not None:
            now = time.monotonic()
            if newer and packet.timestamp != self._frame_ts:
                self._frame_ts = packet.timestamp
                if packet.keyframe:
                    self._keyframe_time = now
                elif budget.available(now) < -self._pause_debt(now) * budget.rate:
                    self._pause_for_link()
                    return
            budget.spend(len(packet.payload) + WIRE_HEADER, now)
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        try:
            self._writer(
                self._pt,  # type: ignore[misc,arg-type]
                packet.marker,
                seq,
                ts,
                self._ssrc,  # type: ignore[misc,arg-type]
                packet.payload,
                packet.padding,
            )
        except Exception as exc:
            logger.debug("down-track %s write failed: %s", self._down_id, exc)
            self._writer = None
            self._started = False
            return
        if ahead and newer:
            self._holes += ahead  # missing upstream: the subscriber counts them as lost
            self._mark_holes(seq)
        elif not newer:
            self._holes -= 1  # a late one (the publisher's retransmission) fills a hole
            self._mark_holes(self._next_seq)
        if newer:
            # only a newer packet moves the stream on: a late one (reordered, or the
            # publisher's retransmission) must not pull it back, or every NACK for what was
            # sent after it would look like one for a packet never sent
            self._span += ahead + 1
            self._next_seq = (seq + 1) & 0xFFFF
            self._last_ts = ts
            self._last_time = time.monotonic()
        self.packets += 1
        self.bytes += len(packet.payload)

    def _start(self, packet: Packet) -> bool:
        """Begin (or resume) on a keyframe, once the subscriber's transport is up."""
        if self._closed or self._pt is None:
            return False
        if not packet.keyframe:
            now = time.monotonic()
            retry = KEYFRAME_RETRY
            if self._congested:
                retry = CONGESTED_KEYFRAME_RETRY
                if packet.timestamp != self._frame_ts:
                    self._frame_ts = packet.timestamp
                    self.frames_dropped += 1
            if now - self._last_keyframe_request >= retry:
                self._last_keyframe_request = now
                self.up.request_keyframe()
            return False
        if self._writer is None:
            try:
                self._writer = fast_rtp_writer(
                    self._sender.transport,
                    self._tasks,
                    self._extension,
                    self._abs_at,
                    self.send_drops,
                )
            except ConnectionError:
                return False
        if self._congested:
            self._next_seq = (self._next_seq + PAUSE_SKIP) & 0xFFFF
            # the receiver counts the skipped numbers as lost: not the link's loss
            self._holes += PAUSE_SKIP
            self._mark_holes(self._next_seq)
            self._resumed_time = time.monotonic()
        self._congested = False
        self._frame_ts = self._keyframe_ts = packet.timestamp
        self._keyframe_time = time.monotonic()
        self._seq_offset = (self._next_seq - packet.sequence_number) & 0xFFFF
        # Continue the subscriber's timeline from where it stopped, advanced by wall time.
        elapsed = 0.0 if self._last_time is None else time.monotonic() - self._last_time
        target_ts = (self._last_ts + max(1, int(elapsed * self._clock_rate))) & 0xFFFFFFFF
        self._ts_offset = (target_ts - packet.timestamp) & 0xFFFFFFFF
        self._span = 0
        if self._vp8 and vp8.temporal_id(packet.payload) is not None:
            self._ranges = deque(
                [(packet.sequence_number, self._seq_offset, self._pid_delta)],
                maxlen=LAYER_RANGES,
            )
            self._dropping = False
            self._last_in = (packet.sequence_number - 1) & 0xFFFF
            self._last_marker = 1
            self._frame_left_out = False
            self._decodable = ALL_LAYERS  # a keyframe: every layer may go on from here
            self._dropped_ts.clear()
            self._sent_ts.clear()
            self._free.clear()
        else:
            self._ranges = None
        self._started = True
        return True

    def _write_layered(self, packet: Packet) -> None:
        """:meth:`write` for VP8 with temporal layers: frames above the link's layer are left
        out, with the subscriber's sequence numbers going on without a hole (each packet left
        out moves the offset back by one) and its picture IDs without a gap."""
        in_seq = packet.sequence_number
        seq = (in_seq + self._seq_offset) & 0xFFFF
        ahead = (seq - self._next_seq) & 0xFFFF
        # newer than the last packet in the publisher's numbering: in a run left out the
        # subscriber's does not move, and a late packet from before the run's last one would
        # look newer there
        newer = 0 < (in_seq - self._last_in) & 0xFFFF < 0x8000
        pid_delta = self._pid_delta
        budget = self._link_budget
        now = 0.0
        filled = False
        if not newer:
            timestamp = packet.timestamp
            if timestamp not in self._dropped_ts and timestamp not in self._sent_ts:
                # a frame never seen (lost whole upstream): forwarded only if of a layer the
                # subscriber gets now, else left out like the frames of its layer
                tid = vp8.temporal_id(packet.payload)
                if tid is not None and tid > min(self._max_layer, self._decodable):
                    self._dropped_ts.append(timestamp)
            if timestamp in self._dropped_ts:
                # a late packet of a frame left out: not forwarded, but a number left free for
                # it (it was missing at a left-out frame's edge) gets padding
                self._fill_hole(in_seq)
                return
            mapped = self._late_mapping(in_seq)
            if mapped is None:
                return
            seq, pid_delta = mapped
            ahead = (seq - self._next_seq) & 0xFFFF
            if ahead < 0x8000:
                # a number not given yet (a run left out is still going on after it): the
                # stream goes on from it, the numbers before it are free
                newer = True
            elif not 1 <= (self._next_seq - seq) & 0xFFFF <= self._span:
                return  # from before this subscriber's start
            else:
                # it fills a number kept free for it (a second copy fills nothing)
                free = self._free.pop(seq, None)
                filled = free is not None and not free[1]
        else:
            if packet.timestamp != self._frame_ts:
                self._frame_ts = packet.timestamp
                if budget is None and self._decodable >= self._top_layer:
                    self._max_layer = ALL_LAYERS  # not limited, every layer decodable: all go
                    self._frame_left_out = False
                else:
                    now = time.monotonic()
                    left_out = self._left_out_for_layer(packet, budget, now)
                    if left_out is None:
                        return  # paused for the link
                    self._frame_left_out = left_out
                if not self._frame_left_out:
                    self._sent_ts.append(packet.timestamp)
            if budget is not None:
                if not now:
                    now = time.monotonic()
                size = len(packet.payload) + WIRE_HEADER
                self._layer_bytes[self._frame_tid] += size
                if self._frame_ts == self._keyframe_ts:
                    self._keyframe_bytes += size
            if self._frame_left_out:
                self._leave_out(packet)
                return
            if self._dropping:
                self._dropping = False
                if self._end_run(packet):
                    seq = (in_seq + self._seq_offset) & 0xFFFF
                    ahead = (seq - self._next_seq) & 0xFFFF
            pid_delta = self._pid_delta
            self._last_in = in_seq
            self._last_marker = packet.marker
            ranges = self._ranges
            if ranges and (in_seq - ranges[-1][0]) & 0xFFFF >= RANGE_REFRESH:
                # a range is matched by a half-window (32,768 numbers) from its start: a long
                # run without anything left out starts a fresh one, or a NACK after it would
                # fall through to an older range and get the wrong packet
                ranges.append((in_seq, self._seq_offset, self._pid_delta))
            if budget is not None:
                budget.spend(size, now)
        ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
        payload = vp8.rewrite_picture_id(packet.payload, pid_delta)
        try:
            self._writer(
                self._pt,  # type: ignore[misc,arg-type]
                packet.marker,
                seq,
                ts,
                self._ssrc,  # type: ignore[misc,arg-type]
                payload,
                packet.padding,
            )
        except Exception as exc:
            logger.debug("down-track %s write failed: %s", self._down_id, exc)
            self._writer = None
            self._started = False
            return
        if newer:
            if ahead:
                self._keep_free(ahead)
            self._span += ahead + 1
            self._next_seq = (seq + 1) & 0xFFFF
            self._last_ts = ts
            self._last_time = time.monotonic()
        elif filled:
            self._holes -= 1
            self._mark_holes(self._next_seq)
        self.packets += 1
        self.bytes += len(payload)

    def _left_out_for_layer(
        self, packet: Packet, budget: congestion.TokenBucket | None, now: float
    ) -> bool | None:
        """At a frame's first packet: True to leave the frame out for its layer, False to
        forward it, None when the down-track paused for its link instead (as without layers).
        A layer above the highest decodable one is forwarded again from its next layer-sync
        frame (Y: it references only layer 0), one layer at a time from the bottom, since its
        other frames may reference ones of it that were left out."""
        layer = vp8.temporal_layer(packet.payload)
        tid, sync = (0, False) if layer is None else layer
        self._frame_tid = tid
        if tid > self._top_layer:
            self._top_layer = tid
        if packet.keyframe:
            self._decodable = ALL_LAYERS  # every reference starts afresh
            self._keyframe_time = now
            self._keyframe_ts = packet.timestamp
            return False
        if budget is None:
            self._max_layer = ALL_LAYERS
        else:
            self._choose_layer(budget, now)
        if tid > self._decodable:
            if tid <= self._max_layer and tid == self._decodable + 1 and sync:
                self._decodable = tid  # the layer's frames decode again from this one on
            else:
                self.layer_dropped[tid] += 1
                self._pid_delta -= 1
                self._dropped_ts.append(packet.timestamp)
                return True
        if tid > self._max_layer:
            self.layer_dropped[tid] += 1
            self._pid_delta -= 1
            self._dropped_ts.append(packet.timestamp)
            return True
        if budget is not None and budget.available(now) < -self._pause_debt(now) * budget.rate:
            self._pause_for_link()
            return None
        return False

    def _leave_out(self, packet: Packet) -> None:
        """Leave out a newer packet: the numbers after it move back by one, and by those of the
        packets missing upstream just before it that are known to be of a left-out frame.

        Missing packets next to a left-out one: the one right after a packet that did not end
        its frame (no marker) is of that frame, the one right before a packet that does not
        begin a frame is of this one's; between two packets of one frame all are. Those of a
        left-out frame take no number at the subscriber. The others (a forwarded frame's tail,
        frames lost whole, or where the split is not known) keep their numbers free: a late
        packet (the publisher's retransmission) fills its number, as padding if it turns out
        to be of a frame left out (:meth:`_fill_hole`)."""
        in_seq = packet.sequence_number
        missing = (in_seq - self._last_in - 1) & 0xFFFF
        assert self._ranges is not None
        start = vp8.is_frame_start(packet.payload)
        before = 0 if start else min(missing, 1)  # this frame's head
        after = 0  # the tail of the frame left out before
        if self._dropping and missing:
            if packet.timestamp == self._last_in_ts:
                after = missing  # one frame: every missing packet is of it
            elif not self._last_marker:
                after = min(missing - before, 1)
        free = missing - before - after
        if self._dropping and free and after:
            # the run so far ends at the tail's first missing packet; the free ones go on
            # from there with the offset the subscriber's next number needs
            after_start = (self._last_in + 1 + after) & 0xFFFF
            self._seq_offset = (self._seq_offset - after) & 0xFFFF
            # the picture ID delta before this frame's (it was counted at its first packet)
            self._ranges[-1] = (after_start, self._seq_offset, self._ranges[-1][2])
            after = 0
        self._seq_offset = (self._seq_offset - before - after - 1) & 0xFFFF
        entry = ((in_seq + 1) & 0xFFFF, self._seq_offset, self._pid_delta)
        if self._dropping and not free:
            self._ranges[-1] = entry  # the run goes on
        else:
            self._ranges.append(entry)
        self._dropping = True
        self._last_in = in_seq
        self._last_in_ts = packet.timestamp
        self._last_marker = packet.marker

    def _end_run(self, packet: Packet) -> bool:
        """The first packet forwarded after a run left out: a packet missing upstream right
        after the run's last one is of that one's frame when it did not end its frame (no
        marker): it takes no number (True: the offset moved). The others keep their numbers
        free (see :meth:`_leave_out`)."""
        missing = (packet.sequence_number - self._last_in - 1) & 0xFFFF
        if not missing or self._last_marker:
            return False
        if not vp8.is_frame_start(packet.payload) and missing == 1:
            return False  # this frame's head, then: stays free
        self._seq_offset = (self._seq_offset - 1) & 0xFFFF
        assert self._ranges
        self._ranges[-1] = ((self._last_in + 2) & 0xFFFF, self._seq_offset, self._pid_delta)
        return True

    def _keep_free(self, count: int) -> None:
        """The next ``count`` numbers are skipped (missing upstream): the subscriber counts them
        lost, and they are kept free for a late packet or padding."""
        self._holes += count
        self._mark_holes(self._next_seq + count)
        free = self._free
        for n in range(min(count, HOLES_KEPT)):
            free[(self._next_seq + n) & 0xFFFF] = (self._last_ts, False)
        while len(free) > HOLES_KEPT:
            del free[next(iter(free))]

    def _fill_hole(self, in_seq: int) -> bool:
        """A packet of a frame left out has come late (or been NACKed) with the number it
        maps to still free at the subscriber (its loss upstream was at the frame's edge, and
        which frame it belonged to was not known when the next packet went out): send that
        number as a padding-only packet, which a receiver counts as received (libwebrtc's
        packet buffer takes an empty payload as padding) and decodes nothing from. Its
        timestamp is that of the packet sent before it, so that a receiver that groups packets
        by timestamp (aiortc) adds nothing to that frame and sees no frame of its own. True if
        sent."""
        mapped = self._late_mapping(in_seq)
        if mapped is None or self._writer is None:
            return False
        out = mapped[0]
        ahead = (out - self._next_seq) & 0xFFFF
        if ahead < 0x8000:
            # not given yet (the run left out goes on after it): given now, as padding
            ts, filled = self._last_ts, True
        else:
            free = self._free.get(out)
            if free is None or not 1 <= (self._next_seq - out) & 0xFFFF <= self._span:
                return False
            ts, filled = free
        try:
            self._writer(self._pt, 0, out, ts, self._ssrc, b"", 1)  # type: ignore[arg-type]
        except Exception as exc:
            logger.debug("down-track %s padding failed: %s", self._down_id, exc)
            return False
        if ahead < 0x8000:
            if ahead:
                self._keep_free(ahead)
            self._span += ahead + 1
            self._next_seq = (out + 1) & 0xFFFF
            self._free[out] = (ts, True)
            self.holes_filled += 1
        elif not filled:
            self._free[out] = (ts, True)
            self._holes -= 1  # no longer lost for the subscriber
            self._mark_holes(self._next_seq)
            self.holes_filled += 1
        return True

    def _late_mapping(self, in_seq: int) -> tuple[int, int] | None:
        """(subscriber's sequence number, picture ID delta) for a late packet, or None when it
        has none (older than every range, or its number was given to a later packet)."""
        assert self._ranges is not None
        next_out: int | None = None
        count = len(self._ranges)
        for index in range(count - 1, -1, -1):
            start, offset, pid_delta = self._ranges[index]
            if (in_seq - start) & 0xFFFF < 0x8000 or (index == 0 and count < LAYER_RANGES):
                out = (in_seq + offset) & 0xFFFF
                if next_out is not None and not 0 < (next_out - out) & 0xFFFF < 0x8000:
                    return None  # a number a later packet already has
                return out, pid_delta
            next_out = (start + offset) & 0xFFFF
        return None

    def _original(self, out_seq: int) -> tuple[int, int] | None:
        """(publisher's sequence number, picture ID delta) of what went out as ``out_seq``, or
        None when it is older than the ranges kept (and so than the history)."""
        ranges = self._ranges
        if ranges is None:
            return (out_seq - self._seq_offset) & 0xFFFF, 0
        for index in range(len(ranges) - 1, -1, -1):
            start, offset, pid_delta = ranges[index]
            if (out_seq - start - offset) & 0xFFFF < 0x8000 or (
                index == 0 and len(ranges) < LAYER_RANGES
            ):
                # the first range since the start also holds what went before it
                return (out_seq - offset) & 0xFFFF, pid_delta
        return None

    def _choose_layer(self, budget: congestion.TokenBucket, now: float) -> None:
        """One layer down when the link is behind, one up after a calm period with room."""
        window = self._layer_window_start
        if window is None:
            self._layer_window_start = now
        elif now - window >= LAYER_WINDOW:
            elapsed = now - window
            self._layer_bps = [b * 8 / elapsed for b in self._layer_bytes]
            self._layer_bytes = [0, 0, 0, 0]
            self._keyframe_bps = self._keyframe_bytes * 8 / elapsed
            self._keyframe_bytes = 0
            self._layer_window_start = now
        available = budget.available(now)
        top = min(self._max_layer, self._top_layer)
        if available < -LAYER_DEBT * budget.rate:
            self._layer_debt_time = now
            deep = available < -PAUSE_DEBT * budget.rate  # a pause is near: layer 0 at once
            if top > 0 and (deep or now - self._layer_changed >= LAYER_DOWN_HOLD):
                self._max_layer = 0 if deep else top - 1
                self._decodable = min(self._decodable, self._max_layer)
                self._layer_changed = now
                self.layer_down += 1
                logger.debug(
                    "down-track %s behind its link: temporal layers up to %d",
                    self._down_id,
                    self._max_layer,
                )
            return
        if top >= self._top_layer or now - self._layer_debt_time < LAYER_UP_CALM:
            return
        if now - self._layer_changed < LAYER_UP_CALM:
            return
        need = sum(self._layer_bps[: top + 2])
        if budget.rate * 8 >= LAYER_UP_HEADROOM * need:
            self._max_layer = top + 1  # forwarded from its next layer-sync frame on
            self._layer_changed = now
            self.layer_up += 1

    def resume(self) -> None:
        """Forwarding paused (mute): start again on the next keyframe without a jump."""
        self._started = False

    def _pause_for_link(self) -> None:
        """The link is behind its estimate by more than a burst: leave out this frame and every
        one after it until the next keyframe (VP8 from aiortc and browsers without temporal
        layers: every frame is a reference for the next), which is asked for now. The
        subscriber then sees fewer frames, with sequence numbers that go on without a hole,
        instead of a queue that overflows and a picture that freezes on a loss."""
        logger.debug(
            "down-track %s behind its link (%s bit/s): frames left out until a keyframe",
            self._down_id,
            self.link.estimate(time.monotonic()),
        )
        self._started = False
        self._congested = True
        self._loss.reset()  # what is sent while paused is not what the link takes
        self.congestion_pauses += 1
        self.frames_dropped += 1
        self._last_keyframe_request = time.monotonic()
        self.up.request_keyframe()

    # -- congestion ------------------------------------------------------------------------
    def link_estimate(self, publisher_bps: float | None = None) -> int | None:
        """What this subscriber's link takes (bits/s), or None while nothing limits it; with
        ``publisher_bps`` (what the publisher sends), what it holds the publisher to
        (``LinkEstimate.publisher_hold``: not an estimate still ramping up below that; a
        layered stream served below its top layer is held by its estimate alone)."""
        now = time.monotonic()
        if publisher_bps is None:
            return self.link.estimate(now)
        full = not (self.layered and self._max_layer < self._top_layer)
        return self.link.publisher_hold(now, publisher_bps, full_stream=full)

    def _siblings(self, kind: str) -> list[RtpDownTrack]:
        """The subscriber's other down-tracks of ``kind`` on this one's transport."""
        return [
            other
            for other in transport_sender_hooks(self._sender)
            if isinstance(other, RtpDownTrack)
            and other is not self
            and not other.closed
            and other.up.info.kind == kind
        ]

    def _pause_debt(self, now: float) -> float:
        """Seconds of the estimate the link may be behind before frames are left out."""
        if now - self._keyframe_time < KEYFRAME_GRACE or self._layer0_drains():
            return PAUSE_DEBT + KEYFRAME_DEBT
        return PAUSE_DEBT

    def _layer0_drains(self) -> bool:
        """A layered stream down to layer 0 whose delta frames (over the last LAYER_WINDOW)
        take less than the link's budget: its debt goes down by itself."""
        budget = self._link_budget
        if self._ranges is None or self._max_layer > 0 or budget is None:
            return False
        if self._layer_window_start is None or not any(self._layer_bps):
            return False  # not measured yet
        delta_frames = max(0.0, self._layer_bps[0] - self._keyframe_bps)
        return delta_frames * LAYER_UP_HEADROOM <= budget.rate * 8

    def _measure_rate(self, now: float) -> None:
        """``sent_bps``, over the second or two since the last measurement."""
        wire = self.bytes + self.rtx_bytes + (self.packets + self.retransmitted) * WIRE_HEADER
        mark = self._rate_mark
        if mark is None or now - mark[0] >= 1.0:
            if mark is not None:
                self.sent_bps = (wire - mark[1]) * 8 / (now - mark[0])
            self._rate_mark = (now, wire)

    def _update_budgets(self) -> None:
        now = time.monotonic()
        estimate = self.link.estimate(now)
        incoming = getattr(self.up, "incoming_bps", None)
        sent_by_publisher = incoming() if incoming is not None else 0.0
        if (
            estimate is None
            or self.link.loss_bps is None
            or self.up.info.kind != "video"
            or estimate >= LIMITED_SHARE * sent_by_publisher
        ):
            if (
                self._link_budget is not None
                and self._ranges is not None
                and self._max_layer < self._top_layer
                and estimate is not None
            ):
                # temporal layers still lowered: they come back one at a time after a calm
                # period (_choose_layer), not all at once into a link just found too thin (the
                # loss bound lapses as fewer layers are sent: measured, all layers flooded it
                # again every few seconds)
                self._set_budgets(estimate, now)
                return
            self._link_budget = None  # not limited: every frame goes
            if not self.link.paces_retransmissions(now) or self.link.loss_bps is None:
                # nothing says the link is short (no loss bound, or no heavy loss lately):
                # every NACK the history can answer is answered
                self._rtx_budget = None
                return
            share = congestion.RETRANSMIT_SHARE * self.link.loss_bps
            self._set_rtx_budget(share / 8, now)
            return
        self._set_budgets(estimate, now)

    def _set_budgets(self, estimate: int, now: float) -> None:
        """Keep to the link's budget (``estimate``, with the REMB's headroom), retransmissions
        too."""
        rate = (self.link.budget(now) or estimate) / 8
        if self._link_budget is None:
            self._link_budget = congestion.TokenBucket(rate, LINK_BURST, now)
        else:
            self._link_budget.set_rate(rate, now)
        self._set_rtx_budget(rate * congestion.RETRANSMIT_SHARE, now)

    def _set_rtx_budget(self, rate: float, now: float) -> None:
        if self._rtx_budget is None:
            self._rtx_budget = congestion.TokenBucket(rate, LINK_BURST, now)
        else:
            self._rtx_budget.set_rate(rate, now)

    def on_remb(self, bitrate: int) -> None:
        self.link.on_remb(bitrate, time.monotonic())
        self._update_budgets()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "down-track %s REMB %d; estimate %s, limited %s",
                self._down_id,
                bitrate,
                self.link.estimate(time.monotonic()),
                self._link_budget is not None,
            )

    def _extended_next(self) -> int:
        """The next number to give (``_next_seq``) extended: it only moves forward, and each
        mark and receiver report looks at it (a report comes every second or so; it would take
        65,536 numbers unseen, 11 minutes of video without one, to miss a cycle)."""
        reached = self._seq_reached + ((self._next_seq - self._seq_reached) & 0xFFFF)
        self._seq_reached = reached
        return reached

    def _mark_holes(self, at: int) -> None:
        """The skipped total changed, seen by the subscriber from its number ``at`` on (16
        bits: the next number to give, or a little ahead of it)."""
        reached = self._extended_next()
        marks = self._hole_marks
        marks.append((reached + ((at - reached) & 0xFFFF), self._holes))
        if len(marks) > HOLE_MARKS_KEPT:
            self._hole_base = marks.popleft()[1]

    def _report_extended(self, highest: int) -> int:
        """A report's extended highest number (32 bits, counted by the receiver from its own
        first packet) in this down-track's extended numbering. The two differ by whole
        cycles, learned from the first report (the newest number given at or before it) and
        again whenever a report would fall outside the last 65,536 numbers given (the
        receiver counted its cycles anew)."""
        newest = self._extended_next() - 1
        offset = self._report_offset
        if offset is None or not newest - 0xFFFF <= highest + offset <= newest:
            offset = newest - ((newest - highest) & 0xFFFF) - highest
            self._report_offset = offset
        return highest + offset

    def _holes_at(self, highest: int) -> int:
        """Numbers skipped up to the subscriber's ``highest`` (extended, as the marks)."""
        for at, total in reversed(self._hole_marks):
            if at <= highest:
                return total
        return self._hole_base

    def on_receiver_report(self, fraction_lost: float, highest: int, lost: int) -> None:
        """The subscriber's report of this stream (see congestion.ReportLoss): its own
        ``fraction_lost`` is not used (one report per NACK covers a packet or two)."""
        now = time.monotonic()
        wire = self.bytes + self.packets * WIRE_HEADER  # what was sent, as the budgets count
        holes = self._holes_at(self._report_extended(highest & 0xFFFFFFFF))
        judged = self._loss.on_report(highest, lost, holes, wire, now)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "down-track %s %s report: highest %d, lost %d (its fraction %.3f), skipped %d, "
                "judged %s; loss bound %s, REMB %s, limited %s, retransmitted %d, paced %d",
                self._down_id,
                self.up.info.kind,
                highest,
                lost,
                fraction_lost,
                holes,
                judged,
                self.link.loss_bps,
                self.link.remb_bps,
                self._link_budget is not None,
                self.retransmitted,
                self.nack_paced,
            )
        if judged is not None:
            fraction, sent_bps, seconds = judged
            if sent_bps > 0:
                self.link.on_loss(fraction, sent_bps, seconds, time.monotonic())
                self._update_budgets()
            if self.up.info.kind == "audio" and fraction > congestion.LOSS_HIGH:
                for video in self._siblings("video"):
                    video.on_audio_loss(fraction)

    def on_audio_loss(self, fraction: float) -> None:
        """The subscriber's audio on this transport lost ``fraction``: audio goes first, so
        this video's link estimate goes down as for its own loss (congestion.on_other_loss)."""
        if self.sent_bps > 0:
            self.link.on_other_loss(fraction, self.sent_bps, time.monotonic())
            self._update_budgets()

    # -- sender hooks ----------------------------------------------------------------------
    def on_negotiated(
        self,
        payload_type: int,
        rtx_payload_type: int | None,
        mid_extension: tuple[int, str] | None = None,
        abs_send_time_id: int | None = None,
    ) -> None:
        self._pt = payload_type
        self._rtx_pt = rtx_payload_type
        extension, abs_at = rtp.extension_block(mid_extension, abs_send_time_id)
        if extension != self._extension or abs_at != self._abs_at:
            self._extension, self._abs_at = extension, abs_at
            self._writer = None  # a writer carries its extension: the next start makes one
            self._started = False

    def on_nack(self, sequence_numbers: list[int]) -> None:
        if not self._started or self._writer is None:
            return
        paced = self.nack_paced
        paced_layer = ALL_LAYERS  # the lowest temporal layer of a packet not sent again
        for out_seq in sequence_numbers:
            self.nacks += 1
            # only packets this down-track has actually sent since it (re)started
            behind = (self._next_seq - out_seq) & 0xFFFF
            if not 1 <= behind <= min(self._span, 0x7FFF):
                self.nack_not_sent += 1
                continue
            original = self._original(out_seq)
            packet = None if original is None else self.up.get_packet(original[0])
            if packet is None or original is None:
                self.nack_not_in_history += 1
                continue
            payload = packet.payload
            if self._ranges is not None:
                if packet.timestamp in self._dropped_ts:
                    # a number left free at the edge of a frame left out, whose packet turned
                    # out to be that frame's: padding fills it
                    if self._fill_hole(original[0]):
                        self.retransmitted += 1
                    else:
                        self.nack_not_in_history += 1
                    continue
                payload = vp8.rewrite_picture_id(payload, original[1])
            budget = self._rtx_budget
            size = len(payload) + WIRE_HEADER
            now = time.monotonic()
            if budget is not None and not budget.take(size, now):
                self.nack_paced += 1  # over the link's share: a flood would only add loss
                if self._ranges is not None:
                    tid = vp8.temporal_id(packet.payload)
                    paced_layer = min(paced_layer, 0 if tid is None else tid)
                continue
            ts = (packet.timestamp + self._ts_offset) & 0xFFFFFFFF
            try:
                if self._rtx_pt is not None:
                    self._writer(
                        self._rtx_pt,
                        packet.marker,
                        self._rtx_seq,
                        ts,
                        self._rtx_ssrc,
                        rtp.rtx_payload(out_seq, payload),
                    )
                    self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                else:
                    self._writer(
                        self._pt,  # type: ignore[arg-type]
                        packet.marker,
                        out_seq,
                        ts,  # type: ignore[arg-type]
                        self._ssrc,
                        payload,
                    )
            except Exception as exc:
                logger.debug("down-track %s retransmission failed: %s", self._down_id, exc)
                self.nack_failed += 1
                continue
            self.retransmitted += 1
            self.rtx_bytes += size - WIRE_HEADER
            if self._link_budget is not None:
                self._link_budget.spend(size, now)  # the link carries them with the frames
        if self.nack_paced > paced and self._started and self._link_budget is not None:
            if self._ranges is not None and paced_layer > 0:
                # lost in an upper layer only: that layer (and those above) is left out until
                # its next layer-sync frame, which references none of what was lost
                self._decodable = min(self._decodable, paced_layer - 1)
                return
            # a loss the link has no room to repair: its decoder would wait on it; a keyframe
            # (next frames left out meanwhile) ends the wait sooner than retransmissions would
            self._pause_for_link()

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if time.monotonic() - self._resumed_time < RESUME_PLI_IGNORE:
            self.resume_plis_ignored += 1  # its receiver emptied its buffer for the skip
            return
        self.up.request_keyframe()

    def sender_report(self) -> tuple[int, int, int, int] | None:
        self._measure_rate(time.monotonic())
        self._update_budgets()  # about once a second: an estimate that timed out goes
        if not self._started or self._last_time is None:
            return None
        published = self.up.sender_report
        if published is not None:
            # Translate the publisher's own clock mapping, so lip sync between its audio and
            # video survives forwarding.
            ntp, rtp_ts, arrived = published
            elapsed = asyncio.get_running_loop().time() - arrived
            ntp = (ntp + int(elapsed * (1 << 32))) & 0xFFFFFFFFFFFFFFFF
            rtp_ts = (rtp_ts + self._ts_offset + int(elapsed * self._clock_rate)) & 0xFFFFFFFF
        else:
            elapsed = time.monotonic() - self._last_time
            ntp = ntp_now()
            rtp_ts = (self._last_ts + int(elapsed * self._clock_rate)) & 0xFFFFFFFF
        return ntp, rtp_ts, self.packets, self.bytes

    def close(self, reason: CloseReason) -> None:
        if self._closed:
            return
        self._closed = True
        self._started = False
        self._writer = None
        self.up.remove_down_track(self)
        if self._own_tasks:
            self._tasks.cancel()
        if self._on_close is not None:
            self._on_close(self)
