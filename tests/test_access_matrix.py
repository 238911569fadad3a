"""Every role against every endpoint, on its own case and on another's, with the status expected.

Roles: nobody; the party of the case (its invitation link); a party of another brigade's case;
an officer of the case's brigade; an officer of another brigade; an observer of the case's
brigade; a supervisor. Each call gets fresh objects (a new case, party, session...), so that one
role's call never changes what the next one finds. An authorized call on a room nobody has
joined answers 409 ("empty"), which tells it apart from 401/403/404.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import pytest
import skimage.data
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.peer import PatternVideoTrack, PeerClient
from control.appkeys import DB, RECORDER
from control.auth import create_officer
from control.delivery.channels import outbox
from documents.samples import sample
from tests import samples
from tests.conftest import CONSENT, PASSWORD, Api, make_config, start_server, wait_until

ROLES = ("nobody", "party", "other_party", "officer", "other_officer", "observer", "supervisor")
OFFICERS_ONLY = (401, 401, 401)  # what nobody and parties get from an officer endpoint
PARTIES_ONLY = (401, 401, 401, 401)  # what officers get from a party endpoint (no party token)


def _future(hours: float) -> str:
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=hours)).isoformat()


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    data: bytes | None = None
    link: str = ""  # the link of the target case's party


@dataclass
class World:
    api: Api
    tokens: dict[str, str] = field(default_factory=dict)
    other_link: str = ""
    recording: str = ""
    track: str = ""
    export: str = ""
    slot_hours: float = 24.0
    edu_record: int = 0
    company_token: str = ""  # a company's link to its attendance record (after #t=)

    async def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        status, body = await self.api.call(method, path, token, **kwargs)
        assert status < 300, (method, path, status, body)
        return body

    async def case(self) -> tuple[int, int, str]:
        """A fresh case of brigade-1 with one party and that party's link."""
        li = self.tokens["officer"]
        case = await self.ok("POST", "/api/cases", li, json={"kind": "accident", "title": "t"})
        party = await self.ok(
            "POST", f"/api/cases/{case['id']}/parties", li, json={"role": "driver", "name": "p"}
        )
        invite = await self.ok(
            "POST", f"/api/cases/{case['id']}/invitations", li, json={"party_id": party["id"]}
        )
        return case["id"], party["id"], invite["token"]

    async def session(self, cid: int) -> int:
        session = await self.ok("POST", f"/api/cases/{cid}/sessions", self.tokens["officer"])
        return int(session["id"])

    async def slot(self, token: str | None = None) -> int:
        self.slot_hours += 1
        slot = await self.ok(
            "POST",
            "/api/slots",
            token or self.tokens["officer"],
            json={"starts_at": _future(self.slot_hours), "ends_at": _future(self.slot_hours + 0.5)},
        )
        return int(slot["id"])

    async def material(self, cid: int, link: str = "") -> str:
        if link:
            body = await self.ok(
                "POST", "/api/party/materials?name=a.jpg", link, data=samples.jpeg(64, 48)
            )
        else:
            body = await self.ok(
                "POST",
                f"/api/cases/{cid}/materials?name=a.jpg",
                self.tokens["officer"],
                data=samples.jpeg(64, 48),
            )
        return str(body["id"])


Setup = Callable[[World], Awaitable[Call]]
SUPERVISORS_ONLY = (*(401,) * 3, 403, 403, 403)  # what all but a supervisor get (accounts)


async def _plain(w: World, method: str, path: str, **kwargs: Any) -> Call:
    cid, pid, link = await w.case()
    return Call(method, path.format(case=cid, party=pid), link=link, **kwargs)


def plain(method: str, path: str, **kwargs: Any) -> Setup:
    return lambda w: _plain(w, method, path, **kwargs)


async def _session_call(w: World, method: str, suffix: str, json: Any = None) -> Call:
    cid, _, link = await w.case()
    sid = await w.session(cid)
    return Call(method, f"/api/cases/{cid}/sessions/{sid}{suffix}", json, link=link)


def session_call(method: str, suffix: str, json: Any = None) -> Setup:
    return lambda w: _session_call(w, method, suffix, json)


async def _display(w: World) -> Call:
    cid, _, link = await w.case()
    material = await w.material(cid)
    sid = await w.session(cid)
    return Call(
        "POST",
        f"/api/cases/{cid}/sessions/{sid}/display",
        {"material_id": material, "reason": "r"},
        link=link,
    )


async def _revoke(w: World) -> Call:
    cid, pid, link = await w.case()
    invite = await w.ok(
        "POST", f"/api/cases/{cid}/invitations", w.tokens["officer"], json={"party_id": pid}
    )
    return Call("POST", f"/api/invitations/{invite['id']}/revoke", {"reason": "r"}, link=link)


