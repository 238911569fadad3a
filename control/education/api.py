"""HTTP API of education: rosters, a session's viewers and their links, attendance, records,
each company's record sent to it.

Officers only (``control/access.py``): a brigade's companies and people are its own (another
brigade's answer 404, as absent ones do; a supervisor sees all). The exception is a company's
link to its record (the page ``/company-record``, ``POST /api/education/company-record[/pdf]``):
no login, its token is the credential (:mod:`.sending`). The SQL is in :mod:`.roster`,
:mod:`.viewers`, :mod:`.records` and :mod:`.sending`; attendance itself is kept by the desk
(:mod:`.desk`) while the session runs.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import logging
import math
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Any

import yarl
from aiohttp import web

from common.tasks import TaskSetClosed
from verifier.enrollment import MAX_PHOTO_BYTES, EnrollmentRejected

from .. import access
from ..access import text
from ..appkeys import ATTENDANCE, CONFIG, CUSTODY, DB, DOCS, LIVE, OUTCOMES, VERIFIER
from ..auth import Officer
from ..delivery.channels import Notice, channel_for
from ..delivery.outcomes import send_notice
from ..http.jsonio import PayloadTooLarge, json_error, read_object
from ..http.openapi import (
    ANY_OBJECT,
    CASE,
    ID,
    NOBODY,
    OFFICER,
    SESSION,
    Add,
    in_path,
    json_body,
    op,
    query,
    raw_body,
    reason_query,
    responses,
)
from ..refusals import Refusal, done, unwrap
from ..verification.api import verifier_of
from . import chat, quiz, records, roster, sending, viewers
from .floor import FloorRefused
from .roster import ImportRefused, PersonIn, RosterRefusal
from .sheets import MAX_BYTES, SheetError, read_table

_ROSTER_STATUS: dict[RosterRefusal, type[web.HTTPException]] = {
    RosterRefusal.NO_COMPANY: web.HTTPNotFound,
    RosterRefusal.NO_PERSON: web.HTTPNotFound,
    RosterRefusal.COMPANY_EXISTS: web.HTTPConflict,
    RosterRefusal.PERSON_EXISTS: web.HTTPConflict,
}
_VIEWER_STATUS: dict[viewers.ViewerRefusal, type[web.HTTPException]] = {
    viewers.ViewerRefusal.NOT_EDUCATION: web.HTTPConflict,
    viewers.ViewerRefusal.NO_PERSON: web.HTTPNotFound,
    viewers.ViewerRefusal.NOTHING: web.HTTPBadRequest,
}
_SEND_STATUS: dict[sending.SendRefusal, type[web.HTTPException]] = {
    sending.SendRefusal.NO_CASE: web.HTTPNotFound,
    sending.SendRefusal.NO_SESSION: web.HTTPNotFound,
    sending.SendRefusal.NO_RECORDS: web.HTTPConflict,
    sending.SendRefusal.NO_LINK: web.HTTPNotFound,
    sending.SendRefusal.REVOKED: web.HTTPGone,
    sending.SendRefusal.EXPIRED: web.HTTPGone,
}
WEB_DIR = Path(__file__).parent.parent / "web"
logger = logging.getLogger(__name__)
IMPORT_TYPES = [
    "text/csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/octet-stream",
]


async def _body(request: web.Request, limit: int) -> bytes:
    """The raw body, streamed, at most ``limit`` bytes (the app's JSON limit is smaller)."""
    if request.content_length is not None and request.content_length > limit:
        raise json_error(
            PayloadTooLarge, "too_large", f"文件超过 {limit} 字节 / the file exceeds {limit} bytes"
        )
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            raise json_error(
                PayloadTooLarge,
                "too_large",
                f"文件超过 {limit} 字节 / the file exceeds {limit} bytes",
            )
    return bytes(data)


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _id_list(body: dict[str, Any], key: str) -> list[int]:
    value = body.get(key, [])
    if (
        not isinstance(value, list)
        or len(value) > 1000
        or not all(access.id_value(v) is not None for v in value)
    ):
        raise json_error(
            web.HTTPBadRequest, "bad_request", f"{key}: 至多 1000 个 ID / at most 1000 IDs"
        )
    return list(dict.fromkeys(value))


# -- rosters ---------------------------------------------------------------------------------
async def post_company(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    body = await read_object(request)
    name = text(body, "name", max_len=roster.MAX_COMPANY)
    city = text(body, "city", max_len=roster.MAX_COMPANY, required=False)
    contact = _contact(body)
    company = unwrap(
        await request.app[DB].run(lambda c: roster.create_company(c, officer, name, city, contact)),
        _ROSTER_STATUS,
    )
    return web.json_response(company, status=201)


def _contact(body: dict[str, Any]) -> str:
    """The company's address for its records: an e-mail address or a mobile number ('')."""
    value = body.get("contact", "")
    if not isinstance(value, str):
        raise json_error(
            web.HTTPBadRequest,
            "bad_contact",
            "contact：电子邮件地址或手机号码（字符串）/ contact: an e-mail address or a mobile "
            "number (a string)",
        )
    problem = roster.contact_problem(value.strip())
    if problem:
        raise json_error(web.HTTPBadRequest, "bad_contact", problem)
    return roster.clean_contact(value)


async def put_contact(request: web.Request) -> web.Response:
    """The company's address for its attendance records (empty: none)."""
    officer = await access.officer(request)
    company_id = access.path_int(request, "company", "company")
    body = await read_object(request)
    if "contact" not in body:
        raise json_error(
            web.HTTPBadRequest,
            "bad_contact",
            "contact：必填（空字符串表示删除）/ contact: required (an empty string removes it)",
        )
    contact = _contact(body)
    company = unwrap(
        await request.app[DB].run(lambda c: roster.set_contact(c, officer, company_id, contact)),
        _ROSTER_STATUS,
    )
    return web.json_response(company)


async def list_companies(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    found = await request.app[DB].run(lambda c: roster.list_companies(c, officer))
    return web.json_response({"companies": found})


async def get_company(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    company_id = access.path_int(request, "company", "company")
    company = unwrap(
        await request.app[DB].run(lambda c: roster.company_detail(c, officer, company_id)),
        _ROSTER_STATUS,
    )
    return web.json_response(company)


def _person_in(body: dict[str, Any], company: str) -> PersonIn:
    role = body.get("role")
    if role not in roster.ROLES:
        raise json_error(
            web.HTTPBadRequest, "bad_request", "role: manager 或 driver / manager or driver"
        )
    id_number = text(body, "id_number", max_len=20).upper()
    if not roster.ID_NUMBER.match(id_number):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "id_number: 6-20 位字母或数字 / 6-20 letters or digits",
        )
    phone = text(body, "phone", max_len=20, required=False)
    if phone and not roster.PHONE.match(phone):
        raise json_error(web.HTTPBadRequest, "bad_request", "phone: 号码无效 / not a phone number")
    name = text(body, "name", max_len=roster.MAX_NAME)
    return PersonIn(company, "", role, name, id_number, phone)


async def post_person(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    company_id = access.path_int(request, "company", "company")
    person = _person_in(await read_object(request), "")
    added = unwrap(
        await request.app[DB].run(lambda c: roster.add_person(c, officer, company_id, person)),
        _ROSTER_STATUS,
    )
    return web.json_response(added, status=201)


async def post_import(request: web.Request) -> web.Response:
    """A CSV or XLSX file as the body: every row is checked; any problem keeps nothing."""
    officer = await access.officer(request)
    data = await _body(request, MAX_BYTES)
    try:
        table = await asyncio.to_thread(read_table, data)
    except SheetError as exc:
        raise json_error(web.HTTPUnprocessableEntity, "bad_file", str(exc)) from None
    people, problems = roster.check_rows(table)

    def refused(found: list[roster.RowProblem]) -> web.HTTPException:
        first = found[0]
        return web.HTTPUnprocessableEntity(
            text=_json(
                {
                    "error": "bad_rows",
                    "message": f"名单有 {len(found)} 处错误，未导入任何人员"
                    f"（首个：第 {first.row} 行 {first.column}：{first.problem}）/ "
                    f"{len(found)} problem(s) in the file, "
                    f"nobody was imported (first: row {first.row}, {first.column})",
                    "rows": [p.as_json() for p in found],
                }
            ),
            content_type="application/json",
        )

    if problems:
        raise refused(problems)
    try:
        result = await request.app[DB].run(lambda c: roster.import_people(c, officer, people))
    except ImportRefused as exc:
        raise refused(exc.problems) from None
    return web.json_response(result, status=201)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


async def put_photo(request: web.Request) -> web.Response:
    """The person's reference photo as the body, with ``?consent=given`` (the officer records
    that the person agreed in writing to face checks with it) and ``&basis=`` (how)."""
    officer = await access.officer(request)
    person_id = access.path_int(request, "person", "person")
    if request.query.get("consent") != "given":
        raise json_error(
            web.HTTPBadRequest,
            "consent_required",
            "须先取得本人同意人脸核验（?consent=given&basis=…）/ the person's consent to face "
            "checks is required (?consent=given&basis=...)",
        )
    basis = request.query.get("basis", "").strip()[:200]
    if not basis:
        raise json_error(
            web.HTTPBadRequest,
            "consent_required",
            "basis: 同意的方式（如：书面同意书编号）/ how the consent was given",
        )
    person = unwrap(
        await request.app[DB].run(lambda c: roster.person_of(c, officer, person_id)),
        _ROSTER_STATUS,
    )
    verifier = verifier_of(request)
    photo = await _body(request, MAX_PHOTO_BYTES)
    try:
        record = await verifier.enroll(
            roster.roster_scope(),
            roster.roster_participant(person_id),
            photo,
            actor=officer.actor,
        )
    except EnrollmentRejected as exc:
        raise json_error(
            web.HTTPUnprocessableEntity, exc.code, key=f"enrollment.{exc.code}", cause=exc.message
        ) from None
    consent = {"basis": basis, "recorded_by": officer.actor, "at": record["enrolled_at"]}
    await request.app[DB].run(
        lambda c: roster.photo_enrolled(c, officer, person_id, record["photo_sha256"], consent)
    )
    # a viewer of an open case already: the case's copy follows the new photo
    for viewer in await request.app[DB].run(lambda c: viewers.viewer_parties(c, person_id)):
        await asyncio.to_thread(
            viewers.copy_reference, verifier.store, viewer["case_id"], viewer, officer.actor
        )
    return web.json_response(
        {
            "person": person["id"],
            "photo_sha256": record["photo_sha256"],
            "quality": record["quality"],
            "consent": consent,
        }
    )


async def delete_photo(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    person_id = access.path_int(request, "person", "person")
    reason = request.query.get("reason", "").strip()[:500]
    if not reason:
        raise json_error(web.HTTPBadRequest, "reason_required", detail="query")
    unwrap(
        await request.app[DB].run(lambda c: roster.person_of(c, officer, person_id)),
        _ROSTER_STATUS,
    )
    removed = await verifier_of(request).forget(
        roster.roster_scope(),
        roster.roster_participant(person_id),
        actor=officer.actor,
        reason=reason,
    )
    if not removed:
        raise json_error(web.HTTPNotFound, "not_found", "此人没有登记照片 / no reference photo")
    await request.app[DB].run(lambda c: roster.photo_forgotten(c, officer, person_id, reason))
    return web.json_response({"deleted": True})


# -- an education case: its course, viewers and links -----------------------------------------
async def put_course(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    topic = text(body, "topic", max_len=200)
    required = body.get("required_minutes", 0)
    if not _number(required) or not 0 < required <= 1440:
        raise json_error(
            web.HTTPBadRequest, "bad_request", "required_minutes: 0-1440（分钟 / minutes）"
        )
    course = unwrap(
        await request.app[DB].run(
            lambda c: viewers.set_course(c, officer, case_id, topic, float(required) * 60)
        ),
        {**_VIEWER_STATUS, **viewers.CASE_STATUS},
    )
    return web.json_response(course)


async def post_viewers(request: web.Request) -> web.Response:
    """Put roster people (by person or whole company) on the case as parties; each one's
    roster reference goes with them (the verifier compares the case's parties)."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request)
    person_ids, company_ids = _id_list(body, "person_ids"), _id_list(body, "company_ids")
    added = unwrap(
        await request.app[DB].run(
            lambda c: viewers.add_viewers(c, officer, case_id, person_ids, company_ids)
        ),
        {**_VIEWER_STATUS, **viewers.CASE_STATUS},
    )
    verifier = request.app.get(VERIFIER)
    for viewer in added:
        viewer["reference"] = False
        if verifier is not None and viewer["photo_sha256"]:
            viewer["reference"] = await asyncio.to_thread(
                viewers.copy_reference, verifier.store, case_id, viewer, officer.actor
            )
    return web.json_response({"viewers": added}, status=201)


async def post_invitations(request: web.Request) -> web.Response:
    """One link per viewer of the case who has none that can still be used."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    body = await read_object(request, empty_ok=True)
    hours = body.get("valid_hours", 72)
    delay = body.get("valid_from_seconds", 0)
    if (
        not _number(hours)
        or not 0 < hours <= 720
        or not _number(delay)
        or not 0 <= delay <= 30 * 86400
    ):
        raise json_error(web.HTTPBadRequest, "bad_request", key="bad_request.validity")
    start = time.time() + float(delay)
    made = unwrap(
        await request.app[DB].run(
            lambda c: viewers.invite_all(
                c, officer, case_id, lambda: secrets.token_urlsafe(24), start, float(hours)
            )
        ),
        {**_VIEWER_STATUS, **viewers.CASE_STATUS},
    )
    return web.json_response({"invitations": made}, status=201)


# -- attendance and records --------------------------------------------------------------------
async def get_attendance(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    config = request.app[CONFIG].education
    facts = done(
        await request.app[DB].run(
            lambda c: records.session_facts(
                c, officer, case_id, session_id, config.required_minutes * 60
            )
        )
    )
    room = await request.app[DB].run(lambda c: viewers.session_room(c, session_id))
    live = request.app[ATTENDANCE].live(room) if room else None
    out = []
    for v in facts.viewers:
        state = (live or {}).get(f"party-{v.party_id}") or v.attendance
        out.append(
            {
                "party_id": v.party_id,
                "person_id": v.person_id,
                "name": v.name,
                "role": v.role,
                "company_id": v.company_id,
                "company": v.company,
                "attendance": state,
                "quiz": v.quiz,
                "questions": v.questions,
                "meets_requirement": bool(
                    state
                    and state["watch_seconds"] >= facts.required_seconds
                    and state["checks_passed"] >= 1
                    and (facts.quiz_pass_mark is None or (v.quiz and v.quiz["passed"]))
                ),
            }
        )
    return web.json_response(
        {
            "session_id": session_id,
            "topic": facts.topic,
            "required_seconds": facts.required_seconds,
            "live": live is not None,
            "quiz_pass_mark": facts.quiz_pass_mark,
            "rules": {
                "check_interval": config.check_interval,
                "check_window": config.check_window,
                "verdict_gap": config.verdict_gap,
            },
            "viewers": out,
        }
    )


async def post_records(request: web.Request) -> web.Response:
    """The session's attendance record, one per company, and a certificate per viewer who
    met the requirement: numbered, sealed PDFs."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    body = await read_object(request, empty_ok=True)
    # the seal certificate's common name holds it: X.509 allows 64 characters
    department = text(body, "department_name", max_len=64, required=False)
    config = request.app[CONFIG].education
    room = await request.app[DB].run(lambda c: viewers.session_room(c, session_id))
    if room:
        await request.app[ATTENDANCE].flush(room)
    facts = done(
        await request.app[DB].run(
            lambda c: records.session_facts(
                c, officer, case_id, session_id, config.required_minutes * 60
            )
        )
    )
    if not facts.viewers:
        raise json_error(
            web.HTTPConflict, "no_viewers", "本案没有名单中的学员 / the case has no roster viewers"
        )
    department = department or facts.brigade
    interval = config.check_interval
    jobs: list[records.Job] = [
        (
            "education_attendance",
            records.record_data(facts, department, interval, facts.viewers, "全体学员"),
            None,
            None,
        )
    ]
    companies: dict[int, list[records.ViewerFacts]] = {}
    for v in facts.viewers:
        companies.setdefault(v.company_id, []).append(v)
    for company_id, group in companies.items():
        data = records.record_data(facts, department, interval, group, group[0].company)
        jobs.append(("education_attendance", data, company_id, None))
    for v in facts.viewers:
        if facts.certified(v):
            data = records.record_data(facts, department, interval, [v], v.company)
            jobs.append(("education_certificate", data, v.company_id, v.party_id))
    app_config = request.app[CONFIG]
    try:
        made = await records.make_in_child(app_config.data_dir, app_config.keys_dir, jobs)
    except records.ChildFailed as exc:
        if not exc.document:
            raise
        raise json_error(web.HTTPUnprocessableEntity, "document", str(exc)) from None
    directory = request.app[CONFIG].data_dir / "education"
    kek = request.app[DOCS].kek
    try:
        kept = await request.app[DB].run(
            lambda c: records.keep_records(c, officer, directory, kek, facts, made)
        )
    except BaseException:
        # numbers taken for records nobody keeps are voided, never a silent gap (by the app's
        # owner of writes that outlive their request: the stop waits for it; once it closed,
        # the server stopping, here and now)
        void = functools.partial(
            records.void_numbers, app_config.data_dir, made, "保存失败 / could not be stored"
        )
        try:
            await request.app[OUTCOMES].write(
                asyncio.to_thread(void), "education records: numbers voided"
            )
        except TaskSetClosed:
            await asyncio.to_thread(void)
        raise
    return web.json_response({"records": kept}, status=201)


async def get_record(request: web.Request) -> web.Response:
    officer = await access.officer(request)
    record_id = access.path_int(request, "record", "record")
    row = done(await request.app[DB].run(lambda c: records.record_row(c, officer, record_id)))
    directory = request.app[CONFIG].data_dir / "education"
    try:
        pdf = await asyncio.to_thread(records.read_record, directory, request.app[DOCS].kek, row)
    except records.RecordIntegrity as exc:
        raise json_error(web.HTTPConflict, "integrity_failed", str(exc)) from None
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{row["kind"]}-{row["id"]}.pdf"'},
    )


# -- each company receives its record (sending.py) --------------------------------------------
async def _send_custody(
    request: web.Request, entry: str, actor: str, send: dict[str, Any], **more: Any
) -> None:
    await request.app[CUSTODY].append_async(
        entry,
        actor=actor,
        case=str(send["case_id"]),
        session=send["session_id"],
        send=send["id"],
        record=send["record_id"],
        number=send["number"],
        sha256=send["sha256"],
        company=send["company_id"],
        channel=send["channel"],
        address=send["address"],
        **more,
    )


def _notice_text(
    item: dict[str, Any], brigade: str, topic: str, link: str, days: int
) -> tuple[str, str]:
    subject = f"交通安全教育学习记录 {item['number']} / attendance record {item['number']}"
    text = (
        f"{item['company']}：{brigade}发来贵单位参加“{topic}”交通安全教育的学习记录"
        f"（{item['number']}，已加盖电子印章，可离线验证），请在 {days} 天内打开链接查看并下载："
        f"{link} 文件 SHA-256：{item['sha256'][:16]}… / {brigade} sent {item['company']} its "
        f'attendance record of the safety session "{topic}" ({item["number"]}, sealed, '
        f"validates offline): open the link within {days} days to read and download it: {link}"
    )
    return subject, text


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]{1,255}$")
_EVERY_INTERFACE = {"", "0.0.0.0", "::", "*"}


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower case, without the scheme's default port."""
    parsed = yarl.URL(url)
    scheme, host = (parsed.scheme or "").lower(), (parsed.raw_host or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parsed.explicit_port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _same_host(host: str, base: str) -> bool:
    """Whether a request's Host header names ``base``'s host and port."""
    try:
        return _origin_of(f"{yarl.URL(base).scheme}://{host}") == _origin_of(base)
    except ValueError:  # not a host at all
        return False


def _nobody_elses(host: str) -> bool:
    """Whether ``host`` is an address no company could reach the server by: every interface
    (``0.0.0.0``, ``::``), loopback (``127.0.0.1``, ``::1``, ``localhost``: the company's own
    machine), link-local (``169.254.x.x``, ``fe80::``: one network segment) or unspecified."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name in _EVERY_INTERFACE or name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])  # (an IPv6 zone: fe80::1%eth0)
    except ValueError:
        return False  # a name: the one the administrator gave the server
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_link_local or address.is_unspecified


def _own_origin(request: web.Request) -> str | None:
    """The server's own address as configured (``server.host``, ``server.port``, https with
    ``server.tls_cert``), None when it has none companies could be sent: it listens on every
    interface or on a loopback or link-local address (the default, 127.0.0.1: a company
    opening that link reaches its own machine), or it is a worker behind the front (its own
    address is internal)."""
    server = request.app[CONFIG].server
    if server.front_secret or _nobody_elses(server.host):
        return None
    port = server.port
    if port == 0:  # a port the system chose (tests): the socket this request came in on
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        if not sockname:
            return None
        port = int(sockname[1])
    scheme = "https" if server.tls_cert else "http"
    return _origin_of(f"{scheme}://{server.host}:{port}")


def _link_base(body: dict[str, Any], request: web.Request) -> str:
    """Where the companies' links start: only ever from the configuration, never from what a
    request says (a forged Host or ``link_base`` would send companies a link to another
    site, with their record's token). ``education.public_url`` when set; else the server's own
    configured address, and then only for a request that came to it by that name (a console
    that reached the server by another name means companies may not reach it by this one:
    set ``education.public_url``). A ``link_base`` in the body (older consoles sent their
    origin) must be that same origin."""
    public = request.app[CONFIG].education.public_url.rstrip("/")
    base = public or _own_origin(request)
    given = body.get("link_base")
    if given is not None and (not isinstance(given, str) or not _ORIGIN.match(given)):
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "link_base：http(s)://主机[:端口] / link_base: http(s)://host[:port]",
        )
    if base is None:
        raise json_error(
            web.HTTPConflict,
            "no_public_url",
            "未设置 education.public_url，服务器不知道企业访问它的地址（监听所有地址、本机回环"
            "或链路本地地址，或在前端之后），无法生成企业链接：请管理员设置 / "
            "education.public_url is not set and the server has no address of its own that "
            "companies could be sent (it listens on every interface, on a loopback or "
            "link-local address, or runs behind the front): ask the administrator to set it",
        )
    if given is not None and _origin_of(given) != _origin_of(base):
        raise json_error(
            web.HTTPBadRequest,
            "link_base_refused",
            f"link_base（{given}）不是本服务器配置的地址（{_origin_of(base)}），企业链接只使用配置的"
            f"地址 / link_base ({given}) is not this server's configured address "
            f"({_origin_of(base)}): the companies' links use the configured address only",
        )
    if not public and not _same_host(request.host, base):
        raise json_error(
            web.HTTPBadRequest,
            "host_refused",
            f"请求的主机名（{request.host}）与服务器配置的地址（{base}）不符：企业链接只使用配置的"
            f"地址，请通过该地址访问，或请管理员设置 education.public_url / this request's Host "
            f"({request.host}) is not the server's configured address ({base}): the companies' "
            "links use the configured address only; use that address, or ask the administrator "
            "to set education.public_url",
        )
    return base


async def _send_outcome(
    request: web.Request, actor: str, send_id: int, reference: str, failure: str
) -> None:
    """A send's outcome in its row, the audit trail and the custody log (the company's earlier
    links revoked when it went out; an answer to a send already marked failed changes nothing
    and is kept as ``education.record_send_late_answer``)."""
    send, revoked, late = await request.app[DB].run(
        functools.partial(
            sending.finish, actor=actor, send_id=send_id, reference=reference, failure=failure
        )
    )
    if late:
        # the send was marked failed meanwhile (abandoned as past any live answer): it stays
        # so and revokes nothing; what the provider said is kept
        logger.warning(
            "education send %s: the provider answered after it was marked failed", send_id
        )
        await _send_custody(
            request,
            "education.record_send_late_answer",
            actor,
            send,
            provider=send["provider"],
            status=send["status"],
            reference=reference,
            failure=failure,
        )
        return
    for old in revoked:  # only once the new link went out
        await _send_custody(
            request,
            "education.record_link_revoked",
            actor,
            old,
            revoked_at=old["revoked_at"],
            by_send=send["id"],
        )
    if failure:
        await _send_custody(
            request,
            "education.record_send_failed",
            actor,
            send,
            provider=send["provider"],
            failure=failure,
        )
    else:
        await _send_custody(
            request,
            "education.record_sent",
            actor,
            send,
            provider=send["provider"],
            reference=reference,
            sent_at=send["sent_at"],
            expires_at=send["expires_at"],
        )


async def _abandon_stale_sends(app: web.Application, everything: bool = False) -> None:
    """Sends a stopped server left ``sending`` marked failed (audited, in the custody log), so
    that the officer can send again: at start-up all of them when this is the only server on
    the database (no front: nothing else can be sending), else those older than any live send
    (:func:`sending.stale_after`)."""
    if everything:
        before = None
    else:
        bound = sending.stale_after(app[CONFIG].delivery.timeout)
        before = (
            datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=bound)
        ).isoformat(timespec="milliseconds")
    for row in await app[DB].run(lambda c: sending.abandon_stale(c, before)):
        logger.warning("education send %s was left sending: marked failed", row["id"])
        await app[CUSTODY].append_async(
            "education.record_send_failed",
            actor="server",
            case=str(row["case_id"]),
            session=row["session_id"],
            send=row["id"],
            record=row["record_id"],
            number=row["number"],
            sha256=row["sha256"],
            company=row["company_id"],
            channel=row["channel"],
            address=row["address"],
            provider=row["provider"],
            failure=row["failure"],
        )


async def _abandon_at_start(app: web.Application) -> None:
    await _abandon_stale_sends(app, everything=not app[CONFIG].server.front_secret)


async def post_send(request: web.Request) -> web.Response:
    """Send each company of the session its newest attendance record, with a link to the
    company page; companies without an address are listed as such, the others still sent."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    body = await read_object(request, empty_ok=True)
    config = request.app[CONFIG]
    days = body.get("valid_days", config.education.record_link_days)
    if type(days) is not int or not 1 <= days <= 365:
        raise json_error(
            web.HTTPBadRequest,
            "bad_request",
            "valid_days：1 到 365 的整数（天）/ valid_days: a whole number of days, 1 to 365",
        )
    company_ids = _id_list(body, "company_ids") if "company_ids" in body else None
    db = request.app[DB]
    await _abandon_stale_sends(request.app)

    case, items = unwrap(
        await db.run(lambda c: sending.plan(c, officer, case_id, session_id, company_ids)),
        _SEND_STATUS,
    )
    base = _link_base(body, request)
    for item in items:
        contact = str(item["contact"])
        if not contact:
            continue  # listed below as "no address": the others are still sent
        channel_name = roster.contact_channel(contact)
        channel = channel_for(config.delivery, channel_name, db)
        token = secrets.token_urlsafe(sending.TOKEN_BYTES)
        send, _ = await db.run(
            functools.partial(
                sending.begin,
                officer=officer,
                item=item,
                token=token,
                days=days,
                provider=channel.name,
            )
        )
        link = f"{base}{sending.COMPANY_PAGE}#t={token}"
        subject, text = _notice_text(item, str(case["brigade"]), str(case["topic"]), link, days)
        notice = Notice(None, channel_name, contact, subject, text, education_send=send["id"])
        # the outcome is written by the app's owner of outcomes, also when this request is
        # cancelled mid-provider (sending.INTERRUPTED) or during the write (delivery/outcomes.py)
        await send_notice(
            request.app[OUTCOMES],
            channel,
            notice,
            functools.partial(_send_outcome, request, officer.actor, send["id"]),
            interrupted=sending.INTERRUPTED,
            what=f"education send {send['id']}",
        )
    wanted = {int(i["company_id"]) for i in items}
    states = unwrap(
        await db.run(lambda c: sending.overview(c, officer, case_id, session_id)), _SEND_STATUS
    )
    return web.json_response(
        {"companies": [s for s in states if s["company_id"] in wanted]}, status=201
    )


async def get_sends(request: web.Request) -> web.Response:
    """Per company of the session: its newest record and whether it went out, was opened and
    downloaded (or why not)."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    await _abandon_stale_sends(request.app)
    states = unwrap(
        await request.app[DB].run(lambda c: sending.overview(c, officer, case_id, session_id)),
        _SEND_STATUS,
    )
    return web.json_response({"companies": states})


async def company_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "company-record.html", headers={"Cache-Control": "no-store"})


def _token(body: dict[str, Any]) -> str:
    token = body.get("token")
    # (ours are base64url: one that is not ASCII, even lone surrogates, is no link)
    if not isinstance(token, str) or not 20 <= len(token) <= 100 or not token.isascii():
        raise json_error(web.HTTPNotFound, "not_found", "链接无效 / no such link", detail="no_link")
    return token


async def post_company_open(request: web.Request) -> web.Response:
    """The company page opened with its link: the record's facts (the visit recorded)."""
    token = _token(await read_object(request))
    remote = request.remote or ""

    def open_it(
        c: sqlite3.Connection,
    ) -> tuple[dict[str, Any], bool, dict[str, Any]] | sending.SendRefusal:
        found = sending.visit(c, token, "opened", remote)
        if isinstance(found, sending.SendRefusal):
            return found
        send, first = found
        return send, first, sending.page_facts(c, send)

    send, first, facts = unwrap(await request.app[DB].run(open_it), _SEND_STATUS)
    if first:
        await _send_custody(
            request,
            "education.record_opened",
            f"company-link:{send['id']}",
            send,
            opened_at=send["opened_at"],
            remote=remote,
        )
    return web.json_response(facts, headers={"Cache-Control": "no-store"})


async def post_company_pdf(request: web.Request) -> web.Response:
    """The signed PDF for the company's link (the download recorded once it is read intact)."""
    token = _token(await read_object(request))
    remote = request.remote or ""
    db = request.app[DB]

    live = unwrap(await db.run(lambda c: sending.live_send(c, token)), _SEND_STATUS)
    record = live["record"]
    directory = request.app[CONFIG].data_dir / "education"
    kek = request.app[DOCS].kek
    try:
        pdf = await asyncio.to_thread(records.read_record, directory, kek, record)
    except records.RecordIntegrity as exc:
        raise json_error(web.HTTPConflict, "integrity_failed", str(exc)) from None
    # recorded once the record was read intact (revoked in between: refused, nothing served)
    found = await db.run(lambda c: sending.visit(c, token, "downloaded", remote))
    send, first = unwrap(found, _SEND_STATUS)
    if first:
        await _send_custody(
            request,
            "education.record_downloaded",
            f"company-link:{send['id']}",
            send,
            downloaded_at=send["downloaded_at"],
            remote=remote,
        )
    return web.Response(
        body=pdf,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="attendance-{record["id"]}.pdf"',
            "Cache-Control": "no-store",
        },
    )


# -- the live session: the floor, questions and announcements, the quiz -------------------------
def _session_room(
    conn: sqlite3.Connection, officer: Officer, case_id: int, session_id: int
) -> tuple[str, bool] | Refusal:
    """The session's room and whether it is still open."""
    if access.find_case(conn, officer, case_id) is None:
        return Refusal.NO_CASE
    row = conn.execute(
        "SELECT room, ended_at FROM sessions WHERE id = ? AND case_id = ?", (session_id, case_id)
    ).fetchone()
    if row is None:
        return Refusal.NO_SESSION
    return str(row["room"]), row["ended_at"] is None


async def _room_of(request: web.Request) -> tuple[Officer, int, int, str, bool]:
    officer = await access.officer(request)
    case_id = access.case_id(request)
    session_id = access.path_int(request, "session", "session")
    room, running = done(
        await request.app[DB].run(lambda c: _session_room(c, officer, case_id, session_id))
    )
    return officer, case_id, session_id, room, running


def _edu_error(status: type[web.HTTPException], code: str, params: dict[str, Any]) -> Exception:
    return json_error(status, code, key=f"education.{code}", **params)


async def get_live(request: web.Request) -> web.Response:
    """The floor and the hands (while the room runs), every question, answer and
    announcement, the quiz with the right choices and each viewer's result."""
    _, _, session_id, room, _ = await _room_of(request)

    def read(c: sqlite3.Connection) -> dict[str, Any]:
        current = quiz.session_quiz(c, session_id)
        return {
            "messages": chat.session_messages(c, session_id),
            "quiz": None
            if current is None
            else current.public() | {"questions": [q.as_json() for q in current.questions]},
            "results": {str(k): v for k, v in quiz.results(c, session_id).items()},
        }

    body = await request.app[DB].run(read)
    return web.json_response(
        {"session_id": session_id, "floor": request.app[LIVE].state(room)} | body
    )


async def post_floor(request: web.Request) -> web.Response:
    """Give a viewer the floor (audio and video forwarded to everyone) or take it back."""
    officer, case_id, _, room, running = await _room_of(request)
    body = await read_object(request)
    action = body.get("action")
    if action not in ("give", "take"):
        raise json_error(web.HTTPBadRequest, "bad_request", key="education.floor_action")
    participant = text(body, "participant", max_len=64)
    seconds = body.get("seconds")
    if seconds is not None and (not _number(seconds) or not 5 <= seconds <= 7200):
        raise json_error(web.HTTPBadRequest, "bad_request", "seconds: 5-7200（秒 / seconds）")
    live = request.app[LIVE]
    try:
        if not running:
            raise FloorRefused("not_live")
        if action == "give":
            state = await live.give(
                room, participant, officer.actor, None if seconds is None else float(seconds)
            )
        else:
            state = await live.take(room, participant, officer.actor)
    except FloorRefused as exc:
        status = web.HTTPNotFound if exc.code == "not_in_room" else web.HTTPConflict
        raise _edu_error(status, exc.code, exc.params) from None
    action_name = "education.floor_given" if action == "give" else "education.floor_taken"
    await request.app[DB].run(
        lambda c: access.audit(c, officer.actor, action_name, f"participant:{participant}", case_id)
    )
    return web.json_response(state)


async def post_answer(request: web.Request) -> web.Response:
    """Mark a viewer's question answered, with an answer everyone sees when there is a text."""
    officer, _, session_id, room, _ = await _room_of(request)
    question_id = access.path_int(request, "question", "question")
    body = await read_object(request, empty_ok=True)
    try:
        answer = None if body.get("text") is None else chat.clean_text(body.get("text"))
    except chat.ChatRefused as exc:
        raise _edu_error(web.HTTPBadRequest, exc.code, exc.params) from None
    found = await request.app[DB].run(
        lambda c: chat.answer_question(c, session_id, question_id, officer.username, answer)
    )
    if found is None:
        raise json_error(web.HTTPNotFound, "not_found", key="education.no_question")
    question, said = found
    live = request.app[LIVE]
    live.tell(room, {"type": "answered", "question": question, "answer": said})
    return web.json_response({"question": question, "answer": said})


async def post_announcement(request: web.Request) -> web.Response:
    officer, _, session_id, room, running = await _room_of(request)
    body = await read_object(request)
    try:
        words = chat.clean_text(body.get("text"))
    except chat.ChatRefused as exc:
        raise _edu_error(web.HTTPBadRequest, exc.code, exc.params) from None
    if not running:
        raise _edu_error(web.HTTPConflict, "not_live", {})
    said = await request.app[DB].run(
        lambda c: chat.add_message(
            c, session_id, "announcement", officer.username, officer.username, words
        )
    )
    request.app[LIVE].tell(room, {"type": "announcement", "message": said})
    return web.json_response(said, status=201)


async def put_quiz(request: web.Request) -> web.Response:
    """The session's quiz: questions (single or multiple choice) and a pass mark in percent.
    Replaceable until the first viewer answered; a certificate then needs it passed."""
    officer, case_id, session_id, room, _ = await _room_of(request)
    body = await read_object(request)
    try:
        questions = quiz.parse_questions(body.get("questions"))
        pass_mark = quiz.parse_pass_mark(body.get("pass_mark"))
        current = await request.app[DB].run(
            lambda c: _set_quiz(c, officer, case_id, session_id, questions, pass_mark)
        )
    except quiz.QuizRefused as exc:
        status = web.HTTPConflict if exc.code == "quiz_answered" else web.HTTPBadRequest
        raise _edu_error(status, exc.code, exc.params) from None
    request.app[LIVE].quiz_set(room, current)
    return web.json_response(
        current.public() | {"questions": [q.as_json() for q in current.questions]}
    )


def _set_quiz(
    conn: sqlite3.Connection,
    officer: Officer,
    case_id: int,
    session_id: int,
    questions: list[quiz.Question],
    pass_mark: int,
) -> quiz.Quiz:
    current = quiz.set_quiz(conn, session_id, questions, pass_mark, officer.username)
    access.audit(
        conn,
        officer.actor,
        "education.quiz_set",
        f"session:{session_id}",
        case_id,
        questions=len(questions),
        pass_mark=pass_mark,
    )
    return current


async def put_speaker(request: web.Request) -> web.Response:
    """Mark a viewer of the case as a guest speaker (publishes without the floor) or not."""
    officer = await access.officer(request)
    case_id = access.case_id(request)
    party_id = access.path_int(request, "party", "party")
    body = await read_object(request)
    speaker = body.get("speaker")
    if not isinstance(speaker, bool):
        raise json_error(web.HTTPBadRequest, "bad_request", key="education.speaker")

    def write(c: sqlite3.Connection) -> list[str] | Refusal | None:
        if access.find_case(c, officer, case_id) is None:
            return Refusal.NO_CASE
        return viewers.set_speaker(c, officer, case_id, party_id, speaker)

    rooms = done(await request.app[DB].run(write))
    if rooms is None:
        raise json_error(web.HTTPNotFound, "not_found", key="education.no_viewer")
    for room in rooms:
        request.app[LIVE].set_speaker(room, f"party-{party_id}", speaker)
    return web.json_response({"party_id": party_id, "speaker": speaker})


def add_routes(app: web.Application) -> None:
    # after the app's own start-up (its cleanup context runs first): the database is open
    app.on_startup.append(_abandon_at_start)
    app.router.add_post("/api/education/companies", post_company)
    app.router.add_put("/api/education/companies/{company}/contact", put_contact)
    app.router.add_get("/api/education/companies", list_companies)
    app.router.add_get("/api/education/companies/{company}", get_company)
    app.router.add_post("/api/education/companies/{company}/people", post_person)
    app.router.add_post("/api/education/roster/import", post_import)
    app.router.add_put("/api/education/people/{person}/photo", put_photo)
    app.router.add_delete("/api/education/people/{person}/photo", delete_photo)
    app.router.add_put("/api/cases/{case}/education", put_course)
    app.router.add_post("/api/cases/{case}/education/viewers", post_viewers)
    app.router.add_post("/api/cases/{case}/education/invitations", post_invitations)
    app.router.add_get("/api/cases/{case}/sessions/{session}/attendance", get_attendance)
    app.router.add_post("/api/cases/{case}/sessions/{session}/attendance/records", post_records)
    app.router.add_get("/api/education/records/{record}", get_record)
    app.router.add_post("/api/cases/{case}/sessions/{session}/attendance/records/send", post_send)
    app.router.add_get("/api/cases/{case}/sessions/{session}/attendance/records/sends", get_sends)
    app.router.add_get(sending.COMPANY_PAGE, company_page)
    app.router.add_post("/api/education/company-record", post_company_open)
    app.router.add_post("/api/education/company-record/pdf", post_company_pdf)
    app.router.add_put("/api/cases/{case}/education/viewers/{party}/speaker", put_speaker)
    live = "/api/cases/{case}/sessions/{session}"
    app.router.add_get(f"{live}/live", get_live)
    app.router.add_post(f"{live}/floor", post_floor)
    app.router.add_post(f"{live}/questions/{{question}}/answer", post_answer)
    app.router.add_post(f"{live}/announcements", post_announcement)
    app.router.add_put(f"{live}/quiz", put_quiz)


COMPANY = in_path("company", ID)
PERSON = in_path("person", ID)
RECORD = in_path("record", ID)
PARTY = in_path("party", ID)
QUESTION = in_path("question", ID)
TEXT = {"type": "string", "minLength": 1, "maxLength": chat.MAX_CHARS}
QUIZ_QUESTION = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": quiz.MAX_QUESTION_CHARS},
        "choices": {
            "type": "array",
            "minItems": 2,
            "maxItems": quiz.MAX_CHOICES,
            "items": {"type": "string", "minLength": 1, "maxLength": quiz.MAX_CHOICE_CHARS},
        },
        "correct": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
        "multiple": {"type": "boolean"},
    },
    "required": ["text", "choices", "correct"],
}
NAME = {"type": "string", "minLength": 1, "maxLength": 100}
PDF = {"type": "string", "format": "binary"}


def describe(add: Add) -> None:
    """These routes in the OpenAPI description (assembled in control/http/openapi.py)."""
    tag = "education"
    add(
        "/api/education/companies",
        "post",
        op(
            "Put a transport company on the brigade's roster",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 409"),
            tag=tag,
            body=json_body(
                {
                    "name": NAME,
                    "city": {"type": "string", "maxLength": 100},
                    "contact": {"type": "string", "maxLength": 254},
                },
                ["name"],
            ),
        ),
    )
    add(
        "/api/education/companies/{company}/contact",
        "put",
        op(
            "A company's address for its attendance records: e-mail or mobile ('' removes it)",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag=tag,
            body=json_body({"contact": {"type": "string", "maxLength": 254}}, ["contact"]),
        ),
        [COMPANY],
    )
    add(
        "/api/education/companies",
        "get",
        op("The brigade's companies", OFFICER, responses("200", ANY_OBJECT, "401"), tag=tag),
    )
    add(
        "/api/education/companies/{company}",
        "get",
        op(
            "A company and its people",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [COMPANY],
    )
    add(
        "/api/education/companies/{company}/people",
        "post",
        op(
            "Put a manager or driver on the company's roster",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "role": {"type": "string", "enum": list(roster.ROLES)},
                    "name": {"type": "string", "minLength": 1, "maxLength": 50},
                    "id_number": {"type": "string", "pattern": "^[0-9A-Za-z]{6,20}$"},
                    "phone": {"type": "string", "maxLength": 20},
                },
                ["role", "name", "id_number"],
            ),
        ),
        [COMPANY],
    )
    add(
        "/api/education/roster/import",
        "post",
        op(
            "Import people from a CSV or XLSX file: all rows or none, problems named per row",
            OFFICER,
            responses("201", ANY_OBJECT, "401 403 413 422"),
            tag=tag,
            body=raw_body(
                "the file (columns company, city, role, name, id_number, phone)", IMPORT_TYPES
            ),
        ),
    )
    add(
        "/api/education/people/{person}/photo",
        "put",
        op(
            "Enroll a person's reference photo, with the consent recorded",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 413 422"),
            tag=tag,
            body=raw_body(
                "the photo itself, at most 10 MiB",
                ["image/jpeg", "image/png", "application/octet-stream"],
            ),
            params=[
                query("consent", {"type": "string", "enum": ["given"]}, required=True),
                query(
                    "basis",
                    {"type": "string", "minLength": 1, "maxLength": 200},
                    required=True,
                    description="how the consent was given",
                ),
            ],
        ),
        [PERSON],
    )
    add(
        "/api/education/people/{person}/photo",
        "delete",
        op(
            "Delete a person's reference",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag=tag,
            params=[reason_query()],
        ),
    )
    add(
        "/api/cases/{case}/education",
        "put",
        op(
            "An education case's topic and required watch time",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "topic": {"type": "string", "minLength": 1, "maxLength": 200},
                    "required_minutes": {
                        "type": "number",
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "maximum": 1440,
                    },
                },
                ["topic", "required_minutes"],
            ),
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/education/viewers",
        "post",
        op(
            "Put roster people (or whole companies) on an education case as viewers",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "person_ids": {"type": "array", "items": ID, "maxItems": 1000},
                    "company_ids": {"type": "array", "items": ID, "maxItems": 1000},
                },
                [],
            ),
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/education/invitations",
        "post",
        op(
            "One link per viewer who has no usable one",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "valid_hours": {
                        "type": "number",
                        "minimum": 0,
                        "exclusiveMinimum": True,
                        "maximum": 720,
                    },
                    "valid_from_seconds": {"type": "number", "minimum": 0, "maximum": 2592000},
                },
                [],
            ),
        ),
        [CASE],
    )
    add(
        "/api/cases/{case}/sessions/{session}/attendance",
        "get",
        op(
            "Each viewer's attendance: visits, watch time on proof of face, checks, flags",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, SESSION],
    )
    add(
        "/api/cases/{case}/sessions/{session}/attendance/records",
        "post",
        op(
            "Make the sealed attendance records (session, per company) and certificates",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409 422"),
            tag=tag,
            body=json_body(
                {"department_name": {"type": "string", "minLength": 1, "maxLength": 64}}, []
            ),
        ),
        [CASE, SESSION],
    )
    add(
        "/api/education/records/{record}",
        "get",
        op(
            "An attendance record or certificate (sealed PDF)",
            OFFICER,
            responses("200 the PDF", PDF, "401 404 409", "application/pdf"),
            tag=tag,
        ),
        [RECORD],
    )
    add(
        "/api/cases/{case}/sessions/{session}/attendance/records/send",
        "post",
        op(
            "Send each company its newest attendance record with a link to the company page",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "valid_days": {"type": "integer", "minimum": 1, "maximum": 365},
                    "company_ids": {"type": "array", "items": ID, "maxItems": 1000},
                    "link_base": {
                        "type": "string",
                        "pattern": "^https?://[A-Za-z0-9.\\-\\[\\]:]{1,255}$",
                    },
                },
                [],
            ),
            description="A company without an address is listed as no_address and the others "
            "are still sent; sending again makes a new link and revokes the company's old one. "
            "The link starts with education.public_url, else the server's own configured "
            "address (a request naming another Host: 400 host_refused; none, or one no company "
            "reaches: every interface, loopback, link-local: 409 no_public_url); link_base, "
            "when given, must be that origin (400 link_base_refused).",
        ),
        [CASE, SESSION],
    )
    add(
        "/api/cases/{case}/sessions/{session}/attendance/records/sends",
        "get",
        op(
            "Per company: its record and whether it was sent, opened, downloaded (or why not)",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, SESSION],
    )
    page = responses("200", {"type": "string"}, "", "text/html")
    add(
        sending.COMPANY_PAGE,
        "get",
        op("The company page of a sent attendance record (its link's #t=)", NOBODY, page, tag=tag),
    )
    token_body = json_body(
        {"token": {"type": "string", "minLength": 20, "maxLength": 100}}, ["token"]
    )
    add(
        "/api/education/company-record",
        "post",
        op(
            "What a company's link opens: the record, who sent it, how to validate it",
            NOBODY,
            responses("200", ANY_OBJECT, "400 404 410"),
            tag=tag,
            body=token_body,
            description="Public: the token of the link is the only credential (one record).",
        ),
    )
    add(
        "/api/education/company-record/pdf",
        "post",
        op(
            "The sealed PDF of a company's link",
            NOBODY,
            responses("200 the PDF", PDF, "400 404 409 410", "application/pdf"),
            tag=tag,
            body=token_body,
        ),
    )
    add(
        "/api/cases/{case}/education/viewers/{party}/speaker",
        "put",
        op(
            "Mark a viewer as a guest speaker (publishes without the floor) or not",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag=tag,
            body=json_body({"speaker": {"type": "boolean"}}, ["speaker"]),
        ),
        [CASE, PARTY],
    )
    live = "/api/cases/{case}/sessions/{session}"
    add(
        f"{live}/live",
        "get",
        op(
            "The live session: floor and hands, questions and answers, the quiz and results",
            OFFICER,
            responses("200", ANY_OBJECT, "401 404"),
            tag=tag,
        ),
        [CASE, SESSION],
    )
    add(
        f"{live}/floor",
        "post",
        op(
            "Give a viewer the floor (its audio and video forwarded) or take it back",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "action": {"type": "string", "enum": ["give", "take"]},
                    "participant": {"type": "string", "minLength": 1, "maxLength": 64},
                    "seconds": {"type": "number", "minimum": 5, "maximum": 7200},
                },
                ["action", "participant"],
            ),
        ),
        [CASE, SESSION],
    )
    add(
        f"{live}/questions/{{question}}/answer",
        "post",
        op(
            "Mark a viewer's question answered, with an answer everyone sees",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404"),
            tag=tag,
            body=json_body({"text": TEXT}, []),
        ),
        [CASE, SESSION, QUESTION],
    )
    add(
        f"{live}/announcements",
        "post",
        op(
            "An announcement to everyone in the session",
            OFFICER,
            responses("201", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body({"text": TEXT}, ["text"]),
        ),
        [CASE, SESSION],
    )
    add(
        f"{live}/quiz",
        "put",
        op(
            "The session's quiz (single or multiple choice) and its pass mark in percent",
            OFFICER,
            responses("200", ANY_OBJECT, "400 401 403 404 409"),
            tag=tag,
            body=json_body(
                {
                    "questions": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": quiz.MAX_QUESTIONS,
                        "items": QUIZ_QUESTION,
                    },
                    "pass_mark": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                ["questions", "pass_mark"],
            ),
        ),
        [CASE, SESSION],
    )
