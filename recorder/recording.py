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
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mediaserver.forwarding import ForwardedUpTrack
from mediaserver.local import LocalSubscriber
from mediaserver.protocols import CloseReason, TrackInfo

from .custody import CustodyLog, canonical, utc_now
from .keys import KeyEncryptionKey, sign
from .media import EncodedFrame, FrameAssembler, TrackMuxer, container_for

logger = logging.getLogger(__name__)

NONCE_BYTES = 12
OWNER_LOCK = "owner.lock"


def segment_aad(recording_id: str, track_id: str, index: int) -> bytes:
    return f"remotecase-segment-v1/{recording_id}/{track_id}/{index}".encode()


def _write_exclusive(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp-{secrets.token_hex(4)}")
    _write_exclusive(tmp, data)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _track_json(info: TrackInfo) -> dict[str, Any]:
    return {"track_id": info.track_id, "participant": info.participant_id, "kind": info.kind,
            "codec": info.mime_type, "clock_rate": info.clock_rate, "channels": info.channels,
            "parameters": dict(info.parameters)}


@dataclass
class TrackState:
    """Per track; mutated only in the writer thread once recording began."""

    info: TrackInfo
    container: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    muxer: TrackMuxer | None = None
    segment_start: int | None = None
    segment_frames: int = 0
    segment_first_ts: int = 0
    last_ts: int = 0
    first_rtp_timestamp: int | None = None
    first_packet_time: str | None = None
    sender_reports: list[tuple[int, int]] = field(default_factory=list)
    frames: int = 0
    dropped_frames: int = 0
    ended: str | None = None


class Recording:
    def __init__(self, recorder: Recorder, room: Any, recording_id: str, *, case: str,
                 actor: str, reason: str) -> None:
        self.recorder = recorder
        self.room = room
        self.recording_id = recording_id
        self.case = case
        self.directory = recorder.recordings_dir / recording_id
        self._data_key = AESGCM.generate_key(bit_length=256)
        self._wrapped_key = recorder.kek.wrap(self._data_key)
        self._aead = AESGCM(self._data_key)
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"rec-{recording_id[-6:]}")
        self._tracks: dict[str, TrackState] = {}
        self._subscribers: dict[str, LocalSubscriber] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.participants: dict[str, dict[str, Any]] = {}
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
        self._log = logging.LoggerAdapter(logger, {"room": room.room_id,
                                                   "recording": recording_id})

    # -- writer thread ---------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        return {
            "recording_id": self.recording_id, "room": self.room.room_id, "case": self.case,
            "state": self.state, "started_at": self.started_at, "stopped_at": self.stopped_at,
            "started_by": self.started_by, "retain_until": self.retain_until,
            "key": {"algorithm": "AES-256-GCM", "kek_fingerprint": self.recorder.kek.fingerprint,
                    "wrapped_data_key": self._wrapped_key, "wrap": "AES-KW (RFC 3394)"},
            "tracks": {tid: {**_track_json(t.info), "container": t.container,
                             "first_rtp_timestamp": t.first_rtp_timestamp,
                             "first_packet_time": t.first_packet_time}
                       for tid, t in self._tracks.items()},
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
            case=self.case, room=self.room.room_id, recording=self.recording_id,
            kek_fingerprint=self.recorder.kek.fingerprint, retain_until=self.retain_until)
        self.started_index = entry["index"]

    def _add_track(self, state: TrackState) -> None:
        (self.directory / "segments" / state.info.track_id).mkdir(mode=0o700)
        self._tracks[state.info.track_id] = state
        self._save_metadata()

    def _write_frames(self, state: TrackState, frames: list[EncodedFrame]) -> None:
        if state.muxer is None:
            state.muxer = TrackMuxer(state.info)
            self._save_metadata()  # the track's time anchors survive a crash
        limit = int(self.recorder.segment_seconds * state.info.clock_rate)
        for frame in frames:
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
        _write_exclusive(seg_dir / f"{index:06d}.seg", stored)
        if index == 0:
            _fsync_dir(seg_dir)
        record: dict[str, Any] = {
            "track": track_id, "segment": index, "sha256": hashlib.sha256(chunk).hexdigest(),
            "sha256_stored": hashlib.sha256(stored).hexdigest(), "bytes": len(chunk),
            "first_timestamp": state.segment_first_ts, "last_timestamp": state.last_ts,
            "frames": state.segment_frames,
        }
        entry = self.recorder.custody.append(
            "segment.written", actor="recorder", case=self.case, room=self.room.room_id,
            recording=self.recording_id, **record)
        state.segments.append({**record, "log_index": entry["index"]})
        state.segment_frames = 0

    def _finish_track(self, state: TrackState, reason: str) -> None:
        if state.ended is not None:
            return
        state.ended = reason
        if state.muxer is not None:
            self._cut(state, state.muxer.close())

    def _release_owner(self) -> None:
        owner = getattr(self, "_owner", None)
        if owner is not None and not owner.closed:
            owner.close()  # closing drops the lock

    def _seal(self, status: str, note: str) -> dict[str, Any]:
        for state in self._tracks.values():
            self._finish_track(state, "stopped")
        self.stopped_at = self.stopped_at or utc_now()
        stop = self.recorder.custody.append(
            "recording.stopped", actor=self.stopped_by, reason=self.stop_reason, case=self.case,
            room=self.room.room_id, recording=self.recording_id)
        self.stopped_index = stop["index"]
        return self.recorder.seal(self, status=status, note=note)

    # -- event loop ------------------------------------------------------------------------
    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def start(self) -> None:
        await self._run(self._begin)
        for participant in list(self.room.participants.values()):
            self.on_participant_joined(participant)
        for up in list(self.room.up_tracks()):
            await self.add_track(up)
        self.room.add_observer(self)

    async def add_track(self, up: ForwardedUpTrack) -> None:
        track_id = up.info.track_id
        if self._stopping or track_id in self._tracks or up.closed:
            return
        try:
            container, _ = container_for(up.info)
        except ValueError as exc:
            self._log.warning("not recording %s: %s", track_id, exc)
            return
        state = TrackState(info=up.info, container=container)
        await self._run(self._add_track, state)
        subscriber = self.room.subscribe_local(track_id, queue_size=4096)
        self._subscribers[track_id] = subscriber
        self._spawn(self._pump(up, state, subscriber), f"record {track_id}")

    async def _pump(self, up: ForwardedUpTrack, state: TrackState,
                    subscriber: LocalSubscriber) -> None:
        assembler = FrameAssembler(up.info)
        loop = asyncio.get_running_loop()
        pending: collections.deque[asyncio.Future[None]] = collections.deque()
        async for packet in subscriber.packets():
            if state.first_packet_time is None:
                state.first_packet_time = utc_now()
            report = up.sender_report
            if report is not None and (not state.sender_reports
                                       or state.sender_reports[-1] != report[:2]):
                state.sender_reports.append(report[:2])
            frames = assembler.add(packet)
            if frames:
                state.first_rtp_timestamp = assembler.first_rtp_timestamp
                # ordered: one writer thread per recording; bounded, so a slow disk shows
                # up as drops in the local subscriber's queue, never as a stalled loop
                pending.append(loop.run_in_executor(self._executor, self._write_frames,
                                                    state, frames))
                while pending and pending[0].done():
                    pending.popleft().result()
                if len(pending) > 64:
                    await pending.popleft()
        for future in pending:
            await future
        tail = assembler.flush()
        state.dropped_frames = assembler.dropped_frames + subscriber.dropped
        if tail:
            await self._run(self._write_frames, state, tail)
        await self._run(self._finish_track, state, "unpublished" if up.closed else "stopped")

    # room observer
    def on_track_published(self, up: ForwardedUpTrack) -> None:
        self._spawn(self.add_track(up), f"add {up.info.track_id}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s failed", task.get_name(), exc_info=task.exception())

    def on_track_unpublished(self, up: ForwardedUpTrack) -> None:
        pass  # the local subscriber closes with the up-track and the pump finishes the track

    def on_room_closed(self, reason: CloseReason) -> None:
        self.recorder.stop_soon(self.room.room_id, reason=f"room closed: {reason.value}")

    def on_participant_joined(self, participant: Any) -> None:
        self.participants.setdefault(participant.participant_id, {
            "id": participant.participant_id, "name": participant.name,
            "joined_at": utc_now(), "left_at": None})

    def on_participant_left(self, participant: Any, reason: CloseReason) -> None:
        record = self.participants.get(participant.participant_id)
        if record is not None:
            record["left_at"] = utc_now()
            record["left_reason"] = reason.value

    async def stop(self, *, actor: str, reason: str, status: str = "complete",
                   note: str = "") -> dict[str, Any]:
        if self._stopping:
            raise RuntimeError("recording already stopping")
        self._stopping = True
        self.stopped_by, self.stop_reason = actor, reason
        self.stopped_at = utc_now()
        self.room.remove_observer(self)
        for subscriber in list(self._subscribers.values()):
            subscriber.close(CloseReason.UNSUBSCRIBED)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        try:
            manifest = await self._run(self._seal, status, note)
        finally:
            self._release_owner()
        self._executor.shutdown(wait=True)
        return dict(manifest)

    def status(self) -> dict[str, Any]:
        return {"recording_id": self.recording_id, "room": self.room.room_id,
                "case": self.case, "state": self.state, "started_at": self.started_at,
                "tracks": sorted(self._tracks)}


