"""One frozen, validated configuration: embedded defaults, then a TOML file, then environment.

Environment overrides are ``REMOTECASE_<SECTION>__<KEY>`` (for instance
``REMOTECASE_SERVER__PORT=9000``); their values are parsed as TOML values where they parse
(numbers, booleans, arrays) and taken as strings otherwise. An unknown section or key, or a value
of the wrong type or out of range, stops start-up with a :class:`ConfigError` naming it.

Each section is a frozen dataclass that holds its defaults (the one place they are written: code
that needs a setting takes it from here) and checks itself when it is made (``validate``); the
checks that span sections are :meth:`Config.validate`. The media plane's defaults are its own
(:class:`mediaserver.options.MediaOptions`), read here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaserver.options import IceServer, MediaOptions

_MEDIA: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(MediaOptions)}

ENV_PREFIX = "REMOTECASE_"
LOG_FORMATS = ("text", "json")  # control/logs.py


class ConfigError(ValueError):
    pass


class _Section:
    """A section checks itself as it is made; a bad value never makes a section."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the key that is wrong."""


@dataclass(frozen=True)
class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    # Largest signalling message accepted, in bytes; larger ones get an error and a close.
    max_message_bytes: int = 65536
    # Worker processes forwarding media (rooms are placed on workers behind one port);
    # 0 means one per core.
    workers: int = 1
    # Keep full garbage collections out of the media path (control/loopwatch.py): survivors
    # are frozen every 10 s and collected deliberately when participants have left.
    gc_freeze: bool = True
    # Seconds between WebSocket pings to each signalling client (browsers answer them without
    # page code); 0 turns them off. A client whose pong is ws_pong_timeout late is closed, so a
    # dead client is noticed within the sum (10.5 s), and a link that drops out for less than
    # about the timeout (TCP's retransmission backoff included) keeps its call: 8 s lets a 5 s
    # outage (a tunnel, a change of cell) pass, whose pong TCP delivers a second or so late.
    ws_heartbeat: float = 2.5
    ws_pong_timeout: float = 8.0
    # Seconds a request body may take to arrive, plus one per 8 KiB received (a slow but
    # moving upload goes on; a body trickling a byte now and then is answered 408).
    body_timeout: float = 30.0
    # Set by the supervisor for its workers (never needed in a file): the secret under which
    # the front vouches for each client's address (control/http/webguard.py).
    front_secret: str = ""

    def plain_http_exposed(self) -> bool:
        """Bound beyond loopback without TLS: logins, tokens and evidence in clear."""
        return not self.tls_cert and not _is_loopback(self.host)

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"server.port: {self.port} is not a TCP port (0-65535)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("server.tls_cert and server.tls_key must be set together")
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"server.{name}: no such file {path!r}")
        if not 0 <= self.workers <= 64:
            raise ConfigError("server.workers: 0 (one per core) to 64")
        if not 1024 <= self.max_message_bytes <= 1 << 20:
            raise ConfigError("server.max_message_bytes: must be between 1024 and 1048576")
        if self.ws_heartbeat != 0 and not 0.2 <= self.ws_heartbeat <= 300:
            raise ConfigError("server.ws_heartbeat: 0 (off) or between 0.2 and 300 seconds")
        if not 0.1 <= self.ws_pong_timeout <= 300:
            raise ConfigError("server.ws_pong_timeout: must be between 0.1 and 300 seconds")
        if not 1 <= self.body_timeout <= 3600:
            raise ConfigError("server.body_timeout: must be between 1 and 3600 seconds")


@dataclass(frozen=True)
class IceServerConfig(_Section):
    urls: list[str] = field(default_factory=list)
    username: str = ""
    credential: str = ""


@dataclass(frozen=True)
class MediaConfig(_Section):
    ice_servers: list[IceServerConfig] = field(default_factory=list)
    host_addresses: list[str] = field(default_factory=list)
    connect_timeout: float = _MEDIA["connect_timeout"]
    negotiation_timeout: float = _MEDIA["negotiation_timeout"]
    pli_min_interval: float = _MEDIA["pli_min_interval"]
    media_timeout: float = _MEDIA["media_timeout"]
    max_participants: int = _MEDIA["max_participants"]

    def validate(self) -> None:
        for name in ("connect_timeout", "negotiation_timeout"):
            if not 0.1 <= getattr(self, name) <= 600:
                raise ConfigError(f"media.{name}: must be between 0.1 and 600 seconds")
        if not 0.5 <= self.media_timeout <= 600:
            raise ConfigError("media.media_timeout: must be between 0.5 and 600 seconds")
        if not 0 <= self.pli_min_interval <= 10:
            raise ConfigError("media.pli_min_interval: must be between 0 and 10 seconds")
        if not 2 <= self.max_participants <= 1000:
            raise ConfigError("media.max_participants: must be between 2 and 1000")
        for i, server in enumerate(self.ice_servers):
            if not server.urls:
                raise ConfigError(f"media.ice_servers[{i}].urls: at least one URL")
            for url in server.urls:
                if not url.startswith(("stun:", "turn:", "turns:")):
                    raise ConfigError(f"media.ice_servers[{i}].urls: {url!r} is not stun:/turn:")
        for i, address in enumerate(self.host_addresses):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ConfigError(f"media.host_addresses[{i}]: {address!r} is not an IP") from None