async def _withdraw(w: World) -> Call:
    return Call("POST", f"/api/slots/{await w.slot()}/withdraw", {"reason": "r"})


async def _book(w: World) -> Call:
    cid, pid, link = await w.case()
    return Call(
        "POST",
        f"/api/cases/{cid}/appointments",
        {"party_id": pid, "slot_id": await w.slot()},
        link=link,
    )


async def _cancel(w: World) -> Call:
    cid, pid, link = await w.case()
    booked = await w.ok(
        "POST",
        f"/api/cases/{cid}/appointments",
        w.tokens["officer"],
        json={"party_id": pid, "slot_id": await w.slot()},
    )
    return Call(
        "POST", f"/api/cases/{cid}/appointments/{booked['id']}/cancel", {"reason": "r"}, link=link
    )


async def _upload(w: World) -> Call:
    cid, _, link = await w.case()
    return Call(
        "POST", f"/api/cases/{cid}/materials?name=a.jpg", data=samples.jpeg(64, 48), link=link
    )


async def _download(w: World) -> Call:
    cid, _, link = await w.case()
    material = await w.material(cid, link)
    return Call("GET", f"/api/cases/{cid}/materials/{material}/content?reason=r", link=link)


def _face() -> bytes:
    ok, png = cv2.imencode(".png", cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert ok
    return png.tobytes()


async def _enroll(w: World) -> Call:
    cid, pid, link = await w.case()
    return Call("PUT", f"/api/cases/{cid}/parties/{pid}/reference", data=_face(), link=link)


async def _forget(w: World) -> Call:
    cid, pid, link = await w.case()
    await w.ok(
        "PUT", f"/api/cases/{cid}/parties/{pid}/reference", w.tokens["officer"], data=_face()
    )
    return Call("DELETE", f"/api/cases/{cid}/parties/{pid}/reference?reason=r", link=link)


def recording(method: str, suffix: str, json: Any = None) -> Setup:
    async def setup(w: World) -> Call:
        path = f"/api/recordings/{w.recording}{suffix}".format(track=w.track, export=w.export)
        return Call(method, path, json)

    return setup


async def _party_book(w: World) -> Call:
    _, _, link = await w.case()
    return Call("POST", "/api/party/appointment", {"slot_id": await w.slot()}, link=link)


async def _party_cancel(w: World) -> Call:
    _, _, link = await w.case()
    await w.ok("POST", "/api/party/appointment", link, json={"slot_id": await w.slot()})
    return Call("POST", "/api/party/appointment/cancel", {"reason": "r"}, link=link)


async def _party_download(w: World) -> Call:
    cid, _, link = await w.case()
    material = await w.material(cid, link)
    return Call("GET", f"/api/party/materials/{material}/content", link=link)


def _consent_data() -> dict[str, Any]:
    s = sample("delivery_consent")
    return {"department": s["department"], "case": s["case"], "delivery": s["delivery"]}


async def _document(w: World, *, signed: bool = False) -> tuple[int, int, str, int]:
    """A fresh brigade-1 case with a 送达地址确认书 (the party's and the officer's boxes)."""
    cid, pid, link = await w.case()
    li = w.tokens["officer"]
    data = _consent_data() | {"parties": [{"id": pid, "id_number": "110101198503020011"}]}
    doc = await w.ok(
        "POST", f"/api/cases/{cid}/documents", li, json={"kind": "delivery_consent", "data": data}
    )
    if signed:
        officer_box = next(r["field"] for r in doc["required"] if r["role"] == "officer")
        await w.ok(
            "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, json={"field": officer_box}
        )
    return cid, pid, link, int(doc["id"])


def document(
    method: str, suffix: str, json: Any = None, *, party: bool = False, signed: bool = False
) -> Setup:
    async def setup(w: World) -> Call:
        cid, pid, link, doc = await _document(w, signed=signed)
        path = (
            f"/api/party/documents/{doc}{suffix}"
            if party
            else f"/api/cases/{cid}/documents/{doc}{suffix}"
        )
        body = json
        if isinstance(body, dict):
            body = {k: (v.format(party=pid) if isinstance(v, str) else v) for k, v in body.items()}
        return Call(method, path, body, link=link)

    return setup


async def _generate(w: World) -> Call:
    cid, pid, link = await w.case()
    data = _consent_data() | {"parties": [{"id": pid, "id_number": "110101198503020011"}]}
    return Call(
        "POST", f"/api/cases/{cid}/documents", {"kind": "delivery_consent", "data": data}, link=link
    )


async def _deliver(w: World) -> Call:
    """A case whose only document is the party's consent: delivering it is refused (400) after
    the caller was let in, which tells an authorized call apart from 401/403/404."""
    cid, pid, link, doc = await _document(w)
    return Call(
        "POST", f"/api/cases/{cid}/deliveries", {"document_id": doc, "party_id": pid}, link=link
    )


async def _record(w: World, suffix: str = "", json: Any = None, method: str = "GET") -> Call:
    cid, pid, link = await w.case()
    sid = await w.session(cid)
    record = await w.ok(
        "POST",
        f"/api/cases/{cid}/sessions/{sid}/records",
        w.tokens["officer"],
        json={"party_id": pid},
    )
    if suffix == "party":
        return Call("GET", "/api/party/record", link=link)
    return Call(method, f"/api/cases/{cid}/records/{record['id']}{suffix}", json, link=link)


def record(method: str = "GET", suffix: str = "", json: Any = None) -> Setup:
    return lambda w: _record(w, suffix, json, method)


_SERIAL = iter(range(10**6))


def _unique() -> int:
    return next(_SERIAL)


def _roster_csv() -> bytes:
    n = _unique()
    return f"company,role,name,id_number\n企业{n},driver,学员,ID{n:08d}\n".encode()


async def _person(w: World, photo: bool = False) -> tuple[int, int]:
    """A fresh brigade-1 company with one driver: (company, person)."""
    li = w.tokens["officer"]
    company = await w.ok("POST", "/api/education/companies", li, json={"name": f"企业{_unique()}"})
    person = await w.ok(
        "POST",
        f"/api/education/companies/{company['id']}/people",
        li,
        json={"role": "driver", "name": "学员", "id_number": f"ID{_unique():08d}"},
    )
    if photo:
        await w.ok(
            "PUT",
            f"/api/education/people/{person['id']}/photo?consent=given&basis=b",
            li,
            data=_face(),
        )
    return int(company["id"]), int(person["id"])


async def _education_case(w: World, viewer: bool = False) -> int:
    li = w.tokens["officer"]
    case = await w.ok("POST", "/api/cases", li, json={"kind": "education", "title": "t"})
    if viewer:
        _, person = await _person(w)
        await w.ok(
            "POST",
            f"/api/cases/{case['id']}/education/viewers",
            li,
            json={"person_ids": [person]},
        )
    return int(case["id"])


def education(method: str, path: str, json: Any = None, **kw: Any) -> Setup:
    """``path`` with {company}, {person}, {case}, {session}, {record} made fresh."""

    async def setup(w: World) -> Call:
        values: dict[str, Any] = {}
        body = json() if callable(json) else json
        if "{company}" in path or "{person}" in path:
            values["company"], values["person"] = await _person(w, kw.get("photo", False))
        if "{case}" in path:
            values["case"] = await _education_case(w, kw.get("viewer", False))
            if "{session}" in path:
                values["session"] = await w.session(values["case"])
            if "{party}" in path:
                found = await w.ok("GET", f"/api/cases/{values['case']}", w.tokens["officer"])
                values["party"] = found["parties"][0]["id"]
        if "{record}" in path and w.edu_record:
            values["record"] = w.edu_record  # reading changes nothing: one set for every role
        elif "{record}" in path:
            cid = await _education_case(w, viewer=True)
            sid = await w.session(cid)
            made = await w.ok(
                "POST",
                f"/api/cases/{cid}/sessions/{sid}/attendance/records",
                w.tokens["officer"],
                json={},
            )
            values["record"] = w.edu_record = made["records"][0]["id"]
        if isinstance(body, dict) and body.get("person_ids") == "{person}":
            _, person = await _person(w)
            body = {"person_ids": [person]}
        return Call(method, path.format(**values), body, data=kw.get("data"))

    return setup


def company_link(path: str) -> Setup:
    async def setup(w: World) -> Call:
        return Call("POST", path, {"token": w.company_token})

    return setup


async def _company_link(w: World, server: Any) -> None:
    """One company's attendance record sent to it: its link's token (from the outbox)."""
    li = w.tokens["officer"]
    company = await w.ok(
        "POST",
        "/api/education/companies",
        li,
        json={"name": f"企业{_unique()}", "contact": "records@company.example.cn"},
    )
    person = await w.ok(
        "POST",
        f"/api/education/companies/{company['id']}/people",
        li,
        json={"role": "driver", "name": "学员", "id_number": f"ID{_unique():08d}"},
    )
    case = await w.ok("POST", "/api/cases", li, json={"kind": "education", "title": "t"})
    cid = case["id"]
    await w.ok(
        "POST", f"/api/cases/{cid}/education/viewers", li, json={"person_ids": [person["id"]]}
    )
    sid = await w.session(cid)
    base = f"/api/cases/{cid}/sessions/{sid}/attendance/records"
    await w.ok("POST", base, li, json={})
    await w.ok("POST", f"{base}/send", li, json={})
    notices = await server.app[DB].run(outbox)
    w.company_token = str(notices[-1]["text"]).split("#t=")[1].split()[0]


def talk(method: str, suffix: str | None, json: Any = None, drafted: bool = False) -> Setup:
    """A 约谈 route: ``suffix`` after ``/api/education/talks/{talk}`` (None: opening one on
    ``/api/cases/{case}/education/talks``), on a fresh education case with one viewer."""

    async def setup(w: World) -> Call:
        li = w.tokens["officer"]
        case = await w.ok("POST", "/api/cases", li, json={"kind": "education", "title": "t"})
        _, person = await _person(w)
        added = await w.ok(
            "POST",
            f"/api/cases/{case['id']}/education/viewers",
            li,
            json={"person_ids": [person]},
        )
        party = added["viewers"][0]["party_id"]
        if suffix is None:
            body = {"party_id": party, "subject": "s"}
            return Call(method, f"/api/cases/{case['id']}/education/talks", body)
        opened = await w.ok(
            "POST",
            f"/api/cases/{case['id']}/education/talks",
            li,
            json={"party_id": party, "subject": "s"},
        )
        path = f"/api/education/talks/{opened['id']}"
        if drafted:
            await w.ok("PUT", path, li, json={"turns": [{"q": "q", "a": "a"}]})
        return Call(method, path + suffix, json)

    return setup


SPKI = base64.b64encode(
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()

# expected statuses, in the order of ROLES
MATRIX: list[tuple[str, Setup, tuple[int, ...]]] = [
    ("list cases", plain("GET", "/api/cases"), (*OFFICERS_ONLY, 200, 200, 200, 200)),
    (
        "open a case",
        plain("POST", "/api/cases", json={"kind": "violation", "title": "t"}),
        (*OFFICERS_ONLY, 201, 201, 403, 201),
    ),
    ("read a case", plain("GET", "/api/cases/{case}"), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    ("audit trail", plain("GET", "/api/cases/{case}/audit"), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    (
        "add a party",
        plain("POST", "/api/cases/{case}/parties", json={"role": "witness", "name": "n"}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "close a case",
        plain("POST", "/api/cases/{case}/close", json={"reason": "r"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "open a session",
        plain("POST", "/api/cases/{case}/sessions"),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "end a session",
        session_call("POST", "/end", {"reason": "r"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    ("officer's call token", session_call("POST", "/token"), (*OFFICERS_ONLY, 200, 404, 403, 200)),
    # the lock is the session's (it holds when the room is made again): an empty room locks
    (
        "lock the room",
        session_call("POST", "/lock", {"reason": "r"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "stop recording",
        session_call("POST", "/recording", {"action": "stop", "reason": "r"}),
        (*OFFICERS_ONLY, 409, 404, 403, 409),
    ),
    (
        "verification state",
        session_call("GET", "/verification"),
        (*OFFICERS_ONLY, 409, 404, 409, 409),
    ),
    ("show evidence", _display, (*OFFICERS_ONLY, 409, 404, 403, 409)),
    (
        "invite a party",
        plain("POST", "/api/cases/{case}/invitations", json={"party_id": "{party}"}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    ("revoke an invitation", _revoke, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    (
        "publish a slot",
        plain("POST", "/api/slots", json={"starts_at": _future(500), "ends_at": _future(501)}),
        (*OFFICERS_ONLY, 201, 201, 403, 201),
    ),
    ("list slots", plain("GET", "/api/slots"), (*OFFICERS_ONLY, 200, 200, 200, 200)),
    ("withdraw a slot", _withdraw, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    ("book for a party", _book, (*OFFICERS_ONLY, 201, 404, 403, 201)),
    ("cancel an appointment", _cancel, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    ("attach evidence", _upload, (*OFFICERS_ONLY, 201, 404, 403, 201)),
    (
        "list materials",
        plain("GET", "/api/cases/{case}/materials"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    ("download a material", _download, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    ("enroll a reference", _enroll, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    ("delete a reference", _forget, (*OFFICERS_ONLY, 200, 404, 403, 200)),
    ("statistics", plain("GET", "/api/statistics"), (*OFFICERS_ONLY, 200, 200, 200, 200)),
    ("list recordings", plain("GET", "/api/recordings"), (*OFFICERS_ONLY, 200, 200, 200, 200)),
    (
        "recording manifest",
        recording("GET", "/manifest?reason=r"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "verify a recording",
        recording("GET", "/verify?reason=r"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "recording access log",
        recording("GET", "/access-log?reason=r"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "play a recorded track",
        recording("GET", "/tracks/{track}/media?reason=r"),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "export a recording",
        recording("POST", "/export", {"reason": "r"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "download an export",
        recording("GET", "/exports/{export}/REPORT.txt?reason=r"),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "change retention",
        recording("POST", "/retention", {"retain_until": "2099-01-01", "reason": "r"}),
        (*OFFICERS_ONLY, 403, 403, 403, 200),
    ),
    (
        "delete recorded media",
        recording("DELETE", "?reason=r"),
        (*OFFICERS_ONLY, 403, 403, 403, 409),
    ),
    ("a party's own view", plain("GET", "/api/party"), (401, 200, 200, *PARTIES_ONLY)),
    # a fresh call token only for the device the link is bound to (the matrix sends none)
    (
        "a party's fresh call token",
        plain("POST", "/api/party/call-token"),
        (401, 403, 403, *PARTIES_ONLY),
    ),
    ("free slots", plain("GET", "/api/party/slots"), (401, 200, 200, *PARTIES_ONLY)),
    ("a party books", _party_book, (401, 201, 404, *PARTIES_ONLY)),
    ("a party cancels", _party_cancel, (401, 200, 404, *PARTIES_ONLY)),
    (
        "a party uploads",
        plain("POST", "/api/party/materials?name=a.jpg", data=samples.jpeg(64, 48)),
        (401, 201, 201, *PARTIES_ONLY),
    ),
    ("a party's materials", plain("GET", "/api/party/materials"), (401, 200, 200, *PARTIES_ONLY)),
    ("a party downloads its upload", _party_download, (401, 200, 404, *PARTIES_ONLY)),
    # documents: officers generate and sign; observers read; a party reads and signs its own
    ("generate a document", _generate, (*OFFICERS_ONLY, 201, 404, 403, 201)),
    (
        "list documents",
        plain("GET", "/api/cases/{case}/documents"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    # the templates as forms: any officer account reads them, no case needed
    (
        "document templates",
        plain("GET", "/api/documents/templates"),
        (*OFFICERS_ONLY, 200, 200, 200, 200),
    ),
    (
        "the case's officers",
        plain("GET", "/api/cases/{case}/officers"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    ("read a document", document("GET", ""), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    ("download a document", document("GET", "/pdf"), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    # li's own box: a supervisor signs no other officer's box
    (
        "sign as the officer",
        document("POST", "/sign", {"field": "officer-o1"}),
        (*OFFICERS_ONLY, 200, 404, 403, 403),
    ),
    (
        "record a refusal",
        document("POST", "/refusals", {"field": "party-p{party}", "reason": "r"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "revoke a certificate",
        document("POST", "/revoke", {"field": "officer-o1", "reason": "r"}, signed=True),
        (*OFFICERS_ONLY, 403, 404, 403, 200),
    ),
    ("a party's documents", plain("GET", "/api/party/documents"), (401, 200, 200, *PARTIES_ONLY)),
    ("a party reads its document", document("GET", "", party=True), (401, 200, 404, *PARTIES_ONLY)),
    (
        "a party downloads its document",
        document("GET", "/pdf", party=True),
        (401, 200, 404, *PARTIES_ONLY),
    ),
    (
        "a party refuses to sign its box",
        document("POST", "/refusals", {"field": "party-p{party}", "reason": "r"}, party=True),
        (401, 200, 404, *PARTIES_ONLY),
    ),
    # without a face match in the call the party's own signing is refused (409)
    (
        "a party prepares its signature",
        document(
            "POST",
            "/sign/prepare",
            {"field": "party-p{party}", "public_key": SPKI, "strokes": [[[1, 1], [5, 5]]]},
            party=True,
        ),
        (401, 409, 404, *PARTIES_ONLY),
    ),
    (
        "open an inquiry record",
        session_call("POST", "/records", {"party_id": "{party}"}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    ("read an inquiry record", record(), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    (
        "write a turn",
        record("POST", "/turns", {"q": "q", "a": "a"}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    ("a party reads its record", record(suffix="party"), (401, 200, 404, *PARTIES_ONLY)),
    # delivery, review, penalty, deadlines (docs/delivery.md); a delivery that does not exist
    # answers 404 to every officer: an observer's change is still 403 before the lookup
    ("deliver a document", _deliver, (*OFFICERS_ONLY, 400, 404, 403, 400)),
    (
        "list deliveries",
        plain("GET", "/api/cases/{case}/deliveries"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "read a delivery",
        plain("GET", "/api/cases/{case}/deliveries/999999"),
        (*OFFICERS_ONLY, 404, 404, 404, 404),
    ),
    (
        "record a fallback",
        plain(
            "POST",
            "/api/cases/{case}/deliveries/999999/fallback",
            json={"action": "post", "reference": "EMS1"},
        ),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    ("a party's deliveries", plain("GET", "/api/party/deliveries"), (401, 200, 200, *PARTIES_ONLY)),
    (
        "a party opens a delivery",
        plain("POST", "/api/party/deliveries/999999/open"),
        (401, 404, 404, *PARTIES_ONLY),
    ),
    (
        "a party acknowledges a delivery",
        plain("POST", "/api/party/deliveries/999999/acknowledge"),
        (401, 404, 404, *PARTIES_ONLY),
    ),
    (
        "a party refuses a delivery",
        plain("POST", "/api/party/deliveries/999999/refuse", json={"reason": "r"}),
        (401, 404, 404, *PARTIES_ONLY),
    ),
    (
        "a party asks for a review",
        plain("POST", "/api/party/reviews", json={"delivery_id": 999999, "reasons": "r"}),
        (401, 404, 404, *PARTIES_ONLY),
    ),
    ("a party's reviews", plain("GET", "/api/party/reviews"), (401, 200, 200, *PARTIES_ONLY)),
    (
        "list reviews",
        plain("GET", "/api/cases/{case}/reviews"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "record a review's outcome",
        plain(
            "POST",
            "/api/cases/{case}/reviews/999999/outcome",
            json={"outcome": "upheld", "note": "n"},
        ),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    # compensation mediation (docs/mediation.md); a mediation that does not exist answers 404
    (
        "open a mediation",
        plain(
            "POST",
            "/api/cases/{case}/mediations",
            json={"session_id": 999999, "sides": [1, 2], "notified_on": "2026-01-05"},
        ),
        (*OFFICERS_ONLY, 400, 404, 403, 400),
    ),
    (
        "list mediations",
        plain("GET", "/api/cases/{case}/mediations"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "read a mediation",
        plain("GET", "/api/cases/{case}/mediations/999999"),
        (*OFFICERS_ONLY, 404, 404, 404, 404),
    ),
    (
        "add a mediation participant",
        plain(
            "POST",
            "/api/cases/{case}/mediations/999999/participants",
            json={"side": 1, "kind": "insurer", "name": "x"},
        ),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "check a power of attorney",
        plain(
            "POST",
            "/api/cases/{case}/mediations/999999/participants/1/attorney",
            json={"decision": "accepted"},
        ),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "record a walk-out",
        plain(
            "POST",
            "/api/cases/{case}/mediations/999999/participants/1/walkout",
            json={"note": "n"},
        ),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "revise a mediation draft",
        plain("POST", "/api/cases/{case}/mediations/999999/drafts", json={"draft": {}}),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "a mediation's draft revisions",
        plain("GET", "/api/cases/{case}/mediations/999999/drafts"),
        (*OFFICERS_ONLY, 404, 404, 404, 404),
    ),
    (
        "generate the mediation agreement",
        plain("POST", "/api/cases/{case}/mediations/999999/agreement", json={"facts": "f"}),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "terminate a mediation",
        plain("POST", "/api/cases/{case}/mediations/999999/terminate", json={"reason": "r"}),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    ("a party's mediation", plain("GET", "/api/party/mediation"), (401, 404, 404, *PARTIES_ONLY)),
    (
        "the penalty procedure",
        plain("GET", "/api/cases/{case}/penalty"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    # without a notice a step is refused (409) once the caller is let in
    (
        "record a penalty step",
        plain("POST", "/api/cases/{case}/penalty/steps", json={"step": "statement", "text": "t"}),
        (*OFFICERS_ONLY, 409, 404, 403, 409),
    ),
    (
        "a case's deadlines",
        plain("GET", "/api/cases/{case}/deadlines"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    # the case file (docs/casefile.md): observers do not read a case's timeline
    (
        "a case's timeline",
        plain("GET", "/api/cases/{case}/timeline"),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "what is overdue",
        plain("GET", "/api/deadlines/overdue"),
        (*OFFICERS_ONLY, 200, 200, 200, 200),
    ),
    # the investigation's end (control/deadlines/investigation.py): recorded on a fresh case;
    # a correction before any record is refused once the caller is let in
    (
        "record the investigation's end",
        plain("POST", "/api/cases/{case}/investigation", json={}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "correct the investigation's end",
        plain("PUT", "/api/cases/{case}/investigation", json={"reason": "r", "day": ""}),
        (*OFFICERS_ONLY, 400, 404, 403, 400),
    ),
    ("the CA's root certificate", plain("GET", "/api/ca/root"), (200,) * 7),
    ("list officers", plain("GET", "/api/officers"), (*SUPERVISORS_ONLY, 200)),
    # past the access check a supervisor meets the validation (a short password) or an
    # absent account: no password is hashed and nothing changes (test_accounts.py does both)
    (
        "add an officer",
        plain(
            "POST",
            "/api/officers",
            json={"username": "new", "password": "short", "brigade": "brigade-1"},
        ),
        (*SUPERVISORS_ONLY, 400),
    ),
    (
        "change an officer",
        plain("PATCH", "/api/officers/999999", json={"disabled": True, "reason": "r"}),
        (*SUPERVISORS_ONLY, 404),
    ),
    ("first start: needed?", plain("GET", "/api/setup"), (200,) * 7),
    (
        "first start: create the supervisor",
        plain(
            "POST",
            "/api/setup",
            json={"token": "t", "username": "first", "password": PASSWORD, "brigade": "b"},
        ),
        (409,) * 7,  # officers exist: setup is done for everyone
    ),
    ("the setup page", plain("GET", "/setup"), (200,) * 7),
    ("the accounts page", plain("GET", "/accounts"), (200,) * 7),
    ("the pages' icon", plain("GET", "/favicon.ico"), (200,) * 7),
    # education: a brigade's roster is its own; a supervisor's companies are of its own brigade
    (
        "put a company on the roster",
        education("POST", "/api/education/companies", lambda: {"name": f"企业{_unique()}"}),
        (*OFFICERS_ONLY, 201, 201, 403, 201),
    ),
    (
        "list the roster's companies",
        education("GET", "/api/education/companies"),
        (*OFFICERS_ONLY, 200, 200, 200, 200),
    ),
    (
        "read a company",
        education("GET", "/api/education/companies/{company}"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "put a person on the roster",
        education(
            "POST",
            "/api/education/companies/{company}/people",
            lambda: {"role": "driver", "name": "n", "id_number": f"ID{_unique():08d}"},
        ),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "import a roster",
        lambda w: education("POST", "/api/education/roster/import", data=_roster_csv())(w),
        (*OFFICERS_ONLY, 201, 201, 403, 201),
    ),
    (
        "enroll a roster photo",
        lambda w: education(
            "PUT", "/api/education/people/{person}/photo?consent=given&basis=b", data=_face()
        )(w),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "delete a roster photo",
        education("DELETE", "/api/education/people/{person}/photo?reason=r", photo=True),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "set an education course",
        education("PUT", "/api/cases/{case}/education", {"topic": "t", "required_minutes": 30}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "add viewers from the roster",
        education("POST", "/api/cases/{case}/education/viewers", {"person_ids": "{person}"}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "invite every viewer",
        education("POST", "/api/cases/{case}/education/invitations", {}, viewer=True),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "read attendance",
        education("GET", "/api/cases/{case}/sessions/{session}/attendance", viewer=True),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "make attendance records",
        education(
            "POST", "/api/cases/{case}/sessions/{session}/attendance/records", {}, viewer=True
        ),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "download an attendance record",
        education("GET", "/api/education/records/{record}"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        "set a company's address",
        education(
            "PUT", "/api/education/companies/{company}/contact", {"contact": "a@b.example.cn"}
        ),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        # no records made yet: the officer may, and is told there is nothing to send
        "send the companies their records",
        education(
            "POST",
            "/api/cases/{case}/sessions/{session}/attendance/records/send",
            {},
            viewer=True,
        ),
        (*OFFICERS_ONLY, 409, 404, 403, 409),
    ),
    (
        "read what was sent to the companies",
        education("GET", "/api/cases/{case}/sessions/{session}/attendance/records/sends"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    # a company's link: public, its token the only credential
    ("the company page", plain("GET", "/company-record"), (200,) * 7),
    ("open a company's link", company_link("/api/education/company-record"), (200,) * 7),
    ("download by a company's link", company_link("/api/education/company-record/pdf"), (200,) * 7),
    ("open a talk (约谈)", talk("POST", None), (*OFFICERS_ONLY, 201, 404, 403, 201)),
    ("read a talk", talk("GET", ""), (*OFFICERS_ONLY, 200, 404, 200, 200)),
    (
        "draft a talk",
        talk("PUT", "", {"turns": [{"q": "q", "a": "a"}]}),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "make a talk's record",
        talk("POST", "/record", {}, drafted=True),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "mark a guest speaker",
        education(
            "PUT",
            "/api/cases/{case}/education/viewers/{party}/speaker",
            {"speaker": True},
            viewer=True,
        ),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
    (
        "read the live session",
        education("GET", "/api/cases/{case}/sessions/{session}/live"),
        (*OFFICERS_ONLY, 200, 404, 200, 200),
    ),
    (
        # nobody in the room: the officer may, and is told the session is not running
        "give the floor",
        education(
            "POST",
            "/api/cases/{case}/sessions/{session}/floor",
            {"action": "give", "participant": "party-1"},
        ),
        (*OFFICERS_ONLY, 409, 404, 403, 409),
    ),
    (
        # no question yet: the officer may, and is told there is none
        "answer a question",
        education("POST", "/api/cases/{case}/sessions/{session}/questions/1/answer", {"text": "t"}),
        (*OFFICERS_ONLY, 404, 404, 403, 404),
    ),
    (
        "announce",
        education("POST", "/api/cases/{case}/sessions/{session}/announcements", {"text": "t"}),
        (*OFFICERS_ONLY, 201, 404, 403, 201),
    ),
    (
        "set the quiz",
        education(
            "PUT",
            "/api/cases/{case}/sessions/{session}/quiz",
            {"questions": [{"text": "q", "choices": ["a", "b"], "correct": [0]}], "pass_mark": 60},
        ),
        (*OFFICERS_ONLY, 200, 404, 403, 200),
    ),
]


async def _recorded_session(w: World, server: Any) -> None:
    """One sealed recording of a brigade-1 case, and an export of it."""
    cid, _, link = await w.case()
    await w.session(cid)
    _, redeemed = await w.api.call(
        "POST", "/api/invitations/redeem", json={"token": link, "consent": CONSENT}
    )
    client = PeerClient(server.base_url, redeemed["token"], decode=False)
    try:
        await client.connect()
        await client.publish(PatternVideoTrack())
        await wait_until(lambda: bool(server.app[RECORDER].active), what="recording")
        await asyncio.sleep(2.5)
        case = await w.ok("GET", f"/api/cases/{cid}", w.tokens["officer"])
        ended = await w.ok(
            "POST",
            f"/api/cases/{cid}/sessions/{case['sessions'][0]['id']}/end",
            w.tokens["officer"],
            json={"reason": "r"},
        )
    finally:
        await client.close()
    w.recording = ended["recording_sealed"]
    manifest = await w.ok(
        "GET", f"/api/recordings/{w.recording}/manifest?reason=r", w.tokens["officer"]
    )
    w.track = manifest["tracks"][0]["track_id"]
    exported = await w.ok(
        "POST", f"/api/recordings/{w.recording}/export", w.tokens["officer"], json={"reason": "r"}
    )
    w.export = exported["export"]


@pytest.mark.timeout(600)
async def test_access_matrix(tmp_path: Path) -> None:
    server = await start_server(
        make_config(
            tmp_path,
            recording={"segment_seconds": 1.0},
            # companies' links: the default bind (loopback) is no address of their own
            education={"public_url": "https://jj.example.gov.cn"},
        )
    )
    db = server.app[DB]
    accounts = {
        "officer": ("li", "officer", "brigade-1"),
        "other_officer": ("wu", "officer", "brigade-2"),
        "observer": ("guan", "observer", "brigade-1"),
        "supervisor": ("zhao", "supervisor", "hq"),
    }
    for username, role, brigade in accounts.values():
        await db.run(
            functools.partial(
                create_officer, username=username, password=PASSWORD, role=role, brigade=brigade
            )
        )
    mismatches = []
    try:
        async with aiohttp.ClientSession() as http:
            w = World(Api(http, server.base_url))
            for key, (username, _, _) in accounts.items():
                w.tokens[key] = await w.api.login(username)
            # the other party: a party of brigade-2's case
            other = await w.ok(
                "POST",
                "/api/cases",
                w.tokens["other_officer"],
                json={"kind": "violation", "title": "elsewhere"},
            )
            party = await w.ok(
                "POST",
                f"/api/cases/{other['id']}/parties",
                w.tokens["other_officer"],
                json={"role": "driver", "name": "o"},
            )
            invite = await w.ok(
                "POST",
                f"/api/cases/{other['id']}/invitations",
                w.tokens["other_officer"],
                json={"party_id": party["id"]},
            )
            w.other_link = invite["token"]
            await _recorded_session(w, server)
            await _company_link(w, server)

            for name, setup, expected in MATRIX:
                assert len(expected) == len(ROLES), name
                for role, want in zip(ROLES, expected, strict=True):
                    call = await setup(w)
                    token = {"nobody": None, "party": call.link, "other_party": w.other_link}.get(
                        role, w.tokens.get(role)
                    )
                    body = call.json
                    if isinstance(body, dict) and body.get("party_id") == "{party}":
                        cid = int(call.path.split("/")[3])
                        found = await w.ok("GET", f"/api/cases/{cid}", w.tokens["officer"])
                        body = {**body, "party_id": found["parties"][0]["id"]}
                    status, answer = await w.api.call(
                        call.method, call.path, token, json=body, data=call.data
                    )
                    if status != want:
                        mismatches.append(
                            f"{name} as {role}: {status} (expected {want}) {str(answer)[:120]}"
                        )
                    elif status >= 400:
                        assert isinstance(answer, dict) and answer.get("error"), (name, role)
    finally:
        await server.runner.cleanup()
    assert not mismatches, "\n".join(mismatches)
