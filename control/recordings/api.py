"""HTTP API for recordings and their custody.

Callers are officers with a login (``control/access.py``): an officer reaches the recordings of
its brigade's cases, a supervisor every recording (and only a supervisor changes retention or
deletes media); another brigade's recording answers 404. Every access to evidence needs a
``reason`` and is appended to the custody log with the actor before the answer goes out.
Recording starts by itself when a session's room opens (``recording.sessions``); an officer can
stop and restart it through the session.

Errors are ``{"error": code, "message": text}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import mimetypes
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidTag

from recorder.export import export_recording
from recorder.keys import KeyProblem
from recorder.layout import decrypt_segment, load_json
from recorder.verify import recording_data_key, verify_recording

from .. import access
from ..appkeys import CONFIG, CUSTODY, DB, RECORDER
from ..auth import Officer
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    OFFICER,
    REASON,
    RECORDING,
    SESSION,
    Add,
    in_path,
    json_body,
    op,
    reason_query,
    responses,
)
from ..sessions.api import open_session_room
from . import sealed_exports

logger = logging.getLogger(__name__)

_ID = re.compile(r"^REC_[0-9T]+_[0-9a-f]+$")
_EXPORT = re.compile(r"^EXP_[0-9T]+$")


_STATUS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    404: web.HTTPNotFound,
    409: web.HTTPConflict,
}


def _error(status: int, code: str, message: str | None = None, **wording: Any) -> web.HTTPException:
    """An error answer: ``message`` a ``中文 / English`` text, else the catalog's words."""
    return json_error(_STATUS[status], code, message, **wording)


def case_brigade(conn: sqlite3.Connection, case_id: int) -> str | None:
    row = conn.execute("SELECT brigade FROM cases WHERE id = ?", (case_id,)).fetchone()
    return None if row is None else str(row["brigade"])


def brigade_cases(conn: sqlite3.Connection, brigade: str) -> set[str]:
    """The IDs of a brigade's cases, as recordings name them."""
    return {
        str(r["id"]) for r in conn.execute("SELECT id FROM cases WHERE brigade = ?", (brigade,))
    }


async def _case_brigade(request: web.Request, case: object) -> str | None:
    if not isinstance(case, str) or not case.isdigit():
        return None
    case_id = int(case)
    return await request.app[DB].run(lambda c: case_brigade(c, case_id))


async def _may_touch(request: web.Request, officer: Officer, meta: dict[str, Any]) -> None:
    """Supervisors reach every recording; officers those of their brigade's cases."""
    if officer.role == "supervisor":
        return
    brigade = await _case_brigade(request, meta.get("case"))
    if brigade is None or brigade != officer.brigade:
        raise _error(404, "not_found", detail="no_recording")


async def _reachable_recording(request: web.Request) -> tuple[Officer, Path, dict[str, Any]]:
    """The caller, and the recording in the path if the caller may reach it."""
    officer = await access.officer(request)
    directory, meta = _recording_dir(request)
    await _may_touch(request, officer, meta)
    return officer, directory, meta


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _error(400, "reason_required")
    return value.strip()[:500]


def _recording_dir(request: web.Request) -> tuple[Path, dict[str, Any]]:
    recording_id = request.match_info["recording"]
    if not _ID.match(recording_id):
        raise _error(404, "not_found", detail="no_recording")
    directory = request.app[RECORDER].recordings_dir / recording_id
    try:
        meta = load_json(directory / "recording.json")
    except FileNotFoundError:
        raise _error(404, "not_found", detail="no_recording") from None
    return directory, meta


async def _log(
    request: web.Request,
    entry_type: str,
    officer: Officer,
    meta: dict[str, Any],
    reason: str,
    **fields: Any,
) -> dict[str, Any]:
    return await request.app[CUSTODY].append_async(
        entry_type,
        actor=officer.actor,
        reason=reason,
        case=meta.get("case", ""),
        room=meta.get("room", ""),
        recording=meta["recording_id"],
        **fields,
    )


async def recording_control(request: web.Request) -> web.Response:
    """Start or stop recording a session's room (it starts by itself when the room opens)."""
    officer = await access.officer(request)
    body = await read_object(request, empty_ok=True)
    action = body.get("action")
    reason = _reason(body.get("reason"))
    case_id, _, room = await open_session_room(request, officer)
    recorder = request.app[RECORDER]
    if action == "start":
        if room.room_id in recorder.active:
            raise _error(409, "already_recording")
        recording = await recorder.start(
            room, actor=officer.actor, reason=reason, case=str(case_id)
        )
        return web.json_response(recording.status())
    if action == "stop":
        if room.room_id not in recorder.active:
            raise _error(409, "not_recording")
        manifest = await recorder.stop(room.room_id, actor=officer.actor, reason=reason)
        return web.json_response(
            {
                "recording_id": manifest["recording_id"],
                "status": manifest["status"],
                "tracks": len(manifest["tracks"]),
            }
        )
    raise _error(400, "bad_request", key="bad_request.recording_action")


