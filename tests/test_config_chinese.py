"""Every configuration error reaches the person starting the server in Chinese first, then
English (``中文 / English``), naming the key, the value given and where it was read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control import i18n
from control.config import ConfigError, load_config

HAN = re.compile(r"[\u4e00-\u9fff]")
MISSING = "/nonexistent/remotecase-test"

# (overrides, key named, value named or None): one per check in control/config.py.
BAD: list[tuple[dict[str, Any], str, str | None]] = [
    ({"sever": {"port": 1}}, "sever", None),
    ({"server": {"prot": 1}}, "server.prot", None),
    ({"server": 5}, "server", "5"),
    ({"server": {"port": 70000}}, "server.port", "70000"),
    ({"server": {"port": "80"}}, "server.port", "'80'"),
    ({"server": {"tls_cert": f"{MISSING}.pem"}}, "server.tls_cert", None),
    (
        {"server": {"tls_cert": f"{MISSING}.pem", "tls_key": f"{MISSING}.key"}},
        "server.tls_cert",
        f"{MISSING}.pem",
    ),
    ({"server": {"workers": 65}}, "server.workers", "65"),
    ({"server": {"max_message_bytes": 10}}, "server.max_message_bytes", "10"),
    ({"server": {"ws_heartbeat": 0.1}}, "server.ws_heartbeat", "0.1"),
    ({"server": {"ws_pong_timeout": 0.0}}, "server.ws_pong_timeout", "0.0"),
    ({"server": {"body_timeout": 4000}}, "server.body_timeout", "4000"),
    ({"server": {"gc_freeze": "yes"}}, "server.gc_freeze", "'yes'"),
    ({"server": {"loop_watch_interval": 0.001}}, "server.loop_watch_interval", "0.001"),
    ({"media": {"connect_timeout": -1}}, "media.connect_timeout", "-1"),
    ({"media": {"negotiation_timeout": 900}}, "media.negotiation_timeout", "900"),
    ({"media": {"media_timeout": 0.1}}, "media.media_timeout", "0.1"),
    ({"media": {"pli_min_interval": 11}}, "media.pli_min_interval", "11"),
    ({"media": {"max_participants": 1}}, "media.max_participants", "1"),
    ({"media": {"ice_servers": [{"urls": []}]}}, "media.ice_servers[0].urls", None),
    ({"media": {"ice_servers": [{"urls": ["http://x"]}]}}, "media.ice_servers[0].urls", "http://x"),
    ({"media": {"ice_servers": "stun:x"}}, "media.ice_servers", "'stun:x'"),
    ({"media": {"host_addresses": ["not-an-ip"]}}, "media.host_addresses[0]", "not-an-ip"),
    ({"auth": {"token_ttl": 5}}, "auth.token_ttl", "5"),
    ({"auth": {"login_delay": 100.0}}, "auth.login_delay", "100.0"),
    ({"server": {"host": "0.0.0.0"}, "auth": {"dev_join": True}}, "auth.dev_join", "0.0.0.0"),
    ({"keys": {"dir": "data/keys"}, "storage": {"data_dir": "data"}}, "keys.dir", "data/keys"),
    ({"custody": {"witness": "notary"}}, "custody.witness", "notary"),
    ({"custody": {"witness": "tsa"}}, "custody.witness", "tsa"),
    (
        {"custody": {"witness_dir": "data/w"}, "storage": {"data_dir": "data"}},
        "custody.witness_dir",
        None,
    ),
    (
        {"custody": {"checkpoints_dir": "keys/c"}, "keys": {"dir": "keys"}},
        "custody.checkpoints_dir",
        None,
    ),
    ({"recording": {"segment_seconds": 100.0}}, "recording.segment_seconds", "100.0"),
    ({"recording": {"reorder_wait": 9.0}}, "recording.reorder_wait", "9.0"),
    ({"recording": {"outage_seconds": 0.01}}, "recording.outage_seconds", "0.01"),
    ({"recording": {"retention_days": 0}}, "recording.retention_days", "0"),
    ({"recording": {"label_font": f"{MISSING}.ttc"}}, "recording.label_font", f"{MISSING}.ttc"),
    ({"verifier": {"engine": "magic"}}, "verifier.engine", "magic"),
    ({"verifier": {"facenet_runtime": "tensorflow"}}, "verifier.facenet_runtime", "tensorflow"),
    ({"verifier": {"engine": "pack", "pack_dir": MISSING}}, "verifier.pack_dir", MISSING),
    ({"verifier": {"engine": "pack", "pack_dir": "."}}, "verifier.pack_sha256", None),
    (
        {"verifier": {"engine": "pack", "pack_dir": ".", "pack_sha256": {"m.onnx": "abc"}}},
        "verifier.pack_sha256.m.onnx",
        "abc",
    ),
    ({"verifier": {"pack_sha256": {"m.onnx": 1}}}, "verifier.pack_sha256", "1"),
    ({"verifier": {"liveness_model": MISSING}}, "verifier.liveness_model", MISSING),
    ({"verifier": {"liveness_threshold": 2.0}}, "verifier.liveness_threshold", "2.0"),
    ({"verifier": {"threshold": -3.0}}, "verifier.threshold", "-3.0"),
    ({"verifier": {"sample_interval": 0.0}}, "verifier.sample_interval", "0.0"),
    ({"verifier": {"workers": 0}}, "verifier.workers", "0"),
    ({"verifier": {"alert_after": 0.1}}, "verifier.alert_after", "0.1"),
    ({"verifier": {"no_face_after": 601.0}}, "verifier.no_face_after", "601.0"),
    ({"materials": {"max_image_mb": 0}}, "materials.max_image_mb", "0"),
    ({"materials": {"max_megapixels": 0.0}}, "materials.max_megapixels", "0.0"),
    ({"materials": {"max_pdf_pages": 0}}, "materials.max_pdf_pages", "0"),
    ({"materials": {"concurrent_uploads": 65}}, "materials.concurrent_uploads", "65"),
    ({"materials": {"max_case_total_mb": 0}}, "materials.max_case_total_mb", "0"),
    ({"delivery": {"sms_url": "ftp://x"}}, "delivery.sms_url", "ftp://x"),
    ({"delivery": {"smtp_port": 0}}, "delivery.smtp_port", "0"),
    ({"delivery": {"smtp_host": "mail", "smtp_from": "nobody"}}, "delivery.smtp_from", "nobody"),
    ({"delivery": {"timeout": 0.1}}, "delivery.timeout", "0.1"),
    ({"delivery": {"public_notice_days": 400}}, "delivery.public_notice_days", "400"),
    ({"deadlines": {"calendar": MISSING}}, "deadlines.calendar", MISSING),
    ({"deadlines": {"warn_days": 31}}, "deadlines.warn_days", "31"),
    ({"education": {"check_interval": 5}}, "education.check_interval", "5"),
    ({"education": {"check_window": 1}}, "education.check_window", "1"),
    ({"education": {"verdict_gap": 0}}, "education.verdict_gap", "0"),
    ({"education": {"sample_interval": 0.0}}, "education.sample_interval", "0.0"),
    # watch time would pause between two samples of a viewer who is there
    (
        {"education": {"sample_interval": 20.0, "verdict_gap": 30.0}},
        "education.verdict_gap",
        "30.0",
    ),
    # a check would see fewer than two samples
    (
        {"education": {"sample_interval": 40.0, "verdict_gap": 100.0, "check_window": 60.0}},
        "education.check_window",
        "60.0",
    ),
    ({"education": {"required_minutes": 0}}, "education.required_minutes", "0"),
    ({"server": {"gil_switch_interval": 0.5}}, "server.gil_switch_interval", "0.5"),
    ({"server": {"document_workers": 99}}, "server.document_workers", "99"),
    ({"log": {"level": "LOUD"}}, "log.level", "LOUD"),
    ({"log": {"format": "xml"}}, "log.format", "xml"),
]


def _halves(error: ConfigError) -> tuple[str, str]:
    message = str(error)
    assert message == f"{error.zh} / {error.en}"
    halves = i18n.split(message)
    assert halves is not None, message
    zh, en = halves
    assert HAN.search(zh) and not HAN.search(en), message
    assert message.index(zh) < message.index(en)
    return zh, en


@pytest.mark.parametrize(("overrides", "key", "value"), BAD, ids=[b[1] for b in BAD])
def test_every_bad_setting_is_named_in_chinese_then_english(
    overrides: dict[str, Any], key: str, value: str | None, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides=overrides)
    zh, en = _halves(info.value)
    for half in (zh, en):
        assert key in half
        if value is not None:
            assert value in half


def test_the_file_and_the_variable_are_named(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[server]\nport = 70000\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    zh, en = _halves(info.value)
    assert zh.startswith(f"配置文件 {path}：server.port：70000")
    assert en.startswith(f"config file {path}: server.port: 70000")

    # the environment wins over the file, and is the one named
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={"REMOTECASE_SERVER__PORT": "99999"})
    zh, en = _halves(info.value)
    assert zh.startswith("环境变量 REMOTECASE_SERVER__PORT：server.port：99999")
    assert "environment variable REMOTECASE_SERVER__PORT" in en

    # a value from the file fixed by an override: nothing to blame on the file
    config = load_config(path, environ={}, overrides={"server": {"port": 8081}})
    assert config.server.port == 8081

    path.write_text("[server\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    zh, _ = _halves(info.value)
    assert str(path) in zh and "TOML" in zh
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml", environ={})
    zh, en = _halves(info.value)
    assert "不存在" in zh and "not found" in en
    path.write_text("server = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    _halves(info.value)


def test_serve_prints_the_chinese_first(tmp_path: Path) -> None:
    env = {**os.environ, "REMOTECASE_MEDIA__MAX_PARTICIPANTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "control.cli", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("remotecase：配置有误：环境变量 REMOTECASE_MEDIA__MAX_PARTICIPANTS")
    zh, en = line.split(" / remotecase: ")
    assert "media.max_participants" in zh and "1" in zh
    assert "configuration error: environment variable REMOTECASE_MEDIA__MAX_PARTICIPANTS" in en
    assert not HAN.search(en)


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_media_twcc_must_be_a_bool(value: object, tmp_path: Path, monkeypatch: Any) -> None:
    """Review 10: ``media.twcc`` (TWCC for publishers) takes true or false only, with the
    config's clear error, Chinese first."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides={"media": {"twcc": value}})
    text = str(info.value)
    assert "media.twcc" in text and text.index("应为") < text.index("expected true or false")
    assert load_config(None, environ={}, overrides={"media": {"twcc": True}}).media.twcc is True
    assert load_config(None, environ={}, overrides={}).media.twcc is True  # on by default