@dataclass(frozen=True)
class AuthConfig(_Section):
    # File holding the token signing secret; created (mode 0600) if missing. Relative paths
    # are inside storage.data_dir.
    secret_file: str = "secrets/token.key"
    token_ttl: int = 3600
    # Development mode (``remotecase serve --dev``): the web page mints its own tokens for
    # rooms outside every case, so two tabs can meet without set-up (loopback binds only).
    # Off, every join needs a token the control plane issued for an open case session, and
    # is checked against that session's state when it joins (docs/signalling.md).
    dev_join: bool = False
    # A party of a case session joins only after its identity was checked before the call:
    # the face check on the party page passed, or an officer admitted it or attested its
    # identity document (control/verification/prejoin.py). Off only for tests of other things.
    prejoin_check: bool = True
    # Failed logins: the first delay once the free attempts are spent (5 per user name,
    # 10 per client address), doubling with each failure, at most 60 s per user name and
    # 15 min per address; never a lockout.
    login_delay: float = 1.0

    def validate(self) -> None:
        if not 60 <= self.token_ttl <= 30 * 86400:
            raise ConfigError("auth.token_ttl: must be between 60 s and 30 days")
        if not 0.1 <= self.login_delay <= 60:
            raise ConfigError("auth.login_delay: must be between 0.1 and 60 seconds")


@dataclass(frozen=True)
class StorageConfig(_Section):
    data_dir: str = "var"


@dataclass(frozen=True)
class KeysConfig(_Section):
    # Where the custody signing key and the recordings' key-encryption key live: apart from
    # storage.data_dir, so a copy of the data alone can neither be decrypted nor re-signed.
    dir: str = "keys"


@dataclass(frozen=True)
class CustodyConfig(_Section):
    # Who countersigns every signed tree head: "key" (a witness key of its own in witness_dir),
    # "off", or "tsa" (an RFC 3161 time-stamp authority at tsa_url: an interface, not built in).
    witness: str = "key"
    # Default: "witness" and "checkpoints" next to keys.dir; never inside storage.data_dir or
    # keys.dir. checkpoints_dir is what an operator publishes (docs/custody.md).
    witness_dir: str = ""
    checkpoints_dir: str = ""
    tsa_url: str = ""

    def witness_path(self, keys_dir: Path) -> Path:
        return Path(self.witness_dir) if self.witness_dir else keys_dir.resolve().parent / "witness"

    def checkpoints_path(self, keys_dir: Path) -> Path:
        return (
            Path(self.checkpoints_dir)
            if self.checkpoints_dir
            else keys_dir.resolve().parent / "checkpoints"
        )

    def validate(self) -> None:
        if self.witness not in ("key", "off", "tsa"):
            raise ConfigError(f"custody.witness: {self.witness!r} is not 'key', 'off' or 'tsa'")
        if self.witness == "tsa":
            raise ConfigError(
                "custody.witness: 'tsa' is a documented interface "
                "(docs/custody.md), not built into this version; use 'key'"
            )


@dataclass(frozen=True)
class RecordingConfig(_Section):
    # Record every room from its first participant, without an officer's action.
    always_on: bool = False
    # Record each case session's room from its first participant (the whole process is
    # evidence); an officer can still stop and restart it through the session.
    sessions: bool = True
    # Length of an encrypted, hashed segment; at most this much is lost if the server dies.
    segment_seconds: float = 2.0
    # Days a recording is kept before a supervisor may delete its media (changes are logged).
    retention_days: int = 730
    # How long (s) a missing packet holds the frames after it, waiting for its retransmission,
    # before it is given up and marked as a gap: longer saves more frames on a lossy link with a
    # long round trip, at the cost of that much more delay before frames are written.
    reorder_wait: float = 0.3
    # A gap of at least this much media (s) is recorded as an outage rather than as loss.
    outage_seconds: float = 1.0

    def validate(self) -> None:
        if not 0.5 <= self.segment_seconds <= 60:
            raise ConfigError("recording.segment_seconds: must be between 0.5 and 60")
        if not 0.02 <= self.reorder_wait <= 5:
            raise ConfigError("recording.reorder_wait: must be between 0.02 and 5 seconds")
        if not self.reorder_wait < self.outage_seconds <= 60:
            raise ConfigError(
                "recording.outage_seconds: must be above recording.reorder_wait and at most 60"
            )
        if not 1 <= self.retention_days <= 36500:
            raise ConfigError("recording.retention_days: must be between 1 and 36500")


