"""Evidence display (视频示证): an officer shows a case's material to everyone in the call.

The item plays into the room as one server-side video track (:mod:`mediaserver.server_track`):
a video from its own packets when its codec fits the room, else transcoded once; a photo or a
PDF page encoded once as a picture. Before it plays the material is decrypted and its hash
checked against the one taken on receipt. The custody log gets ``evidence.display_started``
(who showed which item, its hash, how it was sent, who was in the room) and
``evidence.display_ended`` (everyone who was in the room at any moment of the display, frames
sent, why it ended). A running recording records the track like any other.

One display per room at a time: showing another item ends the current one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from common.tasks import TaskSet
from mediaserver.protocols import CloseReason, Participant, UpTrack
from mediaserver.room import SfuRoom
from mediaserver.server_track import (
    AudioFilePlayer,
    Player,
    ServerTrack,
    StillPlayer,
    VideoFilePlayer,
    has_audio,
)
from recorder.custody import CustodyLog

from .. import access
from ..access import text
from ..appkeys import CONFIG, DB, DISPLAYS
from ..db import Database
from ..events import EventHub
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    MATERIAL_ID,
    OFFICER,
    REASON,
    SESSION,
    Add,
    json_body,
    op,
    responses,
)
from ..materials.api import read_checked
from ..materials.records import material_row
from ..materials.store import TYPES
from ..refusals import done
from . import store
from .api import open_session_room

logger = logging.getLogger(__name__)

PARTICIPANT = "server-evidence"


class Display:
    """One item on screen in one room; a room observer that notes who saw it."""

    def __init__(
        self,
        manager: DisplayManager,
        display_id: int,
        room: SfuRoom,
        case_id: int,
        material: dict[str, Any],
        tracks: list[ServerTrack],
        actor: str,
    ) -> None:
        self.manager = manager
        self.display_id = display_id
        self.room = room
        self.case_id = case_id
        self.material = material
        self.tracks = tracks  # the picture, and a video's sound when it has one
        self.track = tracks[0]
        self.actor = actor
        self.viewers: set[str] = set(room.participants)
        self.started = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self._ended = False

    # -- room observer ---------------------------------------------------------------------
    def on_participant_joined(self, participant: Participant) -> None:
        self.viewers.add(participant.participant_id)

    def on_participant_left(self, participant: Participant, reason: CloseReason) -> None:
        pass

    def on_track_published(self, up: UpTrack) -> None:
        pass

    def on_track_unpublished(self, up: UpTrack) -> None:
        pass

    def on_room_closed(self, reason: CloseReason) -> None:
        self.manager.spawn(
            self.end("room_closed", actor="server", reason="the room closed"),
            f"end display {self.display_id}",
        )

    # -- life ------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            # picture and sound start together and keep their own media times
            await asyncio.gather(*(track.play() for track in self.tracks))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("evidence display %d failed", self.display_id)
            await self.end("failed", actor="server", reason=f"playback failed: {exc}")
            return
        await self.end("finished", actor="server", reason="the item played to its end")

    async def end(self, how: str, *, actor: str, reason: str) -> None:
        """Take the item off screen and log who saw it. Idempotent."""
        if self._ended:
            return
        self._ended = True
        self.room.remove_observer(self)
        if self.manager.displays.get(self.room.room_id) is self:
            del self.manager.displays[self.room.room_id]
        task = self.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for track in self.tracks:
            await self.room.remove_server_track(track.up, CloseReason.UNPUBLISHED)
            await track.close(CloseReason.UNPUBLISHED)
        viewers = sorted(self.viewers)
        await self.manager.custody.append_async(
            "evidence.display_ended",
            actor=actor,
            reason=reason,
            case=str(self.case_id),
            room=self.room.room_id,
            display=self.display_id,
            material=self.material["id"],
            ended=how,
            viewers=viewers,
            frames_sent=self.track.frames_sent,
            seconds=round(time.monotonic() - self.started, 3),
        )
        await self.manager.db.run(
            lambda c: store.display_ended(
                c, self.display_id, self.case_id, actor, how, reason, viewers
            )
        )
        self.manager.events.publish(
            self.case_id,
            "display",
            self.room.room_id,
            state="ended",
            display=self.display_id,
            material=self.material["id"],
            ended=how,
        )


class DisplayManager:
    """Owns every running display and its task."""

    def __init__(self, custody: CustodyLog, db: Database, events: EventHub) -> None:
        self.custody = custody
        self.db = db
        self.events = events
        self.displays: dict[str, Display] = {}
        self._tasks = TaskSet("displays", logger)  # each display's playback, and its end

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._tasks.spawn(coro, name)

    async def close(self) -> None:
        for display in list(self.displays.values()):
            await display.end("shutdown", actor="server", reason="the server is stopping")
        # an ending display still writes its custody entry: waited for, not cancelled
        await self._tasks.drain()
        await self._tasks.close()


def _room_video_codecs(room: SfuRoom) -> set[str]:
    return {
        up.info.mime_type.lower()
        for p in room.participants.values()
        for up in p.up_tracks.values()
        if up.info.kind == "video"
    }


def _players(material: dict[str, Any], data: bytes, page: int, codecs: set[str]) -> list[Player]:
    category = TYPES[material["media_type"]][0]
    if category == "image":
        return [StillPlayer.from_image(data)]
    if category == "pdf":
        return [StillPlayer.from_pdf_page(data, page)]
    players: list[Player] = [VideoFilePlayer(data, codecs)]
    if has_audio(data):
        players.append(AudioFilePlayer(data))
    return players


async def start_display(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    reason = text(body, "reason", max_len=500)
    material_id = body.get("material_id")
    page = body.get("page", 1)
    if not isinstance(material_id, str) or len(material_id) > 64 or access.id_value(page) is None:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            key="bad_request.display",
        )
    case_id, session_id, room = await open_session_room(request, officer)
    material = done(await request.app[DB].run(lambda c: material_row(c, case_id, material_id)))
    data = await read_checked(request, material)
    codecs = _room_video_codecs(room)
    try:
        players = await asyncio.to_thread(_players, material, data, page, codecs)
    except ValueError as exc:
        raise json_error(web.HTTPUnprocessableEntity, "cannot_show", cause=str(exc)) from None
    player = players[0]
    sound = players[1].mode if len(players) > 1 else None
    manager = request.app[DISPLAYS]
    current = manager.displays.get(room.room_id)
    if current is not None:
        await current.end("replaced", actor=officer.actor, reason="another item is shown")
    if room.closed:
        for each in players:
            each.close()
        raise json_error(web.HTTPConflict, "empty", detail="room_closed")
    display_id = await request.app[DB].run(
        lambda c: store.display_started(
            c, session_id, case_id, officer.actor, material_id, player.mode, reason
        )
    )
    pli = request.app[CONFIG].media.pli_min_interval
    tracks = [
        ServerTrack(
            f"evidence-{display_id}" + ("-audio" if n else ""), PARTICIPANT, p, pli_min_interval=pli
        )
        for n, p in enumerate(players)
    ]
    track = tracks[0]
    display = Display(manager, display_id, room, case_id, material, tracks, officer.actor)
    await manager.custody.append_async(
        "evidence.display_started",
        actor=officer.actor,
        reason=reason,
        case=str(case_id),
        room=room.room_id,
        display=display_id,
        material=material_id,
        sha256=material["sha256"],
        media_type=material["media_type"],
        mode=player.mode,
        audio=sound,
        page=page if TYPES[material["media_type"]][0] == "pdf" else None,
        viewers=sorted(display.viewers),
    )
    manager.displays[room.room_id] = display
    room.add_observer(display)
    for published in tracks:
        room.add_server_track(published.up)
    display.task = manager.spawn(display.run(), f"display {display_id}")
    manager.events.publish(
        case_id,
        "display",
        room.room_id,
        state="shown",
        display=display_id,
        material=material_id,
        mode=player.mode,
        by=officer.actor,
    )
    return web.json_response(
        {
            "display": display_id,
            "mode": player.mode,
            "audio": sound,
            "track": track.up.info.track_id,
            "participant": PARTICIPANT,
            "codec": player.mime_type,
        },
        status=201,
    )


async def stop_display(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    reason = text(await read_object(request), "reason", max_len=500)
    _, _, room = await open_session_room(request, officer)
    display = request.app[DISPLAYS].displays.get(room.room_id)
    if display is None:
        raise json_error(web.HTTPConflict, "nothing_shown")
    await display.end("stopped", actor=officer.actor, reason=reason)
    return web.json_response({"stopped": display.display_id, "viewers": sorted(display.viewers)})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/sessions/{session}/display", start_display)
    app.router.add_post("/api/cases/{case}/sessions/{session}/display/stop", stop_display)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/sessions/{session}/display",
        "post",
        op(
            "Show an evidence item to everyone in the call",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404 409 422"),
            tag="evidence",
            body=json_body(
                {"material_id": MATERIAL_ID, "page": ID, "reason": REASON},
                ["material_id", "reason"],
            ),
            description="A video plays from its own packets when its codec fits the room, else "
            "transcoded once; a photo or PDF page is a still. Start, end and viewers "
            "go to the custody log.",
        ),
        [CASE, SESSION],
    )
    add(
        "/api/cases/{case}/sessions/{session}/display/stop",
        "post",
        op(
            "Take the shown item off",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="evidence",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [CASE, SESSION],
    )
