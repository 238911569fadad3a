"""A participant: one publishing and one subscribing peer connection, as LiveKit does.

* The **publisher** connection carries the participant's camera and microphone to the SFU. The
  client offers, the SFU answers; a client that adds or removes tracks offers again.
* The **subscriber** connection carries everyone else's tracks to the participant. The SFU
  offers, the client answers. One task (the negotiator) owns it, so offers never cross.

Keeping the directions apart means neither side ever has to resolve glare, and a change in who
publishes touches only the subscriber connections of the others.

**Resume.** aiortc has no ICE restart, so a participant whose network dropped or changed address
comes back with new connections under the same participant (:meth:`SfuParticipant.suspend`,
:meth:`SfuParticipant.resume`): while it is away (``MediaOptions.resume_grace``) its up-tracks
stay published without a source, so the others keep their down-tracks and the recorder and the
verifier their subscribers; the resumed publisher's new receivers feed the same up-tracks.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.sdp import candidate_from_sdp

from common.tasks import TaskSet

from .aiortc_hooks import (
    SfuRtpReceiver,
    SfuRtpSender,
    accept_transport_cc,
    consent_expired,
    datagram_counter,
    share_server_certificate,
)
from .forwarding import ForwardedUpTrack, RtpDownTrack
from .options import MediaOptions
from .protocols import CloseReason, TrackInfo, UpTrack
from .sdpcheck import SdpError, check_remote_sdp
from .sockets import tune_ice_sockets

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]
# told when this participant's signalling socket no longer carries it: (why, whether another
# socket resumed it); the session then tells its client to reconnect, or closes
Detached = Callable[[str, bool], None]


def _drop(message: dict[str, Any]) -> None:
    """Where messages go while a participant is away: its resume brings a fresh snapshot."""


class SignallingError(Exception):
    """A client request the SFU refuses; ``code`` goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PlaceholderTrack(MediaStreamTrack):
    """Stands in for a forwarded track on a subscriber's sender; never read."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        raise MediaStreamError


@dataclass(eq=False)
class Slot:
    """A transceiver of the subscriber connection; reused for a later track of the same codec."""

    transceiver: RTCRtpTransceiver
    codec_key: tuple[str, ...]
    down: RtpDownTrack | None = None
    last_down: RtpDownTrack | None = None


@dataclass
class ParticipantCounters:
    answers_sent: int = 0
    offers_sent: int = 0
    tracks_published: int = 0
    negotiations: int = 0


class ParticipantRoom(Protocol):
    """What a participant needs of its room: :class:`mediaserver.room.SfuRoom`, which imports
    this module (so the import graph stays one-way)."""

    @property
    def room_id(self) -> str: ...

    @property
    def closed(self) -> bool: ...

    @property
    def participants(self) -> Mapping[str, SfuParticipant]: ...

    def up_tracks(self) -> Sequence[UpTrack]: ...

    def broadcast(self, message: dict[str, Any], *, exclude: str | None = None) -> None: ...

    def on_track_published(self, owner: SfuParticipant, up: ForwardedUpTrack) -> None: ...

    def on_track_unpublished(self, owner: SfuParticipant, up: ForwardedUpTrack) -> None: ...

    async def on_participant_closed(
        self, participant: SfuParticipant, reason: CloseReason
    ) -> None: ...

    def on_participant_reconnecting(
        self, participant: SfuParticipant, reason: CloseReason
    ) -> None: ...

    def on_participant_resumed(self, participant: SfuParticipant) -> None: ...


def _rtc_configuration(options: MediaOptions) -> RTCConfiguration:
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in options.ice_servers
    ]
    # An explicit list, possibly empty: aiortc would otherwise add a public STUN server.
    # Max-bundle: every m-line on one transport from the first offer. With aiortc's default
    # (balanced) a second audio m-line created in the same offer as the first got a transport
    # of its own that never connected, and that track never reached the subscriber (found by
    # bench load's mediation rooms: 22 of 24 streams arrived).
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def _server_pc(options: MediaOptions) -> RTCPeerConnection:
    pc = RTCPeerConnection(_rtc_configuration(options))
    share_server_certificate(pc)  # one certificate and context: docs/performance.md
    return pc


def last_heard_at_suspend(
    counted: float | None, check: float, arrivals: list[float | None]
) -> float | None:
    """When a suspended publisher was last heard, for a track whose arrivals are not timed
    (audio): the silence watch's count (``counted``) knows it to within one of its checks
    (``check`` seconds), never before the last datagram; a video track's last packet
    (``arrivals``) within that check is exact, one older is a camera turned off, not the
    connection's last datagram."""
    if counted is None:
        return None
    recent = [a for a in arrivals if a is not None and counted - check <= a <= counted]
    return max(recent) if recent else counted


