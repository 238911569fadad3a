"""Electronic delivery with a real server, real PDFs, the real CA and the offline verifier:
consent first, the notice through the embedded outbox (or a provider that fails), opened and
acknowledged by the party, the sealed receipt (电子送达凭证) validated offline; the fallback when
it fails; a party's refusal.

The party's signature of its consent is made as in ``test_records_documents.py``: a P-256 key
standing in for the browser's WebCrypto key, after a face match appended to the custody log as
the verifier appends it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pypdfium2 as pdfium
from aiohttp import web

from control.appkeys import CUSTODY
from control.deadlines.rules import china_today
from documents.samples import sample
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
)
from tests.test_records_documents import PartyKey, consent_body, party_sign, seed_match, verify_cli


async def custody(server: Server, kind: str) -> list[dict[str, Any]]:
    """The custody log's entries of ``kind`` (read and checked in a thread: off the loop)."""
    entries = await asyncio.to_thread(server.app[CUSTODY].entries)
    return [e for e in entries if e["type"] == kind]


def determination(pid: int) -> dict[str, Any]:
    s = sample("determination_ordinary")
    person = {k: s["parties"][0][k] for k in ("id_number", "vehicle")}
    return {
        "department": s["department"],
        "case": s["case"],
        "findings": s["findings"],
        "parties": [{"id": pid, "responsibility": "全部责任", **person}],
    }


async def pdf_of(server: Server, path: str, token: str) -> bytes:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + path, headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.read()


def pdf_text(pdf: bytes) -> str:
    document = pdfium.PdfDocument(pdf)
    try:
        return "".join(document[i].get_textpage().get_text_range() for i in range(len(document)))
    finally:
        document.close()


class Party:
    """A case's party with its link, ready to sign: an open session and a face match in it."""

    def __init__(self, cid: int, pid: int, token: str, room: str) -> None:
        self.cid, self.pid, self.token, self.room = cid, pid, token, room
        self.key = PartyKey()


async def party_in_session(
    server: Server, api: Api, li: str, name: str = "张三", kind: str = "accident"
) -> Party:
    cid, pid = await case_with_party(api, li, name=name, kind=kind)
    status, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
    assert status == 201, session
    token = (await party_link(api, li, cid, pid))["token"]
    await seed_match(server, session["room"], pid)
    return Party(cid, pid, token, session["room"])


async def consent(
    api: Api, li: str, p: Party, address: str = "13800000001", *, sign: bool = True
) -> dict[str, Any]:
    """The 送达地址确认书 for ``p``, signed by the party itself (unless ``sign`` is false)."""
    delivery = {"method": "电子送达（短信）", "address": address, "agreed": "同意"}
    status, doc = await api.call(
        "POST", f"/api/cases/{p.cid}/documents", li, consent_body(p.pid, delivery)
    )
    assert status == 201, doc
    if sign:
        status, state = await party_sign(api, p.token, doc["id"], f"party-p{p.pid}", p.key)
        assert status == 200, state
        doc = state
    return dict(doc)


async def make_determination(api: Api, li: str, p: Party) -> dict[str, Any]:
    path = f"/api/cases/{p.cid}/documents"
    status, doc = await api.call(
        "POST", path, li, {"kind": "determination_ordinary", "data": determination(p.pid)}
    )
    assert status == 201, doc
    for field in ("officer-o1", "seal-department"):
        status, doc = await api.call("POST", f"{path}/{doc['id']}/sign", li, {"field": field})
        assert status == 200, doc
    return dict(doc)


