"""The pages' heartbeat (control/web/heartbeat.js) on a ``navigator.connection`` ``change``:
only a change of the connection's ``type`` is a change of network (a probe that hears nothing
makes the socket dead); a change of its estimates only (a mobile link getting slow on the same
network) or one with no ``type`` to tell is a quiet path, whose unanswered probe only starts
the dead clock early (review 10, w10-live 3). The script runs in node (tests/heartbeat_harness.js)
against a socket that never answers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_only_a_change_of_connection_type_makes_an_unanswered_probe_dead() -> None:
    done = subprocess.run(
        ["node", str(ROOT / "tests/heartbeat_harness.js"), str(ROOT / "control/web/heartbeat.js")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = json.loads(done.stdout)
    for case in ("estimates", "no_type"):
        assert out[case]["sign"] == "connection change", out
        assert out[case]["verdict"] == "unanswered", out  # the PING_DEAD clock runs from it
        assert out[case]["dead"] is None, out
        assert out[case]["probes"] >= 1, out
    changed = out["type_changed"]
    assert changed["sign"] == "connection type cellular", out
    assert changed["verdict"] == "dead", out
    assert changed["dead"] is not None and changed["dead"] >= changed["deadline"], out
