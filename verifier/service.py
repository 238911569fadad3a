"""Continuous face verification: an ordinary in-process subscriber of each party's video.

Per enrolled participant with a video track, a :class:`Watch` takes decoded frames from a
:class:`~mediaserver.local.LocalSubscriber` (decoding runs in the subscriber's own thread; video
decoding needs every frame, sampling does not), keeps about one frame per
``sample_interval`` and hands it to a bounded pool of inference threads. When every worker is
busy the sample is skipped and counted, so the verifier can fall behind but never slows
forwarding. Each sample gives one verdict; the verdicts drive a per-participant state
(verifying, verified, low_quality when the picture cannot be judged, alert) whose changes go
to the room's officers (the party is told what to do about a poor picture) and, like every
verdict, into the custody log (with the recording's ID when the room is being recorded, so an
export carries them).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from common.tasks import TaskSet, TaskSetClosed
from mediaserver.local import KEYFRAME_SAMPLING_FROM
from mediaserver.protocols import CloseReason, Participant, Room, Subscriber, UpTrack

from .engine import Engine, EngineSpec, cosine, load_engine
from .enrollment import (
    EnrollmentRejected,
    EnrollmentStore,
    QualityRules,
    decode_photo,
    examine,
    photo_hash,
)
from .liveness import LivenessModel, LivenessSpec

logger = logging.getLogger(__name__)

VERDICTS = ("match", "no_match", "no_face", "multiple_faces", "low_quality", "liveness_failed")

# Why a picture cannot be judged (a ``low_quality`` verdict's and state's reason): what the
# officer sees, and what the party is asked to do. Chinese first, then English.
LOW_QUALITY: dict[str, dict[str, str]] = {
    "too_small": {
        "message": "画面太小，无法核验人脸 / picture too small to check the face",
        "officer": "请当事人靠近摄像头；若仍如此，是网络或设备降低了分辨率，请改善网络后重试 / "
        "Ask the party to come closer to the camera; if it stays so, the network or "
        "the device lowered the resolution: improve the connection and retry",
        "party": "画面太小，无法核验您的人脸：请靠近摄像头，让脸部位于画面中央 / Your picture is "
        "too small to check your face: move closer, your face in the middle of the "
        "picture",
    },
    "too_blurred": {
        "message": "画面太模糊，无法核验人脸 / picture too blurred to check the face",
        "officer": "请当事人保持不动、擦拭镜头并增加光线 / Ask the party to hold still, clean the "
        "lens and add light",
        "party": "画面太模糊：请保持不动，擦拭镜头，并增加光线 / Your picture is too blurred: hold "
        "still, clean the lens and add light",
    },
    "no_picture": {
        "message": "未收到可核验的画面（摄像头或网络中断） / no picture to check (the camera or "
        "the network stopped)",
        "officer": "请当事人检查摄像头是否开启、网络是否正常 / Ask the party to check that the "
        "camera is on and the connection works",
        "party": "未收到您的画面：请检查摄像头是否开启、网络是否正常 / We receive no picture from "
        "you: check that your camera is on and your connection works",
    },
    "at_edge": {
        "message": "脸部太靠近画面边缘，无法核验 / face too near the edge of the picture",
        "officer": "请当事人把脸移到画面中央 / Ask the party to centre the face in the picture",
        "party": "请把脸移到画面中央 / Please centre your face in the picture",
    },
}
SMALLEST_DETECTED_FACE = 20  # pixels: MTCNN's smallest, to tell a small face from no face


def _os_name() -> None:
    """Name the worker thread ``verifier`` for the operating system too (``/proc/<pid>/task/
    <tid>/comm``, top -H), so its CPU can be told apart (``remotecase bench education``); the
    ONNX Runtime threads it starts inherit the name. Best effort: Linux only."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, b"verifier", 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class CustodySink(Protocol):
    """Where verdicts go: the custody log (:class:`recorder.custody.CustodyLog`)."""

    async def append_async(self, entry_type: str, **fields: Any) -> Any: ...


