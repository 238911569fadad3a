"""Legal documents of a case over HTTP: generate, sign, refuse, revoke, state, download.

* Officers of the case's brigade generate a document of any kind from the case's data plus the
  fields the request gives (a missing field is refused with 422 ``missing_fields``, naming each
  one, before a number is taken), sign their own boxes and the department's seal, record a
  signer's refusal, read the state and the PDF. Observers read; only officers change anything
  (``access.officer`` refuses an observer's POST). A supervisor revokes a certificate.
* A party reads and signs only the documents of its own case, only its own boxes: ``prepare``
  needs a face match of this party in this case's calls within the last 5 minutes (the
  verifier's ``verification.verdict`` entries in the custody log), issues a short-lived
  certificate over the party's browser key and answers the bytes the browser signs; ``finish``
  takes the browser's r||s and embeds the signature.
* Generating, signing, refusing and revoking append ``document.generated``, ``.signed``,
  ``.refused``, ``.revoked`` to the custody log with the document's SHA-256, and go into the
  case's audit trail.

The library blocks; every call into it runs in a thread, and rendering, the built-in signers'
signatures and reading a document's state in a document worker process (documents/pool.py:
the pure-Python work never holds the media loop's interpreter). See docs/documents.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from cryptography.hazmat.primitives import serialization

from documents import DocumentError, MissingFields
from documents.appearance import mark_image, name_card, parse_strokes, strokes_json, strokes_sha256
from documents.ca import FACE_VERDICT_MAX_AGE, FaceVerdict
from documents.pool import (
    WorkerProblem,
    finish_party,
    prepare_party,
    render_job,
    sign_builtin,
    state_job,
)
from documents.seal import draw_seal
from documents.verify import DocumentState

from .. import access
from ..access import PartyCaller, text
from ..appkeys import CUSTODY, DB, DOCS, EVENTS
from ..auth import Officer, now_iso
from ..delivery.penalty import before_decision
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    NOBODY,
    OFFICER,
    PARTY,
    REASON,
    Add,
    in_path,
    json_body,
    op,
    responses,
)
from ..refusals import done as case_done
from ..refusals import unwrap
from . import store
from .desk import PENDING_SECONDS, DocumentDesk, IntegrityProblem

T = TypeVar("T")
DOCUMENT = in_path("document", ID)
FIELD = {"type": "string", "minLength": 1, "maxLength": 100}
PDF = {"type": "string", "format": "binary"}

_STATUS: dict[store.Refusal, type[web.HTTPException]] = {
    store.Refusal.NO_CASE: web.HTTPNotFound,
    store.Refusal.NO_DOCUMENT: web.HTTPNotFound,
    store.Refusal.NO_OFFICER: web.HTTPBadRequest,
    store.Refusal.NO_PARTY: web.HTTPBadRequest,
    store.Refusal.BAD_SECTION: web.HTTPBadRequest,
}


def done(result: T | store.Refusal) -> T:
    """A store function's result, or its refusal raised as the error answer."""
    return unwrap(result, _STATUS)


def refused(
    exc: DocumentError,
    status: type[web.HTTPException] = web.HTTPUnprocessableEntity,
    code: str = "document_refused",
) -> web.HTTPException:
    if isinstance(exc, WorkerProblem):  # not the document's fault: nothing stored, try again
        return json_error(web.HTTPServiceUnavailable, "document_worker_failed", str(exc))
    if isinstance(exc, MissingFields):
        missing = [{"path": p, "label": label} for p, label in exc.missing]
        return web.HTTPUnprocessableEntity(
            text=json.dumps({"error": "missing_fields", "message": str(exc), "missing": missing}),
            content_type="application/json",
        )
    return json_error(status, code, str(exc))


def desk(request: web.Request) -> DocumentDesk:
    return request.app[DOCS]


async def current_pdf(request: web.Request, doc: dict[str, Any]) -> bytes:
    """The current revision: decrypted, its plaintext re-hashed against the database's."""
    sealed = await request.app[DB].run(lambda c: store.file_of(c, doc["id"], doc["revision"]))
    try:
        return await asyncio.to_thread(desk(request).read, doc, sealed)
    except IntegrityProblem as exc:
        raise json_error(web.HTTPConflict, "integrity_failed", str(exc)) from None


def locks(request: web.Request, document_id: int) -> asyncio.Lock:
    """One change at a time per document (each is a new revision over the current one)."""
    held = desk(request).locks
    return held.setdefault(document_id, asyncio.Lock())


