"""Recordings: every published track of a room, stream-copied, hashed and encrypted as written.

A :class:`Recorder` owns the recordings directory, the custody log and the keys. A
:class:`Recording` is an ordinary in-process subscriber of a room (see
:mod:`mediaserver.local`): it receives each track's packets, assembles frames on the event loop,
and hands them to its own writer thread, which muxes (PyAV, no transcoding), cuts segments of
about ``segment_seconds``, hashes each (SHA-256), encrypts it (AES-256-GCM under the recording's
data key, the segment's position bound in as associated data), writes it with exclusive create and
fsync, and then appends ``segment.written`` to the custody log.

On disk, ``<data_dir>/recordings/<id>/``:

* ``recording.json``: state (``recording`` -> ``sealed``), tracks, the wrapped data key;
* ``segments/<track>/<n>.seg``: ``nonce (12 bytes) || AES-GCM ciphertext and tag``;
* ``manifest.json`` and ``manifest.sig.json`` once sealed (see ``docs/custody.md``).

A segment is durable (file fsynced, log entry fsynced) before the next one starts, so a kill -9
loses at most the segment in progress; :meth:`Recorder.recover` seals what a crash left behind.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import datetime
import enum
import fcntl
import hashlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.files import fsync_dir, write_atomic, write_exclusive
from common.hashing import canonical
from common.tasks import TaskSet
from mediaserver.protocols import (
    CloseReason,
    Packet,
    Participant,
    Room,
    Subscriber,
    TrackInfo,
    UpTrack,
)

from .custody import CustodyLog, utc_now
from .keys import KeyEncryptionKey, sign_manifest
from .media import EncodedFrame, FrameAssembler, Gap, TrackMuxer, container_for

logger = logging.getLogger(__name__)

NONCE_BYTES = 12
OWNER_LOCK = "owner.lock"


def segment_aad(recording_id: str, track_id: str, index: int) -> bytes:
    return f"remotecase-segment-v1/{recording_id}/{track_id}/{index}".encode()


def _track_json(info: TrackInfo) -> dict[str, Any]:
    return {"track_id": info.track_id, "participant": info.participant_id, "kind": info.kind,
            "codec": info.mime_type, "clock_rate": info.clock_rate, "channels": info.channels,
            "parameters": dict(info.parameters)}


class StopCause(enum.StrEnum):
    """Why a recording stopped (logged; the custody log keeps the actor's own words)."""

    REQUESTED = "requested"  # an officer stopped it (the API)
    ROOM_CLOSED = "room_closed"  # its room closed (not a case session's room that emptied)
    SHUTDOWN = "shutdown"  # the server is stopping


KEYFRAME_RETRY = 0.5  # seconds between the recorder's keyframe requests while it waits for one


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
        record = {"track": self.info.track_id, "participant": self.info.participant_id,
                  **gap.to_json(self.info.clock_rate)}
        if self.first_packet_epoch is not None:
            record["start_time"] = _iso(self.first_packet_epoch
                                        + gap.start / self.info.clock_rate)
        return record

    def track_json(self) -> dict[str, Any]:
        """What recording.json (and so recovery after a crash) keeps of the track."""
        return {**_track_json(self.info), "container": self.container, "part": self.part,
                "first_rtp_timestamp": self.first_rtp_timestamp,
                "first_packet_time": self.first_packet_time,
                "sender_reports": [{"ntp": n, "rtp": r} for n, r in list(self.sender_reports)],
                "gaps": list(self.gaps), "counts": dict(self.counts), "failure": self.failure}


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Pump:
    """One recorded track on the event loop: its assembler and the writes it has queued."""

    def __init__(self, recording: Recording, up: UpTrack, state: TrackState,
                 subscriber: Subscriber, assembler: FrameAssembler) -> None:
        self.recording, self.up, self.state = recording, up, state
        self.subscriber, self.assembler = subscriber, assembler
        self.pending: collections.deque[asyncio.Future[None]] = collections.deque()
        self.last_arrival = asyncio.get_running_loop().time()
        self.last_request = -1e9
        self.keyframes_requested = 0
        self.seen_dropped = 0
        self.error: BaseException | None = None  # raised where the pump can take it

    def counts(self) -> dict[str, int]:
        a, sub = self.assembler, self.subscriber
        return {"forwarded_frames": a.forwarded_frames, "dropped_frames": a.dropped_frames,
                "late_frames": a.late_frames, "cut_frames": a.cut_frames,
                "late_packets": a.late_packets, "packets_missing": a.packets_missing,
                "packets_forwarded": sub.received, "queue_dropped": sub.dropped,
                "keyframes_requested": self.keyframes_requested}

    def on_packet(self, packet: Packet, now: float) -> None:
        state = self.state
        self.last_arrival = now
        if state.first_packet_time is None:
            state.first_packet_time = utc_now()
            state.first_packet_epoch = time.time()
        report = self.up.sender_report
        if report is not None and (not state.sender_reports
                                   or state.sender_reports[-1] != report[:2]):
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
            recording = self.recording
            self.pending.append(asyncio.get_running_loop().run_in_executor(
                recording._executor, recording._write_frames, self.state, frames, gaps,
                self.counts()))
        while self.pending and self.pending[0].done():
            error = self.pending.popleft().exception()
            if error is not None and self.error is None:
                self.error = error


class Recording:
    """One recording of one room (of one case session: its room may empty and open again,
    each opening a *part* of the same recording)."""

    def __init__(self, recorder: Recorder, room: Room, recording_id: str, *, case: str,
                 actor: str, reason: str) -> None:
        self.recorder = recorder
        self.room = room
        self.room_id: str = room.room_id
        self.recording_id = recording_id
        self.case = case
        self.directory = recorder.recordings_dir / recording_id
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._wrapped_key = recorder.kek.wrap(self._data_key)
        self._aead = AESGCM(self._data_key)
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"rec-{recording_id[-6:]}")
        self._tracks: dict[str, TrackState] = {}
        self._subscribers: dict[str, Subscriber] = {}
        self._pumps: dict[str, _Pump] = {}
        self._log = logging.LoggerAdapter(logger, {"room": room.room_id,
                                                   "recording": recording_id})
        # adding tracks and their pumps: waited for at stop, once the subscribers are closed
        self._tasks = TaskSet(f"recording {recording_id}", self._log)
        # the ticker: runs until the pumps have finished, then is cancelled
        self._ticking = TaskSet(f"recording {recording_id} ticker", self._log)
        self.participants: dict[str, dict[str, Any]] = {}
        # what the writer thread saves of them: replaced (never mutated) on the event loop
        self._participants_snapshot: tuple[dict[str, Any], ...] = ()
        self.parts: list[dict[str, Any]] = []
        self.attached = False
        self.started_at = utc_now()
        self.retain_until = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(
            days=recorder.retention_days)).date().isoformat()
        self.stopped_at: str | None = None
        self.started_by = actor
        self.start_reason = reason
        self.state = "recording"
        self.started_index: int | None = None
        self.stopped_index: int | None = None
        self._stopping = False
        self.stopped_by = ""
        self.stop_reason = ""
        self.stop_cause: StopCause | None = None
        self._stopped = asyncio.Event()  # set once stop() has finished, well or not
        self._stop_result: dict[str, Any] | BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- writer thread ---------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id, "room": self.room_id, "case": self.case,
            "state": self.state, "started_at": self.started_at, "stopped_at": self.stopped_at,
            "started_by": self.started_by, "retain_until": self.retain_until,
            "key": {"algorithm": "AES-256-GCM", "kek_fingerprint": self.recorder.kek.fingerprint,
                    "wrapped_data_key": self._wrapped_key, "wrap": "AES-KW (RFC 3394)"},
            "participants": [dict(p) for p in self._participants_snapshot],
            "parts": [dict(p) for p in self.parts],
            "tracks": {tid: t.track_json() for tid, t in list(self._tracks.items())},
        }

    def _save_metadata(self) -> None:
        write_atomic(self.directory / "recording.json", canonical(self._metadata()))

    def _begin(self) -> None:
        self.directory.mkdir(parents=True, mode=0o700)
        # held while this process records: recovery elsewhere (another worker process starting)
        # leaves a recording alone while its owner lives, and seals it once the owner is gone
        self._owner = open(self.directory / OWNER_LOCK, "a+b")
        fcntl.flock(self._owner.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        (self.directory / "segments").mkdir(mode=0o700)
        self._save_metadata()
        entry = self.recorder.custody.append(
            "recording.started", actor=self.started_by, reason=self.start_reason,
            case=self.case, room=self.room_id, recording=self.recording_id,
            kek_fingerprint=self.recorder.kek.fingerprint, retain_until=self.retain_until)
        self.started_index = entry["index"]

    def _add_track(self, state: TrackState) -> None:
        (self.directory / "segments" / state.info.track_id).mkdir(mode=0o700)
        self._tracks[state.info.track_id] = state
        self._save_metadata()

    def _write_frames(self, state: TrackState, frames: list[EncodedFrame], gaps: list[Gap],
                      counts: dict[str, int]) -> None:
        state.counts = counts
        state.gaps.extend(state.gap_json(gap) for gap in gaps)
        if state.failure is not None:
            self._lost_to_failure(state, frames)
            return
        for i, frame in enumerate(frames):
            try:
                self._write_frame(state, frame)
            except Exception as exc:  # a muxer or disk failure: this track stops here
                self._fail(state, exc, frames[i:])
                return

    def _write_frame(self, state: TrackState, frame: EncodedFrame) -> None:
        if state.muxer is None:
            state.muxer = TrackMuxer(state.info)
            self._save_metadata()  # the track's time anchors survive a crash
        if state.frames and frame.timestamp <= state.last_ts:
            state.late_frames += 1  # never a timestamp that goes back into the muxer
            return
        limit = int(self.recorder.segment_seconds * state.info.clock_rate)
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

    def _fail(self, state: TrackState, exc: BaseException, lost: list[EncodedFrame]) -> None:
        """A track's recording failed: keep what was written, count what is lost from here,
        mark the recording incomplete and tell the officers at once."""
        self._log.error("recording track %s failed", state.info.track_id, exc_info=exc)
        state.failure = {"error": f"{type(exc).__name__}: {exc}", "time": utc_now(),
                         "after_frames": state.frames}
        self._lost_to_failure(state, lost)
        if state.muxer is not None:
            with contextlib.suppress(Exception):
                self._cut(state, state.muxer.take())
        with contextlib.suppress(OSError):
            self._save_metadata()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._announce_failure, state)

    def _cut(self, state: TrackState, chunk: bytes) -> None:
        """Seal one segment: hash, encrypt, write, fsync, log."""
        if not chunk:
            return
        index = len(state.segments)
        track_id = state.info.track_id
        nonce = secrets.token_bytes(NONCE_BYTES)
        stored = nonce + self._aead.encrypt(nonce, chunk,
                                            segment_aad(self.recording_id, track_id, index))
        seg_dir = self.directory / "segments" / track_id
        write_exclusive(seg_dir / f"{index:06d}.seg", stored)
        if index == 0:
            fsync_dir(seg_dir)
        record: dict[str, Any] = {
            "track": track_id, "segment": index, "sha256": hashlib.sha256(chunk).hexdigest(),
            "sha256_stored": hashlib.sha256(stored).hexdigest(), "bytes": len(chunk),
            "first_timestamp": state.segment_first_ts, "last_timestamp": state.last_ts,
            "frames": state.segment_frames,
        }
        entry = self.recorder.custody.append(
            "segment.written", actor="recorder", case=self.case, room=self.room_id,
            recording=self.recording_id, **record)
        state.segments.append({**record, "log_index": entry["index"]})
        state.segment_frames = 0
        # participants, sender reports and gaps so far survive a crash with the segment
        self._save_metadata()

    def _finish_track(self, state: TrackState, reason: str, gaps: list[Gap] | None = None,
                      counts: dict[str, int] | None = None) -> None:
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
                    self._fail(state, exc, [])
                chunk = state.muxer.take()
            try:
                self._cut(state, chunk)
            except Exception as exc:
                if state.failure is None:
                    self._fail(state, exc, [])
        if state.failure is not None and state.failure_frames:
            first = state.failure_first_ts or 0
            last = state.failure_last_ts if state.failure_last_ts is not None else first
            end = last + (last - first) // max(1, state.failure_frames - 1)  # its last frame's end
            state.gaps.append(state.gap_json(Gap(
                cause="failure", start=first, end=end, frames=state.failure_frames,
                detail=state.failure["error"])))
        with contextlib.suppress(OSError):
            self._save_metadata()

    def _release_owner(self) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None and not owner.closed:
            owner.close()  # closing drops the lock

    def _seal(self, status: str, note: str) -> dict[str, Any]:
        for state in self._tracks.values():
            self._finish_track(state, "stopped")
        self.stopped_at = self.stopped_at or utc_now()
        failed = [t for t in self._tracks.values() if t.failure is not None]
        if failed:
            status = "incomplete"
            note = "; ".join(filter(None, [note, *(
                f"track {t.info.track_id} ({t.info.participant_id} {t.info.kind}) failed "
                f"after {t.frames} frames: {t.failure['error'] if t.failure else ''}; "
                f"{t.failure_frames} forwarded frames after it not recorded"
                for t in failed)]))
        stop = self.recorder.custody.append(
            "recording.stopped", actor=self.stopped_by, reason=self.stop_reason, case=self.case,
            room=self.room_id, recording=self.recording_id)
        self.stopped_index = stop["index"]
        return self.recorder.seal(self, status=status, note=note)

    # -- event loop ------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _participants_changed(self) -> None:
        self._participants_snapshot = tuple(
            {**p, "presence": [dict(x) for x in p.get("presence", [])]}
            for p in sorted(self.participants.values(), key=lambda p: p["id"]))
        if not self._stopping and self.attached:
            self._executor.submit(self._save_metadata_logged)

    def _save_metadata_logged(self) -> None:
        try:
            self._save_metadata()
        except OSError:
            self._log.exception("could not save recording.json")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._run(self._begin)
        self._ticking.spawn(self._tick(), "tick")
        try:
            await self.attach(self.room)
        except BaseException:
            self._ticking.cancel()
            raise

    async def attach(self, room: Room) -> None:
        """Record this room: at the start, and again when a session's room opens anew."""
        self.room = room
        self.attached = True
        self.parts.append({"part": len(self.parts) + 1, "started_at": utc_now(),
                           "ended_at": None, "end_reason": None})
        for participant in list(room.participants.values()):
            self.on_participant_joined(participant)
        for up in list(room.up_tracks()):
            await self.add_track(up)
        room.add_observer(self)

    def detach(self, reason: str) -> None:
        """The room closed under a session recording: this part ends, the recording goes on."""
        if not self.attached:
            return
        self.attached = False
        self.room.remove_observer(self)
        part = self.parts[-1]
        part["ended_at"], part["end_reason"] = utc_now(), reason
        for subscriber in list(self._subscribers.values()):
            subscriber.close(CloseReason.ROOM_CLOSED)
        self._subscribers.clear()
        self._participants_changed()
        self._executor.submit(self._save_metadata_logged)  # the part's end survives a crash
        self._log.info("room closed (%s): recording part %d ended; the session's recording "
                       "continues when its room opens again", reason, part["part"])

    async def add_track(self, up: UpTrack) -> None:
        track_id = up.info.track_id
        if self._stopping or track_id in self._tracks or up.closed:
            return
        try:
            container, _ = container_for(up.info)
        except ValueError as exc:
            self._log.warning("not recording %s: %s", track_id, exc)
            return
        state = TrackState(info=up.info, container=container, part=len(self.parts))
        await self._run(self._add_track, state)
        if self._stopping:
            return  # stopped meanwhile: the track is in the manifest, with what it holds (none)
        subscriber = self.room.subscribe_local(track_id, queue_size=4096)
        self._subscribers[track_id] = subscriber
        self._tasks.spawn(self._pump(up, state, subscriber), f"record {track_id}")

    async def _pump(self, up: UpTrack, state: TrackState, subscriber: Subscriber) -> None:
        """Packets -> reordering buffer -> frames -> writer thread, until the track ends.

        The recording's ticker (:meth:`_tick`) releases frames whose wait ran out while no
        packet came, and notes mutes. An exception here or in the writer marks the track
        failed (the recording becomes incomplete, the officers hear of it at once); the pump
        then goes on counting what the SFU forwards, so the manifest can say what was lost.
        """
        recorder = self.recorder
        loop = asyncio.get_running_loop()
        pump = _Pump(self, up, state, subscriber, FrameAssembler(
            up.info, reorder_wait=recorder.reorder_wait, outage_seconds=recorder.outage_seconds))
        self._pumps[up.info.track_id] = pump
        crashed: BaseException | None = None
        try:
            async for packet in subscriber.packets():
                pump.on_packet(packet, loop.time())
                if pump.error is not None:
                    raise pump.error
                if len(pump.pending) > 64:
                    # bounded, so a slow disk shows up as drops in the local subscriber's
                    # queue, never as a stalled loop
                    await pump.pending.popleft()
        except Exception as exc:  # the assembler itself, or the writer raised past _fail
            crashed = exc
        finally:
            self._pumps.pop(up.info.track_id, None)
        crashed = crashed or pump.error
        assembler = pump.assembler
        for future in pump.pending:
            try:
                await future
            except Exception as exc:
                crashed = crashed or exc
        if crashed is not None:
            if state.failure is None:
                await self._run(self._fail, state, crashed, [])
            skipped = 0
            async for _ in subscriber.packets():  # count what the SFU still forwards
                skipped += 1
            state.counts["packets_after_failure"] = skipped
        tail = [] if crashed is not None else assembler.flush()
        if crashed is None:
            # nothing arrived for a while before the end: a mute or an outage up to the end
            idle = loop.time() - pump.last_arrival
            if not up.closed and idle >= recorder.outage_seconds:
                assembler.add_gap("muted" if up.muted else "outage",
                                  assembler.newest_timestamp + int(idle * up.info.clock_rate))
        if tail:
            await self._run(self._write_frames, state, tail, [], pump.counts())
        if up.closed:
            reason = "left" if state.left_at is not None else "unpublished"
        else:
            reason = "room closed" if not self.attached and not self._stopping else "stopped"
        await self._run(self._finish_track, state, reason, assembler.take_gaps(), pump.counts())

    async def _tick(self) -> None:
        """Every few tens of ms: release frames whose wait for a retransmission ran out while
        nothing arrived, and note mutes (a muted track sends the recorder nothing)."""
        loop = asyncio.get_running_loop()
        interval = max(0.02, self.recorder.reorder_wait / 3)
        while True:
            await asyncio.sleep(interval)
            for pump in list(self._pumps.values()):
                try:
                    pump.on_tick(loop.time())
                except Exception as exc:  # the pump marks the track failed
                    pump.error = pump.error or exc

    def _announce_failure(self, state: TrackState) -> None:
        if state.failure_announced or state.failure is None:
            return
        state.failure_announced = True
        self.recorder.alert(self.room_id, recording=self.recording_id,
                            track=state.info.track_id, participant=state.info.participant_id,
                            kind=state.info.kind, error=state.failure["error"],
                            recorded_frames=state.frames)

    # room observer (mediaserver.protocols.RoomObserver)
    def on_track_published(self, up: UpTrack) -> None:
        if self._tasks.closed:
            return  # stopping: the track is not recorded
        self._tasks.spawn(self.add_track(up), f"add {up.info.track_id}")

    def on_track_unpublished(self, up: UpTrack) -> None:
        pass  # the local subscriber closes with the up-track and the pump finishes the track

    def on_room_closed(self, reason: CloseReason) -> None:
        if reason == CloseReason.ROOM_EMPTY and self.case:
            # a case session's room emptied: the session goes on, and so does its recording
            self.detach(reason.value)
            return
        self.recorder.stop_soon(self.room_id, reason=f"room closed: {reason.value}")

    def on_participant_joined(self, participant: Participant) -> None:
        record = self.participants.setdefault(participant.participant_id, {
            "id": participant.participant_id, "name": participant.name,
            "joined_at": utc_now(), "left_at": None, "presence": []})
        presence = record.setdefault("presence", [])
        if not presence or presence[-1]["left_at"] is not None:
            presence.append({"joined_at": utc_now(), "left_at": None, "part": len(self.parts)})
        record["left_at"] = None
        record.pop("left_reason", None)
        self._participants_changed()

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        record = self.participants.get(participant.participant_id)
        if record is None:
            return
        now = utc_now()
        record["left_at"] = now
        record["left_reason"] = reason.value
        if record.get("presence"):
            record["presence"][-1].update(left_at=now, left_reason=reason.value)
        for state in list(self._tracks.values()):  # the writer thread may be adding one
            if state.info.participant_id == participant.participant_id and state.left_at is None:
                state.left_at = now
        self._participants_changed()

    async def stop(self, *, actor: str, reason: str, status: str = "complete",
                   note: str = "", cause: StopCause = StopCause.REQUESTED) -> dict[str, Any]:
        """Stop and seal; returns the manifest. Idempotent: a second call waits for the first
        and returns its manifest (or raises what the first raised); its arguments are unused.

        In order: 1. no new track is taken on and the room no longer reports to us; 2. every
        local subscriber closes, so each pump drains what it holds and finishes its track;
        3. the pumps (and track additions in progress) are awaited, then the ticker cancelled;
        4. the writer thread seals (``recording.stopped``, manifest, signature); 5. the owner
        lock is released and the writer thread ends.
        """
        if self._stopping:
            await self._stopped.wait()
            if isinstance(self._stop_result, BaseException):
                raise self._stop_result
            return dict(self._stop_result or {})
        self._stopping = True
        self.stopped_by, self.stop_reason, self.stop_cause = actor, reason, cause
        self._log.info("recording stopping (%s): %s", cause.value, reason)
        try:
            manifest = await self._stop(status, note)
        except BaseException as exc:
            self._stop_result = exc
            raise
        else:
            self._stop_result = manifest
        finally:
            self._stopped.set()
        self._log.info("recording sealed (%s)", manifest.get("status"))
        return dict(manifest)

    async def _stop(self, status: str, note: str) -> dict[str, Any]:
        self.stopped_at = utc_now()
        if self.attached:
            self.room.remove_observer(self)
            self.parts[-1].update(ended_at=self.stopped_at, end_reason="stopped")
        for subscriber in list(self._subscribers.values()):
            subscriber.close(CloseReason.UNSUBSCRIBED)
        try:
            await self._tasks.drain()
        finally:
            await self._tasks.close()
            await self._ticking.close()
        self._participants_changed()
        try:
            manifest: dict[str, Any] = await self._run(self._seal, status, note)
        finally:
            self._release_owner()
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        return manifest

    def dump(self) -> dict[str, int]:
        """What is alive: tasks, pumps and subscribers (all 0 once stopped)."""
        return {"tasks": len(self._tasks) + len(self._ticking), "pumps": len(self._pumps),
                "subscribers": sum(1 for s in self._subscribers.values() if not s.closed)}

    def status(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "room": self.room_id,
                "case": self.case, "state": self.state, "started_at": self.started_at,
                "parts": len(self.parts), "attached": self.attached,
                "tracks": sorted(self._tracks),
                "failed_tracks": sorted(t for t, s in list(self._tracks.items())
                                        if s.failure is not None)}


