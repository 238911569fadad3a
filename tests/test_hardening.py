"""Smaller holes (issue 11, item 7), each tried against a real server the way an attacker or a
careless client would: deep JSON, loose route IDs, odd export paths, missing security headers,
slow bodies, logins that lock owners out or tell names apart, client addresses behind the
front, plaintext exports, chatty media logs, cheap password hashes, racing migrations."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from control.app import create_app
from tests.conftest import (
    Api,
    Server,
    case_with_party,
    make_config,
    officer_login,
    start_server,
)
from tests.test_serve import _self_signed  # a TLS certificate for 127.0.0.1

DEEP = "[" * 30000


async def test_deep_json_is_a_clear_400_on_every_api(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        case_id, _ = await case_with_party(api, li)
        headers = {"Content-Type": "application/json"}
        for path, token in (
            ("/api/login", None),
            ("/api/invitations/redeem", None),
            ("/api/cases", li),
            (f"/api/cases/{case_id}/parties", li),
            (f"/api/cases/{case_id}/close", li),
        ):
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(
                server.base_url + path, data=DEEP, headers={**headers, **auth}
            ) as r:
                body = await r.json()
                assert r.status == 400, (path, r.status, body)
                assert body["error"] == "bad_json" and "32" in body["message"], body
        # nesting inside strings is only text; shallow nesting still parses
        status, case = await api.call(
            "POST", "/api/cases", li, {"kind": "accident", "title": "[[[[" * 40}
        )
        assert status == 201 and case["title"] == "[[[[" * 40


async def test_deep_json_on_the_sockets_answers_an_error_and_the_session_goes_on(
    server: Server,
) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        ws = await http.ws_connect(server.base_url + "/ws")
        await ws.send_str(DEEP)
        error = await ws.receive_json(timeout=10)
        assert error["type"] == "error" and error["code"] == "bad_json", error
        assert "32" in error["message"]
        await ws.send_str(json.dumps({"type": "ping", "id": 7}))  # the session still answers
        assert await ws.receive_json(timeout=10) == {"type": "pong", "id": 7}
        await ws.close()

        events = await http.ws_connect(server.base_url + "/api/events")
        await events.send_json({"type": "auth", "token": li})
        assert (await events.receive_json(timeout=10))["type"] == "ready"
        await events.send_str(DEEP[:3000])  # the stream takes messages of up to 4 KiB
        error = await events.receive_json(timeout=10)
        assert error["type"] == "error" and error["error"] == "bad_request", error
        await events.send_json({"type": "subscribe", "case": None})
        assert (await events.receive_json(timeout=10))["type"] == "subscribed"
        await events.close()

        # before authenticating: an error and a close with the auth code, not an abrupt end
        events = await http.ws_connect(server.base_url + "/api/events")
        await events.send_str(DEEP[:3000])
        error = await events.receive_json(timeout=10)
        assert error["type"] == "error" and error["error"] == "unauthorized"
        message = await events.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.CLOSE and events.close_code == 4001


async def test_route_ids_are_strict_integers(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        li = await officer_login(server, api)
        case_id, party_id = await case_with_party(api, li)
        status, invite = await api.call(
            "POST", f"/api/cases/{case_id}/invitations", li, {"party_id": party_id}
        )
        assert status == 201
        for loose in (
            f"{invite['id']}.0",
            f"+{invite['id']}",
            f"0{invite['id']}e0",
            "%C2%B9",
            "%D9%A1",
            "1" * 40,
        ):
            status, body = await api.call(
                "POST", f"/api/invitations/{loose}/revoke", li, {"reason": "test"}
            )
            assert status == 404, (loose, status, body)
        # the invitation was not revoked by any of them: it still redeems... once a session is
        # open; here it is enough that revoking it for real works once
        status, body = await api.call(
            "POST", f"/api/invitations/{invite['id']}/revoke", li, {"reason": "test"}
        )
        assert (status, body) == (200, {"revoked": invite["id"]})
        _, audit = await api.call("GET", f"/api/cases/{case_id}/audit", li)
        assert [e["action"] for e in audit["audit"]].count("invitation.revoked") == 1
        # unicode digits in other IDs: 404, not 500
        for loose in ("%C2%B9", "%D9%A1", "1.0"):
            status, _ = await api.call("GET", f"/api/cases/{loose}", li)
            assert status == 404, loose
            status, _ = await api.call(
                "POST", f"/api/cases/{case_id}/sessions/{loose}/end", li, {"reason": "x"}
            )
            assert status == 404, loose


def _check_headers(headers: Any, *, tls: bool) -> None:
    csp = headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Server"] == "remotecase"  # no versions
    assert ("Strict-Transport-Security" in headers) == tls


async def test_security_headers_on_every_answer_and_hsts_under_tls(tmp_path: Path) -> None:
    import ssl

    from control.http.webguard import inline_hashes

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = create_app(make_config(tmp_path))
    runner = web.AppRunner(app)
    await runner.setup()
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    secure = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await plain.start()
    await secure.start()
    try:
        ports = [address[1] for address in runner.addresses]
        bases = [(f"http://127.0.0.1:{ports[0]}", False), (f"https://127.0.0.1:{ports[1]}", True)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            for base, tls in bases:
                for method, path in (
                    ("GET", "/"),
                    ("GET", "/console"),
                    ("GET", "/api/docs"),
                    ("GET", "/static/client.js"),
                    ("GET", "/healthz"),
                    ("GET", "/no/such/page"),
                    ("POST", "/api/login"),
                    ("GET", "/api/cases"),
                ):
                    async with http.request(method, base + path) as r:
                        _check_headers(r.headers, tls=tls)
                ws = await http.ws_connect(base + "/ws")
                await ws.close()
            # every inline block of the pages is allowed by its hash, and nothing else inline
            async with http.get(bases[0][0] + "/") as r:
                csp = r.headers["Content-Security-Policy"]
            for source in inline_hashes()["script"] + inline_hashes()["style"]:
                assert source in csp
            assert inline_hashes()["style"], "the pages' <style> blocks are hashed"
        # what aiohttp answers itself, to a request it cannot parse, names no versions either
        reader, writer = await asyncio.open_connection("127.0.0.1", ports[0])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
        head = (await reader.read(4096)).split(b"\r\n\r\n")[0]
        writer.close()
        assert head.startswith(b"HTTP/1.0 400") and b"\r\nServer: remotecase" in head, head
    finally:
        await runner.cleanup()


async def _raw_request(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    await writer.drain()
    return reader, writer


async def _trickled_answer(port: int) -> bytes:
    """What a server answers to a body sent a byte every half second."""
    reader, writer = await _raw_request(
        port,
        (
            b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        ),
    )

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for _ in range(60):
                await asyncio.sleep(0.5)
                writer.write(b" ")
                await writer.drain()

    trickler = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(20):
            return await reader.read()  # the server answers, then closes
    finally:
        trickler.cancel()
        await asyncio.gather(trickler, return_exceptions=True)
        writer.close()


async def test_the_pages_scripts_are_asked_again_at_every_load(server: Server) -> None:
    """A browser never runs a script it cached against a newer server: everything under
    /static/ (scripts, styles, catalogs) is ``no-cache`` with an ETag, so each load asks
    again and gets a 304 while the file is the same, the new file once it changed; the pages
    themselves are not stored at all."""
    from control.http.webguard import WEB_DIR

    async with aiohttp.ClientSession() as http:
        for name in ("education-desk.js", "base.css", "i18n/zh-CN/common.json"):
            url = f"{server.base_url}/static/{name}"
            async with http.get(url) as r:
                assert r.status == 200, name
                assert r.headers["Cache-Control"] == "no-cache", (name, r.headers)
                etag = r.headers["ETag"]
                assert await r.read() == (WEB_DIR / name).read_bytes()
            # the same file: 304, nothing sent again, still to be asked again next time
            async with http.get(url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304, name
                assert r.headers["Cache-Control"] == "no-cache"
                assert await r.read() == b""
            # what a browser holds from before an upgrade: another ETag, so the file itself
            async with http.get(url, headers={"If-None-Match": '"1a2b-3c"'}) as r:
                assert r.status == 200, name
                assert await r.read() == (WEB_DIR / name).read_bytes()
        async with http.get(f"{server.base_url}/static/no-such.js") as r:
            assert r.status == 404
        for page in ("/", "/console"):
            async with http.get(server.base_url + page) as r:
                assert r.status == 200 and r.headers["Cache-Control"] == "no-store", page


async def test_a_trickling_body_is_answered_408_and_a_slow_moving_one_goes_on(
    tmp_path: Path,
) -> None:
    server = await start_server(make_config(tmp_path, server={"body_timeout": 1.0}))
    try:
        port = int(server.base_url.rsplit(":", 1)[1])
        answer = await _trickled_answer(port)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"body_timeout"' in answer

        # a body that keeps moving (well above 8 KiB/s) is not cut at the timeout
        body = json.dumps({"username": "nobody", "password": "x" * 10}).encode()
        body = body[:-1] + b" " * 40000 + b"}"
        reader, writer = await _raw_request(
            port,
            (
                b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
            ),
        )
        for offset in range(0, len(body), 2500):
            writer.write(body[offset : offset + 2500])
            await writer.drain()
            await asyncio.sleep(0.1)
        async with asyncio.timeout(20):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    finally:
        await server.runner.cleanup()


def _from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from another loopback address (127.0.0.0/8)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def _login(
    http: aiohttp.ClientSession, base: str, username: str, password: str
) -> tuple[int, Any, str | None]:
    async with http.post(
        base + "/api/login", json={"username": username, "password": password}
    ) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


async def test_wrong_passwords_slow_down_but_never_lock_out_the_owner(server: Server) -> None:
    from control.appkeys import LOGIN_ADDRESS_LIMIT, LOGIN_LIMIT
    from tests.conftest import PASSWORD

    base = server.base_url
    # the first delay long enough that no busy machine lets it pass between two requests
    server.app[LOGIN_LIMIT].base = server.app[LOGIN_ADDRESS_LIMIT].base = 3.0
    async with aiohttp.ClientSession() as http:
        await officer_login(server, Api(http, base))
    async with (
        _from("127.0.0.2") as attacker,
        _from("127.0.0.3") as owner,
        _from("127.0.0.4") as sprayer,
    ):
        for _ in range(5):  # free
            status, body, _ = await _login(attacker, base, "li", "wrong password!")
            assert (status, body["error"]) == (401, "bad_credentials")
        status, body, retry = await _login(attacker, base, "li", "wrong password!")
        assert (status, body["error"]) == (429, "rate_limited") and retry is not None
        assert 1 <= int(retry) <= 60 and "秒后再试" in body["message"]
        # the owner, from elsewhere, waits at most that long, then gets in
        status, body, retry = await _login(owner, base, "li", PASSWORD)
        if status == 429:
            assert retry is not None and int(retry) <= 60
            await asyncio.sleep(int(retry))
            status, body, _ = await _login(owner, base, "li", PASSWORD)
        assert status == 200, body
        # one address guessing over many names is slowed by its address
        for n in range(10):
            status, _, _ = await _login(sprayer, base, f"user{n}", "guess guess")
            assert status == 401
        status, body, retry = await _login(sprayer, base, "user99", "guess guess")
        assert status == 429 and retry is not None
        status, _, _ = await _login(owner, base, "li", PASSWORD)  # the owner is not
        assert status == 200


def test_throttle_delays_grow_and_are_capped() -> None:
    from control.auth import Throttle

    throttle = Throttle(free=2, base=1.0, cap=60.0)
    assert [throttle.delay(n) for n in range(10)] == [0, 0, 1, 2, 4, 8, 16, 32, 60, 60]
    throttle.fail("k")
    throttle.fail("k")
    assert throttle.wait("k") > 0 and throttle.wait("other") == 0
    throttle.refund("k")
    assert throttle.wait("k") == 0
    many = Throttle(max_keys=3)
    for n in range(10):
        many.fail(f"name{n}")
    assert len(many._keys) == 3  # a flood of names does not fill memory


@pytest.mark.production_scrypt
async def test_unknown_and_known_names_cost_one_check_each_at_todays_cost(
    server: Server, monkeypatch: Any
) -> None:
    import control.auth as auth

    costs: list[int] = []
    real = auth._scrypt

    def counting(password: str, salt: bytes, cost: dict[str, int]) -> bytes:
        costs.append(cost["n"])
        return real(password, salt, cost)

    async with aiohttp.ClientSession() as http:
        await officer_login(server, Api(http, server.base_url))
        monkeypatch.setattr(auth, "_scrypt", counting)
        for name in ("li", "nobody-by-this-name"):
            costs.clear()
            status, _, _ = await _login(http, server.base_url, name, "not the password")
            assert status == 401
            assert costs == [1 << 17], (name, costs)


@pytest.mark.production_scrypt
async def test_an_account_at_an_older_cost_is_rehashed_at_its_next_login(server: Server) -> None:
    import base64
    import hashlib

    from control.appkeys import DB
    from control.auth import check_password, needs_rehash
    from tests.conftest import PASSWORD

    salt = b"0123456789abcdef"
    legacy = (
        "scrypt$"
        + base64.b64encode(salt).decode()
        + "$"
        + base64.b64encode(
            hashlib.scrypt(PASSWORD.encode(), salt=salt, n=1 << 14, r=8, p=1, dklen=32)
        ).decode()
    )
    assert needs_rehash(legacy)
    await server.app[DB].run(
        lambda c: c.execute(
            "INSERT INTO officers (username, password_hash, role, brigade, created_at) "
            "VALUES ('old', ?, 'officer', 'b1', 'then')",
            (legacy,),
        )
    )

    def stored() -> str:
        return str(
            server.app[DB].run_sync(
                lambda c: c.execute(
                    "SELECT password_hash FROM officers WHERE username = 'old'"
                ).fetchone()[0]
            )
        )

    async with aiohttp.ClientSession() as http:
        status, _, _ = await _login(http, server.base_url, "old", "a wrong password")
        assert status == 401
        assert await asyncio.to_thread(stored) == legacy  # a failure changes nothing
        status, _, _ = await _login(http, server.base_url, "old", PASSWORD)
        assert status == 200
        now = await asyncio.to_thread(stored)
        assert now.startswith("scrypt$ln=17,r=8,p=1$") and not needs_rehash(now)
        assert await asyncio.to_thread(check_password, PASSWORD, now)
        status, _, _ = await _login(http, server.base_url, "old", PASSWORD)
        assert status == 200


def _failed_login_actors(data_dir: Path) -> list[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "control.sqlite3")) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT actor FROM audit WHERE action = 'login.failed' ORDER BY id"
            )
        ]


async def test_a_worker_believes_a_client_address_only_with_the_fronts_hmac(tmp_path: Path) -> None:
    from control.http.webguard import CLIENT_AUTH_HEADER, CLIENT_HEADER, forwarding_headers

    secret = "front-" + "ab" * 32
    server = await start_server(make_config(tmp_path, server={"front_secret": secret}))
    try:
        async with aiohttp.ClientSession() as http:
            for headers in (
                forwarding_headers(secret, "203.0.113.7"),  # the front's
                {CLIENT_HEADER: "203.0.113.8", CLIENT_AUTH_HEADER: "0" * 64},
                {CLIENT_HEADER: "203.0.113.9"},
                {"X-Forwarded-For": "203.0.113.10"},
                forwarding_headers("another secret", "203.0.113.11"),
            ):
                async with http.post(
                    server.base_url + "/api/login",
                    headers=headers,
                    json={"username": "x", "password": "y"},
                ) as r:
                    assert r.status == 401
        assert (
            _failed_login_actors(tmp_path / "var")
            == ["anonymous@203.0.113.7"] + ["anonymous@127.0.0.1"] * 4
        )
    finally:
        await server.runner.cleanup()
    # without a secret (one process, no front) no header is believed
    server = await start_server(make_config(tmp_path / "single"))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                server.base_url + "/api/login",
                headers=forwarding_headers("", "203.0.113.12"),
                json={"username": "x", "password": "y"},
            ) as r:
                assert r.status == 401
        assert _failed_login_actors(tmp_path / "single" / "var") == ["anonymous@127.0.0.1"]
    finally:
        await server.runner.cleanup()


async def test_behind_the_front_limits_are_per_client_address(tmp_path: Path) -> None:
    from control.http.webguard import CLIENT_AUTH_HEADER, CLIENT_HEADER
    from tests.conftest import PASSWORD, serve_process

    async with serve_process(
        tmp_path,
        SERVER__WORKERS="2",
        VERIFIER__ENABLED="false",
        AUTH__LOGIN_DELAY="20",
        SERVER__BODY_TIMEOUT="2",
    ) as server:
        async with _from("127.0.0.2") as attacker, _from("127.0.0.3") as owner:
            for n in range(10):  # an address's free failures, over names that do not exist
                status, _, _ = await _login(attacker, server.base, f"user{n}", "guess guess")
                assert status == 401
            status, body, retry = await _login(attacker, server.base, "li", "guess guess")
            assert status == 429 and retry is not None, body
            # headers claiming another address are the client's own and do not help
            for headers in (
                {CLIENT_HEADER: "127.0.0.7", CLIENT_AUTH_HEADER: "0" * 64},
                {"X-Forwarded-For": "127.0.0.8"},
            ):
                async with attacker.post(
                    server.base + "/api/login",
                    headers=headers,
                    json={"username": "li", "password": "x"},
                ) as r:
                    assert r.status == 429
            # before, every client reached worker 0 as 127.0.0.1, and the owner was shut out
            status, body, _ = await _login(owner, server.base, "li", PASSWORD)
            assert status == 200, body
            # the signalling socket is piped with the address too (a worker answers it)
            ws = await owner.ws_connect(server.base.replace("http", "ws") + "/ws")
            await ws.send_json({"type": "ping", "id": 1})
            assert await ws.receive_json(timeout=10) == {"type": "pong", "id": 1}
            await ws.close()
        # the front holds bodies to the same deadline, and says so cleanly
        answer = await _trickled_answer(int(server.base.rsplit(":", 1)[1]))
        assert answer.startswith(b"HTTP/1.1 408") and b'"body_timeout"' in answer, answer[:300]
        assert "Traceback" not in server.log_text, server.log_text[-3000:]
    actors = _failed_login_actors(tmp_path / "var")
    assert actors == ["anonymous@127.0.0.2"] * 10, actors


async def test_exports_stay_encrypted_download_whole_and_go_with_the_media(tmp_path: Path) -> None:
    import datetime
    import hashlib
    import os
    import stat

    from bench.peer import PatternVideoTrack, PeerClient, ToneAudioTrack
    from control.appkeys import RECORDER
    from tests.conftest import party_link, wait_until

    server = await start_server(
        make_config(tmp_path, recording={"segment_seconds": 1.0}, verifier={"enabled": False})
    )
    driver = None
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            li = await officer_login(server, api, "li", "brigade-1")
            zhao = await officer_login(server, api, "zhao", "hq", role="supervisor")
            cid, pid = await case_with_party(api, li)
            _, session = await api.call("POST", f"/api/cases/{cid}/sessions", li)
            redeemed = await party_link(api, li, cid, pid)
            driver = PeerClient(server.base_url, redeemed["token"])
            await driver.connect()
            await driver.publish(PatternVideoTrack(fps=15), ToneAudioTrack())
            recorder = server.app[RECORDER]
            await wait_until(lambda: session["room"] in recorder.active, what="recording")
            recording_id = recorder.active[session["room"]].recording_id
            await asyncio.sleep(2.5)
            status, _ = await api.call(
                "POST", f"/api/cases/{cid}/sessions/{session['id']}/end", li, {"reason": "done"}
            )
            assert status == 200
            supervisor = {"Authorization": f"Bearer {zhao}"}
            rec = f"{server.base_url}/api/recordings/{recording_id}"
            async with http.post(
                f"{rec}/export", json={"reason": "court"}, headers=supervisor
            ) as r:
                assert r.status == 200, await r.text()
                exported = await r.json()

            # nothing decrypted stays on the disk: not in the export, not in a temporary place
            data_dir = tmp_path / "var"
            out = data_dir / "recordings" / recording_id / "exports" / exported["export"]
            assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json"]
            for path in out.rglob("*"):
                mode = stat.S_IMODE(path.stat().st_mode)
                assert mode & 0o077 == 0, (path, oct(mode))
            assert list((data_dir / "tmp").iterdir()) == []
            media = [name for name in exported["files"] if name.startswith("media/")]
            downloaded = {}
            for name in ["package.json", "REPORT.txt", "composite.mp4", *media]:
                async with http.get(
                    f"{rec}/exports/{exported['export']}/{name}",
                    params={"reason": "to the court"},
                    headers=supervisor,
                ) as r:
                    assert r.status == 200, (name, r.status)
                    assert r.headers["Cache-Control"] == "no-store"
                    downloaded[name] = await r.read()
                    assert int(r.headers["Content-Length"]) == len(downloaded[name])
            package = json.loads(downloaded["package.json"])
            for name, digest in package["files"].items():
                if name in downloaded:
                    assert hashlib.sha256(downloaded[name]).hexdigest() == digest, name
            stored = b"".join(p.read_bytes() for p in (out / "blobs").iterdir())
            assert downloaded["REPORT.txt"][:40] not in stored  # not there in plain
            assert downloaded["composite.mp4"][1000:1064] not in stored

            # odd paths: 404, never 500
            for path in (
                "%00",
                "REPORT.txt%00",
                "..%2F..%2Frecording.json",
                "blobs/0",
                "index.json",
                "%2Fetc%2Fpasswd",
            ):
                async with http.get(
                    f"{rec}/exports/{exported['export']}/{path}",
                    params={"reason": "x"},
                    headers=supervisor,
                ) as r:
                    assert r.status == 404, (path, r.status)

            # an altered chunk is never served
            blob = (
                out
                / "blobs"
                / str(json.loads((out / "index.json").read_bytes())["files"]["REPORT.txt"]["blob"])
            )
            original = blob.read_bytes()
            blob.write_bytes(original[:10] + bytes([original[10] ^ 1]) + original[11:])
            async with http.get(
                f"{rec}/exports/{exported['export']}/REPORT.txt",
                params={"reason": "x"},
                headers=supervisor,
            ) as r:
                try:
                    body = await r.read()
                except aiohttp.ClientPayloadError:
                    body = b""
                assert len(body) < int(r.headers["Content-Length"])
            blob.write_bytes(original)

            # deleting the media deletes the exports too
            yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
            async with http.post(
                f"{rec}/retention",
                json={"retain_until": yesterday, "reason": "over"},
                headers=supervisor,
            ) as r:
                assert r.status == 200
            async with http.delete(
                rec, params={"reason": "retention ended"}, headers=supervisor
            ) as r:
                assert r.status == 200, await r.text()
            assert not (data_dir / "recordings" / recording_id / "exports").exists()
            async with http.get(
                f"{rec}/exports/{exported['export']}/REPORT.txt",
                params={"reason": "x"},
                headers=supervisor,
            ) as r:
                assert r.status == 404
            assert not os.listdir(data_dir / "tmp")
    finally:
        if driver is not None:
            await driver.close()
        await server.runner.cleanup()


def test_a_build_left_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from control.recordings.sealed_exports import build_dir, clear_stale_builds

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"build-{int(dead.stdout)}-00"
    stale.mkdir()
    (stale / "media.webm").write_bytes(b"decrypted")
    mine = build_dir(tmp_path)
    assert clear_stale_builds(tmp_path) == [stale.name]
    assert not stale.exists() and mine.exists()  # a build of a live process stays


def test_processes_opening_a_fresh_database_at_once_migrate_it_once(tmp_path: Path) -> None:
    import os
    import sqlite3
    import subprocess
    import sys
    import time

    from control.db import MIGRATIONS

    go = tmp_path / "go"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from control.db import Database\n"
        "go = Path(sys.argv[1])\n"
        "while not go.exists():\n"
        "    time.sleep(0.001)\n"
        "db = Database(Path(sys.argv[2]))\n"
        "db.run_sync(lambda c: c.execute('SELECT COUNT(*) FROM officers').fetchone())\n"
        "db.close_sync()\n"
    )
    for attempt in range(3):  # three fresh databases, four processes each
        path = tmp_path / f"control-{attempt}.sqlite3"
        go.unlink(missing_ok=True)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(go), str(path)],
                env={**os.environ, "PYTHONPATH": str(Path.cwd())},
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        time.sleep(1.0)  # every process imported and waiting
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        with contextlib.closing(sqlite3.connect(path)) as conn:
            versions = [
                row[0]
                for row in conn.execute("SELECT version FROM schema_version ORDER BY version")
            ]
        assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_media_libraries_log_nothing_at_info_and_plain_http_beyond_loopback_warns(
    tmp_path: Path, caplog: Any
) -> None:
    import logging

    from bench.peer import PatternVideoTrack, PeerClient
    from tests.conftest import serve_process

    async with serve_process(tmp_path, LOG__LEVEL="INFO", VERIFIER__ENABLED="false") as server:
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base)
            li = await api.login("li")
            case_id, _ = await case_with_party(api, li)
            _, session = await api.call("POST", f"/api/cases/{case_id}/sessions", li)
            officer = PeerClient(server.base, session["token"])
            try:
                await officer.connect()
                await officer.publish(PatternVideoTrack())
                await asyncio.sleep(1.0)
            finally:
                await officer.close()
        log = server.log_text
    assert " INFO mediaserver." in log  # INFO is on
    assert " aioice" not in log and " aiortc" not in log, log[-3000:]

    # a bind beyond loopback without TLS says so (the test still listens on 127.0.0.1)
    config = make_config(
        tmp_path / "exposed",
        server={"host": "0.0.0.0"},
        auth={"dev_join": False},
        verifier={"enabled": False},
    )
    assert config.server.plain_http_exposed()
    with caplog.at_level(logging.WARNING, logger="control.app"):
        exposed = await start_server(config)
        await exposed.runner.cleanup()
    assert any(
        "0.0.0.0" in r.getMessage() and "TLS" in r.getMessage() and "明文" in r.getMessage()
        for r in caplog.records
    )
    assert not make_config(tmp_path / "local").server.plain_http_exposed()


async def test_invalid_invitations_slow_their_address_only(server: Server) -> None:
    from control.appkeys import REDEEM_LIMIT
    from tests.conftest import CONSENT

    server.app[REDEEM_LIMIT].base = 3.0  # longer than any gap between two requests here
    base = server.base_url
    async with aiohttp.ClientSession() as http:
        api = Api(http, base)
        li = await officer_login(server, api)
        case_id, party_id = await case_with_party(api, li)
        await api.call("POST", f"/api/cases/{case_id}/sessions", li)
        _, invite = await api.call(
            "POST", f"/api/cases/{case_id}/invitations", li, {"party_id": party_id}
        )
    async with _from("127.0.0.2") as guesser, _from("127.0.0.3") as party:
        for n in range(20):
            async with guesser.post(
                base + "/api/invitations/redeem",
                json={"token": f"guessed-token-{n:04d}", "consent": CONSENT},
            ) as r:
                assert r.status == 404
        async with guesser.post(
            base + "/api/invitations/redeem", json={"token": invite["token"], "consent": CONSENT}
        ) as r:
            body = await r.json()
            assert r.status == 429 and "Retry-After" in r.headers, body
            assert body["message"].startswith("此地址的无效邀请过多")
        async with party.post(
            base + "/api/invitations/redeem", json={"token": invite["token"], "consent": CONSENT}
        ) as r:
            assert r.status == 200, await r.text()
