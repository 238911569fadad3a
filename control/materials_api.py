"""Materials from parties (接收当事人上传材料) and evidence items from officers, over HTTP.

Uploads are the raw file as the request body (``?name=`` gives its file name); the body is
streamed, never held by aiohttp's body limit, and refused as soon as it passes the limit of the
type its first bytes declare. Receiving a file appends ``material.received`` (its SHA-256, size,
type, case and uploader) to the custody log; every download decrypts, re-checks the hash, and
appends ``material.downloaded`` with the actor and reason before the bytes go out.

A party sees and downloads only what it uploaded itself; officers of the case's brigade (and
supervisors) see every material of the case.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from typing import Any

from aiohttp import web

from . import access
from .access import DB, PartyCaller, audit
from .auth import Officer, now_iso
from .db import rows
from .http_json import PayloadTooLarge, json_error
from .materials import TYPES, MaterialRejected, MaterialStore, check_content, sniff

STORE = web.AppKey("materials", MaterialStore)
SNIFF_BYTES = 64
BATCH = 1 << 20

_STATUS: dict[str, type[web.HTTPException]] = {
    "empty": web.HTTPBadRequest, "unsupported_type": web.HTTPUnsupportedMediaType,
    "corrupt": web.HTTPUnprocessableEntity, "too_large": PayloadTooLarge}
_PUBLIC = ("id, case_id, party_id, origin, uploaded_by, name, description, media_type, size, "
           "sha256, content, custody_index, created_at")


def _limits(request: web.Request) -> dict[str, int]:
    from .app import CONFIG

    m = request.app[CONFIG].materials
    return {"image": m.max_image_mb << 20, "pdf": m.max_pdf_mb << 20,
            "video": m.max_video_mb << 20}


def _file_name(request: web.Request) -> str:
    raw = request.query.get("name", "")
    name = re.sub(r"[\x00-\x1f/\\]", "_", raw).strip()[-200:]
    if not name:
        raise json_error(web.HTTPBadRequest, "bad_request", "name: the file's name, as ?name=")
    return name


def _row_json(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["content"] = json.loads(row["content"])
    return row


def case_materials(conn: sqlite3.Connection, case_id: int,
                   party_id: int | None = None) -> list[dict[str, Any]]:
    query = f"SELECT {_PUBLIC} FROM materials WHERE case_id = ?"
    params: list[Any] = [case_id]
    if party_id is not None:
        query += " AND party_id = ? AND origin = 'party'"
        params.append(party_id)
    return [_row_json(r) for r in rows(conn.execute(query + " ORDER BY created_at", params))]


async def _receive(request: web.Request, who: Officer | PartyCaller,
                   case_id: int) -> dict[str, Any]:
    """Stream, type, hash, encrypt and log one upload."""
    from .app import CUSTODY

    name = _file_name(request)
    description = request.query.get("description", "")[:500]
    limits = _limits(request)
    declared = request.content_length
    if declared is not None and declared > max(limits.values()):
        raise json_error(PayloadTooLarge, "too_large",
                         f"at most {max(limits.values()) >> 20} MiB")
    store = request.app[STORE]
    head = b""
    while len(head) < SNIFF_BYTES:
        piece = await request.content.read(SNIFF_BYTES - len(head))
        if not piece:
            break
        head += piece
    try:
        media_type = sniff(head)
        category = TYPES[media_type][0]
        limit = limits[category]
        if declared is not None and declared > limit:
            raise MaterialRejected("too_large",
                                   f"{category} files may be at most {limit >> 20} MiB")
    except MaterialRejected as exc:
        await _refused(request, who, case_id, name, exc)
        raise
    material_id = store.new_id()
    writer = await asyncio.to_thread(store.writer, material_id)
    data = bytearray(head)
    try:
        pending = bytearray(head)
        async for piece in request.content.iter_chunked(1 << 16):
            data += piece
            pending += piece
            if len(data) > limit:
                raise MaterialRejected("too_large",
                                       f"{category} files may be at most {limit >> 20} MiB")
            if len(pending) >= BATCH:
                await asyncio.to_thread(writer.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(writer.write, bytes(pending))
        content = await asyncio.to_thread(check_content, media_type, bytes(data))
        stored = await asyncio.to_thread(writer.finish)
    except MaterialRejected as exc:
        await asyncio.to_thread(writer.abort)
        await _refused(request, who, case_id, name, exc)
        raise
    except BaseException:
        # the client went away mid-upload, or the server is stopping: nothing half-kept
        await asyncio.to_thread(writer.abort)
        raise
    party_id = who.party_id if isinstance(who, PartyCaller) else None
    entry = await request.app[CUSTODY].append_async(
        "material.received", actor=who.actor, case=str(case_id), material=material_id,
        sha256=stored.sha256, size=stored.size, media_type=media_type, name=name,
        origin="party" if party_id is not None else "officer")

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        conn.execute(
            "INSERT INTO materials (id, case_id, party_id, origin, uploaded_by, name, "
            "description, media_type, size, sha256, content, wrapped_key, kek_fingerprint, "
            "custody_index, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (material_id, case_id, party_id, "party" if party_id is not None else "officer",
             who.actor, name, description, media_type, stored.size, stored.sha256,
             json.dumps(content), stored.wrapped_key, stored.kek_fingerprint, entry["index"],
             now_iso()))
        audit(conn, who.actor, "material.received", f"material:{material_id}", case_id,
              sha256=stored.sha256, size=stored.size, media_type=media_type)
        return _row_json(conn.execute(f"SELECT {_PUBLIC} FROM materials WHERE id = ?",
                                      (material_id,)).fetchone())

    return await request.app[DB].run(run)


async def _refused(request: web.Request, who: Officer | PartyCaller, case_id: int, name: str,
                   exc: MaterialRejected) -> None:
    await request.app[DB].run(lambda c: audit(c, who.actor, "material.refused",
                                              f"upload:{name}", case_id, exc.code,
                                              message=exc.message))


def _rejected_response(exc: MaterialRejected) -> web.HTTPException:
    return json_error(_STATUS.get(exc.code, web.HTTPBadRequest), exc.code, exc.message)


async def party_upload(request: web.Request) -> web.Response:
    caller = await access.party(request)
    await request.app[DB].run(lambda c: access.require_open_case(c, caller.case_id))
    try:
        material = await _receive(request, caller, caller.case_id)
    except MaterialRejected as exc:
        raise _rejected_response(exc) from None
    return web.json_response(material, status=201)


async def officer_upload(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)

    def check(conn: sqlite3.Connection) -> None:
        access.load_case(conn, officer, case_id)
        access.require_open_case(conn, case_id)

    await request.app[DB].run(check)
    try:
        material = await _receive(request, officer, case_id)
    except MaterialRejected as exc:
        raise _rejected_response(exc) from None
    return web.json_response(material, status=201)


async def party_list(request: web.Request) -> web.Response:
    caller = await access.party(request)
    found = await request.app[DB].run(
        lambda c: case_materials(c, caller.case_id, caller.party_id))
    return web.json_response({"materials": found})


async def officer_list(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        access.load_case(conn, officer, case_id)
        return case_materials(conn, case_id)

    return web.json_response({"materials": await request.app[DB].run(run)})


def material_row(conn: sqlite3.Connection, case_id: int, material_id: str,
                 party_id: int | None = None) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM materials WHERE id = ? AND case_id = ?",
                       (material_id, case_id)).fetchone()
    if row is None or (party_id is not None and (row["party_id"] != party_id
                                                 or row["origin"] != "party")):
        raise json_error(web.HTTPNotFound, "not_found", "no such material")
    return dict(row)


async def read_checked(request: web.Request, row: dict[str, Any]) -> bytes:
    """Decrypt a material and check it against the hash taken on receipt."""
    from recorder.keys import KeyProblem

    try:
        return await asyncio.to_thread(request.app[STORE].read_all, row["id"],
                                       row["wrapped_key"], row["kek_fingerprint"],
                                       row["sha256"])
    except (KeyProblem, ValueError, OSError) as exc:
        raise json_error(web.HTTPConflict, "integrity_failed",
                         f"the stored material does not check out: {exc}") from None


async def _download(request: web.Request, who: Officer | PartyCaller, case_id: int,
                    row: dict[str, Any], reason: str) -> web.Response:
    from .app import CUSTODY

    data = await read_checked(request, row)
    await request.app[CUSTODY].append_async(
        "material.downloaded", actor=who.actor, reason=reason, case=str(case_id),
        material=row["id"], sha256=row["sha256"])
    await request.app[DB].run(lambda c: audit(c, who.actor, "material.downloaded",
                                              f"material:{row['id']}", case_id, reason))
    extension = TYPES[row["media_type"]][1]
    return web.Response(body=data, content_type=row["media_type"], headers={
        "Content-Disposition": f'attachment; filename="{row["id"]}.{extension}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
        "X-Content-SHA256": row["sha256"]})


async def party_download(request: web.Request) -> web.Response:
    caller = await access.party(request)
    material_id = request.match_info["material"]
    row = await request.app[DB].run(
        lambda c: material_row(c, caller.case_id, material_id, caller.party_id))
    return await _download(request, caller, caller.case_id, row, "own material")


async def officer_download(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    material_id = request.match_info["material"]
    reason = request.query.get("reason", "").strip()[:500]
    if not reason:
        raise json_error(web.HTTPBadRequest, "reason_required",
                         "every access to evidence needs a reason (?reason=)")

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        access.load_case(conn, officer, case_id)
        return material_row(conn, case_id, material_id)

    row = await request.app[DB].run(run)
    return await _download(request, officer, case_id, row, reason)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/party/materials", party_upload)
    app.router.add_get("/api/party/materials", party_list)
    app.router.add_get("/api/party/materials/{material}/content", party_download)
    app.router.add_post("/api/cases/{case}/materials", officer_upload)
    app.router.add_get("/api/cases/{case}/materials", officer_list)
    app.router.add_get("/api/cases/{case}/materials/{material}/content", officer_download)