@dataclass(frozen=True)
class VerifierConfig(_Section):
    # Check enrolled parties' faces during calls.
    enabled: bool = True
    # "default" (MTCNN + FaceNet, installed by pip) or "pack": a model pack in insightface's
    # layout in pack_dir, every .onnx file pinned in pack_sha256 (file name -> SHA-256).
    engine: str = "default"
    pack_dir: str = ""
    pack_name: str = "insightface-pack"
    pack_sha256: dict[str, str] = field(default_factory=dict)
    pack_licence: str = ""
    # The default engine runs FaceNet's graph in "onnxruntime" (rewritten as ONNX, about 2.3x
    # cheaper) or in "opencv" (OpenCV DNN); both give the same embeddings.
    facenet_runtime: str = "onnxruntime"
    # Cosine similarity at or above which a sample matches, and the labelled set it was
    # calibrated on (remotecase verifier eval prints both).
    threshold: float = 0.60
    calibrated_on: str = (
        "face-dev-set:91-pairs:sha256:"
        "b0bbfaec65aa09df7050b87b834dc4e4cf0aa8e02f17b35f97b68407c02690a2:"
        "facenet-input-v2"
    )
    sample_interval: float = 1.0
    workers: int = 1
    alert_after: float = 3.0
    no_face_after: float = 10.0
    # pixels: smaller faces are low quality; also the detector's smallest face on live frames
    # (a party in front of the camera is far larger, and a larger minimum detects faster)
    min_live_face: int = 60
    min_enroll_face: int = 80
    min_enroll_sharpness: float = 40.0
    # An optional passive liveness model (ONNX, [N,3,80,80] -> [N] live probability; none
    # installs from the registry): its SHA-256 pinned, and the score a live face reaches.
    liveness_model: str = ""
    liveness_sha256: str = ""
    liveness_threshold: float = 0.8

    def validate(self) -> None:
        if self.engine not in ("default", "pack"):
            raise ConfigError(f"verifier.engine: {self.engine!r} is not 'default' or 'pack'")
        if self.facenet_runtime not in ("onnxruntime", "opencv"):
            raise ConfigError(
                f"verifier.facenet_runtime: {self.facenet_runtime!r} is not "
                "'onnxruntime' or 'opencv'"
            )
        if self.engine == "pack":
            if not self.pack_dir or not Path(self.pack_dir).is_dir():
                raise ConfigError(f"verifier.pack_dir: {self.pack_dir!r} is not a directory")
            if not self.pack_sha256:
                raise ConfigError("verifier.pack_sha256: pin the SHA-256 of every file of the pack")
            for file_name, digest in self.pack_sha256.items():
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise ConfigError(f"verifier.pack_sha256.{file_name}: not a SHA-256 hex digest")
        if self.liveness_model:
            if not Path(self.liveness_model).is_file():
                raise ConfigError(f"verifier.liveness_model: no such file {self.liveness_model!r}")
            if len(self.liveness_sha256) != 64 or any(
                c not in "0123456789abcdef" for c in self.liveness_sha256
            ):
                raise ConfigError("verifier.liveness_sha256: pin the model's SHA-256 (hex)")
        if not 0.0 <= self.liveness_threshold <= 1.0:
            raise ConfigError("verifier.liveness_threshold: a probability, between 0 and 1")
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError("verifier.threshold: a cosine similarity, between -1 and 1")
        if not 0.02 <= self.sample_interval <= 60:
            raise ConfigError("verifier.sample_interval: between 0.02 and 60 seconds")
        if not 1 <= self.workers <= 64:
            raise ConfigError("verifier.workers: between 1 and 64")
        for name in ("alert_after", "no_face_after"):
            if not 0.5 <= getattr(self, name) <= 600:
                raise ConfigError(f"verifier.{name}: between 0.5 and 600 seconds")


