"""The forwarding benchmark runs end to end and reports its figures (numbers are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("record", [False, True])
def test_bench_forwarding_prints_json_figures(record: bool) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "control.cli", "bench", "forwarding", "--subscribers", "2",
         "--seconds", "1", "--json", *(["--record"] if record else [])],
        capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("subscribers", "forwarded_pps", "cpu_us_per_forwarded_packet", "loss_ratio"):
        assert key in report
    assert report["subscribers"] == 2
    assert report["forwarded_packets"] > 0
    assert 0.0 <= report["loss_ratio"] <= 1.0
    assert report["recorded"] is record
