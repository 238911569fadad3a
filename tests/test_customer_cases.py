"""The customer's two cases end to end (issue 16, "done when"), with a real server, real aiortc
parties whose faces the real face model checks, the real CA and signing, then the real command
line: ``remotecase case export`` writes the case package and ``remotecase case verify`` checks it
offline; the case's timeline lists every step in order.

(a) An accident with a party in another province (张三, 四川): the inquiry in a video session
    with its record signed by the party and both officers; an ordinary determination signed and
    sealed; the party's consent to electronic delivery; the determination delivered, opened and
    acknowledged (the receipt); then a mediation session with both parties and 张三's insurer to
    an effective 调解书.
(b) An old violation (a speeding camera picture of months ago): the party's identity checked
    before the call (prejoin, the real model), the facts in the call (the picture shown as the
    officer's material, the inquiry record), the penalty notice signed, the party's statement
    and its waiver of the rest of the period, the decision signed and sealed, delivered and
    acknowledged.

The officer's API calls are counted per case and printed (a rough measure of the officer's
work; docs/casefile.md keeps the figures).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import ImageVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import CUSTODY
from control.deadlines.rules import china_today
from documents.samples import sample
from tests import samples
from tests.conftest import (
    Api,
    Server,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)
from tests.test_casefile import cli
from tests.test_deadlines import penalty_data
from tests.test_prejoin import canvas, jpeg
from tests.test_records_documents import PartyKey, consent_body, party_sign
from tests.test_verifier import ASTRONAUT, HANKS, _png

pytestmark = pytest.mark.timeout(900)  # two calls, two faces checked, subprocesses: 2 cores


class OfficerApi(Api):
    """The API, counting the calls made with an officer's token (the officer's work)."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        super().__init__(http, base)
        self.officers: set[str] = set()
        self.count = 0

    async def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        data: bytes | None = None,
        lang: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        if token is not None and token in self.officers:
            self.count += 1
        return await super().call(method, path, token, json, data, lang, headers)


def matched(server: Server, room: str, pid: int) -> bool:
    return any(
        e["type"] == "verification.verdict"
        and e.get("room") == room
        and e["participant"] == f"party-{pid}"
        and e["verdict"] == "match"
        and e.get("phase") != "prejoin"
        for e in server.app[CUSTODY].entries()
    )


async def face_in_call(
    server: Server, token: str, face: Any, room: str, pid: int, clients: list[PeerClient]
) -> None:
    """The party's phone in the call, its camera showing its face: the verifier matches it with
    the enrolled reference (the real model) and logs the match the signing needs."""
    peer = PeerClient(server.base_url, token)
    clients.append(peer)
    await peer.connect()
    await peer.publish(
        ImageVideoTrack([(0, face)], width=640, height=480, fps=10), ToneAudioTrack()
    )
    await wait_until(lambda: matched(server, room, pid), timeout=90, what=f"a face match of {pid}")


async def ok(api: Api, method: str, path: str, token: str, body: Any = None, **k: Any) -> Any:
    status, answer = await api.call(method, path, token, body, **k)
    assert status in (200, 201), (method, path, status, answer)
    return answer


async def inquiry_record(
    api: OfficerApi,
    cid: int,
    sid: int,
    pid: int,
    party: str,
    li: str,
    wang: str,
    turns: list[tuple[str, str]],
    person: dict[str, str],
) -> dict[str, Any]:
    """The inquiry record written in the call, reviewed, signed on every page by the party and
    by both officers: its document."""
    record = await ok(
        api, "POST", f"/api/cases/{cid}/sessions/{sid}/records", li, {"party_id": pid}
    )
    base = f"/api/cases/{cid}/records/{record['id']}"
    for q, a in turns:
        await ok(api, "POST", base + "/turns", li, {"q": q, "a": a})
    live = await ok(api, "GET", "/api/party/record", party)
    assert [t["a"] for t in live["turns"]] == [a for _, a in turns]  # the party reads it live
    header = {
        "case": {"place": "某大队远程询问室", "end_time": "2026年12月1日 10时30分"},
        "person": person,
        "officers": [{"account": 1, "name": "李警官"}, {"account": 2, "name": "王警官"}],
    }
    await ok(api, "PUT", base + "/header", li, header)
    await ok(api, "POST", base + "/review", li)
    doc = (await ok(api, "POST", base + "/finalise", li))["document"]
    key = PartyKey()
    for box in [r["field"] for r in doc["required"] if r["role"] == "party"]:
        status, state = await party_sign(api, party, doc["id"], box, key)
        assert status == 200, state
    for token, box in ((li, "officer-o1"), (wang, "officer-o2")):
        state = await ok(
            api, "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", token, {"field": box}
        )
    assert state["state"]["effective"], state
    return dict(state)


