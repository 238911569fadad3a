"""The identity check before a party joins: the session's state, the attempt's rules, the
officer's decisions.

A party of a case session joins only once one of three things is recorded for it in the
session (``prejoin_checks``; the admission rule is in ``control/access.py``):

* ``passed``: the guided face check on the party page matched the reference: at least
  ``needed`` (3) of the first ``judged`` (5) stills that could be judged matched. Stills that
  cannot be judged (no face, too small, too dark, several people) only bring guidance, up to
  ``max_samples`` (12) per attempt; an attempt that cannot pass any more fails with its
  reason, and the party may retry ``attempts`` (3) times in all;
* ``admitted``: an officer admitted the party by hand, with a reason;
* ``attested``: an officer checked an identity document the party showed to the camera (the
  route for a party who declined face processing) and recorded what it was.

Every still's verdict, every result and every officer's decision goes into the custody log
(like the verdicts during the call) and the audit trail, and to the officers' event stream
(``prejoin``). Stills are never stored: the latest one of each party is held in memory for the
officer to look at (the identity document) until the check is decided.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from recorder.custody import CustodyLog
from recorder.recording import Recorder
from verifier.prejoin import StillRejected, check_still, jpeg_size, reference_of
from verifier.service import LOW_QUALITY, Verifier

from ..access import audit
from ..auth import Officer, now_iso
from ..db import Database
from ..events import EventHub
from ..http.jsonio import PayloadTooLarge, json_error

# what lets a party of a case session join (the admission rule reads these)
ADMITTING = ("passed", "admitted", "attested")
DOCUMENT_TYPES = ("resident_id", "passport", "driving_licence", "residence_permit", "other")

# what the party sees after each still: Chinese first, then English
GUIDANCE = {
    "centre": "请把脸放在框内 / centre your face in the frame",
    "light": "光线太暗，请增加光线 / too dark: more light, please",
    "still": "请保持不动 / hold still",
    "look": "请保持不动，正对摄像头 / hold still and look at the camera",
    "closer": "请靠近摄像头，把脸放在框内 / come closer, your face in the frame",
    "blur": "请保持不动，并增加光线 / hold still, and more light",
    "alone": "核验时画面中只能有您一人 / only you may be in the picture for the check",
    "live": "请本人正对摄像头 / you yourself, facing the camera",
    "retry": "请点击“重试”再试一次 / press Retry to try again",
    "wait": "请等待民警人工核验您的身份 / please wait: the officer will check your identity",
    "document": "请将身份证件正面对准摄像头，等待民警核验 / hold the front of your identity "
    "document to the camera and wait for the officer",
    "passed": "身份核验通过，正在加入通话 / identity confirmed: joining the call",
}
# why an attempt gave up
FAILURES = {
    "different_face": "未能确认是您本人：人脸与登记的照片不一致 / we could not confirm it is you: "
    "the face does not match the photo on record",
    "no_face": "未检测到人脸：请把脸放在框内，并增加光线 / no face was found: centre your face "
    "in the frame and add light",
    "too_dark": "光线太暗，无法核验人脸 / too dark to check your face: add light",
    "low_quality": "画面无法用于核验（太小或太模糊）：请靠近摄像头、保持不动并增加光线 / the "
    "picture could not be checked (too small or blurred): come closer, hold "
    "still and add light",
    "multiple_faces": "画面中有多人：核验时只能有您一人 / several people in the picture: only "
    "you during the check",
    "liveness_failed": "未能确认是真人在摄像头前 / we could not confirm a live person in front "
    "of the camera",
}
REFUSED = {
    "no_face_consent": "您未同意人脸核验：请将身份证件对准摄像头，由民警核验 / you declined face "
    "checks: hold your identity document to the camera for the officer",
    "no_reference": "民警尚未登记您的证件照，请等待民警核验身份 / the officer has not enrolled "
    "your reference photo: wait for the officer to check your identity",
    "verifier_disabled": "本服务器未开启人脸核验，请等待民警核验身份 / face checks are off on "
    "this server: wait for the officer to check your identity",
    "already_admitted": "身份已核验，可以加入通话 / your identity is confirmed: you may join",
    "attempt_over": "本次核验已结束，请点击“重试” / this check is over: press Retry",
    "no_attempts_left": "核验次数已用完，请等待民警人工核验 / no tries left: wait for the "
    "officer to check your identity",
    "too_fast": "图像发送过快 / stills sent too fast",
}


@dataclass(frozen=True)
class Rules:
    needed: int = 3  # matching stills that pass an attempt
    judged: int = 5  # ... among the first this many stills that could be judged
    max_samples: int = 12  # stills per attempt, judged or not, before it gives up
    attempts: int = 3  # attempts per party and session
    min_interval: float = 0.3  # seconds between two stills of one party
    dark: float = 55.0  # mean luma under which "more light" is the guidance
    still_ttl: float = 600.0  # seconds an officer's view of the latest still is kept


@dataclass(frozen=True)
class PartyInSession:
    case_id: int
    party_id: int
    session_id: int
    room: str
    face_consent: bool

    @property
    def participant(self) -> str:
        return f"party-{self.party_id}"

    @property
    def actor(self) -> str:
        return f"party:{self.party_id}"


@dataclass
class Still:
    data: bytes
    sha256: str
    at: float  # time.time()
    monotonic: float


def _row(conn: sqlite3.Connection, session_id: int, participant: str) -> dict[str, Any] | None:
    row = conn.execute(
        "SELECT * FROM prejoin_checks WHERE session_id = ? AND participant = ?",
        (session_id, participant),
    ).fetchone()
    return None if row is None else dict(row)


def _ensure(
    conn: sqlite3.Connection, session_id: int, participant: str, route: str
) -> dict[str, Any]:
    row = _row(conn, session_id, participant)
    if row is None:
        conn.execute(
            "INSERT INTO prejoin_checks (session_id, participant, route, status, "
            "started_at) VALUES (?, ?, ?, 'checking', ?)",
            (session_id, participant, route, now_iso()),
        )
        row = _row(conn, session_id, participant)
        assert row is not None
    return row


def guidance_for(verdict: str, reason: str, light: float, rules: Rules) -> str:
    if verdict in ("no_face", "low_quality") and light < rules.dark:
        return GUIDANCE["light"]
    if verdict == "match":
        return GUIDANCE["still"]
    if verdict == "no_match":
        return GUIDANCE["look"]
    if verdict == "multiple_faces":
        return GUIDANCE["alone"]
    if verdict == "liveness_failed":
        return GUIDANCE["live"]
    if verdict == "low_quality":
        return GUIDANCE[
            "closer" if reason == "too_small" else "blur" if reason == "too_blurred" else "centre"
        ]
    return GUIDANCE["centre"]


def outcome(verdicts: list[dict[str, Any]], rules: Rules) -> tuple[str, str]:
    """('passed' | 'failed' | 'checking', reason) of an attempt's verdicts so far."""
    judged = [v for v in verdicts if v["verdict"] in ("match", "no_match", "liveness_failed")]
    first = judged[: rules.judged]
    matches = sum(v["verdict"] == "match" for v in first)
    if matches >= rules.needed:
        return "passed", "matches"
    misses = len(first) - matches
    if misses > rules.judged - rules.needed:  # the needed matches cannot come any more
        lively = sum(v["verdict"] == "liveness_failed" for v in first)
        return "failed", "liveness_failed" if lively * 2 > misses else "different_face"
    if len(verdicts) >= rules.max_samples:
        unjudged = Counter(
            "too_dark"
            if v.get("dark")
            else "low_quality"
            if v["verdict"] == "low_quality"
            else v["verdict"]
            for v in verdicts
            if v not in judged
        )
        reason = unjudged.most_common(1)[0][0] if unjudged else "different_face"
        return "failed", reason
    return "checking", ""


