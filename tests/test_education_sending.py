"""Each company receives its signed attendance record (issue 17's "done when"): the companies'
addresses from the roster file and the API, the records sent through the embedded outbox with a
link per company, the link's page and PDF (that company's record only, validating offline),
revoked and expired links refused in Chinese first, every step in the custody log."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from control.appkeys import CONFIG, CUSTODY, DB
from control.delivery.channels import outbox
from documents.verify import verify_pdf
from tests.conftest import Api, make_config, officer_login, start_server

ROSTER = (
    "企业名称,城市,角色,姓名,身份证号,联系邮箱\n"
    "顺达运输有限公司,保定,驾驶员,李华,110101199003071234,safety@shunda.example.cn\n"
    "顺达运输有限公司,保定,驾驶员,赵敏,110101199105052345,\n"
    "宏远物流,石家庄,driver,王强,130101199201012222,138 0013 8000\n"
    "平安客运,沧州,driver,孙丽,130901198807073333,\n"
)
LINK = re.compile(r"(https?://\S+?/company-record#t=([A-Za-z0-9_-]+))")


async def custody(server: Any, kind: str) -> list[dict[str, Any]]:
    entries = await asyncio.to_thread(server.app[CUSTODY].entries)
    return [e for e in entries if e["type"] == kind]


async def public(api: Api, path: str, token: str) -> tuple[int, Any]:
    return await api.call("POST", path, None, {"token": token})


PUBLIC = "https://jj.example.gov.cn"


@pytest.fixture
async def edu(tmp_path: Path) -> Any:
    # (the default bind, 127.0.0.1, is no address a company reaches: public_url is needed)
    server = await start_server(
        make_config(tmp_path, verifier={"enabled": False}, education={"public_url": PUBLIC})
    )
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        yield server, api, li
    await server.runner.cleanup()


async def test_a_bad_contact_names_its_row_and_the_api_checks_it(edu: Any) -> None:
    _, api, li = edu
    bad = (
        "company,role,name,id_number,contact\n"
        "甲公司,driver,张三,110101199003070001,not-an-address\n"
        "甲公司,driver,李四,110101199003070002,a@jia.example.cn\n"
        "甲公司,driver,王五,110101199003070003,b@jia.example.cn\n"
    )
    status, body = await api.call("POST", "/api/education/roster/import", li, data=bad.encode())
    assert (status, body["error"]) == (422, "bad_rows"), body
    assert [(p["row"], p["column"]) for p in body["rows"]] == [(2, "contact"), (4, "contact")]
    assert body["rows"][0]["problem"].startswith("“not-an-address”既不是")
    assert "第 3 行" in body["rows"][1]["problem"]  # two addresses for one company
    _, companies = await api.call("GET", "/api/education/companies", li)
    assert companies["companies"] == []  # nothing of the file was kept

    _, company = await api.call("POST", "/api/education/companies", li, {"name": "乙公司"})
    path = f"/api/education/companies/{company['id']}/contact"
    for wrong in ("12345", "a@b", 7):
        status, body = await api.call("PUT", path, li, {"contact": wrong})
        assert (status, body["error"]) == (400, "bad_contact"), body
    status, body = await api.call("PUT", path, li, {"contact": "+86 139-0000-0000"})
    assert status == 200 and body["contact"] == "+8613900000000", body
    status, body = await api.call("PUT", path, li, {"contact": ""})
    assert status == 200 and body["contact"] == "", body


async def test_each_company_receives_its_own_record(edu: Any) -> None:
    server, api, li = edu
    status, imported = await api.call(
        "POST", "/api/education/roster/import", li, data=ROSTER.encode()
    )
    assert status == 201, imported
    assert sorted(imported["contacts_set"]) == ["宏远物流", "顺达运输有限公司"]
    _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "冬季安全"})
    cid = case["id"]
    status, body = await api.call(
        "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": imported["people"]}
    )
    assert status == 201, body
    _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
    sid = session["id"]
    base = f"/api/cases/{cid}/sessions/{sid}/attendance/records"

    # nothing to send before the records are made
    status, body = await api.call("POST", f"{base}/send", li, {})
    assert (status, body["error"]) == (409, "no_records"), body
    status, made = await api.call("POST", base, li, {})
    assert status == 201, made
    by_company = {
        r["company_id"]: r for r in made["records"] if r["company_id"] and not r["party_id"]
    }
    assert len(by_company) == 3

    status, sent = await api.call("POST", f"{base}/send", li, {})
    assert status == 201, sent
    states = {c["company"]: c for c in sent["companies"]}
    assert {k: v["state"] for k, v in states.items()} == {
        "顺达运输有限公司": "sent",
        "宏远物流": "sent",
        "平安客运": "no_address",  # listed, and the others still went out
    }
    assert states["宏远物流"]["send"]["channel"] == "sms"
    assert states["顺达运输有限公司"]["send"]["channel"] == "email"

    notices = [n for n in await server.app[DB].run(outbox) if n["edu_send_id"]]
    assert sorted(n["address"] for n in notices) == ["13800138000", "safety@shunda.example.cn"]
    tokens: dict[str, str] = {}
    for n in notices:
        found = LINK.search(str(n["text"]))
        assert found, n["text"]
        name = "顺达运输有限公司" if "@" in str(n["address"]) else "宏远物流"
        assert str(n["text"]).startswith(f"{name}：")
        tokens[name] = found.group(2)
    # the token is stored only as its hash
    conn = sqlite3.connect(server.app[CONFIG].data_dir / "control.sqlite3")
    try:
        stored = [r[0] for r in conn.execute("SELECT token_sha256 FROM edu_sends")]
    finally:
        conn.close()
    assert sorted(stored) == sorted(hashlib.sha256(t.encode()).hexdigest() for t in tokens.values())
    assert not any(t in s for t in tokens.values() for s in stored)

    # the company page's facts: that company's record, who sent it, how to check it
    shunda = states["顺达运输有限公司"]
    status, facts = await public(api, "/api/education/company-record", tokens["顺达运输有限公司"])
    assert status == 200, facts
    assert facts["company"] == "顺达运输有限公司" and facts["sha256"] == shunda["sha256"]
    assert facts["number"] == shunda["number"] and facts["topic"] == "冬季安全"
    _, overview = await api.call("GET", f"{base}/sends", li)
    assert {c["company"]: c["state"] for c in overview["companies"]}["顺达运输有限公司"] == "opened"
    opened = await custody(server, "education.record_opened")
    assert len(opened) == 1 and opened[0]["address"] == "safety@shunda.example.cn"
    assert opened[0]["sha256"] == shunda["sha256"] and opened[0]["case"] == str(cid)

    # its PDF: the record's bytes, validating offline
    status, pdf = await public(api, "/api/education/company-record/pdf", tokens["顺达运输有限公司"])
    assert status == 200 and isinstance(pdf, bytes), pdf
    assert hashlib.sha256(pdf).hexdigest() == shunda["sha256"]
    status, own = await api.call("GET", by_company[shunda["company_id"]]["download"], li)
    assert own == pdf
    _, root_pem = await api.call("GET", "/api/ca/root")
    report = await asyncio.to_thread(verify_pdf, pdf, [x509.load_pem_x509_certificate(root_pem)])
    assert report.ok, report.problems
    downloaded = await custody(server, "education.record_downloaded")
    assert [e["company"] for e in downloaded] == [shunda["company_id"]]
    # the other company's token serves the other company's record, not this one
    status, other = await public(api, "/api/education/company-record/pdf", tokens["宏远物流"])
    assert status == 200 and hashlib.sha256(other).hexdigest() == states["宏远物流"]["sha256"]
    assert other != pdf

    # a token nobody was given
    status, body = await public(api, "/api/education/company-record", "x" * 43)
    assert (status, body["error"]) == (404, "not_found"), body

    # sent again: a new link, the old one revoked (and said so, Chinese first)
    status, again = await api.call(
        "POST", f"{base}/send", li, {"company_ids": [shunda["company_id"]]}
    )
    assert status == 201 and [c["state"] for c in again["companies"]] == ["sent"], again
    status, body = await public(api, "/api/education/company-record", tokens["顺达运输有限公司"])
    assert (status, body["error"]) == (410, "link_revoked"), body
    assert body["message"].startswith("此链接已作废")
    status, body = await public(
        api, "/api/education/company-record/pdf", tokens["顺达运输有限公司"]
    )
    assert (status, body["error"]) == (410, "link_revoked"), body
    newest = [n for n in await server.app[DB].run(outbox) if n["edu_send_id"]][-1]
    found = LINK.search(str(newest["text"]))
    assert found and found.group(2) != tokens["顺达运输有限公司"]
    status, facts = await public(api, "/api/education/company-record", found.group(2))
    assert status == 200 and facts["sha256"] == shunda["sha256"], facts
    revoked = await custody(server, "education.record_link_revoked")
    assert [e["company"] for e in revoked] == [shunda["company_id"]]

    # an expired link
    await server.app[DB].run(
        lambda c: c.execute(
            "UPDATE edu_sends SET expires_at = '2026-01-01T00:00:00+00:00' WHERE address = ?",
            ("13800138000",),
        )
    )
    status, body = await public(api, "/api/education/company-record", tokens["宏远物流"])
    assert (status, body["error"]) == (410, "link_expired"), body
    assert body["message"].startswith("此链接已过期")

    sent_entries = await custody(server, "education.record_sent")
    assert len(sent_entries) == 3
    assert {e["sha256"] for e in sent_entries} == {
        states["顺达运输有限公司"]["sha256"],
        states["宏远物流"]["sha256"],
    }
    # the console's overview: per company, with its state
    _, overview = await api.call("GET", f"{base}/sends", li)
    assert {c["company"]: c["state"] for c in overview["companies"]} == {
        "顺达运输有限公司": "opened",
        "宏远物流": "downloaded",
        "平安客运": "no_address",
    }
    # the page itself is served (the token is after #, never in a request's path)
    status, html = await api.call("GET", "/company-record")
    assert status == 200 and "company-record.js" in str(html)


async def test_a_failing_gateway_fails_that_company_only(tmp_path: Path) -> None:
    # an SMS gateway nobody listens on (port 9, discard: refused at once); e-mail has no
    # provider, so it goes to the outbox
    config = make_config(
        tmp_path,
        verifier={"enabled": False},
        delivery={"sms_url": "http://127.0.0.1:9/sms"},
        education={"public_url": "https://jj.example.gov.cn"},
    )
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            roster = "\n".join(ROSTER.splitlines()[:4]) + "\n"  # 顺达 (e-mail) and 宏远 (SMS)
            _, imported = await api.call(
                "POST", "/api/education/roster/import", li, data=roster.encode()
            )
            _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "t"})
            cid = case["id"]
            await api.call(
                "POST",
                f"/api/cases/{cid}/education/viewers",
                li,
                {"person_ids": imported["people"]},
            )
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            base = f"/api/cases/{cid}/sessions/{session['id']}/attendance/records"
            status, _ = await api.call("POST", base, li, {})
            assert status == 201
            status, body = await api.call("POST", f"{base}/send", li, {"valid_days": 0})
            assert (status, body["error"]) == (400, "bad_request"), body
            status, body = await api.call("POST", f"{base}/send", li, {"link_base": "ftp://x"})
            assert (status, body["error"]) == (400, "bad_request"), body
            status, sent = await api.call(
                "POST",
                f"{base}/send",
                li,
                {"valid_days": 7, "link_base": "https://jj.example.gov.cn"},
            )
            assert status == 201, sent
            states = {c["company"]: c for c in sent["companies"]}
            failed = states["宏远物流"]
            assert failed["state"] == "failed" and failed["send"]["provider"] == "sms-http"
            assert failed["send"]["failure"].startswith("无法连接短信网关")
            assert states["顺达运输有限公司"]["state"] == "sent"
            entries = await custody(server, "education.record_send_failed")
            assert [e["address"] for e in entries] == ["13800138000"]
            assert entries[0]["failure"] == failed["send"]["failure"]
            # nothing of the failed one in the outbox; the e-mail's notice is there
            notices = [n for n in await server.app[DB].run(outbox) if n["edu_send_id"]]
            assert [n["address"] for n in notices] == ["safety@shunda.example.cn"]
            assert "7 天内" in str(notices[0]["text"])
            # the configured address starts the link (not the worker's behind a front)
            assert "https://jj.example.gov.cn/company-record#t=" in str(notices[0]["text"])
            # a link never opened that ran out: the console says so (send again)
            await server.app[DB].run(
                lambda c: c.execute(
                    "UPDATE edu_sends SET expires_at = '2026-01-01T00:00:00+00:00' "
                    "WHERE status = 'sent'"
                )
            )
            _, overview = await api.call("GET", f"{base}/sends", li)
            assert {c["company"]: c["state"] for c in overview["companies"]} == {
                "顺达运输有限公司": "expired",
                "宏远物流": "failed",
            }
            assert not overview["companies"][0]["send"]["superseded"]
            # the records made again: the company's send is of the older record until sent again
            status, _ = await api.call("POST", base, li, {})
            assert status == 201
            _, overview = await api.call("GET", f"{base}/sends", li)
            shunda = next(c for c in overview["companies"] if c["company"] == "顺达运输有限公司")
            assert shunda["send"]["superseded"]
            status, sent = await api.call(
                "POST", f"{base}/send", li, {"company_ids": [shunda["company_id"]]}
            )
            assert status == 201 and sent["companies"][0]["state"] == "sent", sent
            assert not sent["companies"][0]["send"]["superseded"]
            assert sent["companies"][0]["record_id"] == shunda["record_id"]
    finally:
        await server.runner.cleanup()


async def _one_company_records(api: Api, li: str) -> str:
    """A session whose one company (e-mail, to the outbox) has its record: the records' path."""
    roster = "\n".join(ROSTER.splitlines()[:2]) + "\n"  # 顺达, e-mail
    _, imported = await api.call("POST", "/api/education/roster/import", li, data=roster.encode())
    _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "t"})
    cid = case["id"]
    await api.call(
        "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": imported["people"]}
    )
    _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
    base = f"/api/cases/{cid}/sessions/{session['id']}/attendance/records"
    status, made = await api.call("POST", base, li, {})
    assert status == 201, made
    return base