def codec_key(info: TrackInfo) -> tuple[str, ...]:
    key = [info.mime_type.lower()]
    if info.mime_type.lower() == "video/h264":
        params = dict(info.parameters)
        key.append(params.get("profile-level-id", "")[:2].lower())
        key.append(params.get("packetization-mode", "0"))
    return tuple(key)


def _capabilities_for(info: TrackInfo) -> list[RTCRtpCodecCapability]:
    """Our own capability matching the publisher's codec, plus RTX for video."""
    caps = RTCRtpSender.getCapabilities(info.kind).codecs
    wanted = codec_key(info)
    chosen: list[RTCRtpCodecCapability] = []
    for cap in caps:
        probe = TrackInfo(
            "",
            "",
            info.kind,
            cap.mimeType,
            cap.clockRate,
            cap.channels,
            tuple(sorted((k, str(v)) for k, v in cap.parameters.items())),
        )
        if codec_key(probe) == wanted:
            chosen.append(cap)
            break
    if not chosen:
        raise SignallingError("unsupported_codec", f"cannot forward {info.mime_type}")
    if info.kind == "video":
        chosen.extend(c for c in caps if c.mimeType.lower() == "video/rtx")
    return chosen


class SfuParticipant:
    """One party in a room. Created by :meth:`mediaserver.room.SfuRoom.join`."""

    def __init__(
        self,
        room: ParticipantRoom,
        participant_id: str,
        name: str,
        send: Send,
        options: MediaOptions,
        role: str = "party",
    ) -> None:
        self.room = room
        self._participant_id = participant_id
        self.name = name
        self.role = role
        self._send = send
        self._options = options
        self._log = logging.LoggerAdapter(
            logger, {"room": room.room_id, "participant": participant_id}
        )
        self.publisher_pc = _server_pc(options)
        self.subscriber_pc = _server_pc(options)
        self._up_tracks: dict[str, ForwardedUpTrack] = {}
        self._up_by_mid: dict[str, ForwardedUpTrack] = {}
        self._slots: list[Slot] = []
        self._unsubscribed: set[str] = set()
        # Two owners of a mute, kept apart: the participant's own (per track it publishes) and
        # an officer's (per kind, so a track published later is born muted). A track carries
        # media only when neither holds; the participant cannot lift the officer's.
        self._self_muted: set[str] = set()
        self._officer_muted: set[str] = set()
        # Held (an education session's viewer without the floor): its tracks reach the room's
        # in-process subscribers (verifier, recorder) but no other participant.
        self._held = False
        self._publish_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._pending_answer: asyncio.Future[str] | None = None
        self._closed = False
        self._close_reason: CloseReason | None = None
        self._closed_event = asyncio.Event()
        # the negotiator, unpublishes, closes, and the relayed (TURN) RTP sends of its
        # down-tracks: cancelled and awaited first thing on close
        self.tasks = TaskSet(f"participant {participant_id}", self._log)
        self._watchdogs: dict[str, asyncio.TimerHandle] = {}
        # each connected media connection's datagram count (its socket's), and when the
        # watch last saw that count move; the timer that checks it (media_timeout)
        self._counters: dict[str, Callable[[], int]] = {}
        self._last_count: dict[str, int] = {}
        self._last_heard: dict[str, float] = {}
        self._media_check: asyncio.TimerHandle | None = None
        self.counters = ParticipantCounters()
        self.closed_down_stats: list[tuple[str, dict[str, int]]] = []  # (kind, counters)
        # resume: away since a lost connection (why), until the grace timer; the up-tracks
        # waiting for the resumed publisher's next offer; which signalling socket carries it
        self._suspended: CloseReason | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._grace_seconds = options.resume_grace  # how long this time's wait is
        self._orphans: list[ForwardedUpTrack] = []
        self._attachment = 0
        self._detached: Detached | None = None
        self._settled = asyncio.Event()  # no suspension half done
        self._settled.set()
        self.resumes = 0
        # what the control plane admitted this participant with (its Grant): a resume is
        # checked against it again
        self.admission_ref: object = None
        self._negotiator = self._spawn(self._negotiate_loop(), "negotiator")
        self._watch_connections()

    def _watch_connections(self) -> None:
        for label, pc in (("publisher", self.publisher_pc), ("subscriber", self.subscriber_pc)):
            pc.on("connectionstatechange", self._state_handler(label, pc))

    # -- identity --------------------------------------------------------------------------
    @property
    def participant_id(self) -> str:
        return self._participant_id

    @property
    def up_tracks(self) -> dict[str, ForwardedUpTrack]:
        return self._up_tracks

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def close_reason(self) -> CloseReason | None:
        return self._close_reason

    @property
    def suspended(self) -> bool:
        """Away: its connections were lost and it may still resume."""
        return self._suspended is not None

    @property
    def away_reason(self) -> CloseReason | None:
        """What it lost while away (None when it is not)."""
        return self._suspended

    @property
    def attachment(self) -> int:
        """Which signalling attachment carries it (one more at every resume)."""
        return self._attachment

    def attach_session(self, detached: Detached) -> int:
        """The signalling session that joined it; returns the attachment it holds."""
        self._detached = detached
        return self._attachment

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def down_tracks(self) -> list[RtpDownTrack]:
        return [s.down for s in self._slots if s.down is not None]

    def describe(self) -> dict[str, Any]:
        return {
            "id": self._participant_id,
            "name": self.name,
            "role": self.role,
            "tracks": [self._track_json(t, self) for t in self._up_tracks.values()],
        }

    def published_tracks(self) -> list[dict[str, Any]]:
        """Own up-tracks with the publisher-connection mid that carries each."""
        return [self._track_json(up, self) | {"mid": mid} for mid, up in self._up_by_mid.items()]

    def mute_owners(self, up: UpTrack) -> dict[str, bool]:
        return {
            "self_muted": up.info.track_id in self._self_muted,
            "officer_muted": up.info.kind in self._officer_muted,
        }

    @property
    def officer_muted(self) -> frozenset[str]:
        return frozenset(self._officer_muted)

    @staticmethod
    def _track_json(up: UpTrack, owner: SfuParticipant | None = None) -> dict[str, Any]:
        """A track as signalling describes it; with its owner, who holds its mute."""
        return {
            "id": up.info.track_id,
            "participant": up.info.participant_id,
            "kind": up.info.kind,
            "codec": up.info.mime_type,
            "muted": up.muted,
            **(
                owner.mute_owners(up)
                if owner is not None
                else {"self_muted": False, "officer_muted": False}
            ),
        }

    def send(self, message: dict[str, Any]) -> None:
        if not self._closed:
            self._send(message)

    # -- tasks -----------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self.tasks.spawn(coro, name)

    # -- publishing ------------------------------------------------------------------------
    async def handle_publish_offer(self, sdp: object) -> str:
        """Apply the client's offer on the publisher connection; return the answer SDP."""
        if self._closed:
            raise SignallingError("closed", "participant is closed")
        if self._suspended is not None:
            raise SignallingError("reconnecting", "participant is reconnecting: resume first")
        try:
            checked = check_remote_sdp(sdp)
        except SdpError as exc:
            raise SignallingError(exc.code, exc.message) from exc
        async with self._publish_lock:
            pc = self.publisher_pc
            try:
                await pc.setRemoteDescription(RTCSessionDescription(checked, "offer"))
                offered = _offered_opus_options(checked)
                for transceiver in pc.getTransceivers():
                    _keep_primary_codec(transceiver)
                    _accept_opus_options(transceiver, offered.get(transceiver.mid or ""))
                if self._options.twcc:
                    accept_transport_cc(pc, checked)  # TWCC where offered (browsers do)
                await pc.setLocalDescription(await pc.createAnswer())
            except Exception as exc:
                self._log.info("rejected publish offer: %s", exc)
                raise SignallingError("bad_sdp", f"offer rejected: {exc}") from exc
            self._sync_published_tracks()
            self.counters.answers_sent += 1
            self._arm_watchdog("publisher", pc)
            return pc.localDescription.sdp

    def _sync_published_tracks(self) -> None:
        if self._closed:
            return  # closed while the offer was applied: nothing to publish any more
        for transceiver in self.publisher_pc.getTransceivers():
            mid = transceiver.mid
            if mid is None:
                continue
            receiving = transceiver.currentDirection in ("recvonly", "sendrecv")
            existing = self._up_by_mid.get(mid)
            if receiving and existing is None:
                if not self._continue_track(transceiver):
                    self._publish(transceiver)
            elif not receiving and existing is not None:
                self._spawn(self._unpublish(existing, CloseReason.UNPUBLISHED), "unpublish")
        # the first offer after a resume says what the participant publishes now: a track it
        # no longer offers has ended
        for orphan in self._orphans:
            self._spawn(self._unpublish(orphan, CloseReason.UNPUBLISHED), "unpublish")
        self._orphans.clear()

    def _continue_track(self, transceiver: RTCRtpTransceiver) -> bool:
        """After a resume: the up-track of the same kind and codec that the participant
        published before (in the order it published them) continues from this transceiver."""
        if not self._orphans:
            return False
        receiver = transceiver.receiver
        assert isinstance(receiver, SfuRtpReceiver), "aiortc_hooks.install() was not called"
        primary = _primary_codec(transceiver)
        key = codec_key(
            TrackInfo(
                "",
                "",
                transceiver.kind,
                primary.mimeType,
                primary.clockRate,
                primary.channels,
                tuple(sorted((k, str(v)) for k, v in primary.parameters.items())),
            )
        )
        for up in self._orphans:
            if up.info.kind == transceiver.kind and codec_key(up.info) == key:
                self._orphans.remove(up)
                up.replace_source(receiver)
                self._up_by_mid[transceiver.mid] = up  # type: ignore[index]
                self._log.info("%s track %s continues after resume", up.info.kind, up.info.track_id)
                return True
        return False

    def _publish(self, transceiver: RTCRtpTransceiver) -> None:
        receiver = transceiver.receiver
        assert isinstance(receiver, SfuRtpReceiver), "aiortc_hooks.install() was not called"
        primary = _primary_codec(transceiver)
        track_id = f"TR_{uuid.uuid4().hex[:12]}"
        info = TrackInfo(
            track_id=track_id,
            participant_id=self._participant_id,
            kind=transceiver.kind,
            mime_type=primary.mimeType,
            clock_rate=primary.clockRate,
            channels=primary.channels,
            parameters=tuple(sorted((k, str(v)) for k, v in primary.parameters.items())),
        )
        up = ForwardedUpTrack(
            info,
            receiver,
            pli_min_interval=self._options.pli_min_interval,
            log_extra={"room": self.room.room_id, "participant": self._participant_id},
            layered_small_room=self._options.layered_small_room,
            layered_quantile=self._options.layered_quantile,
        )
        self._up_tracks[track_id] = up
        self._up_by_mid[transceiver.mid] = up  # type: ignore[index]
        if info.kind in self._officer_muted:
            up.set_muted(True)  # an officer's mute holds for a track published after it
        self.counters.tracks_published += 1
        self._log.info("published %s %s as %s", info.kind, info.mime_type, track_id)
        self.room.on_track_published(self, up)

    async def _unpublish(self, up: ForwardedUpTrack, reason: CloseReason) -> None:
        self._up_tracks.pop(up.info.track_id, None)
        self._self_muted.discard(up.info.track_id)
        for mid, candidate in list(self._up_by_mid.items()):
            if candidate is up:
                del self._up_by_mid[mid]
        await up.close(reason)
        self.room.on_track_unpublished(self, up)

    def set_muted(self, track_id: str, muted: bool) -> None:
        """The participant's own mute of one of its tracks. Unmuting is refused while an
        officer's mute of that kind holds (the participant's own mute stays as it was)."""
        up = self._up_tracks.get(track_id)
        if up is None:
            raise SignallingError("unknown_track", f"no published track {track_id}")
        if not muted and up.info.kind in self._officer_muted:
            what = "麦克风" if up.info.kind == "audio" else "摄像头"
            raise SignallingError(
                "muted_by_officer",
                f"民警已将您的{what}静音，只有民警可以解除 / an officer muted your "
                f"{up.info.kind}; only an officer can unmute it",
            )
        if muted:
            self._self_muted.add(track_id)
        else:
            self._self_muted.discard(track_id)
        self._apply_mute(up)

    @property
    def held(self) -> bool:
        return self._held

    def set_held(self, held: bool) -> None:
        """Hold this participant's tracks back from the other participants (or let them go
        again): every other participant's subscriptions are brought in line at once."""
        if held == self._held:
            return
        self._held = held
        self._log.info("tracks %s", "held back" if held else "forwarded")
        for other in list(self.room.participants.values()):
            if other is not self:
                other.update_subscriptions()

    def set_officer_muted(self, kinds: list[str] | frozenset[str], muted: bool) -> None:
        """An officer's mute of this participant's audio and/or video, now and later."""
        for kind in kinds:
            if muted:
                self._officer_muted.add(kind)
            else:
                self._officer_muted.discard(kind)
        for up in list(self._up_tracks.values()):
            if up.info.kind in kinds:
                self._apply_mute(up)

    def _apply_mute(self, up: ForwardedUpTrack) -> None:
        owners = self.mute_owners(up)
        muted = owners["self_muted"] or owners["officer_muted"]
        up.set_muted(muted)
        self.room.broadcast(
            {
                "type": "track_muted",
                "track": up.info.track_id,
                "participant": self._participant_id,
                "muted": muted,
                **owners,
            },
        )

    # -- subscribing -----------------------------------------------------------------------
    def subscribe(self, track_ids: list[str]) -> None:
        known = {up.info.track_id for up in self.room.up_tracks()}
        for track_id in track_ids:
            if track_id not in known:
                raise SignallingError("unknown_track", f"no track {track_id} in this room")
        self._unsubscribed.difference_update(track_ids)
        self.update_subscriptions()

    def unsubscribe(self, track_ids: list[str]) -> None:
        self._unsubscribed.update(track_ids)
        self.update_subscriptions()

    def update_subscriptions(self) -> None:
        """Mark the subscriber connection for renegotiation; the negotiator does the work."""
        if not self._closed:
            self._dirty.set()

    def _wanted_tracks(self) -> dict[str, UpTrack]:
        held = {p for p, other in self.room.participants.items() if other.held}
        return {
            up.info.track_id: up
            for up in self.room.up_tracks()
            if up.info.participant_id != self._participant_id
            and up.info.participant_id not in held
            and up.info.track_id not in self._unsubscribed
            and not up.closed
        }

    def _apply_subscriptions(self) -> bool:
        """Bring the subscriber transceivers in line with the wanted tracks; True if changed."""
        wanted = self._wanted_tracks()
        changed = False
        for used in self._slots:
            down = used.down
            if down is not None and (down.closed or down.up.info.track_id not in wanted):
                down.close(CloseReason.UNSUBSCRIBED)
                self._retire(used)
                changed = True
        current = {s.down.up.info.track_id for s in self._slots if s.down is not None}
        for track_id, up in wanted.items():
            if track_id in current:
                continue
            key = codec_key(up.info)
            slot: Slot | None = next(
                (
                    s
                    for s in self._slots
                    if s.down is None and s.codec_key == key and s.transceiver.mid is not None
                ),
                None,
            )
            if slot is None:
                transceiver = self.subscriber_pc.addTransceiver(
                    PlaceholderTrack(up.info.kind), direction="sendonly"
                )
                transceiver.setCodecPreferences(_capabilities_for(up.info))
                slot = Slot(transceiver=transceiver, codec_key=key)
                self._slots.append(slot)
            sender = slot.transceiver.sender
            assert isinstance(sender, SfuRtpSender), "aiortc_hooks.install() was not called"
            slot.transceiver.direction = "sendonly"
            slot.down = RtpDownTrack(
                f"{self._participant_id}/{track_id}",
                up,
                sender,
                on_close=self._down_closed,
                continue_from=slot.last_down,
                tasks=self.tasks,
            )
            changed = True
        return changed

    def _retire(self, slot: Slot) -> None:
        slot.last_down = slot.down
        slot.down = None
        slot.transceiver.direction = "inactive"

    def _down_closed(self, down: RtpDownTrack) -> None:
        self.closed_down_stats.append((down.up.info.kind, down.counters()))
        if not self._closed:
            # the up-track went away: free the slot at the next negotiation
            self._dirty.set()

    def _mid_map(self) -> dict[str, dict[str, Any]]:
        tracks: dict[str, dict[str, Any]] = {}
        for slot in self._slots:
            mid = slot.transceiver.mid
            if mid is not None and slot.down is not None:
                up = slot.down.up
                tracks[mid] = self._track_json(
                    up, self.room.participants.get(up.info.participant_id)
                )
        return tracks

    async def _negotiate_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._closed or self.room.closed:
                return  # a closing room ends every call: nothing to renegotiate
            if not self._apply_subscriptions() and self.subscriber_pc.remoteDescription:
                continue
            if not self._slots:
                continue
            pc = self.subscriber_pc
            if pc.connectionState == "closed":
                return  # closed by the client; the state handler closes the participant
            await pc.setLocalDescription(await pc.createOffer())
            loop = asyncio.get_running_loop()
            self._pending_answer = loop.create_future()
            self.counters.offers_sent += 1
            self.send({"type": "offer", "sdp": pc.localDescription.sdp, "tracks": self._mid_map()})
            try:
                answer = await asyncio.wait_for(
                    self._pending_answer, timeout=self._options.negotiation_timeout
                )
            except TimeoutError:
                self._log.warning("no answer to subscriber offer")
                self._spawn(self.close(CloseReason.CONNECT_TIMEOUT), "close")
                return
            finally:
                self._pending_answer = None
            try:
                await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            except Exception as exc:
                self._log.info("rejected subscriber answer: %s", exc)
                self.send(
                    {
                        "type": "error",
                        "code": "bad_sdp",
                        "message": f"answer rejected: {exc}",
                        "ref": "answer",
                    }
                )
                self._spawn(self.close(CloseReason.PROTOCOL_ERROR), "close")
                return
            self.counters.negotiations += 1
            self._arm_watchdog("subscriber", pc)
            # the mid map is final only once the answer is applied
            self.send({"type": "tracks", "tracks": self._mid_map()})

    def handle_answer(self, sdp: object) -> None:
        future = self._pending_answer
        if future is None or future.done():
            raise SignallingError("unexpected_answer", "no subscriber offer is waiting")
        try:
            checked = check_remote_sdp(sdp)
        except SdpError as exc:
            raise SignallingError(exc.code, exc.message) from exc
        future.set_result(checked)

    async def add_ice_candidate(self, target: object, candidate: object) -> None:
        pc = {"publisher": self.publisher_pc, "subscriber": self.subscriber_pc}.get(
            target if isinstance(target, str) else ""
        )
        if pc is None:
            raise SignallingError("bad_request", "target must be publisher or subscriber")
        if candidate is None or candidate == {} or candidate == "":
            return  # end of candidates
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise SignallingError("bad_request", "candidate must be an RTCIceCandidateInit")
        text = candidate["candidate"]
        if not text:
            return
        try:
            parsed = candidate_from_sdp(
                text.split(":", 1)[1] if text.startswith("candidate:") else text
            )
            parsed.sdpMid = candidate.get("sdpMid")
            parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await pc.addIceCandidate(parsed)
        except Exception as exc:
            raise SignallingError("bad_candidate", f"candidate rejected: {exc}") from exc

    # -- connection health -----------------------------------------------------------------
    def _state_handler(self, label: str, pc: RTCPeerConnection) -> Callable[[], None]:
        def changed() -> None:
            state = pc.connectionState
            self._log.debug("%s connection %s", label, state)
            if self._suspended is not None or pc not in (self.publisher_pc, self.subscriber_pc):
                return  # a connection given up for a resume: its end is no news
            if state == "connected":
                handle = self._watchdogs.pop(label, None)
                if handle is not None:
                    handle.cancel()
                # bigger kernel buffers, every waiting datagram read (mediaserver/sockets.py)
                tune_ice_sockets(pc)
                self._watch_media(label, pc)
            elif state == "failed" and not self._closed:
                self._spawn(self.lost(CloseReason.CONNECTION_FAILED), "lost")
            elif state == "closed" and not self._closed and consent_expired(pc):
                # the server's own ICE consent expired (no answer for 30 s): the client's
                # network went, it did not leave, so it may come back (resume)
                self._spawn(self.lost(CloseReason.CONNECTION_FAILED), "lost")
            elif state == "closed" and not self._closed:
                # aiortc closes a peer connection itself once the client's DTLS said goodbye:
                # its media is over. With resume on it may come back: a page that found its
                # socket dead closes its peer connections before it resumes, and their
                # close_notify can reach the server first (the media path still working)
                self._spawn(self.lost(CloseReason.PEER_CLOSED), "lost")

        return changed

    def _arm_watchdog(self, label: str, pc: RTCPeerConnection) -> None:
        if pc.connectionState == "connected" or label in self._watchdogs:
            return

        def expired() -> None:
            self._watchdogs.pop(label, None)
            if pc.connectionState != "connected" and not self._closed:
                self._log.warning("%s connection stuck in %s", label, pc.connectionState)
                self._spawn(self.close(CloseReason.CONNECT_TIMEOUT), "close")

        self._watchdogs[label] = asyncio.get_running_loop().call_later(
            self._options.connect_timeout, expired
        )

    def _watch_media(self, label: str, pc: RTCPeerConnection) -> None:
        """Notice a client whose media connection went silent (its network is gone, or it
        moved to another) within ``media_timeout``, long before aioice's consent expiry.

        Every datagram on the connection's socket counts (RTP, RTCP, DTLS, STUN consent
        checks), so a participant that publishes nothing but is alive is never closed. The
        socket counts them (one increment each, nothing per datagram here); the check, every
        eighth of ``media_timeout``, takes a count that moved as heard at that check. So a
        silence is measured from a time no earlier than the last datagram (never closed
        early), and noticed within ``media_timeout`` plus two checks (a quarter of it).
        """
        if self._closed or label in self._last_heard:
            return
        counter = datagram_counter(pc)
        if counter is None:
            return  # a relayed pair: aioice's consent checks stay the only watch
        self._counters[label] = counter
        self._last_count[label] = counter()
        self._last_heard[label] = asyncio.get_running_loop().time()
        if self._media_check is None:
            self._schedule_media_check()

    def _heard(self, label: str, now: float) -> float | None:
        """When ``label``'s connection was last heard, as the watch knows it at ``now``."""
        counter = self._counters.get(label)
        if counter is None:
            return None
        count = counter()
        if count != self._last_count[label]:
            self._last_count[label] = count
            self._last_heard[label] = now
        return self._last_heard[label]

    def _media_check_interval(self) -> float:
        return max(0.125, self._options.media_timeout / 8)

    def _schedule_media_check(self) -> None:
        interval = self._media_check_interval()
        self._media_check = asyncio.get_running_loop().call_later(interval, self._check_media)

    def _check_media(self) -> None:
        self._media_check = None
        if self._closed:
            return
        now = asyncio.get_running_loop().time()
        for label in list(self._last_heard):
            heard = self._heard(label, now)
            if heard is not None and now - heard > self._options.media_timeout:
                self._log.warning(
                    "%s connection silent for %.1f s: client gone", label, now - heard
                )
                self._spawn(self.lost(CloseReason.MEDIA_TIMEOUT), "lost")
                return
        self._schedule_media_check()

    # -- resume ----------------------------------------------------------------------------
    async def lost(self, reason: CloseReason) -> None:
        """The media connections died (silent, or ICE/DTLS failed): the client is told over
        its signalling socket, if that still works, to come back with its resume token."""
        if not await self.suspend(reason):
            await self.close(reason)

    async def suspend(
        self, reason: CloseReason, attachment: int | None = None, grace: float | None = None
    ) -> bool:
        """Keep this participant for ``resume_grace`` seconds without connections.

        Its peer connections close and its own down-tracks with them; its up-tracks stay
        published and silent (the others, the recorder, the verifier keep theirs); the others
        hear ``participant_reconnecting``. ``attachment``: only if that signalling socket still
        carries it. ``grace``: a shorter wait (a page that said it was going: ``unload_grace``),
        never longer than ``resume_grace``. False if it cannot be kept (resume off, closed,
        another socket's).
        """
        if self._closed or self._options.resume_grace <= 0:
            return False
        if attachment is not None and attachment != self._attachment:
            return False
        full = self._options.resume_grace
        wait = full if grace is None else min(grace, full)
        if self._suspended is not None:
            return True
        if wait <= 0:
            return False  # no wait asked for (unload_grace 0): it leaves at once
        self._suspended = reason
        self._settled.clear()
        try:
            await self._suspend(reason, attachment, wait)
        finally:
            self._settled.set()
        return True

    async def _suspend(self, reason: CloseReason, attachment: int | None, wait: float) -> None:
        self._log.info("connection lost (%s): reconnecting", reason.value)
        detached, self._detached = self._detached, None
        if detached is not None and attachment is None:
            detached(reason.value, False)  # its socket may still work: it says "reconnect"
        self._send = _drop
        last_heard = last_heard_at_suspend(
            self._heard("publisher", asyncio.get_running_loop().time()),
            self._media_check_interval(),
            [up.last_arrival for up in self._up_tracks.values()],
        )
        self._stop_watching()
        if self._pending_answer is not None and not self._pending_answer.done():
            self._pending_answer.cancel()
        negotiator = self._negotiator
        if negotiator is not asyncio.current_task():
            negotiator.cancel()
            await asyncio.gather(negotiator, return_exceptions=True)
        for slot in self._slots:
            if slot.down is not None:
                slot.down.close(reason)
                slot.down = None
        self._slots.clear()
        for up in self._up_tracks.values():
            up.detach_source(last_heard)
        self._orphans = list(self._up_tracks.values())
        self._up_by_mid.clear()
        for pc in (self.publisher_pc, self.subscriber_pc):
            await pc.close()
        if self._closed:
            return  # closed meanwhile (the room closed): nothing to wait for
        self._grace_seconds = wait
        self._grace = asyncio.get_running_loop().call_later(wait, self._grace_expired)
        self.room.on_participant_reconnecting(self, reason)

    def _grace_expired(self) -> None:
        self._grace = None
        if not self._closed:
            self._log.info("did not resume within %.1f s", self._grace_seconds)
            self._spawn(self.close(self._suspended or CloseReason.SIGNALLING_LOST), "close")

    async def resume(
        self,
        send: Send,
        detached: Detached,
        taken_over: CloseReason = CloseReason.SIGNALLING_LOST,
    ) -> int:
        """Come back on a new signalling socket with new peer connections; returns the
        attachment it now holds. A participant still attached elsewhere is taken over: that
        socket is told it was replaced, and the others hear ``taken_over`` as the reason it
        was away for a moment (``signalling_lost``: its address changed before the server
        noticed; ``duplicate``: the same participant joined again in another page)."""
        if self._closed:
            raise SignallingError("resume_refused", "participant is closed")
        await self._settled.wait()
        if self._suspended is None:
            previous = self._detached
            self._detached = None
            if previous is not None:
                previous(taken_over.value, True)
            if not await self.suspend(taken_over, attachment=self._attachment):
                raise SignallingError("resume_refused", "participant cannot resume")
        if self._closed:
            raise SignallingError("resume_refused", "participant is closed")
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._attachment += 1
        self._send = send
        self._detached = detached
        self.publisher_pc = _server_pc(self._options)
        self.subscriber_pc = _server_pc(self._options)
        self._watch_connections()
        self._suspended = None
        self.resumes += 1
        self._negotiator = self._spawn(self._negotiate_loop(), "negotiator")
        self._log.info("resumed")
        self.update_subscriptions()
        self.room.on_participant_resumed(self)
        return self._attachment

    def _stop_watching(self) -> None:
        for handle in self._watchdogs.values():
            handle.cancel()
        self._watchdogs.clear()
        if self._media_check is not None:
            self._media_check.cancel()
            self._media_check = None
        self._last_heard.clear()
        self._last_count.clear()
        self._counters.clear()

    # -- closing ---------------------------------------------------------------------------
    async def close(self, reason: CloseReason) -> None:
        """Close everything this participant owns, in order. Idempotent."""
        if self._closed:
            await self._closed_event.wait()
            return
        self._closed = True
        self._close_reason = reason
        self._log.info("closing: %s", reason.value)
        self._stop_watching()
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        self._orphans.clear()
        if self._pending_answer is not None and not self._pending_answer.done():
            self._pending_answer.cancel()
        await self.tasks.close()  # all but this one, when a task of ours is closing us
        # 1. stop receiving from others
        for slot in self._slots:
            if slot.down is not None:
                slot.down.close(reason)
                slot.down = None
        # 2. stop feeding others: closing up-tracks closes their down-tracks
        for up in list(self._up_tracks.values()):
            await self._unpublish(up, reason)
        # 3. transceivers before transports: RTCPeerConnection.close() does that order
        await self.publisher_pc.close()
        await self.subscriber_pc.close()
        self._slots.clear()
        self._closed_event.set()
        await self.room.on_participant_closed(self, reason)