async def custody(
    request: web.Request, entry: str, actor: str, doc: dict[str, Any], **fields: Any
) -> None:
    await request.app[CUSTODY].append_async(
        entry,
        actor=actor,
        case=str(doc["case_id"]),
        document=doc["id"],
        kind=doc["kind"],
        number=doc["number"],
        revision=doc["revision"],
        sha256=doc["sha256"],
        **fields,
    )
    events = request.app[EVENTS]
    events.know_case(doc["case_id"], doc["brigade"])
    events.publish(
        doc["case_id"], entry, document=doc["id"], kind=doc["kind"], revision=doc["revision"]
    )


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        k: doc[k]
        for k in (
            "id",
            "case_id",
            "kind",
            "number",
            "revision",
            "sha256",
            "signatures",
            "refusals",
            "created_by",
            "created_at",
            "updated_at",
        )
        if k in doc
    } | {"required": doc["required"]}


async def read_state(request: web.Request, pdf: bytes) -> DocumentState:
    """The document's signatures and missing boxes, read in a document worker process."""
    try:
        return await desk(request).pool.run(state_job, pdf)
    except WorkerProblem as exc:
        raise refused(exc) from None


async def with_state(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    d = desk(request)
    pdf = await current_pdf(request, doc)
    state = await read_state(request, pdf)
    out = _public(doc)
    out["state"] = state.as_json()
    out["title"] = d.templates[doc["kind"]].title if doc["kind"] in d.templates else doc["kind"]
    return out


async def generate(
    request: web.Request,
    who: Officer,
    case_id: int,
    kind: str,
    body: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check, number, render, store and log one document (also the inquiry record's)."""
    d = desk(request)
    template = d.templates.get(kind)
    if template is None:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            f"kind：未知文书种类 {kind}（可用：{', '.join(sorted(d.templates))}）/ "
            f"unknown kind {kind}",
        )
    if data is None:
        data = done(await request.app[DB].run(lambda c: store.base_data(c, who, case_id, body)))
    if kind == "penalty_decision":
        # missing fields first (422), then the penalty procedure's order (409,
        # control/delivery/penalty.py), before a number is taken
        try:
            template.check(data)
        except DocumentError as exc:
            raise refused(exc) from None
        await before_decision(request, case_id)
    try:
        doc, year, seq, number = await asyncio.to_thread(d.render_numbered, template, data)
    except DocumentError as exc:
        raise refused(exc) from None
    sha = hashlib.sha256(doc.pdf).hexdigest()
    required = [r.as_json() for r in doc.required]
    brigade = str(data["department"]["brigade"])

    def keep(c: Any) -> int:
        # the file is written inside the row's transaction: a failed write keeps no row
        document_id = store.insert(
            c, who, case_id, kind, number, brigade, year, seq, data, required, sha
        )
        sealed = d.write(case_id, document_id, 1, doc.pdf)
        try:
            store.insert_file(c, document_id, 1, sealed.row())
        except BaseException:
            d.discard(sealed)
            raise
        return document_id

    try:
        document_id = await request.app[DB].run(keep)
    except BaseException:
        await asyncio.to_thread(d.void, brigade, kind, year, seq, "保存失败 / could not be stored")
        raise
    row = done(await request.app[DB].run(lambda c: store.get(c, who, case_id, document_id)))
    await custody(request, "document.generated", who.actor, row, pages=doc.manifest["pages"])
    return await with_state(request, row)


# -- the templates as forms -----------------------------------------------------------------
# how the officer's form asks for a field (the template says only path and label): long texts
# in a text area, dates and times in their pickers
LONG_ROOTS = ("findings", "penalty", "mediation", "talk")
LONG_FIELDS = frozenset({"case.rights_told", "case.rules", "case.scope", "delivery.address"})
SHORT_IN_LONG_ROOTS = frozenset({"mediation.date", "mediation.start_date", "talk.subject"})


def field_input(path: str) -> str:
    """``date``, ``datetime``, ``long`` or ``text``: the input the form uses for ``path``."""
    last = path.rsplit(".", 1)[-1]
    if last.endswith("date"):
        return "date"
    if last.endswith("time") or last.endswith("_at"):
        return "datetime"
    if path in LONG_FIELDS or (
        path.split(".", 1)[0] in LONG_ROOTS and path not in SHORT_IN_LONG_ROOTS
    ):
        return "long"
    return "text"


def template_form(template: Any) -> dict[str, Any]:
    """One kind's form: title, fields (label, path, whether the case fills it, the input, and
    ``party``: each party's (``parties[]``), one party's (its index) or none), signers."""
    fields = []
    asked = [(p, label, True) for p, label in template.fields]
    asked += [(p, label, False) for p, label in template.optional_fields]
    for path, label, required in asked:
        parts = path.split(".")
        party: str | int | None = None
        generic = path
        if parts[0] == "parties[]":
            party = "each"
        elif parts[0] == "parties" and len(parts) > 2 and parts[1].isdigit():
            party = int(parts[1])
            generic = ".".join(["parties[]", *parts[2:]])
        fields.append(
            {
                "path": path,
                "label": label,
                "filled": generic in store.FILLED,
                "input": field_input(path),
                "party": party,
                "required": required,
            }
        )
    signers = [{"role": s.role, "who": s.who, "label": s.label} for s in template.signers]
    return {
        "kind": template.kind,
        "title": template.title,
        "fields": fields,
        "signers": signers,
    }


async def list_templates(request: web.Request) -> web.Response:
    await access.officer(request)
    templates = desk(request).templates
    return web.json_response(
        {"templates": [template_form(templates[k]) for k in sorted(templates)]}
    )


async def list_case_officers(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    found = done(await request.app[DB].run(lambda c: store.case_officers(c, who, case_id)))
    return web.json_response({"officers": found})


# -- officers --------------------------------------------------------------------------------
async def post_document(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    kind = body.get("kind")
    data = body.get("data", {})
    if not isinstance(kind, str) or not isinstance(data, dict):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "kind：文书种类；data：其余字段（对象）/ kind: the document's kind; data: "
            "the remaining fields (an object)",
        )
    # another brigade's case answers 404, a closed one 409, before anything is numbered
    case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    await _open_case(request, case_id)
    return web.json_response(await generate(request, who, case_id, kind, data), status=201)


async def list_documents(request: web.Request) -> web.Response:
    who = await access.officer(request)
    case_id = access.case_id(request)
    docs = done(await request.app[DB].run(lambda c: store.list_for_officer(c, who, case_id)))
    return web.json_response({"documents": [_public(d) for d in docs]})


async def _officer_doc(request: web.Request) -> tuple[Officer, dict[str, Any]]:
    who = await access.officer(request)
    case_id = access.case_id(request)
    document_id = access.path_int(request, "document", "document")
    doc = done(await request.app[DB].run(lambda c: store.get(c, who, case_id, document_id)))
    return who, doc


async def _open_case(request: web.Request, case_id: int) -> None:
    """Signing and refusing change a document: a closed case's are final (409)."""
    case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))


async def get_document(request: web.Request) -> web.Response:
    _, doc = await _officer_doc(request)
    return web.json_response(await with_state(request, doc))


async def _pdf(request: web.Request, doc: dict[str, Any]) -> web.Response:
    pdf = await current_pdf(request, doc)
    name = f"document-{doc['id']}-r{doc['revision']}.pdf"
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "X-Content-SHA256": doc["sha256"],
        },
    )