async def _links(server: Any) -> list[str]:
    notices = [n for n in await server.app[DB].run(outbox) if n["edu_send_id"]]
    return [m.group(1) for n in notices if (m := LINK.search(str(n["text"])))]


async def test_a_forged_host_never_reaches_the_companies_link(tmp_path: Path) -> None:
    """The company link's address comes from the configuration only: without
    education.public_url the server's own configured address, and a request naming another
    host (a forged Host header) or another link_base is refused, Chinese first, nothing sent;
    with it, the link is public_url whatever the request says."""
    config = make_config(
        tmp_path / "own",
        verifier={"enabled": False},
        # its configured address (the test's site binds 127.0.0.1 only; requests name it)
        server={"host": "10.20.30.40", "port": 0},
        auth={"dev_join": False},  # (development mode needs a loopback bind)
    )
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            base = await _one_company_records(api, li)
            own = f"http://10.20.30.40:{server.base_url.rsplit(':', 1)[1]}"
            named = {"Host": own.removeprefix("http://")}
            forged = {"Host": "jj-gov.example.net"}
            status, body = await api.call("POST", f"{base}/send", li, {}, headers=forged)
            assert (status, body["error"]) == (400, "host_refused"), body
            assert body["message"].startswith(
                "请求的主机名（jj-gov.example.net）与服务器配置的地址"
            )
            status, body = await api.call(
                "POST", f"{base}/send", li, {"link_base": "https://jj-gov.example.net"}
            )
            assert (status, body["error"]) == (400, "link_base_refused"), body
            assert body["message"].startswith("link_base（https://jj-gov.example.net）不是")
            assert await _links(server) == []  # nothing went out, no send row was made
            _, overview = await api.call("GET", f"{base}/sends", li)
            assert [c["state"] for c in overview["companies"]] == ["not_sent"]
            # the address the request came by (127.0.0.1) is not the configured one
            status, body = await api.call(
                "POST", f"{base}/send", li, {"link_base": server.base_url}
            )
            assert (status, body["error"]) == (400, "link_base_refused"), body
            status, body = await api.call("POST", f"{base}/send", li, {})
            assert (status, body["error"]) == (400, "host_refused"), body
            assert await _links(server) == []
            # the server's own address, asked by that name (with or without link_base)
            status, sent = await api.call(
                "POST", f"{base}/send", li, {"link_base": own}, headers=named
            )
            assert status == 201 and sent["companies"][0]["state"] == "sent", sent
            [link] = await _links(server)
            assert link.startswith(f"{own}/company-record#t="), link
    finally:
        await server.runner.cleanup()

    # listening on every interface: no address of its own to send companies
    config = make_config(
        tmp_path / "any",
        verifier={"enabled": False},
        server={"host": "0.0.0.0", "port": 0},
        auth={"dev_join": False},  # (development mode needs a loopback bind)
    )
    server = await start_server(config)  # (the test's site still binds 127.0.0.1 only)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            base = await _one_company_records(api, li)
            status, body = await api.call("POST", f"{base}/send", li, {})
            assert (status, body["error"]) == (409, "no_public_url"), body
            assert body["message"].startswith("未设置 education.public_url")
            assert await _links(server) == []
    finally:
        await server.runner.cleanup()

    # public_url set: the link is it, whatever Host the request names
    config = make_config(
        tmp_path / "public",
        verifier={"enabled": False},
        education={"public_url": "https://jj.example.gov.cn/"},
    )
    server = await start_server(config)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            base = await _one_company_records(api, li)
            status, body = await api.call(
                "POST", f"{base}/send", li, {"link_base": server.base_url}
            )
            assert (status, body["error"]) == (400, "link_base_refused"), body
            status, sent = await api.call(
                "POST", f"{base}/send", li, {}, headers={"Host": "jj-gov.example.net"}
            )
            assert status == 201 and sent["companies"][0]["state"] == "sent", sent
            [link] = await _links(server)
            assert link.startswith("https://jj.example.gov.cn/company-record#t="), link
            assert "jj-gov.example.net" not in link
    finally:
        await server.runner.cleanup()


