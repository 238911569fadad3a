"""Rosters: transport companies of a brigade, their safety managers and drivers, over one
database connection (SQL in, results or a :class:`RosterRefusal` out; nothing here knows HTTP).

A person's ID number is kept masked (last four characters) with the SHA-256 of the whole
number, so that the same person is recognised again on a second import without the number
being stored. The reference photo is not here: the verifier's enrolment store keeps its
encrypted embedding under the scope ``roster`` (:func:`roster_scope`); this table keeps its
hash and the consent the officer recorded for it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..access import audit
from ..auth import Officer, now_iso
from ..cases.store import ID_NUMBER, mask_id_number, mask_phone
from ..db import rows
from ..refusals import CodedRefusal

ROLES = ("manager", "driver")
# a roster role as a case party's role (control/cases/store.py PARTY_ROLES)
PARTY_ROLE = {"manager": "safety_manager", "driver": "driver"}
MAX_NAME = 50
MAX_COMPANY = 100
MAX_CONTACT = 254  # an e-mail address's longest (RFC 5321)
EMAIL = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MOBILE = re.compile(r"^(\+?86)?1[3-9][0-9]{9}$")  # a mainland mobile number (SMS)


class RosterRefusal(CodedRefusal):
    NO_COMPANY = ("not_found", "没有这家企业 / no such company")
    NO_PERSON = ("not_found", "名单中没有此人 / no such person on the roster")
    COMPANY_EXISTS = ("exists", "本大队已有同名企业 / the brigade already has this company")
    PERSON_EXISTS = (
        "exists",
        "该企业名单中已有此身份证号 / this ID number is already on the company's roster",
    )


def roster_scope() -> str:
    """Where the verifier's store keeps roster references (one scope for every brigade: the
    participant name carries the person's ID, which is unique)."""
    return "roster"


def roster_participant(person_id: int) -> str:
    return f"person-{person_id}"


def id_hash(id_number: str) -> str:
    return hashlib.sha256(id_number.strip().upper().encode()).hexdigest()


@dataclass(frozen=True)
class PersonIn:
    """One person to put on a roster, already checked."""

    company: str
    city: str
    role: str
    name: str
    id_number: str
    phone: str
    row: int = 0  # where it was in an import file
    contact: str = ""  # the company's address, when the file gives one


def contact_problem(contact: str) -> str | None:
    """Why ``contact`` is no company address (an e-mail address or a mobile number for the SMS
    gateway), or None when it is one (or empty: no address)."""
    if not contact:
        return None
    if len(contact) > MAX_CONTACT:
        return (
            f"联系方式过长（至多 {MAX_CONTACT} 个字符）/ contact: at most {MAX_CONTACT} characters"
        )
    if "@" in contact:
        if not EMAIL.match(contact):
            return f"“{contact}”不是有效的电子邮件地址 / {contact!r} is not an e-mail address"
        return None
    if not MOBILE.match(contact.replace(" ", "").replace("-", "")):
        return (
            f"“{contact}”既不是电子邮件地址也不是手机号码 / {contact!r} is neither an e-mail "
            "address nor a mobile number"
        )
    return None


def clean_contact(contact: str) -> str:
    """The address as kept: a mobile number without its spaces and dashes."""
    contact = contact.strip()
    return contact if "@" in contact else contact.replace(" ", "").replace("-", "")


def contact_channel(contact: str) -> str:
    """The delivery channel an address takes (``control/delivery/channels.py``)."""
    return "email" if "@" in contact else "sms"


def _company_row(conn: sqlite3.Connection, officer: Officer, company_id: int) -> sqlite3.Row | None:
    row = conn.execute("SELECT * FROM edu_companies WHERE id = ?", (company_id,)).fetchone()
    if row is None or not officer.may_touch(row["brigade"]):
        return None  # another brigade's company answers as an absent one
    return row


