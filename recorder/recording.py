"""Recordings: every published track of a room, stream-copied, hashed and encrypted as written.

A :class:`Recorder` owns the recordings directory, the custody log and the keys, and the
recordings in progress. A :class:`Recording` is an ordinary in-process subscriber of a room
(a :class:`mediaserver.protocols.RoomObserver` that subscribes to each track): this module is its
lifecycle (start, the parts of a case session, the participants, stop and seal); the parts are

* :mod:`recorder.pump`: one track on the event loop, packets to frames;
* :mod:`recorder.writer`: the recording's writer thread: mux, cut, hash, encrypt, write, log;
* :mod:`recorder.layout`: what is on disk, and the segments' encryption;
* :mod:`recorder.manifest`: the manifest, built once for a stop and a recovery, and its seal;
* :mod:`recorder.recovery`: sealing what a crash left behind (:meth:`Recorder.recover`);
* :mod:`recorder.retention`: retention changes and deletion of media.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.files import write_atomic
from common.hashing import canonical
from common.tasks import TaskSet
from mediaserver.protocols import CloseReason, Participant, Room, Subscriber, UpTrack

from . import recovery, retention
from .custody import CustodyLog, utc_now
from .keys import KeyEncryptionKey
from .layout import METADATA, SEGMENTS, take_owner_lock
from .manifest import build_manifest, seal_manifest, track_gaps, track_manifest
from .media import container_for
from .pump import TrackPump
from .writer import TrackState, Writer

logger = logging.getLogger(__name__)


class StopCause(enum.StrEnum):
    """Why a recording stopped (logged; the custody log keeps the actor's own words)."""

    REQUESTED = "requested"  # an officer stopped it (the API)
    ROOM_CLOSED = "room_closed"  # its room closed (not a case session's room that emptied)
    SHUTDOWN = "shutdown"  # the server is stopping


class Recording:
    """One recording of one room (of one case session: its room may empty and open again,
    each opening a *part* of the same recording)."""

    def __init__(
        self,
        recorder: Recorder,
        room: Room,
        recording_id: str,
        *,
        case: str,
        actor: str,
        reason: str,
    ) -> None:
        self.recorder = recorder
        self.room = room
        self.room_id: str = room.room_id
        self.recording_id = recording_id
        self.case = case
        self.directory = recorder.recordings_dir / recording_id
        data_key = AESGCM.generate_key(bit_length=256)
        self._wrapped_key = recorder.kek.wrap(data_key)
        self._log = logging.LoggerAdapter(logger, {"room": room.room_id, "recording": recording_id})
        self._writer = Writer(
            recording_id=recording_id,
            case=case,
            room_id=self.room_id,
            directory=self.directory,
            data_key=data_key,
            custody=recorder.custody,
            segment_seconds=recorder.segment_seconds,
            log=self._log,
            save_metadata=self._save_metadata,
            failed=self._failed,
        )
        self._tracks = self._writer.tracks  # by track ID; the writer thread adds them
        self._subscribers: dict[str, Subscriber] = {}
        self._pumps: dict[str, TrackPump] = {}
        self._owner: IO[bytes] | None = None
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
        self.retain_until = (
            (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=recorder.retention_days))
            .date()
            .isoformat()
        )
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
            "recording_id": self.recording_id,
            "room": self.room_id,
            "case": self.case,
            "state": self.state,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "started_by": self.started_by,
            "retain_until": self.retain_until,
            "key": {
                "algorithm": "AES-256-GCM",
                "kek_fingerprint": self.recorder.kek.fingerprint,
                "wrapped_data_key": self._wrapped_key,
                "wrap": "AES-KW (RFC 3394)",
            },
            "participants": [dict(p) for p in self._participants_snapshot],
            "parts": [dict(p) for p in self.parts],
            "tracks": {tid: t.track_json() for tid, t in list(self._tracks.items())},
        }

    def _save_metadata(self) -> None:
        write_atomic(self.directory / METADATA, canonical(self._metadata()))

    def _begin(self) -> None:
        self.directory.mkdir(parents=True, mode=0o700)
        self._owner = take_owner_lock(self.directory)  # held while this process records
        (self.directory / SEGMENTS).mkdir(mode=0o700)
        self._save_metadata()
        entry = self.recorder.custody.append(
            "recording.started",
            actor=self.started_by,
            reason=self.start_reason,
            case=self.case,
            room=self.room_id,
            recording=self.recording_id,
            kek_fingerprint=self.recorder.kek.fingerprint,
            retain_until=self.retain_until,
        )
        self.started_index = entry["index"]

    def _release_owner(self) -> None:
        if self._owner is not None and not self._owner.closed:
            self._owner.close()  # closing drops the lock

    def _seal(self, status: str, note: str) -> dict[str, Any]:
        for state in self._tracks.values():
            self._writer.finish_track(state, "stopped")
        self.stopped_at = self.stopped_at or utc_now()
        failed = [t for t in self._tracks.values() if t.failure is not None]
        if failed:
            status = "incomplete"
            note = "; ".join(
                filter(
                    None,
                    [
                        note,
                        *(
                            f"track {t.info.track_id} ({t.info.participant_id} "
                            f"{t.info.kind}) failed "
                            f"after {t.frames} frames: {t.failure['error'] if t.failure else ''}; "
                            f"{t.failure_frames} forwarded frames after it not recorded"
                            for t in failed
                        ),
                    ],
                )
            )
        stop = self.recorder.custody.append(
            "recording.stopped",
            actor=self.stopped_by,
            reason=self.stop_reason,
            case=self.case,
            room=self.room_id,
            recording=self.recording_id,
        )
        self.stopped_index = stop["index"]
        tracks = list(self._tracks.values())
        manifest = build_manifest(
            recording_id=self.recording_id,
            case=self.case,
            room=self.room_id,
            status=status,
            note=note,
            started_at=self.started_at,
            stopped_at=self.stopped_at,
            started_by=self.started_by,
            stopped_by=self.stopped_by,
            participants=[dict(p) for p in self._participants_snapshot],
            parts=self.parts,
            tracks=[track_manifest(t) for t in tracks],
            gaps=track_gaps(tracks, self._participants_snapshot, self.stopped_at),
            started_index=self.started_index,
            stopped_index=self.stopped_index,
            signing_key_id=self.recorder.custody.key_id,
            key=self._metadata()["key"],
        )
        return seal_manifest(
            self.recorder.custody,
            self.recorder.signing_key,
            self.directory,
            manifest,
            room=self.room_id,
            case=self.case,
            on_sealed=self._mark_sealed,
        )

    def _mark_sealed(self) -> None:
        self.state = "sealed"
        self._save_metadata()

    def _failed(self, state: TrackState) -> None:
        """Writer thread: a track failed; the officers hear of it from the event loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._announce_failure, state)

    # -- event loop ------------------------------------------------------------------------
    def _participants_changed(self) -> None:
        self._participants_snapshot = tuple(
            {**p, "presence": [dict(x) for x in p.get("presence", [])]}
            for p in sorted(self.participants.values(), key=lambda p: p["id"])
        )
        if not self._stopping and self.attached:
            self._writer.submit(self._writer.changed)

    def _save_metadata_logged(self) -> None:
        try:
            self._save_metadata()
        except OSError:
            self._log.exception("could not save recording.json")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._writer.run(self._begin)
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
        self.parts.append(
            {
                "part": len(self.parts) + 1,
                "started_at": utc_now(),
                "ended_at": None,
                "end_reason": None,
            }
        )
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
        self._writer.submit(self._save_metadata_logged)  # the part's end survives a crash
        self._log.info(
            "room closed (%s): recording part %d ended; the session's recording "
            "continues when its room opens again",
            reason,
            part["part"],
        )

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
        await self._writer.run(self._writer.add_track, state)
        if self._stopping:
            return  # stopped meanwhile: the track is in the manifest, with what it holds (none)
        subscriber = self.room.subscribe_local(track_id, queue_size=4096)
        self._subscribers[track_id] = subscriber
        self._tasks.spawn(self._pump(up, state, subscriber), f"record {track_id}")

    async def _pump(self, up: UpTrack, state: TrackState, subscriber: Subscriber) -> None:
        """One track's :class:`recorder.pump.TrackPump`, until the track ends."""
        recorder = self.recorder
        pump = TrackPump(
            up,
            state,
            subscriber,
            self._writer,
            reorder_wait=recorder.reorder_wait,
            outage_seconds=recorder.outage_seconds,
        )
        self._pumps[up.info.track_id] = pump
        try:
            crashed = await pump.receive()
        finally:
            self._pumps.pop(up.info.track_id, None)
        await pump.finish(crashed, self._ending)

    def _ending(self) -> str:
        """Why a track whose up-track is still open ends: its room closed, or we stop."""
        return "room closed" if not self.attached and not self._stopping else "stopped"

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
            if self._writer.save_due:  # a rewrite put off, while no frames come to end it
                self._writer.submit(self._writer.save_if_due)

    def _announce_failure(self, state: TrackState) -> None:
        if state.failure_announced or state.failure is None:
            return
        state.failure_announced = True
        self.recorder.alert(
            self.room_id,
            recording=self.recording_id,
            track=state.info.track_id,
            participant=state.info.participant_id,
            kind=state.info.kind,
            error=state.failure["error"],
            recorded_frames=state.frames,
        )

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
        record = self.participants.setdefault(
            participant.participant_id,
            {
                "id": participant.participant_id,
                "name": participant.name,
                "joined_at": utc_now(),
                "left_at": None,
                "presence": [],
            },
        )
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

    def on_participant_reconnecting(self, participant: Participant, reason: CloseReason) -> None:
        """Its connections were lost; it stays (same tracks) while it may resume: the presence
        records the outage, the tracks' own gaps (cause ``outage``) the media missing."""
        record = self.participants.get(participant.participant_id)
        if record is None or not record.get("presence"):
            return
        outages = record["presence"][-1].setdefault("outages", [])
        outages.append({"lost_at": utc_now(), "reason": reason.value, "resumed_at": None})
        self._participants_changed()

    def on_participant_resumed(self, participant: Participant) -> None:
        record = self.participants.get(participant.participant_id)
        if record is None or not record.get("presence"):
            return
        outages = record["presence"][-1].get("outages") or []
        if outages and outages[-1]["resumed_at"] is None:
            outages[-1]["resumed_at"] = utc_now()
            self._participants_changed()

    async def stop(
        self,
        *,
        actor: str,
        reason: str,
        status: str = "complete",
        note: str = "",
        cause: StopCause = StopCause.REQUESTED,
    ) -> dict[str, Any]:
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
            manifest: dict[str, Any] = await self._writer.run(self._seal, status, note)
        finally:
            self._release_owner()
        await self._writer.close()
        return manifest

    def dump(self) -> dict[str, int]:
        """What is alive: tasks, pumps and subscribers (all 0 once stopped)."""
        return {
            "tasks": len(self._tasks) + len(self._ticking),
            "pumps": len(self._pumps),
            "subscribers": sum(1 for s in self._subscribers.values() if not s.closed),
        }

    def status(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id,
            "room": self.room_id,
            "case": self.case,
            "state": self.state,
            "started_at": self.started_at,
            "parts": len(self.parts),
            "attached": self.attached,
            "tracks": sorted(self._tracks),
            "failed_tracks": sorted(
                t for t, s in list(self._tracks.items()) if s.failure is not None
            ),
        }