def test_the_outbox_rebuild_keeps_the_deliveries_notices() -> None:
    """The migration that lets the outbox hold a company's notice rebuilds delivery_outbox:
    the notices already there stay, with their IDs, and a row is either kind, never both."""
    from control.db import MIGRATIONS

    mine = next(i for i, m in enumerate(MIGRATIONS) if "CREATE TABLE edu_sends" in m)
    conn = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[:mine]:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO delivery_outbox (id, delivery_id, channel, address, text, created_at) "
            "VALUES (5, 7, 'sms', '13800138000', '您有一份法律文书', 't')"
        )
        for statement in MIGRATIONS[mine].split(";"):
            if statement.strip():
                conn.execute(statement)
        assert conn.execute(
            "SELECT id, delivery_id, edu_send_id, address, text FROM delivery_outbox"
        ).fetchall() == [(5, 7, None, "13800138000", "您有一份法律文书")]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO delivery_outbox (delivery_id, edu_send_id, channel, address, text, "
                "created_at) VALUES (NULL, NULL, 'sms', 'x', 'y', 't')"
            )
    finally:
        conn.close()


class _SilentGateway:
    """An SMS gateway stub on 127.0.0.1 that takes the connection and the request and never
    answers (a provider hanging mid-send): a real TCP peer, not a mock of the channel."""

    def __init__(self) -> None:
        self.called = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.held: set[asyncio.StreamWriter] = set()

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.called.set()
        self.held.add(writer)
        try:
            while await reader.read(65536):
                pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/sms"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.held:
            writer.transport.abort()
        await self.server.wait_closed()