async def list_recordings(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    recorder = request.app[RECORDER]
    cases = await request.app[DB].run(lambda c: brigade_cases(c, officer.brigade))

    def scan() -> list[dict[str, Any]]:
        out = []
        for path in sorted(recorder.recordings_dir.glob("*/recording.json")):
            meta = load_json(path)
            if officer.role == "supervisor" or meta.get("case") in cases:
                out.append(
                    {
                        k: meta.get(k)
                        for k in (
                            "recording_id",
                            "room",
                            "case",
                            "state",
                            "started_at",
                            "stopped_at",
                        )
                    }
                )
        return out

    return web.json_response({"recordings": await asyncio.to_thread(scan)})


async def get_manifest(request: web.Request) -> web.Response:
    officer, directory, meta = await _reachable_recording(request)
    reason = _reason(request.query.get("reason"))
    try:
        body = await asyncio.to_thread((directory / "manifest.json").read_bytes)
    except FileNotFoundError:
        raise _error(409, "not_sealed") from None
    await _log(request, "recording.viewed", officer, meta, reason, what="manifest")
    return web.Response(body=body, content_type="application/json")


async def verify(request: web.Request) -> web.Response:
    officer, directory, meta = await _reachable_recording(request)
    reason = _reason(request.query.get("reason"))
    custody = request.app[CUSTODY]
    findings = await asyncio.to_thread(
        verify_recording,
        directory,
        custody.directory,
        custody.public_key,
        request.app[RECORDER].kek,
    )
    ok = all(f.ok for f in findings)
    await _log(request, "recording.verified", officer, meta, reason, result="ok" if ok else "fail")
    return web.json_response(
        {
            "ok": ok,
            # each check in English (what tools read) and in Chinese, for the console to show
            "findings": [
                {
                    "ok": f.ok,
                    "check": f.check,
                    "detail": f.detail,
                    "check_zh": f.check_zh,
                    "detail_zh": f.detail_zh,
                }
                for f in findings
            ],
        }
    )


def _export_key(recorder: Any, directory: Path, export_id: str) -> bytes:
    """The export's key, derived from the recording's data key (sealed_exports.py)."""
    manifest = load_json(directory / "manifest.json")
    data_key = recorder.kek.unwrap(
        manifest["key"]["wrapped_data_key"], manifest["key"]["kek_fingerprint"]
    )
    return sealed_exports.export_key(data_key, manifest["recording_id"], export_id)


def _build_export(
    *,
    recorder: Any,
    custody: Any,
    tmp_root: Path,
    directory: Path,
    name: str,
    actor: str,
    reason: str,
    label_font: Path | None,
) -> dict[str, Any]:
    """Build the package in a private temporary directory, keep it only encrypted."""
    sealed_exports.clear_stale_builds(tmp_root)
    build = sealed_exports.build_dir(tmp_root)
    try:
        result = export_recording(
            recording_dir=directory,
            custody=custody,
            kek=recorder.kek,
            signing_key=recorder.signing_key,
            out=build / "package",
            actor=actor,
            reason=reason,
            label_font=label_font,
        )
        exports = directory / "exports"
        exports.mkdir(exist_ok=True, mode=0o700)
        sealed_exports.seal_package(
            build / "package", exports / name, _export_key(recorder, directory, name)
        )
        return result
    finally:
        shutil.rmtree(build, ignore_errors=True)


async def export(request: web.Request) -> web.Response:
    officer, directory, _ = await _reachable_recording(request)
    reason = _reason((await read_object(request, empty_ok=True)).get("reason"))
    name = "EXP_" + datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    try:
        result = await asyncio.to_thread(
            _build_export,
            recorder=request.app[RECORDER],
            custody=request.app[CUSTODY],
            tmp_root=request.app[CONFIG].data_dir / "tmp",
            directory=directory,
            name=name,
            actor=officer.actor,
            reason=reason,
            label_font=request.app[CONFIG].recording.label_font_path,
        )
    except (KeyProblem, ValueError) as exc:
        raise _error(409, "cannot_export", cause=str(exc)) from None
    return web.json_response(
        {"export": name, "files": sorted(result["files"]), "log_index": result["export_index"]}
    )


async def download(request: web.Request) -> web.StreamResponse:
    """One file of an export, decrypted as it is sent; logged as downloaded first."""
    officer, directory, meta = await _reachable_recording(request)
    reason = _reason(request.query.get("reason"))
    name = request.match_info["export"]
    if not _EXPORT.match(name):
        raise _error(404, "not_found", detail="no_export")
    out = directory / "exports" / name
    index = await asyncio.to_thread(sealed_exports.load_index, out)
    if index is None:
        raise _error(404, "not_found", detail="no_export")
    path = request.match_info["path"]
    if path not in index["files"]:  # an exact name from the index: no path is ever resolved
        raise _error(404, "not_found", detail="no_export_file")
    key = await asyncio.to_thread(_export_key, request.app[RECORDER], directory, name)
    sealed = await asyncio.to_thread(sealed_exports.SealedFile, out, index, path, key)
    try:
        await _log(request, "recording.downloaded", officer, meta, reason, export=name, file=path)
        response = web.StreamResponse(
            headers={
                "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
                "Content-Length": str(sealed.size),
                "Cache-Control": "no-store",
                "Content-Disposition": f'attachment; filename="{Path(path).name}"',
            }
        )
        await response.prepare(request)
        while True:
            try:
                chunk = await asyncio.to_thread(sealed.read_chunk)
            except InvalidTag:
                logger.error(
                    "export %s/%s of %s: a chunk fails its check; the download is cut short",
                    name,
                    path,
                    meta["recording_id"],
                )
                response.force_close()  # the client sees a short body and a closed connection
                break  # never serve altered evidence
            if not chunk:
                break
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(sealed.close)


async def access_log(request: web.Request) -> web.Response:
    officer, _, meta = await _reachable_recording(request)
    reason = _reason(request.query.get("reason"))
    custody = request.app[CUSTODY]

    def read() -> list[dict[str, Any]]:
        custody.refresh()
        return [
            e
            for e in custody.entries()
            if e.get("recording") == meta["recording_id"] and e["type"] != "segment.written"
        ]

    entries = await asyncio.to_thread(read)
    await _log(request, "recording.viewed", officer, meta, reason, what="access log")
    return web.json_response({"entries": entries})


async def stream_track(request: web.Request) -> web.StreamResponse:
    """Play one track: decrypted segment by segment as it is sent; logged as streamed."""
    officer, directory, meta = await _reachable_recording(request)
    reason = _reason(request.query.get("reason"))
    if meta.get("state") != "sealed":
        raise _error(409, "not_available", state=meta.get("state"))
    manifest = await asyncio.to_thread(load_json, directory / "manifest.json")
    track = next(
        (t for t in manifest["tracks"] if t["track_id"] == request.match_info["track"]), None
    )
    if track is None:
        raise _error(404, "not_found", detail="no_track")
    recorder = request.app[RECORDER]
    # the data key as rewrapped by any KEK rotation (recording.json), else the sealed one
    data_key = await asyncio.to_thread(recording_data_key, recorder.kek, directory, manifest)
    await _log(request, "recording.streamed", officer, meta, reason, track=track["track_id"])
    response = web.StreamResponse(
        headers={
            "Content-Type": "video/webm"
            if track.get("container") == "webm"
            else "video/x-matroska",
            "Content-Length": str(sum(int(seg["bytes"]) for seg in track["segments"])),
            "Cache-Control": "no-store",
        }
    )
    await response.prepare(request)
    for seg in track["segments"]:
        path = directory / "segments" / track["track_id"] / f"{seg['segment']:06d}.seg"
        stored = await asyncio.to_thread(path.read_bytes)
        plain = await asyncio.to_thread(
            decrypt_segment,
            stored,
            data_key,
            manifest["recording_id"],
            track["track_id"],
            seg["segment"],
        )
        if hashlib.sha256(plain).hexdigest() != seg["sha256"]:
            break  # never serve altered evidence; the client sees a short body
        await response.write(plain)
    await response.write_eof()
    return response


async def set_retention(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    if officer.role != "supervisor":
        raise _error(403, "forbidden", detail="supervisor_retention")
    _, meta = _recording_dir(request)
    body = await read_object(request, empty_ok=True)
    reason = _reason(body.get("reason"))
    try:
        until = datetime.date.fromisoformat(str(body.get("retain_until")))
    except ValueError:
        raise _error(400, "bad_request", key="bad_request.date", field="retain_until") from None
    try:
        entry = await asyncio.to_thread(
            request.app[RECORDER].set_retention,
            meta["recording_id"],
            until,
            actor=officer.actor,
            reason=reason,
        )
    except ValueError as exc:
        raise _error(409, "conflict", detail="retention", cause=str(exc)) from None
    return web.json_response({"retain_until": entry["new"], "log_index": entry["index"]})


async def delete_media(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    if officer.role != "supervisor":
        raise _error(403, "forbidden", detail="supervisor_delete")
    _, meta = _recording_dir(request)
    reason = _reason(request.query.get("reason"))
    try:
        entry = await asyncio.to_thread(
            request.app[RECORDER].delete_media,
            meta["recording_id"],
            actor=officer.actor,
            reason=reason,
        )
    except ValueError as exc:
        raise _error(409, "conflict", detail="retention", cause=str(exc)) from None
    return web.json_response(
        {
            "deleted": meta["recording_id"],
            "log_index": entry["index"],
            "segments_removed": entry["segments_removed"],
        }
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/cases/{case}/sessions/{session}/recording", recording_control)
    app.router.add_get("/api/recordings", list_recordings)
    app.router.add_get("/api/recordings/{recording}/manifest", get_manifest)
    app.router.add_get("/api/recordings/{recording}/verify", verify)
    app.router.add_post("/api/recordings/{recording}/export", export)
    app.router.add_get("/api/recordings/{recording}/exports/{export}/{path:.+}", download)
    app.router.add_get("/api/recordings/{recording}/access-log", access_log)
    app.router.add_get("/api/recordings/{recording}/tracks/{track}/media", stream_track)
    app.router.add_post("/api/recordings/{recording}/retention", set_retention)
    app.router.add_delete("/api/recordings/{recording}", delete_media)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    add(
        "/api/cases/{case}/sessions/{session}/recording",
        "post",
        op(
            "Stop or restart the session's recording (it starts with the room)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="recordings",
            body=json_body(
                {"action": {"type": "string", "enum": ["start", "stop"]}, "reason": REASON},
                ["action", "reason"],
            ),
        ),
        [CASE, SESSION],
    )
    add(
        "/api/recordings",
        "get",
        op(
            "Recordings of the officer's brigade (a supervisor: all)",
            OFFICER,
            responses("200", ANY_OBJECT, "401"),
            tag="recordings",
        ),
    )
    for suffix, summary in (
        ("manifest", "The sealed manifest"),
        ("verify", "Run the offline checks"),
        ("access-log", "The recording's custody entries"),
    ):
        add(
            f"/api/recordings/{{recording}}/{suffix}",
            "get",
            op(
                f"{summary} (logged)",
                OFFICER,
                responses("200", ANY_OBJECT, "400 401 404 409"),
                tag="recordings",
                params=[reason_query()],
            ),
            [RECORDING],
        )
    add(
        "/api/recordings/{recording}/export",
        "post",
        op(
            "Write an export package for court (logged)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 404 409"),
            tag="recordings",
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [RECORDING],
    )
    add(
        "/api/recordings/{recording}/exports/{export}/{path}",
        "get",
        op(
            "Download one file of an export package (logged)",
            OFFICER,
            responses(
                "200",
                {"type": "string", "format": "binary"},
                "400 401 404",
                "application/octet-stream",
            ),
            tag="recordings",
            params=[reason_query()],
        ),
        [
            RECORDING,
            in_path("export", {"type": "string", "pattern": "^EXP_[0-9T]+$"}),
            in_path("path", {"type": "string"}),
        ],
    )
    add(
        "/api/recordings/{recording}/tracks/{track}/media",
        "get",
        op(
            "Play one recorded track, decrypted and re-hashed as it is sent (logged)",
            OFFICER,
            responses(
                "200", {"type": "string", "format": "binary"}, "400 401 404 409", "video/webm"
            ),
            tag="recordings",
            params=[reason_query()],
        ),
        [RECORDING, in_path("track", {"type": "string"})],
    )
    add(
        "/api/recordings/{recording}/retention",
        "post",
        op(
            "Change how long the recording is kept (supervisors)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="recordings",
            body=json_body(
                {"retain_until": {"type": "string", "format": "date"}, "reason": REASON},
                ["retain_until", "reason"],
            ),
        ),
        [RECORDING],
    )
    add(
        "/api/recordings/{recording}",
        "delete",
        op(
            "Delete the media once retention has passed (supervisors)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag="recordings",
            params=[reason_query()],
        ),
        [RECORDING],
    )
