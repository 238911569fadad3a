"""The signalling WebSocket: JSON messages between a client and its participant in the SFU.

The protocol is documented in ``docs/signalling.md``. One :class:`SignallingSession` per
WebSocket; it owns a writer task (so a slow client never blocks the SFU: its queue is bounded
and overflowing it closes the session) and the participant it joined as.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import WSCloseCode, WSMsgType, web

from common.tasks import TaskSet
from mediaserver.participant import SfuParticipant, SignallingError
from mediaserver.protocols import CloseReason
from mediaserver.room import Sfu

from .. import i18n
from ..access import DEV_ROOM, CallAdmission, CallRefused, admission, audit
from ..appkeys import CONFIG, DB, ERRORS, LIVE, SFU, SIGNER, SOCKETS
from ..http.jsonio import loads
from .heartbeat import HeartbeatSocket, socket_end
from .tokens import Grant, TokenError, TokenSigner
from .turn import client_ice_servers

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 10.0
OUTGOING_QUEUE = 256

# WebSocket close codes (4000-4999 are for applications, RFC 6455 section 7.4.2)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # the server is stopping
CLOSE_AUTH = 4001
CLOSE_PROTOCOL = 4002
CLOSE_REFUSED = 4003  # a valid token the case's state refuses (ended, closed, removed, ...)
CLOSE_TOO_LARGE = 4009
CLOSE_REPLACED = 4010
CLOSE_SERVER = 4011
CLOSE_RECONNECT = 4012  # the media connections were lost: resume with the resume token

_BYE_CODES = {
    CloseReason.LEFT: CLOSE_NORMAL,
    CloseReason.DUPLICATE: CLOSE_REPLACED,
    CloseReason.PROTOCOL_ERROR: CLOSE_PROTOCOL,
    CloseReason.SHUTDOWN: CLOSE_GOING_AWAY,
}

# The close frame's reason has room for 123 bytes (RFC 6455 section 5.5)
MAX_CLOSE_REASON = 123

Admit = Callable[[Grant], Awaitable[CallAdmission]]
RefusalLog = Callable[[Grant, CallRefused], Awaitable[None]]


async def _admit_everyone(grant: Grant) -> CallAdmission:
    return DEV_ROOM


def close_reason(text: str) -> bytes:
    """``text`` cut to what a close frame carries, on a character boundary."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON:
        return data
    return data[:MAX_CLOSE_REASON].decode(errors="ignore").encode()


MESSAGE_TYPES = (
    "join",
    "publish",
    "answer",
    "candidate",
    "subscribe",
    "unsubscribe",
    "mute",
    "leave",
    "ping",
    "resume",
    "unload",
    # an education session's viewers (control/education/desk.py, LiveDesk)
    "hand",
    "question",
    "quiz_answer",
)
EDUCATION_TYPES = ("hand", "question", "quiz_answer")


class EducationHooks(Protocol):
    """What an education session adds to a join and to the messages (LiveDesk)."""

    async def admit(self, participant: SfuParticipant, session_id: int | None) -> None: ...

    async def welcome(self, participant: SfuParticipant) -> None: ...

    async def handle(
        self, participant: SfuParticipant, kind: str, message: dict[str, Any]
    ) -> None: ...