class Recorder:
    def __init__(self, *, data_dir: Path, custody: CustodyLog, kek: KeyEncryptionKey,
                 signing_key: Ed25519PrivateKey, segment_seconds: float = 2.0,
                 retention_days: int = 730, reorder_wait: float = 0.3,
                 outage_seconds: float = 1.0) -> None:
        """``reorder_wait``: how long (s) a missing packet holds the frames after it, waiting
        for its retransmission, before it is given up; ``outage_seconds``: a gap at least this
        long is an outage rather than packet loss."""
        self.recordings_dir = data_dir / "recordings"
        self.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.custody = custody
        self.kek = kek
        self.signing_key = signing_key
        self.segment_seconds = segment_seconds
        self.retention_days = retention_days
        self.reorder_wait = reorder_wait
        self.outage_seconds = outage_seconds
        self.active: dict[str, Recording] = {}  # by room ID
        self._tasks = TaskSet("recorder", logger)
        self._closing = False
        # (room ID, event type, fields) when a recording starts or is sealed
        self.listeners: list[Callable[..., None]] = []

    def _tell(self, room_id: str, **fields: Any) -> None:
        for listener in list(self.listeners):
            listener(room_id, "recording", **fields)

    def alert(self, room_id: str, **fields: Any) -> None:
        """A track of a recording failed: officers hear it at once (``recording_failure``)."""
        for listener in list(self.listeners):
            try:
                listener(room_id, "recording_failure", **fields)
            except Exception:
                logger.exception("recording failure listener failed")

    async def start(self, room: Room, *, actor: str, reason: str, case: str = "") -> Recording:
        current = self.active.get(room.room_id)
        if current is not None and not current.attached and room is not current.room:
            # the session's room opened again: the same recording, a new part
            await current.attach(room)
            self._tell(room.room_id, state="recording", recording=current.recording_id,
                       part=len(current.parts))
            return current
        if current is not None:
            raise RuntimeError(f"room {room.room_id} is already being recorded")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        recording = Recording(self, room, f"REC_{now}_{secrets.token_hex(4)}", case=case,
                              actor=actor, reason=reason)
        self.active[room.room_id] = recording
        try:
            await recording.start()
        except Exception:
            self.active.pop(room.room_id, None)
            raise
        self._tell(room.room_id, state="recording", recording=recording.recording_id)
        return recording

    async def stop(self, room_id: str, *, actor: str, reason: str,
                   cause: StopCause = StopCause.REQUESTED) -> dict[str, Any]:
        recording = self.active.pop(room_id, None)
        if recording is None:
            raise KeyError(room_id)
        manifest = await recording.stop(actor=actor, reason=reason, cause=cause)
        self._tell(room_id, state="sealed", recording=recording.recording_id)
        return manifest

    def start_soon(self, room: Room, *, actor: str, reason: str, case: str = "") -> None:
        """Start from a callback (a new room that is recorded from its first participant)."""
        if self._closing:
            logger.info("not recording room %s: the recorder is closing", room.room_id)
            return
        self._tasks.spawn(self.start(room, actor=actor, reason=reason, case=case),
                          f"record {room.room_id}")

    async def recover(self) -> list[str]:
        """Seal recordings a crash left open, as incomplete, from what the log holds."""
        return list(await asyncio.get_running_loop().run_in_executor(None, self._recover))

    def _recover(self) -> list[str]:
        recovered = []
        entries = self.custody.entries()
        for meta_path in sorted(self.recordings_dir.glob("*/recording.json")):
            meta = load_json(meta_path)
            if meta.get("state") != "recording":
                continue
            recording_id = meta["recording_id"]
            directory = meta_path.parent
            if _owned_elsewhere(directory):
                continue  # another live process is recording it
            mine = [e for e in entries if e.get("recording") == recording_id]
            logged: dict[str, list[dict[str, Any]]] = {}
            for entry in mine:
                if entry["type"] == "segment.written":
                    logged.setdefault(entry["track"], []).append(
                        {k: entry[k] for k in ("track", "segment", "sha256", "sha256_stored",
                                               "bytes", "first_timestamp", "last_timestamp",
                                               "frames")} | {"log_index": entry["index"]})
            # a file written but never logged is not evidence: set aside, named in the note
            unlogged = []
            for path in sorted(directory.glob("segments/*/*.seg")):
                track_id, index = path.parent.name, int(path.stem)
                if not any(seg["segment"] == index for seg in logged.get(track_id, [])):
                    path.rename(path.with_suffix(".seg.unlogged"))
                    unlogged.append(f"{track_id}/{path.name}")
            started = next((e for e in mine if e["type"] == "recording.started"), None)
            last_time = mine[-1]["time"] if mine else meta.get("started_at")
            note = ("interrupted: the server stopped while recording; sealed at the next "
                    "start from the segments the custody log holds; media after the last "
                    "logged segment is lost")
            if unlogged:
                note += f"; set aside, never logged: {', '.join(unlogged)}"
            stop = self.custody.append(
                "recording.stopped", actor="server", reason="interrupted (recovered at start)",
                case=meta.get("case", ""), room=meta.get("room", ""), recording=recording_id)
            manifest = {
                "format": "remotecase-recording-manifest/1",
                "recording_id": recording_id, "case": meta.get("case", ""),
                "room": meta.get("room", ""), "status": "incomplete", "note": note,
                "started_at": meta.get("started_at"), "stopped_at": last_time,
                "started_by": meta.get("started_by", ""), "stopped_by": "server",
                "participants": meta.get("participants", []),
                "parts": meta.get("parts", []),
                "tracks": [_recovered_track(track_id, track, logged.get(track_id, []))
                           for track_id, track in meta.get("tracks", {}).items()],
                "gaps": sorted((g for t in meta.get("tracks", {}).values()
                                for g in t.get("gaps", [])),
                               key=lambda g: (g.get("start_time") or "", g["track"])),
                "custody": {"started_index": started["index"] if started else None,
                            "stopped_index": stop["index"], "signing_key_id": self.custody.key_id},
                "key": meta["key"],
            }

            def mark(path: Path = meta_path, meta: dict[str, Any] = meta) -> None:
                write_atomic(path, canonical({**meta, "state": "sealed"}))

            seal_manifest(self, directory, manifest, room=meta.get("room", ""),
                          case=meta.get("case", ""), on_sealed=mark)
            recovered.append(recording_id)
        return recovered

    # -- retention (writer-side helpers; callers run them off the event loop) ----------------
    def set_retention(self, recording_id: str, retain_until: datetime.date, *, actor: str,
                      reason: str) -> dict[str, Any]:
        path = self.recordings_dir / recording_id / "recording.json"
        meta = load_json(path)
        if meta.get("state") == "deleted":
            raise ValueError("the recording's media is already deleted")
        old = meta.get("retain_until")
        meta["retain_until"] = retain_until.isoformat()
        write_atomic(path, canonical(meta))
        return self.custody.append(
            "recording.retention_changed", actor=actor, reason=reason, case=meta.get("case", ""),
            room=meta.get("room", ""), recording=recording_id, old=old,
            new=meta["retain_until"])

    def delete_media(self, recording_id: str, *, actor: str, reason: str,
                     today: datetime.date | None = None) -> dict[str, Any]:
        """Delete a sealed recording's media once its retention has passed.

        The manifest, its signature and the log stay: what existed, and that it was deleted,
        by whom and why, remain checkable.
        """
        directory = self.recordings_dir / recording_id
        meta = load_json(directory / "recording.json")
        if meta.get("state") != "sealed":
            raise ValueError(f"only a sealed recording can be deleted (it is {meta.get('state')})")
        today = today or datetime.datetime.now(datetime.UTC).date()
        retain_until = datetime.date.fromisoformat(meta.get("retain_until") or "9999-12-31")
        if today <= retain_until:
            raise ValueError(f"retained until {retain_until.isoformat()}")
        removed = 0
        for path in sorted(directory.glob("segments/*/*.seg*")):
            path.unlink()
            removed += 1
        shutil.rmtree(directory / "exports", ignore_errors=True)  # packages hold the media too
        meta["state"] = "deleted"
        write_atomic(directory / "recording.json", canonical(meta))
        return self.custody.append(
            "recording.deleted", actor=actor, reason=reason, case=meta.get("case", ""),
            room=meta.get("room", ""), recording=recording_id, segments_removed=removed)

    def stop_soon(self, room_id: str, *, reason: str) -> None:
        """Stop from a callback (the room closed under the recording)."""
        if room_id not in self.active or self._closing:
            return  # closing: close() stops it
        self._tasks.spawn(self._stop_if_active(room_id, reason), f"stop recording {room_id}")

    async def _stop_if_active(self, room_id: str, reason: str) -> None:
        if room_id in self.active:  # not stopped meanwhile by an officer
            await self.stop(room_id, actor="server", reason=reason, cause=StopCause.ROOM_CLOSED)

    async def close(self) -> None:
        """Stop every active recording (server shutdown). Idempotent.

        In order: no recording is started or stopped from a callback any more; the starts and
        stops already under way finish; every active recording stops (``shutdown``); the
        task set closes.
        """
        self._closing = True
        await self._tasks.drain()
        for room_id in list(self.active):
            await self.stop(room_id, actor="server", reason="server shutting down",
                            cause=StopCause.SHUTDOWN)
        await self._tasks.close()

    def dump(self) -> dict[str, int]:
        """What is alive: active recordings, and the recorder's and the recordings' tasks,
        pumps and local subscribers (every count is 0 once the recorder has closed)."""
        counts = {"recordings": len(self.active), "tasks": len(self._tasks), "pumps": 0,
                  "subscribers": 0}
        for recording in list(self.active.values()):
            for key, value in recording.dump().items():
                counts[key] += value
        return counts

    def seal(self, recording: Recording, *, status: str, note: str) -> dict[str, Any]:
        """Write the manifest, log ``recording.sealed``, sign a tree head. Writer thread."""
        manifest = {
            "format": "remotecase-recording-manifest/1",
            "recording_id": recording.recording_id,
            "case": recording.case,
            "room": recording.room.room_id,
            "status": status,
            "note": note,
            "started_at": recording.started_at,
            "stopped_at": recording.stopped_at,
            "started_by": recording.started_by,
            "stopped_by": recording.stopped_by,
            "participants": [dict(p) for p in recording._participants_snapshot],
            "parts": recording.parts,
            "tracks": [_track_manifest(t) for t in recording._tracks.values()],
            "gaps": _all_gaps(recording),
            "custody": {"started_index": recording.started_index,
                        "stopped_index": recording.stopped_index,
                        "signing_key_id": self.custody.key_id},
            "key": recording._metadata()["key"],
        }
        return seal_manifest(self, recording.directory, manifest, room=recording.room.room_id,
                             case=recording.case, on_sealed=lambda: _mark_sealed(recording))