class PrejoinDesk:
    """Runs the pre-join checks of every session over the database and the verifier."""

    def __init__(
        self,
        db: Database,
        custody: CustodyLog,
        recorder: Recorder,
        events: EventHub,
        verifier: Verifier | None,
        rules: Rules | None = None,
        *,
        required: bool = True,
    ) -> None:
        self.db = db
        self.required = required  # auth.prejoin_check: whether joining waits for the check
        self.custody = custody
        self.recorder = recorder
        self.events = events
        self.verifier = verifier
        self.rules = rules or Rules()
        self._stills: dict[tuple[int, str], Still] = {}
        self._last: dict[tuple[int, str], float] = {}
        self._busy: set[tuple[int, str]] = set()

    # -- what the party sees ---------------------------------------------------------------
    def route_of(self, who: PartyInSession) -> str:
        if not who.face_consent:
            return "document"
        return "face" if self.verifier is not None else "officer"

    def public(self, row: dict[str, Any] | None, who: PartyInSession) -> dict[str, Any]:
        """The party's view: where it stands and what to do; never a score."""
        rules = self.rules
        route = row["route"] if row else self.route_of(who)
        status = row["status"] if row else "checking"
        attempt = row["attempt"] if row else 1
        out: dict[str, Any] = {
            "status": status,
            "route": route,
            "attempt": attempt,
            "attempts_left": max(0, rules.attempts - attempt),
            "needed": rules.needed,
            "of": rules.judged,
            "matches": row["matches"] if row else 0,
            "samples": row["samples"] if row else 0,
            "reason": row["reason"] if row else "",
            "admitted": status in ADMITTING,
            "required": self.required,
        }
        if status in ADMITTING:
            out["guidance"] = GUIDANCE["passed"]
        elif route == "document":
            out["guidance"] = GUIDANCE["document"]
        elif route == "officer":
            out["guidance"] = GUIDANCE["wait"]
        elif status == "failed":
            out["message"] = FAILURES.get(out["reason"], FAILURES["different_face"])
            out["guidance"] = GUIDANCE["retry" if out["attempts_left"] else "wait"]
        else:
            out["guidance"] = GUIDANCE["centre"]
        return out

    async def status(self, who: PartyInSession) -> dict[str, Any]:
        row = await self.db.run(lambda c: _row(c, who.session_id, who.participant))
        return self.public(row, who)

    # -- stills ----------------------------------------------------------------------------
    def _pace(self, key: tuple[int, str]) -> None:
        now = time.monotonic()
        if key in self._busy or now - self._last.get(key, -1e9) < self.rules.min_interval:
            raise json_error(TooFast, "too_fast", REFUSED["too_fast"])
        self._last[key] = now

    def _keep(self, key: tuple[int, str], data: bytes, sha256: str) -> None:
        now = time.monotonic()
        for old in [k for k, s in self._stills.items() if now - s.monotonic > self.rules.still_ttl]:
            del self._stills[old]
        self._stills[key] = Still(data, sha256, time.time(), now)

    def still(self, session_id: int, participant: str) -> Still | None:
        return self._stills.get((session_id, participant))

    async def show(self, who: PartyInSession, data: bytes) -> dict[str, Any]:
        """A still for the officer's eyes only (the identity document): checked to be a
        JPEG of a bounded size, not decoded, not face-processed, not stored."""
        key = (who.session_id, who.participant)
        self._pace(key)
        try:
            _check_header(data)
        except StillRejected as exc:
            raise _rejected(exc) from None
        row = await self.db.run(
            lambda c: _ensure(c, who.session_id, who.participant, self.route_of(who))
        )
        if row["status"] not in ADMITTING:
            first = key not in self._stills
            self._keep(key, data, hashlib.sha256(data).hexdigest())
            if first:  # the officer's console learns there is a picture to look at
                self.events.publish(
                    who.case_id,
                    "prejoin",
                    who.room,
                    participant=who.participant,
                    status=row["status"],
                    route=row["route"],
                    still=True,
                )
        return self.public(row, who)

    async def sample(self, who: PartyInSession, data: bytes) -> dict[str, Any]:
        """Judge one still of the face check; the party's view of the attempt after it."""
        key = (who.session_id, who.participant)
        if not who.face_consent:
            raise json_error(web.HTTPConflict, "no_face_consent", REFUSED["no_face_consent"])
        verifier = self.verifier
        if verifier is None:
            raise json_error(web.HTTPConflict, "verifier_disabled", REFUSED["verifier_disabled"])
        row = await self.db.run(lambda c: _ensure(c, who.session_id, who.participant, "face"))
        self._refuse_if_decided(row)
        self._pace(key)
        self._busy.add(key)
        try:
            reference = await reference_of(verifier, f"case-{who.case_id}", who.participant)
            if reference is None:
                raise json_error(web.HTTPConflict, "no_reference", REFUSED["no_reference"])
            try:
                judged = await check_still(
                    verifier,
                    room=who.room,
                    participant=who.participant,
                    reference=reference,
                    data=data,
                    attempt=row["attempt"],
                    case=str(who.case_id),
                )
            except StillRejected as exc:
                raise _rejected(exc) from None
            self._keep(key, data, judged.still_sha256)
            verdict = judged.verdict
            entry = {
                "verdict": verdict.verdict,
                "score": verdict.score,
                "reason": verdict.reason,
                "faces": verdict.faces,
                "brightness": judged.brightness,
                "dark": judged.brightness < self.rules.dark,
                "frame_sha256": verdict.frame_sha256,
                "still_sha256": judged.still_sha256,
                "custody_index": judged.custody_index,
                "time": verdict.time,
            }
            if verdict.verdict == "low_quality" and verdict.reason in LOW_QUALITY:
                entry["message"] = LOW_QUALITY[verdict.reason]["message"]
            attempt = row["attempt"]

            def record(conn: sqlite3.Connection) -> tuple[dict[str, Any], str, str]:
                current = _row(conn, who.session_id, who.participant)
                assert current is not None
                self._refuse_if_decided(current)
                if current["attempt"] != attempt:  # a retry began meanwhile: this one is old
                    return current, "", ""
                verdicts = [*json.loads(current["verdicts"]), entry]
                result, reason = outcome(verdicts, self.rules)
                matches = sum(v["verdict"] == "match" for v in verdicts)
                conn.execute(
                    "UPDATE prejoin_checks SET samples = ?, matches = ?, verdicts = ?, "
                    "status = ?, reason = ?, decided_at = ?, decided_by = ? WHERE id = ?",
                    (
                        len(verdicts),
                        matches,
                        json.dumps(verdicts),
                        result,
                        reason,
                        now_iso() if result != "checking" else None,
                        "verifier" if result != "checking" else None,
                        current["id"],
                    ),
                )
                if result != "checking":
                    audit(
                        conn,
                        "verifier",
                        f"prejoin.{result}",
                        f"party:{who.party_id}",
                        who.case_id,
                        reason,
                        session=who.session_id,
                        attempt=attempt,
                        samples=len(verdicts),
                        matches=matches,
                    )
                after = _row(conn, who.session_id, who.participant)
                assert after is not None
                return after, result, reason

            after, result, reason = await self.db.run(record)
        finally:
            self._busy.discard(key)
        self.events.publish(
            who.case_id,
            "prejoin",
            who.room,
            participant=who.participant,
            status=after["status"],
            route="face",
            attempt=after["attempt"],
            verdict=verdict.verdict,
            score=verdict.score,
            verdict_reason=verdict.reason,
            samples=after["samples"],
            matches=after["matches"],
            reason=after["reason"],
            **({"message": entry["message"]} if "message" in entry else {}),
        )
        if result in ("passed", "failed"):
            await self._log(
                "verification.prejoin",
                who.room,
                who.case_id,
                actor="verifier",
                participant=who.participant,
                result=result,
                reason=reason,
                attempt=after["attempt"],
                samples=after["samples"],
                matches=after["matches"],
                needed=self.rules.needed,
                of=self.rules.judged,
                model_id=verifier.model_id,
            )
            if result == "passed":
                self._stills.pop(key, None)
        out = self.public(after, who)
        out["verdict"] = verdict.verdict
        if verdict.reason:
            out["verdict_reason"] = verdict.reason
        if after["status"] == "checking":
            out["guidance"] = guidance_for(
                verdict.verdict, verdict.reason, judged.brightness, self.rules
            )
        return out

    async def retry(self, who: PartyInSession) -> dict[str, Any]:
        """A new attempt after a failed one, while attempts are left."""
        rules = self.rules

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            row = _ensure(conn, who.session_id, who.participant, self.route_of(who))
            if row["status"] in ADMITTING:
                raise json_error(web.HTTPConflict, "already_admitted", REFUSED["already_admitted"])
            if row["status"] == "checking":
                return row  # nothing to retry: the attempt goes on
            if row["attempt"] >= rules.attempts:
                raise json_error(web.HTTPConflict, "no_attempts_left", REFUSED["no_attempts_left"])
            conn.execute(
                "UPDATE prejoin_checks SET attempt = attempt + 1, status = 'checking', "
                "samples = 0, matches = 0, verdicts = '[]', reason = '', "
                "decided_at = NULL, decided_by = NULL WHERE id = ?",
                (row["id"],),
            )
            audit(
                conn,
                who.actor,
                "prejoin.retry",
                f"party:{who.party_id}",
                who.case_id,
                session=who.session_id,
                attempt=row["attempt"] + 1,
            )
            after = _row(conn, who.session_id, who.participant)
            assert after is not None
            return after

        row = await self.db.run(run)
        self.events.publish(
            who.case_id,
            "prejoin",
            who.room,
            participant=who.participant,
            status=row["status"],
            route=row["route"],
            attempt=row["attempt"],
        )
        return self.public(row, who)

    @staticmethod
    def _refuse_if_decided(row: dict[str, Any]) -> None:
        if row["status"] in ADMITTING:
            raise json_error(web.HTTPConflict, "already_admitted", REFUSED["already_admitted"])
        if row["status"] == "failed" and row["route"] == "face":
            raise json_error(web.HTTPConflict, "attempt_over", REFUSED["attempt_over"])

    # -- what the officer sees and decides ---------------------------------------------------
    async def session_view(self, case_id: int, session_id: int) -> list[dict[str, Any]]:
        """Every party of the case with its check in this session (verdicts included)."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            out = []
            for party in conn.execute(
                "SELECT id, name, role, consent FROM parties WHERE case_id = ? ORDER BY id",
                (case_id,),
            ):
                participant = f"party-{party['id']}"
                row = _row(conn, session_id, participant)
                consent = json.loads(party["consent"] or "{}")
                view: dict[str, Any] = {
                    "party_id": party["id"],
                    "participant": participant,
                    "name": party["name"],
                    "role": party["role"],
                    "face_consent": bool(consent.get("face")),
                    "status": row["status"] if row else "none",
                    "route": row["route"] if row else None,
                    "admitted": bool(row and row["status"] in ADMITTING),
                }
                if row is not None:
                    view.update(
                        attempt=row["attempt"],
                        samples=row["samples"],
                        matches=row["matches"],
                        reason=row["reason"],
                        verdicts=json.loads(row["verdicts"]),
                        started_at=row["started_at"],
                        decided_at=row["decided_at"],
                        decided_by=row["decided_by"],
                        attestation=json.loads(row["attestation"]) if row["attestation"] else None,
                    )
                    if row["status"] == "failed":
                        view["message"] = FAILURES.get(row["reason"], "")
                still = self._stills.get((session_id, participant))
                view["still"] = (
                    None if still is None else {"sha256": still.sha256, "time": still.at}
                )
                out.append(view)
            return out

        return await self.db.run(run)

    async def admit(
        self, officer: Officer, case_id: int, session_id: int, room: str, party_id: int, reason: str
    ) -> dict[str, Any]:
        """The officer admits a party by hand (with a reason): the join is allowed."""
        participant = f"party-{party_id}"

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            row = _ensure(conn, session_id, participant, "officer")
            if row["status"] in ADMITTING:
                raise json_error(
                    web.HTTPConflict,
                    "already_admitted",
                    "该当事人已获准入会 / this party is admitted already",
                )
            conn.execute(
                "UPDATE prejoin_checks SET status = 'admitted', reason = ?, "
                "decided_at = ?, decided_by = ? WHERE id = ?",
                (reason, now_iso(), officer.actor, row["id"]),
            )
            audit(
                conn,
                officer.actor,
                "prejoin.admitted",
                f"party:{party_id}",
                case_id,
                reason,
                session=session_id,
                before=row["status"],
                attempt=row["attempt"],
            )
            after = _row(conn, session_id, participant)
            assert after is not None
            return after

        row = await self.db.run(run)
        entry = await self._log(
            "verification.manual_admission",
            room,
            case_id,
            actor=officer.actor,
            reason=reason,
            participant=participant,
            session=session_id,
            check_status_before=row["route"],
            attempt=row["attempt"],
            samples=row["samples"],
            matches=row["matches"],
        )
        self._stills.pop((session_id, participant), None)
        self.events.publish(
            case_id,
            "prejoin",
            room,
            participant=participant,
            status="admitted",
            route=row["route"],
            by=officer.actor,
            reason=reason,
        )
        return {"participant": participant, "status": "admitted", "custody_index": entry["index"]}

    async def attest(
        self,
        officer: Officer,
        case_id: int,
        session_id: int,
        room: str,
        party_id: int,
        document_type: str,
        last_digits: str,
        note: str,
    ) -> dict[str, Any]:
        """The officer checked an identity document shown to the camera: recorded as the
        identity check of a party who declined face processing, and it admits the party."""
        participant = f"party-{party_id}"
        still = self._stills.get((session_id, participant))
        attestation = {
            "by": officer.actor,
            "at": now_iso(),
            "document_type": document_type,
            "document_last_digits": last_digits,
            "note": note,
            "still_sha256": still.sha256 if still else None,
        }

        def run(conn: sqlite3.Connection) -> dict[str, Any]:
            row = _ensure(conn, session_id, participant, "document")
            if row["status"] in ADMITTING:
                raise json_error(
                    web.HTTPConflict,
                    "already_admitted",
                    "该当事人已获准入会 / this party is admitted already",
                )
            conn.execute(
                "UPDATE prejoin_checks SET status = 'attested', decided_at = ?, "
                "decided_by = ?, attestation = ? WHERE id = ?",
                (attestation["at"], officer.actor, json.dumps(attestation), row["id"]),
            )
            audit(
                conn,
                officer.actor,
                "prejoin.attested",
                f"party:{party_id}",
                case_id,
                note,
                session=session_id,
                document_type=document_type,
                document_last_digits=last_digits,
            )
            after = _row(conn, session_id, participant)
            assert after is not None
            return after

        row = await self.db.run(run)
        entry = await self._log(
            "verification.id_attested",
            room,
            case_id,
            actor=officer.actor,
            participant=participant,
            session=session_id,
            route=row["route"],
            **{k: v for k, v in attestation.items() if k != "by"},
        )
        self._stills.pop((session_id, participant), None)
        self.events.publish(
            case_id,
            "prejoin",
            room,
            participant=participant,
            status="attested",
            route=row["route"],
            by=officer.actor,
            document_type=document_type,
        )
        return {
            "participant": participant,
            "status": "attested",
            "attestation": attestation,
            "custody_index": entry["index"],
        }

    async def _log(self, entry_type: str, room: str, case_id: int, **fields: Any) -> dict[str, Any]:
        active = self.recorder.active.get(room)
        extra = {"recording": active.recording_id} if active is not None else {}
        return await self.custody.append_async(
            entry_type, room=room, case=str(case_id), **extra, **fields
        )


class TooFast(web.HTTPClientError):
    status_code = 429

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(headers={"Retry-After": "1"}, **kwargs)


def _check_header(data: bytes) -> None:
    from verifier.prejoin import MAX_STILL_BYTES, MAX_STILL_PIXELS

    if not data:
        raise StillRejected("empty", "图像为空 / the still is empty")
    if len(data) > MAX_STILL_BYTES:
        raise StillRejected(
            "too_large",
            f"图像超过 {MAX_STILL_BYTES} 字节 / the still exceeds {MAX_STILL_BYTES} bytes",
        )
    width, height = jpeg_size(data)
    if width * height > MAX_STILL_PIXELS:
        raise StillRejected(
            "bad_size",
            f"图像为 {width}x{height} 像素，过大 / the still is {width}x{height}: too many pixels",
        )


def _rejected(exc: StillRejected) -> web.HTTPException:
    cls: type[web.HTTPException] = (
        PayloadTooLarge if exc.code == "too_large" else web.HTTPUnprocessableEntity
    )
    return json_error(cls, exc.code, exc.message)