def outbox_cli(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
    }
    return subprocess.run(
        [sys.executable, "-m", "control.cli", "delivery", "outbox"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def test_delivery_with_consent_opened_acknowledged_and_its_receipt_verified(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            deliver = {"document_id": doc["id"], "party_id": p.pid}
            base = f"/api/cases/{p.cid}/deliveries"

            # no consent, or a consent the party has not signed: no electronic delivery
            status, body = await api.call("POST", base, li, deliver)
            assert (status, body["error"]) == (409, "consent_required"), body
            await consent(api, li, p, sign=False)
            status, body = await api.call("POST", base, li, deliver)
            assert (status, body["error"]) == (409, "consent_required"), body
            assert await custody(server, "delivery.sent") == []
            signed_consent = await consent(api, li, p)
            # a document whose boxes are not all signed (or refused) is not delivered yet
            status, unsigned = await api.call(
                "POST",
                f"/api/cases/{p.cid}/documents",
                li,
                {"kind": "determination_ordinary", "data": determination(p.pid)},
            )
            assert status == 201, unsigned
            status, body = await api.call(
                "POST", base, li, {"document_id": unsigned["id"], "party_id": p.pid}
            )
            assert (status, body["error"]) == (409, "not_effective"), body

            status, sent = await api.call("POST", base, li, deliver)
            assert status == 201, sent
            assert sent["status"] == "sent" and sent["provider"] == "outbox"
            assert (sent["channel"], sent["address"]) == ("sms", "13800000001")
            assert sent["document_sha256"] == doc["sha256"]
            assert sent["consent_id"] == signed_consent["id"]
            assert sent["delivered_on"] is not None and sent["fallback"] == {"needed": False}
            logged = (await custody(server, "delivery.sent"))[-1]
            assert logged["sha256"] == doc["sha256"] and logged["delivery"] == sent["id"]
            assert logged["sent_at"] == sent["sent_at"]

            # the notice is in the outbox, which the command line reads
            listed = await asyncio.to_thread(outbox_cli, tmp_path)
            assert listed.returncode == 0, listed.stderr
            assert "13800000001" in listed.stdout and doc["number"] in listed.stdout

            # the party's view: the document is delivered to it; open, then acknowledge
            status, mine = await api.call("GET", "/api/party/deliveries", p.token)
            assert status == 200 and [d["id"] for d in mine["deliveries"]] == [sent["id"]]
            did = sent["id"]
            status, body = await api.call(
                "POST", f"/api/party/deliveries/{did}/acknowledge", p.token
            )
            assert (status, body["error"]) == (409, "not_opened"), body
            status, opened = await api.call("POST", f"/api/party/deliveries/{did}/open", p.token)
            assert status == 200 and opened["opened_at"]
            status, again = await api.call("POST", f"/api/party/deliveries/{did}/open", p.token)
            assert status == 200 and again["opened_at"] == opened["opened_at"]  # kept once
            assert len(await custody(server, "delivery.opened")) == 1
            status, acked = await api.call(
                "POST", f"/api/party/deliveries/{did}/acknowledge", p.token
            )
            assert status == 200, acked
            assert acked["acknowledged_at"] and acked["receipt_id"]
            status, body = await api.call(
                "POST", f"/api/party/deliveries/{did}/refuse", p.token, {"reason": "不要"}
            )
            assert (status, body["error"]) == (409, "already_answered")

            # the receipt: a sealed document of the case, effective, logged
            rpath = f"/api/cases/{p.cid}/documents/{acked['receipt_id']}"
            status, receipt = await api.call("GET", rpath, li)
            assert status == 200 and receipt["kind"] == "delivery_receipt", receipt
            assert receipt["state"]["effective"] and receipt["state"]["missing"] == []
            entry = (await custody(server, "delivery.acknowledged"))[-1]
            assert entry["receipt_sha256"] == receipt["sha256"]
            assert entry["sha256"] == doc["sha256"]
            assert entry["opened_at"] == opened["opened_at"]
            # the party reads it too
            pdf = await pdf_of(server, f"/api/party/documents/{acked['receipt_id']}/pdf", p.token)
            assert hashlib.sha256(pdf).hexdigest() == receipt["sha256"]
            text = (await asyncio.to_thread(pdf_text, pdf)).replace("\r", "").replace("\n", "")
            assert "电子送达凭证" in text and doc["number"] in text
            assert doc["sha256"][:32] in text
            _, root = await api.call("GET", "/api/ca/root")
        (tmp_path / "root.pem").write_bytes(root)
        (tmp_path / "receipt.pdf").write_bytes(pdf)
        flipped = bytearray(pdf)
        flipped[len(pdf) // 2] ^= 0x01
        (tmp_path / "flipped.pdf").write_bytes(bytes(flipped))
        good, bad = await asyncio.gather(
            asyncio.to_thread(verify_cli, tmp_path / "receipt.pdf", tmp_path / "root.pem"),
            asyncio.to_thread(verify_cli, tmp_path / "flipped.pdf", tmp_path / "root.pem"),
        )
        assert good.returncode == 0, good.stdout + good.stderr
        assert "电子印章" in good.stdout or "seal" in good.stdout, good.stdout
        assert bad.returncode != 0, bad.stdout
    finally:
        await server.runner.cleanup()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_failed_delivery_shows_the_fallback_and_a_refusal_is_recorded(
    tmp_path: Path,
) -> None:
    # an SMS gateway nobody listens on: every SMS delivery fails
    gateway = f"http://127.0.0.1:{closed_port()}/sms"
    server = await start_server(
        make_config(tmp_path, delivery={"sms_url": gateway, "timeout": 2.0})
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p)
            base = f"/api/cases/{p.cid}/deliveries"
            status, failed = await api.call(
                "POST", base, li, {"document_id": doc["id"], "party_id": p.pid}
            )
            assert status == 201, failed
            assert failed["status"] == "failed" and failed["provider"] == "sms-http"
            assert "短信网关" in failed["failure"] and failed["sent_at"] is None
            assert failed["fallback"]["needed"] and failed["fallback"]["next"] == "post"
            assert failed["delivered_on"] is None
            assert (await custody(server, "delivery.failed"))[-1]["sha256"] == doc["sha256"]
            # the party sees nothing delivered, and cannot open it
            status, mine = await api.call("GET", "/api/party/deliveries", p.token)
            assert mine["deliveries"] == []
            status, body = await api.call(
                "POST", f"/api/party/deliveries/{failed['id']}/open", p.token
            )
            assert (status, body["error"]) == (409, "not_sent")
            fb = f"{base}/{failed['id']}/fallback"
            status, body = await api.call(
                "POST", fb, li, {"action": "public_notice", "reference": "公告2026-1"}
            )
            assert (status, body["error"]) == (409, "post_first")
            status, body = await api.call("POST", fb, li, {"action": "fax", "reference": "x"})
            assert (status, body["error"]) == (400, "bad_request")
            today = china_today()
            # a fallback dated before the delivery, or in the future, is refused
            for day in (today - timedelta(days=1), today + timedelta(days=1)):
                status, body = await api.call(
                    "POST",
                    fb,
                    li,
                    {"action": "post", "reference": "EMS1", "done_on": day.isoformat()},
                )
                assert (status, body["error"]) == (400, "bad_day"), (day, body)
            status, posted = await api.call(
                "POST",
                fb,
                li,
                {"action": "post", "reference": "EMS1234567890", "done_on": today.isoformat()},
            )
            assert status == 200 and posted["fallback"]["next"] == "public_notice", posted
            status, noticed = await api.call(
                "POST",
                fb,
                li,
                {
                    "action": "public_notice",
                    "reference": "某公告〔2026〕1号",
                    "note": "邮件退回，地址不详",
                },
            )
            assert status == 200, noticed
            assert noticed["fallback"]["next"] is None
            # sixty days after the notice
            assert noticed["delivered_on"] == (today + timedelta(days=60)).isoformat()
            assert [e["action"] for e in await custody(server, "delivery.fallback")] == [
                "post",
                "public_notice",
            ]
            status, listed = await api.call("GET", base, li)
            assert [f["action"] for f in listed["deliveries"][0]["fallbacks"]] == [
                "post",
                "public_notice",
            ]
    finally:
        await server.runner.cleanup()


async def test_a_party_refuses_a_delivery(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p, address="zhang@example.com")
            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": doc["id"], "party_id": p.pid},
            )
            assert status == 201 and sent["channel"] == "email" and sent["status"] == "sent"
            did = sent["id"]
            status, body = await api.call("POST", f"/api/party/deliveries/{did}/refuse", p.token)
            assert (status, body["error"]) == (400, "bad_json")  # no reason given
            status, refused = await api.call(
                "POST", f"/api/party/deliveries/{did}/refuse", p.token, {"reason": "认定不公"}
            )
            assert status == 200 and refused["refused_at"] and refused["refusal"] == "认定不公"
            assert refused["fallback"]["needed"] and refused["fallback"]["next"] == "post"
            assert refused["delivered_on"] is None  # refused: its fallback delivers

            def started(deadlines: dict[str, Any], limit: str) -> list[str]:
                return [
                    i["start"]
                    for i in deadlines["deadlines"]
                    if i["limit"] == limit and i.get("document") == doc["id"]
                ]

            # a refused delivery starts no period of the determination (review, mediation)...
            status, deadlines = await api.call("GET", f"/api/cases/{p.cid}/deadlines", li)
            assert status == 200 and started(deadlines, "review_request") == [], deadlines
            # ...its post does, from the post's day
            today = china_today()
            status, posted = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries/{did}/fallback",
                li,
                {"action": "post", "reference": "EMS1234567890", "done_on": today.isoformat()},
            )
            assert status == 200 and posted["delivered_on"] == today.isoformat(), posted
            status, deadlines = await api.call("GET", f"/api/cases/{p.cid}/deadlines", li)
            assert started(deadlines, "review_request") == [today.isoformat()], deadlines
            assert started(deadlines, "mediation_application") == [today.isoformat()]
            assert (await custody(server, "delivery.refused"))[-1]["reason"] == "认定不公"
            status, body = await api.call(
                "POST", f"/api/party/deliveries/{did}/acknowledge", p.token
            )
            assert status == 409
            # another party's token reaches nothing of it
            other = await party_in_session(server, api, li, name="李四")
            status, body = await api.call("POST", f"/api/party/deliveries/{did}/open", other.token)
            assert status == 404
    finally:
        await server.runner.cleanup()


async def test_delivery_through_an_sms_gateway(tmp_path: Path) -> None:
    """The SMS provider: a gateway on 127.0.0.1 that takes the JSON POST and answers 200."""
    received: list[dict[str, Any]] = []

    async def gateway(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="msg-0001")

    app = web.Application()
    app.router.add_post("/sms", gateway)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = await start_server(
        make_config(
            tmp_path, delivery={"sms_url": f"http://127.0.0.1:{port}/sms", "sms_sender": "某大队"}
        )
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p, address="13900000002")
            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": doc["id"], "party_id": p.pid},
            )
            assert status == 201 and sent["status"] == "sent", sent
            assert sent["provider"] == "sms-http" and sent["provider_ref"] == "sms-http:msg-0001"
            assert len(received) == 1
            assert received[0]["to"] == "13900000002" and received[0]["sender"] == "某大队"
            assert doc["number"] in received[0]["text"]
            assert received[0]["reference"] == f"delivery-{sent['id']}"
            # nothing went to the embedded outbox
            listed = await asyncio.to_thread(outbox_cli, tmp_path)
            assert listed.returncode == 0 and "13900000002" not in listed.stdout
    finally:
        await server.runner.cleanup()
        await runner.cleanup()


async def test_a_delivery_the_stop_cut_off_mid_provider_is_failed_not_left_sending(
    tmp_path: Path,
) -> None:
    """The server stops while the SMS gateway holds a delivery's notice: aiohttp cancels the
    request, and the outcome is still written (by the app's owner of outcome writes, which the
    stop waits for): failed, interrupted, in the row, the audit trail and the custody log, so
    the fallback opens. It used to stay "sending" for good."""
    import sqlite3

    from control.app import create_app
    from control.delivery.store import INTERRUPTED
    from tests.conftest import Server

    called = asyncio.Event()

    async def gateway(request: web.Request) -> web.Response:
        called.set()
        await asyncio.Event().wait()  # a provider that never answers
        raise AssertionError("unreachable")

    gateway_app = web.Application()
    gateway_app.router.add_post("/sms", gateway)
    gateway_runner = web.AppRunner(gateway_app, shutdown_timeout=0.1)
    await gateway_runner.setup()
    await web.TCPSite(gateway_runner, "127.0.0.1", 0).start()
    sms_url = f"http://127.0.0.1:{gateway_runner.addresses[0][1]}/sms"
    config = make_config(tmp_path, delivery={"sms_url": sms_url, "timeout": 120.0})
    runner = web.AppRunner(create_app(config), shutdown_timeout=0.5)  # the CLI's is 5 s
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server = Server(f"http://127.0.0.1:{runner.addresses[0][1]}", runner.app, runner)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p)
            task = asyncio.ensure_future(
                api.call(
                    "POST",
                    f"/api/cases/{p.cid}/deliveries",
                    li,
                    {"document_id": doc["id"], "party_id": p.pid},
                )
            )
            await asyncio.wait_for(called.wait(), 30)
            await runner.cleanup()
            try:
                await task
            except aiohttp.ClientError:
                pass
            else:
                raise AssertionError("the delivery answered although its server stopped")
    finally:
        await runner.cleanup()
        await gateway_runner.cleanup()
    conn = sqlite3.connect(tmp_path / "var" / "control.sqlite3")
    try:
        rows = conn.execute("SELECT status, failure, sent_at FROM deliveries").fetchall()
        actions = [
            r[0] for r in conn.execute("SELECT action FROM audit WHERE object LIKE 'delivery:%'")
        ]
    finally:
        conn.close()
    assert rows == [("failed", INTERRUPTED, None)]
    assert actions == ["delivery.failed"]
    [entry] = [e for e in runner.app[CUSTODY].entries() if e["type"] == "delivery.failed"]
    assert (entry["failure"], entry["sha256"]) == (INTERRUPTED, doc["sha256"])