class _ActiveRecording(Protocol):
    @property
    def recording_id(self) -> str: ...


class Recordings(Protocol):
    """Which rooms are being recorded (:class:`recorder.recording.Recorder`), so that a
    verdict names the recording an export will carry it with."""

    @property
    def active(self) -> Mapping[str, _ActiveRecording]: ...


@dataclass(frozen=True)
class VerifierSettings:
    sample_interval: float = 1.0  # seconds between samples per participant
    workers: int = 1  # inference threads
    # samples that may wait for a busy worker (one per watch at most); beyond, one is skipped
    backlog: int = 8
    alert_after: float = 3.0  # seconds of a different face before an alert
    no_face_after: float = 10.0  # seconds without a usable face before an alert
    min_live_face: int = 60  # pixels (shorter side of the face box); smaller is too small
    # a frame whose shorter side is under this many times min_live_face cannot show a face
    # big enough, so finding none there is a picture too small rather than nobody there
    min_frame_faces: float = 3.0
    # the face's focus (engine.focus); below, too blurred to judge: measured on a noisy
    # stream, faces blurred to cosines under the threshold stay under 6, judgeable ones over 7
    min_live_focus: float = 6.5
    enrollment: QualityRules = field(default_factory=QualityRules)


@dataclass
class Verdict:
    participant: str
    verdict: str
    score: float | None
    faces: int
    quality: dict[str, float] | None
    frame_sha256: str
    time: float
    liveness: float | None = None  # live probability, when a liveness model is configured
    reason: str = ""  # a low_quality verdict's reason (a key of LOW_QUALITY)


@dataclass
class Watch:
    room: Room
    participant: str
    track_id: str
    reference: np.ndarray
    subscriber: Subscriber
    state: str = "verifying"
    reason: str = ""
    recent: deque[Verdict] = field(default_factory=lambda: deque(maxlen=64))
    last_match: float | None = None
    last_face: float | None = None
    started: float = field(default_factory=time.monotonic)
    samples: int = 0
    skipped: int = 0
    task: asyncio.Task[None] | None = None
    interval: float = 1.0  # seconds between this watch's samples (the room's kind decides)


