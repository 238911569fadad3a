"""What the documents' signing tells the mediation (called by control/documents/api.py):
a mediation's agreement is signed only while its mediation is open and it is the current one;
its last signature makes the mediation effective; a refusal on it ends the mediation with a
调解终结书 (146号令 art.94)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..appkeys import DB
from ..http.jsonio import json_error
from . import store

AGREEMENT = "mediation_agreement"


async def before_signing(request: web.Request, doc: dict[str, Any]) -> None:
    if doc["kind"] != AGREEMENT:
        return
    closed = await request.app[DB].run(lambda c: store.agreement_closed(c, doc["id"]))
    if closed:
        raise json_error(
            web.HTTPConflict,
            "mediation_closed",
            "调解已结束或该调解书已被新的草案取代，不能再签名 / the mediation has ended or a "
            "later draft replaced this agreement: it is not signed any more",
        )


async def after_signed(request: web.Request, row: dict[str, Any], actor: str) -> None:
    if row["kind"] != AGREEMENT:
        return
    mediation = await request.app[DB].run(lambda c: store.by_agreement(c, row["id"]))
    if mediation is None:
        return
    from ..documents.api import current_pdf, read_state
    from .api import log_step

    pdf = await current_pdf(request, row)
    state = await read_state(request, pdf)
    if not state.effective:
        return
    done = await request.app[DB].run(
        lambda c: store.mark_effective(c, mediation["id"], actor, row["sha256"])
    )
    if done is not None:
        await log_step(
            request,
            "mediation.effective",
            actor,
            done,
            document=row["id"],
            number=row["number"],
            sha256=row["sha256"],
            signed=state.signed,
        )


async def after_refused(
    request: web.Request, row: dict[str, Any], actor: str, slot: dict[str, Any], reason: str
) -> None:
    if row["kind"] != AGREEMENT:
        return
    mediation = await request.app[DB].run(lambda c: store.by_agreement(c, row["id"]))
    if mediation is None:
        return
    from .api import terminate

    why = f"{slot['name']}拒绝在调解书上签名（{reason}）"
    await terminate(
        request,
        mediation,
        why,
        None,
        actor,
        trigger={"refused": slot["field"], "agreement": row["id"]},
    )