class SmtpSink:
    """An SMTP relay on 127.0.0.1 that accepts every message and keeps it (enough of RFC 5321
    for smtplib: greeting, EHLO, MAIL, RCPT, DATA, QUIT)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.session, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ready\r\n")
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                body = b""
                while not body.endswith(b"\r\n.\r\n"):
                    chunk = await reader.readline()
                    if not chunk:
                        break
                    body += chunk
                self.messages.append(body.decode("utf-8", "replace"))
                writer.write(b"250 kept\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_delivery_by_e_mail_through_an_smtp_relay(tmp_path: Path) -> None:
    sink = SmtpSink()
    port = await sink.start()
    server = await start_server(
        make_config(
            tmp_path,
            delivery={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "jj@example.org"},
        )
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p, address="zhang@example.com")
            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": doc["id"], "party_id": p.pid},
            )
            assert status == 201 and sent["status"] == "sent", sent
            assert (sent["channel"], sent["provider"]) == ("email", "smtp")
            assert len(sink.messages) == 1
            mail = sink.messages[0]
            assert "To: zhang@example.com" in mail and "From: jj@example.org" in mail
    finally:
        await server.runner.cleanup()
        await sink.close()


async def test_a_party_sees_its_own_papers_and_the_case_s_not_another_party_s(
    tmp_path: Path,
) -> None:
    """Two parties of one accident: each sees its own consent (with its own address) and the
    determination of the whole case; neither lists nor reads the other's consent."""
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            a = await party_in_session(server, api, li)
            status, other = await api.call(
                "POST", f"/api/cases/{a.cid}/parties", li, {"role": "driver", "name": "李四"}
            )
            assert status == 201, other
            b_token = (await party_link(api, li, a.cid, other["id"]))["token"]
            mine = await consent(api, li, a, address="13800000001")
            data = determination(a.pid)
            second = sample("determination_ordinary")["parties"][1]
            data["parties"].append(
                {
                    "id": other["id"],
                    "responsibility": "无责任",
                    **{k: second[k] for k in ("id_number", "vehicle")},
                }
            )
            path = f"/api/cases/{a.cid}/documents"
            status, determination_doc = await api.call(
                "POST", path, li, {"kind": "determination_ordinary", "data": data}
            )
            assert status == 201, determination_doc

            status, listing = await api.call("GET", "/api/party/documents", b_token)
            assert status == 200, listing
            assert [d["id"] for d in listing["documents"]] == [determination_doc["id"]]
            for path in (
                f"/api/party/documents/{mine['id']}",
                f"/api/party/documents/{mine['id']}/pdf",
            ):
                status, body = await api.call("GET", path, b_token)
                assert (status, body["error"]) == (404, "not_found"), (path, body)
            status, body = await api.call(
                "GET", f"/api/party/documents/{determination_doc['id']}", b_token
            )
            assert status == 200, body

            status, listing = await api.call("GET", "/api/party/documents", a.token)
            assert {d["id"] for d in listing["documents"]} == {
                mine["id"],
                determination_doc["id"],
            }
    finally:
        await server.runner.cleanup()


