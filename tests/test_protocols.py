"""The protocols of ``mediaserver/protocols.py`` are the interfaces: mypy holds the concrete
classes to them, room observers are called through them, and an up-track's unmute reaches
every kind of down-track through ``DownTrack.resume``."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from mediaserver.protocols import CloseReason, Participant, UpTrack
from mediaserver.room import SfuRoom
from tests.conftest import Server, join, wait_until

ROOT = Path(__file__).resolve().parent.parent

BROKEN = '''
from mediaserver.protocols import CloseReason, DownTrack, Packet


class NoResume:
    """A down-track that forgot resume()."""

    @property
    def down_id(self) -> str:
        return "d"

    def write(self, packet: Packet) -> None:
        pass

    def close(self, reason: CloseReason) -> None:
        pass


def as_down_track(down: NoResume) -> DownTrack:
    return down
'''


async def test_mypy_holds_the_concrete_classes_to_the_protocols(tmp_path: Path) -> None:
    broken = tmp_path / "broken_down_track.py"
    broken.write_text(BROKEN)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mypy",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-error-summary",
        "mediaserver/conformance.py",
        str(broken),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if ": error:" in line]
    # the SFU's own classes satisfy every protocol...
    assert not [line for line in lines if "conformance.py" in line], out.decode()
    # ...and a class that lacks a member is caught, by the member's name
    assert any("broken_down_track.py" in line for line in lines), out.decode()
    assert "resume" in out.decode()


class _Seen:
    """A room observer as the recorder or the verifier is one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_participant_joined(self, participant: Participant) -> None:
        self.events.append(("joined", participant.participant_id))

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        self.events.append(("left", f"{participant.participant_id} {reason.value}"))

    def on_track_published(self, up: UpTrack) -> None:
        self.events.append(("published", up.info.kind))

    def on_track_unpublished(self, up: UpTrack) -> None:
        self.events.append(("unpublished", up.info.kind))

    def on_room_closed(self, reason: CloseReason) -> None:
        self.events.append(("room_closed", reason.value))


class _Failing(_Seen):
    """An observer that fails on every event after noting it."""

    def on_participant_joined(self, participant: Participant) -> None:
        super().on_participant_joined(participant)
        raise RuntimeError("observer bug")

    def on_track_published(self, up: UpTrack) -> None:
        super().on_track_published(up)
        raise RuntimeError("observer bug")

    def on_room_closed(self, reason: CloseReason) -> None:
        super().on_room_closed(reason)
        raise RuntimeError("observer bug")


async def test_room_observers_hear_a_call_in_order_and_one_failing_stops_nobody(
    server: Server, clients: list[PeerClient], caplog: pytest.LogCaptureFixture
) -> None:
    failing, seen = _Failing(), _Seen()

    def observe(room: SfuRoom) -> None:
        room.add_observer(failing)  # first, so that the second is called after it failed
        room.add_observer(seen)
        room.add_observer(seen)  # added once only

    server.sfu.on_room_created.append(observe)
    with caplog.at_level(logging.ERROR, logger="mediaserver.room"):
        host = await join(server, clients, "observed", "host")
        await host.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
        room = server.sfu.rooms["observed"]
        await wait_until(lambda: len(room.up_tracks()) == 2, what="tracks published")
        await host.leave()
        await host.wait_for(lambda m: m["type"] == "bye")
        await wait_until(lambda: "observed" not in server.sfu.rooms, what="room closed")

    events = seen.events
    assert events[0] == ("joined", "host")
    assert sorted(events[1:3]) == [("published", "audio"), ("published", "video")]
    assert sorted(events[3:5]) == [("unpublished", "audio"), ("unpublished", "video")]
    assert events[5:] == [("left", "host left"), ("room_closed", "room_empty")]
    assert failing.events == events  # it was called for everything, and raised three times
    failures = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("room observer")
    ]
    assert sorted(f.rsplit(" ", 1)[1] for f in failures) == [
        "on_participant_joined",
        "on_room_closed",
        "on_track_published",
        "on_track_published",
    ]


async def test_unmute_resumes_rtp_and_local_down_tracks_alike(
    server: Server, clients: list[PeerClient]
) -> None:
    pub = await join(server, clients, "m", "pub")
    await join(server, clients, "m", "sub")
    await pub.publish(PatternVideoTrack(fps=15))
    room = server.sfu.rooms["m"]
    await wait_until(lambda: len(room.up_tracks()) == 1, what="track published")
    up = room.up_tracks()[0]
    local = room.subscribe_local(up.info.track_id)
    subscriber = room.participants["sub"]
    await wait_until(
        lambda: any(d.packets for d in subscriber.down_tracks()),
        timeout=20,
        what="forwarding to the subscriber",
    )
    await wait_until(lambda: local.received > 0, what="packets to the local subscriber")

    for muted in (True, False):
        await pub.send({"type": "mute", "track": up.info.track_id, "muted": muted})

        def took_effect(muted: bool = muted) -> bool:
            return up.muted is muted

        await wait_until(took_effect, what=f"muted={muted}")
    down = subscriber.down_tracks()[0]
    rtp_before, local_before = down.packets, local.received
    await wait_until(
        lambda: down.packets > rtp_before and local.received > local_before,
        timeout=20,
        what="both down-tracks resumed",
    )
    local.close()
