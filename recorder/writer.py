"""A recording's writer thread: frames in, sealed segments out.

One thread per recording (so every write is in the order the event loop queued it) muxes each
track's frames (PyAV, no transcoding), cuts a segment every ``segment_seconds``, hashes it
(SHA-256), encrypts it (:func:`recorder.layout.encrypt_segment`), writes it with exclusive create
and fsync, and then appends ``segment.written`` to the custody log. A segment is durable (file
fsynced, log entry fsynced) before the next one starts, so a kill -9 loses at most the segment in
progress.

What it costs the event loop, which forwards every packet of the room: the frames every track's
pump queues are gathered for :data:`BATCH_SECONDS` and handed to the thread as one work item
(one future, one wake-up of the loop when it is done), not one per frame; and
``recording.json`` (every track's anchors, sender reports, gaps and counters: it grows with the
room and the session) is rewritten at most once per ``segment_seconds`` while segments are cut,
not after each of them: serializing it holds the interpreter, and with 100 cameras cutting a
segment every 2 s the per-segment rewrite alone took most of the thread and stalled the loop
(docs/performance.md, "Recording 100 viewers"). A track's first segment still rewrites it at once
(the track's time anchors are in it before any of its segments is logged).

A track whose muxer or disk fails stops there: what was written is kept, the forwarded frames
after it are counted (a ``failure`` gap), and the officers hear of it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.files import fsync_dir, write_exclusive
from mediaserver.protocols import TrackInfo

from .custody import CustodyLog, utc_now
from .layout import SEGMENTS, encrypt_segment, iso_time, segment_path
from .media import EncodedFrame, Gap, TrackMuxer

T = TypeVar("T")

# frames queued by the pumps are handed to the writer thread together after this long (seconds)
BATCH_SECONDS = 0.02

# what a batch settles with: the error of each track whose frames raised past fail(), by ID
BatchErrors = dict[str, BaseException]


def _os_name(name: str) -> None:
    """Name the writer thread for the operating system too (``/proc/<pid>/task/<tid>/comm``,
    top -H), so that its CPU can be told apart (``remotecase bench education --record``).
    Best effort: Linux only."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def track_info_json(info: TrackInfo) -> dict[str, Any]:
    return {
        "track_id": info.track_id,
        "participant": info.participant_id,
        "kind": info.kind,
        "codec": info.mime_type,
        "clock_rate": info.clock_rate,
        "channels": info.channels,
        "parameters": dict(info.parameters),
    }


@dataclass
class TrackState:
    """Per track; mutated only in the writer thread once recording began, except where noted."""

    info: TrackInfo
    container: str
    part: int = 1
    segments: list[dict[str, Any]] = field(default_factory=list)
    muxer: TrackMuxer | None = None
    segment_start: int | None = None
    segment_frames: int = 0
    segment_first_ts: int = 0
    last_ts: int = 0
    first_rtp_timestamp: int | None = None
    first_packet_time: str | None = None  # event loop
    first_packet_epoch: float | None = None  # event loop
    sender_reports: list[tuple[int, int]] = field(default_factory=list)  # event loop, append only
    frames: int = 0
    late_frames: int = 0  # frames refused here because their timestamp went back
    gaps: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)  # the assembler's, as last reported
    failure: dict[str, Any] | None = None
    failure_frames: int = 0  # forwarded frames after the failure, not recorded
    failure_first_ts: int | None = None
    failure_last_ts: int | None = None
    failure_announced: bool = False  # event loop
    left_at: str | None = None  # event loop: its participant left while it was recorded
    ended_at: str | None = None
    ended: str | None = None

    def gap_json(self, gap: Gap) -> dict[str, Any]:
        record = {
            "track": self.info.track_id,
            "participant": self.info.participant_id,
            **gap.to_json(self.info.clock_rate),
        }
        if self.first_packet_epoch is not None:
            record["start_time"] = iso_time(
                self.first_packet_epoch + gap.start / self.info.clock_rate
            )
        return record

    def track_json(self) -> dict[str, Any]:
        """What recording.json (and so recovery after a crash) keeps of the track."""
        return {
            **track_info_json(self.info),
            "container": self.container,
            "part": self.part,
            "first_rtp_timestamp": self.first_rtp_timestamp,
            "first_packet_time": self.first_packet_time,
            "sender_reports": [{"ntp": n, "rtp": r} for n, r in list(self.sender_reports)],
            "gaps": list(self.gaps),
            "counts": dict(self.counts),
            "failure": self.failure,
        }


