"""The attendance desk of a worker: feeds each education session's :class:`~.attendance.Ledger`
from its room (joins and leaves) and from the verifier (its listener interface, unchanged),
tells viewers and officers, and keeps the ledger in SQLite.

* ``Sfu.on_room_created`` -> :meth:`AttendanceDesk.watch_room`: a room whose session has the
  purpose ``education`` gets a ledger over the case's roster viewers (``edu_viewers``), with
  what was persisted before (a restart mid-session goes on); the desk is then an ordinary
  :class:`~mediaserver.protocols.RoomObserver` of it.
* ``Verifier.listeners`` -> :meth:`AttendanceDesk.on_room_event`: each ``verification``
  report with a verdict is one sample for the ledger.
* One ticker task a second: gaps, check windows, random checks; the ledger's viewers are saved
  (``edu_attendance``) when something changed, at most every ``SAVE_EVERY`` seconds while
  watch time runs, and at once when a viewer leaves or the room closes.

Flags (someone else in front of the camera) and every decided check go into the custody log
(``education.flag``, ``education.check``), with the officers told at once (a signalling
message ``attendance_flag`` and the event ``attendance_flag`` on ``/api/events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from common.tasks import TaskSet, TaskSetClosed
from mediaserver.protocols import CloseReason, Participant, Room, UpTrack
from recorder.custody import CustodyLog

from ..auth import now_iso
from ..db import Database
from ..events import EventHub, case_of_room
from .attendance import Ledger, Notice, Rules

logger = logging.getLogger(__name__)

TICK = 1.0
SAVE_EVERY = 5.0


@dataclass(frozen=True)
class EducationRoom:
    session_id: int
    case_id: int
    viewers: dict[str, int]  # participant -> party ID
    saved: list[dict[str, Any]]


def education_room(conn: sqlite3.Connection, room_id: str) -> EducationRoom | None:
    """The education session of a room, its roster viewers and their saved attendance."""
    session = conn.execute(
        "SELECT s.id, s.case_id FROM sessions s WHERE s.room = ? AND s.purpose = 'education' "
        "AND s.ended_at IS NULL",
        (room_id,),
    ).fetchone()
    if session is None:
        return None
    viewers = {
        f"party-{r['party_id']}": int(r["party_id"])
        for r in conn.execute(
            "SELECT party_id FROM edu_viewers WHERE case_id = ?", (session["case_id"],)
        )
    }
    saved = [
        json.loads(r["detail"])
        for r in conn.execute(
            "SELECT detail FROM edu_attendance WHERE session_id = ?", (session["id"],)
        )
    ]
    return EducationRoom(int(session["id"]), int(session["case_id"]), viewers, saved)


def save_attendance(
    conn: sqlite3.Connection, session_id: int, viewers: list[tuple[int, dict[str, Any]]]
) -> None:
    for party_id, v in viewers:
        conn.execute(
            "INSERT INTO edu_attendance (session_id, party_id, joined_at, left_at, "
            "watch_seconds, checks_passed, checks_failed, flags, state, detail, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, party_id) DO "
            "UPDATE SET joined_at = excluded.joined_at, left_at = excluded.left_at, "
            "watch_seconds = excluded.watch_seconds, checks_passed = excluded.checks_passed, "
            "checks_failed = excluded.checks_failed, flags = excluded.flags, "
            "state = excluded.state, detail = excluded.detail, updated_at = excluded.updated_at",
            (
                session_id,
                party_id,
                v["joined_at"],
                v["left_at"],
                v["watch_seconds"],
                v["checks_passed"],
                v["checks_failed"],
                len(v["flags"]),
                v["state"],
                json.dumps(v, sort_keys=True),
                now_iso(),
            ),
        )


@dataclass(eq=False)
class _Session:
    room: Room
    info: EducationRoom
    ledger: Ledger
    dirty: bool = False
    saved_at: float = field(default_factory=time.monotonic)
    closed: bool = False


class AttendanceDesk:
    def __init__(
        self,
        database: Database,
        rules: Rules,
        custody: CustodyLog | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._db = database
        self.rules = rules
        self._custody = custody
        self._events = events
        self._sessions: dict[str, _Session] = {}  # room ID -> session
        self._tasks = TaskSet("attendance", logger)
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    # -- rooms -------------------------------------------------------------------------------
    def watch_room(self, room: Room) -> None:
        """Sfu.on_room_created: a case room may be an education session's."""
        if self._closed or case_of_room(room.room_id) is None:
            return
        self._tasks.spawn(self._take_room(room), f"room {room.room_id}")

    async def _take_room(self, room: Room) -> None:
        info = await self._db.run(lambda c: education_room(c, room.room_id))
        if info is None or room.closed or self._closed or room.room_id in self._sessions:
            return
        ledger = Ledger(self.rules, list(info.viewers))
        for data in info.saved:
            ledger.restore(data)
        session = self._sessions[room.room_id] = _Session(room, info, ledger)
        room.add_observer(_Feed(self, session))
        now = time.time()
        for participant in list(room.participants.values()):  # joined while we looked
            self._dispatch(session, ledger.join(participant.participant_id, now))
        if self._ticker is None:
            self._ticker = self._tasks.spawn(self._tick(), "ticker")
        logger.info(
            "attendance of session %d (room %s): %d viewers",
            info.session_id,
            room.room_id,
            len(info.viewers),
        )

    def _joined(self, session: _Session, participant: Participant) -> None:
        self._dispatch(session, session.ledger.join(participant.participant_id, time.time()))

    def _left(self, session: _Session, participant: Participant) -> None:
        # a check still open is cancelled, not failed: nobody was there to be asked
        self._dispatch(session, session.ledger.leave(participant.participant_id, time.time()))
        self._save_soon(session)

    def _room_closed(self, session: _Session) -> None:
        if session.closed:
            return
        session.ledger.close(time.time())
        session.closed = True
        self._sessions.pop(session.room.room_id, None)
        self._save_soon(session)

    # -- the verifier ------------------------------------------------------------------------
    def on_room_event(self, room_id: str, event_type: str, **fields: Any) -> None:
        """A verifier listener: (room, type, fields) for each state report."""
        session = self._sessions.get(room_id)
        if session is None or event_type != "verification" or "verdict" not in fields:
            return
        participant = str(fields.get("participant", ""))
        viewer = session.ledger.viewers.get(participant)
        if viewer is None:
            return
        open_before = viewer.open_check
        notices = session.ledger.verdict(
            participant,
            time.time(),
            str(fields["verdict"]),
            str(fields.get("state", "")),
            str(fields.get("reason", "")),
            fields.get("score") if isinstance(fields.get("score"), float) else None,
        )
        if open_before is not None and open_before.result:
            self._log_decided(session, participant, viewer.checks.index(open_before))
        self._dispatch(session, notices)

    # -- telling -----------------------------------------------------------------------------
    def _dispatch(self, session: _Session, notices: list[Notice]) -> None:
        if notices:
            session.dirty = True
        for notice in notices:
            if notice.to == "viewer":
                viewer = session.room.participants.get(notice.participant)
                if viewer is not None:
                    viewer.send(notice.message)
                continue
            for participant in list(session.room.participants.values()):
                if participant.role in ("officer", "supervisor"):
                    participant.send(notice.message)
            fields = {k: v for k, v in notice.message.items() if k != "type"}
            if self._events is not None:
                self._events.publish(
                    session.info.case_id, "attendance_flag", session.room.room_id, **fields
                )
            self._custody_soon(
                session,
                "education.flag",
                participant=notice.participant,
                reason=fields["reason"],
                score=fields["score"],
                at=fields["at"],
            )

    def _log_decided(self, session: _Session, participant: str, index: int) -> None:
        viewer = session.ledger.viewers[participant]
        check = viewer.checks[index]
        if check.result in ("passed", "failed"):
            self._custody_soon(
                session, "education.check", participant=participant, **check.as_json()
            )

    def _custody_soon(self, session: _Session, entry_type: str, **fields: Any) -> None:
        if self._custody is None:
            return
        custody = self._custody
        with contextlib.suppress(TaskSetClosed):
            self._tasks.spawn(
                custody.append_async(
                    entry_type,
                    room=session.room.room_id,
                    case=str(session.info.case_id),
                    session=session.info.session_id,
                    actor="attendance",
                    **fields,
                ),
                entry_type,
            )

    # -- time and saving ---------------------------------------------------------------------
    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now, mono = time.time(), time.monotonic()
            for session in list(self._sessions.values()):
                try:
                    await self._tick_session(session, now, mono)
                except Exception:  # one session's fault (a locked database) stops no other
                    logger.exception("attendance of room %s", session.room.room_id)

    async def _tick_session(self, session: _Session, now: float, mono: float) -> None:
        ledger = session.ledger
        decided = {
            p: (len(v.checks) - 1 if v.open_check else None) for p, v in ledger.viewers.items()
        }
        self._dispatch(session, ledger.tick(now))
        for participant, index in decided.items():
            if index is not None and ledger.viewers[participant].checks[index].result:
                self._log_decided(session, participant, index)
        counting = any(v.counting for v in ledger.viewers.values())
        if (session.dirty or counting) and mono - session.saved_at >= SAVE_EVERY:
            await self._save(session)

    def _save_soon(self, session: _Session) -> None:
        with contextlib.suppress(TaskSetClosed):
            self._tasks.spawn(self._save(session), f"save {session.room.room_id}")

    async def _save(self, session: _Session) -> None:
        session.dirty, session.saved_at = False, time.monotonic()
        rows = [
            (session.info.viewers[p], v.as_json())
            for p, v in session.ledger.viewers.items()
            if v.joined_at is not None
        ]
        if rows:
            await self._db.run(lambda c: save_attendance(c, session.info.session_id, rows))

    # -- reading -----------------------------------------------------------------------------
    def live(self, room_id: str) -> dict[str, dict[str, Any]] | None:
        """The ledger of a room being watched now, by participant; None otherwise."""
        session = self._sessions.get(room_id)
        if session is None:
            return None
        return {p: v.as_json() for p, v in session.ledger.viewers.items()}

    async def flush(self, room_id: str) -> None:
        """Save a room's ledger now (before a record is made of it)."""
        session = self._sessions.get(room_id)
        if session is not None:
            session.ledger.tick(time.time())
            await self._save(session)

    def dump(self) -> dict[str, int]:
        return {"sessions": len(self._sessions), "tasks": len(self._tasks)}

    async def close(self) -> None:
        """Save every ledger as it stands and stop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        now = time.time()
        for session in list(self._sessions.values()):
            session.ledger.close(now)
            session.closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        if self._ticker is not None:
            self._ticker.cancel()
        await self._tasks.drain()
        for session in sessions:
            await self._save(session)
        await self._tasks.close()


@dataclass(eq=False)
class _Feed:
    """A room observer for one education session (joins, leaves, the room closing)."""

    desk: AttendanceDesk
    session: _Session

    def on_participant_joined(self, participant: Participant) -> None:
        self.desk._joined(self.session, participant)

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        self.desk._left(self.session, participant)

    def on_track_published(self, up: UpTrack) -> None:
        pass

    def on_track_unpublished(self, up: UpTrack) -> None:
        pass

    def on_room_closed(self, reason: CloseReason) -> None:
        self.desk._room_closed(self.session)