def _recovered_track(track_id: str, track: dict[str, Any],
                     segments: list[dict[str, Any]]) -> dict[str, Any]:
    """A track as a crash left it: what recording.json last saved, and the logged segments.

    The counts are those of the last save: frames forwarded after it are unknown, and the
    media after the last logged segment is lost (the manifest's note says so)."""
    counts = track.get("counts", {})
    frames = sum(seg["frames"] for seg in segments)
    kept = {k: v for k, v in track.items() if k not in ("track_id", "counts", "gaps")}
    return {**kept, "track_id": track_id,
            "sender_reports": track.get("sender_reports", []),
            # unknown past the crash; what the last save (at a segment's cut) counted
            "forwarded_frames": None, "frames": frames, "recorded_frames": frames,
            "dropped_frames": None, "counts_at_last_save": counts,
            "failure": track.get("failure"), "ended": "interrupted", "segments": segments}


def _track_manifest(t: TrackState) -> dict[str, Any]:
    """A track in the manifest: what the SFU forwarded to the recorder and what it recorded.

    ``forwarded_frames`` = ``frames`` (recorded) + the ``frames`` of the track's gaps +
    ``late_frames`` + ``cut_frames``: every forwarded frame is in the file or accounted for.
    """
    counts = t.counts
    forwarded = counts.get("forwarded_frames", t.frames)
    late = counts.get("late_frames", 0) + t.late_frames
    return {
        **_track_json(t.info), "container": t.container, "part": t.part,
        "first_rtp_timestamp": t.first_rtp_timestamp, "first_packet_time": t.first_packet_time,
        "sender_reports": [{"ntp": n, "rtp": r} for n, r in t.sender_reports],
        "forwarded_frames": forwarded, "frames": t.frames, "recorded_frames": t.frames,
        # forwarded, not recorded: in gaps or late (a frame cut off at the end is no loss)
        "dropped_frames": forwarded - t.frames - counts.get("cut_frames", 0),
        "late_frames": late, "cut_frames": counts.get("cut_frames", 0),
        "packets_forwarded": counts.get("packets_forwarded", 0),
        "packets_missing": counts.get("packets_missing", 0),
        "packets_late": counts.get("late_packets", 0),
        "queue_dropped": counts.get("queue_dropped", 0),
        "keyframes_requested": counts.get("keyframes_requested", 0),
        "failure": t.failure,
        "ended": "left" if t.left_at is not None and t.ended == "unpublished" else t.ended,
        "ended_at": t.ended_at,
        "segments": t.segments,
    }