class Writer:
    """The writer thread of one recording and what runs on it.

    ``save_metadata`` rewrites ``recording.json`` (called here, on the writer thread, whenever
    what it holds must survive a crash); ``failed`` is called on the writer thread when a track
    fails (it hands the news to the event loop).
    """

    def __init__(
        self,
        *,
        recording_id: str,
        case: str,
        room_id: str,
        directory: Path,
        data_key: bytes,
        custody: CustodyLog,
        segment_seconds: float,
        log: logging.LoggerAdapter[logging.Logger],
        save_metadata: Callable[[], None],
        failed: Callable[[TrackState], None],
    ) -> None:
        self.recording_id, self.case, self.room_id = recording_id, case, room_id
        self.directory = directory
        self.custody = custody
        self.segment_seconds = segment_seconds
        self.tracks: dict[str, TrackState] = {}
        self._aead = AESGCM(data_key)
        self._log = log
        self._save_metadata = save_metadata
        self._failed = failed
        name = f"rec-{recording_id[-6:]}"
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=_os_name, initargs=(name,)
        )
        # event loop: the batch being gathered and the future its tracks' pumps hold
        self._batch: list[tuple[TrackState, list[EncodedFrame], list[Gap], dict[str, int]]] = []
        self._batch_future: asyncio.Future[BatchErrors] | None = None
        self._batch_timer: asyncio.TimerHandle | None = None
        # writer thread: when recording.json was last written, and whether it is behind
        self._saved_at = -1e9
        self._save_due = False
        self.batches = 0  # work items of frames handed to the thread (event loop)

    # -- from the event loop -----------------------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the writer thread, after everything queued before it (the batch
        being gathered included)."""
        self.send_batch()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def queue_frames(
        self, state: TrackState, frames: list[EncodedFrame], gaps: list[Gap], counts: dict[str, int]
    ) -> asyncio.Future[BatchErrors]:
        """Queue frames (and the gaps before them) for writing, in the batch being gathered;
        the batch's future (shared by every track in it) settles once it is written, with the
        error of each track whose writing raised (:meth:`write_frames` marks a track failed
        and goes on; what raises past that is the pump's to take)."""
        if self._batch_future is None:
            loop = asyncio.get_running_loop()
            self._batch_future = loop.create_future()
            self._batch_timer = loop.call_later(BATCH_SECONDS, self.send_batch)
        self._batch.append((state, frames, gaps, counts))
        return self._batch_future

    def send_batch(self) -> None:
        """Hand the batch being gathered to the writer thread now (event loop)."""
        future, batch = self._batch_future, self._batch
        if future is None:
            return
        if self._batch_timer is not None:
            self._batch_timer.cancel()
        self._batch_future, self._batch, self._batch_timer = None, [], None
        self.batches += 1
        written = asyncio.get_running_loop().run_in_executor(
            self._executor, self._write_batch, batch
        )

        def settle(done: asyncio.Future[BatchErrors]) -> None:
            if future.done():
                return
            if done.cancelled():
                future.cancel()
            elif (error := done.exception()) is not None:
                future.set_exception(error)
            else:
                future.set_result(done.result())

        written.add_done_callback(settle)

    def submit(self, fn: Callable[[], None]) -> Future[None]:
        """``fn()`` on the writer thread, not waited for (from the event loop: after the
        batch being gathered)."""
        self.send_batch()
        return self._executor.submit(fn)

    async def close(self) -> None:
        """Let the queued work finish and end the thread (off the event loop)."""
        self.send_batch()
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    # -- writer thread -----------------------------------------------------------------------
    def add_track(self, state: TrackState) -> None:
        (self.directory / SEGMENTS / state.info.track_id).mkdir(mode=0o700)
        self.tracks[state.info.track_id] = state
        self._save_now()

    def _save_now(self) -> None:
        """Rewrite recording.json (raises OSError)."""
        self._save_due = False
        self._save_metadata()
        self._saved_at = time.monotonic()

    def _save_soon(self) -> None:
        """After a segment: rewrite recording.json if it was last written a segment's length
        ago, else once that much time has passed (at the end of a later batch)."""
        if time.monotonic() - self._saved_at >= self.segment_seconds:
            self._save_now()
        else:
            self._save_due = True

    def _write_batch(
        self, batch: list[tuple[TrackState, list[EncodedFrame], list[Gap], dict[str, int]]]
    ) -> BatchErrors:
        errors: BatchErrors = {}
        for state, frames, gaps, counts in batch:
            if state.info.track_id in errors:
                continue  # that track's pump stops at its error; the others go on
            try:
                self.write_frames(state, frames, gaps, counts)
            except Exception as exc:
                errors[state.info.track_id] = exc
        self.save_if_due()
        return errors

    @property
    def save_due(self) -> bool:
        """A rewrite of recording.json is put off (read from the event loop: a hint)."""
        return self._save_due

    def save_if_due(self) -> None:
        """A rewrite put off by :meth:`_save_soon`, once a segment's length has passed since the
        last (an error is logged: the next segment's own rewrite fails its track if it lasts)."""
        if self._save_due and time.monotonic() - self._saved_at >= self.segment_seconds:
            try:
                self._save_now()
            except OSError:
                self._log.exception("could not save recording.json")

    def changed(self) -> None:
        """What recording.json holds changed (participants came, went, lost their connection):
        rewritten at most a segment's length later. At 100 viewers on a lossy network the
        participants change many times a second, and each rewrite of a file of 100 tracks held
        the interpreter."""
        try:
            self._save_soon()
        except OSError:
            self._log.exception("could not save recording.json")

    def write_frames(
        self, state: TrackState, frames: list[EncodedFrame], gaps: list[Gap], counts: dict[str, int]
    ) -> None:
        state.counts = counts
        state.gaps.extend(state.gap_json(gap) for gap in gaps)
        if state.failure is not None:
            self._lost_to_failure(state, frames)
            return
        for i, frame in enumerate(frames):
            try:
                self._write_frame(state, frame)
            except Exception as exc:  # a muxer or disk failure: this track stops here
                self.fail(state, exc, frames[i:])
                return

    def _write_frame(self, state: TrackState, frame: EncodedFrame) -> None:
        if state.muxer is None:
            state.muxer = TrackMuxer(state.info)
            self._save_soon()  # the track's time anchors: at its first segment at the latest
        if state.frames and frame.timestamp <= state.last_ts:
            state.late_frames += 1  # never a timestamp that goes back into the muxer
            return
        limit = int(self.segment_seconds * state.info.clock_rate)
        if state.segment_start is None:
            state.segment_start = frame.timestamp
            state.segment_first_ts = frame.timestamp
        elif frame.timestamp - state.segment_start >= limit:
            self._cut(state, state.muxer.take())
            state.segment_start = frame.timestamp
            state.segment_first_ts = frame.timestamp
        state.muxer.add(frame)
        state.segment_frames += 1
        state.frames += 1
        state.last_ts = frame.timestamp

    def _lost_to_failure(self, state: TrackState, frames: list[EncodedFrame]) -> None:
        if not frames:
            return
        state.failure_frames += len(frames)
        if state.failure_first_ts is None:
            state.failure_first_ts = frames[0].timestamp
        state.failure_last_ts = frames[-1].timestamp

    def fail(self, state: TrackState, exc: BaseException, lost: list[EncodedFrame]) -> None:
        """A track's recording failed: keep what was written, count what is lost from here,
        mark the recording incomplete and tell the officers at once."""
        self._log.error("recording track %s failed", state.info.track_id, exc_info=exc)
        state.failure = {
            "error": f"{type(exc).__name__}: {exc}",
            "time": utc_now(),
            "after_frames": state.frames,
        }
        self._lost_to_failure(state, lost)
        if state.muxer is not None:
            with contextlib.suppress(Exception):
                self._cut(state, state.muxer.take())
        with contextlib.suppress(OSError):
            self._save_now()
        self._failed(state)

    def _cut(self, state: TrackState, chunk: bytes) -> None:
        """Seal one segment: hash, encrypt, write, fsync, log."""
        if not chunk:
            return
        index = len(state.segments)
        track_id = state.info.track_id
        stored = encrypt_segment(self._aead, chunk, self.recording_id, track_id, index)
        path = segment_path(self.directory, track_id, index)
        write_exclusive(path, stored)
        if index == 0:
            fsync_dir(path.parent)
        record: dict[str, Any] = {
            "track": track_id,
            "segment": index,
            "sha256": hashlib.sha256(chunk).hexdigest(),
            "sha256_stored": hashlib.sha256(stored).hexdigest(),
            "bytes": len(chunk),
            "first_timestamp": state.segment_first_ts,
            "last_timestamp": state.last_ts,
            "frames": state.segment_frames,
        }
        entry = self.custody.append(
            "segment.written",
            actor="recorder",
            case=self.case,
            room=self.room_id,
            recording=self.recording_id,
            **record,
        )
        state.segments.append({**record, "log_index": entry["index"]})
        state.segment_frames = 0
        # participants, sender reports and gaps so far survive a crash: with a track's first
        # segment at once (its time anchors), then at most a segment's length behind
        if index == 0:
            self._save_now()
        else:
            self._save_soon()

    def finish_track(
        self,
        state: TrackState,
        reason: str,
        gaps: list[Gap] | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        if counts is not None:
            state.counts = counts
        if gaps:
            state.gaps.extend(state.gap_json(gap) for gap in gaps)
        if state.ended is not None:
            return
        state.ended = reason
        state.ended_at = utc_now()
        if state.muxer is not None:
            try:
                chunk = state.muxer.close()
            except Exception as exc:
                if state.failure is None:
                    self.fail(state, exc, [])
                chunk = state.muxer.take()
            try:
                self._cut(state, chunk)
            except Exception as exc:
                if state.failure is None:
                    self.fail(state, exc, [])
        if state.failure is not None and state.failure_frames:
            first = state.failure_first_ts or 0
            last = state.failure_last_ts if state.failure_last_ts is not None else first
            end = last + (last - first) // max(1, state.failure_frames - 1)  # its last frame's end
            state.gaps.append(
                state.gap_json(
                    Gap(
                        cause="failure",
                        start=first,
                        end=end,
                        frames=state.failure_frames,
                        detail=state.failure["error"],
                    )
                )
            )
        with contextlib.suppress(OSError):
            self._save_soon()  # the seal and a crash's recovery both take what the log holds
