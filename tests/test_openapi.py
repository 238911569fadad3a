"""The OpenAPI description: complete, served, and fuzzed against a live server (no 5xx)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from pathlib import Path

import aiohttp
import pytest

from control.app import SPEC, create_app
from tests.conftest import PASSWORD, make_config, serve_process

# pages and static files are not API operations
_NOT_API = {"/", "/static"}


def _routes() -> set[tuple[str, str]]:
    app = create_app(make_config(Path("/nonexistent")))
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        if route.method == "HEAD" or path in _NOT_API:
            continue
        out.add((route.method.lower(), re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)))
    return out


def test_every_route_is_described_and_nothing_else() -> None:
    described = {
        (method, path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert _routes() == described
    for path, item in SPEC["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                if status.startswith("4"):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"
                    }, (method, path, status)
            names = {
                p["name"]
                for p in item.get("parameters", []) + op.get("parameters", [])
                if p["in"] == "path"
            }
            assert names == set(re.findall(r"\{(\w+)\}", path)), (method, path)


@pytest.mark.timeout(600)  # as long as the fuzzer's own limit below: two cores, shared
async def test_schema_fuzzing_finds_no_server_error(tmp_path: Path) -> None:
    """schemathesis against ``remotecase serve`` with an officer's login: every answer 4xx or
    success, never 5xx; a case, a party and a session exist so that IDs hit real objects."""
    async with serve_process(tmp_path) as server, aiohttp.ClientSession() as http:
        base = server.base
        async with http.post(
            f"{base}/api/login", json={"username": "li", "password": PASSWORD}
        ) as r:
            token = (await r.json())["token"]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(
            f"{base}/api/cases", headers=headers, json={"kind": "accident", "title": "fuzz"}
        ) as r:
            case = await r.json()
        async with http.post(
            f"{base}/api/cases/{case['id']}/parties",
            headers=headers,
            json={"role": "driver", "name": "x"},
        ) as r:
            party = await r.json()
        async with http.post(
            f"{base}/api/cases/{case['id']}/invitations",
            headers=headers,
            json={"party_id": party["id"]},
        ) as r:
            link = (await r.json())["token"]
        st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert st, "schemathesis is in the dev extra"
        # as the officer everywhere (logging out would end the fuzzer's login half-way), then
        # as the party on its own endpoints
        for credential, selection, minimum in (
            (token, ["--exclude-path", "/api/logout"], 1000),
            (link, ["--include-path-regex", "^/api/party"], 100),
        ):
            proc = await asyncio.create_subprocess_exec(
                st,
                "run",
                f"{base}/api/openapi.json",
                "--checks",
                "not_a_server_error",
                "-H",
                f"Authorization: Bearer {credential}",
                "--max-examples",
                "25",
                "--seed",
                "7",
                "--phases",
                "examples,coverage,fuzzing",
                "--no-color",
                "--generation-database",
                "none",
                *selection,
                # one worker: threads running ast.parse hit a CPython 3.11 bug
                # ("AST constructor recursion depth mismatch") inside schemathesis
                "--workers",
                "1",
                cwd=tmp_path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 600)
            text = out.decode(errors="replace")
            assert proc.returncode == 0, text[-6000:]
            summary = re.search(r"(\d+) generated, (\d+) passed", text)
            assert summary and int(summary.group(1)) >= minimum, text[-3000:]
            assert summary.group(1) == summary.group(2), text[-3000:]
    assert "Traceback" not in server.log_text, server.log_text[-4000:]
    # the description is served as it is built
    assert json.loads(json.dumps(SPEC))["openapi"].startswith("3.")
