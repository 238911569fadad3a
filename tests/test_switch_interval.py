"""The server sets how long a thread may keep the interpreter's lock while the event loop waits for
it (server.gil_switch_interval) for as long as it runs, and gives the process its own back."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp

from tests.conftest import make_config, start_server


async def test_the_app_sets_the_switch_interval_while_it_runs(tmp_path: Path) -> None:
    before = sys.getswitchinterval()
    wanted = 0.0007 if abs(before - 0.0007) > 1e-9 else 0.0009
    server = await start_server(make_config(tmp_path, server={"gil_switch_interval": wanted}))
    try:
        assert abs(sys.getswitchinterval() - wanted) < 1e-9
    finally:
        await server.runner.cleanup()
    assert abs(sys.getswitchinterval() - before) < 1e-9


def test_the_default_is_a_millisecond(tmp_path: Path) -> None:
    assert make_config(tmp_path).server.gil_switch_interval == 0.001


async def test_the_loop_watch_wakes_at_the_configured_interval(tmp_path: Path) -> None:
    # each wake-up of an idle loop costs about 0.3 ms of a core here: the interval is the
    # server's setting, and /metrics says it (bench education reads it from there)
    server = await start_server(make_config(tmp_path, server={"loop_watch_interval": 0.2}))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.base_url}/metrics") as response:
                text = await response.text()
        assert "remotecase_event_loop_watch_interval_seconds 0.2\n" in text
        assert make_config(tmp_path).server.loop_watch_interval == 0.05
    finally:
        await server.runner.cleanup()
