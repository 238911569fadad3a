"""One recorded track on the event loop: its local subscriber (the recorder is an ordinary
subscriber of the room, :class:`mediaserver.protocols.Subscriber`), the reordering buffer that
assembles frames (:class:`recorder.media.FrameAssembler`), and the writes it queues on the
recording's writer thread.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable

from mediaserver.protocols import Packet, Subscriber, UpTrack

from .custody import utc_now
from .media import EncodedFrame, FrameAssembler
from .writer import BatchErrors, TrackState, Writer

KEYFRAME_RETRY = 0.5  # seconds between the recorder's keyframe requests while it waits for one
# a track keeps its publisher's first sender report, then one per this many seconds (NTP time),
# and every one that leaves the line through the last one kept by more than SENDER_REPORT_JUMP
# seconds (the publisher's clock was set or restarted): a publisher reports about once a second,
# and keeping every report made recording.json grow by 200 pairs a second in a room of 100
SENDER_REPORT_EVERY = 30.0
SENDER_REPORT_JUMP = 0.010


def keep_sender_report(last: tuple[int, int], new: tuple[int, int], clock_rate: int) -> bool:
    """Whether a sender report (NTP, RTP) is worth keeping after ``last``, the last one kept:
    :data:`SENDER_REPORT_EVERY` seconds later, or off the line through ``last`` (between them,
    RTP time advanced more or less than NTP time by over :data:`SENDER_REPORT_JUMP`)."""
    if new == last:
        return False
    ntp = ((new[0] - last[0]) & 0xFFFFFFFFFFFFFFFF) / 2**32  # a step back wraps: kept
    if ntp >= SENDER_REPORT_EVERY:
        return True
    rtp = (new[1] - last[1]) & 0xFFFFFFFF
    if rtp >= 0x80000000:
        rtp -= 0x100000000
    return abs(rtp / clock_rate - ntp) > SENDER_REPORT_JUMP


class TrackPump:
    """Packets -> reordering buffer -> frames -> writer thread, until the track ends.

    The recording's ticker calls :meth:`on_tick` to release frames whose wait ran out while no
    packet came, and to note mutes. An exception here or in the writer marks the track failed
    (the recording becomes incomplete, the officers hear of it at once); the pump then goes on
    counting what the SFU forwards, so the manifest can say what was lost.
    """

    def __init__(
        self,
        up: UpTrack,
        state: TrackState,
        subscriber: Subscriber,
        writer: Writer,
        *,
        reorder_wait: float,
        outage_seconds: float,
    ) -> None:
        self.up, self.state, self.subscriber, self.writer = up, state, subscriber, writer
        self.outage_seconds = outage_seconds
        self.assembler = FrameAssembler(
            up.info, reorder_wait=reorder_wait, outage_seconds=outage_seconds
        )
        # the writer's batches this track has frames in, oldest first (each once)
        self.pending: collections.deque[asyncio.Future[BatchErrors]] = collections.deque()
        self.last_arrival = asyncio.get_running_loop().time()
        self.last_request = -1e9
        self.keyframes_requested = 0
        self.seen_dropped = 0
        self.seen_report: object = None  # the up-track's last sender report looked at
        self.error: BaseException | None = None  # raised where the pump can take it

    def counts(self) -> dict[str, int]:
        a, sub = self.assembler, self.subscriber
        return {
            "forwarded_frames": a.forwarded_frames,
            "dropped_frames": a.dropped_frames,
            "late_frames": a.late_frames,
            "cut_frames": a.cut_frames,
            "late_packets": a.late_packets,
            "packets_missing": a.packets_missing,
            "packets_forwarded": sub.received,
            "queue_dropped": sub.dropped,
            "keyframes_requested": self.keyframes_requested,
        }

    def on_packet(self, packet: Packet, now: float) -> None:
        state = self.state
        self.last_arrival = now
        if state.first_packet_time is None:
            state.first_packet_time = utc_now()
            state.first_packet_epoch = time.time()
        report = self.up.sender_report
        if report is not None and report is not self.seen_report:  # a new one: once per report
            self.seen_report = report
            if not state.sender_reports or keep_sender_report(
                state.sender_reports[-1], report[:2], state.info.clock_rate
            ):
                state.sender_reports.append(report[:2])
        self._after(self.assembler.add(packet, now), now)

    def on_tick(self, now: float) -> None:
        self._after(self.assembler.poll(now), now)

    def _after(self, frames: list[EncodedFrame], now: float) -> None:
        assembler, subscriber = self.assembler, self.subscriber
        if self.up.muted:
            assembler.note_muted()
        if subscriber.dropped != self.seen_dropped:
            self.seen_dropped = subscriber.dropped
            assembler.note_overflow()
        if assembler.needs_keyframe and now - self.last_request >= KEYFRAME_RETRY:
            self.last_request = now
            self.keyframes_requested += 1
            subscriber.request_keyframe()
        gaps = assembler.take_gaps()
        if frames or gaps:
            self.state.first_rtp_timestamp = assembler.first_rtp_timestamp
            # ordered: one writer thread per recording, and every write is queued from here
            batch = self.writer.queue_frames(self.state, frames, gaps, self.counts())
            if not self.pending or self.pending[-1] is not batch:
                self.pending.append(batch)
        while self.pending and self.pending[0].done():
            self._settled(self.pending.popleft())

    def _settled(self, batch: asyncio.Future[BatchErrors]) -> None:
        """A batch this track had frames in was written: its error, if it raised."""
        error = batch.exception() or batch.result().get(self.state.info.track_id)
        if error is not None and self.error is None:
            self.error = error

    async def receive(self) -> BaseException | None:
        """Every packet until the subscriber ends; returns what crashed the pump, if anything."""
        loop = asyncio.get_running_loop()
        try:
            async for packet in self.subscriber.packets():
                self.on_packet(packet, loop.time())
                if self.error is not None:
                    raise self.error
                if len(self.pending) > 64:
                    # bounded (64 batches: about a second and a half), so a slow disk shows up
                    # as drops in the local subscriber's queue, never as a stalled loop
                    batch = self.pending.popleft()
                    await asyncio.wait([batch])
                    self._settled(batch)
        except Exception as exc:  # the assembler itself, or the writer raised past fail()
            return exc
        return None

    async def finish(self, crashed: BaseException | None, ending: Callable[[], str]) -> None:
        """Write what is left and finish the track. ``ending()`` names why it ended when its
        up-track is still open (``room closed`` or ``stopped``)."""
        loop = asyncio.get_running_loop()
        up, state, assembler, writer = self.up, self.state, self.assembler, self.writer
        crashed = crashed or self.error
        for batch in self.pending:
            try:
                errors = await batch
            except Exception as exc:
                crashed = crashed or exc
            else:
                crashed = crashed or errors.get(state.info.track_id)
        if crashed is not None:
            if state.failure is None:
                await writer.run(writer.fail, state, crashed, [])
            skipped = 0
            async for _ in self.subscriber.packets():  # count what the SFU still forwards
                skipped += 1
            state.counts["packets_after_failure"] = skipped
        tail = [] if crashed is not None else assembler.flush()
        if crashed is None:
            # nothing arrived for a while before the end: a mute or an outage up to the end
            idle = loop.time() - self.last_arrival
            if not up.closed and idle >= self.outage_seconds:
                assembler.add_gap(
                    "muted" if up.muted else "outage",
                    assembler.newest_timestamp + int(idle * up.info.clock_rate),
                )
        if tail:
            await writer.run(writer.write_frames, state, tail, [], self.counts())
        if up.closed:
            reason = "left" if state.left_at is not None else "unpublished"
        else:
            reason = ending()
        await writer.run(writer.finish_track, state, reason, assembler.take_gaps(), self.counts())
