"""`remotecase serve --host/--port/--config` as a process: the flags override the file and the
environment, are checked as the file is, and the help and the refusals are Chinese first."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from bench.forwarding import free_port, wait_healthy


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


async def _run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "control.cli",
        *args,
        env=_environ(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_port_and_host_flags_override_the_config_file(tmp_path: Path) -> None:
    file_port, flag_port = free_port(), free_port()
    config = tmp_path / "remotecase.toml"
    config.write_text(f'[server]\nhost = "127.0.0.2"\nport = {file_port}\n')
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "control.cli",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(flag_port),
            env=_environ(tmp_path),
            stdout=log,
            stderr=log,
        )
    try:
        async with aiohttp.ClientSession() as http:
            await wait_healthy(http, f"http://127.0.0.1:{flag_port}/healthz")
            # the file's port is not where it listens
            try:
                async with http.get(f"http://127.0.0.1:{file_port}/healthz") as r:
                    raise AssertionError(f"the file's port answered {r.status}")
            except aiohttp.ClientConnectionError:
                pass
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert f"127.0.0.1:{flag_port}" in log_path.read_text(encoding="utf-8")


async def test_bad_flags_are_refused_in_chinese_first(tmp_path: Path) -> None:
    status, _, err = await _run(tmp_path, "serve", "--port", "abc")
    assert status == 2
    assert err.startswith("remotecase：--port abc 不是端口号"), err
    assert "is not a TCP port" in err
    # validated as the file's value is
    status, _, err = await _run(tmp_path, "serve", "--port", "70000")
    assert status == 2 and "配置有误" in err and "server.port: 70000" in err, err
    status, _, err = await _run(tmp_path, "serve", "--config", str(tmp_path / "none.toml"))
    assert status == 2 and "配置有误" in err and "not found" in err, err
    # dev mode stays loopback only, with the host given as a flag too
    status, _, err = await _run(tmp_path, "serve", "--dev", "--host", "0.0.0.0")
    assert status == 2 and "配置有误" in err, err
    assert not (tmp_path / "var").exists()  # nothing was started


async def test_serve_help_is_chinese_first(tmp_path: Path) -> None:
    status, out, _ = await _run(tmp_path, "serve", "--help")
    assert status == 0
    assert out.startswith("用法 / usage: remotecase serve"), out
    for flag in ("--host", "--port", "--config", "--dev"):
        assert flag in out
    assert "选项 / options" in out and "显示本帮助并退出" in out
