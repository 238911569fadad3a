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
import functools
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from common.tasks import TaskSet, TaskSetClosed
from mediaserver.participant import SfuParticipant, SignallingError
from mediaserver.protocols import CloseReason, Participant, Room, UpTrack
from mediaserver.room import SfuRoom
from recorder.custody import CustodyLog

from .. import i18n
from ..access import audit
from ..auth import now_iso
from ..db import Database
from ..events import EventHub, case_of_room
from . import chat, quiz
from .attendance import Ledger, Notice, Rules
from .chat import RateLimit
from .floor import Floor, FloorRefused
from .quiz import Quiz

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
            str(fields.get("verdict_reason", "")),
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


# -- the live session: raised hands and the floor, questions, the quiz --------------------------
@dataclass(frozen=True)
class LiveInfo:
    session_id: int
    case_id: int
    viewers: dict[str, int]  # participant -> party ID (the case's roster viewers)
    speakers: frozenset[str]  # viewers marked as guest speakers: they publish freely


def live_info(conn: sqlite3.Connection, session_id: int) -> LiveInfo | None:
    session = conn.execute(
        "SELECT id, case_id FROM sessions WHERE id = ? AND purpose = 'education' "
        "AND ended_at IS NULL",
        (session_id,),
    ).fetchone()
    if session is None:
        return None
    viewers: dict[str, int] = {}
    speakers = set()
    for r in conn.execute(
        "SELECT party_id, speaker FROM edu_viewers WHERE case_id = ?", (session["case_id"],)
    ):
        participant = f"party-{r['party_id']}"
        viewers[participant] = int(r["party_id"])
        if r["speaker"]:
            speakers.add(participant)
    return LiveInfo(int(session["id"]), int(session["case_id"]), viewers, frozenset(speakers))