@dataclass(frozen=True)
class MaterialsConfig(_Section):
    # Largest upload per type, in MiB; the type is taken from the content, not the name.
    max_image_mb: int = 20
    max_pdf_mb: int = 50
    max_video_mb: int = 200
    # Read from the headers before anything decodes: a photo's or a video frame's pixels (in
    # millions), a PDF's pages.
    max_megapixels: float = 40.0
    max_pdf_pages: int = 2000
    # Uploads one uploader (a party, an officer) may run at once; more answer 429.
    concurrent_uploads: int = 2
    # Everything kept from one party, and in one case (its parties' and officers' files), MiB.
    max_party_total_mb: int = 2048
    max_case_total_mb: int = 8192

    def validate(self) -> None:
        for name in ("max_image_mb", "max_pdf_mb", "max_video_mb"):
            if not 1 <= getattr(self, name) <= 4096:
                raise ConfigError(f"materials.{name}: between 1 and 4096 MiB")
        if not 0.01 <= self.max_megapixels <= 1000:
            raise ConfigError("materials.max_megapixels: between 0.01 and 1000")
        if not 1 <= self.max_pdf_pages <= 100000:
            raise ConfigError("materials.max_pdf_pages: between 1 and 100000")
        if not 1 <= self.concurrent_uploads <= 64:
            raise ConfigError("materials.concurrent_uploads: between 1 and 64")
        for name in ("max_party_total_mb", "max_case_total_mb"):
            if not 1 <= getattr(self, name) <= 1 << 30:
                raise ConfigError(f"materials.{name}: between 1 and {1 << 30} MiB")


@dataclass(frozen=True)
class DeliveryConfig(_Section):
    """Electronic delivery's notification providers (docs/delivery.md). With neither set,
    every notice goes to the embedded outbox (a table an operator reads with ``remotecase
    delivery outbox``); a consent whose channel has no provider configured uses it too."""

    # An SMS gateway: notices are POSTed to it as JSON {to, text, sender, reference}; any
    # answer other than 2xx is a failed delivery (the case then shows the fallback).
    sms_url: str = ""
    sms_sender: str = ""
    # An SMTP relay for e-mail notices (plain SMTP, STARTTLS when smtp_starttls).
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = ""
    smtp_starttls: bool = False
    # Seconds a provider may take before the delivery counts as failed.
    timeout: float = 10.0
    # Days a public notice (公告送达) runs before the document counts as delivered (157号令
    # art.55: sixty days).
    public_notice_days: int = 60

    def validate(self) -> None:
        if self.sms_url and not self.sms_url.startswith(("http://", "https://")):
            raise ConfigError(f"delivery.sms_url: {self.sms_url!r} is not an http(s) URL")
        if not 1 <= self.smtp_port <= 65535:
            raise ConfigError("delivery.smtp_port: a TCP port (1-65535)")
        if self.smtp_host and "@" not in self.smtp_from:
            raise ConfigError("delivery.smtp_from: an e-mail address, needed with smtp_host")
        if not 0.5 <= self.timeout <= 120:
            raise ConfigError("delivery.timeout: between 0.5 and 120 seconds")
        if not 1 <= self.public_notice_days <= 365:
            raise ConfigError("delivery.public_notice_days: between 1 and 365")


@dataclass(frozen=True)
class DeadlinesConfig(_Section):
    """The working-day calendar and the rules' limits (control/deadlines/): empty means the
    files shipped in control/deadlines/; a brigade points these at its own updated copies."""

    calendar: str = ""
    limits: str = ""
    # A deadline this many working days away or nearer is flagged ``warn``.
    warn_days: int = 1

    def validate(self) -> None:
        for name in ("calendar", "limits"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"deadlines.{name}: no such file {path!r}")
        if not 0 <= self.warn_days <= 30:
            raise ConfigError("deadlines.warn_days: between 0 and 30")


@dataclass(frozen=True)
class EducationConfig(_Section):
    # Face checks of an education session's viewers (control/education/attendance.py): one at
    # join, then at random moments at most this many seconds apart.
    check_interval: float = 900.0
    # how long a check waits for a matching face before it counts as failed
    check_window: float = 60.0
    # watch time stops this long after the last sample that showed the right face (a viewer
    # whose video stopped, or whose picture nobody can judge, is not watching on proof)
    verdict_gap: float = 10.0
    # the watch time a certificate needs when the course sets none, in minutes
    required_minutes: float = 45.0
    # raised hands (control/education/floor.py): how many viewers may hold the floor at once,
    # and for how long an officer's grant lasts unless taken back sooner (0: until taken back)
    floor_holders: int = 1
    floor_seconds: float = 300.0

    def validate(self) -> None:
        if not 1 <= self.floor_holders <= 20:
            raise ConfigError("education.floor_holders: between 1 and 20")
        if not (self.floor_seconds == 0 or 5 <= self.floor_seconds <= 7200):
            raise ConfigError("education.floor_seconds: 0 (no limit) or between 5 and 7200")
        if not 10 <= self.check_interval <= 7200:
            raise ConfigError("education.check_interval: between 10 and 7200 seconds")
        if not 5 <= self.check_window <= self.check_interval:
            raise ConfigError("education.check_window: between 5 s and education.check_interval")
        if not 1 <= self.verdict_gap <= 600:
            raise ConfigError("education.verdict_gap: between 1 and 600 seconds")
        if not 0 < self.required_minutes <= 24 * 60:
            raise ConfigError("education.required_minutes: more than 0, at most 1440")