def _primary_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters:
    codecs: list[RTCRtpCodecParameters] = transceiver._codecs  # type: ignore[attr-defined]
    for codec in codecs:
        if codec.mimeType.lower() != f"{transceiver.kind}/rtx":
            return codec
    raise SignallingError("unsupported_codec", "no media codec negotiated")


# Opus fmtp options a publisher's offer may carry that the SFU accepts in its answer, asking
# the publisher to send them (RFC 7587 section 6.1): in-band FEC lets a receiver rebuild a
# lost packet from the next one, DTX sends almost nothing in silence. Both travel inside the
# Opus payload, so forwarding passes them on untouched and every Opus decoder uses them; the
# SFU's own offer to a subscriber says nothing of them, since there an fmtp would describe
# what the SFU receives on that connection (nothing).
OPUS_PASSED_THROUGH = ("useinbandfec", "usedtx")


def _offered_opus_options(sdp: str) -> dict[str, dict[str, int]]:
    """Per mid, the Opus options the offer asks for with a value of 1."""
    options: dict[str, dict[str, int]] = {}
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except ValueError:
        return options
    for media in description.media:
        for codec in media.rtp.codecs:
            if codec.mimeType.lower() == "audio/opus":
                wanted = {k: 1 for k in OPUS_PASSED_THROUGH if str(codec.parameters.get(k)) == "1"}
                if wanted and media.rtp.muxId:
                    options[media.rtp.muxId] = wanted
                break
    return options


def _accept_opus_options(transceiver: RTCRtpTransceiver, offered: dict[str, int] | None) -> None:
    if not offered:
        return
    for codec in getattr(transceiver, "_codecs", None) or []:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters = {**codec.parameters, **offered}


def _keep_primary_codec(transceiver: RTCRtpTransceiver) -> None:
    """Answer with one media codec (and its RTX), so the publisher cannot switch codecs."""
    codecs: list[RTCRtpCodecParameters] | None = getattr(transceiver, "_codecs", None)
    if not codecs:
        return
    primary = _primary_codec(transceiver)
    transceiver._codecs = [  # type: ignore[attr-defined]
        c
        for c in codecs
        if c is primary
        or (c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == primary.payloadType)
    ]