def load_floor(conn: sqlite3.Connection, session_id: int) -> Any:
    """The hands and floor saved for a session (``Floor.as_json``), or None."""
    row = conn.execute("SELECT state FROM edu_floor WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        return None
    try:
        return json.loads(row["state"])
    except ValueError:
        return None


def save_floor(conn: sqlite3.Connection, *, session_id: int, state: str) -> None:
    conn.execute(
        "INSERT INTO edu_floor (session_id, state, saved_at) VALUES (?, ?, ?) "
        "ON CONFLICT (session_id) DO UPDATE SET state = excluded.state, "
        "saved_at = excluded.saved_at",
        (session_id, state, now_iso()),
    )


# after a restart, how long a restored floor holder or raised hand waits for its viewer to
# come back into the room (the pages reconnect on their own) before it is let go
RETURN_WAIT = 90.0
SAVE_TIMER = "\0save"  # a floor save tried again
RETURN_TIMER = "\0return"  # its timer's key among a room's floor timers (not a participant)


def _refused(code: str, **params: Any) -> SignallingError:
    return SignallingError(code, i18n.both(f"education.{code}", **params))


@dataclass(eq=False)
class _Live:
    room: Room
    info: LiveInfo
    floor: Floor
    limit: RateLimit = field(default_factory=RateLimit)
    timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    closed: bool = False
    dirty: bool = False  # the floor changed since it was last saved
    saving: bool = False  # a task is saving it

    def officers(self) -> list[Participant]:
        return [p for p in self.room.participants.values() if p.role in OFFICER_ROLES]

    def tell_officers(self, message: dict[str, Any]) -> None:
        for participant in self.officers():
            participant.send(message)

    def tell_all(self, message: dict[str, Any]) -> None:
        for participant in list(self.room.participants.values()):
            participant.send(message)

    def restricted(self, participant: str) -> bool:
        """A viewer who publishes only while holding the floor."""
        return participant in self.info.viewers and participant not in self.info.speakers


OFFICER_ROLES = ("officer", "supervisor")


class LiveDesk:
    """The live side of the education sessions of a worker.

    The signalling session calls :meth:`admit` for every join (before the participant hears
    ``joined``, so before it can publish): a roster viewer of an education session who does not
    hold the floor is *held* (its tracks reach the verifier and the recorder, no participant).
    Viewers' ``hand``, ``question`` and ``quiz_answer`` messages come through :meth:`handle`;
    officers act over HTTP (:mod:`.api`) through :meth:`give`, :meth:`take`, :meth:`post`,
    :meth:`quiz_set`. Floor changes are custody entries (``education.floor``) and audit rows.
    """

    def __init__(
        self,
        database: Database,
        *,
        floor_holders: int = 1,
        floor_seconds: float = 0.0,
        custody: CustodyLog | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._db = database
        self.floor_holders = floor_holders
        self.floor_seconds = floor_seconds
        self._custody = custody
        self._events = events
        self._rooms: dict[str, _Live] = {}
        self._tasks = TaskSet("education live", logger)
        self._closed = False

    # -- joins -------------------------------------------------------------------------------
    async def admit(self, participant: SfuParticipant, session_id: int | None) -> None:
        if session_id is None or self._closed:
            return
        live = self._rooms.get(participant.room.room_id)
        if live is None or live.info.session_id != session_id:
            info, saved = await self._db.run(
                lambda c: (live_info(c, session_id), load_floor(c, session_id))
            )
            if info is None:
                return
            live = self._rooms.get(participant.room.room_id)
            if live is None or live.closed:
                room = participant.room
                assert isinstance(room, SfuRoom)
                if room.closed:
                    return
                live = self._rooms[room.room_id] = _Live(
                    room, info, Floor(self.floor_holders, self.floor_seconds)
                )
                room.add_observer(_LiveFeed(self, live))
                if saved is not None:
                    self._restore(live, saved)
        pid = participant.participant_id
        participant.set_held(live.restricted(pid) and not live.floor.holds(pid))

    async def welcome(self, participant: SfuParticipant) -> None:
        """After ``joined``: who holds the floor, the hands (officers), the quiz (viewers), and
        what officers have said so far."""
        live = self._rooms.get(participant.room.room_id)
        if live is None:
            return
        pid = participant.participant_id
        participant.send(self._floor_message(live, "state", None))
        if participant.role in OFFICER_ROLES:
            participant.send(self._hands_message(live))
        elif live.restricted(pid):  # a viewer reconnecting finds its hand as it left it
            participant.send(
                {"type": "hand", "raised": any(h.participant == pid for h in live.floor.hands)}
            )
        session_id = live.info.session_id
        party = live.info.viewers.get(pid)

        def read(c: sqlite3.Connection) -> tuple[list[dict[str, Any]], Quiz | None, bool]:
            said = [
                m
                for m in chat.session_messages(c, session_id)
                if m["kind"] != "question"
                or participant.role in OFFICER_ROLES
                or m["participant"] == pid
            ]
            current = quiz.session_quiz(c, session_id)
            done = party is not None and quiz.answered(c, session_id, party)
            return said, current, done

        said, current, done = await self._db.run(read)
        participant.send({"type": "questions", "messages": said[-100:]})
        if current is not None and party is not None and not done:
            participant.send({"type": "quiz", "quiz": current.public()})

    # -- viewers' messages -------------------------------------------------------------------
    async def handle(self, participant: SfuParticipant, kind: str, message: dict[str, Any]) -> None:
        live = self._rooms.get(participant.room.room_id)
        if live is None:
            raise _refused("not_education")
        pid = participant.participant_id
        if kind == "hand":
            raised = message.get("raised")
            if not isinstance(raised, bool):
                raise _refused("hand_raised")
            if participant.role in OFFICER_ROLES or not live.restricted(pid):
                raise _refused("hand_not_needed")
            if raised:
                changed = live.floor.raise_hand(pid, participant.name, time.time())
            else:
                changed = live.floor.lower_hand(pid)
            participant.send(
                {"type": "hand", "raised": any(h.participant == pid for h in live.floor.hands)}
            )
            if changed:
                live.tell_officers(self._hands_message(live))
                self._keep(live)
        elif kind == "question":
            if participant.role in OFFICER_ROLES:
                raise _refused("question_officer")
            try:
                text = chat.clean_text(message.get("text"))
                live.limit.take(pid, time.monotonic())
            except chat.ChatRefused as exc:
                raise _refused(exc.code, **exc.params) from None
            party = live.info.viewers.get(pid)
            stored = await self._db.run(
                lambda c: chat.add_message(
                    c,
                    live.info.session_id,
                    "question",
                    pid,
                    participant.name,
                    text,
                    party_id=party,
                )
            )
            note = {"type": "question", "message": stored}
            participant.send(note)
            live.tell_officers(note)
        elif kind == "quiz_answer":
            party = live.info.viewers.get(pid)
            if party is None:
                raise _refused("quiz_viewers_only")
            try:
                result = await self._db.run(
                    lambda c: quiz.answer_quiz(
                        c, live.info.session_id, message.get("quiz"), party, message.get("answers")
                    )
                )
            except quiz.QuizRefused as exc:
                raise _refused(exc.code, **exc.params) from None
            participant.send({"type": "quiz_result", **result})
            live.tell_officers(
                {"type": "quiz_answered", "participant": pid, "name": participant.name, **result}
            )
            self._custody_soon(live, "education.quiz_answer", participant=pid, **result)

    # -- kept across a restart -----------------------------------------------------------------
    def _restore(self, live: _Live, saved: Any) -> None:
        """The hands and floor the session had when this worker's predecessor stopped: holders
        keep the rest of their time; whoever is not back within ``RETURN_WAIT`` is let go."""
        now = time.time()
        live.floor.restore(saved, now)
        loop = asyncio.get_running_loop()
        for holder in live.floor.holders.values():
            if holder.until is not None:
                live.timers[holder.participant] = loop.call_later(
                    max(0.0, holder.until - now), self._expire, live, holder.participant
                )
        if live.floor.holders or live.floor.hands:
            live.timers[RETURN_TIMER] = loop.call_later(RETURN_WAIT, self._not_back, live)

    def _not_back(self, live: _Live) -> None:
        live.timers.pop(RETURN_TIMER, None)
        if live.closed:
            return
        present = live.room.participants
        for holder in list(live.floor.holders.values()):
            if holder.participant not in present:
                live.floor.left(holder.participant)
                self._ended(live, holder.participant, "left", "server")
        gone = [h.participant for h in live.floor.hands if h.participant not in present]
        for participant in gone:
            live.floor.lower_hand(participant)
        if gone:
            live.tell_officers(self._hands_message(live))
            self._keep(live)

    def _keep(self, live: _Live) -> None:
        """Save the session's hands and floor soon (one writer per room, the latest state)."""
        live.dirty = True
        if live.saving:
            return
        live.saving = True
        try:
            self._tasks.spawn(self._write_floor(live), "education floor")
        except TaskSetClosed:
            live.saving = False

    async def _write_floor(self, live: _Live) -> None:
        try:
            while live.dirty:
                live.dirty = False
                state = json.dumps(live.floor.as_json(), ensure_ascii=False)
                try:
                    await self._db.run(
                        functools.partial(save_floor, session_id=live.info.session_id, state=state)
                    )
                except Exception:
                    # (a busy database): the state is tried again shortly, not left unsaved
                    # until the next change
                    logger.warning("education floor of room %s not saved", live.room.room_id)
                    if not live.closed and not self._closed:
                        live.timers[SAVE_TIMER] = asyncio.get_running_loop().call_later(
                            1.0, self._keep, live
                        )
                    return
        finally:
            live.saving = False

    # -- officers ----------------------------------------------------------------------------
    def state(self, room_id: str) -> dict[str, Any] | None:
        live = self._rooms.get(room_id)
        return None if live is None else live.floor.as_json()

    def _live(self, room_id: str | None) -> _Live:
        live = self._rooms.get(room_id or "")
        if live is None:
            raise FloorRefused("not_live")
        return live

    async def give(
        self, room_id: str | None, participant: str, by: str, seconds: float | None
    ) -> dict[str, Any]:
        live = self._live(room_id)
        who = live.room.participants.get(participant)
        if who is None or participant not in live.info.viewers:
            raise FloorRefused("not_in_room")
        if not live.restricted(participant):
            raise FloorRefused("floor_not_needed")
        holder = live.floor.give(participant, who.name, time.time(), by, seconds)
        if isinstance(who, SfuParticipant):
            who.set_held(False)
        if holder.until is not None:
            live.timers[participant] = asyncio.get_running_loop().call_later(
                max(0.0, holder.until - time.time()), self._expire, live, participant
            )
        self._floor_changed(live, "given", participant, by)
        return live.floor.as_json()

    async def take(self, room_id: str | None, participant: str, by: str) -> dict[str, Any]:
        live = self._live(room_id)
        if live.floor.take(participant) is None:
            raise FloorRefused("floor_not_held")
        self._ended(live, participant, "taken", by)
        return live.floor.as_json()

    def _expire(self, live: _Live, participant: str) -> None:
        live.timers.pop(participant, None)
        if live.closed:
            return
        for holder in live.floor.expired(time.time() + 0.001):
            self._ended(live, holder.participant, "expired", "server")

    def _ended(self, live: _Live, participant: str, event: str, by: str) -> None:
        timer = live.timers.pop(participant, None)
        if timer is not None:
            timer.cancel()
        who = live.room.participants.get(participant)
        if isinstance(who, SfuParticipant) and live.restricted(participant):
            who.set_held(True)
        self._floor_changed(live, event, participant, by)

    def _floor_changed(self, live: _Live, event: str, participant: str, by: str) -> None:
        live.tell_all(self._floor_message(live, event, participant))
        live.tell_officers(self._hands_message(live))
        self._keep(live)
        if self._events is not None:
            self._events.publish(
                live.info.case_id,
                "floor",
                live.room.room_id,
                event=event,
                participant=participant,
            )
        self._custody_soon(live, "education.floor", participant=participant, event=event, by=by)
        if by == "server":  # the officers' own acts are audited by the API with their login
            self._audit_soon(live, f"education.floor_{event}", participant, by)

    def _floor_message(self, live: _Live, event: str, participant: str | None) -> dict[str, Any]:
        state = live.floor.as_json()
        return {
            "type": "floor",
            "event": event,
            "participant": participant,
            "holders": state["holders"],
            "max_holders": state["max_holders"],
            "seconds": state["seconds"],
        }

    def _hands_message(self, live: _Live) -> dict[str, Any]:
        return {"type": "hands", "hands": [h.as_json() for h in live.floor.hands]}

    def tell(self, room_id: str | None, message: dict[str, Any]) -> None:
        """An officer's answer or announcement (already stored) to everyone in the room."""
        live = self._rooms.get(room_id or "")
        if live is not None:
            live.tell_all(message)

    def quiz_set(self, room_id: str | None, current: Quiz) -> None:
        """The session's quiz to its viewers in the room (answers are checked when sent)."""
        live = self._rooms.get(room_id or "")
        if live is None:
            return
        for pid, participant in list(live.room.participants.items()):
            if pid in live.info.viewers:
                participant.send({"type": "quiz", "quiz": current.public()})

    def set_speaker(self, room_id: str | None, participant: str, speaker: bool) -> None:
        live = self._rooms.get(room_id or "")
        if live is None:
            return
        speakers = set(live.info.speakers)
        (speakers.add if speaker else speakers.discard)(participant)
        live.info = LiveInfo(
            live.info.session_id, live.info.case_id, live.info.viewers, frozenset(speakers)
        )
        who = live.room.participants.get(participant)
        if isinstance(who, SfuParticipant):
            who.set_held(live.restricted(participant) and not live.floor.holds(participant))

    # -- room events -------------------------------------------------------------------------
    def _left(self, live: _Live, participant: Participant, reason: CloseReason) -> None:
        pid = participant.participant_id
        if reason == CloseReason.DUPLICATE:
            return  # the same viewer reconnecting keeps its hand and its floor
        if self._closed or reason in (CloseReason.SHUTDOWN, CloseReason.ROOM_CLOSED):
            return  # the server stopping: the saved hands and floor wait for its successor
        lowered = any(h.participant == pid for h in live.floor.hands)
        if live.floor.left(pid) is not None:
            self._ended(live, pid, "left", "server")
        elif lowered:
            live.tell_officers(self._hands_message(live))
            self._keep(live)

    def _room_closed(self, live: _Live) -> None:
        live.closed = True
        for timer in live.timers.values():
            timer.cancel()
        live.timers.clear()
        if self._rooms.get(live.room.room_id) is live:
            del self._rooms[live.room.room_id]

    def _custody_soon(self, live: _Live, entry_type: str, **fields: Any) -> None:
        if self._custody is None:
            return
        custody = self._custody
        with contextlib.suppress(TaskSetClosed):
            self._tasks.spawn(
                custody.append_async(
                    entry_type,
                    room=live.room.room_id,
                    case=str(live.info.case_id),
                    session=live.info.session_id,
                    actor="education",
                    **fields,
                ),
                entry_type,
            )

    def _audit_soon(self, live: _Live, action: str, participant: str, by: str) -> None:
        case_id = live.info.case_id

        async def write() -> None:
            await self._db.run(
                lambda c: audit(c, by, action, f"participant:{participant}", case_id)
            )

        with contextlib.suppress(TaskSetClosed):
            self._tasks.spawn(write(), action)

    def dump(self) -> dict[str, int]:
        return {"rooms": len(self._rooms), "tasks": len(self._tasks)}

    async def close(self) -> None:
        """Stop: timers cancelled, custody entries on their way written. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for live in list(self._rooms.values()):
            self._room_closed(live)
        await self._tasks.drain()
        await self._tasks.close()


@dataclass(eq=False)
class _LiveFeed:
    desk: LiveDesk
    live: _Live

    def on_participant_joined(self, participant: Participant) -> None:
        pass

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        self.desk._left(self.live, participant, reason)

    def on_track_published(self, up: UpTrack) -> None:
        pass

    def on_track_unpublished(self, up: UpTrack) -> None:
        pass

    def on_room_closed(self, reason: CloseReason) -> None:
        self.desk._room_closed(self.live)