async def _send_hanging(api: Api, li: str, gateway: _SilentGateway) -> tuple[str, Any]:
    """A session whose one company (SMS) has its record; its send started and now inside the
    provider (the gateway holds it): (the records' path, the send's request task)."""
    roster = ROSTER.splitlines()[0] + "\n" + ROSTER.splitlines()[3] + "\n"  # 宏远物流, SMS
    status, imported = await api.call(
        "POST", "/api/education/roster/import", li, data=roster.encode()
    )
    assert status == 201, imported
    _, case = await api.call("POST", "/api/cases", li, {"kind": "education", "title": "t"})
    cid = case["id"]
    status, _ = await api.call(
        "POST", f"/api/cases/{cid}/education/viewers", li, {"person_ids": imported["people"]}
    )
    assert status == 201
    _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
    base = f"/api/cases/{cid}/sessions/{session['id']}/attendance/records"
    status, made = await api.call("POST", base, li, {})
    assert status == 201, made
    task = asyncio.ensure_future(api.call("POST", f"{base}/send", li, {}))
    await asyncio.wait_for(gateway.called.wait(), 30)
    _, overview = await api.call("GET", f"{base}/sends", li)
    assert [c["state"] for c in overview["companies"]] == ["sending"], overview
    return base, task


def _sends(tmp_path: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(tmp_path / "var" / "control.sqlite3")
    try:
        return [tuple(r) for r in conn.execute("SELECT status, failure FROM edu_sends")]
    finally:
        conn.close()


def _send_actions(tmp_path: Path) -> list[str]:
    """The audit trail's actions on sends, in order."""
    conn = sqlite3.connect(tmp_path / "var" / "control.sqlite3")
    try:
        query = "SELECT action FROM audit WHERE object LIKE 'edu_send:%' ORDER BY id"
        return [r[0] for r in conn.execute(query)]
    finally:
        conn.close()


async def _finish(task: Any) -> None:
    """The send's request, cut off by the server's end (its answer never comes)."""
    try:
        await task
    except aiohttp.ClientError:
        return
    raise AssertionError("the send answered although its server stopped mid-provider")


async def test_a_send_cancelled_mid_provider_is_failed_not_left_sending(tmp_path: Path) -> None:
    """The server stops (SIGTERM) while the provider holds a send: aiohttp cancels the request
    once its shutdown wait is over, and the row says interrupted, so the officer can send
    again (it used to stay "sending" for good)."""
    import signal

    from control.education.sending import INTERRUPTED
    from tests.conftest import serve_process

    gateway = _SilentGateway()
    async with (
        gateway as sms_url,
        serve_process(
            tmp_path,
            verifier__enabled="false",
            delivery__sms_url=sms_url,
            delivery__timeout="120",  # the provider would hold it for two minutes
            education__public_url=PUBLIC,
        ) as proc,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, proc.base)
        li = await api.login("li")
        _, task = await _send_hanging(api, li, gateway)
        proc.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.proc.wait(), 40) == 0, proc.log_text
        await _finish(task)
    # written by the cancelled request itself, before the database closed
    assert _sends(tmp_path) == [("failed", INTERRUPTED)]
    assert _send_actions(tmp_path) == ["education.record_send_failed"]