class Verifier:
    def __init__(
        self,
        spec: EngineSpec,
        settings: VerifierSettings,
        store: EnrollmentStore,
        custody: CustodySink | None = None,
        recorder: Recordings | None = None,
        liveness: LivenessSpec | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.store = store
        self.custody = custody
        self.recorder = recorder
        self.liveness = liveness
        self.model_id = hashlib.sha256(
            json.dumps(self.identity(), sort_keys=True).encode()
        ).hexdigest()[:16]
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=settings.workers, thread_name_prefix="verifier", initializer=_os_name
        )
        self._busy = 0
        self._watches: dict[tuple[str, str], Watch] = {}
        self._rooms: dict[Room, _RoomHook] = {}
        # watches starting, watches running, verdicts being logged
        self._tasks = TaskSet("verifier", logger)
        self._closed = False
        self._closed_event = asyncio.Event()
        self.close_reason: CloseReason | None = None
        self.skipped = 0
        self.samples = 0
        # (room ID, event type, fields) for each state report: the officers' event stream
        self.listeners: list[Callable[..., None]] = []
        # whose reference a room's participant is compared with: references are kept per
        # scope (a case), and a room maps to one (the control plane sets this)
        self.scope_of: Callable[[str], str] = lambda room_id: room_id
        # whether a participant agreed to face checks; None means no consent model (tests,
        # development rooms)
        self.may_verify: Callable[[str, str], Awaitable[bool]] | None = None
        # a room's own sample interval (an education session's, minutes between checks), or
        # None for settings.sample_interval (the control plane sets this)
        self.interval_of: Callable[[str], Awaitable[float | None]] | None = None

    def identity(self) -> dict[str, object]:
        """The models every verdict names: the engine, and the liveness model if any."""
        identity = self.spec.identity()
        if self.liveness is not None:
            identity = {**identity, **self.liveness.identity()}
        return identity

    # -- engines, one per worker thread ----------------------------------------------------
    def _engine(self) -> Engine:
        engine: Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._local.engine = load_engine(self.spec)
        return engine

    def _rgb(self, frame: Any) -> np.ndarray:
        """The frame as RGB (worker thread), through this worker's own converter.

        ``VideoFrame.to_ndarray`` makes a converter per frame and keeps it on the frame, and
        libswscale gives each one a thread per core: every frame still held (a watch's last
        one) kept two idle threads, 194 at 100 viewers (issue 17). One converter per worker,
        with one thread (the worker is the thread), converts every frame of that worker."""
        if not isinstance(frame, av.VideoFrame):
            return np.asarray(frame.to_ndarray(format="rgb24"))
        converter: VideoReformatter | None = getattr(self._local, "converter", None)
        if converter is None:
            converter = self._local.converter = VideoReformatter()
        return np.asarray(converter.reformat(frame, format="rgb24", threads=1).to_ndarray())

    def _liveness_model(self) -> LivenessModel | None:
        if self.liveness is None:
            return None
        model: LivenessModel | None = getattr(self._local, "liveness", None)
        if model is None:
            model = self._local.liveness = LivenessModel(self.liveness)
        return model

    async def warm_up(self) -> None:
        """Load (and hash-check) the models in every worker before the first call needs them."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, self._engine) for _ in range(self.settings.workers))
        )

    # -- enrollment ------------------------------------------------------------------------
    def _enroll(self, room: str, participant: str, photo: bytes, actor: str) -> dict[str, Any]:
        rgb = decode_photo(photo)
        embedding, quality = examine(self._engine(), rgb, self.settings.enrollment)
        return self.store.save(
            room,
            participant,
            photo_sha256=photo_hash(photo),
            quality=quality,
            embedding=embedding,
            model=self.spec.identity(),
            actor=actor,
        )

    async def enroll(
        self, scope: str, participant: str, photo: bytes, *, actor: str, case: str = ""
    ) -> dict[str, Any]:
        """Check and store a reference photo; raises :class:`EnrollmentRejected`."""
        loop = asyncio.get_running_loop()
        record: dict[str, Any] = await loop.run_in_executor(
            self._pool, self._enroll, scope, participant, photo, actor
        )
        await self._log(
            "verification.enrolled",
            "",
            actor=actor,
            participant=participant,
            scope=scope,
            case=case,
            photo_sha256=record["photo_sha256"],
            quality=record["quality"],
            model_id=self.model_id,
            model=self.spec.identity(),
        )
        # a participant already in the call is watched from now on
        for watched_room in list(self._rooms):
            if self.scope_of(watched_room.room_id) == scope:
                for up in watched_room.up_tracks():
                    self.on_track_published(up, room=watched_room)
        return record

    async def forget(
        self, scope: str, participant: str, *, actor: str, reason: str, case: str = ""
    ) -> bool:
        """Delete a reference (face data is kept no longer than its case needs it)."""
        removed = await asyncio.to_thread(self.store.delete, scope, participant)
        if removed:
            await self._log(
                "verification.reference_deleted",
                "",
                actor=actor,
                reason=reason,
                participant=participant,
                scope=scope,
                case=case,
            )
        return removed

    # -- rooms -----------------------------------------------------------------------------
    def watch_room(self, room: Room) -> None:
        if room in self._rooms or self._closed:
            return
        hook = self._rooms[room] = _RoomHook(self, room)
        room.add_observer(hook)
        for up in room.up_tracks():
            self.on_track_published(up, room=room)

    def on_track_published(self, up: UpTrack, *, room: Room) -> None:
        info = up.info
        key = (room.room_id, info.participant_id)
        if info.kind != "video" or key in self._watches or up.closed or self._closed:
            return
        self._tasks.spawn(self._start_watch(room, up), f"start {room.room_id}/{info.track_id}")

    async def _start_watch(self, room: Room, up: UpTrack) -> None:
        info = up.info
        key = (room.room_id, info.participant_id)
        loaded = await asyncio.to_thread(
            self.store.load, self.scope_of(room.room_id), info.participant_id
        )
        if loaded is None or key in self._watches or up.closed or room.closed:
            return
        if self.may_verify is not None and not await self.may_verify(
            room.room_id, info.participant_id
        ):
            # no consent to face data: no comparison, and the officer is told why
            message = {
                "type": "verification",
                "participant": info.participant_id,
                "state": "not_consented",
                "reason": "no_face_consent",
            }
            for participant in list(room.participants.values()):
                if participant.role in ("officer", "supervisor"):
                    participant.send(message)
            for listener in list(self.listeners):
                listener(
                    room.room_id,
                    "verification",
                    participant=info.participant_id,
                    state="not_consented",
                    reason="no_face_consent",
                )
            return
        if key in self._watches or up.closed or room.closed or self._closed:
            return
        interval = self.settings.sample_interval
        if self.interval_of is not None:
            interval = await self.interval_of(room.room_id) or interval
        if key in self._watches or up.closed or room.closed or self._closed:
            return
        _, reference = loaded
        subscriber = room.subscribe_local(info.track_id, queue_size=256)
        watch = Watch(room, info.participant_id, info.track_id, reference, subscriber)
        watch.interval = interval
        self._watches[key] = watch
        await self._log(
            "verification.started",
            room.room_id,
            actor="verifier",
            participant=info.participant_id,
            track=info.track_id,
            model_id=self.model_id,
            model=self.identity(),
            sample_interval=interval,
            sampling="keyframes" if interval >= KEYFRAME_SAMPLING_FROM else "continuous",
        )
        if self._closed:  # closed while the start was logged
            self._stop_watch(key, self.close_reason or CloseReason.SHUTDOWN)
            return
        watch.task = self._tasks.spawn(self._run(watch), f"verify {key}")

    async def _run(self, watch: Watch) -> None:
        """Samples of one watch: keyframes asked every ``interval`` from
        :data:`~mediaserver.local.KEYFRAME_SAMPLING_FROM` seconds on (nothing decoded between
        them; a sample with no picture is a ``low_quality`` verdict, ``no_picture``), else
        continuous decoding with frames dropped in the subscriber's thread."""
        loop = asyncio.get_running_loop()
        last_sample = -1e9
        pending: set[asyncio.Future[Verdict]] = set()
        interval = watch.interval
        if interval >= KEYFRAME_SAMPLING_FROM:
            source = watch.subscriber.samples(interval)
        else:
            source = watch.subscriber.frames(every=interval * 0.9)
        try:
            async for frame in source:
                if frame is None:  # no whole keyframe came: nothing to judge, and said so
                    verdict = Verdict(
                        watch.participant,
                        "low_quality",
                        None,
                        0,
                        None,
                        "",
                        time.time(),
                        reason="no_picture",
                    )
                    self._tasks.spawn(self._record(watch, verdict), f"record {watch.participant}")
                    continue
                now = time.monotonic()
                if now - last_sample < interval * 0.5:
                    continue
                last_sample = now
                # a worker free, or room in the backlog (one sample per watch waiting at most)
                if pending or self._busy >= self.settings.workers + self.settings.backlog:
                    watch.skipped += 1
                    self.skipped += 1
                    continue
                self._busy += 1
                future = loop.run_in_executor(
                    self._pool, self._sample, watch.participant, watch.reference, frame, time.time()
                )
                pending.add(future)
                future.add_done_callback(functools.partial(self._done, watch, pending=pending))
        finally:
            for future in list(pending):
                future.cancel()

    def _done(
        self,
        watch: Watch,
        future: asyncio.Future[Verdict],
        *,
        pending: set[asyncio.Future[Verdict]],
    ) -> None:
        self._busy -= 1
        pending.discard(future)
        if future.cancelled():
            return
        if future.exception() is not None:
            logger.error("verifier sample failed", exc_info=future.exception())
            return
        try:
            self._tasks.spawn(self._record(watch, future.result()), f"record {watch.participant}")
        except TaskSetClosed:
            # only a sample whose result came back after close() finished waiting (a
            # safeguard: close waits for the threads, then for these verdicts)
            logger.debug("verdict for %s after close, not recorded", watch.participant)

    def _sample(self, participant: str, reference: np.ndarray, frame: Any, at: float) -> Verdict:
        """One verdict for one frame (worker thread)."""
        rgb = self._rgb(frame)
        frame_hash = hashlib.sha256(rgb.tobytes()).hexdigest()
        engine = self._engine()
        settings = self.settings
        faces = engine.faces(rgb)
        if not faces:
            # the detector looks for faces of a usable size first (cheaper); a smaller one is
            # looked for only then, so that it is reported too small rather than absent
            faces = engine.faces(rgb, min_face=SMALLEST_DETECTED_FACE)
        if not faces:
            if min(rgb.shape[:2]) < settings.min_live_face * settings.min_frame_faces:
                return Verdict(
                    participant, "low_quality", None, 0, None, frame_hash, at, reason="too_small"
                )
            return Verdict(participant, "no_face", None, 0, None, frame_hash, at)
        if len(faces) > 1:
            return Verdict(participant, "multiple_faces", None, len(faces), None, frame_hash, at)
        face = faces[0]
        if face.quality["size"] < settings.min_live_face:
            return Verdict(
                participant,
                "low_quality",
                None,
                1,
                face.quality,
                frame_hash,
                at,
                reason="too_small",
            )
        if face.quality["focus"] < settings.min_live_focus:
            return Verdict(
                participant,
                "low_quality",
                None,
                1,
                face.quality,
                frame_hash,
                at,
                reason="too_blurred",
            )
        live: float | None = None
        model = self._liveness_model()
        if model is not None and self.liveness is not None:
            live = model.score(rgb, face.detection.landmarks)
            if live is None:  # too near the frame's edge to judge
                return Verdict(
                    participant,
                    "low_quality",
                    None,
                    1,
                    face.quality,
                    frame_hash,
                    at,
                    reason="at_edge",
                )
            live = round(live, 4)
            if live < self.liveness.threshold:
                return Verdict(
                    participant, "liveness_failed", None, 1, face.quality, frame_hash, at, live
                )
        score = cosine(reference, engine.embed(rgb, face))
        verdict = "match" if score >= self.spec.threshold else "no_match"
        return Verdict(participant, verdict, round(score, 4), 1, face.quality, frame_hash, at, live)

    # -- state -----------------------------------------------------------------------------
    async def _record(self, watch: Watch, verdict: Verdict) -> None:
        watch.samples += 1
        self.samples += 1
        watch.recent.append(verdict)
        if verdict.verdict == "match":
            watch.last_match = verdict.time
        if verdict.verdict != "no_face":  # someone is there, judged or not
            watch.last_face = verdict.time
        state, reason = self._next_state(watch, verdict)
        await self._log(
            "verification.verdict",
            watch.room.room_id,
            actor="verifier",
            participant=watch.participant,
            verdict=verdict.verdict,
            score=verdict.score,
            threshold=self.spec.threshold,
            model_id=self.model_id,
            frame_sha256=verdict.frame_sha256,
            frame_time=verdict.time,
            faces=verdict.faces,
            quality=verdict.quality,
            **({"reason": verdict.reason} if verdict.reason else {}),
            **({"liveness": verdict.liveness} if self.liveness else {}),
        )
        # a new state, or a new reason why the picture cannot be judged
        if state != watch.state or (state == "low_quality" and reason != watch.reason):
            was_low = watch.state == "low_quality"
            watch.state, watch.reason = state, reason
            await self._log(
                "verification.state",
                watch.room.room_id,
                actor="verifier",
                participant=watch.participant,
                state=state,
                reason=reason,
                samples=watch.samples,
                skipped=watch.skipped,
            )
            if was_low or state == "low_quality":
                self._tell_party(watch)
        self._tell_officers(watch, verdict)

    def _next_state(self, watch: Watch, verdict: Verdict) -> tuple[str, str]:
        s = self.settings
        recent = list(watch.recent)
        now = verdict.time
        # several people in front of the camera, twice running
        if len(recent) >= 2 and all(v.verdict == "multiple_faces" for v in recent[-2:]):
            return "alert", "multiple_faces"
        # a picture or a screen instead of a person, twice running
        if len(recent) >= 2 and all(v.verdict == "liveness_failed" for v in recent[-2:]):
            return "alert", "liveness_failed"
        # a face that is not the reference for longer than alert_after
        seen_since_match = [
            v for v in recent if watch.last_match is None or v.time > watch.last_match
        ]
        if any(v.verdict == "no_match" for v in seen_since_match):
            first_mismatch = next(v.time for v in seen_since_match if v.verdict == "no_match")
            # only a face judged now: a picture too poor to judge is no evidence of another
            if now - first_mismatch >= s.alert_after and verdict.verdict == "no_match":
                return "alert", "different_face"
        # nobody on camera for too long (a face too small or blurred to judge is somebody:
        # the picture's fault, which is said as such below, not an alert)
        reference_time = (
            watch.last_face if watch.last_face is not None else (recent[0].time if recent else now)
        )
        if verdict.verdict == "no_face" and now - reference_time >= s.no_face_after:
            return "alert", "no_face"
        matches = [v.verdict == "match" for v in recent[-3:]]
        if watch.state == "alert":
            # an alert stays until the face matches again: a worse picture does not clear it
            if len(matches) >= 2 and all(matches[-2:]):
                return "verified", "matches_again"
            return "alert", watch.reason
        if sum(matches) >= 2 and verdict.verdict == "match":
            return "verified", "matches"
        # the picture cannot support a verdict, twice running: say so, and why
        if len(recent) >= 2 and all(v.verdict == "low_quality" for v in recent[-2:]):
            return "low_quality", verdict.reason or "too_small"
        if watch.state == "low_quality" and verdict.verdict == "low_quality":
            return "low_quality", verdict.reason or watch.reason
        if watch.state == "verified" and verdict.verdict != "match":
            return "verified", watch.reason
        return watch.state, watch.reason

    def _tell_officers(self, watch: Watch, verdict: Verdict) -> None:
        message: dict[str, Any] = {
            "type": "verification",
            "participant": watch.participant,
            "state": watch.state,
            "reason": watch.reason,
            "verdict": verdict.verdict,
            "score": verdict.score,
            "threshold": self.spec.threshold,
            "liveness": verdict.liveness,
        }
        if verdict.reason:
            message["verdict_reason"] = verdict.reason
        if watch.state == "low_quality" and watch.reason in LOW_QUALITY:
            message["message"] = LOW_QUALITY[watch.reason]["message"]
            message["guidance"] = LOW_QUALITY[watch.reason]["officer"]
        for participant in list(watch.room.participants.values()):
            if participant.role in ("officer", "supervisor"):
                participant.send(message)
        fields = {k: v for k, v in message.items() if k != "type"}
        for listener in list(self.listeners):
            listener(watch.room.room_id, "verification", **fields)

    def _tell_party(self, watch: Watch) -> None:
        """What the party can do about her picture (never her scores): sent when the state
        becomes or leaves low_quality."""
        text = LOW_QUALITY.get(watch.reason) if watch.state == "low_quality" else None
        message: dict[str, Any] = {
            "type": "verification_guidance",
            "state": "low_quality" if text else "ok",
            "reason": watch.reason if text else "",
        }
        if text:
            message["message"], message["guidance"] = text["message"], text["party"]
        party = watch.room.participants.get(watch.participant)
        if party is not None:
            party.send(message)

    def status(self, room_id: str) -> list[dict[str, Any]]:
        out = []
        for (r, _), w in self._watches.items():
            if r != room_id:
                continue
            row: dict[str, Any] = {
                "participant": w.participant,
                "state": w.state,
                "reason": w.reason,
                "samples": w.samples,
                "skipped": w.skipped,
                "last": w.recent[-1].verdict if w.recent else None,
            }
            if w.state == "low_quality" and w.reason in LOW_QUALITY:
                row["message"] = LOW_QUALITY[w.reason]["message"]
                row["guidance"] = LOW_QUALITY[w.reason]["officer"]
            out.append(row)
        return out

    def watch_of(self, room_id: str, participant: str) -> Watch | None:
        return self._watches.get((room_id, participant))

    async def _log(self, entry_type: str, room_id: str, **fields: Any) -> None:
        if self.custody is None:
            return
        recording = None
        if self.recorder is not None:
            active = self.recorder.active.get(room_id)
            recording = active.recording_id if active is not None else None
        extra = {"recording": recording} if recording else {}
        await self.custody.append_async(entry_type, room=room_id, **extra, **fields)

    def on_track_unpublished(self, up: UpTrack, *, room: Room) -> None:
        key = (room.room_id, up.info.participant_id)
        watch = self._watches.get(key)
        if watch is not None and watch.track_id == up.info.track_id:
            self._stop_watch(key, CloseReason.UNPUBLISHED)

    def _stop_watch(self, key: tuple[str, str], reason: CloseReason) -> None:
        watch = self._watches.pop(key, None)
        if watch is None:
            return
        watch.subscriber.close(reason)

    def on_room_closed(self, room: Room) -> None:
        self._rooms.pop(room, None)
        for key in [k for k in self._watches if k[0] == room.room_id]:
            self._stop_watch(key, CloseReason.ROOM_CLOSED)

    @property
    def closed(self) -> bool:
        return self._closed

    def dump(self) -> dict[str, int]:
        """What is alive: every count is 0 once the verifier has closed."""
        return {"rooms": len(self._rooms), "watches": len(self._watches), "tasks": len(self._tasks)}

    async def close(self, reason: CloseReason = CloseReason.SHUTDOWN) -> None:
        """Stop every watch and let what was sampled be logged, in order. Idempotent.

        1. no new room, track or watch is taken on, and the rooms no longer report to us;
        2. every watch's subscriber closes with ``reason``: its frames end, its run finishes;
        3. the verdicts already taken are logged (their tasks are waited for, not cancelled);
        4. the inference threads stop, off the event loop; a sample in progress finishes, and
           its verdict is logged by a second wait like the one before;
        5. the task set closes: nothing of the verifier is left running.
        """
        if self._closed:
            await self._closed_event.wait()  # a second caller returns once the first is done
            return
        self._closed = True
        self.close_reason = reason
        logger.info("verifier closing: %s", reason.value)
        try:
            for room, hook in list(self._rooms.items()):
                room.remove_observer(hook)
            self._rooms.clear()
            for key in list(self._watches):
                self._stop_watch(key, reason)
            await self._tasks.drain()
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
            await self._tasks.drain()
        finally:
            await self._tasks.close()
            self._closed_event.set()
        logger.info("verifier closed: %s", reason.value)


@dataclass(eq=False)
class _RoomHook:
    """Adapts room observer callbacks (:class:`mediaserver.protocols.RoomObserver`) to the
    verifier."""

    verifier: Verifier
    room: Room

    def on_track_published(self, up: UpTrack) -> None:
        self.verifier.on_track_published(up, room=self.room)

    def on_track_unpublished(self, up: UpTrack) -> None:
        self.verifier.on_track_unpublished(up, room=self.room)

    def on_room_closed(self, reason: CloseReason) -> None:
        self.verifier.on_room_closed(self.room)

    def on_participant_joined(self, participant: Participant) -> None:
        pass

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        pass


__all__ = ["VERDICTS", "EnrollmentRejected", "Verifier", "VerifierSettings"]
