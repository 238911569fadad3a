"""Compensation mediation (损害赔偿调解) with a real server, the real CA and time-stamp authority
and the offline verifier: a mediation with two parties, an agent and an insurer to an effective
调解书; terminations by a walk-out and by a refusal, each with a sealed 调解终结书; the three
per side; an agent whose power of attorney is rejected; an application after the limit.

Party signatures and face matches are made as in ``test_records_documents.py`` (its helpers):
the party's key with ``cryptography``, the face match a verifier entry in the custody log."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PeerClient
from control.appkeys import CUSTODY, DB
from control.deadlines.rules import china_today
from tests import samples
from tests.conftest import (
    CONSENT,
    Api,
    Server,
    join,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)
from tests.test_records_documents import PartyKey, _pdf, party_sign, seed_match, verify_cli


def _custody(server: Server, kind: str) -> list[dict[str, Any]]:
    return [e for e in server.app[CUSTODY].entries() if e["type"] == kind]


async def audit_rows(server: Server, action: str) -> list[dict[str, Any]]:
    def read(c: Any) -> list[dict[str, Any]]:
        rows = c.execute("SELECT * FROM audit WHERE action = ?", (action,)).fetchall()
        return [dict(r) for r in rows]

    return await server.app[DB].run(read)


class Setup:
    """A case with two parties, a mediation session and the officer's login."""

    def __init__(self, server: Server, api: Api, li: str) -> None:
        self.server, self.api, self.li = server, api, li
        self.cid = self.p1 = self.p2 = self.session = 0
        self.room = ""

    async def make(self) -> Setup:
        status, case = await self.api.call(
            "POST", "/api/cases", self.li, {"kind": "accident", "title": "追尾事故"}
        )
        assert status == 201, case
        self.cid = case["id"]
        for attr, name in (("p1", "张三"), ("p2", "李四")):
            status, party = await self.api.call(
                "POST", f"/api/cases/{self.cid}/parties", self.li, {"role": "driver", "name": name}
            )
            assert status == 201, party
            setattr(self, attr, party["id"])
        status, session = await self.api.call(
            "POST", f"/api/cases/{self.cid}/sessions", self.li, {"purpose": "mediation"}
        )
        assert status == 201, session
        self.session, self.room = session["id"], session["room"]
        return self

    @property
    def base(self) -> str:
        return f"/api/cases/{self.cid}/mediations"

    async def open(self, **more: Any) -> tuple[int, Any]:
        today = china_today()
        body = {
            "session_id": self.session,
            "sides": [self.p1, self.p2],
            "determination_received_on": (today - timedelta(days=2)).isoformat(),
            "notified_on": (today - timedelta(days=10)).isoformat(),
        } | more
        return await self.api.call("POST", self.base, self.li, body)

    async def poa(self) -> str:
        status, material = await self.api.call(
            "POST",
            f"/api/cases/{self.cid}/materials?name=poa.pdf",
            self.li,
            data=await asyncio.to_thread(samples.pdf, 1),
        )
        assert status == 201, material
        return str(material["id"])

    async def add(self, mid: int, **body: Any) -> tuple[int, Any]:
        return await self.api.call("POST", f"{self.base}/{mid}/participants", self.li, body)

    async def check(self, mid: int, pid: int, decision: str, reason: str = "") -> Any:
        status, body = await self.api.call(
            "POST",
            f"{self.base}/{mid}/participants/{pid}/attorney",
            self.li,
            {"decision": decision, "reason": reason},
        )
        assert status == 200, body
        return body

    async def invite(self, party_id: int) -> tuple[int, Any]:
        return await self.api.call(
            "POST", f"/api/cases/{self.cid}/invitations", self.li, {"party_id": party_id}
        )