async def test_a_send_the_server_died_in_is_failed_at_the_next_start(tmp_path: Path) -> None:
    """The server is killed while the provider holds a send (nothing of it can write): the next
    server marks the send failed at its start, in the audit trail and the custody log, and a
    new send goes out."""
    import signal

    from control.education.sending import ABANDONED

    gateway = _SilentGateway()
    from tests.conftest import serve_process

    async with (
        gateway as sms_url,
        serve_process(
            tmp_path,
            verifier__enabled="false",
            delivery__sms_url=sms_url,
            delivery__timeout="120",
            education__public_url=PUBLIC,
        ) as proc,
        aiohttp.ClientSession() as http,
    ):
        api = Api(http, proc.base)
        li = await api.login("li")
        base, task = await _send_hanging(api, li, gateway)
        proc.proc.send_signal(signal.SIGKILL)
        await proc.proc.wait()
        await _finish(task)
    assert [s for s, _ in _sends(tmp_path)] == ["sending"]  # as the killed server left it

    # the next server (the same data; its SMS notices now go to the outbox)
    server = await start_server(
        make_config(tmp_path, verifier={"enabled": False}, education={"public_url": PUBLIC})
    )
    try:
        assert _sends(tmp_path) == [("failed", ABANDONED)]
        entries = await custody(server, "education.record_send_failed")
        assert [(e["address"], e["failure"], e["actor"]) for e in entries] == [
            ("13800138000", ABANDONED, "server")
        ]
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await api.login("li")
            _, overview = await api.call("GET", f"{base}/sends", li)
            [company] = overview["companies"]
            assert company["state"] == "failed", company
            assert company["send"]["failure"].startswith("发送未完成")
            status, sent = await api.call("POST", f"{base}/send", li, {})
            assert status == 201 and sent["companies"][0]["state"] == "sent", sent
    finally:
        await server.runner.cleanup()