async def get_pdf(request: web.Request) -> web.Response:
    _, doc = await _officer_doc(request)
    return await _pdf(request, doc)


def _slot(doc: dict[str, Any], field: str) -> dict[str, Any]:
    for slot in doc["required"]:
        if slot["field"] == field:
            return dict(slot)
    raise json_error(
        web.HTTPBadRequest,
        "bad_request",
        f"field：该文书没有签名位置 {field} / the document has no field {field}",
    )


def _signed(doc: dict[str, Any], field: str) -> bool:
    return any(s["field"] == field for s in doc["signatures"])


async def store_revision(
    request: web.Request, actor: str, doc: dict[str, Any], pdf: bytes, **change: Any
) -> dict[str, Any]:
    d = desk(request)
    sha = hashlib.sha256(pdf).hexdigest()
    sealed = await asyncio.to_thread(d.write, doc["case_id"], doc["id"], doc["revision"] + 1, pdf)
    try:
        row = await request.app[DB].run(
            lambda c: store.new_revision(
                c, actor, doc["id"], doc["sha256"], sha, sealed=sealed.row(), **change
            )
        )
    except BaseException:
        await asyncio.to_thread(d.discard, sealed)
        raise
    if row is None:
        await asyncio.to_thread(d.discard, sealed)
        raise json_error(
            web.HTTPConflict,
            "document_changed",
            "文书已被其他操作更新，请刷新后重试 / the document changed meanwhile: "
            "reload and try again",
        )
    return row


