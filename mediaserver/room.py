"""Rooms and the SFU that owns them (mediasoup's Worker -> Router tree, flattened).

Closing a parent closes its children: :meth:`Sfu.close` closes rooms, a room closes its
participants, a participant closes its tracks. :meth:`Sfu.dump` shows what is alive, so tests
can assert that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any

from . import aiortc_hooks
from .forwarding import ForwardedUpTrack
from .local import LocalSubscriber
from .memory import HeapTrimmer
from .options import MediaOptions
from .participant import Send, SfuParticipant, SignallingError
from .protocols import CloseReason, RoomObserver
from .sockets import granted_buffers

logger = logging.getLogger(__name__)


class SfuRoom:
    def __init__(self, sfu: Sfu, room_id: str) -> None:
        self._sfu = sfu
        self._room_id = room_id
        self._participants: dict[str, SfuParticipant] = {}
        self._locals: set[LocalSubscriber] = set()
        self._closed = False
        self._joining = 0  # joins in progress keep an empty room open
        self._observers: list[RoomObserver] = []  # recorder, verifier, event stream, display
        # tracks the server publishes itself (evidence display), by track ID
        self._server_tracks: dict[str, ForwardedUpTrack] = {}
        # a locked room admits nobody new but officers and supervisors; for a case session
        # the control plane sets it from the session's state at every join
        self.locked = False
        self._log = logging.LoggerAdapter(logger, {"room": room_id})

    @property
    def room_id(self) -> str:
        return self._room_id

    @property
    def participants(self) -> dict[str, SfuParticipant]:
        return self._participants

    @property
    def closed(self) -> bool:
        return self._closed

    def up_tracks(self) -> list[ForwardedUpTrack]:
        tracks = [up for p in self._participants.values() for up in p.up_tracks.values()]
        if self._server_tracks:
            tracks.extend(self._server_tracks.values())
        return tracks

    @property
    def server_tracks(self) -> dict[str, ForwardedUpTrack]:
        return self._server_tracks

    def add_server_track(self, up: ForwardedUpTrack) -> None:
        """Publish a track the server itself produces; everyone in the room receives it."""
        if self._closed:
            raise SignallingError("room_closed", "room is closed")
        self._server_tracks[up.info.track_id] = up
        self.broadcast({"type": "track_published", "track": SfuParticipant._track_json(up)})
        for participant in self._participants.values():
            participant.update_subscriptions()
        self._notify("on_track_published", lambda o: o.on_track_published(up))

    async def remove_server_track(self, up: ForwardedUpTrack, reason: CloseReason) -> None:
        """Unpublish and close a server track. Idempotent."""
        if self._server_tracks.pop(up.info.track_id, None) is None:
            return
        await up.close(reason)
        self.broadcast(
            {
                "type": "track_unpublished",
                "track": up.info.track_id,
                "participant": up.info.participant_id,
            }
        )
        for participant in self._participants.values():
            participant.update_subscriptions()
        self._notify("on_track_unpublished", lambda o: o.on_track_unpublished(up))
        self._sfu.absorb_up_track(up)

    def find_track(self, track_id: str) -> ForwardedUpTrack | None:
        return next((up for up in self.up_tracks() if up.info.track_id == track_id), None)

    async def join(
        self, participant_id: str, name: str, send: Send, role: str = "party"
    ) -> SfuParticipant:
        if self._closed:
            raise SignallingError("room_closed", "room is closed")
        if (
            self.locked
            and role not in ("officer", "supervisor")
            and participant_id not in self._participants
        ):
            raise SignallingError("room_locked", "the officer has locked this room")
        previous = self._participants.get(participant_id)
        if previous is not None:
            # the same person reconnecting from another tab or network: the newest wins
            self._joining += 1
            try:
                await previous.close(CloseReason.DUPLICATE)
            finally:
                self._joining -= 1
            if self._closed:
                raise SignallingError("room_closed", "room closed while joining")
        if len(self._participants) >= self._sfu.options.max_participants:
            raise SignallingError("room_full", "room is full")
        participant = SfuParticipant(self, participant_id, name, send, self._sfu.options, role)
        others = list(self._participants.values())
        self._participants[participant_id] = participant
        self._sfu.counters["participants_joined"] += 1
        self._log.info("participant %s joined", participant_id)
        for other in others:
            other.send({"type": "participant_joined", "participant": participant.describe()})
        participant.update_subscriptions()
        self._notify("on_participant_joined", lambda o: o.on_participant_joined(participant))
        return participant

    def add_observer(self, observer: RoomObserver) -> None:
        """In-process parts (recorder, verifier) hear of joins, leaves and tracks."""
        if observer not in self._observers:
            self._observers.append(observer)

    def remove_observer(self, observer: RoomObserver) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _notify(self, event: str, call: Callable[[RoomObserver], None]) -> None:
        """``call`` for every observer; one that raises is logged, the others still hear."""
        for observer in list(self._observers):
            try:
                call(observer)
            except Exception:
                self._log.exception("room observer %r failed on %s", observer, event)

    def broadcast(self, message: dict[str, Any], *, exclude: str | None = None) -> None:
        for pid, participant in self._participants.items():
            if pid != exclude:
                participant.send(message)

    def on_track_published(self, owner: SfuParticipant, up: ForwardedUpTrack) -> None:
        self.broadcast(
            {"type": "track_published", "track": SfuParticipant._track_json(up, owner)},
            exclude=owner.participant_id,
        )
        for pid, participant in self._participants.items():
            if pid != owner.participant_id:
                participant.update_subscriptions()
        self._notify("on_track_published", lambda o: o.on_track_published(up))

    def on_track_unpublished(self, owner: SfuParticipant, up: ForwardedUpTrack) -> None:
        self.broadcast(
            {
                "type": "track_unpublished",
                "track": up.info.track_id,
                "participant": owner.participant_id,
            },
            exclude=owner.participant_id,
        )
        for pid, participant in self._participants.items():
            if pid != owner.participant_id:
                participant.update_subscriptions()
        self._notify("on_track_unpublished", lambda o: o.on_track_unpublished(up))
        self._sfu.absorb_up_track(up)

    def on_participant_reconnecting(self, participant: SfuParticipant, reason: CloseReason) -> None:
        """Its connections were lost; it stays in the room for the grace period."""
        self._sfu.counters["participants_reconnecting"] += 1
        self._log.info("participant %s reconnecting (%s)", participant.participant_id, reason)
        self.broadcast(
            {
                "type": "participant_reconnecting",
                "participant": participant.participant_id,
                "reason": reason.value,
            },
            exclude=participant.participant_id,
        )
        self._notify_optional("on_participant_reconnecting", participant, reason)

    def on_participant_resumed(self, participant: SfuParticipant) -> None:
        self._sfu.counters["participants_resumed"] += 1
        self._log.info("participant %s resumed", participant.participant_id)
        self.broadcast(
            {"type": "participant_resumed", "participant": participant.describe()},
            exclude=participant.participant_id,
        )
        self._notify_optional("on_participant_resumed", participant)

    def _notify_optional(self, event: str, *args: Any) -> None:
        """An event only some observers hear (those with a method of that name)."""
        for observer in list(self._observers):
            method = getattr(observer, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                self._log.exception("room observer %r failed on %s", observer, event)

    async def on_participant_closed(self, participant: SfuParticipant, reason: CloseReason) -> None:
        if self._participants.get(participant.participant_id) is participant:
            del self._participants[participant.participant_id]
        self._sfu.absorb_participant(participant, reason)
        self._sfu.revoke_resume_tokens(participant)
        self._notify("on_participant_left", lambda o: o.on_participant_left(participant, reason))
        self.broadcast(
            {
                "type": "participant_left",
                "participant": participant.participant_id,
                "reason": reason.value,
            }
        )
        if not self._participants and not self._closed and not self._joining:
            await self.close(CloseReason.ROOM_EMPTY)

    def subscribe_local(self, track_id: str, *, queue_size: int = 1024) -> LocalSubscriber:
        """An in-process subscriber (recorder, verifier) of one track of this room."""
        up = self.find_track(track_id)
        if up is None:
            raise KeyError(track_id)
        local = LocalSubscriber(up, queue_size=queue_size, on_close=self._locals.discard)
        self._locals.add(local)
        return local

    async def remove(self, participant_id: str, reason: CloseReason = CloseReason.REMOVED) -> bool:
        participant = self._participants.get(participant_id)
        if participant is None:
            return False
        await participant.close(reason)
        return True

    async def close(self, reason: CloseReason) -> None:
        """Close every participant, then forget the room. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._notify("on_room_closed", lambda o: o.on_room_closed(reason))
        for participant in list(self._participants.values()):
            await participant.close(
                CloseReason.ROOM_CLOSED if reason != CloseReason.SHUTDOWN else reason
            )
        for up in list(self._server_tracks.values()):
            await self.remove_server_track(up, CloseReason.ROOM_CLOSED)
        for local in list(self._locals):
            local.close(CloseReason.ROOM_CLOSED)
        self._sfu.forget_room(self, reason)
        self._log.info("room closed: %s", reason.value)