async def test_the_stop_waits_for_the_outcome_of_a_send_it_cut_off(tmp_path: Path) -> None:
    """The server stops while the provider holds a send, and its database is busy then (a long
    transaction): the cancelled request's outcome waits for the database longer than aiohttp
    waits for the cancelled handler. The stop still waits for it, under the app's owner of
    outcome writes, before the custody log and the database close: the row says interrupted,
    and so do the audit trail and the custody log (the custody entry used to be lost, appended
    after the log had closed)."""
    import threading

    from aiohttp import web

    from control.app import create_app
    from control.appkeys import OUTCOMES
    from control.education.sending import INTERRUPTED
    from tests.conftest import Server

    gateway = _SilentGateway()
    held = threading.Event()  # the database's long transaction ends when set
    async with gateway as sms_url:
        config = make_config(
            tmp_path,
            verifier={"enabled": False},
            delivery={"sms_url": sms_url, "timeout": 120.0},
            education={"public_url": PUBLIC},
        )
        runner = web.AppRunner(create_app(config), shutdown_timeout=0.5)  # the CLI's is 5 s
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        app = runner.app
        server = Server(f"http://127.0.0.1:{runner.addresses[0][1]}", app, runner)
        try:
            async with aiohttp.ClientSession() as http:
                api = Api(http, server.base_url)
                li = await officer_login(server, api)
                _, task = await _send_hanging(api, li, gateway)
                busy = asyncio.ensure_future(app[DB].run(lambda c: held.wait(60)))
                asyncio.get_running_loop().call_later(3.0, held.set)  # > 2 x aiohttp's wait
                await runner.cleanup()
                await _finish(task)
                assert busy.done() and len(app[OUTCOMES]) == 0
        finally:
            held.set()
            await runner.cleanup()
    assert _sends(tmp_path) == [("failed", INTERRUPTED)]
    entries = [e for e in app[CUSTODY].entries() if e["type"] == "education.record_send_failed"]
    assert [(e["address"], e["failure"]) for e in entries] == [("13800138000", INTERRUPTED)]
    assert _send_actions(tmp_path) == ["education.record_send_failed"]


