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
    """A setting that stops start-up, in Chinese then English (``中文 / English``), naming the
    key and the value given; :func:`load_config` adds where the value came from (the file or
    the environment variable). ``zh`` and ``en`` are the two halves, ``key`` the setting
    (``section.name``; empty for the file itself)."""

    def __init__(self, zh: str, en: str, *, key: str = "") -> None:
        self.zh, self.en, self.key = zh, en, key
        super().__init__(f"{zh} / {en}")

    def within(self, zh: str, en: str) -> ConfigError:
        """The same error prefixed by where the setting was read (``配置文件 x.toml``)."""
        return ConfigError(f"{zh}：{self.zh}", f"{en}: {self.en}", key=self.key)


def _bad(key: str, zh: str, en: str) -> ConfigError:
    return ConfigError(f"{key}：{zh}", f"{key}: {en}", key=key)


def _between(
    key: str, value: float, low: float, high: float, zh_unit: str = "", en_unit: str = ""
) -> None:
    """Raise naming ``key`` and ``value`` unless ``low <= value <= high``."""
    if not low <= value <= high:
        raise _bad(
            key,
            f"{value!r} 不在 {low} 到 {high}{zh_unit} 之间",
            f"{value!r} is not between {low} and {high}{en_unit}",
        )


_S = ("秒", " seconds")


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
    # Seconds a thread may keep the interpreter's lock while another waits for it
    # (sys.setswitchinterval; Python's default is 0.005). The event loop gives the lock up at
    # every socket call, a few per packet; with a busy worker thread (a PDF signed or checked in
    # pure Python) each time it waits up to this long to take it back: at 5 ms a signing held
    # the media loop 0.6-0.8 s (tests/test_browser_mediation.py; docs/performance.md).
    gil_switch_interval: float = 0.001
    # Seconds between the loop watch's wake-ups (control/loopwatch.py: the loop's lag, its
    # stalls and their causes). Each wake-up of an otherwise idle loop costs this machine about
    # 0.3 ms of a core (measured: a bare asyncio loop sleeping 20 ms at a time used 1.5% of a
    # core, the idle server 1.6%), which at 20 ms was a sixth of the server's CPU in a
    # two-room call (docs/performance.md, issue 19). The lag of a wake-up at a random time is
    # what a packet arriving then waits, at any interval; a stall shorter than stall_after
    # plus the interval (0.15 s at 0.05) may fall between two wake-ups and go uncounted.
    loop_watch_interval: float = 0.05
    # Processes (per server worker) that render, sign with the built-in CA's keys and read
    # documents (documents/pool.py), so that pure-Python work never holds the media loop's
    # interpreter; started on the first document. 0 runs that work in threads, as before.
    document_workers: int = 1
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
            raise _bad(
                "server.port",
                f"{self.port} 不是 TCP 端口号（0-65535）",
                f"{self.port} is not a TCP port (0-65535)",
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise _bad(
                "server.tls_cert" if self.tls_cert else "server.tls_key",
                "server.tls_cert 与 server.tls_key 须同时设置",
                "server.tls_cert and server.tls_key must be set together",
            )
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise _bad(f"server.{name}", f"文件 {path!r} 不存在", f"no such file {path!r}")
        if not 0 <= self.workers <= 64:
            raise _bad(
                "server.workers",
                f"{self.workers!r} 不在 0（每核一个）到 64 之间",
                f"{self.workers!r} is not 0 (one per core) to 64",
            )
        if not 0 <= self.document_workers <= 16:
            raise _bad(
                "server.document_workers",
                f"{self.document_workers!r} 不在 0（在线程中）到 16 之间",
                f"{self.document_workers!r} is not 0 (in threads) to 16",
            )
        _between("server.gil_switch_interval", self.gil_switch_interval, 0.0001, 0.1, " 秒", " s")
        _between("server.loop_watch_interval", self.loop_watch_interval, 0.005, 1.0, " 秒", " s")
        _between(
            "server.max_message_bytes", self.max_message_bytes, 1024, 1 << 20, " 字节", " bytes"
        )
        if self.ws_heartbeat != 0 and not 0.2 <= self.ws_heartbeat <= 300:
            raise _bad(
                "server.ws_heartbeat",
                f"{self.ws_heartbeat!r} 应为 0（关闭）或 0.2 到 300 秒之间",
                f"{self.ws_heartbeat!r} is not 0 (off) or between 0.2 and 300 seconds",
            )
        _between("server.ws_pong_timeout", self.ws_pong_timeout, 0.1, 300, *_S)
        _between("server.body_timeout", self.body_timeout, 1, 3600, *_S)


@dataclass(frozen=True)
class IceServerConfig(_Section):
    urls: list[str] = field(default_factory=list)
    username: str = ""
    credential: str = ""
    # coturn's static-auth-secret (use-auth-secret): each client gets credentials of its own,
    # good for ttl seconds (control/sessions/turn.py); the SFU itself does not use this server
    secret: str = ""
    ttl: int = 86400


@dataclass(frozen=True)
class MediaConfig(_Section):
    ice_servers: list[IceServerConfig] = field(default_factory=list)
    host_addresses: list[str] = field(default_factory=list)
    connect_timeout: float = _MEDIA["connect_timeout"]
    negotiation_timeout: float = _MEDIA["negotiation_timeout"]
    pli_min_interval: float = _MEDIA["pli_min_interval"]
    media_timeout: float = _MEDIA["media_timeout"]
    resume_grace: float = _MEDIA["resume_grace"]
    unload_grace: float = _MEDIA["unload_grace"]
    layered_small_room: int = _MEDIA["layered_small_room"]
    layered_quantile: float = _MEDIA["layered_quantile"]
    twcc: bool = _MEDIA["twcc"]
    max_participants: int = _MEDIA["max_participants"]

    def validate(self) -> None:
        for name in ("connect_timeout", "negotiation_timeout"):
            _between(f"media.{name}", getattr(self, name), 0.1, 600, *_S)
        _between("media.media_timeout", self.media_timeout, 0.5, 600, *_S)
        _between("media.resume_grace", self.resume_grace, 0, 600, *_S)
        _between("media.unload_grace", self.unload_grace, 0, 600, *_S)
        _between("media.pli_min_interval", self.pli_min_interval, 0, 10, *_S)
        _between("media.max_participants", self.max_participants, 2, 1000)
        _between("media.layered_small_room", self.layered_small_room, 1, 1000)
        _between("media.layered_quantile", self.layered_quantile, 0, 0.5)
        for i, server in enumerate(self.ice_servers):
            key = f"media.ice_servers[{i}].urls"
            if not server.urls:
                raise _bad(key, "至少需要一个 URL", "at least one URL")
            for url in server.urls:
                if not url.startswith(("stun:", "turn:", "turns:")):
                    raise _bad(key, f"{url!r} 不是 stun:/turn: 地址", f"{url!r} is not stun:/turn:")
            if server.secret and (server.username or server.credential):
                raise _bad(
                    f"media.ice_servers[{i}]",
                    "secret 与 username/credential 只能二选一",
                    "a secret or a username and credential, not both",
                )
            _between(f"media.ice_servers[{i}].ttl", server.ttl, 60, 7 * 86400, *_S)
        for i, address in enumerate(self.host_addresses):
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise _bad(
                    f"media.host_addresses[{i}]",
                    f"{address!r} 不是 IP 地址",
                    f"{address!r} is not an IP",
                ) from None


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
        # short call tokens are safe since both pages renew theirs for every connection (the
        # console a new grant, the party page the same admission: /api/party/call-token)
        if not 10 <= self.token_ttl <= 30 * 86400:
            raise _bad(
                "auth.token_ttl",
                f"{self.token_ttl!r} 不在 10 秒到 30 天之间",
                f"{self.token_ttl!r} is not between 10 s and 30 days",
            )
        _between("auth.login_delay", self.login_delay, 0.1, 60, *_S)


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
            raise _bad(
                "custody.witness",
                f"{self.witness!r} 不是 'key'、'off' 或 'tsa'",
                f"{self.witness!r} is not 'key', 'off' or 'tsa'",
            )
        if self.witness == "tsa":
            raise _bad(
                "custody.witness",
                "'tsa' 是已写明的接口（docs/custody.md），本版本未内置；请用 'key'",
                "'tsa' is a documented interface (docs/custody.md), not built into this "
                "version; use 'key'",
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
    # The TrueType font (.ttf or .ttc) of the names and clock in an export's composite video;
    # empty: Debian's fonts-wqy-zenhei, found in the standard paths (recorder/labels.py).
    label_font: str = ""

    def validate(self) -> None:
        _between("recording.segment_seconds", self.segment_seconds, 0.5, 60, *_S)
        _between("recording.reorder_wait", self.reorder_wait, 0.02, 5, *_S)
        if not self.reorder_wait < self.outage_seconds <= 60:
            raise _bad(
                "recording.outage_seconds",
                f"{self.outage_seconds!r} 应大于 recording.reorder_wait（{self.reorder_wait!r}）"
                "且不超过 60",
                f"{self.outage_seconds!r} must be above recording.reorder_wait "
                f"({self.reorder_wait!r}) and at most 60",
            )
        _between("recording.retention_days", self.retention_days, 1, 36500, " 天", " days")
        if self.label_font and not Path(self.label_font).is_file():
            raise _bad(
                "recording.label_font",
                f"字体文件 {self.label_font!r} 不存在",
                f"no such font file {self.label_font!r}",
            )

    @property
    def label_font_path(self) -> Path | None:
        return Path(self.label_font) if self.label_font else None


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
            raise _bad(
                "verifier.engine",
                f"{self.engine!r} 不是 'default' 或 'pack'",
                f"{self.engine!r} is not 'default' or 'pack'",
            )
        if self.facenet_runtime not in ("onnxruntime", "opencv"):
            raise _bad(
                "verifier.facenet_runtime",
                f"{self.facenet_runtime!r} 不是 'onnxruntime' 或 'opencv'",
                f"{self.facenet_runtime!r} is not 'onnxruntime' or 'opencv'",
            )
        if self.engine == "pack":
            if not self.pack_dir or not Path(self.pack_dir).is_dir():
                raise _bad(
                    "verifier.pack_dir",
                    f"{self.pack_dir!r} 不是目录",
                    f"{self.pack_dir!r} is not a directory",
                )
            if not self.pack_sha256:
                raise _bad(
                    "verifier.pack_sha256",
                    "须写明模型包中每个文件的 SHA-256",
                    "pin the SHA-256 of every file of the pack",
                )
            for file_name, digest in self.pack_sha256.items():
                if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                    raise _bad(
                        f"verifier.pack_sha256.{file_name}",
                        f"{digest!r} 不是 SHA-256 十六进制摘要",
                        f"{digest!r} is not a SHA-256 hex digest",
                    )
        if self.liveness_model:
            if not Path(self.liveness_model).is_file():
                raise _bad(
                    "verifier.liveness_model",
                    f"文件 {self.liveness_model!r} 不存在",
                    f"no such file {self.liveness_model!r}",
                )
            if len(self.liveness_sha256) != 64 or any(
                c not in "0123456789abcdef" for c in self.liveness_sha256
            ):
                raise _bad(
                    "verifier.liveness_sha256",
                    f"{self.liveness_sha256!r}：须写明活体模型的 SHA-256（十六进制）",
                    f"{self.liveness_sha256!r}: pin the model's SHA-256 (hex)",
                )
        _between(
            "verifier.liveness_threshold",
            self.liveness_threshold,
            0.0,
            1.0,
            "（概率）",
            " (a probability)",
        )
        _between(
            "verifier.threshold",
            self.threshold,
            -1.0,
            1.0,
            "（余弦相似度）",
            " (a cosine similarity)",
        )
        _between("verifier.sample_interval", self.sample_interval, 0.02, 60, *_S)
        _between("verifier.workers", self.workers, 1, 64)
        for name in ("alert_after", "no_face_after"):
            _between(f"verifier.{name}", getattr(self, name), 0.5, 600, *_S)


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
            _between(f"materials.{name}", getattr(self, name), 1, 4096, " MiB", " MiB")
        _between("materials.max_megapixels", self.max_megapixels, 0.01, 1000)
        _between("materials.max_pdf_pages", self.max_pdf_pages, 1, 100000)
        _between("materials.concurrent_uploads", self.concurrent_uploads, 1, 64)
        for name in ("max_party_total_mb", "max_case_total_mb"):
            _between(f"materials.{name}", getattr(self, name), 1, 1 << 30, " MiB", " MiB")


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
            raise _bad(
                "delivery.sms_url",
                f"{self.sms_url!r} 不是 http(s) 地址",
                f"{self.sms_url!r} is not an http(s) URL",
            )
        if not 1 <= self.smtp_port <= 65535:
            raise _bad(
                "delivery.smtp_port",
                f"{self.smtp_port!r} 不是 TCP 端口号（1-65535）",
                f"{self.smtp_port!r} is not a TCP port (1-65535)",
            )
        if self.smtp_host and "@" not in self.smtp_from:
            raise _bad(
                "delivery.smtp_from",
                f"{self.smtp_from!r} 不是电子邮件地址（设置 smtp_host 时必填）",
                f"{self.smtp_from!r} is not an e-mail address, needed with smtp_host",
            )
        _between("delivery.timeout", self.timeout, 0.5, 120, *_S)
        _between("delivery.public_notice_days", self.public_notice_days, 1, 365, " 天", " days")


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
                raise _bad(f"deadlines.{name}", f"文件 {path!r} 不存在", f"no such file {path!r}")
        _between("deadlines.warn_days", self.warn_days, 0, 30, " 天", " days")


@dataclass(frozen=True)
class EducationConfig(_Section):
    # Face checks of an education session's viewers (control/education/attendance.py): one at
    # join, then at random moments at most this many seconds apart.
    check_interval: float = 900.0
    # how long a check waits for a matching face before it counts as failed (at least two
    # samples long)
    check_window: float = 60.0
    # seconds between the verifier's samples of each viewer of an education room (inquiries
    # keep verifier.sample_interval). Checks are minutes apart and one machine's verifier
    # judges a few samples a second, so 100 viewers at 20 s are 5 a second; from 3 s on a
    # sample is a keyframe asked of the viewer's camera, with nothing decoded between samples
    # (mediaserver/local.py, docs/education.md "Attendance")
    sample_interval: float = 20.0
    # watch time stops this long after the last sample that showed the right face (a viewer
    # whose video stopped, or whose picture nobody can judge, is not watching on proof); at
    # least two sample intervals, so that one skipped sample does not pause a present viewer
    verdict_gap: float = 60.0
    # the watch time a certificate needs when the course sets none, in minutes
    required_minutes: float = 45.0
    # raised hands (control/education/floor.py): how many viewers may hold the floor at once,
    # and for how long an officer's grant lasts unless taken back sooner (0: until taken back)
    floor_holders: int = 1
    floor_seconds: float = 300.0
    # a company's attendance record sent to it (control/education/sending.py): days its link
    # stays valid, and the address the link starts with (the server as companies reach it:
    # "https://jj.example.gov.cn"; empty: the server's own server.host and port, when it has
    # one a company reaches, not loopback (the default), link-local or every interface: never
    # an address a request names)
    record_link_days: int = 30
    public_url: str = ""

    def validate(self) -> None:
        _between("education.record_link_days", self.record_link_days, 1, 365, "天", " days")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise _bad(
                "education.public_url",
                f"{self.public_url!r} 不是 http(s) 地址",
                f"{self.public_url!r} is not an http(s) URL",
            )
        _between("education.floor_holders", self.floor_holders, 1, 20)
        if not (self.floor_seconds == 0 or 5 <= self.floor_seconds <= 7200):
            raise _bad(
                "education.floor_seconds",
                f"{self.floor_seconds!r} 应为 0（不限时）或 5 到 7200 秒",
                f"{self.floor_seconds!r} must be 0 (no limit) or between 5 and 7200 seconds",
            )
        _between("education.check_interval", self.check_interval, 10, 7200, *_S)
        if not 5 <= self.check_window <= self.check_interval:
            raise _bad(
                "education.check_window",
                f"{self.check_window!r} 不在 5 秒到 education.check_interval"
                f"（{self.check_interval!r}）之间",
                f"{self.check_window!r} is not between 5 s and education.check_interval "
                f"({self.check_interval!r})",
            )
        _between("education.sample_interval", self.sample_interval, 0.1, 600, *_S)
        _between("education.verdict_gap", self.verdict_gap, 1, 1800, *_S)
        if self.verdict_gap < 2 * self.sample_interval:
            raise _bad(
                "education.verdict_gap",
                f"{self.verdict_gap!r} 少于两个 education.sample_interval（{self.sample_interval!r}"
                "）：在场的学员也会在两次采样之间被暂停计时",
                f"{self.verdict_gap!r} is less than two education.sample_interval "
                f"({self.sample_interval!r}): a viewer who is there would be paused between "
                "samples",
            )
        if self.check_window < 2 * self.sample_interval:
            raise _bad(
                "education.check_window",
                f"{self.check_window!r} 少于两个 education.sample_interval（"
                f"{self.sample_interval!r}）：一次核验应至少有两次采样",
                f"{self.check_window!r} is less than two education.sample_interval "
                f"({self.sample_interval!r}): a check must see at least two samples",
            )
        if not 0 < self.required_minutes <= 24 * 60:
            raise _bad(
                "education.required_minutes",
                f"{self.required_minutes!r} 应大于 0 且不超过 1440",
                f"{self.required_minutes!r} must be more than 0, at most 1440",
            )


@dataclass(frozen=True)
class LogConfig(_Section):
    level: str = "INFO"
    format: str = "text"  # or "json": one object per line (control/logs.py)

    def validate(self) -> None:
        if self.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise _bad(
                "log.level",
                f"{self.level!r} 不是 DEBUG/INFO/WARNING/ERROR",
                f"{self.level!r} is not DEBUG/INFO/WARNING/ERROR",
            )
        if self.format not in LOG_FORMATS:
            raise _bad(
                "log.format",
                f"{self.format!r} 不是 'text' 或 'json'",
                f"{self.format!r} is not 'text' or 'json'",
            )


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
                if not s.secret  # clients' relays (time-limited credentials per client)
            ),
            host_addresses=tuple(self.media.host_addresses),
            connect_timeout=self.media.connect_timeout,
            negotiation_timeout=self.media.negotiation_timeout,
            pli_min_interval=self.media.pli_min_interval,
            media_timeout=self.media.media_timeout,
            resume_grace=self.media.resume_grace,
            unload_grace=self.media.unload_grace,
            layered_small_room=self.media.layered_small_room,
            layered_quantile=self.media.layered_quantile,
            twcc=self.media.twcc,
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
            raise _bad(
                "auth.dev_join",
                f"仅当 server.host 为本机回环地址时允许（现为 {host!r}）",
                f"only allowed when server.host is loopback (it is {host!r})",
            )
        data = Path(self.storage.data_dir).resolve()
        keys = Path(self.keys.dir).resolve()
        if keys == data or data in keys.parents:
            raise _bad(
                "keys.dir",
                f"{self.keys.dir!r} 不得位于 storage.data_dir 之内（密钥须与其保护的数据分开存放）",
                f"{self.keys.dir!r} must not be inside storage.data_dir "
                "(keys are kept apart from the data they protect)",
            )
        c = self.custody
        for name, where in (
            ("witness_dir", c.witness_path(keys)),
            ("checkpoints_dir", c.checkpoints_path(keys)),
        ):
            where = where.resolve()
            if where in (data, keys) or data in where.parents or keys in where.parents:
                raise _bad(
                    f"custody.{name}",
                    f"{str(where)!r} 须在 storage.data_dir 与 keys.dir 之外"
                    "（用备份恢复二者时它须保留）",
                    f"{str(where)!r} must be outside storage.data_dir and keys.dir "
                    "(it must survive a copy of them being put back)",
                )


def _build(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise _bad(
            where or "config",
            f"应为表（table），而不是 {type(data).__name__}",
            f"expected a table, got {type(data).__name__}",
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"未知的配置项 {name!r}", f"unknown config key {name!r}", key=name)
        values[key] = _convert(hints[key], raw, name)
    return cls(**values)


def _convert(hint: Any, raw: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, raw, name)  # type: ignore[arg-type]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(raw, list):
            raise _bad(name, f"应为列表，而不是 {raw!r}", f"expected a list, got {raw!r}")
        return [_convert(item, v, f"{name}[{i}]") for i, v in enumerate(raw)]
    if origin is dict:
        if not isinstance(raw, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise _bad(
                name, f"应为字符串表，而不是 {raw!r}", f"expected a table of strings, got {raw!r}"
            )
        return dict(raw)
    if origin in (typing.Union, types.UnionType):
        raise _bad(name, "不支持的类型", "unsupported type")  # pragma: no cover - none declared
    if hint is bool:
        if not isinstance(raw, bool):
            raise _bad(
                name, f"应为 true 或 false，而不是 {raw!r}", f"expected true or false, got {raw!r}"
            )
        return raw
    if hint is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _bad(name, f"应为整数，而不是 {raw!r}", f"expected an integer, got {raw!r}")
        return raw
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise _bad(name, f"应为数字，而不是 {raw!r}", f"expected a number, got {raw!r}")
        return float(raw)
    if hint is str:
        if not isinstance(raw, str):
            raise _bad(name, f"应为字符串，而不是 {raw!r}", f"expected a string, got {raw!r}")
        return raw
    raise _bad(name, f"不支持的类型 {hint}", f"unsupported type {hint}")  # pragma: no cover


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {
        section: {name: value for name, (value, _) in table.items()}
        for section, table in _env_values(environ).items()
    }


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[Any, str]]]:
    """``{section: {name: (value, variable)}}`` of the ``REMOTECASE_S__K`` variables."""
    out: dict[str, dict[str, tuple[Any, str]]] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        out.setdefault(section, {})[name] = (parsed, key)
    return out


# Where a setting was read: (中文, English), by "section.name" and by "section".
_Origins = dict[str, tuple[str, str]]


def _origin(key: str, origins: _Origins) -> tuple[str, str] | None:
    section, _, rest = key.partition(".")
    name = rest.split(".")[0].split("[")[0]
    return origins.get(f"{section}.{name}") if name else origins.get(section)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the TOML file, then the environment, then ``overrides`` (tests, CLI).
    A :class:`ConfigError` names the key, the value and where it was read (the file or the
    environment variable; nothing for a default or an override)."""
    merged: dict[str, dict[str, Any]] = {}
    layers: list[
        tuple[Mapping[str, Any], Mapping[str, Mapping[str, str]] | None, tuple[str, str] | None]
    ] = []
    if path is not None:
        where = str(path)
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(
                f"配置文件 {where!r} 不存在", f"config file {where!r} not found"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"配置文件 {where!r} 不是有效的 TOML（{exc}）", f"config file {where!r}: {exc}"
            ) from None
        layers.append((data, None, (f"配置文件 {where}", f"config file {where}")))
    env = _env_values(os.environ if environ is None else environ)
    layers.append(
        (
            {s: {k: v for k, (v, _) in t.items()} for s, t in env.items()},
            {s: {k: var for k, (_, var) in t.items()} for s, t in env.items()},
            None,
        )
    )
    if overrides:
        layers.append((overrides, None, None))
    origins: _Origins = {}
    for layer, variables, source in layers:
        for section, table in layer.items():
            if not isinstance(table, Mapping):
                raise ConfigError(
                    f"配置节 {section!r} 应为表（table），而不是 {table!r}",
                    f"config section {section!r} must be a table, got {table!r}",
                    key=section,
                )
            merged.setdefault(section, {}).update(table)
            for name in table:
                var = variables[section][name] if variables else None
                here = (f"环境变量 {var}", f"environment variable {var}") if var else source
                for key in (f"{section}.{name}", section):
                    if here is None:
                        origins.pop(key, None)
                    else:
                        origins[key] = here
    try:
        return typing.cast(Config, _build(Config, merged, ""))
    except ConfigError as exc:
        origin = _origin(exc.key, origins)
        if origin is None:
            raise
        raise exc.within(*origin) from None