async def sign(request: web.Request) -> web.Response:
    """Sign one box as the calling officer, or the department's seal."""
    who, doc = await _officer_doc(request)
    await _open_case(request, doc["case_id"])
    field = text(await read_object(request), "field", max_len=100)
    row = await sign_box(request, who, doc, field)
    return web.json_response(await with_state(request, row))


async def sign_box(
    request: web.Request,
    who: Officer,
    doc: dict[str, Any],
    field: str,
    actor: str | None = None,
) -> dict[str, Any]:
    """Sign ``field`` as ``who`` (an officer's own box) or the department's seal: a new
    revision, ``document.signed`` in the custody log (also used by control/mediation, whose
    seal after a party's own refusal names the system as ``actor``)."""
    from ..mediation import hooks

    d = desk(request)
    actor = actor or who.actor
    await hooks.before_signing(request, doc)
    async with locks(request, doc["id"]):
        doc = done(
            await request.app[DB].run(lambda c: store.get(c, who, doc["case_id"], doc["id"]))
        )
        slot = _slot(doc, field)
        if _signed(doc, field) or slot.get("refused"):
            raise json_error(
                web.HTTPConflict,
                "already_signed",
                f"签名位置 {field} 已签名或已拒签 / {field} is signed or refused",
            )
        department = str(doc["data"]["department"]["name"])
        if slot["role"] == "officer":
            if slot["signer_id"] != f"o{who.id}":
                raise json_error(
                    web.HTTPForbidden,
                    "not_your_box",
                    f"只能在本人的签名位置签名（{slot['name']}）/ an officer signs "
                    f"only their own box ({field} is {slot['name']}'s)",
                )
            role, kwargs = (
                "officer",
                {"officer_id": slot["signer_id"], "name": slot["name"], "department": department},
            )
            image = name_card([slot["name"], department])
        elif slot["role"] == "seal":
            role, kwargs = "seal", {"brigade": str(doc["brigade"]), "department": department}
            image = draw_seal(department, slot["label"])
        else:
            raise json_error(
                web.HTTPForbidden,
                "party_box",
                f"{field} 是当事人的签名位置，由当事人本人签名 / {field} is a party's "
                "box: the party signs it",
            )
        pdf = await current_pdf(request, doc)

        try:
            signed, serial = await d.pool.run(sign_builtin, d.spec, pdf, field, role, kwargs, image)
        except DocumentError as exc:
            raise refused(exc, web.HTTPConflict, "signing_refused") from None
        signature = {
            "field": field,
            "role": role,
            "signer": actor,
            "serial": f"{serial:x}",
            "at": now_iso(),
        }
        row = await store_revision(request, actor, doc, signed, signature=signature)
    await custody(
        request, "document.signed", actor, row, field=field, role=role, serial=f"{serial:x}"
    )
    await hooks.after_signed(request, row, actor)
    return row


async def refuse(request: web.Request) -> web.Response:
    """Record that a signer refused (the refusal is printed on the document; it blocks
    nothing). Before the first signature only: the document is drawn again, same number."""
    who, doc = await _officer_doc(request)
    await _open_case(request, doc["case_id"])
    body = await read_object(request)
    field = text(body, "field", max_len=100)
    reason = text(body, "reason", max_len=500)

    async def again(c_doc: dict[str, Any]) -> dict[str, Any]:
        return done(
            await request.app[DB].run(lambda c: store.get(c, who, c_doc["case_id"], c_doc["id"]))
        )

    row = await _record_refusal(request, who.actor, who.username, doc, field, reason, again)
    return web.json_response(await with_state(request, row))


async def _record_refusal(
    request: web.Request,
    actor: str,
    recorded_by: str,
    doc: dict[str, Any],
    field: str,
    reason: str,
    reload: Any,
    check_slot: Any = None,
) -> dict[str, Any]:
    """Draw the document again with the refusal of ``field``'s signer printed (拒绝签名记录:
    reason, time, who recorded it) and that signer's boxes marked refused; a new revision,
    the same number; ``document.refused`` in the custody log and the audit trail."""
    d = desk(request)
    async with locks(request, doc["id"]):
        doc = await reload(doc)
        slot = _slot(doc, field)
        if check_slot is not None:
            check_slot(slot)
        if doc["signatures"]:
            raise json_error(
                web.HTTPConflict,
                "already_signed",
                "已有签名的文书不能再记录拒签，请重新生成 / a refusal is recorded "
                "before the first signature: generate the document again",
            )
        data = dict(doc["data"])
        refusals = [r for r in data.get("refusals", []) if r.get("signer_id") != slot["signer_id"]]
        note = {
            "signer_id": slot["signer_id"],
            "name": slot["name"],
            "reason": reason,
            "time": datetime.now(UTC).astimezone().strftime("%Y年%m月%d日 %H时%M分"),
            "recorded_by": recorded_by,
        }
        data["refusals"] = [*refusals, note]
        template = d.templates[doc["kind"]]
        try:
            drawn = await d.pool.run(render_job, template, data, doc["number"])
        except DocumentError as exc:
            raise refused(exc) from None
        required = [r.as_json() for r in drawn.required]
        note_row = {
            "field": field,
            "signer_id": slot["signer_id"],
            "reason": reason,
            "recorded_by": actor,
            "at": now_iso(),
        }
        row = await store_revision(
            request, actor, doc, drawn.pdf, required=required, data=data, refusal=note_row
        )
    await custody(request, "document.refused", actor, row, field=field, reason=reason)
    from ..mediation import hooks

    await hooks.after_refused(request, row, actor, slot, reason)
    return row


