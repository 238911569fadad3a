"""A party's signature prepared by one worker and finished by another (``server.workers = 2``).

``remotecase serve`` runs as a subprocess with two workers; the test finds each worker's own
loopback port (from ``/proc``) and sends ``prepare`` to one and ``finish`` to the other, which
has nothing of the first in memory: the pending signature is in the shared database. The face
match is appended to the shared custody log from this process, as the verifier of the worker
holding the room would (``tests/test_records_documents.py`` says why that stands in for it).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
from cryptography import x509

from documents.verify import verify_pdf
from recorder.custody import CustodyLog
from recorder.keys import load_or_create_signing_key
from tests.conftest import Api, case_with_party, party_link, serve_process
from tests.test_records_documents import STROKES, PartyKey, consent_body


def _children(supervisor: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == supervisor:
            out.append(int(entry.name))
    return out


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its socket inodes matched in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
            ports.add(int(cols[1].split(":")[1], 16))
    return ports


async def _worker_urls(http: aiohttp.ClientSession, supervisor: int, front: str) -> list[str]:
    front_port = int(front.rsplit(":", 1)[1])
    urls = []
    for pid in _children(supervisor):
        for port in _listening_ports(pid) - {front_port}:
            url = f"http://127.0.0.1:{port}"
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200 and "workers" not in await r.json():
                        urls.append(url)
            except aiohttp.ClientError:
                continue
    return urls


async def test_prepare_on_one_worker_finish_on_another_once(tmp_path: Path) -> None:
    async with serve_process(tmp_path, SERVER__WORKERS="2", VERIFIER__ENABLED="false") as server:
        async with aiohttp.ClientSession() as http:
            front = Api(http, server.base)
            li = await front.login("li")
            urls = await _worker_urls(http, server.proc.pid, server.base)
            assert len(urls) == 2, urls
            one, other = Api(http, urls[0]), Api(http, urls[1])

            cid, pid = await case_with_party(front, li, name="张三")
            status, doc = await front.call(
                "POST", f"/api/cases/{cid}/documents", li, consent_body(pid)
            )
            assert status == 201, doc
            _, session = await front.call("POST", f"/api/cases/{cid}/sessions", li)
            party = (await party_link(front, li, cid, pid))["token"]

            custody = CustodyLog(
                tmp_path / "var" / "custody",
                load_or_create_signing_key(tmp_path / "keys" / "custody-ed25519.pem"),
            )
            await custody.append_async(
                "verification.verdict",
                room=session["room"],
                actor="verifier",
                participant=f"party-{pid}",
                verdict="match",
                score=0.9,
                threshold=0.5,
                model_id="test",
                frame_sha256="ab" * 32,
                frame_time=0.0,
                faces=1,
                quality={},
            )
            await custody.close_async()

            key = PartyKey()
            path = f"/api/party/documents/{doc['id']}/sign"
            status, prep = await one.call(
                "POST",
                path + "/prepare",
                party,
                {"field": f"party-p{pid}", "public_key": key.spki, "strokes": STROKES},
            )
            assert status == 200, prep
            finish = {"request_id": prep["request_id"], "signature": key.sign(prep["to_be_signed"])}
            status, state = await other.call("POST", path + "/finish", party, finish)
            assert status == 200, state
            assert [s["field"] for s in state["signatures"]] == [f"party-p{pid}"]
            assert state["signatures"][0]["verdict_id"] == prep["verdict_id"]
            # single use, in either worker
            for api in (other, one):
                status, again = await api.call("POST", path + "/finish", party, finish)
                assert (status, again["error"]) == (404, "not_found"), again

            async with http.get(
                f"{server.base}/api/party/documents/{doc['id']}/pdf",
                headers={"Authorization": f"Bearer {party}"},
            ) as r:
                assert r.status == 200
                pdf = await r.read()
            assert hashlib.sha256(pdf).hexdigest() == state["sha256"]
            _, root = await front.call("GET", "/api/ca/root")
        report = await asyncio.to_thread(verify_pdf, pdf, [x509.load_pem_x509_certificate(root)])
        (sig,) = report.signatures
        assert sig.ok and sig.role == "party", sig.problems
        assert sig.signing_event is not None
        assert sig.signing_event["verdict_id"] == prep["verdict_id"]
    assert "Traceback" not in server.log_text, server.log_text[-3000:]
