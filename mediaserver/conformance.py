"""Where mypy proves that the concrete classes are the protocols of :mod:`.protocols`.

Each function below takes a concrete object and returns it as its protocol: if a class loses
or changes a member a consumer relies on, ``mypy`` fails here, next to the protocol's name,
rather than in the recorder or the verifier. The in-process consumers' room observers are
checked here too (the recorder's :class:`recorder.recording.Recording`): the room calls them by
the protocol's methods. Nothing calls these at run time (and nothing of the SFU imports this
module, so the SFU does not depend on its consumers).
"""

from __future__ import annotations

from recorder.recording import Recording

from .forwarding import ForwardedUpTrack, RtpDownTrack
from .local import LocalSubscriber
from .participant import ParticipantRoom, SfuParticipant
from .protocols import DownTrack, Participant, Room, RoomObserver, Subscriber, UpTrack
from .room import SfuRoom


def up_track(up: ForwardedUpTrack) -> UpTrack:
    return up


def rtp_down_track(down: RtpDownTrack) -> DownTrack:
    return down


def local_down_track(local: LocalSubscriber) -> DownTrack:
    return local


def local_subscriber(local: LocalSubscriber) -> Subscriber:
    return local


def participant(member: SfuParticipant) -> Participant:
    return member


def room(sfu_room: SfuRoom) -> Room:
    return sfu_room


def participant_room(sfu_room: SfuRoom) -> ParticipantRoom:
    return sfu_room


def recording_observer(recording: Recording) -> RoomObserver:
    return recording