def _all_gaps(recording: Recording) -> list[dict[str, Any]]:
    """Every track's gaps, and a ``left`` gap for each track whose party left: from leaving to
    coming back (or to the end of the recording)."""
    gaps = [g for t in recording._tracks.values() for g in t.gaps]
    stopped = _parse_iso(recording.stopped_at)
    for t in recording._tracks.values():
        if t.ended not in ("left", "unpublished") or t.left_at is None:
            continue
        left = _parse_iso(t.left_at)
        back = [_parse_iso(x["joined_at"]) for p in recording._participants_snapshot
                if p["id"] == t.info.participant_id for x in p.get("presence", [])
                if _parse_iso(x["joined_at"]) >= left]
        until = min(back, default=stopped)
        gaps.append({"track": t.info.track_id, "participant": t.info.participant_id,
                     "cause": "left", "start_time": t.left_at,
                     "start_timestamp": t.last_ts, "end_timestamp": t.last_ts,
                     "start": round(t.last_ts / t.info.clock_rate, 3),
                     "duration": round(max(0.0, until - left), 3), "frames": 0,
                     "packets_missing": 0,
                     "detail": "returned" if back else "did not return before the end"})
    return sorted(gaps, key=lambda g: (g.get("start_time") or "", g["track"]))


def _parse_iso(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC).timestamp()