class Recorder:
    def __init__(self, *, data_dir: Path, custody: CustodyLog, kek: KeyEncryptionKey,
                 signing_key: Ed25519PrivateKey, segment_seconds: float = 2.0,
                 retention_days: int = 730) -> None:
        self.recordings_dir = data_dir / "recordings"
        self.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.custody = custody
        self.kek = kek
        self.signing_key = signing_key
        self.segment_seconds = segment_seconds
        self.retention_days = retention_days
        self.active: dict[str, Recording] = {}  # by room ID
        self._tasks: set[asyncio.Task[Any]] = set()
        # (room ID, event type, fields) when a recording starts or is sealed
        self.listeners: list[Callable[..., None]] = []

    def _tell(self, room_id: str, **fields: Any) -> None:
        for listener in list(self.listeners):
            listener(room_id, "recording", **fields)

    async def start(self, room: Any, *, actor: str, reason: str, case: str = "") -> Recording:
        if room.room_id in self.active:
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

    async def stop(self, room_id: str, *, actor: str, reason: str) -> dict[str, Any]:
        recording = self.active.pop(room_id, None)
        if recording is None:
            raise KeyError(room_id)
        manifest = await recording.stop(actor=actor, reason=reason)
        self._tell(room_id, state="sealed", recording=recording.recording_id)
        return manifest

    def start_soon(self, room: Any, *, actor: str, reason: str, case: str = "") -> None:
        """Start from a callback (a new room that is recorded from its first participant)."""
        task = asyncio.get_running_loop().create_task(
            self.start(room, actor=actor, reason=reason, case=case),
            name=f"record {room.room_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
                "participants": [],
                "tracks": [
                    {**{k: v for k, v in track.items() if k != "track_id"},
                     "track_id": track_id, "sender_reports": [],
                     "frames": sum(seg["frames"] for seg in logged.get(track_id, [])),
                     "dropped_frames": None, "ended": "interrupted",
                     "segments": logged.get(track_id, [])}
                    for track_id, track in meta.get("tracks", {}).items()
                ],
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
        if room_id not in self.active:
            return
        task = asyncio.get_running_loop().create_task(
            self.stop(room_id, actor="server", reason=reason), name=f"stop recording {room_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every active recording (server shutdown)."""
        for room_id in list(self.active):
            await self.stop(room_id, actor="server", reason="server shutting down")
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

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
            "participants": sorted(recording.participants.values(), key=lambda p: p["id"]),
            "tracks": [
                {**_track_json(t.info), "container": t.container,
                 "first_rtp_timestamp": t.first_rtp_timestamp,
                 "first_packet_time": t.first_packet_time,
                 "sender_reports": [{"ntp": n, "rtp": r} for n, r in t.sender_reports],
                 "frames": t.frames, "dropped_frames": t.dropped_frames, "ended": t.ended,
                 "segments": t.segments}
                for t in recording._tracks.values()
            ],
            "custody": {"started_index": recording.started_index,
                        "stopped_index": recording.stopped_index,
                        "signing_key_id": self.custody.key_id},
            "key": recording._metadata()["key"],
        }
        return seal_manifest(self, recording.directory, manifest, room=recording.room.room_id,
                             case=recording.case, on_sealed=lambda: _mark_sealed(recording))


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
        "signature": sign(recorder.signing_key, body),
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