def draft(payer: int, payee: int, side_a: int, side_b: int, **change: Any) -> dict[str, Any]:
    due = (china_today() + timedelta(days=9)).isoformat()
    body: dict[str, Any] = {
        "losses": "苏A67890车辆维修费8,600元，误工费1,200.50元",
        "items": [
            {
                "what": "车辆维修费",
                "amount": "8600",
                "payer": payer,
                "payee": payee,
                "method": "银行转账",
                "due": due,
            },
            {
                "what": "误工费",
                "amount_fen": 120050,
                "payer": payer,
                "payee": payee,
                "method": "银行转账",
                "due": due,
            },
        ],
        "shares": [{"side": side_a, "percent": "70"}, {"side": side_b, "percent": "30"}],
    }
    body.update(change)
    return body


async def test_three_signers_make_the_agreement_effective_and_it_verifies_offline(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            s = await Setup(server, api, li).make()
            status, med = await s.open()
            assert status == 201, med
            mid = med["id"]
            assert med["status"] == "open" and med["received_from"] == "officer"
            assert med["limits"]["concludes_by"] > china_today().isoformat()
            sides = {p["party_id"]: p["id"] for p in med["participants"]}
            # one open mediation per case
            status, body = await s.open()
            assert (status, body["error"]) == (409, "mediation_open"), body

            # the agent of 李四, with a power of attorney: no invitation before it is accepted
            status, agent = await s.add(
                mid, side=s.p2, kind="agent", name="王律师", attorney_material=await s.poa()
            )
            assert status == 201 and agent["attorney_status"] == "pending", agent
            status, body = await s.invite(agent["party_id"])
            assert (status, body["error"]) == (409, "attorney_not_accepted"), body
            checked = await s.check(mid, agent["id"], "accepted")
            assert checked["attorney_status"] == "accepted" and checked["signs"]
            status, body = await s.invite(agent["party_id"])
            assert status == 201, body
            # an insurer for 张三's side: listed, pays, does not sign
            status, insurer = await s.add(
                mid, side=s.p1, kind="insurer", name="中国人保财险苏州分公司", policy="PDZA2026"
            )
            assert status == 201, insurer

            # the draft: refused when wrong, with the field named
            path = f"{s.base}/{mid}/drafts"
            bad = [
                (
                    draft(
                        insurer["id"],
                        sides[s.p2],
                        s.p1,
                        s.p2,
                        shares=[{"side": s.p1, "percent": "70"}, {"side": s.p2, "percent": "20"}],
                    ),
                    "shares",
                ),
                (
                    draft(insurer["id"], sides[s.p2], s.p1, s.p2)
                    | {
                        "items": [
                            {
                                "what": "x",
                                "amount": "-5",
                                "payer": insurer["id"],
                                "payee": sides[s.p2],
                                "method": "现金",
                                "due": "2099-01-01",
                            }
                        ]
                    },
                    "items[0].amount",
                ),
                (
                    draft(insurer["id"], sides[s.p2], s.p1, s.p2)
                    | {
                        "items": [
                            {
                                "what": "x",
                                "amount": "5",
                                "payer": insurer["id"],
                                "payee": sides[s.p2],
                                "method": "现金",
                                "due": china_today().isoformat(),
                            }
                        ]
                    },
                    "items[0].due",
                ),
                (draft(insurer["id"], sides[s.p1], s.p1, s.p2), "items[0].payee"),
            ]
            for body, field in bad:
                status, answer = await api.call("POST", path, li, {"draft": body})
                assert (status, answer["error"], answer["field"]) == (400, "bad_draft", field), (
                    answer
                )
            # 李四 in the call: told of each revision by signalling
            peer = await join(server, clients, s.room, f"party-{s.p2}")
            first = draft(sides[s.p1], sides[s.p2], s.p1, s.p2)
            status, rev1 = await api.call("POST", path, li, {"draft": first})
            told = await peer.wait_for(
                lambda m: m["type"] == "mediation" and m["event"] == "mediation.draft_revised",
                timeout=30,
            )
            assert told["mediation"] == mid
            assert status == 201 and rev1["revision"] == 1, rev1
            assert rev1["draft"]["items"][0]["amount_fen"] == 860000
            second = draft(insurer["id"], sides[s.p2], s.p1, s.p2)
            status, rev2 = await api.call("POST", path, li, {"draft": second})
            assert status == 201 and rev2["revision"] == 2, rev2
            _, revisions = await api.call("GET", path, li)
            assert [r["revision"] for r in revisions["revisions"]] == [1, 2]

            # every participant sees the current draft from its page
            tokens = {pid: (await party_link(api, li, s.cid, pid))["token"] for pid in (s.p1, s.p2)}
            status, answer = await api.call(
                "POST",
                "/api/invitations/redeem",
                json={"token": body_token(await s.invite(agent["party_id"])), "consent": CONSENT},
            )
            assert status == 200, answer
            tokens[agent["party_id"]] = answer["token"]
            status, seen = await api.call("GET", "/api/party/mediation", tokens[s.p2])
            assert status == 200 and seen["draft"]["revision"] == 2, seen
            assert "人民币9,800.50元" in seen["draft_text"]["items"]
            assert "中国人保财险苏州分公司" in seen["draft_text"]["payment"]

            # the agreement: one box per party and accepted agent, and the mediator's
            status, doc = await api.call(
                "POST",
                f"{s.base}/{mid}/agreement",
                li,
                {
                    "facts": "2026年11月20日张三驾车追尾李四车辆",
                    "responsibility": {str(s.p1): "全部责任", str(s.p2): "无责任"},
                },
            )
            assert status == 201, doc
            fields = [r["field"] for r in doc["required"]]
            assert fields == [
                f"party-p{s.p1}",
                f"party-p{s.p2}",
                f"party-p{agent['party_id']}",
                fields[-1],
            ] and fields[-1].startswith("officer-o")
            # the draft is final once someone signed; before that a new draft supersedes
            order = [s.p1, agent["party_id"], s.p2]
            for n, pid in enumerate(order):
                await seed_match(server, s.room, pid)
                status, state = await party_sign(
                    api, tokens[pid], doc["id"], f"party-p{pid}", PartyKey()
                )
                assert status == 200, state
                assert not state["state"]["effective"]
                if n == 0:
                    status, body = await api.call("POST", path, li, {"draft": first})
                    assert (status, body["error"]) == (409, "signing_started"), body
                _, now = await api.call("GET", f"{s.base}/{mid}", li)
                assert now["status"] == "open"
            status, state = await api.call(
                "POST",
                f"/api/cases/{s.cid}/documents/{doc['id']}/sign",
                li,
                {"field": fields[-1]},
            )
            assert status == 200 and state["state"]["effective"], state
            _, now = await api.call("GET", f"{s.base}/{mid}", li)
            assert now["status"] == "effective" and now["agreement_id"] == doc["id"], now
            effective = _custody(server, "mediation.effective")
            assert len(effective) == 1 and effective[0]["document"] == doc["id"]
            assert effective[0]["sha256"] == state["sha256"]
            for step in ("opened", "participant_added", "attorney_checked", "draft_revised"):
                assert _custody(server, f"mediation.{step}"), step
                assert await audit_rows(server, f"mediation.{step}"), step
            assert len(await audit_rows(server, "mediation.effective")) == 1
            # counted by outcome in the statistics (an officer sees its own brigade)
            _, stats = await api.call("GET", "/api/statistics", li)
            outcomes = [b["mediations"] for b in stats["brigades"].values()]
            assert outcomes == [{"effective": 1}], stats
            # an ended mediation changes no more
            status, body = await api.call("POST", path, li, {"draft": second})
            assert (status, body["error"]) == (409, "mediation_closed"), body
            status, body = await api.call("GET", "/api/party/mediation", tokens[agent["party_id"]])
            assert status == 200 and body["status"] == "effective"

            pdf = await _pdf(server, f"/api/cases/{s.cid}/documents/{doc['id']}/pdf", li)
            _, root = await api.call("GET", "/api/ca/root")
        (tmp_path / "agreement.pdf").write_bytes(pdf)
        (tmp_path / "root.pem").write_bytes(root)
        result = await asyncio.to_thread(
            verify_cli, tmp_path / "agreement.pdf", tmp_path / "root.pem"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "是 yes" in result.stdout, result.stdout
    finally:
        await server.runner.cleanup()


def body_token(answer: tuple[int, Any]) -> str:
    status, body = answer
    assert status == 201, body
    return str(body["token"])


async def test_a_walk_out_ends_the_mediation_with_a_sealed_termination(
    tmp_path: Path, clients: list[PeerClient]
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            s = await Setup(server, api, li).make()
            _, med = await s.open()
            mid = med["id"]
            # three per side: the party and two agents; a fourth is refused
            agents = []
            for name in ("代理人甲", "代理人乙"):
                status, agent = await s.add(
                    mid, side=s.p1, kind="agent", name=name, attorney_material=await s.poa()
                )
                assert status == 201, agent
                agents.append(agent)
            status, body = await s.add(mid, side=s.p1, kind="insurer", name="平安财险")
            assert (status, body["error"]) == (409, "side_full"), body
            assert "三人" in body["message"]
            # a rejected power of attorney: no invitation, the place free again
            rejected = await s.check(mid, agents[1]["id"], "rejected", "委托书未载明代理权限")
            assert rejected["attorney_status"] == "rejected" and not rejected["signs"]
            status, body = await s.invite(agents[1]["party_id"])
            assert (status, body["error"]) == (409, "attorney_not_accepted"), body
            status, body = await s.add(mid, side=s.p1, kind="insurer", name="平安财险")
            assert status == 201, body
            # a rejected agent cannot be taken back once the side is full again
            status, body = await api.call(
                "POST",
                f"{s.base}/{mid}/participants/{agents[1]['id']}/attorney",
                li,
                {"decision": "accepted"},
            )
            assert (status, body["error"]) == (409, "side_full"), body
            # a wrong power of attorney material is refused
            status, body = await s.add(
                mid, side=s.p2, kind="agent", name="丙", attorney_material="nope"
            )
            assert status == 400, body

            party = next(p for p in med["participants"] if p["party_id"] == s.p2)
            walkout = f"{s.base}/{mid}/participants/{party['id']}/walkout"
            # while 李四 is still in the call the walk-out is not recorded
            peer = await join(server, clients, s.room, f"party-{s.p2}")
            status, body = await api.call("POST", walkout, li, {"note": "n"})
            assert (status, body["error"]) == (409, "still_in_call"), body
            await peer.close()
            room = server.sfu.rooms.get(s.room)
            await wait_until(
                lambda: room is None or f"party-{s.p2}" not in room.participants,
                timeout=30,
                what="李四 out of the room",
            )
            status, ended = await api.call(
                "POST", walkout, li, {"note": "李四离开视频并表示不再调解"}
            )
            assert status == 200, ended
            assert ended["status"] == "terminated" and "李四中途退出调解" in ended["end_reason"]
            terminated = _custody(server, "mediation.terminated")
            assert len(terminated) == 1 and terminated[0]["walked_out"] == party["id"]
            _, stats = await api.call("GET", "/api/statistics", li)
            outcomes = [b["mediations"] for b in stats["brigades"].values()]
            assert outcomes == [{"terminated": 1}], stats
            status, doc = await api.call(
                "GET", f"/api/cases/{s.cid}/documents/{ended['termination_id']}", li
            )
            assert status == 200 and doc["kind"] == "mediation_termination", doc
            assert doc["state"]["effective"], doc["state"]  # officer and seal, both signed
            assert [sig["role"] for sig in doc["signatures"]] == ["officer", "seal"]
            pdf = await _pdf(
                server, f"/api/cases/{s.cid}/documents/{ended['termination_id']}/pdf", li
            )
            _, root = await api.call("GET", "/api/ca/root")
        (tmp_path / "termination.pdf").write_bytes(pdf)
        (tmp_path / "root.pem").write_bytes(root)
        result = await asyncio.to_thread(
            verify_cli, tmp_path / "termination.pdf", tmp_path / "root.pem"
        )
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        await server.runner.cleanup()


async def test_a_refusal_on_the_agreement_is_no_agreement_and_ends_the_mediation(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            s = await Setup(server, api, li).make()
            _, med = await s.open()
            mid = med["id"]
            sides = {p["party_id"]: p["id"] for p in med["participants"]}
            status, _ = await api.call(
                "POST",
                f"{s.base}/{mid}/drafts",
                li,
                {"draft": draft(sides[s.p1], sides[s.p2], s.p1, s.p2)},
            )
            assert status == 201
            status, doc = await api.call("POST", f"{s.base}/{mid}/agreement", li, {"facts": "追尾"})
            assert status == 201, doc
            # the case's deadlines: the mediation to conclude in 10 working days, open
            _, limits = await api.call("GET", f"/api/cases/{s.cid}/deadlines", li)
            conclusion = [d for d in limits["deadlines"] if d["limit"] == "mediation_conclusion"]
            assert [(d["mediation"], d["status"]) for d in conclusion] == [(mid, "open")]
            token = (await party_link(api, li, s.cid, s.p2))["token"]
            status, refused = await api.call(
                "POST",
                f"/api/party/documents/{doc['id']}/refusals",
                token,
                {"field": f"party-p{s.p2}", "reason": "赔偿数额过低"},
            )
            assert status == 200, refused
            # a refused box on a 调解书 is no agreement, however the rest is signed
            assert not refused["state"]["effective"], refused["state"]
            _, now = await api.call("GET", f"{s.base}/{mid}", li)
            assert now["status"] == "terminated" and "拒绝在调解书上签名" in now["end_reason"]
            status, term = await api.call(
                "GET", f"/api/cases/{s.cid}/documents/{now['termination_id']}", li
            )
            assert status == 200 and term["kind"] == "mediation_termination"
            assert "seal" in [sig["role"] for sig in term["signatures"]], term
            # the agreement is not signed any more
            await seed_match(server, s.room, s.p1)
            p1_token = (await party_link(api, li, s.cid, s.p1))["token"]
            status, body = await party_sign(api, p1_token, doc["id"], f"party-p{s.p1}", PartyKey())
            assert (status, body["error"]) == (409, "mediation_closed"), body
            assert _custody(server, "mediation.terminated")[0]["refused"] == f"party-p{s.p2}"
            _, limits = await api.call("GET", f"/api/cases/{s.cid}/deadlines", li)
            conclusion = [d for d in limits["deadlines"] if d["limit"] == "mediation_conclusion"]
            assert [d["status"] for d in conclusion] == ["done"]
    finally:
        await server.runner.cleanup()


async def test_a_late_application_is_refused_with_the_day_it_closed(tmp_path: Path) -> None:
    server = await start_server(make_config(tmp_path))
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            s = await Setup(server, api, li).make()
            # received on Tue 22 September 2026: the ten working days skip National Day
            status, body = await s.open(determination_received_on="2026-09-22")
            assert (status, body["error"]) == (409, "mediation_application_late"), body
            assert body["received_on"] == "2026-09-22"
            closed = date.fromisoformat(body["closed_on"])
            assert closed > date(2026, 10, 8), body
            assert "国庆" in body["message"], body["message"]
            # notified too late: three working days ahead at least
            status, body = await s.open(notified_on=china_today().isoformat())
            assert (status, body["error"]) == (409, "mediation_notice_short"), body
            # a session for another purpose is not a mediation's
            status, _ = await api.call(
                "POST", f"/api/cases/{s.cid}/sessions/{s.session}/end", li, {"reason": "x"}
            )
            assert status == 200
            status, body = await s.open()
            assert status == 400 and body["detail"] == "no_session", body
            assert not _custody(server, "mediation.opened")
    finally:
        await server.runner.cleanup()
