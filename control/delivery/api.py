"""Electronic delivery over HTTP (docs/delivery.md).

* An officer of the case's brigade delivers a document to a party: refused (409
  ``consent_required``) unless the party signed a 送达地址确认书 that agrees to electronic delivery
  and names a channel and an address. The notice goes out through the channel's provider
  (:mod:`.channels`); the delivery is ``sent`` (its time is the delivery date) or ``failed``,
  and a failed or refused one shows the fallback: post, then a public notice of 60 days, each
  recorded by the officer.
* The party (its invitation or call token) lists its deliveries, opens one, and acknowledges or
  refuses it. Acknowledging makes the receipt (电子送达凭证), sealed by the department.
* Every step appends ``delivery.*`` to the custody log with the document's SHA-256, and goes
  into the case's audit trail.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, TypeVar

from aiohttp import web

from .. import access
from ..appkeys import CONFIG, CUSTODY, DB, DOCS, EVENTS, OUTCOMES, RULES
from ..auth import Officer
from ..deadlines.calendar import CalendarError
from ..deadlines.rules import china_date, china_today
from ..documents import api as documents
from ..http.jsonio import json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
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
from .channels import Notice, channel_for
from .outcomes import send_notice, stale_after
from .receipts import make_receipt

T = TypeVar("T")
logger = logging.getLogger(__name__)
DELIVERY = in_path("delivery", ID)

_STATUS: dict[store.Refusal, type[web.HTTPException]] = {
    store.Refusal.NO_CASE: web.HTTPNotFound,
    store.Refusal.NO_DOCUMENT: web.HTTPNotFound,
    store.Refusal.NO_PARTY: web.HTTPNotFound,
    store.Refusal.NO_DELIVERY: web.HTTPNotFound,
    store.Refusal.NO_CONSENT: web.HTTPConflict,
    store.Refusal.BAD_CONSENT: web.HTTPConflict,
    store.Refusal.RECEIPT: web.HTTPBadRequest,
    store.Refusal.NOT_SENT: web.HTTPConflict,
    store.Refusal.NOT_OPENED: web.HTTPConflict,
    store.Refusal.ANSWERED: web.HTTPConflict,
    store.Refusal.NOT_FAILED: web.HTTPConflict,
    store.Refusal.POST_FIRST: web.HTTPConflict,
    store.Refusal.BAD_DAY: web.HTTPBadRequest,
    store.Refusal.NOT_EFFECTIVE: web.HTTPConflict,
}


def done(result: T | store.Refusal) -> T:
    return unwrap(result, _STATUS)


async def custody(
    request: web.Request, entry: str, actor: str, row: dict[str, Any], **more: Any
) -> None:
    await _custody(request.app, entry, actor, row, **more)


async def _custody(
    app: web.Application, entry: str, actor: str, row: dict[str, Any], **more: Any
) -> None:
    await app[CUSTODY].append_async(
        entry,
        actor=actor,
        case=str(row["case_id"]),
        delivery=row["id"],
        document=row["document_id"],
        kind=row["kind"],
        number=row["document_number"],
        sha256=row["document_sha256"],
        revision=row["document_revision"],
        party=row["party_id"],
        channel=row["channel"],
        **more,
    )
    events = app[EVENTS]
    events.publish(row["case_id"], entry, delivery=row["id"], document=row["document_id"])


async def abandon_stale(
    app: web.Application, *, everything: bool = False, case_id: int | None = None
) -> None:
    """Deliveries a stopped or killed server left ``sending`` marked failed
    (:data:`store.INTERRUPTED`), in the audit trail and the custody log (``delivery.failed``,
    actor ``server``), so that the fallback opens: at start-up all of them when this is the only
    server on the database (no front: nothing else can be sending), else (workers share the
    database, and another may be sending) those begun longer ago than any live send
    (:func:`.outcomes.stale_after`), and those of a case again when its officer looks."""
    before = None
    if not everything:
        bound = stale_after(app[CONFIG].delivery.timeout)
        before = (
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=bound)
        ).isoformat(timespec="milliseconds")
    for row in await app[DB].run(lambda c: store.abandon_stale(c, before, case_id)):
        logger.warning("delivery %s was left sending: marked failed (interrupted)", row["id"])
        await _custody(
            app,
            "delivery.failed",
            "server",
            row,
            provider=row["provider"],
            failure=row["failure"],
        )


async def _abandon_at_start(app: web.Application) -> None:
    await abandon_stale(app, everything=not app[CONFIG].server.front_secret)


def _id(body: dict[str, Any], key: str) -> int:
    value = access.id_value(body.get(key))
    if value is None:
        raise json_error(web.HTTPBadRequest, "bad_request", f"{key}：正整数 ID / {key}: an ID")
    return value


async def _case(request: web.Request, *, change: bool) -> tuple[Officer, int]:
    who = await access.officer(request)
    case_id = access.case_id(request)
    case = case_done(await request.app[DB].run(lambda c: access.load_case(c, who, case_id)))
    request.app[EVENTS].know_case(case_id, case["brigade"])
    if change:
        case_done(await request.app[DB].run(lambda c: access.require_open_case(c, case_id)))
    return who, case_id


# -- officers --------------------------------------------------------------------------------
async def post_delivery(request: web.Request) -> web.Response:
    who, case_id = await _case(request, change=True)
    body = await read_object(request)
    document_id, party_id = _id(body, "document_id"), _id(body, "party_id")
    config = request.app[CONFIG].delivery
    db = request.app[DB]

    def begin(conn: Any) -> dict[str, Any] | store.Refusal:
        consent = store.consent_for(conn, case_id, party_id)
        channel = consent["channel"] if isinstance(consent, dict) else "sms"
        provider = channel_for(config, channel, db).name
        return store.begin(conn, who, case_id, document_id, party_id, provider)

    row = done(await db.run(begin))
    channel = channel_for(config, row["channel"], db)
    template = request.app[DOCS].templates.get(row["kind"])
    title = template.title if template is not None else row["kind"]
    notice = Notice(
        row["id"],
        row["channel"],
        row["address"],
        f"法律文书送达通知 {row['document_number']}",
        f"您有一份法律文书（{row['document_number']}）待查收，请用办案民警发给您的链接打开"
        f"当事人页面查阅并确认签收。文书 SHA-256：{row['document_sha256'][:16]}… / A legal "
        f"document ({title}, {row['document_number']}) is waiting for you: open the party "
        "page with the link the officer sent you, read it and acknowledge it.",
    )
    delivery_id = row["id"]

    async def outcome(reference: str, failure: str) -> dict[str, Any]:
        # sent or failed (a provider's error, or the request cut off mid-provider: the
        # fallback opens rather than the delivery staying "sending" for ever)
        done, late = await db.run(
            lambda c: store.finish_send(c, who.actor, delivery_id, reference, failure)
        )
        if late:
            # marked failed by the sweep meanwhile: it stays so, what the provider said is kept
            logger.warning(
                "delivery %s: the provider answered after it was marked failed", delivery_id
            )
            await custody(
                request,
                "delivery.late_answer",
                who.actor,
                done,
                provider=done["provider"],
                status=done["status"],
                reference=reference,
                failure=failure,
            )
        elif failure:
            await custody(
                request,
                "delivery.failed",
                who.actor,
                done,
                provider=done["provider"],
                failure=failure,
            )
        else:
            await custody(
                request,
                "delivery.sent",
                who.actor,
                done,
                provider=done["provider"],
                reference=reference,
                consent=done["consent_id"],
                sent_at=done["sent_at"],
            )
        return done

    row = await send_notice(
        request.app[OUTCOMES],
        channel,
        notice,
        outcome,
        interrupted=store.INTERRUPTED,
        what=f"delivery {delivery_id}",
    )
    return web.json_response(row, status=201)


async def list_deliveries(request: web.Request) -> web.Response:
    _, case_id = await _case(request, change=False)
    await abandon_stale(request.app, case_id=case_id)
    rows = await request.app[DB].run(lambda c: store.listing(c, case_id))
    return web.json_response({"deliveries": rows})


async def get_delivery(request: web.Request) -> web.Response:
    _, case_id = await _case(request, change=False)
    delivery_id = access.path_int(request, "delivery", "delivery")
    await abandon_stale(request.app, case_id=case_id)
    return web.json_response(
        done(await request.app[DB].run(lambda c: store.get(c, case_id, delivery_id)))
    )


async def post_fallback(request: web.Request) -> web.Response:
    """What the officer did when electronic delivery failed: post (with its tracking number),
    then a public notice (its reference; delivered when the notice period ends)."""
    who, case_id = await _case(request, change=True)
    delivery_id = access.path_int(request, "delivery", "delivery")
    body = await read_object(request)
    action = body.get("action")
    if action not in ("post", "public_notice"):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "action：post（邮寄送达）或 public_notice（公告送达）/ action: post or public_notice",
        )
    reference = access.text(body, "reference", max_len=200)
    note = access.text(body, "note", max_len=1000, required=False)
    raw_day = body.get("done_on")
    try:
        done_on = datetime.date.fromisoformat(raw_day) if raw_day else china_today()
    except (TypeError, ValueError):
        raise json_error(
            web.HTTPBadRequest, "bad_request", "done_on：日期 YYYY-MM-DD / done_on: a date"
        ) from None
    days = request.app[CONFIG].delivery.public_notice_days
    row = done(
        await request.app[DB].run(
            lambda c: store.add_fallback(
                c, who, case_id, delivery_id, action, reference, note, done_on, days
            )
        )
    )
    await custody(
        request,
        "delivery.fallback",
        who.actor,
        row,
        action=action,
        reference=reference,
        done_on=done_on.isoformat(),
    )
    return web.json_response(row)


# -- parties ---------------------------------------------------------------------------------
async def party_list(request: web.Request) -> web.Response:
    caller = await access.party(request)
    rows = await request.app[DB].run(lambda c: store.for_party(c, caller))
    # the review window of a determination or certificate, for the party's page to show
    rules = request.app[RULES]
    today = china_today()
    for row in rows:
        row["review_closes"], row["review_open"] = None, False
        if row["kind"] in store.REVIEWABLE and row["sent_at"]:
            try:
                closes = rules.due("review_request", china_date(row["sent_at"]))
            except CalendarError:
                continue  # outside the calendar: the request itself says so (calendar_missing)
            row["review_closes"], row["review_open"] = closes.isoformat(), today <= closes
    return web.json_response({"deliveries": rows})


async def _party_step(request: web.Request, step: str) -> web.Response:
    caller = await access.party(request)
    delivery_id = access.path_int(request, "delivery", "delivery")
    reason = ""
    if step == "refuse":
        reason = access.text(await read_object(request), "reason", max_len=500)
    if step == "acknowledge":
        # one acknowledgement at a time per delivery, so that a retry never makes two receipts
        # (the documents' per-document locks, keyed here by the delivery's negated ID)
        async with documents.locks(request, -delivery_id):
            return await _acknowledge(request, caller, delivery_id)
    row, changed = done(
        await request.app[DB].run(lambda c: store.party_step(c, caller, delivery_id, step, reason))
    )
    if step == "open":
        if changed:
            await custody(request, "delivery.opened", caller.actor, row, opened_at=row["opened_at"])
        return web.json_response(row)
    if step == "refuse":
        await custody(request, "delivery.refused", caller.actor, row, reason=reason)
    return web.json_response(row)


async def _acknowledge(
    request: web.Request, caller: access.PartyCaller, delivery_id: int
) -> web.Response:
    row, _ = done(
        await request.app[DB].run(lambda c: store.party_step(c, caller, delivery_id, "acknowledge"))
    )
    who = await request.app[DB].run(lambda c: store.officer_of(c, delivery_id))
    receipt = await make_receipt(request, who, row)
    row = await request.app[DB].run(lambda c: store.set_receipt(c, delivery_id, receipt["id"]))
    await custody(
        request,
        "delivery.acknowledged",
        caller.actor,
        row,
        sent_at=row["sent_at"],
        opened_at=row["opened_at"],
        acknowledged_at=row["acknowledged_at"],
        receipt=receipt["id"],
        receipt_number=receipt["number"],
        receipt_sha256=receipt["sha256"],
    )
    return web.json_response(row)


async def party_open(request: web.Request) -> web.Response:
    return await _party_step(request, "open")


async def party_acknowledge(request: web.Request) -> web.Response:
    return await _party_step(request, "acknowledge")


async def party_refuse(request: web.Request) -> web.Response:
    return await _party_step(request, "refuse")


def add_routes(app: web.Application) -> None:
    # after the app's own start-up (its cleanup context runs first): the database is open
    app.on_startup.append(_abandon_at_start)
    base = "/api/cases/{case}/deliveries"
    app.router.add_post(base, post_delivery)
    app.router.add_get(base, list_deliveries)
    app.router.add_get(base + "/{delivery}", get_delivery)
    app.router.add_post(base + "/{delivery}/fallback", post_fallback)
    app.router.add_get("/api/party/deliveries", party_list)
    app.router.add_post("/api/party/deliveries/{delivery}/open", party_open)
    app.router.add_post("/api/party/deliveries/{delivery}/acknowledge", party_acknowledge)
    app.router.add_post("/api/party/deliveries/{delivery}/refuse", party_refuse)


def describe(add: Add) -> None:
    base = "/api/cases/{case}/deliveries"
    tag = "delivery"
    add(
        base,
        "post",
        op(
            "Deliver a document to a party electronically (after its signed consent)",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"document_id": ID, "party_id": ID}, ["document_id", "party_id"]),
            description="409 not_effective while a box of the document is neither signed nor "
            "refused; 409 consent_required unless the party signed a 送达地址确认书 agreeing "
            "to electronic delivery with a channel (sms, email) and an address. The answer's "
            "`status` is `sent` (its `sent_at` is the delivery date) or `failed` (`failure`, "
            "and `fallback.next`: post, then public_notice).",
        ),
        [CASE],
    )
    add(
        base,
        "get",
        op("The case's deliveries", OFFICER, responses("200", ANY_OBJECT, "401 404"), tag=tag),
        [CASE],
    )
    add(
        base + "/{delivery}",
        "get",
        op(
            "A delivery, its receipt and fallback",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, DELIVERY],
    )
    add(
        base + "/{delivery}/fallback",
        "post",
        op(
            "Record a delivery by post or by public notice after electronic delivery failed",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "action": {"type": "string", "enum": ["post", "public_notice"]},
                    "reference": {"type": "string", "minLength": 1, "maxLength": 200},
                    "note": {"type": "string", "maxLength": 1000},
                    "done_on": {"type": "string", "format": "date"},
                },
                ["action", "reference"],
            ),
        ),
        [CASE, DELIVERY],
    )
    add(
        "/api/party/deliveries",
        "get",
        op(
            "The documents delivered to the party, a determination with its review window "
            "(review_closes, review_open)",
            PARTY,
            responses("200", ANY_OBJECT, "401 403"),
            tag=tag,
        ),
    )
    for step, summary in (
        ("open", "The party opens a delivered document (the time is recorded once)"),
        ("acknowledge", "The party acknowledges it: the sealed receipt is made"),
    ):
        add(
            "/api/party/deliveries/{delivery}/" + step,
            "post",
            op(summary, PARTY, responses("200", ANY_OBJECT, "401 403 404 409"), tag=tag),
            [DELIVERY],
        )
    add(
        "/api/party/deliveries/{delivery}/refuse",
        "post",
        op(
            "The party refuses the delivery (recorded; the case shows the fallback)",
            PARTY,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"reason": REASON}, ["reason"]),
        ),
        [DELIVERY],
    )