def _begin_as_a_killed_server_left_it(tmp_path: Path, p: Party, doc: dict[str, Any]) -> int:
    """A delivery begun as ``post_delivery`` begins it (``store.begin``: every check made, the
    row ``sending``) by a server that was then killed before its provider answered: nothing
    after the row was written. Its ID."""
    import sqlite3

    from control.auth import Officer
    from control.delivery import store

    conn = sqlite3.connect(tmp_path / "var" / "control.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        with conn:
            o = conn.execute("SELECT * FROM officers WHERE username = 'li'").fetchone()
            who = Officer(o["id"], o["username"], o["role"], o["brigade"])
            row = store.begin(conn, who, p.cid, doc["id"], p.pid, "outbox")
        assert not isinstance(row, store.Refusal), row
        return int(row["id"])
    finally:
        conn.close()


def _sql(tmp_path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """``query`` on the server's database, committed; its rows."""
    import sqlite3

    conn = sqlite3.connect(tmp_path / "var" / "control.sqlite3")
    try:
        with conn:
            return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def _delivery_rows(tmp_path: Path) -> list[tuple[Any, ...]]:
    return _sql(tmp_path, "SELECT id, status, failure, sent_at FROM deliveries ORDER BY id")


def _delivery_audit(tmp_path: Path) -> list[tuple[Any, ...]]:
    return _sql(
        tmp_path,
        "SELECT object, actor, action, reason FROM audit WHERE object LIKE 'delivery:%' "
        "ORDER BY id",
    )


def _backdate(tmp_path: Path, delivery_id: int, seconds: float) -> None:
    """The delivery begun ``seconds`` ago (as a send that long in progress)."""
    from datetime import UTC, datetime

    when = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    _sql(tmp_path, "UPDATE deliveries SET created_at = ? WHERE id = ?", when, delivery_id)


async def test_a_delivery_a_killed_server_left_sending_is_failed_at_the_next_start(
    tmp_path: Path,
) -> None:
    """A server killed while its provider held a delivery leaves the row ``sending`` (nothing
    of it could write the outcome). The next server, alone on the database, marks it failed
    at its start (interrupted: not delivered), in the audit trail and the custody log (actor
    ``server``), so that the officer sees it failed, the fallback opens, and it can be
    delivered again."""
    from control.delivery.store import INTERRUPTED

    config = make_config(tmp_path)
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p)
    finally:
        await server.runner.cleanup()
    delivery_id = _begin_as_a_killed_server_left_it(tmp_path, p, doc)
    assert _delivery_rows(tmp_path) == [(delivery_id, "sending", "", None)]

    server = await start_server(config)
    try:
        # done at the start, before any request
        assert _delivery_rows(tmp_path) == [(delivery_id, "failed", INTERRUPTED, None)]
        assert _delivery_audit(tmp_path) == [
            (f"delivery:{delivery_id}", "server", "delivery.failed", INTERRUPTED)
        ]
        [entry] = await custody(server, "delivery.failed")
        assert (entry["actor"], entry["delivery"], entry["failure"], entry["sha256"]) == (
            "server",
            delivery_id,
            INTERRUPTED,
            doc["sha256"],
        )
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await api.login("li")
            base = f"/api/cases/{p.cid}/deliveries"
            status, shown = await api.call("GET", f"{base}/{delivery_id}", li)
            assert status == 200, shown
            assert shown["status"] == "failed" and shown["failure"].startswith("发送中断")
            assert shown["fallback"]["needed"] and shown["fallback"]["next"] == "post"
            assert shown["delivered_on"] is None
            status, posted = await api.call(
                "POST",
                f"{base}/{delivery_id}/fallback",
                li,
                {"action": "post", "reference": "EMS1"},
            )
            assert status == 200 and posted["fallback"]["next"] == "public_notice", posted
            # and delivered again electronically (the outbox answers at once)
            status, again = await api.call(
                "POST", base, li, {"document_id": doc["id"], "party_id": p.pid}
            )
            assert status == 201 and again["status"] == "sent", again
        # swept once: a second look changes nothing
        assert [r[1] for r in _delivery_rows(tmp_path)] == ["failed", "sent"]
        assert len(await custody(server, "delivery.failed")) == 1
    finally:
        await server.runner.cleanup()


async def test_behind_a_front_only_a_stale_delivery_is_swept_and_a_late_answer_keeps_it_failed(
    tmp_path: Path,
) -> None:
    """A worker behind a front shares the database with other workers, which may be sending:
    at its start it fails only deliveries begun longer ago than any live send (a fresh one is
    left alone), and the officer's look at the case fails one that has since become that old.
    A provider that then answers after all (sent) does not undo it: the delivery stays failed
    with no delivery date (the officer may be posting it by then), and the answer is kept as
    ``delivery.late_answer`` in the audit trail and the custody log."""
    from control.delivery.outcomes import stale_after
    from control.delivery.store import INTERRUPTED

    release = asyncio.Event()
    called = asyncio.Event()

    async def gateway(request: web.Request) -> web.Response:
        called.set()
        await release.wait()
        return web.Response(text="gw-42")

    gateway_app = web.Application()
    gateway_app.router.add_post("/sms", gateway)
    gateway_runner = web.AppRunner(gateway_app, shutdown_timeout=0.1)
    await gateway_runner.setup()
    await web.TCPSite(gateway_runner, "127.0.0.1", 0).start()
    sms_url = f"http://127.0.0.1:{gateway_runner.addresses[0][1]}/sms"
    timeout = 60.0
    config = make_config(
        tmp_path,
        delivery={"sms_url": sms_url, "timeout": timeout},
        server={"front_secret": "front-" + "ab" * 32},
    )
    stale = stale_after(timeout) + 60
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            p = await party_in_session(server, api, li)
            doc = await make_determination(api, li, p)
            await consent(api, li, p)
    finally:
        await server.runner.cleanup()
    old = _begin_as_a_killed_server_left_it(tmp_path, p, doc)
    _backdate(tmp_path, old, stale)
    fresh = _begin_as_a_killed_server_left_it(tmp_path, p, doc)

    server = await start_server(config)
    try:
        assert _delivery_rows(tmp_path) == [
            (old, "failed", INTERRUPTED, None),
            (fresh, "sending", "", None),  # another worker may be sending it
        ]
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await api.login("li")
            base = f"/api/cases/{p.cid}/deliveries"
            status, listed = await api.call("GET", base, li)
            assert [d["status"] for d in listed["deliveries"]] == ["failed", "sending"], listed
            # a live delivery, held by its provider
            task = asyncio.ensure_future(
                api.call("POST", base, li, {"document_id": doc["id"], "party_id": p.pid})
            )
            await asyncio.wait_for(called.wait(), 30)
            live = _delivery_rows(tmp_path)[-1][0]
            # time passes: both still sending are now past any live send
            _backdate(tmp_path, fresh, stale)
            _backdate(tmp_path, live, stale)
            status, listed = await api.call("GET", base, li)
            assert [d["status"] for d in listed["deliveries"]] == ["failed"] * 3, listed
            assert all(d["fallback"]["next"] == "post" for d in listed["deliveries"])
            release.set()  # the provider answers after all: sent
            status, answered = await asyncio.wait_for(task, 30)
            assert status == 201, answered
            assert (answered["id"], answered["status"]) == (live, "failed"), answered
            assert answered["sent_at"] is None and answered["delivered_on"] is None
            status, mine = await api.call("GET", "/api/party/deliveries", p.token)
            assert mine["deliveries"] == []  # nothing delivered to the party
        assert _delivery_rows(tmp_path)[-1] == (live, "failed", INTERRUPTED, None)
        trail = _delivery_audit(tmp_path)
        assert [(o, a, act) for o, a, act, _ in trail] == [
            (f"delivery:{old}", "server", "delivery.failed"),
            (f"delivery:{fresh}", "server", "delivery.failed"),
            (f"delivery:{live}", "server", "delivery.failed"),
            (f"delivery:{live}", "officer:li", "delivery.late_answer"),
        ], trail
        assert "sms-http:gw-42" in trail[-1][3] and "未送达" in trail[-1][3]
        failed = await custody(server, "delivery.failed")
        assert [(e["delivery"], e["actor"]) for e in failed] == [
            (old, "server"),
            (fresh, "server"),
            (live, "server"),
        ]
        [late] = await custody(server, "delivery.late_answer")
        assert (late["delivery"], late["status"], late["reference"]) == (
            live,
            "failed",
            "sms-http:gw-42",
        )
        assert await custody(server, "delivery.sent") == []
    finally:
        await server.runner.cleanup()
        await gateway_runner.cleanup()


async def test_a_failing_outcome_write_is_logged_once(caplog: Any) -> None:
    """A write that fails reaches the caller waiting for it (its handler logs it) and is not
    logged by the owner too; one whose caller was cancelled is logged by the owner, once."""
    import logging

    from control.delivery.outcomes import OutcomeWriter

    writer = OutcomeWriter()
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def failing(what: str) -> None:
        started.set()
        await go_on.wait()
        raise OSError(f"disk full: {what}")

    try:
        with caplog.at_level(logging.ERROR, logger="control.delivery.outcomes"):
            go_on.set()
            try:
                await writer.write(failing("awaited"), "awaited write")
            except OSError as exc:
                assert str(exc) == "disk full: awaited"
            else:
                raise AssertionError("the failure did not reach the caller")
            assert [r for r in caplog.records if "awaited" in r.getMessage()] == []
            go_on.clear()
            started.clear()
            caller = asyncio.ensure_future(writer.write(failing("orphan"), "orphan write"))
            await started.wait()
            caller.cancel()
            try:
                await caller
            except asyncio.CancelledError:
                pass
            go_on.set()
            await writer.close()
            logged = [r for r in caplog.records if "orphan" in r.getMessage()]
            assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    finally:
        await writer.close()