class _HeldGateway(_SilentGateway):
    """An SMS gateway on 127.0.0.1 that holds its first request until :attr:`release` is set,
    then answers it 200 ``first``; every later request is answered at once (200 ``later``).
    The texts it was sent are kept (each company's notice, with its link)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.texts: list[str] = []
        self.count = 0

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import json

        self.held.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.texts.append(json.loads(await reader.readexactly(length))["text"])
            self.count += 1
            answer = b"first" if self.count == 1 else b"later"
            if self.count == 1:
                self.called.set()
                await self.release.wait()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(answer), answer)
            )
            await writer.drain()
        finally:
            writer.close()


async def test_a_late_provider_answer_keeps_the_abandoned_send_failed(tmp_path: Path) -> None:
    """A provider answers after its send was marked failed (abandoned: past any live answer)
    and after the officer sent again: the send stays failed, the newer link is not revoked
    (the company opens it), and what the provider said is an entry of its own in the audit
    trail and the custody log (record_send_late_answer), never record_sent."""
    from control.education.sending import ABANDONED

    gateway = _HeldGateway()
    async with gateway as sms_url:
        config = make_config(
            tmp_path,
            verifier={"enabled": False},
            delivery={"sms_url": sms_url, "timeout": 120.0},
            education={"public_url": PUBLIC},
        )
        server = await start_server(config)
        try:
            async with aiohttp.ClientSession() as http:
                api = Api(http, server.base_url)
                li = await officer_login(server, api)
                base, task = await _send_hanging(api, li, gateway)
                # the send is older than any live one (6 x timeout + 30 s): the next read of
                # the overview marks it failed
                await server.app[DB].run(
                    lambda c: c.execute(
                        "UPDATE edu_sends SET created_at = '2026-01-01T00:00:00.000+00:00'"
                    )
                )
                _, overview = await api.call("GET", f"{base}/sends", li)
                [company] = overview["companies"]
                assert company["state"] == "failed", company
                late_id = company["send"]["id"]
                # the officer sends again: this one goes out at once
                status, sent = await api.call("POST", f"{base}/send", li, {})
                assert status == 201 and sent["companies"][0]["state"] == "sent", sent
                newer_id = sent["companies"][0]["send"]["id"]
                assert newer_id != late_id
                # now the first provider answers (it took the notice after all)
                gateway.release.set()
                status, answered = await asyncio.wait_for(task, 60)
                assert status == 201, answered
                assert answered["companies"][0]["send"]["id"] == newer_id
                assert answered["companies"][0]["state"] == "sent"

                def rows(c: sqlite3.Connection) -> dict[int, tuple[Any, ...]]:
                    return {
                        r[0]: tuple(r[1:])
                        for r in c.execute(
                            "SELECT id, status, failure, revoked_at, reference FROM edu_sends"
                        )
                    }

                found = await server.app[DB].run(rows)
                assert found[late_id] == ("failed", ABANDONED, None, ""), found
                assert found[newer_id][0] == "sent" and found[newer_id][2] is None, found
                # the newer link still opens: nothing of the late answer revoked it
                [_, newer_text] = gateway.texts
                newer = LINK.search(newer_text)
                assert newer, newer_text
                status, facts = await public(api, "/api/education/company-record", newer.group(2))
                assert status == 200, facts
                # the late send's link never opens
                [late_text, _] = gateway.texts
                late = LINK.search(late_text)
                assert late, late_text
                status, body = await public(api, "/api/education/company-record", late.group(2))
                assert (status, body["error"]) == (404, "not_found"), body

                assert [e["send"] for e in await custody(server, "education.record_sent")] == [
                    newer_id
                ]
                assert await custody(server, "education.record_link_revoked") == []
                [entry] = await custody(server, "education.record_send_late_answer")
                assert (entry["send"], entry["reference"], entry["status"]) == (
                    late_id,
                    "sms-http:first",
                    "failed",
                )
                audited = await server.app[DB].run(
                    lambda c: c.execute(
                        "SELECT action, reason, detail FROM audit WHERE object = ? ORDER BY id",
                        (f"edu_send:{late_id}",),
                    ).fetchall()
                )
                assert [a[0] for a in audited] == [
                    "education.record_send_failed",
                    "education.record_send_late_answer",
                ], audited
                assert audited[1][1].startswith("发送已标记为失败后服务商才回复"), audited
                assert "sms-http:first" in audited[1][2]
        finally:
            await server.runner.cleanup()


async def test_a_loopback_server_without_public_url_sends_companies_nothing(
    tmp_path: Path,
) -> None:
    """The default bind (127.0.0.1) is no address a company could open (it would reach its own
    machine): without education.public_url a send is refused, 409 no_public_url, Chinese
    first, before anything goes out; the company's earlier link stays live."""
    # an earlier send, by a server that had public_url
    server = await start_server(
        make_config(tmp_path, verifier={"enabled": False}, education={"public_url": PUBLIC})
    )
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            base = await _one_company_records(api, li)
            status, sent = await api.call("POST", f"{base}/send", li, {})
            assert status == 201 and sent["companies"][0]["state"] == "sent", sent
            [earlier] = await _links(server)
    finally:
        await server.runner.cleanup()

    # the same data, the default bind and no public_url (dev_join also on loopback only)
    server = await start_server(make_config(tmp_path, verifier={"enabled": False}))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await api.login("li")
            for body in ({}, {"link_base": server.base_url}):
                status, refused = await api.call("POST", f"{base}/send", li, body)
                assert (status, refused["error"]) == (409, "no_public_url"), refused
                assert refused["message"].startswith("未设置 education.public_url"), refused
            status, refused = await api.call("POST", f"{base}/send", li, {}, lang="en")
            assert "loopback" in refused["message"], refused
            assert await _links(server) == [earlier]  # nothing went out
            count = await server.app[DB].run(
                lambda c: c.execute("SELECT COUNT(*) FROM edu_sends").fetchone()[0]
            )
            assert count == 1  # no send row was made
            _, overview = await api.call("GET", f"{base}/sends", li)
            assert [c["state"] for c in overview["companies"]] == ["sent"], overview
            token = earlier.split("#t=")[1]
            status, facts = await public(api, "/api/education/company-record", token)
            assert status == 200, facts  # the earlier link was not revoked
    finally:
        await server.runner.cleanup()


