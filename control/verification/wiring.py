"""The verifier set up for a worker (a pinned model refused when it is not the pinned one),
bound to the cases' consent, and a party's reference forgotten when the case says so."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path

from aiohttp import web

from recorder.custody import CustodyLog
from recorder.recording import Recorder
from verifier.engine import ModelError, check_files, default_spec
from verifier.enrollment import EnrollmentStore, QualityRules
from verifier.service import Verifier, VerifierSettings

from ..appkeys import VERIFIER
from ..config import Config
from ..db import Database
from ..events import case_of_room

logger = logging.getLogger(__name__)


def bind_verifier_to_cases(
    verifier: Verifier, database: Database, *, education_interval: float | None = None
) -> None:
    """A session room's parties are compared with their case's references, with consent; an
    education session's viewers are sampled every ``education_interval`` seconds
    (``education.sample_interval``), other rooms' parties at ``verifier.sample_interval``."""

    def scope_of(room_id: str) -> str:
        case_id = case_of_room(room_id)
        return room_id if case_id is None else f"case-{case_id}"

    async def may_verify(room_id: str, participant_id: str) -> bool:
        case_id = case_of_room(room_id)
        if case_id is None:
            return True  # development rooms have no consent model
        if not participant_id.startswith("party-") or not participant_id[6:].isdigit():
            return False

        def consented(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT consent FROM parties WHERE id = ? AND case_id = ?",
                (int(participant_id[6:]), case_id),
            ).fetchone()
            return row is not None and bool(json.loads(row["consent"]).get("face"))

        return await database.run(consented)

    async def interval_of(room_id: str) -> float | None:
        if education_interval is None or case_of_room(room_id) is None:
            return None

        def is_education(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM sessions WHERE room = ? AND purpose = 'education' "
                "AND ended_at IS NULL",
                (room_id,),
            ).fetchone()
            return row is not None

        return education_interval if await database.run(is_education) else None

    verifier.scope_of = scope_of
    verifier.may_verify = may_verify
    verifier.interval_of = interval_of


async def forget_reference(
    app: web.Application, case_id: int, party_id: int, *, actor: str, reason: str
) -> None:
    """Delete a party's reference photo (declined face checks, case closed), if any."""
    if VERIFIER in app:
        await app[VERIFIER].forget(
            f"case-{case_id}", f"party-{party_id}", actor=actor, reason=reason, case=str(case_id)
        )


async def make_verifier(config: Config, custody: CustodyLog, recorder: Recorder) -> Verifier | None:
    # the engines' own modules load their runtimes: imported only for the engine chosen
    v = config.verifier
    if not v.enabled:
        return None
    try:
        if v.engine == "pack":
            from verifier.insightface_pack import pack_spec

            spec = pack_spec(
                v.pack_name,
                Path(v.pack_dir),
                v.pack_sha256,
                threshold=v.threshold,
                calibrated_on=v.calibrated_on,
                licence=v.pack_licence or "not stated: check the pack's terms",
            )
        else:
            spec = default_spec(
                threshold=v.threshold,
                calibrated_on=v.calibrated_on,
                min_face=v.min_live_face,
                runtime=v.facenet_runtime,
            )
        # refuse to start on a model that is not the pinned one (hashing is off the loop)
        await asyncio.to_thread(check_files, spec)
        if spec.runtime == "onnxruntime" and "facenet" in spec.files:
            from verifier.facenet import prepare
            from verifier.tf_graph import GraphError

            try:
                await prepare(Path(spec.files["facenet"]))
            except GraphError as exc:
                raise ModelError(f"{spec.name}: FaceNet: {exc}") from None
        liveness = None
        if v.liveness_model:
            from verifier.liveness import LivenessModel, LivenessSpec

            liveness = LivenessSpec(v.liveness_model, v.liveness_sha256, v.liveness_threshold)
            await asyncio.to_thread(LivenessModel, liveness)  # hash, load and shape checks
    except ModelError as exc:
        raise RuntimeError(f"verifier: {exc}") from None
    logger.warning(
        "verifier engine %s; licence: %s; threshold %.3f calibrated on %s",
        spec.name,
        spec.licence,
        spec.threshold,
        spec.calibrated_on,
    )
    settings = VerifierSettings(
        sample_interval=v.sample_interval,
        workers=v.workers,
        alert_after=v.alert_after,
        no_face_after=v.no_face_after,
        min_live_face=v.min_live_face,
        enrollment=QualityRules(min_face=v.min_enroll_face, min_sharpness=v.min_enroll_sharpness),
    )
    store = EnrollmentStore(config.data_dir / "faces", recorder.kek)
    if liveness is not None:
        logger.warning(
            "liveness model %s (sha256 %s), live at %.2f",
            liveness.path,
            liveness.sha256,
            liveness.threshold,
        )
    return Verifier(spec, settings, store, custody=custody, recorder=recorder, liveness=liveness)
