"""Education records at rest: encrypted per file under a data key the KEK wraps, read back only
when they decrypt to the hash their row holds, rewrapped by ``keys rotate --kek``, records from
before encryption still readable, and the numbers of records that could not be kept voided."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from control.appkeys import CONFIG, DB, DOCS
from control.education import records
from documents.verify import verify_pdf
from recorder.keys import KeyEncryptionKey
from tests.conftest import Api, make_config, officer_login, start_server

ROSTER = (
    "company,city,role,name,id_number\n"
    "顺达运输有限公司,保定,driver,李华,110101199003071234\n"
    "宏远物流,石家庄,driver,王强,130101199201012222\n"
)


@pytest.fixture
async def edu(tmp_path: Path) -> Any:
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        status, body = await api.call(
            "POST", "/api/education/roster/import", li, data=ROSTER.encode()
        )
        assert status == 201, body
        _, case = await api.call(
            "POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"}
        )
        cid = case["id"]
        status, body = await api.call(
            "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": body["people"]}
        )
        assert status == 201, body
        _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
        yield server, api, li, cid, session["id"]
    await server.runner.cleanup()


def _rows(server: Any) -> list[dict[str, Any]]:
    db = server.app[CONFIG].data_dir / "control.sqlite3"
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM edu_records ORDER BY id")]
    finally:
        conn.close()


def _numbers(server: Any) -> list[tuple[str, str, str | None]]:
    conn = sqlite3.connect(server.app[CONFIG].data_dir / "documents" / "numbers.sqlite3")
    try:
        return conn.execute(
            "SELECT text, status, void_reason FROM document_numbers "
            "WHERE kind = 'education_attendance' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()


async def test_records_are_encrypted_at_rest_and_read_only_when_intact(edu: Any) -> None:
    server, api, li, cid, sid = edu
    status, made = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 201, made
    assert len(made["records"]) == 3  # the session's and each company's (nobody certified)
    directory = server.app[CONFIG].data_dir / "education"
    kek = server.app[DOCS].kek
    rows = _rows(server)
    for row in rows:
        path = directory / f"case-{cid}" / row["file"]
        assert path.name.endswith(".pdf.enc") and path.stat().st_mode & 0o777 == 0o600
        assert b"%PDF" not in path.read_bytes()  # no plaintext on the disk
        assert row["kek_fingerprint"] == kek.fingerprint and row["wrapped_key"]
    status, pdf = await api.call("GET", made["records"][0]["download"], li)
    assert status == 200 and isinstance(pdf, bytes) and pdf.startswith(b"%PDF")
    _, root_pem = await api.call("GET", "/api/ca/root")
    report = await asyncio.to_thread(verify_pdf, pdf, [x509.load_pem_x509_certificate(root_pem)])
    assert report.ok, report.problems

    # one bit changed in the ciphertext: 409 integrity_failed, said in the asker's language
    first = directory / f"case-{cid}" / rows[0]["file"]
    blob = bytearray(first.read_bytes())
    blob[-1] ^= 1
    first.write_bytes(bytes(blob))
    status, body = await api.call("GET", made["records"][0]["download"], li)
    assert (status, body["error"]) == (409, "integrity_failed"), body
    assert body["message"].startswith("教育记录")
    # the key of another record does not open this one (the record's ID is bound in)
    second = rows[1]
    server_db = server.app[DB]
    await server_db.run(
        lambda c: c.execute(
            "UPDATE edu_records SET wrapped_key = ? WHERE id = ?",
            (rows[2]["wrapped_key"], second["id"]),
        )
    )
    status, body = await api.call("GET", made["records"][1]["download"], li)
    assert (status, body["error"]) == (409, "integrity_failed"), body
    # a file gone: 409 as well, not a 500
    third = directory / f"case-{cid}" / rows[2]["file"]
    third.unlink()
    status, body = await api.call("GET", made["records"][2]["download"], li)
    assert (status, body["error"]) == (409, "integrity_failed"), body


async def test_a_record_from_before_encryption_is_still_read_and_checked(edu: Any) -> None:
    server, api, li, cid, sid = edu
    status, made = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 201, made
    directory = server.app[CONFIG].data_dir / "education"
    kek = server.app[DOCS].kek
    row = _rows(server)[0]
    pdf = records.read_record(directory, kek, row)
    # as an older version kept it: the plaintext PDF under its old name, no wrapped key
    old = records.record_path(directory, cid, row["kind"], row["id"], row["sha256"])
    old.write_bytes(pdf)
    await server.app[DB].run(
        lambda c: c.execute(
            "UPDATE edu_records SET file = ?, wrapped_key = NULL, kek_fingerprint = NULL "
            "WHERE id = ?",
            (old.name, row["id"]),
        )
    )
    status, body = await api.call("GET", made["records"][0]["download"], li)
    assert status == 200 and body == pdf
    old.write_bytes(pdf.replace(b"%PDF", b"%PDX", 1))
    status, body = await api.call("GET", made["records"][0]["download"], li)
    assert (status, body["error"]) == (409, "integrity_failed"), body


async def test_kek_rotation_rewraps_the_records_and_a_rerun_skips_them(edu: Any) -> None:
    server, api, li, cid, sid = edu
    status, made = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 201, made
    directory = server.app[CONFIG].data_dir / "education"
    old = server.app[DOCS].kek
    before = {r["id"]: records.read_record(directory, old, r) for r in _rows(server)}
    files = {p: p.read_bytes() for p in (directory / f"case-{cid}").iterdir()}
    new = KeyEncryptionKey.generate()
    rewrap = records.rewrap_keys(server.app[CONFIG].data_dir / "control.sqlite3")
    assert await asyncio.to_thread(rewrap, old, new) == 3
    # a rotation run again after an interruption: the rows already under the new KEK are left
    assert await asyncio.to_thread(rewrap, old, new) == 3
    for row in _rows(server):
        assert row["kek_fingerprint"] == new.fingerprint
        assert records.read_record(directory, new, row) == before[row["id"]]
        with pytest.raises(records.RecordIntegrity, match="key-encryption key"):
            records.read_record(directory, old, row)
    # the encrypted files themselves are not touched
    assert {p: p.read_bytes() for p in (directory / f"case-{cid}").iterdir()} == files


async def test_numbers_of_records_that_could_not_be_kept_are_voided(edu: Any) -> None:
    server, api, li, cid, sid = edu
    directory = server.app[CONFIG].data_dir / "education"
    directory.mkdir(parents=True, exist_ok=True)
    # the case's folder cannot be made (a file stands in its place): the records are made and
    # numbered in the child, then cannot be written
    (directory / f"case-{cid}").write_bytes(b"in the way")
    status, _ = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 500
    assert _rows(server) == []  # no row without its file
    numbers = _numbers(server)
    assert len(numbers) == 3 and all(s == "voided" for _, s, _ in numbers), numbers
    assert all("could not be stored" in (reason or "") for _, _, reason in numbers)
    # once the way is clear the next records take the next numbers, the voided ones stay voided
    (directory / f"case-{cid}").unlink()
    status, made = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 201, made
    taken = {n["number"] for n in made["records"]}
    voided = {text for text, _, _ in numbers}
    assert taken.isdisjoint(voided)
    assert [s for _, s, _ in _numbers(server)] == ["voided"] * 3 + ["taken"] * 3


async def test_numbers_are_voided_even_once_the_owner_of_writes_closed(edu: Any) -> None:
    """The app's owner of writes that outlive their request (``OUTCOMES``) closes first when
    the server stops; records that could not be kept after that still have their numbers
    voided (here and now, in the request), never a silent gap in the register."""
    from control.appkeys import OUTCOMES

    server, api, li, cid, sid = edu
    await server.app[OUTCOMES].close()  # as the stop's first step does
    directory = server.app[CONFIG].data_dir / "education"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"case-{cid}").write_bytes(b"in the way")
    status, _ = await api.call(
        "POST", f"/api/cases/{cid}/sessions/{sid}/attendance/records", li, {}
    )
    assert status == 500
    assert _rows(server) == []
    numbers = _numbers(server)
    assert len(numbers) == 3 and all(s == "voided" for _, s, _ in numbers), numbers
    assert all("could not be stored" in (reason or "") for _, _, reason in numbers)