@dataclass(frozen=True)
class LogConfig(_Section):
    level: str = "INFO"
    format: str = "text"  # or "json": one object per line (control/logs.py)

    def validate(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log.level: {self.level!r} is not DEBUG/INFO/WARNING/ERROR")
        if self.format not in LOG_FORMATS:
            raise ConfigError(f"log.format: {self.format!r} is not 'text' or 'json'")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    custody: CustodyConfig = field(default_factory=CustodyConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    materials: MaterialsConfig = field(default_factory=MaterialsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    deadlines: DeadlinesConfig = field(default_factory=DeadlinesConfig)
    education: EducationConfig = field(default_factory=EducationConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def media_options(self) -> MediaOptions:
        return MediaOptions(
            ice_servers=tuple(
                IceServer(tuple(s.urls), s.username or None, s.credential or None)
                for s in self.media.ice_servers
            ),
            host_addresses=tuple(self.media.host_addresses),
            connect_timeout=self.media.connect_timeout,
            negotiation_timeout=self.media.negotiation_timeout,
            pli_min_interval=self.media.pli_min_interval,
            media_timeout=self.media.media_timeout,
            max_participants=self.media.max_participants,
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir)

    @property
    def keys_dir(self) -> Path:
        return Path(self.keys.dir)

    def secret_path(self) -> Path:
        path = Path(self.auth.secret_file)
        return path if path.is_absolute() else self.data_dir / path

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """What spans sections: development mode needs a loopback bind; the keys live apart
        from the data, and the witness and checkpoints apart from both."""
        host = self.server.host
        if self.auth.dev_join and not _is_loopback(host):
            raise ConfigError(
                f"auth.dev_join: only allowed when server.host is loopback (it is {host!r})"
            )
        data = Path(self.storage.data_dir).resolve()
        keys = Path(self.keys.dir).resolve()
        if keys == data or data in keys.parents:
            raise ConfigError(
                f"keys.dir: {self.keys.dir!r} must not be inside storage.data_dir "
                "(keys are kept apart from the data they protect)"
            )
        c = self.custody
        for name, where in (
            ("witness_dir", c.witness_path(keys)),
            ("checkpoints_dir", c.checkpoints_path(keys)),
        ):
            where = where.resolve()
            if where in (data, keys) or data in where.parents or keys in where.parents:
                raise ConfigError(
                    f"custody.{name}: {str(where)!r} must be outside "
                    "storage.data_dir and keys.dir (it must survive a copy of "
                    "them being put back)"
                )


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown config key {name!r}")
        values[key] = _convert(hints[key], raw, name)
    return cls(**values)


def _convert(hint: Any, raw: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, name)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(raw, list):
            raise ConfigError(f"{name}: expected a list, got {raw!r}")
        return [_convert(item, v, f"{name}[{i}]") for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise ConfigError(f"{name}: expected a table of strings")
        return dict(raw)
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{name}: unsupported type")  # pragma: no cover - none declared
    if hint is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{name}: expected true or false, got {raw!r}")
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{name}: expected an integer, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{name}: expected a string, got {raw!r}")
        return raw
    raise ConfigError(f"{name}: unsupported type {hint}")  # pragma: no cover


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the TOML file, then the environment, then ``overrides`` (tests, CLI)."""
    merged: dict[str, dict[str, Any]] = {}
    layers: list[Mapping[str, Any]] = []
    if path is not None:
        try:
            with open(path, "rb") as fh:
                layers.append(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    layers.append(_env_overrides(os.environ if environ is None else environ))
    if overrides:
        layers.append(overrides)
    for layer in layers:
        for section, table in layer.items():
            if not isinstance(table, Mapping):
                raise ConfigError(f"config section {section!r} must be a table")
            merged.setdefault(section, {}).update(table)
    return typing.cast(Config, _build(Config, merged, ""))