async def revoke(request: web.Request) -> web.Response:
    """A supervisor revokes the certificate of a signature on this document; the CRL is
    published at once (GET /api/ca/crl)."""
    who, doc = await _officer_doc(request)
    if who.role != "supervisor":
        raise json_error(
            web.HTTPForbidden,
            "forbidden",
            "只有主管可以吊销证书 / only a supervisor revokes a certificate",
        )
    body = await read_object(request)
    field = text(body, "field", max_len=100)
    reason = text(body, "reason", max_len=500)
    signature = next((s for s in doc["signatures"] if s["field"] == field), None)
    if signature is None:
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"field：{field} 尚未签名 / {field} is not signed"
        )
    d = desk(request)
    serial = int(signature["serial"], 16)

    def run() -> None:
        d.ca.revoke(serial, "key_compromise")
        d.ca.publish_crl()

    await asyncio.to_thread(run)
    await request.app[DB].run(
        lambda c: access.audit(
            c,
            who.actor,
            "document.revoked",
            f"document:{doc['id']}",
            doc["case_id"],
            reason,
            field=field,
            serial=signature["serial"],
            sha256=doc["sha256"],
        )
    )
    await custody(
        request,
        "document.revoked",
        who.actor,
        doc,
        reason=reason,
        field=field,
        serial=signature["serial"],
    )
    return web.json_response({"revoked": signature["serial"], "field": field})


# -- parties ---------------------------------------------------------------------------------
async def _party_doc(request: web.Request) -> tuple[PartyCaller, dict[str, Any]]:
    caller = await access.party(request)
    document_id = access.path_int(request, "document", "document")
    doc = done(await request.app[DB].run(lambda c: store.get_for_party(c, caller, document_id)))
    return caller, doc


async def party_list(request: web.Request) -> web.Response:
    caller = await access.party(request)
    docs = await request.app[DB].run(lambda c: store.listing_for_party(c, caller))
    return web.json_response({"documents": [_public(d) for d in docs]})


async def party_get(request: web.Request) -> web.Response:
    caller, doc = await _party_doc(request)
    # which boxes are the caller's own (signer_id), for the page to offer only those
    out = await with_state(request, doc) | {"you": f"p{caller.party_id}"}
    return web.json_response(out)


async def party_pdf(request: web.Request) -> web.Response:
    _, doc = await _party_doc(request)
    return await _pdf(request, doc)


async def party_refuse(request: web.Request) -> web.Response:
    """The party records its own refusal to sign, from its page: printed on the document as
    an officer's record of it is (记录人: the party itself), its boxes marked refused."""
    caller, doc = await _party_doc(request)
    await _open_case(request, doc["case_id"])
    body = await read_object(request)
    field = text(body, "field", max_len=100)
    reason = text(body, "reason", max_len=500)

    def own(slot: dict[str, Any]) -> None:
        if slot["role"] != "party" or slot["signer_id"] != f"p{caller.party_id}":
            raise json_error(
                web.HTTPForbidden,
                "not_your_box",
                "只能拒签本人的签名位置 / a party refuses only its own box",
            )

    async def again(c_doc: dict[str, Any]) -> dict[str, Any]:
        return done(
            await request.app[DB].run(lambda c: store.get_for_party(c, caller, c_doc["id"]))
        )

    row = await _record_refusal(
        request, caller.actor, f"{caller.name}（本人）", doc, field, reason, again, own
    )
    return web.json_response(await with_state(request, row))


