"""The case file (docs/casefile.md) with a real server, a real aiortc call recorded, a party's
material, signed documents, a delivery, then the real command line: the timeline lists them in
order; ``remotecase case export`` writes the package and ``remotecase case verify`` checks it
offline (no server, no database); a byte changed in any file of it, a file deleted or one added
is named.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
from control.appkeys import RECORDER
from control.casefile.verify import verify_case_package
from recorder.keys import load_public_key
from tests import samples
from tests.conftest import (
    Api,
    case_with_party,
    make_config,
    officer_login,
    party_link,
    start_server,
    wait_until,
)
from tests.test_delivery import Party, consent, make_determination
from tests.test_records_documents import seed_match


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
    }
    return subprocess.run(
        [sys.executable, "-m", "control.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def failures(findings: list[Any]) -> str:
    return "\n".join(str(f) for f in findings if not f.ok)


async def make_case(tmp_path: Path) -> dict[str, Any]:
    """A case with a recorded session, a party's material, signed documents and a delivery;
    what the test checks later."""
    server = await start_server(make_config(tmp_path, recording={"segment_seconds": 1.0}))
    client: PeerClient | None = None
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api)
            cid, pid = await case_with_party(api, li, name="张三")
            status, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            assert status == 201, session
            p = Party(cid, pid, (await party_link(api, li, cid, pid))["token"], session["room"])
            await seed_match(server, p.room, pid)
            client = PeerClient(server.base_url, p.token)
            await client.connect()
            await client.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
            await wait_until(lambda: p.room in server.app[RECORDER].active, what="recording")
            await asyncio.sleep(2.5)
            status, material = await api.call(
                "POST", "/api/party/materials?name=现场照片.jpg", p.token, data=samples.jpeg()
            )
            assert status == 201, material
            signed_consent = await consent(api, li, p)
            determination = await make_determination(api, li, p)
            status, sent = await api.call(
                "POST",
                f"/api/cases/{p.cid}/deliveries",
                li,
                {"document_id": determination["id"], "party_id": p.pid},
            )
            assert status == 201 and sent["status"] == "sent", sent
            status, stopped = await api.call(
                "POST",
                f"/api/cases/{p.cid}/sessions/{session['id']}/recording",
                li,
                {"action": "stop", "reason": "询问结束"},
            )
            assert status == 200 and stopped["status"] == "complete", stopped
            await client.close()
            client = None

            # the timeline: everything, in order, labelled in Chinese first
            status, timeline = await api.call("GET", f"/api/cases/{p.cid}/timeline", li)
            assert status == 200, timeline
            wu = await officer_login(server, api, "wu", "brigade-2")
            assert (await api.call("GET", f"/api/cases/{p.cid}/timeline", wu))[0] == 404
            status, english = await api.call("GET", f"/api/cases/{p.cid}/timeline", li, lang="en")
            return {
                "case": p.cid,
                "recording": stopped["recording_id"],
                "material": material,
                "consent": signed_consent,
                "determination": determination,
                "delivery": sent,
                "timeline": timeline,
                "english": english,
            }
    finally:
        if client is not None:
            await client.close()
        await server.runner.cleanup()


@pytest.mark.timeout(600)  # a call recorded, two subprocesses, many verifications: 2 shared cores
def test_timeline_package_and_offline_verification(tmp_path: Path) -> None:
    made = asyncio.run(make_case(tmp_path))
    items = made["timeline"]["items"]
    assert made["timeline"]["count"] == len(items)
    times = [datetime.fromisoformat(i["at"]) for i in items]
    assert times == sorted(times), "the timeline is in order"
    kinds = [i["kind"] for i in items]

    def first(kind: str, **ref: Any) -> int:
        for n, i in enumerate(items):
            if i["kind"] == kind and all(i["ref"].get(k) == v for k, v in ref.items()):
                return n
        raise AssertionError(f"{kind} {ref} not in the timeline: {kinds}")

    opened = first("session.opened")
    joined = first("participant.joined")
    started = first("recording.started", recording=made["recording"])
    received = first("material.received", material=made["material"]["id"])
    consent_made = first("document.generated", document=made["consent"]["id"])
    consent_signed = first("document.signed", document=made["consent"]["id"])
    sent = first("delivery.sent", delivery=made["delivery"]["id"])
    sealed = first("recording.sealed", recording=made["recording"])
    assert opened < joined and opened < started < received
    assert received < consent_made < consent_signed < sent < sealed
    assert items[sealed]["ref"]["segments"] > 0  # the segment entries summed into it
    assert items[sent]["custody_index"] is not None and items[sent]["source"] == "custody"
    assert items[consent_signed]["label"] == "文书签名"
    assert made["english"]["items"][consent_signed]["label"] == "document signed"
    assert any(k.startswith("deadline.") for k in kinds)  # the review window of the delivery

    # the package, written by the command line next to nobody: no server runs now
    package = tmp_path / "卷宗"
    exported = cli(tmp_path, "case", "export", str(made["case"]), "--out", str(package))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "卷宗已导出" in exported.stdout
    key = tmp_path / "keys" / "custody-ed25519.pub.pem"
    verified = cli(tmp_path, "case", "verify", str(package), "--public-key", str(key))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "卷宗核验通过" in verified.stdout
    docs = sorted(p.name for p in (package / "documents").iterdir())
    assert len(docs) == 2 and "delivery_consent" in docs[0], docs
    assert "determination_ordinary" in docs[1], docs
    assert len(list((package / "materials").iterdir())) == 1
    assert (package / "recordings" / made["recording"] / "package.json").is_file()
    text = (package / "timeline.txt").read_text(encoding="utf-8")
    assert "文书签名" in text and "电子送达" in text and "收到材料" in text

    # one byte changed in a file of every sort, in turn, is named (every file of the case
    # file itself; of a recording's package its package.json, manifest and a media file, which
    # its own verification covers file by file); the package verifies again after
    publics = [load_public_key(key.read_bytes())]
    recording = package / "recordings" / made["recording"]
    every = sorted(p for p in package.rglob("*") if p.is_file() and recording not in p.parents)
    every += [recording / "package.json", recording / "manifest.json"]
    every += sorted((recording / "media").iterdir())[:1]
    assert len(every) >= 14, every
    for path in every:
        rel = path.relative_to(package).as_posix()
        original = path.read_bytes()
        flipped = bytearray(original)
        flipped[len(original) // 2] ^= 0x01
        path.write_bytes(bytes(flipped))
        try:
            found = failures(verify_case_package(package, publics))
        finally:
            path.write_bytes(original)
        assert rel in found, (rel, found)
    assert failures(verify_case_package(package, publics)) == ""

    # through the command line: a changed byte, a missing file, an extra file, each named
    pdf = package / "documents" / docs[0]
    original = pdf.read_bytes()
    pdf.write_bytes(original[:100] + bytes([original[100] ^ 0x01]) + original[101:])
    (package / "timeline.txt").rename(tmp_path / "timeline.txt")
    (package / "materials" / "extra.jpg").write_bytes(b"not in the manifest")
    broken = cli(tmp_path, "case", "verify", str(package), "--public-key", str(key))
    assert broken.returncode == 1, broken.stdout
    assert f"changed: documents/{docs[0]}" in broken.stdout
    assert "missing: timeline.txt" in broken.stdout
    assert "extra file: materials/extra.jpg" in broken.stdout
    assert "卷宗核验未通过" in broken.stdout
    # no key: told to pass one (verification never picks a key by itself)
    told = cli(tmp_path, "case", "verify", str(package))
    assert told.returncode == 2 and "--public-key" in told.stderr