class SignallingSession:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        sfu: Sfu,
        signer: TokenSigner,
        *,
        max_message_bytes: int,
        ice_servers: list[dict[str, Any]] | Callable[[str], list[dict[str, Any]]],
        errors: Counter[str],
        admit: Admit = _admit_everyone,
        on_refused: RefusalLog | None = None,
        education: EducationHooks | None = None,
    ) -> None:
        self._ws = ws
        self._sfu = sfu
        self._signer = signer
        self._max_bytes = max_message_bytes
        self._ice_servers = ice_servers
        self._errors = errors
        self._admit = admit
        self._on_refused = on_refused
        self._education = education
        self._outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTGOING_QUEUE)
        self._participant: SfuParticipant | None = None
        self._attachment = 0  # which attachment of the participant this socket holds
        self._close_code = CLOSE_NORMAL
        self._close_message = b""
        self._closing = False
        self._tasks = TaskSet("signalling session", logger)  # the writer, the close watcher

    # -- outgoing --------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        if self._closing:
            return
        try:
            self._outgoing.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("signalling client too slow; closing")
            self._close_soon(CLOSE_SERVER)

    def error(self, code: str, message: str, ref: object = None) -> None:
        self._errors[code] += 1
        self.send(
            {
                "type": "error",
                "code": code,
                "message": message,
                "ref": ref if isinstance(ref, str) else None,
            }
        )

    def _close_soon(self, code: int, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        self._close_message = close_reason(reason)
        while True:  # make room for the sentinel: nothing more will be sent
            try:
                self._outgoing.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._outgoing.get_nowait()

    async def _writer(self) -> None:
        while True:
            message = await self._outgoing.get()
            if message is None:
                break
            try:
                await self._ws.send_str(json.dumps(message, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                break
        await self._ws.close(code=self._close_code, message=self._close_message)

    # -- session ---------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        writer = self._tasks.spawn(self._writer(), "writer")
        join_timer = loop.call_later(JOIN_TIMEOUT, self._join_timeout)
        watcher: asyncio.Task[None] | None = None
        lost = CloseReason.SIGNALLING_LOST
        try:
            while True:
                msg = await self._ws.receive()
                if msg.type == WSMsgType.TEXT:
                    joined_before = self._participant is not None
                    await self._handle_text(msg.data)
                    if not joined_before and self._participant is not None:
                        join_timer.cancel()
                        watcher = self._tasks.spawn(self._watch(self._participant), "watch")
                elif msg.type == WSMsgType.BINARY:
                    self.error("bad_json", i18n.both("signalling.binary"))
                else:
                    lost = socket_end(msg.type, self._ws.close_code, self._ws.exception())
                    logger.info(
                        "signalling socket ended: %s, close code %s, %r: %s",
                        msg.type.name,
                        self._ws.close_code,
                        self._ws.exception(),
                        lost.value,
                    )
                    break
                if self._closing:
                    break
        finally:
            join_timer.cancel()
            try:
                participant = self._participant
                if participant is not None and not participant.closed:
                    # the socket went away without a leave: the participant waits for its
                    # resume (the network dropped, the page reloaded), only the unload grace
                    # when its connection ended without a close (the page's process died); a
                    # socket this server closed on purpose ends it
                    kept = not self._closing and await participant.suspend(
                        lost,
                        attachment=self._attachment,
                        grace=self._sfu.options.unload_grace if lost is CloseReason.GONE else None,
                    )
                    if not kept and participant.attachment == self._attachment:
                        await participant.close(lost)
                if watcher is not None:
                    watcher.cancel()
                    await asyncio.gather(watcher, return_exceptions=True)
                self._close_soon(self._close_code)
                await writer
            finally:
                await self._tasks.close()

    def _detached(self, reason: str, replaced: bool) -> None:
        """The participant no longer rides on this socket: resumed on another one
        (``replaced``), or its media connections were lost and it waits for a resume."""
        self._participant = None
        if replaced:
            # taken over by a join in another page, or by its own resume on another socket
            taken = "duplicate" if reason == CloseReason.DUPLICATE.value else "resumed_elsewhere"
            self.send({"type": "bye", "reason": taken})
            self._close_soon(CLOSE_REPLACED)
        else:
            self.send({"type": "reconnect", "reason": reason})
            self._close_soon(CLOSE_RECONNECT)

    def _join_timeout(self) -> None:
        if self._participant is None:
            self.error(
                "join_timeout", i18n.both("signalling.join_timeout", seconds=f"{JOIN_TIMEOUT:.0f}")
            )
            self._close_soon(CLOSE_PROTOCOL)

    async def _watch(self, participant: SfuParticipant) -> None:
        """When the SFU closes the participant (removed, timed out, replaced), say why."""
        await participant.wait_closed()
        reason = participant.close_reason or CloseReason.REMOVED
        self.send({"type": "bye", "reason": reason.value})
        # the writer sends the bye, then closes the socket
        self._close_soon(_BYE_CODES.get(reason, CLOSE_SERVER))

    async def _handle_text(self, data: str) -> None:
        if len(data.encode("utf-8", "surrogatepass")) > self._max_bytes:
            self.error("too_large", i18n.both("signalling.too_large", max_bytes=self._max_bytes))
            self._close_soon(CLOSE_TOO_LARGE)
            return
        try:
            message = loads(data)
        except ValueError as exc:
            self.error(
                "bad_json",
                i18n.both("signalling.not_json", cause=exc.args[0] if exc.args else exc),
            )
            return
        if not isinstance(message, dict):
            self.error("bad_json", i18n.both("signalling.not_object"))
            return
        kind = message.get("type")
        if kind not in MESSAGE_TYPES:
            self.error("unknown_type", i18n.both("signalling.unknown_type", kind=repr(kind)), kind)
            return
        try:
            if kind == "join":
                await self._join(message)
            elif kind == "resume":
                await self._resume(message)
            elif kind == "ping":
                self.send({"type": "pong", "id": message.get("id")})
            elif kind == "unload" and self._participant is None:
                pass  # a page going before it joined: nothing to keep
            else:
                participant = self._participant
                if participant is None:
                    raise SignallingError("not_joined", i18n.both("signalling.not_joined"))
                await self._dispatch(participant, kind, message)
        except SignallingError as exc:
            self.error(exc.code, exc.message, kind)
        except TokenError as exc:
            self.error(exc.code, exc.message, kind)
            self._close_soon(CLOSE_AUTH)
        except CallRefused as exc:
            self.error(exc.code, exc.message, kind)
            self._close_soon(CLOSE_REFUSED, f"{exc.code}: {exc.message}")

    async def _join(self, message: dict[str, Any]) -> None:
        if self._participant is not None:
            raise SignallingError("already_joined", i18n.both("signalling.already_joined"))
        grant = self._signer.verify(message.get("token"))
        admission = await self._checked(grant)
        room = self._sfu.room(grant.room)
        if admission.session_id is not None:
            room.locked = admission.locked  # the session's lock, whatever the room remembers
        present = room.participants.get(grant.participant)
        if present is not None and await self._take_over(present, grant, admission):
            return
        try:
            participant = await room.join(grant.participant, grant.name, self.send, grant.role)
        except SignallingError:
            if not room.participants and not room.closed:
                # made for this join (a locked session's room, say): leave nothing behind
                await room.close(CloseReason.ROOM_EMPTY)
            raise
        if admission.officer_muted:
            participant.set_officer_muted(admission.officer_muted, True)
        if admission.session_id is not None:
            # the session may have ended (and its room closed) while this join was checked:
            # look again now that the participant is in, before it hears it joined
            try:
                await self._checked(grant)
            except CallRefused:
                await participant.close(CloseReason.REMOVED)
                raise
        participant.admission_ref = grant
        if self._education is not None:
            # a viewer without the floor is held back before it can publish
            await self._education.admit(participant, admission.session_id)
        self._attachment = participant.attach_session(self._detached)
        self._participant = participant
        self.send(self._snapshot("joined", participant, grant))
        if self._education is not None:
            await self._education.welcome(participant)

    async def _take_over(
        self, present: SfuParticipant, grant: Grant, admission: CallAdmission
    ) -> bool:
        """A join of a participant that is in the room already (the same link opened again in
        another page of the device, readmitted): this socket takes it over as a resume would,
        so the others see it away for a moment and back (``participant_reconnecting``
        ``duplicate``, ``participant_resumed``), never a leave and a join, and its tracks go
        on (one pair in the recording). The page it rode on gets ``bye`` ``duplicate`` (4010).
        False where it cannot be taken over (resume off, another role, closing): the
        ordinary join then replaces it."""
        if (
            present.closed
            or self._sfu.options.resume_grace <= 0
            or present.role != grant.role
            or not isinstance(present.admission_ref, Grant)
        ):
            return False
        try:
            attachment = await present.resume(
                self.send, self._detached, taken_over=CloseReason.DUPLICATE
            )
        except SignallingError:
            return False
        self._attachment = attachment
        self._participant = present
        present.admission_ref = grant
        if admission.officer_muted:
            present.set_officer_muted(admission.officer_muted, True)
        if admission.session_id is not None:
            try:  # as a join: the session may have ended while this one was checked
                await self._checked(grant)
            except CallRefused:
                await present.close(CloseReason.REMOVED)
                raise
        # a new resume token: the one the page taken over holds counts no more
        self.send(self._snapshot("joined", present, grant))
        if self._education is not None:
            await self._education.welcome(present)
        return True

    def _snapshot(self, kind: str, participant: SfuParticipant, grant: Grant) -> dict[str, Any]:
        """``joined`` (or ``resumed``): the room as it is now, and a new resume token."""
        room = participant.room
        participants = room.participants.values()
        server_tracks = getattr(room, "server_tracks", {})
        grace = self._sfu.options.resume_grace
        return {
            "type": kind,
            "room": room.room_id,
            "participant": participant.describe() | {"role": grant.role},
            "participants": [p.describe() for p in participants if p is not participant],
            "server_tracks": [SfuParticipant._track_json(up) for up in server_tracks.values()],
            "ice_servers": (
                self._ice_servers(participant.participant_id)
                if callable(self._ice_servers)
                else self._ice_servers
            ),
            **(
                {
                    "resume_token": self._sfu.issue_resume_token(participant),
                    "resume_grace": grace,
                    "unload_grace": min(self._sfu.options.unload_grace, grace),
                }
                if grace > 0
                else {}
            ),
        }

    async def _resume(self, message: dict[str, Any]) -> None:
        """Come back under the same participant with new connections (docs/signalling.md,
        Resume). The token is single-use and names one participant; the case's admission is
        checked again, so a party removed meanwhile, or a session ended, cannot come back."""
        if self._participant is not None:
            raise SignallingError("already_joined", i18n.both("signalling.already_joined"))
        participant = self._sfu.take_resume_token(message.get("resume_token"))
        if participant is None or not isinstance(participant.admission_ref, Grant):
            raise SignallingError("resume_refused", i18n.both("signalling.resume_refused"))
        grant = self._renewed(participant.admission_ref, message.get("token"))
        if grant.expires_at <= int(time.time()):
            # a join with this token would be refused now: so is the resume. A participant
            # waiting away leaves as it would at the end of its grace; one still on another
            # socket keeps that socket
            if participant.away_reason is not None:
                await participant.close(participant.away_reason)
            raise TokenError("token_expired", i18n.both("signalling.resume_expired"))
        try:
            await self._checked(grant)
        except CallRefused as exc:
            # superseded: the link was opened again in another page, which has the
            # participant or takes it over with its join (away till then, within its grace);
            # any other refusal ends it
            if exc.code != "superseded":
                await participant.close(CloseReason.REMOVED)
            raise
        try:
            self._attachment = await participant.resume(self.send, self._detached)
        except SignallingError as exc:
            raise SignallingError("resume_refused", i18n.both("signalling.resume_refused")) from exc
        participant.admission_ref = grant
        self._participant = participant
        self.send(self._snapshot("resumed", participant, grant))
        if self._education is not None:
            # what changed while it was away (the floor, hands, answers) was not sent to it
            await self._education.welcome(participant)

    async def _unload(self, participant: SfuParticipant) -> None:
        """The page is going (its tab closed, or it reloads; it cannot tell which): away for
        ``media.unload_grace`` only, which a reload's resume beats, and then it leaves as
        ``closed`` instead of looking "reconnecting" for the whole ``resume_grace``."""
        grace = self._sfu.options.unload_grace
        kept = await participant.suspend(
            CloseReason.CLOSED, attachment=self._attachment, grace=grace
        )
        if not kept and participant.attachment == self._attachment:
            await participant.close(CloseReason.CLOSED)
        # this socket carries it no more; the page closes its end as it goes
        self._participant = None
        self._close_soon(CLOSE_NORMAL)

    def _renewed(self, grant: Grant, token: object) -> Grant:
        """The grant a resume is checked against: the one the participant joined with, or the
        call token the resume carries when that is valid and names the same room, participant
        and role (the console asks a fresh one each time, so an officer's call outlives the
        first token's hour). Any other ``token`` is ignored: the resume token decides who."""
        if token is None:
            return grant
        try:
            fresh = self._signer.verify(token)
        except TokenError:
            return grant
        same = (fresh.room, fresh.participant, fresh.role) == (
            grant.room,
            grant.participant,
            grant.role,
        )
        return fresh if same and fresh.expires_at > grant.expires_at else grant

    async def _checked(self, grant: Grant) -> CallAdmission:
        try:
            return await self._admit(grant)
        except CallRefused as exc:
            logger.info(
                "join refused: %s (room %s, participant %s)",
                exc.code,
                grant.room,
                grant.participant,
            )
            if self._on_refused is not None:
                await self._on_refused(grant, exc)
            raise

    async def _dispatch(
        self, participant: SfuParticipant, kind: str, message: dict[str, Any]
    ) -> None:
        if kind == "publish":
            answer = await participant.handle_publish_offer(message.get("sdp"))
            self.send(
                {"type": "publish_answer", "sdp": answer, "tracks": participant.published_tracks()}
            )
        elif kind == "answer":
            participant.handle_answer(message.get("sdp"))
        elif kind == "candidate":
            await participant.add_ice_candidate(message.get("target"), message.get("candidate"))
        elif kind in ("subscribe", "unsubscribe"):
            tracks = message.get("tracks")
            if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
                raise SignallingError("bad_request", i18n.both("signalling.tracks"))
            if kind == "subscribe":
                participant.subscribe(tracks)
            else:
                participant.unsubscribe(tracks)
        elif kind == "mute":
            track, muted = message.get("track"), message.get("muted")
            if not isinstance(track, str) or not isinstance(muted, bool):
                raise SignallingError("bad_request", i18n.both("signalling.mute"))
            participant.set_muted(track, muted)
        elif kind == "leave":
            self._close_code = CLOSE_NORMAL
            await participant.close(CloseReason.LEFT)
        elif kind == "unload":
            await self._unload(participant)
        elif kind in EDUCATION_TYPES:
            if self._education is None:
                raise SignallingError("not_education", i18n.both("education.not_education"))
            await self._education.handle(participant, kind, message)


def admission_for(request: web.Request) -> tuple[Admit, RefusalLog]:
    """Every join checked against the database (control/access.py), refusals audited."""
    database = request.app[DB]
    dev_join = request.app[CONFIG].auth.dev_join
    prejoin = request.app[CONFIG].auth.prejoin_check
    address = request.remote

    async def admit(grant: Grant) -> CallAdmission:
        return await database.run(
            lambda conn: admission(conn, grant, dev_join=dev_join, prejoin_check=prejoin)
        )

    async def refused(grant: Grant, exc: CallRefused) -> None:
        if exc.case_id is not None:
            await database.run(
                lambda conn: audit(
                    conn,
                    f"{grant.role}:{grant.participant}@{address}",
                    "call.refused",
                    f"room:{grant.room}",
                    exc.case_id,
                    exc.code,
                )
            )

    return admit, refused


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    # a socket whose pong is late is closed: the session's read loop ends and the
    # participant is closed (signalling_lost), the others told
    ws = HeartbeatSocket(
        interval=config.server.ws_heartbeat,
        timeout=config.server.ws_pong_timeout,
        max_msg_size=4 * config.server.max_message_bytes,
    )
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    admit, refused = admission_for(request)
    session = SignallingSession(
        ws,
        request.app[SFU],
        request.app[SIGNER],
        max_message_bytes=config.server.max_message_bytes,
        ice_servers=lambda participant: client_ice_servers(config, participant),
        errors=request.app[ERRORS],
        admit=admit,
        on_refused=refused,
        education=request.app.get(LIVE),
    )
    await session.run()
    return ws


__all__ = ["SignallingSession", "WSCloseCode", "socket_end", "websocket_handler"]