def _b64(body: dict[str, Any], key: str, max_len: int) -> bytes:
    value = body.get(key)
    try:
        if not isinstance(value, str) or len(value) > max_len:
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"{key}：Base64 编码的字节 / {key}: bytes in Base64"
        ) from None


def latest_match(
    entries: Any, size: int, rooms: set[str], participant: str, now: datetime
) -> FaceVerdict | None:
    """The newest ``match`` verdict of ``participant`` in ``rooms`` not older than the CA
    accepts, from the end of the custody log (entries are in time order)."""
    oldest = now - FACE_VERDICT_MAX_AGE
    for index in range(size - 1, -1, -1):
        entry = entries(index)
        at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        if at < oldest:
            return None
        if (
            entry["type"] == "verification.verdict"
            and entry.get("room") in rooms
            and entry.get("participant") == participant
            and entry.get("verdict") == "match"
        ):
            return FaceVerdict(f"custody-{entry['index']}", str(entry["frame_sha256"]), True, at)
    return None


async def prepare(request: web.Request) -> web.Response:
    from ..mediation import hooks

    caller, doc = await _party_doc(request)
    await _open_case(request, doc["case_id"])
    await hooks.before_signing(request, doc)
    body = await read_object(request)
    field = text(body, "field", max_len=100)
    spki = _b64(body, "public_key", 1000)
    d = desk(request)
    slot = _slot(doc, field)
    if slot["role"] != "party" or slot["signer_id"] != f"p{caller.party_id}":
        raise json_error(
            web.HTTPForbidden,
            "not_your_box",
            "只能在本人的签名位置签名 / a party signs only its own box",
        )
    if _signed(doc, field) or slot.get("refused"):
        raise json_error(
            web.HTTPConflict,
            "already_signed",
            f"签名位置 {field} 已签名或已拒签 / {field} is signed or refused",
        )
    try:
        strokes = parse_strokes(body.get("strokes"))
    except DocumentError as exc:
        raise json_error(web.HTTPBadRequest, "bad_request", str(exc)) from None
    rooms = set(await request.app[DB].run(lambda c: store.party_rooms(c, caller.case_id)))
    log = request.app[CUSTODY]

    def find() -> FaceVerdict | None:
        # the verifier runs in the worker where the call's room is, maybe not this one: read
        # what other processes appended first
        log.refresh()
        return latest_match(
            log.entry, log.size, rooms, f"party-{caller.party_id}", datetime.now(UTC)
        )

    verdict = await asyncio.to_thread(find)
    if verdict is None:
        minutes = int(FACE_VERDICT_MAX_AGE / timedelta(minutes=1))
        raise json_error(
            web.HTTPConflict,
            "face_match_required",
            f"签名前须在视频中通过人脸核验（{minutes} 分钟内）/ signing needs a face "
            f"match in the call within the last {minutes} minutes",
        )
    pdf = await current_pdf(request, doc)
    mark = strokes_json(strokes)

    def issue() -> tuple[bytes, Any, int]:
        cert = d.ca.issue_party(
            spki,
            slot["signer_id"],
            slot["name"],
            verdict,
            doc["sha256"],
            field,
            strokes_sha256(strokes),
        )
        image = mark_image(strokes, slot["name"])
        return cert.public_bytes(serialization.Encoding.DER), image, cert.serial_number

    try:
        cert_der, image, serial = await asyncio.to_thread(issue)
        state, to_be_signed = await d.pool.run(
            prepare_party, d.spec, pdf, field, cert_der, image, mark
        )
    except DocumentError as exc:
        raise refused(exc, web.HTTPUnprocessableEntity, "signing_refused") from None
    request_id = "SIG_" + secrets.token_hex(12)
    now = time.time()
    await request.app[DB].run(
        lambda c: store.keep_pending(
            c,
            request_id,
            document_id=doc["id"],
            party_id=caller.party_id,
            field=field,
            base_sha256=doc["sha256"],
            serial=f"{serial:x}",
            verdict_id=verdict.verdict_id,
            state=state,
            now=now,
            expires_at=now + PENDING_SECONDS,
        )
    )
    return web.json_response(
        {
            "request_id": request_id,
            "field": field,
            "to_be_signed": base64.b64encode(to_be_signed).decode(),
            "expires_in": PENDING_SECONDS,
            "algorithm": {"name": "ECDSA", "namedCurve": "P-256", "hash": "SHA-256"},
            "verdict_id": verdict.verdict_id,
            "certificate_serial": f"{serial:x}",
        }
    )