def test_which_server_hosts_no_company_reaches() -> None:
    """Every interface, loopback and link-local hosts are no address of the server's own to
    send companies; an ordinary address or a name is."""
    from control.education.api import _nobody_elses

    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST.",
                 "app.localhost", "0.0.0.0", "::", "", "169.254.10.20", "fe80::1",
                 "fe80::1%eth0", "::ffff:127.0.0.1"):  # fmt: skip
        assert _nobody_elses(host), host
    for host in ("10.20.30.40", "192.0.2.7", "2001:db8::5", "jj.example.gov.cn"):
        assert not _nobody_elses(host), host


async def test_a_token_that_is_no_ascii_is_no_link_never_500(edu: Any) -> None:
    """The company page posts whatever its URL holds: a token of lone surrogates (valid JSON)
    or other non-ASCII text answers 404 not_found as an unknown token does, never a 500."""
    _, api, _ = edu
    for token in ("\ud800" * 25, "\udcff" * 43, "链接" * 20, "é" * 43, "x" * 42 + "\ud800"):
        for path in ("/api/education/company-record", "/api/education/company-record/pdf"):
            status, body = await public(api, path, token)
            assert (status, body["error"]) == (404, "not_found"), (token, path, body)
            assert body["message"].startswith("链接无效"), body
    from control.auth import token_hash

    # the hash itself never raises either (a caller that forgot the check opens nothing)
    assert len({token_hash("\ud800" * 25), token_hash("?" * 25), token_hash("\udcff")}) == 3