class Sfu:
    """The root of the media plane: rooms by ID, counters, and a dump for leak checks."""

    def __init__(self, options: MediaOptions) -> None:
        self.options = options
        aiortc_hooks.install()
        aiortc_hooks.restrict_host_addresses(list(options.host_addresses))
        self._rooms: dict[str, SfuRoom] = {}
        self._closed = False
        self.counters: Counter[str] = Counter()
        # figures of closed tracks, so /metrics counters never go down
        self.retired: Counter[str] = Counter()
        self.close_reasons: Counter[str] = Counter()
        # called with each new room (always-on recording hooks in here)
        self.on_room_created: list[Callable[[SfuRoom], None]] = []
        # resume tokens (their SHA-256) of the participants that may come back with them
        self._resume_tokens: dict[bytes, SfuParticipant] = {}
        # what closed rooms freed goes back to the system (glibc keeps it otherwise)
        # (bounded: not while participants are joining; see memory.TrimPolicy)
        self.trimmer = HeapTrimmer(activity=lambda: self.counters["participants_joined"])

    # -- resume tokens -----------------------------------------------------------------------
    def issue_resume_token(self, participant: SfuParticipant) -> str:
        """A new single-use token with which ``participant``, and only it, may resume; any
        earlier one of it no longer counts."""
        self.revoke_resume_tokens(participant)
        token = secrets.token_urlsafe(32)
        self._resume_tokens[hashlib.sha256(token.encode()).digest()] = participant
        return token

    def take_resume_token(self, token: object) -> SfuParticipant | None:
        """The participant a resume token is for (the token is used up), or None."""
        if not isinstance(token, str) or not 20 <= len(token) <= 100:
            return None
        participant = self._resume_tokens.pop(hashlib.sha256(token.encode()).digest(), None)
        if participant is None or participant.closed:
            return None
        return participant

    @property
    def resume_tokens(self) -> int:
        """Resume tokens that still count (one per participant that may resume)."""
        return len(self._resume_tokens)

    def revoke_resume_tokens(self, participant: SfuParticipant) -> None:
        for key in [k for k, p in self._resume_tokens.items() if p is participant]:
            del self._resume_tokens[key]

    @property
    def rooms(self) -> dict[str, SfuRoom]:
        return self._rooms

    def room(self, room_id: str) -> SfuRoom:
        """The room with this ID, created on first use."""
        if self._closed:
            raise SignallingError("shutting_down", "server is shutting down")
        room = self._rooms.get(room_id)
        if room is None or room.closed:
            room = self._rooms[room_id] = SfuRoom(self, room_id)
            self.counters["rooms_created"] += 1
            for callback in self.on_room_created:
                callback(room)
        return room

    def forget_room(self, room: SfuRoom, reason: CloseReason) -> None:
        if self._rooms.get(room.room_id) is room:
            del self._rooms[room.room_id]
        self.counters["rooms_closed"] += 1
        if not self._closed:
            self.trimmer.request()

    def absorb_up_track(self, up: ForwardedUpTrack) -> None:
        self.retired[f"packets_in_{up.info.kind}"] += up.packets_in
        self.retired[f"bytes_in_{up.info.kind}"] += up.bytes_in
        self.retired["plis_sent"] += up.keyframes_requested
        self.retired["gaps"] += up.gaps
        self.retired["publisher_nacks"] += up.publisher_nacks

    def absorb_participant(self, participant: SfuParticipant, reason: CloseReason) -> None:
        self.close_reasons[reason.value] += 1
        for kind, counters in participant.closed_down_stats:
            _add_down_counters(self.retired, kind, counters)
        participant.closed_down_stats.clear()

    def stats(self) -> dict[str, int]:
        """Totals for /metrics and the bench: live tracks plus what closed tracks left."""
        totals: Counter[str] = Counter(self.retired)
        participants = 0
        for room in self._rooms.values():
            for participant in room.participants.values():
                participants += 1
                role = participant.role
                for up in participant.up_tracks.values():
                    totals[f"packets_in_{up.info.kind}"] += up.packets_in
                    # by the publisher's role, live tracks only (the education bench tells
                    # the presenter's packets the server received from the viewers' cameras)
                    totals[f"role_packets_in_{role}_{up.info.kind}"] += up.packets_in
                    totals[f"bytes_in_{up.info.kind}"] += up.bytes_in
                    totals["plis_sent"] += up.keyframes_requested
                    totals["gaps"] += up.gaps
                    totals["publisher_nacks"] += up.publisher_nacks
                for down in participant.down_tracks():
                    counters = down.counters()
                    _add_down_counters(totals, down.up.info.kind, counters)
                    totals[f"role_forwarded_packets_{role}_{down.up.info.kind}"] += counters[
                        "forwarded_packets"
                    ]
                for kind, counters in participant.closed_down_stats:
                    _add_down_counters(totals, kind, counters)
        totals["rooms"] = len(self._rooms)
        totals["participants"] = participants
        # the kernel buffers the live nominated ICE sockets got (mediaserver/sockets.py): the
        # smallest, so an operator sees a cap (net.core.rmem_max) that cut them
        granted = [
            sizes
            for room in self._rooms.values()
            for participant in room.participants.values()
            for pc in (participant.publisher_pc, participant.subscriber_pc)
            if pc is not None and pc.connectionState == "connected"
            for sizes in granted_buffers(pc)
        ]
        totals["ice_sockets"] = len(granted)
        if granted:
            totals["ice_receive_buffer_min"] = min(r for r, _ in granted)
            totals["ice_send_buffer_min"] = min(s for _, s in granted)
        return dict(totals)

    def dump(self) -> dict[str, int]:
        """What is alive: every count is 0 once everything has closed (tests assert it after
        every test that starts a server)."""
        participants = [p for r in self._rooms.values() for p in r.participants.values()]
        return {
            "rooms": len(self._rooms),
            "participants": len(participants),
            "up_tracks": sum(len(p.up_tracks) for p in participants)
            + sum(len(r.server_tracks) for r in self._rooms.values()),
            "down_tracks": sum(len(p.down_tracks()) for p in participants),
            "local_subscribers": sum(len(r._locals) for r in self._rooms.values()),
            # the participants' tasks (negotiator, closes, relayed sends) and the up-tracks'
            # (PLIs on their way)
            "tasks": sum(len(p.tasks) for p in participants)
            + sum(up.task_count for r in self._rooms.values() for up in r.up_tracks()),
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        rooms = list(self._rooms.values())
        await asyncio.gather(
            *(r.close(CloseReason.SHUTDOWN) for r in rooms), return_exceptions=True
        )
        await self.trimmer.close()


_PER_KIND = ("forwarded_packets", "forwarded_bytes")


def _add_down_counters(totals: Counter[str], kind: str, counters: dict[str, int]) -> None:
    """A down-track's counters into the totals: packets and bytes per kind, the rest summed."""
    for name, value in counters.items():
        totals[f"{name}_{kind}" if name in _PER_KIND else name] += value
