"""The receipt of an electronic delivery (电子送达凭证): a document of kind ``delivery_receipt``
made when the party acknowledges, numbered like every document, sealed at once by the
department (the seal's certificate, a timestamp, B-LT), and logged in the custody log."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from documents import DocumentError
from documents.pool import sign_builtin
from documents.seal import draw_seal

from ..appkeys import DB, DOCS
from ..auth import Officer, now_iso
from ..documents import api as documents
from ..documents import store as documents_store
from . import store

SEAL_FIELD = "seal-department"


async def make_receipt(
    request: web.Request, who: Officer, delivery: dict[str, Any]
) -> dict[str, Any]:
    """Generate the receipt for ``delivery`` (acknowledged) and seal it: the sealed row."""
    case_id = int(delivery["case_id"])
    db = request.app[DB]

    titles = {kind: t.title for kind, t in request.app[DOCS].templates.items()}

    def data_for(conn: Any) -> dict[str, Any] | documents_store.Refusal:
        base = documents_store.base_data(conn, who, case_id, {})
        if isinstance(base, documents_store.Refusal):
            return base
        return store.receipt_data(conn, base, delivery, titles)

    data = documents.done(await db.run(data_for))
    generated = await documents.generate(request, who, case_id, "delivery_receipt", {}, data)
    return await seal(request, who, generated["id"], case_id)


async def seal(
    request: web.Request, who: Officer, document_id: int, case_id: int
) -> dict[str, Any]:
    """The department's seal on a document's seal box (the system acting for the department)."""
    desk = request.app[DOCS]
    db = request.app[DB]
    async with documents.locks(request, document_id):
        doc = documents.done(
            await db.run(lambda c: documents_store.get(c, who, case_id, document_id))
        )
        pdf = await documents.current_pdf(request, doc)
        department = str(doc["data"]["department"]["name"])
        slot = next(r for r in doc["required"] if r["field"] == SEAL_FIELD)

        signer_args = {"brigade": str(doc["brigade"]), "department": department}
        image = draw_seal(department, slot["label"])
        try:
            signed, serial = await desk.pool.run(
                sign_builtin, desk.spec, pdf, SEAL_FIELD, "seal", signer_args, image
            )
        except DocumentError as exc:
            raise documents.refused(exc, web.HTTPConflict, "signing_refused") from None
        signature = {
            "field": SEAL_FIELD,
            "role": "seal",
            "signer": "system:delivery",
            "serial": f"{serial:x}",
            "at": now_iso(),
        }
        # encrypted at rest and recorded as the documents' own signing does (the lock is held:
        # nobody changes the document meanwhile)
        row = await documents.store_revision(
            request, "system:delivery", doc, signed, signature=signature
        )
    await documents.custody(
        request,
        "document.signed",
        "system:delivery",
        row,
        field=SEAL_FIELD,
        role="seal",
        serial=f"{serial:x}",
    )
    return row
