"""The officer's event stream: ``GET /api/events`` (WebSocket).

The first message authenticates (``{"type": "auth", "token": <login token>}``; a browser cannot
put a header on a WebSocket, and a token in the URL ends up in logs). The stream then carries,
for every case the officer may touch (``{"type": "subscribe", "case": N}`` narrows it to one):

* ``participant_joined`` / ``participant_left`` / ``room_closed`` of each session's room;
* ``verification``: the verifier's state for a party (verifying, verified, alert, ...) when it
  changes: the verifier reports its state with every sample (about once a second), and a
  repeat of the same state and reason says nothing new, so the hub passes on only the first of
  a run (counted in ``EventHub.repeats_dropped``; the session's ``/verification`` answers
  the current state, scores included, to a console that connects later);
* ``prejoin``: a party's identity check before joining: each still's verdict, the result, the
  officer's manual admission or document attestation (control/verification/prejoin.py);
* ``recording``: started / sealed (``part`` when a session's room opened again);
* ``recording_failure``: a track's recording failed (``recording``, ``track``, ``participant``,
  ``kind``, ``error``, ``recorded_frames``), sent at once; the recording will seal incomplete;
* ``session``: opened / ended; ``display``: an evidence item shown / taken off.
* ``attendance_flag``: someone else in front of an education viewer's camera
  (control/education/desk.py: ``participant``, ``reason``, ``score``, ``at``, ``message``).

Each event has ``type``, ``case``, ``room`` and ``time``. Every consumer (the console, a
supervisor's screen, a script) gets the same changes-only stream, which is why the repeats are
dropped here at the source rather than in each page. A slow reader loses the oldest events,
not the server's memory: the queue is bounded and a ``dropped`` event says how many went.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from common.tasks import TaskSet
from mediaserver.protocols import CloseReason, Participant, Room, UpTrack
from recorder.custody import utc_now

from . import i18n
from .access import id_value
from .appkeys import DB
from .auth import Officer, officer_for
from .db import Database
from .http.jsonio import loads

logger = logging.getLogger(__name__)

QUEUE = 512
AUTH_TIMEOUT = 10.0
CLOSE_AUTH = 4001
_CASE_ROOM = re.compile(r"^case-(\d+)-[0-9a-f]+$")

# Event types reported again and again with nothing new: the fields that make one a change.
# Everything else (a score, a liveness value) moves with every sample and is not a change.
CHANGES_ONLY: dict[str, tuple[str, ...]] = {"verification": ("state", "reason")}


def _error(request: web.Request, code: str, *, key: str) -> dict[str, str]:
    """An error on the stream: its code and the catalog's words of ``key`` in the language of
    the upgrade request's ``Accept-Language`` (zh-CN by default)."""
    lang = i18n.negotiate(request.headers.get("Accept-Language"))
    return {"type": "error", "error": code, "message": i18n.text(key, lang)}


def case_of_room(room_id: str) -> int | None:
    """Session rooms are named ``case-<case id>-<random>`` (see ``cases_api.post_session``)."""
    match = _CASE_ROOM.match(room_id)
    return int(match.group(1)) if match else None


def case_brigade(conn: sqlite3.Connection, case_id: int) -> str | None:
    """The brigade of a case, None when there is no such case (the SQL of the stream)."""
    row = conn.execute("SELECT brigade FROM cases WHERE id = ?", (case_id,)).fetchone()
    return None if row is None else str(row["brigade"])


@dataclass(eq=False)
class _Listener:
    officer: Officer
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    case: int | None = None
    dropped: int = 0
    ws: web.WebSocketResponse | None = None  # closed when the account is disabled or changed

    def offer(self, event: dict[str, Any]) -> None:
        while True:
            try:
                self.queue.put_nowait(event)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1


