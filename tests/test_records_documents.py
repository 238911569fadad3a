"""The inquiry record written during a call, and legal documents signed over the API, with a
real server, a real aiortc call, the real CA and time-stamp authority and the offline verifier.

The party's key is made here with ``cryptography`` (ECDSA P-256), standing in for the browser's
non-extractable WebCrypto key: the server sees only its public key (SPKI) and the r||s
signature, as it would from the browser. The face match the party's signing needs is a
``verification.verdict`` entry appended to the custody log the way the verifier appends its own
(``Verifier._log``), for this party in this case's room; ``test_verifier.py`` proves the verifier
writes such entries from real faces.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from bench.peer import PeerClient
from control.appkeys import CUSTODY, DB, DOCS, RECORDER
from documents.samples import sample
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)

STROKES = [[[10, 10], [40, 30], [80, 12]], [[20, 50], [70, 55]]]


def consent_body(party_id: int, delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    """The request that generates a 送达地址确认书 for ``party_id`` from the library's sample
    (its delivery section unless ``delivery`` is given): the document most tests sign."""
    s = sample("delivery_consent")
    return {
        "kind": "delivery_consent",
        "data": {
            "department": s["department"],
            "case": s["case"],
            "delivery": s["delivery"] if delivery is None else delivery,
            "parties": [{"id": party_id, "id_number": "110101198503020011"}],
        },
    }


class PartyKey:
    """What the party page does with WebCrypto: a P-256 key pair, its SPKI, r||s signatures."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    @property
    def spki(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign(self, data_b64: str) -> str:
        der = self.key.sign(base64.b64decode(data_b64), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return base64.b64encode(r.to_bytes(32, "big") + s.to_bytes(32, "big")).decode()


async def seed_match(server: Server, room: str, party_id: int) -> None:
    """A face match of the party, as the verifier logs it."""
    await server.app[CUSTODY].append_async(
        "verification.verdict",
        room=room,
        actor="verifier",
        participant=f"party-{party_id}",
        verdict="match",
        score=0.9,
        threshold=0.5,
        model_id="test",
        frame_sha256="ab" * 32,
        frame_time=0.0,
        faces=1,
        quality={},
    )


async def party_sign(
    api: Api, token: str, doc_id: int, field: str, key: PartyKey
) -> tuple[int, Any]:
    status, prep = await api.call(
        "POST",
        f"/api/party/documents/{doc_id}/sign/prepare",
        token,
        {"field": field, "public_key": key.spki, "strokes": STROKES},
    )
    if status != 200:
        return status, prep
    return await api.call(
        "POST",
        f"/api/party/documents/{doc_id}/sign/finish",
        token,
        {"request_id": prep["request_id"], "signature": key.sign(prep["to_be_signed"])},
    )


def verify_cli(pdf: Path, root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "control.cli",
            "documents",
            "verify",
            str(pdf),
            "--trust",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def _pdf(server: Server, path: str, token: str) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + path, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200 and r.content_type == "application/pdf"
        return await r.read()


def _custody(server: Server, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.app[CUSTODY].entries() if e["type"] == kind]


async def test_record_written_in_the_call_reviewed_signed_and_verified(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            wang = await officer_login(server, api, "wang")
            cid, pid = await case_with_party(api, li, name="张三")
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            party = (await party_link(api, li, cid, pid))["token"]
            officer_peer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer_peer)
            await officer_peer.connect()
            party_peer = PeerClient(server.base_url, party)
            clients.append(party_peer)
            await party_peer.connect()
            await wait_until(
                lambda: session["room"] in server.app[RECORDER].active,
                timeout=20,
                what="the session's recording",
            )
            recording = server.app[RECORDER].active[session["room"]]

            # another console following the case hears of every saved version
            events = await http.ws_connect(server.base_url.replace("http", "ws") + "/api/events")
            await events.send_json({"type": "auth", "token": wang})
            assert (await events.receive_json())["type"] == "ready"
            await events.send_json({"type": "subscribe", "case": cid})
            # the call's own events (the recording starting...) may come before the answer
            while (await asyncio.wait_for(events.receive_json(), 10))["type"] != "subscribed":
                pass
            status, record = await api.call(
                "POST", f"/api/cases/{cid}/sessions/{session['id']}/records", li, {"party_id": pid}
            )
            assert status == 201, record
            rid = record["id"]
            assert record["header"]["person"]["name"] == "张三"
            assert record["recording_id"] == recording.recording_id
            base = f"/api/cases/{cid}/records/{rid}"
            for q, a in (
                ("你是否清楚今天询问的原因？", "清楚。"),
                ("请讲一下经过。", "我追尾了。"),
            ):
                status, record = await api.call("POST", base + "/turns", li, {"q": q, "a": a})
                assert status == 200, record
            assert all(t["offset"] >= 0 for t in record["turns"])
            heard: list[int] = []
            while len(heard) < 3:
                event = await asyncio.wait_for(events.receive_json(), 10)
                if event["type"] == "record.saved":
                    heard.append(event["version"])
            assert heard == [0, 1, 2] and event["record"] == record["id"]
            await events.close()
            # the party reads it live during the call
            status, live = await api.call("GET", "/api/party/record", party)
            assert status == 200 and [t["a"] for t in live["turns"]] == ["清楚。", "我追尾了。"]
            status, _ = await api.call("PUT", base + "/turns/2", li, {"a": "我追尾了前车。"})
            assert status == 200
            # finalising without review, or with the header incomplete, is refused
            assert (await api.call("POST", base + "/finalise", li))[0] == 409
            status, body = await api.call(
                "PUT",
                base + "/header",
                li,
                {
                    "case": {"place": "某大队远程询问室", "end_time": "2026年12月1日 10时05分"},
                    "person": {
                        "birth_date": "1985年3月2日",
                        "id_number": "110101198503020011",
                        "address": "北京市东城区某路1号",
                    },
                    "officers": [
                        {"account": 1, "name": "李警官"},
                        {"account": 2, "name": "王警官"},
                    ],
                },
            )
            assert status == 200, body
            status, record = await api.call("POST", base + "/review", li)
            assert status == 200 and record["phase"] == "review"
            status, _ = await api.call("POST", base + "/turns", li, {"q": "还有吗？"})
            assert status == 409  # no new turns once the review began
            status, record = await api.call(
                "POST",
                base + "/corrections",
                li,
                {"turn": 2, "field": "a", "text": "我追尾了前方客车。"},
            )
            assert status == 200 and record["corrections"][0]["status"] == "proposed"
            assert (await api.call("POST", base + "/finalise", li))[0] == 409  # unanswered
            status, live = await api.call(
                "POST", "/api/party/record/corrections/1", party, {"confirmed": True}
            )
            assert status == 200 and live["corrections"][0]["status"] == "confirmed"
            # a correction the party rejects puts the text back, and stays on the record
            status, record = await api.call(
                "POST", base + "/corrections", li, {"turn": 1, "field": "a", "text": "不清楚。"}
            )
            assert status == 200 and record["turns"][0]["a"] == "不清楚。"
            status, live = await api.call(
                "POST", "/api/party/record/corrections/2", party, {"confirmed": False}
            )
            assert status == 200 and live["turns"][0]["a"] == "清楚。"
            assert [c["status"] for c in live["corrections"]] == ["confirmed", "rejected"]
            status, body = await api.call(
                "POST", "/api/party/record/corrections/2", party, {"confirmed": True}
            )
            assert (status, body["error"]) == (409, "record_state")
            status, final = await api.call("POST", base + "/finalise", li)
            assert status == 201, final
            doc = final["document"]
            assert doc["kind"] == "inquiry_record" and "〔" in doc["number"]

            # every saved version is in the custody log with its hash, the last one final
            saved = [e for e in _custody(server, "record.saved") if e["record"] == rid]
            assert [e["version"] for e in saved] == list(
                range(saved[0]["version"], saved[-1]["version"] + 1)
            )
            assert saved[-1]["phase"] == "final" and saved[-1]["case"] == str(cid)
            assert len({e["sha256"] for e in saved}) == len(saved)
            status, last = await api.call("GET", base, li)
            canonical = json.dumps(
                {
                    "header": last["header"],
                    "record": {
                        k: last[k]
                        for k in ("recording_start", "turns", "corrections", "phase", "version")
                    },
                },
                ensure_ascii=False,
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
            assert saved[-1]["sha256"] == hashlib.sha256(canonical).hexdigest()
            assert saved[0]["version"] == 0 and saved[-1]["version"] == last["version"]
            generated = _custody(server, "document.generated")[-1]
            assert generated["document"] == doc["id"] and generated["sha256"] == doc["sha256"]

            # signing needs a recent face match of this party in this case
            fields = [r["field"] for r in doc["required"] if r["role"] == "party"]
            assert fields and all(f.startswith(f"party-p{pid}-") for f in fields)
            key = PartyKey()
            status, body = await party_sign(api, party, doc["id"], fields[0], key)
            assert (status, body["error"]) == (409, "face_match_required"), body
            await seed_match(server, session["room"], pid)
            # a party of another case reaches nothing of this one
            cid2, pid2 = await case_with_party(api, li, name="李四")
            _, session2 = await api.call("POST", f"/api/cases/{cid2}/sessions", li)
            other = (await party_link(api, li, cid2, pid2))["token"]
            await seed_match(server, session2["room"], pid2)
            status, body = await party_sign(api, other, doc["id"], fields[0], PartyKey())
            assert status == 404, body
            assert (await api.call("GET", f"/api/party/documents/{doc['id']}", other))[0] == 404
            # an officer cannot sign the party's box, nor another officer's
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": fields[0]}
            )
            assert (status, body["error"]) == (403, "party_box")
            status, body = await api.call(
                "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": "officer-o2"}
            )
            assert (status, body["error"]) == (403, "not_your_box")
            # a wrong signature value is refused
            status, prep = await api.call(
                "POST",
                f"/api/party/documents/{doc['id']}/sign/prepare",
                party,
                {"field": fields[0], "public_key": key.spki, "strokes": STROKES},
            )
            assert status == 200, prep
            status, body = await api.call(
                "POST",
                f"/api/party/documents/{doc['id']}/sign/finish",
                party,
                {
                    "request_id": prep["request_id"],
                    "signature": PartyKey().sign(prep["to_be_signed"]),
                },
            )
            assert (status, body["error"]) == (422, "signing_refused"), body
            for field in fields:  # the person signs every page
                status, state = await party_sign(api, party, doc["id"], field, key)
                assert status == 200, state
            assert not state["state"]["effective"]
            for token, field in ((li, "officer-o1"), (wang, "officer-o2")):
                status, state = await api.call(
                    "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", token, {"field": field}
                )
                assert status == 200, state
            assert state["state"]["effective"] and state["state"]["missing"] == []
            signed = _custody(server, "document.signed")
            assert signed[-1]["sha256"] == state["sha256"]
            assert len([e for e in signed if e["document"] == doc["id"]]) == len(fields) + 2

            pdf = await _pdf(server, f"/api/party/documents/{doc['id']}/pdf", party)
            assert hashlib.sha256(pdf).hexdigest() == state["sha256"]
            status, root = await api.call("GET", "/api/ca/root")
            assert status == 200 and root.startswith(b"-----BEGIN CERTIFICATE")
        (tmp_path / "root.pem").write_bytes(root)
        (tmp_path / "record.pdf").write_bytes(pdf)
        flipped = bytearray(pdf)
        flipped[len(pdf) // 3] ^= 0x01
        (tmp_path / "flipped.pdf").write_bytes(bytes(flipped))
        good, bad = await asyncio.gather(
            asyncio.to_thread(verify_cli, tmp_path / "record.pdf", tmp_path / "root.pem"),
            asyncio.to_thread(verify_cli, tmp_path / "flipped.pdf", tmp_path / "root.pem"),
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert "人脸核验" in good.stdout
        assert bad.returncode != 0, bad.stdout
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


def _determination_data(pid: int) -> dict[str, Any]:
    s = sample("determination_ordinary")
    person = {k: s["parties"][0][k] for k in ("id_number", "vehicle")}
    return {
        "department": s["department"] | {"brigade": "ignored"},
        "case": s["case"],
        "findings": s["findings"],
        "parties": [{"id": pid, **person}],
    }


async def test_determination_signed_by_officer_and_seal_and_refused_when_incomplete(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            boss = await officer_login(server, api, "zhao", role="supervisor")
            observer = await officer_login(server, api, "qian", role="observer")
            cid, pid = await case_with_party(api, li, name="张三")
            data = _determination_data(pid)
            path = f"/api/cases/{cid}/documents"
            status, body = await api.call(
                "POST", path, li, {"kind": "determination_ordinary", "data": data}
            )
            assert (status, body["error"]) == (422, "missing_fields"), body
            assert body["message"].startswith("道路交通事故认定书缺少必填字段")
            assert body["missing"] == [
                {"path": "parties[0].responsibility", "label": "第1项的当事人责任"}
            ]
            assert _custody(server, "document.generated") == []  # nothing numbered
            data["parties"][0]["responsibility"] = "全部责任"
            assert (
                await api.call(
                    "POST", path, observer, {"kind": "determination_ordinary", "data": data}
                )
            )[0] == 403
            status, doc = await api.call(
                "POST", path, li, {"kind": "determination_ordinary", "data": data}
            )
            assert status == 201, doc
            assert doc["number"].endswith("第0001号")
            dpath = f"{path}/{doc['id']}"
            assert {r["role"] for r in doc["required"]} == {"officer", "seal"}
            assert (
                await api.call("POST", dpath + "/sign", observer, {"field": "seal-department"})
            )[0] == 403
            for field in ("officer-o1", "seal-department"):
                status, state = await api.call("POST", dpath + "/sign", li, {"field": field})
                assert status == 200, state
            assert state["state"]["effective"]
            status, again = await api.call("POST", dpath + "/sign", li, {"field": "officer-o1"})
            assert (status, again["error"]) == (409, "already_signed")
            # observers read the state and the PDF
            status, seen = await api.call("GET", dpath, observer)
            assert status == 200 and seen["sha256"] == state["sha256"]
            pdf = await _pdf(server, dpath + "/pdf", observer)
            assert hashlib.sha256(pdf).hexdigest() == state["sha256"]
            _, root = await api.call("GET", "/api/ca/root")
            (tmp_path / "root.pem").write_bytes(root)
            (tmp_path / "determination.pdf").write_bytes(pdf)
            checked = await asyncio.to_thread(
                verify_cli, tmp_path / "determination.pdf", tmp_path / "root.pem"
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
            # revoking: supervisors only; the CRL then lists the seal's certificate
            assert (
                await api.call(
                    "POST",
                    dpath + "/revoke",
                    li,
                    {"field": "seal-department", "reason": "密钥泄露"},
                )
            )[0] == 403
            status, revoked = await api.call(
                "POST", dpath + "/revoke", boss, {"field": "seal-department", "reason": "密钥泄露"}
            )
            assert status == 200, revoked
            status, crl_der = await api.call("GET", "/api/ca/crl")
            assert status == 200
            from cryptography import x509

            crl = x509.load_der_x509_crl(crl_der)
            assert (
                crl.get_revoked_certificate_by_serial_number(int(revoked["revoked"], 16))
                is not None
            )
            entry = _custody(server, "document.revoked")[-1]
            assert entry["sha256"] == state["sha256"] and entry["serial"] == revoked["revoked"]
            # the next one takes the next number
            status, doc2 = await api.call(
                "POST", path, li, {"kind": "determination_ordinary", "data": data}
            )
            assert status == 201 and doc2["number"].endswith("第0002号")
    finally:
        await server.runner.cleanup()


async def test_mediation_agreement_takes_effect_only_with_the_third_signature(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, p1 = await case_with_party(api, li, name="张三")
            status, second = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "李四"}
            )
            assert status == 201
            p2 = second["id"]
            s = sample("mediation_agreement")
            data = {
                "department": s["department"],
                "case": s["case"],
                "findings": s["findings"],
                "mediation": s["mediation"],
                "parties": [
                    {"id": p1, "responsibility": "全部责任"},
                    {"id": p2, "responsibility": "无责任"},
                ],
            }
            status, doc = await api.call(
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {"kind": "mediation_agreement", "data": data},
            )
            assert status == 201, doc
            assert len(doc["required"]) == 3
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            tokens = {
                p1: (await party_link(api, li, cid, p1))["token"],
                p2: (await party_link(api, li, cid, p2))["token"],
            }
            # a party signs only its own box
            await seed_match(server, session["room"], p1)
            status, body = await party_sign(api, tokens[p1], doc["id"], f"party-p{p2}", PartyKey())
            assert (status, body["error"]) == (403, "not_your_box"), body
            effective = []
            for pid in (p1, p2):
                await seed_match(server, session["room"], pid)
                status, state = await party_sign(
                    api, tokens[pid], doc["id"], f"party-p{pid}", PartyKey()
                )
                assert status == 200, state
                effective.append(state["state"]["effective"])
                assert state["state"]["missing"]
            status, state = await api.call(
                "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": "officer-o1"}
            )
            assert status == 200, state
            effective.append(state["state"]["effective"])
            assert effective == [False, False, True]
            assert state["state"]["signed"] == [f"party-p{p1}", f"party-p{p2}", "officer-o1"]
    finally:
        await server.runner.cleanup()


def test_record_versions_hash_the_canonical_json() -> None:
    """The hash logged as record.saved is the SHA-256 of the canonical JSON of header and
    record (documents.record's own canonical form inside)."""
    from datetime import UTC, datetime

    from control.records.store import _with_header
    from documents.record import InquiryRecord

    record = InquiryRecord(datetime(2026, 12, 1, 1, 0, tzinfo=UTC))
    version = _with_header(
        record.add_turn("问", "答", datetime(2026, 12, 1, 1, 1, tzinfo=UTC)),
        {"case": {"place": "某地"}},
    )
    canonical = json.dumps(
        {"header": {"case": {"place": "某地"}}, "record": record.to_json()},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert version.sha256 == hashlib.sha256(canonical).hexdigest() and version.version == 1


async def test_a_real_face_match_in_the_call_lets_the_party_sign(tmp_path: Path) -> None:
    """No seeding: the verifier compares the party's video (the enrolled astronaut) with its
    reference and logs the match; the party's signing then goes through."""
    from bench.peer import ImageVideoTrack
    from tests.test_verifier import ASTRONAUT, _enroll, _png
    from tests.test_verifier import _server as verifier_server

    server = await verifier_server(tmp_path)
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, pid = await case_with_party(api, li, name="张三")
            status, body = await _enroll(server, li, cid, pid, _png(ASTRONAUT))
            assert status == 200, body
            status, doc = await api.call(
                "POST", f"/api/cases/{cid}/documents", li, consent_body(pid)
            )
            assert status == 201, doc
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            party = (await party_link(api, li, cid, pid))["token"]
            key = PartyKey()
            status, body = await party_sign(api, party, doc["id"], f"party-p{pid}", key)
            assert (status, body["error"]) == (409, "face_match_required")
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            driver = PeerClient(server.base_url, party)
            clients.append(driver)
            await driver.connect()
            await driver.publish(ImageVideoTrack([(0, ASTRONAUT)], width=640, height=480, fps=15))
            await wait_until(
                lambda: any(
                    e["verdict"] == "match" and e["participant"] == f"party-{pid}"
                    for e in _custody(server, "verification.verdict")
                ),
                timeout=40,
                what="a face match logged by the verifier",
            )
            status, state = await party_sign(api, party, doc["id"], f"party-p{pid}", key)
            assert status == 200, state
            match = next(
                e for e in _custody(server, "verification.verdict") if e["verdict"] == "match"
            )
            signed = _custody(server, "document.signed")[-1]
            assert signed["verdict"].startswith("custody-")
            assert int(signed["verdict"].split("-")[1]) >= match["index"]
            # the certificate carries the verdict and the matched frame's hash
            pdf = await _pdf(server, f"/api/party/documents/{doc['id']}/pdf", party)
            _, root = await api.call("GET", "/api/ca/root")
        from cryptography import x509

        from documents.verify import verify_pdf

        report = await asyncio.to_thread(verify_pdf, pdf, [x509.load_pem_x509_certificate(root)])
        (sig,) = report.signatures
        assert sig.ok, sig.problems
        assert sig.signing_event is not None
        logged = server.app[CUSTODY].entry(int(sig.signing_event["verdict_id"].split("-")[1]))
        assert logged["type"] == "verification.verdict" and logged["verdict"] == "match"
        assert sig.signing_event["frame_sha256"] == logged["frame_sha256"]
    finally:
        for client in clients:
            await client.close()
        await server.runner.cleanup()


async def test_a_prepared_signature_expires_and_is_kept_in_the_database(tmp_path: Path) -> None:
    """The pending signature is a database row (any worker finishes it); past its time it is
    refused and dropped; a state that does not restore is refused without a PDF."""
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, pid = await case_with_party(api, li, name="张三")
            status, doc = await api.call(
                "POST", f"/api/cases/{cid}/documents", li, consent_body(pid)
            )
            assert status == 201, doc
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            party = (await party_link(api, li, cid, pid))["token"]
            await seed_match(server, session["room"], pid)
            key = PartyKey()
            path = f"/api/party/documents/{doc['id']}/sign"
            body = {"field": f"party-p{pid}", "public_key": key.spki, "strokes": STROKES}

            async def prepared() -> dict[str, Any]:
                status, prep = await api.call("POST", path + "/prepare", party, body)
                assert status == 200 and prep["expires_in"] == 300, prep
                return dict(prep)

            def rows(c: Any) -> list[dict[str, Any]]:
                cur = c.execute("SELECT * FROM party_signing_requests ORDER BY created_at")
                return [dict(r) for r in cur.fetchall()]

            late = await prepared()
            (row,) = await server.app[DB].run(rows)
            assert row["id"] == late["request_id"] and row["document_id"] == doc["id"]
            state = json.loads(row["state"])
            assert state["base_sha256"] == doc["sha256"]
            # only the update that reserves the signature, not the document itself
            assert len(base64.b64decode(state["update"])) < 20000
            await server.app[DB].run(
                lambda c: c.execute("UPDATE party_signing_requests SET expires_at = 1")
            )
            finish = {"request_id": late["request_id"], "signature": key.sign(late["to_be_signed"])}
            status, out = await api.call("POST", path + "/finish", party, finish)
            assert (status, out["error"]) == (404, "not_found"), out
            assert await server.app[DB].run(rows) == []

            broken = await prepared()
            await server.app[DB].run(
                lambda c: c.execute(
                    "UPDATE party_signing_requests SET state = ?", (json.dumps({"v": 1}),)
                )
            )
            finish = {
                "request_id": broken["request_id"],
                "signature": key.sign(broken["to_be_signed"]),
            }
            status, out = await api.call("POST", path + "/finish", party, finish)
            assert (status, out["error"]) == (422, "signing_refused"), out
            assert "无法恢复" in out["message"]

            fresh = await prepared()
            finish = {
                "request_id": fresh["request_id"],
                "signature": key.sign(fresh["to_be_signed"]),
            }
            status, state = await api.call("POST", path + "/finish", party, finish)
            assert status == 200 and state["revision"] == 2, state
            assert await server.app[DB].run(rows) == []
    finally:
        await server.runner.cleanup()


async def test_a_refusal_is_printed_and_does_not_block_the_document(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, pid = await case_with_party(api, li, name="张三")
            s = sample("penalty_notice")
            status, doc = await api.call(
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {
                    "kind": "penalty_notice",
                    "data": {
                        "department": s["department"],
                        "case": s["case"],
                        "penalty": s["penalty"],
                        "parties": [{"id": pid, "id_number": "110101198503020011"}],
                    },
                },
            )
            assert status == 201, doc
            # a penalty decision without its legal basis names it
            penalty = {k: v for k, v in s["penalty"].items() if k != "legal_basis"}
            status, body = await api.call(
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {"kind": "penalty_decision", "data": {"penalty": penalty}},
            )
            assert (status, body["error"]) == (422, "missing_fields")
            assert "penalty.legal_basis" in [m["path"] for m in body["missing"]]
            assert "法律依据" in body["message"]
            dpath = f"/api/cases/{cid}/documents/{doc['id']}"
            status, state = await api.call(
                "POST",
                dpath + "/refusals",
                li,
                {"field": f"party-p{pid}", "reason": "当事人拒绝签名"},
            )
            assert status == 200, state
            assert state["number"] == doc["number"] and state["revision"] == 2
            assert state["state"]["refused"] == [f"party-p{pid}"]
            refused = _custody(server, "document.refused")[-1]
            assert refused["sha256"] == state["sha256"] and refused["reason"] == "当事人拒绝签名"
            status, state = await api.call("POST", dpath + "/sign", li, {"field": "officer-o1"})
            assert status == 200 and state["state"]["effective"], state
            # once signed, a refusal would change signed text: refused
            status, body = await api.call(
                "POST", dpath + "/refusals", li, {"field": f"party-p{pid}", "reason": "x"}
            )
            assert (status, body["error"]) == (409, "already_signed")
            pdf = await _pdf(server, dpath + "/pdf", li)
            # every revision is a 0600 file encrypted under its own data key, wrapped by the KEK
            case_dir = tmp_path / "var" / "documents" / f"case-{cid}"
            files = sorted(case_dir.glob("*.pdf.enc"))
            assert len(files) == 3 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
            assert not list(case_dir.glob("*.pdf"))
            assert all(b"%PDF" not in f.read_bytes() for f in files)
            assert all(b"FontFile2" not in f.read_bytes() for f in files)
            keys = await server.app[DB].run(
                lambda c: [
                    dict(r)
                    for r in c.execute(
                        "SELECT * FROM document_files WHERE document_id = ? ORDER BY revision",
                        (doc["id"],),
                    )
                ]
            )
            assert [k["revision"] for k in keys] == [1, 2, 3]
            assert keys[-1]["sha256"] == hashlib.sha256(pdf).hexdigest() == state["sha256"]
            assert {k["kek_fingerprint"] for k in keys} == {server.app[RECORDER].kek.fingerprint}
            assert len({k["wrapped_key"] for k in keys}) == 3  # a data key per revision
            current = case_dir / Path(keys[-1]["file"]).name
            sealed = bytearray(current.read_bytes())
            sealed[len(sealed) // 2] ^= 0x01  # one bit of the ciphertext
            current.write_bytes(bytes(sealed))
            status, body = await api.call("GET", dpath + "/pdf", li)
            assert (status, body["error"]) == (409, "integrity_failed")
            current.unlink()
            status, body = await api.call("GET", dpath + "/pdf", li)
            assert (status, body["error"]) == (409, "integrity_failed")
            # a revision written before encryption at rest (no key row) is read as it is,
            # still against its hash
            await server.app[DB].run(
                lambda c: c.execute(
                    "DELETE FROM document_files WHERE document_id = ? AND revision = 3",
                    (doc["id"],),
                )
            )
            legacy = server.app[DOCS].path(cid, doc["id"], 3, state["sha256"])
            legacy.write_bytes(pdf)
            assert await _pdf(server, dpath + "/pdf", li) == pdf
            legacy.write_bytes(pdf[:-10] + b"%%EOF\n    ")
            status, body = await api.call("GET", dpath + "/pdf", li)
            assert (status, body["error"]) == (409, "integrity_failed")
        import pypdfium2

        text = "".join(page.get_textpage().get_text_range() for page in pypdfium2.PdfDocument(pdf))
        assert "拒绝签名" in text and "当事人拒绝签名" in text
    finally:
        await server.runner.cleanup()


async def test_the_party_records_its_own_refusal(tmp_path: Path) -> None:
    """From the party's own endpoint: only its own box, printed on the document with the
    party as the one who recorded it, a custody entry; the case goes on (the officer signs)."""
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, p1 = await case_with_party(api, li, name="张三")
            _, p2_row = await api.call(
                "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "李四"}
            )
            p2 = p2_row["id"]
            s = sample("determination_simple")
            given = [
                {k: v for k, v in sp.items() if k not in ("id", "name")} | {"id": pid}
                for sp, pid in zip(s["parties"], (p1, p2), strict=False)
            ]
            status, doc = await api.call(
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {
                    "kind": "determination_simple",
                    "data": {
                        "department": s["department"],
                        "case": s["case"],
                        "findings": s["findings"],
                        "parties": given,
                    },
                },
            )
            assert status == 201, doc
            await api.call("POST", f"/api/cases/{cid}/sessions", li)
            party = (await party_link(api, li, cid, p1))["token"]
            path = f"/api/party/documents/{doc['id']}/refusals"
            status, seen = await api.call("GET", f"/api/party/documents/{doc['id']}", party)
            assert status == 200 and seen["you"] == f"p{p1}"
            status, body = await api.call(
                "POST", path, party, {"field": f"party-p{p2}", "reason": "x"}
            )
            assert (status, body["error"]) == (403, "not_your_box"), body
            status, body = await api.call("POST", path, party, {"field": f"party-p{p1}"})
            assert (status, body["error"]) == (400, "bad_request"), body
            status, state = await api.call(
                "POST", path, party, {"field": f"party-p{p1}", "reason": "对赔偿数额有异议"}
            )
            assert status == 200, state
            assert state["number"] == doc["number"] and state["revision"] == 2
            assert state["state"]["refused"] == [f"party-p{p1}"]
            assert state["refusals"][-1]["recorded_by"] == f"party:{p1}"
            refused = _custody(server, "document.refused")[-1]
            assert refused["actor"] == f"party:{p1}" and refused["reason"] == "对赔偿数额有异议"
            assert refused["sha256"] == state["sha256"] and refused["document"] == doc["id"]
            status, state = await api.call(
                "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": "officer-o1"}
            )
            assert status == 200, state
            assert [m["field"] for m in state["state"]["missing"]] == [f"party-p{p2}"]
            status, body = await api.call(
                "POST", path, party, {"field": f"party-p{p1}", "reason": "again"}
            )
            assert (status, body["error"]) == (409, "already_signed"), body
            pdf = await _pdf(server, f"/api/party/documents/{doc['id']}/pdf", party)
        import pypdfium2

        text = "".join(page.get_textpage().get_text_range() for page in pypdfium2.PdfDocument(pdf))
        assert "拒绝签名" in text and "对赔偿数额有异议" in text and "张三（本人）" in text
    finally:
        await server.runner.cleanup()


async def test_a_closed_case_takes_no_document_or_signature_nor_another_brigades(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            wu = await officer_login(server, api, "wu", brigade="brigade-2")
            cid, pid = await case_with_party(api, li, name="张三")
            data = _determination_data(pid)
            data["parties"][0]["responsibility"] = "全部责任"
            body = {"kind": "determination_ordinary", "data": data}
            path = f"/api/cases/{cid}/documents"
            status, answer = await api.call("POST", path, wu, body)
            assert (status, answer["error"]) == (404, "not_found"), answer
            status, doc = await api.call("POST", path, li, body)
            assert status == 201, doc
            status, answer = await api.call(
                "POST", f"/api/cases/{cid}/close", li, {"reason": "handled"}
            )
            assert status == 200, answer
            status, answer = await api.call("POST", path, li, body)
            assert (status, answer["error"]) == (409, "case_closed"), answer
            assert len(_custody(server, "document.generated")) == 1  # the one before closing
            # a closed case's documents are final: no signature is added any more
            status, answer = await api.call(
                "POST", f"{path}/{doc['id']}/sign", li, {"field": "officer-o1"}
            )
            assert (status, answer["error"]) == (409, "case_closed"), answer
    finally:
        await server.runner.cleanup()