async def finish(request: web.Request) -> web.Response:
    caller, doc = await _party_doc(request)
    await _open_case(request, doc["case_id"])
    body = await read_object(request)
    request_id = text(body, "request_id", max_len=100)
    signature = _b64(body, "signature", 200)
    from ..mediation import hooks

    await hooks.before_signing(request, doc)
    d = desk(request)
    # taken at once, in whichever worker: single use (a wrong signature value, a document
    # changed meanwhile, an expired request: prepare again)
    entry = await request.app[DB].run(
        lambda c: store.take_pending(c, request_id, doc["id"], caller.party_id, time.time())
    )
    if entry is None:
        raise json_error(
            web.HTTPNotFound,
            "not_found",
            "没有该签名请求，或已使用、已过期 / no such signing request, or it was used or expired",
        )
    async with locks(request, doc["id"]):
        doc = done(await request.app[DB].run(lambda c: store.get_for_party(c, caller, doc["id"])))
        if doc["sha256"] != entry["base_sha256"]:
            raise json_error(
                web.HTTPConflict,
                "document_changed",
                "文书已被其他操作更新，请重新准备签名 / the document changed: prepare again",
            )
        pdf = await current_pdf(request, doc)

        try:
            signed = await d.pool.run(finish_party, d.spec, entry["state"], pdf, signature)
        except DocumentError as exc:
            raise refused(exc, web.HTTPUnprocessableEntity, "signing_refused") from None
        record = {
            "field": entry["field"],
            "role": "party",
            "signer": caller.actor,
            "serial": entry["serial"],
            "verdict_id": entry["verdict_id"],
            "at": now_iso(),
        }
        row = await store_revision(request, caller.actor, doc, signed, signature=record)
    await custody(
        request,
        "document.signed",
        caller.actor,
        row,
        field=entry["field"],
        role="party",
        serial=entry["serial"],
        verdict=entry["verdict_id"],
    )
    from ..mediation import hooks

    await hooks.after_signed(request, row, caller.actor)
    return web.json_response(await with_state(request, row))


# -- the CA's published parts ----------------------------------------------------------------
async def ca_root(request: web.Request) -> web.Response:
    pem = desk(request).ca.root_pem
    return web.Response(body=pem, content_type="application/x-pem-file")


async def ca_crl(request: web.Request) -> web.Response:
    d = desk(request)
    path = await asyncio.to_thread(d.ca.publish_crl)
    der = await asyncio.to_thread(path.read_bytes)
    return web.Response(body=der, content_type="application/pkix-crl")