class EventHub:
    """Fans events out to officers' streams, filtered by what each may touch."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._listeners: set[_Listener] = set()
        self._brigades: dict[int, str] = {}  # case ID -> brigade
        self._tasks = TaskSet("event hub", logger)  # looking up a case's brigade
        # (room, type, participant) -> the last passed value of CHANGES_ONLY's fields; forgotten
        # when the participant leaves or the room closes, so it holds live participants only
        self._last: dict[tuple[str, str, str], tuple[Any, ...]] = {}
        self.repeats_dropped = 0

    async def end_officer(self, officer_id: int) -> int:
        """Close the event streams of an account that was disabled or changed (accounts/api.py);
        how many there were."""
        ended = [x.ws for x in self._listeners if x.officer.id == officer_id and x.ws is not None]
        for ws in ended:
            await ws.close(code=CLOSE_AUTH, message=b"account changed")
        return len(ended)

    def know_case(self, case_id: int, brigade: str) -> None:
        self._brigades[case_id] = brigade

    def publish(self, case_id: int | None, event_type: str, room: str = "", **fields: Any) -> None:
        if case_id is None or self._repeat(room, event_type, fields):
            return
        brigade = self._brigades.get(case_id)
        event = {"type": event_type, "case": case_id, "room": room, "time": utc_now(), **fields}
        for listener in list(self._listeners):
            if brigade is None or not listener.officer.may_touch(brigade):
                continue
            if listener.case is not None and listener.case != case_id:
                continue
            listener.offer(event)

    def _repeat(self, room: str, event_type: str, fields: dict[str, Any]) -> bool:
        """Whether this event only repeats the last one of its kind (and remember it if not)."""
        if event_type == "participant_left":
            gone = str(fields.get("participant", ""))
            for key in [k for k in self._last if k[0] == room and k[2] == gone]:
                del self._last[key]
        elif event_type == "room_closed":
            for key in [k for k in self._last if k[0] == room]:
                del self._last[key]
        significant = CHANGES_ONLY.get(event_type)
        if significant is None:
            return False
        key = (room, event_type, str(fields.get("participant", "")))
        value = tuple(fields.get(name) for name in significant)
        if self._last.get(key) == value:
            self.repeats_dropped += 1
            return True
        self._last[key] = value
        return False

    # -- feeds -------------------------------------------------------------------------------
    def watch_room(self, room: Room) -> None:
        """Sfu.on_room_created: a session room reports its joins and leaves."""
        case_id = case_of_room(room.room_id)
        if case_id is None:
            return
        room.add_observer(_RoomFeed(self, room))
        if case_id not in self._brigades and not self._tasks.closed:  # opened before a restart
            self._tasks.spawn(self._learn(case_id), f"learn case {case_id}")

    async def _learn(self, case_id: int) -> None:
        brigade = await self._db.run(lambda c: case_brigade(c, case_id))
        if brigade is not None:
            self.know_case(case_id, brigade)

    async def close(self) -> None:
        await self._tasks.close()

    def on_room_event(self, room_id: str, event_type: str, **fields: Any) -> None:
        """Verifier and recorder listeners: (room, type, fields)."""
        self.publish(case_of_room(room_id), event_type, room_id, **fields)

    async def stream(
        self,
        request: web.Request,
        register: Callable[[web.WebSocketResponse], None] | None = None,
    ) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=4096)
        await ws.prepare(request)
        if register is not None:  # so that a stopping server closes it
            register(ws)
        officer = await self._authenticate(request, ws)
        if officer is None:
            return ws
        listener = _Listener(officer, ws=ws)
        self._listeners.add(listener)
        tasks = TaskSet(f"event stream of {officer.username}", logger)
        tasks.spawn(self._write(ws, listener), "writer")
        try:
            await ws.send_json(
                {
                    "type": "ready",
                    "officer": officer.username,
                    "brigade": officer.brigade,
                    "role": officer.role,
                }
            )
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                await self._command(request, ws, listener, message.data)
        finally:
            self._listeners.discard(listener)
            await tasks.close()
            await ws.close()
        return ws

    async def _authenticate(
        self, request: web.Request, ws: web.WebSocketResponse
    ) -> Officer | None:
        try:
            message = await ws.receive(timeout=AUTH_TIMEOUT)
            body = loads(message.data) if message.type == WSMsgType.TEXT else None
        except (TimeoutError, ValueError):
            body = None
        token = body.get("token") if isinstance(body, dict) and body.get("type") == "auth" else None
        officer = None
        if isinstance(token, str) and len(token) < 200 and token.isascii():
            officer = await request.app[DB].run(lambda c: officer_for(c, token))
        if officer is None:
            await ws.send_json(_error(request, "unauthorized", key="events.unauthorized"))
            await ws.close(code=CLOSE_AUTH, message=b"unauthorized")
        return officer

    async def _command(
        self, request: web.Request, ws: web.WebSocketResponse, listener: _Listener, data: str
    ) -> None:
        try:
            body = loads(data)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("type") != "subscribe":
            await ws.send_json(_error(request, "bad_request", key="events.bad_request"))
            return
        case = body.get("case")
        case_id = None if case is None else id_value(case)
        if case is not None and case_id is None:
            await ws.send_json(_error(request, "not_found", key="events.not_found"))
            return
        if case_id is None:
            listener.case = None
        else:
            chosen = case_id
            found = await request.app[DB].run(lambda c: case_brigade(c, chosen))
            if found is None or not listener.officer.may_touch(found):
                await ws.send_json(_error(request, "not_found", key="events.not_found"))
                return
            self.know_case(chosen, found)
            listener.case = chosen
        await ws.send_json({"type": "subscribed", "case": listener.case})

    @staticmethod
    async def _write(ws: web.WebSocketResponse, listener: _Listener) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:
                event = await listener.queue.get()
                if listener.dropped:
                    await ws.send_json({"type": "dropped", "count": listener.dropped})
                    listener.dropped = 0
                await ws.send_json(event)


class _RoomFeed:
    """A room observer that turns joins and leaves into events."""

    def __init__(self, hub: EventHub, room: Room) -> None:
        self.hub = hub
        self.room = room

    def _publish(self, event_type: str, **fields: Any) -> None:
        self.hub.on_room_event(self.room.room_id, event_type, **fields)

    def on_participant_joined(self, participant: Participant) -> None:
        self._publish(
            "participant_joined",
            participant=participant.participant_id,
            name=participant.name,
            role=participant.role,
        )

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        self._publish(
            "participant_left", participant=participant.participant_id, reason=reason.value
        )

    def on_track_published(self, up: UpTrack) -> None:
        pass

    def on_track_unpublished(self, up: UpTrack) -> None:
        pass

    def on_room_closed(self, reason: CloseReason) -> None:
        self._publish("room_closed", reason=reason.value)