async def signed_consent(api: Api, cid: int, pid: int, party: str, li: str, phone: str) -> Any:
    delivery = {"method": "电子送达（短信）", "address": phone, "agreed": "同意"}
    doc = await ok(api, "POST", f"/api/cases/{cid}/documents", li, consent_body(pid, delivery))
    status, state = await party_sign(api, party, doc["id"], f"party-p{pid}", PartyKey())
    assert status == 200 and f"party-p{pid}" in state["state"]["signed"], state
    return state


async def officer_signs(api: Api, cid: int, doc: dict[str, Any], li: str) -> Any:
    state = doc
    for box in ("officer-o1", "seal-department"):
        state = await ok(
            api, "POST", f"/api/cases/{cid}/documents/{doc['id']}/sign", li, {"field": box}
        )
    assert state["state"]["effective"], state
    return state


async def deliver(api: Api, cid: int, doc_id: int, pid: int, party: str, li: str) -> Any:
    """Delivered electronically, opened and acknowledged by the party: the receipt."""
    sent = await ok(
        api, "POST", f"/api/cases/{cid}/deliveries", li, {"document_id": doc_id, "party_id": pid}
    )
    assert sent["status"] == "sent", sent
    await ok(api, "POST", f"/api/party/deliveries/{sent['id']}/open", party)
    acked = await ok(api, "POST", f"/api/party/deliveries/{sent['id']}/acknowledge", party)
    receipt = await ok(api, "GET", f"/api/cases/{cid}/documents/{acked['receipt_id']}", li)
    assert receipt["kind"] == "delivery_receipt" and receipt["state"]["effective"], receipt
    return acked


def in_order(items: list[dict[str, Any]], steps: list[tuple[str, dict[str, Any]]]) -> None:
    """Each step is in the timeline, each after the one before; the timeline is sorted."""
    times = [datetime.fromisoformat(i["at"]) for i in items]
    assert times == sorted(times), "the timeline is in order"
    kinds = [(i["kind"], i["ref"]) for i in items]
    at = -1
    for kind, ref in steps:
        found = next(
            (
                n
                for n, i in enumerate(items)
                if n > at
                and i["kind"] == kind
                and all(i["ref"].get(k) == v for k, v in ref.items())
            ),
            None,
        )
        assert found is not None, f"{kind} {ref} not after step {at}: {kinds}"
        at = found


def export_and_verify(tmp_path: Path, cid: int) -> Path:
    package = tmp_path / "卷宗"
    exported = cli(tmp_path, "case", "export", str(cid), "--out", str(package))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    key = tmp_path / "keys" / "custody-ed25519.pub.pem"
    verified = cli(tmp_path, "case", "verify", str(package), "--public-key", str(key))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "卷宗核验通过" in verified.stdout
    return package


ZHANG = {
    "birth_date": "1985年3月2日",
    "id_number": "510104198503020011",
    "address": "四川省成都市锦江区某路1号",
}
FAST_VERIFIER = {"alert_after": 60.0, "no_face_after": 60.0, "sample_interval": 1.0}


def two_party_determination(p1: int, p2: int) -> dict[str, Any]:
    s = sample("determination_ordinary")
    person = {k: s["parties"][0][k] for k in ("id_number", "vehicle")}
    return {
        "department": s["department"],
        "case": s["case"],
        "findings": s["findings"],
        "parties": [
            {"id": p1, "responsibility": "全部责任", **person},
            {
                "id": p2,
                "responsibility": "无责任",
                "id_number": "320102198806060022",
                "vehicle": person["vehicle"] | {"plate": "苏E12345"},
            },
        ],
    }