def add_routes(app: web.Application) -> None:
    base = "/api/cases/{case}/documents"
    app.router.add_post(base, post_document)
    app.router.add_get(base, list_documents)
    app.router.add_get(base + "/{document}", get_document)
    app.router.add_get(base + "/{document}/pdf", get_pdf)
    app.router.add_post(base + "/{document}/sign", sign)
    app.router.add_post(base + "/{document}/refusals", refuse)
    app.router.add_post(base + "/{document}/revoke", revoke)
    app.router.add_get("/api/documents/templates", list_templates)
    app.router.add_get("/api/cases/{case}/officers", list_case_officers)
    app.router.add_get("/api/party/documents", party_list)
    app.router.add_get("/api/party/documents/{document}", party_get)
    app.router.add_get("/api/party/documents/{document}/pdf", party_pdf)
    app.router.add_post("/api/party/documents/{document}/refusals", party_refuse)
    app.router.add_post("/api/party/documents/{document}/sign/prepare", prepare)
    app.router.add_post("/api/party/documents/{document}/sign/finish", finish)
    app.router.add_get("/api/ca/root", ca_root)
    app.router.add_get("/api/ca/crl", ca_crl)


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    base = "/api/cases/{case}/documents"
    tag = "documents"
    add(
        base,
        "post",
        op(
            "Generate a document from the case's data and the fields given",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {"kind": {"type": "string", "minLength": 1, "maxLength": 50}, "data": ANY_OBJECT},
                ["kind"],
            ),
            description="422 missing_fields names every missing field (`missing`: path and "
            "label) before a number is taken. A penalty_decision is refused (409) until the "
            "penalty procedure allows it (GET /api/cases/{case}/penalty).",
        ),
        [CASE],
    )
    add(
        base,
        "get",
        op("The case's documents", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [CASE],
    )
    add(
        base + "/{document}",
        "get",
        op(
            "A document and its state (signed, refused, missing, effective)",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, DOCUMENT],
    )
    add(
        base + "/{document}/pdf",
        "get",
        op(
            "The document's current PDF",
            OFFICER,
            responses("200 the PDF", PDF, "401 404", "application/pdf"),
            tag=tag,
        ),
        [CASE, DOCUMENT],
    )
    add(
        base + "/{document}/sign",
        "post",
        op(
            "Sign the officer's own box, or the department's seal",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"field": FIELD}, ["field"]),
        ),
        [CASE, DOCUMENT],
    )
    add(
        base + "/{document}/refusals",
        "post",
        op(
            "Record a signer's refusal (before the first signature)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body({"field": FIELD, "reason": REASON}, ["field", "reason"]),
        ),
        [CASE, DOCUMENT],
    )
    add(
        base + "/{document}/revoke",
        "post",
        op(
            "Revoke the certificate of a signature (supervisor); the CRL is published",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag=tag,
            body=json_body({"field": FIELD, "reason": REASON}, ["field", "reason"]),
        ),
        [CASE, DOCUMENT],
    )
    add(
        "/api/documents/templates",
        "get",
        op(
            "The documents' templates as forms: per kind its title, fields and signers",
            OFFICER,
            responses("200", ANY_OBJECT, "401"),
            tag=tag,
            description="Each field: `path`, `label` (the template's, Chinese), `filled` (the "
            "case fills it by itself), `input` (text, long, date, datetime), `party` (`each` "
            "for every party's, an index for one party's, null) and `required` (false for "
            "a template's `optional` field).",
        ),
    )
    add(
        "/api/cases/{case}/officers",
        "get",
        op(
            "The accounts that may be this case's officers in a document or a record",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
            description="`officers`: `account`, `name`, `role`; active, not observers, of the "
            "case's brigade or supervisors (what `officers[].account` accepts).",
        ),
        [CASE],
    )
    add(
        "/api/party/documents",
        "get",
        op(
            "The documents of the party's case",
            PARTY,
            responses("200", ANY_OBJECT, "401 403"),
            tag=tag,
        ),
    )
    add(
        "/api/party/documents/{document}",
        "get",
        op(
            "A document of the party's case and its state",
            PARTY,
            responses("200", ANY_OBJECT, "401 403 404"),
            tag=tag,
        ),
        [DOCUMENT],
    )
    add(
        "/api/party/documents/{document}/pdf",
        "get",
        op(
            "A document's PDF",
            PARTY,
            responses("200 the PDF", PDF, "401 403 404", "application/pdf"),
            tag=tag,
        ),
        [DOCUMENT],
    )
    add(
        "/api/party/documents/{document}/refusals",
        "post",
        op(
            "The party records its own refusal to sign its box (before the first signature)",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body({"field": FIELD, "reason": REASON}, ["field", "reason"]),
            description="The document is drawn again (same number) with the 拒绝签名记录; "
            "403 not_your_box for another signer's box, 409 already_signed once signed.",
        ),
        [DOCUMENT],
    )
    add(
        "/api/party/documents/{document}/sign/prepare",
        "post",
        op(
            "Prepare the party's signature of its own box (after a face match)",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {
                    "field": FIELD,
                    "public_key": {
                        "type": "string",
                        "maxLength": 1000,
                        "description": "SPKI DER, Base64",
                    },
                    "strokes": {"type": "array", "items": {"type": "array"}},
                },
                ["field", "public_key", "strokes"],
            ),
            description="409 face_match_required without a face match of this party in this "
            "case's calls within 5 minutes. Answers `to_be_signed` (Base64) for "
            "WebCrypto ECDSA P-256/SHA-256 and a `request_id`.",
        ),
        [DOCUMENT],
    )
    add(
        "/api/party/documents/{document}/sign/finish",
        "post",
        op(
            "Finish the party's signature with the browser's r||s",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {
                    "request_id": {"type": "string", "minLength": 1, "maxLength": 100},
                    "signature": {
                        "type": "string",
                        "maxLength": 200,
                        "description": "r||s (64 bytes) or DER, Base64",
                    },
                },
                ["request_id", "signature"],
            ),
        ),
        [DOCUMENT],
    )
    add(
        "/api/ca/root",
        "get",
        op(
            "The deployment's root certificate (PEM), for validating documents offline",
            NOBODY,
            responses("200 PEM", {"type": "string"}, "", "application/x-pem-file"),
            tag=tag,
        ),
    )
    add(
        "/api/ca/crl",
        "get",
        op(
            "The current certificate revocation list (DER)",
            NOBODY,
            responses("200 DER", PDF, "", "application/pkix-crl"),
            tag=tag,
        ),
    )
