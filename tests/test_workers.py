"""Two worker processes behind one port: rooms placed by case, and everything still works.

``remotecase serve`` with ``server.workers = 2`` as a subprocess; officers and parties use the
one public port only. Two cases land on different workers; both calls carry media, the event
stream merges both workers, ending the sessions seals both recordings, and the recordings and
their custody verify through the front.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp

from bench.peer import PatternVideoTrack, PeerClient
from tests.conftest import CONSENT, Api, serve_process, wait_until


async def test_two_workers_place_rooms_by_case_and_share_the_rest(tmp_path: Path) -> None:
    async with serve_process(
        tmp_path, SERVER__WORKERS="2", RECORDING__SEGMENT_SECONDS="1.0", VERIFIER__ENABLED="false"
    ) as server:
        base = server.base
        clients: list[PeerClient] = []
        try:
            async with aiohttp.ClientSession() as http:
                api = Api(http, base)
                li = await api.login("li")
                events = await http.ws_connect(base.replace("http", "ws") + "/api/events")
                await events.send_json({"type": "auth", "token": li})
                assert (await events.receive_json())["type"] == "ready"

                calls: list[dict[str, Any]] = []
                for n in range(2):  # case 1 on worker 1, case 2 on worker 0
                    _, case = await api.call(
                        "POST", "/api/cases", li, {"kind": "accident", "title": f"case {n}"}
                    )
                    _, party = await api.call(
                        "POST",
                        f"/api/cases/{case['id']}/parties",
                        li,
                        {"role": "driver", "name": f"party {n}"},
                    )
                    status, session = await api.call(
                        "POST", f"/api/cases/{case['id']}/sessions", li
                    )
                    assert status == 201
                    _, invite = await api.call(
                        "POST",
                        f"/api/cases/{case['id']}/invitations",
                        li,
                        {"party_id": party["id"]},
                    )
                    _, redeemed = await api.call(
                        "POST",
                        "/api/invitations/redeem",
                        json={"token": invite["token"], "consent": CONSENT},
                    )
                    officer = PeerClient(base, session["token"])
                    driver = PeerClient(base, redeemed["token"], decode=False)
                    clients += [officer, driver]
                    await officer.connect()
                    await driver.connect()
                    await driver.publish(PatternVideoTrack())
                    calls.append(
                        {
                            "case": case["id"],
                            "session": session,
                            "officer": officer,
                            "participant": redeemed["participant"],
                        }
                    )

                for call in calls:
                    officer, pid = call["officer"], call["participant"]

                    def offered(o: PeerClient = officer, p: str = pid) -> bool:
                        return o.mids_for_participant(p) != []

                    await wait_until(offered, timeout=20, what="the party's video offered")
                    (mid,) = officer.mids_for_participant(pid)

                    def decoded(o: PeerClient = officer, m: str = mid) -> bool:
                        return o.frame_counts[m] >= 5

                    await wait_until(decoded, timeout=20, what="frames decoded through the worker")
                async with http.get(f"{base}/healthz") as r:
                    health = await r.json()
                assert health["workers"] == 2 and health["rooms"] == 2
                assert health["dev_join"] is False  # the page reads it from the front too
                assert [w["rooms"] for w in health["per_worker"]] == [1, 1]
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
                assert "remotecase_workers 2" in metrics
                assert "remotecase_sfu_rooms 2.0" in metrics

                # the merged event stream heard both workers
                joined: set[str] = set()
                async with asyncio.timeout(15):
                    while len(joined) < 2:
                        event = await events.receive_json()
                        if event["type"] == "participant_joined" and event["role"] == "party":
                            joined.add(event["case"])
                assert joined == {c["case"] for c in calls}

                # a case's call actions run where its room is; sessions end, recordings seal
                for call in calls:
                    path = f"/api/cases/{call['case']}/sessions/{call['session']['id']}"
                    status, _ = await api.call("POST", path + "/lock", li, {"reason": "inquiry"})
                    assert status == 200
                    status, ended = await api.call("POST", path + "/end", li, {"reason": "done"})
                    assert status == 200 and ended["recording_sealed"], ended
                    call["recording"] = ended["recording_sealed"]
                status, listed = await api.call("GET", "/api/recordings", li)
                assert {r["recording_id"] for r in listed["recordings"]} == {
                    c["recording"] for c in calls
                }
                for call in calls:
                    status, verified = await api.call(
                        "GET", f"/api/recordings/{call['recording']}/verify?reason=check", li
                    )
                    assert status == 200 and verified["ok"], verified
                await events.close()
        finally:
            for client in clients:
                await client.close()
    assert server.proc.returncode == 0, server.log_text[-3000:]
    assert "Traceback" not in server.log_text, server.log_text[-3000:]


def _worker_pid(supervisor: int, index: int) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor and f"REMOTECASE_WORKER_INDEX={index}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker {index} under {supervisor}")


async def test_a_worker_killed_mid_call_comes_back_and_seals_its_recording(tmp_path: Path) -> None:
    async with serve_process(
        tmp_path, SERVER__WORKERS="2", RECORDING__SEGMENT_SECONDS="1.0", VERIFIER__ENABLED="false"
    ) as server:
        base = server.base
        clients: list[PeerClient] = []

        async def healthy(http: aiohttp.ClientSession) -> bool:
            try:
                async with http.get(f"{base}/healthz") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        try:
            async with aiohttp.ClientSession() as http:
                api = Api(http, base)
                li = await api.login("li")
                _, case = await api.call(
                    "POST", "/api/cases", li, {"kind": "accident", "title": "t"}
                )
                cid = case["id"]
                _, party = await api.call(
                    "POST", f"/api/cases/{cid}/parties", li, {"role": "driver", "name": "p"}
                )
                _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
                _, invite = await api.call(
                    "POST", f"/api/cases/{cid}/invitations", li, {"party_id": party["id"]}
                )
                _, redeemed = await api.call(
                    "POST",
                    "/api/invitations/redeem",
                    json={"token": invite["token"], "consent": CONSENT},
                )
                driver = PeerClient(base, redeemed["token"], decode=False)
                clients.append(driver)
                await driver.connect()
                await driver.publish(PatternVideoTrack())

                async def recordings() -> list[dict[str, Any]]:
                    _, body = await api.call("GET", "/api/recordings", li)
                    return list(body["recordings"])

                for _ in range(100):
                    if (listed := await recordings()) and listed[0]["state"] == "recording":
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.5)  # a couple of segments
                os.kill(_worker_pid(server.proc.pid, cid % 2), signal.SIGKILL)

                # the worker comes back, seals what it was recording, and takes calls again
                for _ in range(300):
                    listed = await recordings()
                    if listed and listed[0]["state"] == "sealed" and await healthy(http):
                        break
                    await asyncio.sleep(0.1)
                (recording,) = listed
                assert recording["state"] == "sealed"
                status, verified = await api.call(
                    "GET", f"/api/recordings/{recording['recording_id']}/verify?reason=check", li
                )
                assert status == 200 and verified["ok"], verified
                status, manifest = await api.call(
                    "GET", f"/api/recordings/{recording['recording_id']}/manifest?reason=check", li
                )
                assert manifest["status"] == "incomplete" and "interrupted" in manifest["note"]
                # the session's room is gone with its worker: end it and open another
                path = f"/api/cases/{cid}/sessions/{session['id']}/end"
                assert (await api.call("POST", path, li, {"reason": "worker died"}))[0] == 200
                status, again = await api.call("POST", f"/api/cases/{cid}/sessions", li)
                assert status == 201
                officer = PeerClient(base, again["token"], decode=False)
                clients.append(officer)
                await officer.connect()
                assert officer.joined is not None and officer.joined["room"] == again["room"]
        finally:
            for client in clients:
                await client.close()
    assert server.proc.returncode == 0
    assert "starting it again" in server.log_text


async def test_more_than_a_hundred_long_lived_sockets_through_the_front(tmp_path: Path) -> None:
    """Every officer event stream (and every piped signalling socket) holds a connection from
    the front to each worker for its whole life. With aiohttp's default pool of 100 the front
    stopped answering past that: a load test with 279 participants timed out on /metrics."""
    async with serve_process(tmp_path, SERVER__WORKERS="2", VERIFIER__ENABLED="false") as server:
        base = server.base
        async with aiohttp.ClientSession() as http:
            token = await Api(http, base).login("li")
            streams = []
            try:
                for _ in range(55):  # 110 connections from the front to the workers
                    events = await http.ws_connect(base.replace("http", "ws") + "/api/events")
                    await events.send_json({"type": "auth", "token": token})
                    ready = await asyncio.wait_for(events.receive_json(), 10)
                    assert ready["type"] == "ready"
                    streams.append(events)
                async with asyncio.timeout(10):
                    async with http.get(f"{base}/metrics") as response:
                        assert response.status == 200
                        assert "remotecase_workers 2" in await response.text()
                    status, _ = await Api(http, base).call("GET", "/api/cases", token)
                    assert status == 200
            finally:
                for events in streams:
                    await events.close()