class Recorder:
    def __init__(
        self,
        *,
        data_dir: Path,
        custody: CustodyLog,
        kek: KeyEncryptionKey,
        signing_key: Ed25519PrivateKey,
        segment_seconds: float = 2.0,
        retention_days: int = 730,
        reorder_wait: float = 0.3,
        outage_seconds: float = 1.0,
    ) -> None:
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
            self._tell(
                room.room_id,
                state="recording",
                recording=current.recording_id,
                part=len(current.parts),
            )
            return current
        if current is not None:
            raise RuntimeError(f"room {room.room_id} is already being recorded")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
        recording = Recording(
            self, room, f"REC_{now}_{secrets.token_hex(4)}", case=case, actor=actor, reason=reason
        )
        self.active[room.room_id] = recording
        try:
            await recording.start()
        except Exception:
            self.active.pop(room.room_id, None)
            raise
        self._tell(room.room_id, state="recording", recording=recording.recording_id)
        return recording

    async def stop(
        self, room_id: str, *, actor: str, reason: str, cause: StopCause = StopCause.REQUESTED
    ) -> dict[str, Any]:
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
        self._tasks.spawn(
            self.start(room, actor=actor, reason=reason, case=case), f"record {room.room_id}"
        )

    async def recover(self) -> list[str]:
        """Seal recordings a crash left open, as incomplete, from what the log holds."""
        return await asyncio.to_thread(
            recovery.recover, self.recordings_dir, self.custody, self.signing_key
        )

    # -- retention (blocking: callers run them off the event loop) --------------------------
    def set_retention(
        self, recording_id: str, retain_until: datetime.date, *, actor: str, reason: str
    ) -> dict[str, Any]:
        return retention.set_retention(
            self.recordings_dir,
            self.custody,
            recording_id,
            retain_until,
            actor=actor,
            reason=reason,
        )

    def delete_media(
        self, recording_id: str, *, actor: str, reason: str, today: datetime.date | None = None
    ) -> dict[str, Any]:
        """Delete a sealed recording's media once its retention has passed
        (:func:`recorder.retention.delete_media`)."""
        return retention.delete_media(
            self.recordings_dir, self.custody, recording_id, actor=actor, reason=reason, today=today
        )

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
            await self.stop(
                room_id, actor="server", reason="server shutting down", cause=StopCause.SHUTDOWN
            )
        await self._tasks.close()

    def dump(self) -> dict[str, int]:
        """What is alive: active recordings, and the recorder's and the recordings' tasks,
        pumps and local subscribers (every count is 0 once the recorder has closed)."""
        counts = {
            "recordings": len(self.active),
            "tasks": len(self._tasks),
            "pumps": 0,
            "subscribers": 0,
        }
        for recording in list(self.active.values()):
            for key, value in recording.dump().items():
                counts[key] += value
        return counts