def _mark_sealed(recording: Recording) -> None:
    recording.state = "sealed"
    recording._save_metadata()


def seal_manifest(recorder: Recorder, directory: Path, manifest: dict[str, Any], *, room: str,
                  case: str, on_sealed: Any) -> dict[str, Any]:
    body = canonical(manifest)
    digest = hashlib.sha256(body).hexdigest()
    write_atomic(directory / "manifest.json", body)
    sealed = recorder.custody.append(
        "recording.sealed", actor="recorder", case=case, room=room,
        recording=manifest["recording_id"], manifest_sha256=digest, status=manifest["status"])
    head = recorder.custody.sign_head()
    envelope = {
        "manifest_sha256": digest,
        "signature": sign_manifest(recorder.signing_key, body),
        "signing_key_id": recorder.custody.key_id,
        "sealed_index": sealed["index"],
        "tree_head": head.to_json(),
    }
    write_atomic(directory / "manifest.sig.json", canonical(envelope))
    on_sealed()
    return manifest


def _owned_elsewhere(directory: Path) -> bool:
    """Whether a live process holds the recording's owner lock."""
    path = directory / OWNER_LOCK
    if not path.exists():
        return False
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return False


def decrypt_segment(stored: bytes, data_key: bytes, recording_id: str, track_id: str,
                    index: int) -> bytes:
    nonce, body = stored[:NONCE_BYTES], stored[NONCE_BYTES:]
    plain: bytes = AESGCM(data_key).decrypt(nonce, body,
                                            segment_aad(recording_id, track_id, index))
    return plain


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_bytes())
    return data