def _public_person(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    person = {k: row[k] for k in ("id", "company_id", "role", "name", "id_number_masked")}
    person["phone"] = row["phone"]
    person["photo_sha256"] = row["photo_sha256"]
    person["photo_consent"] = json.loads(row["photo_consent"]) if row["photo_consent"] else None
    return person


def create_company(
    conn: sqlite3.Connection, officer: Officer, name: str, city: str, contact: str = ""
) -> dict[str, Any] | RosterRefusal:
    if conn.execute(
        "SELECT 1 FROM edu_companies WHERE brigade = ? AND name = ?", (officer.brigade, name)
    ).fetchone():
        return RosterRefusal.COMPANY_EXISTS
    cursor = conn.execute(
        "INSERT INTO edu_companies (brigade, name, city, contact, created_by, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (officer.brigade, name, city, contact, officer.actor, now_iso()),
    )
    audit(
        conn,
        officer.actor,
        "roster.company_added",
        f"company:{cursor.lastrowid}",
        None,
        contact=contact,
    )
    return dict(
        conn.execute("SELECT * FROM edu_companies WHERE id = ?", (cursor.lastrowid,)).fetchone()
    )


def list_companies(conn: sqlite3.Connection, officer: Officer) -> list[dict[str, Any]]:
    mine = officer.role != "supervisor"
    where, args = ("WHERE c.brigade = ?", (officer.brigade,)) if mine else ("", ())
    return rows(
        conn.execute(
            "SELECT c.*, (SELECT COUNT(*) FROM edu_people p WHERE p.company_id = c.id) AS people, "
            "(SELECT COUNT(*) FROM edu_people p WHERE p.company_id = c.id "
            f"AND p.photo_sha256 IS NOT NULL) AS with_photo FROM edu_companies c {where} "
            "ORDER BY c.id",
            args,
        )
    )


def set_contact(
    conn: sqlite3.Connection, officer: Officer, company_id: int, contact: str
) -> dict[str, Any] | RosterRefusal:
    """The company's address for its attendance records ('' removes it); audited with the one
    it replaces."""
    row = _company_row(conn, officer, company_id)
    if row is None:
        return RosterRefusal.NO_COMPANY
    conn.execute("UPDATE edu_companies SET contact = ? WHERE id = ?", (contact, company_id))
    audit(
        conn,
        officer.actor,
        "roster.company_contact",
        f"company:{company_id}",
        None,
        contact=contact,
        before=row["contact"],
    )
    return dict(conn.execute("SELECT * FROM edu_companies WHERE id = ?", (company_id,)).fetchone())


def company_detail(
    conn: sqlite3.Connection, officer: Officer, company_id: int
) -> dict[str, Any] | RosterRefusal:
    row = _company_row(conn, officer, company_id)
    if row is None:
        return RosterRefusal.NO_COMPANY
    company = dict(row)
    company["people"] = [
        _public_person(p)
        for p in conn.execute(
            "SELECT * FROM edu_people WHERE company_id = ? ORDER BY id", (company_id,)
        )
    ]
    return company


def _insert_person(conn: sqlite3.Connection, officer: Officer, company_id: int, p: PersonIn) -> int:
    cursor = conn.execute(
        "INSERT INTO edu_people (company_id, role, name, id_number_masked, id_number_sha256, "
        "phone, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            company_id,
            p.role,
            p.name,
            mask_id_number(p.id_number),
            id_hash(p.id_number),
            mask_phone(p.phone),
            officer.actor,
            now_iso(),
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def add_person(
    conn: sqlite3.Connection, officer: Officer, company_id: int, p: PersonIn
) -> dict[str, Any] | RosterRefusal:
    if _company_row(conn, officer, company_id) is None:
        return RosterRefusal.NO_COMPANY
    if conn.execute(
        "SELECT 1 FROM edu_people WHERE company_id = ? AND id_number_sha256 = ?",
        (company_id, id_hash(p.id_number)),
    ).fetchone():
        return RosterRefusal.PERSON_EXISTS
    person_id = _insert_person(conn, officer, company_id, p)
    audit(conn, officer.actor, "roster.person_added", f"person:{person_id}", None, role=p.role)
    return _public_person(
        conn.execute("SELECT * FROM edu_people WHERE id = ?", (person_id,)).fetchone()
    )


def person_of(
    conn: sqlite3.Connection, officer: Officer, person_id: int
) -> dict[str, Any] | RosterRefusal:
    row = conn.execute(
        "SELECT p.*, c.brigade, c.name AS company FROM edu_people p JOIN edu_companies c "
        "ON c.id = p.company_id WHERE p.id = ?",
        (person_id,),
    ).fetchone()
    if row is None or not officer.may_touch(row["brigade"]):
        return RosterRefusal.NO_PERSON
    return dict(row)


def photo_enrolled(
    conn: sqlite3.Connection,
    officer: Officer,
    person_id: int,
    photo_sha256: str,
    consent: dict[str, str],
) -> None:
    conn.execute(
        "UPDATE edu_people SET photo_sha256 = ?, photo_consent = ? WHERE id = ?",
        (photo_sha256, json.dumps(consent, ensure_ascii=False, sort_keys=True), person_id),
    )
    audit(
        conn,
        officer.actor,
        "roster.photo_enrolled",
        f"person:{person_id}",
        None,
        photo_sha256=photo_sha256,
        consent=consent,
    )


def photo_forgotten(
    conn: sqlite3.Connection, officer: Officer, person_id: int, reason: str
) -> None:
    conn.execute(
        "UPDATE edu_people SET photo_sha256 = NULL, photo_consent = NULL WHERE id = ?",
        (person_id,),
    )
    audit(conn, officer.actor, "roster.photo_deleted", f"person:{person_id}", None, reason)


# -- import ----------------------------------------------------------------------------------
# the columns of an import file, by their header (Chinese or English, any case)
COLUMNS: dict[str, tuple[str, ...]] = {
    "company": ("company", "企业", "单位", "企业名称", "公司"),
    "city": ("city", "城市", "所在城市", "地区"),
    "role": ("role", "角色", "身份", "类别"),
    "name": ("name", "姓名"),
    "id_number": ("id_number", "身份证号", "身份证号码", "证件号码"),
    "phone": ("phone", "电话", "手机", "手机号", "联系电话"),
    # the company's address for its attendance records: an e-mail address or a mobile number
    # (联系电话 alone is the person's phone, as it always was)
    "contact": (
        "contact",
        "company_contact",
        "联系邮箱",
        "企业联系邮箱",
        "企业联系电话",
        "企业联系方式",
        "企业邮箱",
    ),
}
REQUIRED_COLUMNS = ("company", "role", "name", "id_number")
ROLE_WORDS = {
    "manager": "manager",
    "safety_manager": "manager",
    "安全管理人员": "manager",
    "安全员": "manager",
    "管理人员": "manager",
    "经理": "manager",
    "driver": "driver",
    "驾驶员": "driver",
    "司机": "driver",
}
PHONE = re.compile(r"^\+?[0-9 -]{7,20}$")


@dataclass(frozen=True)
class RowProblem:
    """What is wrong with one cell of an import file (row as the spreadsheet numbers it)."""

    row: int
    column: str
    problem: str

    def as_json(self) -> dict[str, Any]:
        return {"row": self.row, "column": self.column, "problem": self.problem}


def header_map(header: list[str]) -> tuple[dict[str, int], list[RowProblem]]:
    """Which column of the file holds which field; problems name row 1."""
    found: dict[str, int] = {}
    problems: list[RowProblem] = []
    for index, cell in enumerate(header):
        key = cell.strip().lower()
        for field, names in COLUMNS.items():
            if key in names:
                if field in found:
                    problems.append(RowProblem(1, cell, f"列重复 / column given twice ({field})"))
                found[field] = index
    for field in REQUIRED_COLUMNS:
        if field not in found:
            problems.append(
                RowProblem(
                    1,
                    field,
                    f"缺少列 {COLUMNS[field][1]} / missing column {field}",
                )
            )
    return found, problems


def check_rows(table: list[list[str]]) -> tuple[list[PersonIn], list[RowProblem]]:
    """Every data row checked: the people, or every problem (row, column, what)."""
    if not table:
        return [], [RowProblem(1, "", "文件为空 / the file is empty")]
    columns, problems = header_map(table[0])
    if problems:
        return [], problems
    people: list[PersonIn] = []
    seen: dict[tuple[str, str], int] = {}
    contacts: dict[str, tuple[str, int]] = {}  # company: (its contact, the row that gave it)
    for offset, raw in enumerate(table[1:]):
        number = offset + 2  # the header is row 1, as the spreadsheet shows it
        if not any(cell.strip() for cell in raw):
            continue  # blank lines are not people

        def cell(field: str, raw: list[str] = raw) -> str:
            index = columns.get(field)
            return raw[index].strip() if index is not None and index < len(raw) else ""

        company, name, id_number = cell("company"), cell("name"), cell("id_number").upper()
        role_word, phone, city = cell("role"), cell("phone"), cell("city")
        contact = cell("contact")
        before = len(problems)
        if not company or len(company) > MAX_COMPANY:
            problems.append(
                RowProblem(
                    number,
                    "company",
                    f"企业名称须为 1-{MAX_COMPANY} 个字符 / company: 1-{MAX_COMPANY} characters",
                )
            )
        if len(city) > MAX_COMPANY:
            problems.append(RowProblem(number, "city", "城市名称过长 / city: too long"))
        role = ROLE_WORDS.get(role_word.lower())
        if role is None:
            problems.append(
                RowProblem(
                    number,
                    "role",
                    f"角色“{role_word}”无效，应为 驾驶员 或 安全管理人员 / role "
                    f"{role_word!r}: driver or manager",
                )
            )
        if not name or len(name) > MAX_NAME:
            problems.append(
                RowProblem(
                    number, "name", f"姓名须为 1-{MAX_NAME} 个字符 / name: 1-{MAX_NAME} characters"
                )
            )
        if not ID_NUMBER.match(id_number):
            problems.append(
                RowProblem(
                    number,
                    "id_number",
                    "身份证号须为 6-20 位字母或数字 / id_number: 6-20 letters or digits",
                )
            )
        if phone and not PHONE.match(phone):
            problems.append(RowProblem(number, "phone", "电话号码无效 / phone: not a phone number"))
        contact_wrong = contact_problem(contact)
        if contact_wrong:
            problems.append(RowProblem(number, "contact", contact_wrong))
        elif contact:
            contact = clean_contact(contact)
            given = contacts.get(company)
            if given is not None and given[0] != contact:
                problems.append(
                    RowProblem(
                        number,
                        "contact",
                        f"与第 {given[1]} 行给出的企业联系方式不同 / not the company's contact "
                        f"given in row {given[1]}",
                    )
                )
            elif given is None:
                contacts[company] = (contact, number)
        key = (company, id_number)
        if len(problems) == before and key in seen:
            problems.append(
                RowProblem(
                    number,
                    "id_number",
                    f"与第 {seen[key]} 行重复 / the same person as row {seen[key]}",
                )
            )
        if len(problems) == before:
            seen[key] = number
            people.append(
                PersonIn(company, city, role or "", name, id_number, phone, number, contact)
            )
    if not people and not problems:
        problems.append(RowProblem(2, "", "文件中没有人员 / the file lists nobody"))
    return people, problems


def import_people(
    conn: sqlite3.Connection, officer: Officer, people: list[PersonIn]
) -> dict[str, Any]:
    """All of them, or none (problems with people already on a roster name their row):
    companies are made as named, in the officer's brigade."""
    problems: list[RowProblem] = []
    companies: dict[str, int] = {}
    created: list[str] = []
    added: list[int] = []
    contacts = {p.company: p.contact for p in reversed(people) if p.contact}
    contacts_set: list[str] = []
    for person in people:
        number = person.row
        company_id = companies.get(person.company)
        if company_id is None:
            row = conn.execute(
                "SELECT id, contact FROM edu_companies WHERE brigade = ? AND name = ?",
                (officer.brigade, person.company),
            ).fetchone()
            if row is None:
                contact = contacts.get(person.company, "")
                cursor = conn.execute(
                    "INSERT INTO edu_companies (brigade, name, city, contact, created_by, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        officer.brigade,
                        person.company,
                        person.city,
                        contact,
                        officer.actor,
                        now_iso(),
                    ),
                )
                assert cursor.lastrowid is not None
                company_id = cursor.lastrowid
                created.append(person.company)
                if contact:
                    contacts_set.append(person.company)
            else:
                company_id = int(row["id"])
                contact = contacts.get(person.company, "")
                if contact and contact != row["contact"]:
                    # the newer file's address replaces the one on the roster (audited)
                    conn.execute(
                        "UPDATE edu_companies SET contact = ? WHERE id = ?", (contact, company_id)
                    )
                    contacts_set.append(person.company)
            companies[person.company] = company_id
        if conn.execute(
            "SELECT 1 FROM edu_people WHERE company_id = ? AND id_number_sha256 = ?",
            (company_id, id_hash(person.id_number)),
        ).fetchone():
            problems.append(
                RowProblem(
                    number,
                    "id_number",
                    "该企业名单中已有此人 / already on the company's roster",
                )
            )
            continue
        added.append(_insert_person(conn, officer, company_id, person))
    if problems:
        # the caller's transaction rolls back: nothing of the file is kept
        raise ImportRefused(problems)
    audit(
        conn,
        officer.actor,
        "roster.imported",
        "roster",
        None,
        people=len(added),
        companies_created=created,
        contacts_set=contacts_set,
    )
    return {
        "imported": len(added),
        "companies_created": created,
        "contacts_set": contacts_set,
        "people": added,
    }


class ImportRefused(Exception):
    """Raised inside the import's transaction so that it rolls back whole."""

    def __init__(self, problems: list[RowProblem]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems
