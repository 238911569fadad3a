"""Materials from parties (接收当事人上传材料) and evidence items from officers, over HTTP.

Uploads are the raw file as the request body (``?name=`` gives its file name); the body is
streamed, never held by aiohttp's body limit nor in memory: each batch goes (in a thread) into
the encrypted partial file, and the upload is refused as soon as it passes the limit of the type
its first bytes declare or what its party's and its case's totals have left. The content checks
then read that file back (at most :attr:`UploadGate.CHECKS` at once per process). An uploader
runs at most ``materials.concurrent_uploads`` uploads at once (429 with ``Retry-After``).
Receiving a file appends ``material.received`` (its SHA-256, size, type, case and uploader) to
the custody log; every download decrypts, re-checks the hash, and appends
``material.downloaded`` with the actor and reason before the bytes go out, then sends them in
chunks (the evidence display, which plays from memory, uses :func:`read_checked`).

A party sees and downloads only what it uploaded itself; officers of the case's brigade (and
supervisors) see every material of the case.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from recorder.keys import KeyProblem

from .. import access
from ..access import PartyCaller, audit
from ..appkeys import CONFIG, CUSTODY, DB, GATE, STORE
from ..auth import Officer
from ..config import MaterialsConfig
from ..http.jsonio import PayloadTooLarge, json_error
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    MATERIAL_ID,
    MEDIA_TYPES,
    OFFICER,
    PARTY,
    Add,
    in_path,
    op,
    query,
    raw_body,
    reason_query,
    responses,
)
from ..refusals import done, refused
from . import records
from .records import Room, room_left
from .store import (
    CATEGORY_ZH,
    TYPES,
    ContentBudget,
    MaterialRejected,
    MaterialWriter,
    StoredMaterial,
    check_content,
    sniff,
)

SNIFF_BYTES = 64
BATCH = 1 << 20
RETRY_AFTER = 5  # seconds, with 429 too_many_uploads

_STATUS: dict[str, type[web.HTTPException]] = {
    "empty": web.HTTPBadRequest,
    "unsupported_type": web.HTTPUnsupportedMediaType,
    "corrupt": web.HTTPUnprocessableEntity,
    "too_large": PayloadTooLarge,
    "too_many_pixels": PayloadTooLarge,
    "too_many_pages": PayloadTooLarge,
    "page_too_large": web.HTTPUnprocessableEntity,
    "quota_exceeded": PayloadTooLarge,
}


def _settings(request: web.Request) -> MaterialsConfig:
    return request.app[CONFIG].materials


def _limits(m: MaterialsConfig) -> dict[str, int]:
    return {"image": m.max_image_mb << 20, "pdf": m.max_pdf_mb << 20, "video": m.max_video_mb << 20}


def _too_large(category: str, limit: int) -> MaterialRejected:
    return MaterialRejected(
        "too_large",
        f"{CATEGORY_ZH[category]}最大 {limit >> 20} MiB / "
        f"{category} files may be at most {limit >> 20} MiB",
    )


class UploadGate:
    """What uploads share in one process: the content checks (at most CHECKS at once: each may
    hold a decoded photo of the pixel budget), and the last step, which checks the quotas once
    more and keeps the file, one upload at a time so that the next one counts it."""

    CHECKS = 2

    def __init__(self) -> None:
        self.checks = asyncio.Semaphore(self.CHECKS)
        self.keeping = asyncio.Lock()


def _over_quota(room: Room) -> MaterialRejected:
    return MaterialRejected(
        "quota_exceeded", f"{room.zh}，放不下此文件 / {room.en}; this file does not fit"
    )


def _file_name(request: web.Request) -> str:
    raw = request.query.get("name", "")
    name = re.sub(r"[\x00-\x1f/\\]", "_", raw).strip()[-200:]
    if not name:
        raise json_error(
            web.HTTPBadRequest, "bad_request", key="bad_request.file_name", field="name"
        )
    return name


async def _receive(
    request: web.Request, who: Officer | PartyCaller, case_id: int
) -> dict[str, Any]:
    """Stream, type, hash, encrypt, check and log one upload, holding one of the uploader's
    slots throughout; the body goes straight into the encrypted file, never into memory."""
    name = _file_name(request)
    settings = _settings(request)
    limits = _limits(settings)
    declared = request.content_length
    if declared is not None and declared > max(limits.values()):
        largest = max(limits.values()) >> 20
        refused = MaterialRejected("too_large", f"文件最大 {largest} MiB / at most {largest} MiB")
        await _refused(request, who, case_id, name, refused)
        raise refused
    store = request.app[STORE]
    # On the loop: opening and trying to lock an empty file takes microseconds, and a slot
    # taken in a thread whose awaiting task is cancelled would be lost, locked, for good.
    slot = store.take_upload_slot(who.actor, settings.concurrent_uploads)
    if slot is None:
        refusal = json_error(
            web.HTTPTooManyRequests,
            "too_many_uploads",
            f"同时最多上传 {settings.concurrent_uploads} 个文件，请等前面的上传完成后再试 / "
            f"at most {settings.concurrent_uploads} uploads at once; try again when one "
            "has finished",
        )
        refusal.headers["Retry-After"] = str(RETRY_AFTER)
        raise refusal
    try:
        return await _receive_in_slot(request, who, case_id, name, settings, declared)
    finally:
        store.give_back_slot(slot)


async def _receive_in_slot(
    request: web.Request,
    who: Officer | PartyCaller,
    case_id: int,
    name: str,
    settings: MaterialsConfig,
    declared: int | None,
) -> dict[str, Any]:

    description = request.query.get("description", "")[:500]
    store = request.app[STORE]
    gate = request.app[GATE]
    party_id = who.party_id if isinstance(who, PartyCaller) else None
    database = request.app[DB]
    room = await database.run(lambda c: room_left(c, settings, case_id, party_id))
    head = b""
    while len(head) < SNIFF_BYTES:
        piece = await request.content.read(SNIFF_BYTES - len(head))
        if not piece:
            break
        head += piece
    try:
        if room.bytes <= 0 or (declared is not None and declared > room.bytes):
            raise _over_quota(room)
        media_type = sniff(head)
        category = TYPES[media_type][0]
        limit = _limits(settings)[category]
        if declared is not None and declared > limit:
            raise _too_large(category, limit)
    except MaterialRejected as exc:
        await _refused(request, who, case_id, name, exc)
        raise
    budget = ContentBudget.of(settings)
    material_id = store.new_id()
    writer = await asyncio.to_thread(store.writer, material_id)
    try:
        pending = bytearray(head)
        size = len(head)
        async for piece in request.content.iter_chunked(1 << 16):
            pending += piece
            size += len(piece)
            if size > limit:
                raise _too_large(category, limit)
            if size > room.bytes:
                raise _over_quota(room)
            if len(pending) >= BATCH:
                await asyncio.to_thread(writer.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(writer.write, bytes(pending))
        del pending
        await asyncio.to_thread(writer.seal)
        async with gate.checks:
            content = await asyncio.to_thread(_check_written, writer, media_type, budget)
        async with gate.keeping:
            room = await database.run(lambda c: room_left(c, settings, case_id, party_id))
            if writer.size > room.bytes:
                raise _over_quota(room)
            stored = await asyncio.to_thread(writer.commit)
            material = await _keep(
                request, who, case_id, party_id, name, description, media_type, content, stored
            )
    except MaterialRejected as exc:
        await asyncio.to_thread(writer.abort)
        await _refused(request, who, case_id, name, exc)
        raise
    except BaseException:
        # the client went away mid-upload, or the server is stopping: nothing half-kept
        await asyncio.to_thread(writer.abort)
        raise
    return material


def _check_written(
    writer: MaterialWriter, media_type: str, budget: ContentBudget
) -> dict[str, object]:
    """Check the sealed file as read back from disk (run in a thread)."""
    with writer.reader() as source:
        return check_content(media_type, source, budget)


async def _keep(
    request: web.Request,
    who: Officer | PartyCaller,
    case_id: int,
    party_id: int | None,
    name: str,
    description: str,
    media_type: str,
    content: dict[str, object],
    stored: StoredMaterial,
) -> dict[str, Any]:
    """Log a kept file in the custody log, then record it."""
    entry = await request.app[CUSTODY].append_async(
        "material.received",
        actor=who.actor,
        case=str(case_id),
        material=stored.material_id,
        sha256=stored.sha256,
        size=stored.size,
        media_type=media_type,
        name=name,
        origin="party" if party_id is not None else "officer",
    )
    index = int(entry["index"])
    return await request.app[DB].run(
        lambda c: records.record_material(
            c, who.actor, case_id, party_id, name, description, media_type, content, stored, index
        )
    )


async def _refused(
    request: web.Request, who: Officer | PartyCaller, case_id: int, name: str, exc: MaterialRejected
) -> None:
    await request.app[DB].run(
        lambda c: audit(
            c,
            who.actor,
            "material.refused",
            f"upload:{name}",
            case_id,
            exc.code,
            message=exc.message,
        )
    )


def _rejected_response(exc: MaterialRejected) -> web.HTTPException:
    return json_error(_STATUS.get(exc.code, web.HTTPBadRequest), exc.code, exc.message)


async def party_upload(request: web.Request) -> web.Response:
    caller = await access.party(request)
    done(await request.app[DB].run(lambda c: access.require_open_case(c, caller.case_id)))
    try:
        material = await _receive(request, caller, caller.case_id)
    except MaterialRejected as exc:
        raise _rejected_response(exc) from None
    return web.json_response(material, status=201)


async def officer_upload(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    refusal = await request.app[DB].run(lambda c: records.may_upload(c, officer, case_id))
    if refusal is not None:
        raise refused(refusal)
    try:
        material = await _receive(request, officer, case_id)
    except MaterialRejected as exc:
        raise _rejected_response(exc) from None
    return web.json_response(material, status=201)


async def party_list(request: web.Request) -> web.Response:
    caller = await access.party(request)
    found = await request.app[DB].run(
        lambda c: records.case_materials(c, caller.case_id, caller.party_id)
    )
    return web.json_response({"materials": found})


async def officer_list(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    found = done(
        await request.app[DB].run(lambda c: records.officer_materials(c, officer, case_id))
    )
    return web.json_response({"materials": found})


async def read_checked(request: web.Request, row: dict[str, Any]) -> bytes:
    """Decrypt a material and check it against the hash taken on receipt."""
    try:
        return await asyncio.to_thread(
            request.app[STORE].read_all,
            row["id"],
            row["wrapped_key"],
            row["kek_fingerprint"],
            row["sha256"],
        )
    except (KeyProblem, ValueError, OSError) as exc:
        raise json_error(
            web.HTTPConflict,
            "integrity_failed",
            f"存储的材料校验不通过 / the stored material does not check out: {exc}",
        ) from None


async def _download(
    request: web.Request, who: Officer | PartyCaller, case_id: int, row: dict[str, Any], reason: str
) -> web.StreamResponse:
    """Check the whole file against its hash, log the access, then send it chunk by chunk.

    Every chunk is authenticated again as it is sent (under the file's own key, in its place),
    so what goes out is what was checked; a file is never held whole in memory."""
    store = request.app[STORE]
    try:
        await asyncio.to_thread(
            store.verify, row["id"], row["wrapped_key"], row["kek_fingerprint"], row["sha256"]
        )
        reader = await asyncio.to_thread(
            store.open, row["id"], row["wrapped_key"], row["kek_fingerprint"]
        )
    except (KeyProblem, ValueError, OSError) as exc:
        raise json_error(
            web.HTTPConflict,
            "integrity_failed",
            f"存储的材料校验不通过 / the stored material does not check out: {exc}",
        ) from None
    try:
        await request.app[CUSTODY].append_async(
            "material.downloaded",
            actor=who.actor,
            reason=reason,
            case=str(case_id),
            material=row["id"],
            sha256=row["sha256"],
        )
        await request.app[DB].run(
            lambda c: audit(
                c, who.actor, "material.downloaded", f"material:{row['id']}", case_id, reason
            )
        )
        extension = TYPES[row["media_type"]][1]
        response = web.StreamResponse(
            headers={
                "Content-Type": row["media_type"],
                "Content-Disposition": f'attachment; filename="{row["id"]}.{extension}"',
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                "X-Content-SHA256": row["sha256"],
            }
        )
        response.content_length = row["size"]
        await response.prepare(request)
        while piece := await asyncio.to_thread(reader.read, BATCH):
            await response.write(piece)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(reader.close)


async def party_download(request: web.Request) -> web.StreamResponse:
    caller = await access.party(request)
    material_id = request.match_info["material"]
    row = done(
        await request.app[DB].run(
            lambda c: records.material_row(c, caller.case_id, material_id, caller.party_id)
        )
    )
    return await _download(request, caller, caller.case_id, row, "own material")


async def officer_download(request: web.Request) -> web.StreamResponse:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    material_id = request.match_info["material"]
    reason = request.query.get("reason", "").strip()[:500]
    if not reason:
        raise json_error(
            web.HTTPBadRequest,
            "reason_required",
        )
    row = done(
        await request.app[DB].run(
            lambda c: records.officer_material(c, officer, case_id, material_id)
        )
    )
    return await _download(request, officer, case_id, row, reason)


def add_routes(app: web.Application) -> None:
    app[GATE] = UploadGate()
    app.router.add_post("/api/party/materials", party_upload)
    app.router.add_get("/api/party/materials", party_list)
    app.router.add_get("/api/party/materials/{material}/content", party_download)
    app.router.add_post("/api/cases/{case}/materials", officer_upload)
    app.router.add_get("/api/cases/{case}/materials", officer_list)
    app.router.add_get("/api/cases/{case}/materials/{material}/content", officer_download)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    upload_params = [
        query(
            "name",
            {"type": "string", "minLength": 1, "maxLength": 200},
            required=True,
            description="the file's name",
        ),
        query("description", {"type": "string", "maxLength": 500}),
    ]
    upload_body = raw_body(
        "the file itself; its type is taken from the content (JPEG, PNG, "
        "PDF, MP4/MOV, WebM/Matroska)",
        MEDIA_TYPES,
    )
    add(
        "/api/party/materials",
        "post",
        op(
            "Upload a material (photo, PDF, video)",
            PARTY,
            responses("201", ANY_OBJECT, "400 401 403 413 415 422 429"),
            tag="materials",
            body=upload_body,
            params=upload_params,
        ),
    )
    add(
        "/api/party/materials",
        "get",
        op(
            "The party's own uploads",
            PARTY,
            responses("200", ANY_OBJECT, "401 403"),
            tag="materials",
        ),
    )
    add(
        "/api/party/materials/{material}/content",
        "get",
        op(
            "Download one of the party's own uploads (logged)",
            PARTY,
            responses(
                "200",
                {"type": "string", "format": "binary"},
                "401 403 404 409",
                "application/octet-stream",
            ),
            tag="materials",
        ),
        [in_path("material", MATERIAL_ID)],
    )
    add(
        "/api/cases/{case}/materials",
        "post",
        op(
            "Attach an evidence item to the case",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 404 409 413 415 422 429"),
            tag="materials",
            body=upload_body,
            params=upload_params,
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/materials",
        "get",
        op(
            "Every material of the case",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag="materials",
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/materials/{material}/content",
        "get",
        op(
            "Download a material: the hash is checked again, the access logged",
            OFFICER,
            responses(
                "200",
                {"type": "string", "format": "binary"},
                "400 401 404 409",
                "application/octet-stream",
            ),
            tag="materials",
            params=[reason_query()],
        ),
        [CASE, in_path("material", MATERIAL_ID)],
    )
