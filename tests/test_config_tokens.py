"""Configuration is strict and names what is wrong; tokens are bound, signed and expire."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control.config import ConfigError, load_config
from control.sessions.tokens import TokenError, TokenSigner


def test_defaults_are_safe() -> None:
    config = load_config(None, environ={})
    assert config.server.host == "127.0.0.1"
    assert config.media.ice_servers == []  # no public STUN server unless configured
    assert config.media_options().ice_servers == ()


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 9001\n[media]\nice_servers = [{urls = ["stun:10.0.0.1"]}]\n')
    config = load_config(
        path, environ={"REMOTECASE_SERVER__PORT": "9002", "REMOTECASE_LOG__LEVEL": "DEBUG"}
    )
    assert config.server.port == 9002
    assert config.log.level == "DEBUG"
    assert config.media.ice_servers[0].urls == ["stun:10.0.0.1"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server": {"prot": 1}}, "unknown config key 'server.prot'"),
        ({"sever": {"port": 1}}, "unknown config key 'sever'"),
        ({"server": {"port": "eighty"}}, "server.port: expected an integer"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"media": {"connect_timeout": -1}}, "media.connect_timeout"),
        ({"media": {"ice_servers": [{"urls": ["http://x"]}]}}, "media.ice_servers[0].urls"),
        ({"media": {"host_addresses": ["not-an-ip"]}}, "media.host_addresses[0]"),
        ({"server": {"host": "0.0.0.0"}, "auth": {"dev_join": True}}, "auth.dev_join"),
        (
            {"server": {"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}},
            "server.tls_cert",
        ),
        ({"auth": {"dev_join": "yes"}}, "auth.dev_join: expected true or false"),
        ({"verifier": {"facenet_runtime": "tensorflow"}}, "verifier.facenet_runtime"),
    ],
)
def test_bad_values_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={}, overrides=overrides)
    assert message in str(info.value)


def test_bad_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = 1")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", environ={})


def test_serve_refuses_to_start_on_bad_config(tmp_path: Path) -> None:
    env = {**os.environ, "REMOTECASE_MEDIA__BOGUS": "1"}
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
    assert "unknown config key 'media.bogus'" in result.stderr


def test_tokens(tmp_path: Path) -> None:
    signer = TokenSigner.from_file(tmp_path / "secrets" / "token.key")
    assert oct((tmp_path / "secrets" / "token.key").stat().st_mode & 0o777) == "0o600"
    token = signer.mint("room1", "alice", name="Alice", ttl=60, now=1000)
    grant = signer.verify(token, now=1059)
    assert (grant.room, grant.participant, grant.name, grant.role) == (
        "room1",
        "alice",
        "Alice",
        "party",
    )
    with pytest.raises(TokenError) as expired:
        signer.verify(token, now=1060)
    assert expired.value.code == "token_expired"
    other = TokenSigner(b"x" * 32)
    with pytest.raises(TokenError) as forged:
        other.verify(token, now=1000)
    assert forged.value.code == "bad_token"
    # a token edited to another room no longer verifies
    head, body, sig = token.split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["room"] = "room2"
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        signer.verify(f"{head}.{edited}.{sig}", now=1000)
    # the same file gives the same signer
    assert TokenSigner.from_file(tmp_path / "secrets" / "token.key").verify(token, now=1000)


def test_cli_mints_tokens_the_server_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "REMOTECASE_STORAGE__DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "control.cli", "token", "--room", "r", "--participant", "p"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    grant = TokenSigner.from_file(tmp_path / "secrets" / "token.key").verify(result.stdout.strip())
    assert (grant.room, grant.participant) == ("r", "p")


def test_each_section_checks_itself_and_holds_its_defaults() -> None:
    import dataclasses

    from control.config import AuthConfig, MaterialsConfig, MediaConfig, ServerConfig
    from control.materials.store import ContentBudget
    from mediaserver.options import MediaOptions

    # a section is never made with a bad value, however it is made
    with pytest.raises(ConfigError, match=r"server\.port"):
        ServerConfig(port=70000)
    with pytest.raises(ConfigError, match=r"materials\.max_pdf_pages"):
        MaterialsConfig(max_pdf_pages=0)
    with pytest.raises(ConfigError, match=r"auth\.dev_join"):
        load_config(
            environ={"REMOTECASE_SERVER__HOST": "0.0.0.0", "REMOTECASE_AUTH__DEV_JOIN": "true"}
        )
    # the defaults that other parts use are the sections' own
    media = MediaOptions()
    for field in dataclasses.fields(MediaConfig):
        if field.name in (
            "connect_timeout",
            "negotiation_timeout",
            "pli_min_interval",
            "max_participants",
        ):
            assert getattr(MediaConfig(), field.name) == getattr(media, field.name)
    assert ContentBudget() == ContentBudget.of(MaterialsConfig())
    signer = TokenSigner(b"k" * 32)
    grant = signer.verify(signer.mint("r", "p", now=1000.0), now=1000.0)
    assert grant.expires_at == 1000 + AuthConfig().token_ttl


async def test_recording_waits_come_from_the_configuration(tmp_path: Path) -> None:
    from control.appkeys import RECORDER
    from control.config import RecordingConfig

    from .conftest import make_config, start_server

    with pytest.raises(ConfigError, match=r"recording\.reorder_wait"):
        RecordingConfig(reorder_wait=10)
    with pytest.raises(ConfigError, match=r"recording\.outage_seconds"):
        RecordingConfig(reorder_wait=0.5, outage_seconds=0.4)
    srv = await start_server(
        make_config(tmp_path, recording={"reorder_wait": 0.8, "outage_seconds": 2.5})
    )
    try:
        recorder = srv.app[RECORDER]
        assert (recorder.reorder_wait, recorder.outage_seconds) == (0.8, 2.5)
    finally:
        await srv.runner.cleanup()
