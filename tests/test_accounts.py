"""Officer accounts (control/accounts): supervisors manage them, every change is audited, a
disabled officer's logins and event streams end; the first start's setup link is loopback
only, single use and expires; `remotecase officer list|disable` and the printed link."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import aiohttp

from bench.forwarding import free_port, wait_healthy
from control.accounts import store
from control.appkeys import DB
from control.auth import Officer
from control.http.webguard import forwarding_headers
from tests.conftest import PASSWORD, Api, Server, make_config, officer_login, start_server

NEW_PASSWORD = "another-password-42"


def _audit(conn: sqlite3.Connection, obj: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT actor, action FROM audit WHERE object = ? AND action LIKE 'officer.%' ORDER BY id",
        (obj,),
    ).fetchall()
    return [(r["actor"], r["action"]) for r in rows]


async def _events(http: aiohttp.ClientSession, base: str, token: str) -> Any:
    ws = await http.ws_connect(base.replace("http", "ws") + "/api/events")
    await ws.send_json({"type": "auth", "token": token})
    ready = await ws.receive_json(timeout=10)
    assert ready["type"] == "ready", ready
    return ws


async def test_supervisors_manage_officers_and_a_disabled_one_is_out(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        boss = await officer_login(server, api, "boss", role="supervisor")
        li = await officer_login(server, api, "li")

        status, body = await api.call("GET", "/api/officers", li)
        assert (status, body["detail"]) == (403, "supervisor_accounts"), body
        status, body = await api.call(
            "POST", "/api/officers", li, {"username": "x", "password": PASSWORD, "brigade": "b"}
        )
        assert status == 403

        new = {"username": "zhang", "password": PASSWORD, "brigade": "brigade-1", "reason": "r"}
        status, zhang = await api.call("POST", "/api/officers", boss, new)
        assert status == 201 and zhang["role"] == "officer" and not zhang["disabled"], zhang
        status, body = await api.call("POST", "/api/officers", boss, new)
        assert (status, body["error"]) == (409, "username_taken"), body
        status, body = await api.call("POST", "/api/officers", boss, {**new, "password": "short"})
        assert (status, body["field"]) == (400, "password"), body
        status, body = await api.call(
            "POST", "/api/officers", boss, {**new, "username": "a b"}, lang="en"
        )
        assert status == 400 and body["message"].startswith("username:"), body
        status, listing = await api.call("GET", "/api/officers", boss)
        assert [o["username"] for o in listing["officers"]] == ["boss", "li", "zhang"]
        assert all("password_hash" not in o for o in listing["officers"])

        token = await api.login("zhang")
        ws = await _events(http, server.base_url, token)
        status, _ = await api.call("GET", "/api/cases", token)
        assert status == 200

        # disabled: the login ends at once, the event stream closes, a new login is refused
        path = f"/api/officers/{zhang['id']}"
        status, body = await api.call("PATCH", path, boss, {"disabled": True})
        assert (status, body["field"]) == (400, "reason"), body
        status, changed = await api.call("PATCH", path, boss, {"disabled": True, "reason": "left"})
        assert status == 200 and changed["disabled"] is True, changed
        assert changed["logins_ended"] == 1 and changed["streams_ended"] == 1, changed
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
        await ws.close()
        status, body = await api.call("GET", "/api/cases", token)
        assert (status, body["detail"]) == (401, "login_invalid"), body
        status, body = await api.call(
            "POST", "/api/login", json={"username": "zhang", "password": PASSWORD}
        )
        assert (status, body["error"]) == (401, "bad_credentials"), body

        # enabled again, another role, a new password (the old one and its login end)
        status, changed = await api.call(
            "PATCH", path, boss, {"disabled": False, "role": "observer", "reason": "back"}
        )
        assert status == 200 and not changed["disabled"] and changed["role"] == "observer"
        token = await api.login("zhang")
        status, changed = await api.call(
            "PATCH", path, boss, {"password": NEW_PASSWORD, "reason": "forgot it"}
        )
        assert status == 200 and changed["logins_ended"] == 1, changed
        assert (await api.call("GET", "/api/cases", token))[0] == 401
        await api.login("zhang", NEW_PASSWORD)

        # nobody disables or demotes itself; an unknown account is 404
        me = next(o for o in listing["officers"] if o["username"] == "boss")
        status, body = await api.call(
            "PATCH", f"/api/officers/{me['id']}", boss, {"role": "officer", "reason": "r"}
        )
        assert (status, body["error"]) == (409, "self"), body
        status, body = await api.call(
            "PATCH", "/api/officers/999999", boss, {"disabled": True, "reason": "r"}
        )
        assert (status, body["detail"]) == (404, "no_officer"), body

        rows = await server.app[DB].run(lambda c: _audit(c, "officer:zhang"))
        assert rows == [
            ("supervisor:boss", "officer.created"),
            ("supervisor:boss", "officer.disabled"),
            ("supervisor:boss", "officer.enabled"),
            ("supervisor:boss", "officer.role_changed"),
            ("supervisor:boss", "officer.password_reset"),
        ], rows


async def test_the_last_enabled_supervisor_stays(server: Server) -> None:
    """Two supervisors disabling each other at once: the second, already disabled, cannot
    leave the installation without one."""
    async with aiohttp.ClientSession() as http:
        api = Api(http, server.base_url)
        await officer_login(server, api, "a", role="supervisor")
        await officer_login(server, api, "b", role="supervisor")
    db = server.app[DB]
    ids = await db.run(lambda c: {o["username"]: o["id"] for o in store.list_officers(c)})
    a = Officer(ids["a"], "a", "supervisor", "brigade-1")
    b = Officer(ids["b"], "b", "supervisor", "brigade-1")
    first = await db.run(lambda c: store.change_officer(c, a, ids["b"], disabled=True))
    assert isinstance(first, dict) and first["disabled"] is True
    second = await db.run(lambda c: store.change_officer(c, b, ids["a"], disabled=True))
    assert second is store.Refusal.LAST_SUPERVISOR


async def test_setup_link_is_loopback_only_single_use_and_expires(tmp_path: Path) -> None:
    secret = "front-" + "ab" * 32  # the front's secret: lets the test be a non-loopback client
    server = await start_server(make_config(tmp_path, server={"front_secret": secret}))
    db = server.app[DB]
    try:
        assert await db.run(lambda c: store.new_setup_link(c, "good-token", 600.0))
        assert await db.run(lambda c: store.new_setup_link(c, "old-token", -1.0))
        async with aiohttp.ClientSession() as http:
            api = Api(http, server.base_url)
            assert await api.call("GET", "/api/setup") == (200, {"needed": True})
            form = {"username": "chief", "password": PASSWORD, "brigade": "brigade-1"}
            outside = forwarding_headers(secret, "203.0.113.9")
            async with http.post(
                f"{server.base_url}/api/setup",
                json={**form, "token": "good-token"},
                headers=outside,
            ) as r:
                body = await r.json()
                assert (r.status, body["detail"]) == (403, "setup_loopback_only"), body
            async with http.get(f"{server.base_url}/api/setup", headers=outside) as r:
                assert r.status == 403
            for token in ("wrong", "old-token"):
                status, body = await api.call("POST", "/api/setup", json={**form, "token": token})
                assert (status, body["error"]) == (403, "setup_link_invalid"), body
            status, chief = await api.call(
                "POST", "/api/setup", json={**form, "token": "good-token"}
            )
            assert status == 201 and chief["role"] == "supervisor", chief
            await api.login("chief")
            # once an officer exists every link is dead, and no new one is made
            status, body = await api.call(
                "POST", "/api/setup", json={**form, "username": "two", "token": "good-token"}
            )
            assert (status, body["error"]) == (409, "setup_done"), body
            assert await api.call("GET", "/api/setup") == (200, {"needed": False})
            assert not await db.run(lambda c: store.new_setup_link(c, "later", 600.0))
            status, page = await api.call("GET", "/setup")
            assert status == 200 and b"setup.js" in page
        rows = await db.run(lambda c: _audit(c, "officer:chief"))
        assert rows == [("setup@127.0.0.1", "officer.created")], rows
    finally:
        await server.runner.cleanup()


def _environ(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path / "var"),
        "REMOTECASE_KEYS__DIR": str(tmp_path / "keys"),
        "REMOTECASE_MEDIA__HOST_ADDRESSES": '["127.0.0.1"]',
        "REMOTECASE_LOG__LEVEL": "WARNING",
        "REMOTECASE_VERIFIER__ENABLED": "false",
        "REMOTECASE_SERVER__WORKERS": "1",
    }


async def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        *args,
        env=_environ(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_first_start_prints_a_setup_link_and_the_cli_manages_officers(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "serve",
            "--port",
            str(port),
            env=_environ(tmp_path),
            stdout=log,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, f"{base}/healthz")
            text = log_path.read_text(encoding="utf-8")
            assert "首次启动" in text and "first start" in text, text
            assert text.index("首次启动") < text.index("first start")  # Chinese first
            assert "officer add --username" in text and "--role supervisor" in text
            link = next(w for w in text.split() if w.startswith(f"{base}/setup#t="))
            token = link.split("#t=", 1)[1]
            api = Api(http, base)
            form = {"username": "chief", "password": PASSWORD, "brigade": "b1", "token": token}
            status, chief = await api.call("POST", "/api/setup", json=form)
            assert status == 201, chief
            token = await api.login("chief")

            status, out = await _cli(tmp_path, "officer", "list")
            assert status == 0 and "chief" in out and "supervisor" in out, out
            assert out.index("编号") < out.index("username")
            status, out = await _cli(tmp_path, "officer", "disable", "chief")
            assert status == 0 and "已停用" in out and "1" in out, out
            assert (await api.call("GET", "/api/cases", token))[0] == 401
            status, out = await _cli(tmp_path, "officer", "list")
            assert "已停用" in out
            status, out = await _cli(tmp_path, "officer", "disable", "nobody")
            assert status == 1 and out.startswith("remotecase：没有民警 nobody"), out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