async def accident(tmp_path: Path) -> tuple[int, int, dict[str, Any]]:
    server = await start_server(make_config(tmp_path, verifier=FAST_VERIFIER))
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = OfficerApi(http, server.base_url)
            li = await officer_login(server, api)
            wang = await officer_login(server, api, "wang")
            api.officers |= {li, wang}
            case = await ok(
                api,
                "POST",
                "/api/cases",
                li,
                {"kind": "accident", "title": "苏E12345与川A67890追尾事故"},
            )
            cid = case["id"]
            p1 = (
                await ok(
                    api, "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "张三"}
                )
            )["id"]  # at home in Sichuan
            p2 = (
                await ok(
                    api, "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "李四"}
                )
            )["id"]
            for pid, face in ((p1, ASTRONAUT), (p2, HANKS)):
                await ok(
                    api,
                    "PUT",
                    f"/api/cases/{cid}/parties/{pid}/reference",
                    li,
                    data=await asyncio.to_thread(_png, face),
                )

            # the investigation: 张三 questioned by video from Sichuan, the record signed
            inquiry = await ok(api, "POST", f"/api/cases/{cid}/sessions", li)
            zhang = (await party_link(api, li, cid, p1))["token"]
            officer = PeerClient(server.base_url, inquiry["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            await face_in_call(server, zhang, ASTRONAUT, inquiry["room"], p1, clients)
            record = await inquiry_record(
                api,
                cid,
                inquiry["id"],
                p1,
                zhang,
                li,
                wang,
                [
                    ("你是否清楚今天询问的原因？", "清楚。"),
                    ("请讲一下事故经过。", "我在沪宁高速上跟车太近，追尾了前方的苏E12345。"),
                ],
                ZHANG,
            )
            # the determination, signed and sealed; consent; delivered and acknowledged
            data = two_party_determination(p1, p2)
            made = await ok(
                api,
                "POST",
                f"/api/cases/{cid}/documents",
                li,
                {"kind": "determination_ordinary", "data": data},
            )
            determination = await officer_signs(api, cid, made, li)
            consent = await signed_consent(api, cid, p1, zhang, li, "13800000001")
            delivery = await deliver(api, cid, determination["id"], p1, zhang, li)
            await ok(
                api,
                "POST",
                f"/api/cases/{cid}/sessions/{inquiry['id']}/end",
                li,
                {"reason": "询问结束"},
            )
            for c in clients:
                await c.close()
            clients.clear()

            # the mediation: a session of its own, both parties by video, 张三's insurer
            session = await ok(
                api, "POST", f"/api/cases/{cid}/sessions", li, {"purpose": "mediation"}
            )
            tokens = {
                p1: (await party_link(api, li, cid, p1))["token"],
                p2: (await party_link(api, li, cid, p2))["token"],
            }
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            for pid, face in ((p1, ASTRONAUT), (p2, HANKS)):
                await face_in_call(server, tokens[pid], face, session["room"], pid, clients)
            today = china_today()
            med = await ok(
                api,
                "POST",
                f"/api/cases/{cid}/mediations",
                li,
                {
                    "session_id": session["id"],
                    "sides": [p1, p2],
                    "notified_on": (today - timedelta(days=7)).isoformat(),
                },
            )
            assert med["received_from"] == f"delivery:{delivery['id']}", med
            mid = med["id"]
            base = f"/api/cases/{cid}/mediations/{mid}"
            sides = {p["party_id"]: p["id"] for p in med["participants"]}
            insurer = await ok(
                api,
                "POST",
                f"{base}/participants",
                li,
                {
                    "side": p1,
                    "kind": "insurer",
                    "name": "中国人保财险成都分公司",
                    "policy": "PDZA2026510100",
                },
            )
            due = (today + timedelta(days=9)).isoformat()
            draft = {
                "losses": "苏E12345车辆维修费8,600元，误工费1,200.50元",
                "items": [
                    {
                        "what": "车辆维修费",
                        "amount": "8600",
                        "payer": insurer["id"],
                        "payee": sides[p2],
                        "method": "银行转账",
                        "due": due,
                    },
                    {
                        "what": "误工费",
                        "amount": "1200.50",
                        "payer": sides[p1],
                        "payee": sides[p2],
                        "method": "银行转账",
                        "due": due,
                    },
                ],
                "shares": [{"side": p1, "percent": "100"}, {"side": p2, "percent": "0"}],
            }
            await ok(api, "POST", f"{base}/drafts", li, {"draft": draft})
            seen = await ok(api, "GET", "/api/party/mediation", tokens[p1])
            assert seen["draft"]["revision"] == 1 and "8,600" in seen["draft_text"]["items"]
            agreement = await ok(
                api,
                "POST",
                f"{base}/agreement",
                li,
                {"facts": "张三驾驶川A67890追尾苏E12345，负全部责任。"},
            )
            assert agreement["kind"] == "mediation_agreement", agreement
            doc_id = agreement["id"]
            for pid in (p1, p2):
                status, state = await party_sign(
                    api, tokens[pid], doc_id, f"party-p{pid}", PartyKey()
                )
                assert status == 200, state
            await ok(
                api,
                "POST",
                f"/api/cases/{cid}/documents/{doc_id}/sign",
                li,
                {"field": "officer-o1"},
            )
            done = await ok(api, "GET", base, li)
            assert done["status"] == "effective", done
            await ok(
                api,
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/end",
                li,
                {"reason": "调解结束"},
            )
            for c in clients:
                await c.close()
            clients.clear()
            timeline = await ok(api, "GET", f"/api/cases/{cid}/timeline", li)
            calls = api.count
            refs = {
                "record": record["id"],
                "determination": determination["id"],
                "consent": consent["id"],
                "delivery": delivery["id"],
                "receipt": delivery["receipt_id"],
                "agreement": doc_id,
                "mediation": mid,
                "inquiry": inquiry["id"],
                "session": session["id"],
            }
            return cid, calls, {"timeline": timeline["items"], **refs}
    finally:
        for c in clients:
            await c.close()
        await server.runner.cleanup()


def test_an_accident_with_a_party_in_another_province(tmp_path: Path) -> None:
    cid, calls, made = asyncio.run(accident(tmp_path))
    print(f"\n(a) accident, party in another province: {calls} officer API calls")
    in_order(
        made["timeline"],
        [
            ("session.opened", {}),
            ("verification.verdict", {"verdict": "match"}),
            ("document.signed", {"document": made["record"]}),
            ("document.signed", {"document": made["determination"]}),
            ("document.signed", {"document": made["consent"]}),
            ("delivery.sent", {"delivery": made["delivery"]}),
            ("delivery.opened", {"delivery": made["delivery"]}),
            ("delivery.acknowledged", {"delivery": made["delivery"]}),
            ("session.ended", {}),
            ("mediation.opened", {}),
            ("mediation.participant_added", {}),
            ("mediation.draft_revised", {}),
            ("mediation.agreement_generated", {}),
            ("document.signed", {"document": made["agreement"]}),
            ("mediation.effective", {}),
        ],
    )
    package = export_and_verify(tmp_path, cid)
    docs = sorted(p.name for p in (package / "documents").iterdir())
    for kind in (
        "inquiry_record",
        "determination_ordinary",
        "delivery_consent",
        "delivery_receipt",
        "mediation_agreement",
    ):
        assert any(kind in d for d in docs), (kind, docs)
    text = (package / "timeline.txt").read_text(encoding="utf-8")
    assert "电子送达" in text


async def prejoin_passed(api: Api, token: str, face: Any) -> None:
    """The identity check before the call: stills of the party's face, paced like the page's,
    until the real model has matched enough of them with the reference."""
    still = await asyncio.to_thread(lambda: jpeg(canvas(face)))
    for _ in range(8):
        await asyncio.sleep(0.35)
        status, body = await api.call("POST", "/api/party/prejoin/sample", token, data=still)
        assert status == 200, body
        if body["status"] == "passed":
            return
    raise AssertionError(f"the identity check did not pass: {body}")


async def violation(tmp_path: Path) -> tuple[int, int, dict[str, Any]]:
    server = await start_server(
        make_config(tmp_path, verifier=FAST_VERIFIER, auth={"prejoin_check": True})
    )
    clients: list[PeerClient] = []
    try:
        async with aiohttp.ClientSession() as http:
            api = OfficerApi(http, server.base_url)
            li = await officer_login(server, api)
            wang = await officer_login(server, api, "wang")
            api.officers |= {li, wang}
            case = await ok(
                api,
                "POST",
                "/api/cases",
                li,
                {"kind": "violation", "title": "川A67890于2026年6月超速（电子警察抓拍）"},
            )
            cid = case["id"]
            pid = (
                await ok(
                    api, "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "张三"}
                )
            )["id"]
            await ok(
                api,
                "PUT",
                f"/api/cases/{cid}/parties/{pid}/reference",
                li,
                data=await asyncio.to_thread(_png, ASTRONAUT),
            )
            # the facts: the camera's picture of months ago, in the case's materials
            picture = await ok(
                api,
                "POST",
                f"/api/cases/{cid}/materials?name=测速抓拍.jpg",
                li,
                data=await asyncio.to_thread(samples.jpeg),
            )
            session = await ok(api, "POST", f"/api/cases/{cid}/sessions", li)
            token = (await party_link(api, li, cid, pid))["token"]
            # identity: checked before the call by the real model, then in the call
            await prejoin_passed(api, token, ASTRONAUT)
            officer = PeerClient(server.base_url, session["token"], decode=False)
            clients.append(officer)
            await officer.connect()
            await face_in_call(server, token, ASTRONAUT, session["room"], pid, clients)
            consent = await signed_consent(api, cid, pid, token, li, "13800000002")
            record = await inquiry_record(
                api,
                cid,
                session["id"],
                pid,
                token,
                li,
                wang,
                [
                    ("2026年6月3日川A67890在G42沪蓉高速被测速抓拍，当时是你驾驶吗？", "是我。"),
                    ("照片上的车速为每小时132公里，限速120公里，你有无异议？", "没有异议。"),
                ],
                ZHANG,
            )
            docs = f"/api/cases/{cid}/documents"
            notice = await ok(
                api,
                "POST",
                docs,
                li,
                {"kind": "penalty_notice", "data": penalty_data(pid, "penalty_notice", 200)},
            )
            status, signed = await party_sign(api, token, notice["id"], f"party-p{pid}", PartyKey())
            assert status == 200, signed
            await ok(api, "POST", f"{docs}/{notice['id']}/sign", li, {"field": "officer-o1"})
            decision = {
                "kind": "penalty_decision",
                "data": penalty_data(pid, "penalty_decision", 200),
            }
            # the decision is refused while the statement period runs...
            status, body = await api.call("POST", docs, li, decision)
            assert (status, body["error"]) == (409, "statement_period_open"), body
            steps = f"/api/cases/{cid}/penalty/steps"
            await ok(
                api, "POST", steps, li, {"step": "statement", "text": "当时赶时间，请求从轻处罚。"}
            )
            await ok(
                api,
                "POST",
                steps,
                li,
                {
                    "step": "waiver",
                    "right": "statement",
                    "text": "当事人表示不再陈述申辩，放弃剩余的陈述申辩期限",
                },
            )
            # ... and made once the party waived the rest of it
            made = await ok(api, "POST", docs, li, decision)
            status, signed = await party_sign(api, token, made["id"], f"party-p{pid}", PartyKey())
            assert status == 200, signed
            decided = await officer_signs(api, cid, made, li)
            delivery = await deliver(api, cid, decided["id"], pid, token, li)
            await ok(api, "POST", steps, li, {"step": "payment", "reference": "JF2026120100017"})
            await ok(
                api,
                "POST",
                f"/api/cases/{cid}/sessions/{session['id']}/end",
                li,
                {"reason": "处理完毕"},
            )
            for c in clients:
                await c.close()
            clients.clear()
            timeline = await ok(api, "GET", f"/api/cases/{cid}/timeline", li)
            refs = {
                "material": picture["id"],
                "consent": consent["id"],
                "record": record["id"],
                "notice": notice["id"],
                "decision": decided["id"],
                "delivery": delivery["id"],
            }
            return cid, api.count, {"timeline": timeline["items"], **refs}
    finally:
        for c in clients:
            await c.close()
        await server.runner.cleanup()


def test_an_old_violation(tmp_path: Path) -> None:
    cid, calls, made = asyncio.run(violation(tmp_path))
    print(f"\n(b) old violation: {calls} officer API calls")
    in_order(
        made["timeline"],
        [
            ("material.received", {"material": made["material"]}),
            ("session.opened", {}),
            ("verification.prejoin", {"result": "passed"}),
            ("verification.verdict", {"verdict": "match"}),
            ("document.signed", {"document": made["consent"]}),
            ("document.signed", {"document": made["record"]}),
            ("document.signed", {"document": made["notice"]}),
            ("penalty.statement", {}),
            ("penalty.waiver", {"right": "statement"}),
            ("document.generated", {"document": made["decision"]}),
            ("document.signed", {"document": made["decision"]}),
            ("delivery.sent", {"delivery": made["delivery"]}),
            ("delivery.opened", {"delivery": made["delivery"]}),
            ("delivery.acknowledged", {"delivery": made["delivery"]}),
            ("penalty.payment", {}),
            ("session.ended", {}),
        ],
    )
    package = export_and_verify(tmp_path, cid)
    docs = sorted(p.name for p in (package / "documents").iterdir())
    for kind in (
        "delivery_consent",
        "inquiry_record",
        "penalty_notice",
        "penalty_decision",
        "delivery_receipt",
    ):
        assert any(kind in d for d in docs), (kind, docs)
    assert len(list((package / "materials").iterdir())) == 1
