"""The ``remotecase`` command: ``serve``, ``token``, ``custody``, ``case``, ``bench``..."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import ssl
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import i18n

if TYPE_CHECKING:
    from aiohttp import web
from .config import Config, ConfigError, LogConfig, load_config


class _MalformedHttpFilter(logging.Filter):
    """aiohttp logs a traceback at ERROR for every malformed HTTP request it answers 400 (a
    scanner can fill the log with them); keep one line at WARNING instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        if record.exc_info and isinstance(record.exc_info[1], HttpProcessingError):
            error = record.exc_info[1]
            what = (
                str(error.message).strip().splitlines()[0]
                if str(error.message).strip()
                else type(error).__name__
            )
            record.args = (record.getMessage(), what)
            record.msg = "%s: answered 400 (%s)"
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _configure_logging(log: LogConfig) -> None:
    from .logs import configure

    configure(log.level, log.format)  # every line names its room, participant and track
    logging.getLogger("aiohttp.server").addFilter(_MalformedHttpFilter())
    # at INFO aioice logs every candidate pair, with the parties' addresses, and aiortc every
    # transport state: the media libraries say only what goes wrong
    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load(args: argparse.Namespace) -> Config:
    """The configuration: defaults, the ``--config`` file, ``REMOTECASE_*`` variables, then the
    command's flags (``serve --host/--port/--dev``), all validated alike."""
    overrides: dict[str, dict[str, Any]] = {}
    if getattr(args, "dev", False):
        overrides["auth"] = {"dev_join": True}
    server: dict[str, Any] = {}
    if getattr(args, "host", None) is not None:
        server["host"] = args.host
    if getattr(args, "port", None) is not None:
        port = str(args.port).strip()
        if not (port.isascii() and port.isdigit()):
            print(i18n.both("cli.bad_port", port=args.port), file=sys.stderr)
            raise SystemExit(2)
        server["port"] = int(port)
    if server:
        overrides["server"] = server
    try:
        return load_config(args.config, overrides=overrides or None)
    except ConfigError as exc:
        zh = i18n.text("cli.config_error", "zh-CN", error=exc.zh)
        print(f"{zh} / {i18n.text('cli.config_error', 'en', error=exc.en)}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_keys(config: Config) -> str | None:
    """Make the keys on first start and refuse unsafe ones before anything listens."""
    from recorder.keys import KeyEncryptionKey, KeyProblem, load_or_create_signing_key

    try:
        load_or_create_signing_key(config.keys_dir / "custody-ed25519.pem")
        KeyEncryptionKey.load_or_create(config.keys_dir / "recording-kek.key")
    except KeyProblem as exc:
        return str(exc)
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app

    config = _load(args)
    _configure_logging(config.log)
    ssl_context = None
    scheme = "http"
    if config.server.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
        scheme = "https"
    host, port = config.server.host, config.server.port
    problem = _check_keys(config)
    if problem:
        print(i18n.both("cli.error", error=problem), file=sys.stderr)
        return 2
    workers = config.server.workers or (os.cpu_count() or 1)
    if "REMOTECASE_WORKER_INDEX" not in os.environ:
        _first_start(args, config, scheme)
    if workers > 1:
        from .front import run_supervised

        print(
            i18n.both(
                "cli.serving_workers",
                url=f"{scheme}://{host}:{port}/",
                workers=workers,
                data=config.data_dir.resolve(),
            ),
            flush=True,
        )
        asyncio.run(run_supervised(config, workers, host, port, ssl_context))
        return 0
    if "REMOTECASE_WORKER_INDEX" in os.environ:
        import socket

        from .front import report_port

        _die_with_parent()
        # a worker binds the port it was given (0: any free one) and tells the supervisor
        # which it got; connections wait in the listening queue until the app serves them
        sock = socket.create_server((host, port))
        report_port(sock)
        web.run_app(
            _bounded_stop(create_app(config)),
            sock=sock,
            ssl_context=ssl_context,
            print=None,
            access_log=None,
            shutdown_timeout=SHUTDOWN_WAIT,
        )
        return 0
    print(
        i18n.both(
            "cli.serving",
            url=f"{scheme}://{host}:{port}/",
            how=i18n.text("cli.dev_mode" if config.auth.dev_join else "cli.invitation_needed"),
            data=config.data_dir.resolve(),
        ),
        flush=True,
    )
    web.run_app(
        _bounded_stop(create_app(config)),
        host=host,
        port=port,
        ssl_context=ssl_context,
        print=None,
        access_log=None,
        shutdown_timeout=SHUTDOWN_WAIT,
    )
    return 0


# On SIGTERM, how long aiohttp waits for requests still open once the calls have ended and the
# WebSockets are closed (its default is a minute); the whole stop is bounded in app.py.
SHUTDOWN_WAIT = 5.0


def _bounded_stop(app: web.Application) -> web.Application:
    """The process ends at most app.SHUTDOWN_LIMIT seconds after it starts to stop, however
    starved its event loop is (a thread's timer, armed first thing on SIGTERM)."""
    from .app import start_shutdown_watchdog

    async def arm(app: web.Application) -> None:
        start_shutdown_watchdog()

    app.on_shutdown.insert(0, arm)
    return app


SETUP_MINUTES = 30


def _first_start(args: argparse.Namespace, config: Config, scheme: str) -> None:
    """No officer yet: print a one-time setup link (loopback only, single use, expires) and the
    command that does the same, for the person at the console."""
    import ipaddress
    import secrets

    from .accounts.store import new_setup_link
    from .db import Database

    token = secrets.token_urlsafe(24)
    database = Database(config.data_dir / "control.sqlite3")
    try:
        made = database.run_sync(lambda c: new_setup_link(c, token, SETUP_MINUTES * 60.0))
    finally:
        database.close_sync()
    if not made:
        return
    command = "remotecase"
    if args.config:
        command += f" --config {args.config}"
    command += " officer add --username 用户名/NAME --role supervisor --brigade 大队/BRIGADE"
    lines = []
    for lang in i18n.LANGS:
        lines.append(i18n.text("cli.first_start", lang, minutes=SETUP_MINUTES))
        try:
            address = ipaddress.ip_address(config.server.host)
        except ValueError:
            address = None
        port = config.server.port
        if address is not None and (address.is_loopback or address.is_unspecified) and port:
            host = "[::1]" if address.version == 6 and address.is_loopback else "127.0.0.1"
            link = f"{scheme}://{host}:{port}/setup#t={token}"
            lines.append("  " + i18n.text("cli.first_start_link", lang, link=link))
        lines.append("  " + i18n.text("cli.first_start_command", lang, command=command))
    print("\n".join(lines), flush=True)


def _die_with_parent() -> None:
    """A worker process ends when its supervisor does, even a supervisor killed with -9."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the request took effect
        raise SystemExit(0)


def cmd_token(args: argparse.Namespace) -> int:
    from .sessions.tokens import TokenSigner

    config = _load(args)
    signer = TokenSigner.from_file(config.secret_path())
    try:
        token = signer.mint(
            args.room,
            args.participant,
            name=args.name or "",
            role=args.role,
            ttl=args.ttl or config.auth.token_ttl,
        )
    except ValueError as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2
    print(token)
    if not config.auth.dev_join:
        print(
            "remotecase: 注意：服务器只在开发模式（remotecase serve --dev）下接受手工签发的令牌，"
            "且只用于不属于案件会话的房间；案件通话的令牌由控制面为开放的会话签发 / note: the "
            "server admits hand-minted tokens only in development mode (remotecase serve "
            "--dev), and only to rooms outside every case session; the control plane issues "
            "the tokens of case calls for open sessions",
            file=sys.stderr,
        )
    return 0


def cmd_bench_forwarding(args: argparse.Namespace) -> int:
    from bench.forwarding import run_forwarding_bench

    return asyncio.run(
        run_forwarding_bench(
            subscribers=args.subscribers,
            seconds=args.seconds,
            as_json=args.json,
            bitrate=args.bitrate,
            record=args.record,
            verify=args.verify,
            face_video=args.face_video,
        )
    )


def _witness(config: Config):  # type: ignore[no-untyped-def]
    from recorder.witness import configured_witness

    return configured_witness(
        config.custody.witness,
        config.custody.witness_path(config.keys_dir),
        config.custody.checkpoints_path(config.keys_dir),
    )


def cmd_custody_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recorder.keys import KeyEncryptionKey, KeyProblem, key_id, load_public_key
    from recorder.verify import verify_path
    from recorder.witness import load_checkpoints

    config = _load(args)
    target = Path(args.path)
    if not args.public_key:
        # never silently trust the key of the server being checked: say which one to pass
        configured = config.keys_dir / "custody-ed25519.pub.pem"
        hint = ""
        if configured.exists():
            try:
                hint = (
                    f" 本机配置的公钥 / the configured key here: {configured} (key id "
                    f"{key_id(load_public_key(configured.read_bytes()))})."
                )
            except KeyProblem:
                pass
        print(
            "remotecase: 请用 --public-key 指定您信任的托管公钥（主管机关公布的那把）。"
            " / pass --public-key with the custody public key you trust (the one the "
            "authority published); verification never picks a key by itself." + hint,
            file=sys.stderr,
        )
        return 2
    try:
        publics = [load_public_key(Path(p).read_bytes()) for p in args.public_key]
        kek = KeyEncryptionKey.load(Path(args.kek), guard=False) if args.kek else None
        witness = load_public_key(Path(args.witness_key).read_bytes()) if args.witness_key else None
        checkpoints = load_checkpoints(Path(args.checkpoint)) if args.checkpoint else []
    except (KeyProblem, OSError) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2

    def heading(lang: str) -> str:
        comma = "，" if lang == "zh-CN" else ", "
        keys = comma.join(
            i18n.text("report.verify.key", lang, id=key_id(k), path=p)
            for k, p in zip(publics, args.public_key, strict=True)
        )
        return (
            i18n.text("report.verify.keys", lang, keys=keys)
            + (
                i18n.text("report.verify.witness", lang, id=key_id(witness))
                if witness is not None
                else ""
            )
            + (
                i18n.text(
                    "report.verify.checkpoints",
                    lang,
                    count=len(checkpoints),
                    size=max(c.tree_size for c in checkpoints),
                )
                if checkpoints
                else ""
            )
        )

    print(f"{heading('zh-CN')} / {heading('en')}")
    if not checkpoints:
        print(
            "注意：未给出 --checkpoint，无法发现日志被回滚到较早的签名树头。 / note: no "
            "--checkpoint given: a rollback of the log to an earlier signed head cannot be "
            "detected (docs/custody.md, the witness and checkpoints)"
        )
    try:
        findings = verify_path(
            target,
            public_key=publics,
            custody_dir=Path(args.custody) if args.custody else None,
            kek=kek,
            checkpoints=checkpoints,
            witness=witness,
        )
    except FileNotFoundError as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if not f.ok]
    print(
        i18n.both("report.verify.summary", passed=len(findings) - len(failed), failed=len(failed))
    )
    return 1 if failed else 0


def cmd_custody_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from recorder.custody import CustodyLog
    from recorder.export import export_recording
    from recorder.keys import KeyEncryptionKey, KeyProblem, load_or_create_signing_key
    from recorder.witness import WitnessRefused

    config = _load(args)
    recording_dir = Path(args.recording)
    if not recording_dir.is_dir():
        recording_dir = config.data_dir / "recordings" / args.recording
    if not (recording_dir / "manifest.json").exists():
        print(i18n.both("cli.no_recording", path=recording_dir), file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists():
        print(i18n.both("cli.out_exists", path=out), file=sys.stderr)
        return 2
    key_file = config.keys_dir / "custody-ed25519.pem"
    kek_file = config.keys_dir / "recording-kek.key"
    if not key_file.exists() or not kek_file.exists():
        print(i18n.both("cli.no_keys", path=config.keys_dir), file=sys.stderr)
        return 2
    try:
        signing_key = load_or_create_signing_key(key_file)
        kek = KeyEncryptionKey.load_or_create(kek_file)
        custody = CustodyLog(config.data_dir / "custody", signing_key, witness=_witness(config))
        try:
            result = export_recording(
                recording_dir=recording_dir,
                custody=custody,
                kek=kek,
                signing_key=signing_key,
                out=out,
                actor=args.actor,
                reason=args.reason,
                label_font=config.recording.label_font_path,
            )
        finally:
            custody.close()
    except (KeyProblem, ValueError, WitnessRefused) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 1
    print(
        i18n.both(
            "report.export.done",
            package=result["package"],
            files=len(result["files"]),
            index=result["export_index"],
        )
    )
    return 0


def cmd_case_export(args: argparse.Namespace) -> int:
    """The case package (卷宗): docs/casefile.md. Runs next to a running server (the custody
    log's flock and SQLite's WAL let both go on), reading the database without writing to it
    until the export is done and audited."""
    import datetime
    import sqlite3
    from pathlib import Path

    from recorder.custody import CustodyLog
    from recorder.keys import KeyEncryptionKey, KeyProblem, load_or_create_signing_key
    from recorder.witness import WitnessRefused

    from .access import audit
    from .casefile.package import CaseFileError, export_case
    from .db import Database
    from .deadlines.calendar import CalendarError
    from .deadlines.limits import LimitsError
    from .deadlines.rules import CHINA, load_rules

    config = _load(args)
    out = Path(args.out)
    if out.exists():
        print(i18n.both("cli.out_exists", path=out), file=sys.stderr)
        return 2
    if not (args.case.isascii() and args.case.isdigit()):
        print(
            f"remotecase：案件编号应为数字 / the case is a number: {args.case!r}", file=sys.stderr
        )
        return 2
    case_id = int(args.case)
    key_file = config.keys_dir / "custody-ed25519.pem"
    kek_file = config.keys_dir / "recording-kek.key"
    database = config.data_dir / "control.sqlite3"
    if not key_file.exists() or not kek_file.exists():
        print(i18n.both("cli.no_keys", path=config.keys_dir), file=sys.stderr)
        return 2
    if not database.exists():
        print(f"remotecase：找不到数据库 {database} / no database at {database}", file=sys.stderr)
        return 2
    try:
        rules = load_rules(config.deadlines.calendar, config.deadlines.limits)
    except (CalendarError, LimitsError):
        rules = None  # the timeline then says its deadlines were not counted
    zh = i18n.catalog("zh-CN")
    labels = {k[len("timeline.") :]: v for k, v in zh.items() if k.startswith("timeline.")}
    try:
        signing_key = load_or_create_signing_key(key_file)
        kek = KeyEncryptionKey.load_or_create(kek_file)
        custody = CustodyLog(config.data_dir / "custody", signing_key, witness=_witness(config))
        conn = sqlite3.connect(database, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("BEGIN")  # one snapshot of the tables for the whole package
            result = export_case(
                conn=conn,
                case_id=case_id,
                data_dir=config.data_dir,
                custody=custody,
                kek=kek,
                signing_key=signing_key,
                rules=rules,
                today=datetime.datetime.now(CHINA).date(),
                labels=labels,
                out=out,
                actor=args.actor,
                reason=args.reason,
                label_font=config.recording.label_font_path,
            )
        finally:
            conn.close()
            custody.close()
    except (CaseFileError, KeyProblem, ValueError, OSError, WitnessRefused) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 1
    db = Database(database)
    try:
        db.run_sync(
            lambda c: audit(
                c,
                args.actor,
                "case.exported",
                f"case:{case_id}",
                case_id,
                args.reason,
                out=str(out),
                export_index=result["export_index"],
            )
        )
    finally:
        db.close_sync()
    print(
        f"卷宗已导出到 {result['package']}：文书 {result['documents']} 份，材料 "
        f"{result['materials']} 件，录像 {result['recordings']} 段，时间线 "
        f"{result['timeline']} 项，共 {result['files']} 个文件；监管日志条目 "
        f"{result['export_index']} / exported to "
        f"{result['package']} ({result['files']} files), logged as custody entry "
        f"{result['export_index']}"
    )
    return 0


def cmd_case_verify(args: argparse.Namespace) -> int:
    """Check a case package offline: no configuration, server or database is read."""
    from pathlib import Path

    from recorder.keys import KeyProblem, key_id, load_public_key

    from .casefile.verify import report, verify_case_package

    root = Path(args.path)
    if not args.public_key:
        print(
            "remotecase：请用 --public-key 指定您信任的托管公钥（主管机关公布的那把）/ pass "
            "--public-key with the custody public key you trust (the one the authority "
            "published); verification never picks a key by itself",
            file=sys.stderr,
        )
        return 2
    if not root.is_dir():
        print(f"remotecase：{root} 不是目录 / {root} is not a directory", file=sys.stderr)
        return 2
    try:
        publics = [load_public_key(Path(p).read_bytes()) for p in args.public_key]
        witness = load_public_key(Path(args.witness_key).read_bytes()) if args.witness_key else None
    except (KeyProblem, OSError) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2
    print(
        "公钥 / public key: "
        + ", ".join(f"{key_id(k)} ({p})" for k, p in zip(publics, args.public_key, strict=True))
        + (f"; 见证公钥 / witness key {key_id(witness)}" if witness is not None else "")
    )
    text, ok = report(verify_case_package(root, publics, witness))
    print(text)
    return 0 if ok else 1


def _rewrap_materials(database):  # type: ignore[no-untyped-def]
    """Rewrap the materials' data keys (rows of the control database) in one transaction."""
    import sqlite3

    def run(old, new) -> int:  # type: ignore[no-untyped-def]
        if not database.exists():
            return 0
        conn = sqlite3.connect(database, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(
                    "SELECT id, wrapped_key, kek_fingerprint FROM materials"
                ).fetchall()
            except sqlite3.OperationalError:  # a database from before materials
                conn.execute("ROLLBACK")
                return 0
            for material_id, wrapped, fingerprint in rows:
                if fingerprint != new.fingerprint:
                    conn.execute(
                        "UPDATE materials SET wrapped_key = ?, kek_fingerprint = ? WHERE id = ?",
                        (old.rewrap(wrapped, fingerprint, new), new.fingerprint, material_id),
                    )
            conn.execute("COMMIT")
            return len(rows)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    return run


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from control.documents.store import rewrap_keys as rewrap_document_keys
    from control.education.records import rewrap_keys as rewrap_education_keys
    from recorder.custody import CustodyLog
    from recorder.keys import KeyProblem, load_or_create_signing_key
    from recorder.rotation import rotate_kek, rotate_signing
    from recorder.witness import WitnessRefused

    config = _load(args)
    try:
        if args.signing:
            result = rotate_signing(
                config.keys_dir,
                config.data_dir / "custody",
                witness=_witness(config),
                actor=args.actor,
                reason=args.reason,
            )
            print(
                i18n.both(
                    "report.keys.signing_rotated",
                    old=result["old_key_id"],
                    new=result["new_key_id"],
                    index=result["log_index"],
                    public=config.keys_dir / "custody-ed25519.pub.pem",
                    retired=result["retired_public_key"],
                )
            )
        else:
            signing_key = load_or_create_signing_key(config.keys_dir / "custody-ed25519.pem")
            custody = CustodyLog(config.data_dir / "custody", signing_key, witness=_witness(config))
            try:
                result = rotate_kek(
                    config.keys_dir,
                    config.data_dir,
                    custody,
                    actor=args.actor,
                    reason=args.reason,
                    rewrap_rows=_rewrap_materials(Path(config.data_dir / "control.sqlite3")),
                    rewrap_documents=rewrap_document_keys(
                        Path(config.data_dir / "control.sqlite3")
                    ),
                    rewrap_education=rewrap_education_keys(
                        Path(config.data_dir / "control.sqlite3")
                    ),
                )
            finally:
                custody.close()
            print(
                i18n.both(
                    "report.keys.kek_rotated",
                    old=result["old_kek"],
                    new=result["new_kek"],
                    recordings=result["recordings"],
                    materials=result["materials"],
                    faces=result["faces"],
                    documents=result["documents"],
                    education=result["education_records"],
                    index=result["log_index"],
                )
            )
    except (KeyProblem, WitnessRefused, OSError, ValueError) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 1
    return 0


def cmd_bench_load(args: argparse.Namespace) -> int:
    from bench.load import main

    return main(args)


def cmd_bench_compare_janus(args: argparse.Namespace) -> int:
    from bench.load import main_compare

    return main_compare(args)


def cmd_bench_recorder(args: argparse.Namespace) -> int:
    from bench.recorder import run_recorder_bench

    return asyncio.run(run_recorder_bench(seconds=args.seconds, as_json=args.json))


def _verifier_spec(config: Config):  # type: ignore[no-untyped-def]
    from verifier.engine import default_spec

    v = config.verifier
    return default_spec(
        threshold=v.threshold, calibrated_on=v.calibrated_on, min_face=20, runtime=v.facenet_runtime
    )


def cmd_verifier_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from verifier.engine import ModelError, load_engine
    from verifier.evaluate import EvalError, evaluate, plot

    config = _load(args)
    try:
        spec = _verifier_spec(config)
        engine = load_engine(spec)
        report = evaluate(
            Path(args.directory), engine, threshold=spec.threshold, target_far=args.target_far
        )
    except (EvalError, ModelError) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2
    if args.plot:
        plot(report, Path(args.plot))

    def line(label: str, value: str | None = None, /, **params: Any) -> None:
        """One row, Chinese then English: ``标签：值 / label: value`` (``value`` a catalog key,
        else ``params["raw"]`` the same in both languages)."""
        halves = []
        for lang in ("zh-CN", "en"):
            words = i18n.text(value, lang, **params) if value else str(params.get("raw", ""))
            colon = "：" if lang == "zh-CN" else ": "
            halves.append(f"{i18n.text(label, lang, **params)}{colon}{words}")
        print(" / ".join(halves))

    line("report.eval.engine", raw=spec.name)
    line(
        "report.eval.pairs",
        "report.eval.pairs_value",
        pairs=report["pairs"],
        same=report["same_pairs"],
        different=report["different_pairs"],
        images=report["images"],
    )
    line(
        "report.eval.detect_failures",
        raw=f"{report['detect_failures']}"
        + (f" ({', '.join(report['failed_images'])})" if report["failed_images"] else ""),
    )
    line(
        "report.eval.accuracy",
        "report.eval.accuracy_value",
        accuracy=f"{report['accuracy']:.4f}",
        threshold=f"{report['threshold']:.3f}",
    )
    line(
        "report.eval.best_threshold",
        "report.eval.best_value",
        threshold=f"{report['best_threshold']:.4f}",
        accuracy=f"{report['best_accuracy']:.4f}",
    )
    for row in report["tar_at_far"]:
        line(
            "report.eval.tar_at_far",
            "report.eval.tar_value",
            far=f"{row['far']:g}",
            tar=row["tar"],
            threshold=str(row["threshold"]) + (f" [{row['note']}]" if row["note"] else ""),
        )
    target = report["threshold_for_target_far"]
    line(
        "report.eval.target",
        far=f"{target['far']:g}",
        raw=f"{target['threshold']}" + (f" [{target['note']}]" if "note" in target else ""),
    )
    same, diff = report["same_scores"], report["different_scores"]
    line("report.eval.same_scores", "report.eval.same_value", **same)
    line("report.eval.different_scores", "report.eval.different_value", **diff)
    line("report.eval.d_prime", raw=report["d_prime"])
    hist = report["histogram"]
    line("report.eval.histogram_from", raw=" ".join(f"{b:>4}" for b in hist["from"]))
    line("report.eval.histogram_same", raw=" ".join(f"{n:>4}" for n in hist["same"]))
    line("report.eval.histogram_different", raw=" ".join(f"{n:>4}" for n in hist["different"]))
    line("report.eval.ms_per_image", raw=report["ms_per_image"])
    line("report.eval.dataset", raw=f"{report['dataset_sha256']} (calibrated_on)")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if not k.startswith("_")}))
    return 0


def cmd_verifier_enroll(args: argparse.Namespace) -> int:
    import asyncio as _asyncio
    from pathlib import Path

    from mediaserver.protocols import CloseReason
    from recorder.custody import CustodyLog
    from recorder.keys import KeyEncryptionKey, load_or_create_signing_key
    from verifier.enrollment import EnrollmentRejected, EnrollmentStore, QualityRules
    from verifier.service import Verifier, VerifierSettings

    from .db import Database

    config = _load(args)
    v = config.verifier
    database = Database(config.data_dir / "control.sqlite3")
    try:
        known = database.run_sync(
            lambda c: (
                c.execute(
                    "SELECT 1 FROM parties WHERE id = ? AND case_id = ?", (args.party, args.case)
                ).fetchone()
                is not None
            )
        )
    finally:
        database.close_sync()
    if not known:
        print(i18n.both("cli.no_party", case=args.case, party=args.party), file=sys.stderr)
        return 2
    signing_key = load_or_create_signing_key(config.keys_dir / "custody-ed25519.pem")
    kek = KeyEncryptionKey.load_or_create(config.keys_dir / "recording-kek.key")
    custody = CustodyLog(config.data_dir / "custody", signing_key)
    verifier = Verifier(
        _verifier_spec(config),
        VerifierSettings(
            enrollment=QualityRules(
                min_face=v.min_enroll_face, min_sharpness=v.min_enroll_sharpness
            )
        ),
        EnrollmentStore(config.data_dir / "faces", kek),
        custody=custody,
    )

    try:
        photo = Path(args.photo).read_bytes()
    except OSError as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 2

    async def run() -> dict[str, object]:
        try:
            return await verifier.enroll(
                f"case-{args.case}",
                f"party-{args.party}",
                photo,
                actor=f"operator:{args.actor}",
                case=str(args.case),
            )
        finally:
            await verifier.close(CloseReason.SHUTDOWN)

    try:
        record = _asyncio.run(run())
    except EnrollmentRejected as exc:
        print(
            i18n.text(
                "cli.enrollment_rejected",
                "zh-CN",
                code=exc.code,
                reason=i18n.text(f"enrollment.{exc.code}", "zh-CN")
                if i18n.has(f"enrollment.{exc.code}")
                else exc.message,
            )
            + " / "
            + i18n.text("cli.enrollment_rejected", "en", code=exc.code, reason=exc.message),
            file=sys.stderr,
        )
        return 1
    finally:
        custody.close()
    print(
        f"enrolled party {args.party} of case {args.case}: photo sha256 "
        f"{record['photo_sha256']}, quality {record['quality']}"
    )
    return 0


def cmd_bench_verifier(args: argparse.Namespace) -> int:
    from bench.verifier import run_verifier_bench

    return asyncio.run(
        run_verifier_bench(samples=args.samples, dev_set=args.dev_set, as_json=args.json)
    )


def cmd_bench_education(args: argparse.Namespace) -> int:
    from bench.education import run_education_bench

    return asyncio.run(
        run_education_bench(
            viewers=args.viewers,
            seconds=args.seconds,
            as_json=args.json,
            check_interval=args.check_interval,
            check_window=args.check_window,
            sample_interval=args.sample_interval,
            fps=args.fps,
            processes=args.processes,
            warmup=args.warmup,
            record=args.record,
        )
    )


def cmd_officer_add(args: argparse.Namespace) -> int:
    import getpass

    from .auth import create_officer
    from .db import Database

    config = _load(args)
    password = os.environ.get("REMOTECASE_NEW_PASSWORD") or (
        sys.stdin.readline().rstrip("\n")
        if not sys.stdin.isatty()
        else getpass.getpass("password: ")
    )
    database = Database(config.data_dir / "control.sqlite3")
    try:
        officer_id = database.run_sync(
            lambda c: create_officer(c, args.username, password, args.role, args.brigade)
        )
    except (ValueError, Exception) as exc:
        print(i18n.both("cli.error", error=exc), file=sys.stderr)
        return 1
    print(
        i18n.both(
            "cli.officer_added",
            username=args.username,
            role=args.role,
            brigade=args.brigade,
            id=officer_id,
        )
    )
    return 0


def cmd_officer_list(args: argparse.Namespace) -> int:
    from .accounts.store import list_officers
    from .db import Database

    config = _load(args)
    database = Database(config.data_dir / "control.sqlite3")
    try:
        officers = database.run_sync(list_officers)
    finally:
        database.close_sync()
    if not officers:
        print(i18n.both("cli.officer_none"))
        return 0
    print(i18n.both("cli.officer_header"))
    for o in officers:
        state = i18n.both("cli.officer_disabled_state" if o["disabled"] else "cli.officer_enabled")
        print(
            f"{o['id']}  {o['username']}  {o['role']}  {o['brigade']}  {state}  {o['created_at']}"
        )
    return 0


def cmd_officer_disable(args: argparse.Namespace) -> int:
    from .accounts.store import disable_by_name
    from .db import Database

    config = _load(args)
    actor = f"operator:{os.environ.get('USER', 'console')}"
    database = Database(config.data_dir / "control.sqlite3")
    try:
        found = database.run_sync(lambda c: disable_by_name(c, args.username, actor))
    finally:
        database.close_sync()
    if found is None:
        print(i18n.both("cli.no_such_officer", username=args.username), file=sys.stderr)
        return 1
    if found["was_disabled"]:
        print(i18n.both("cli.officer_already_disabled", username=args.username))
    else:
        print(
            i18n.both("cli.officer_disabled", username=args.username, logins=found["logins_ended"])
        )
    return 0


def cmd_documents(args: argparse.Namespace) -> int:
    """Everything is in documents/cli.py; the keys directory defaults to the configuration's."""
    from documents.cli import run

    return run(args, keys_dir=lambda: _load(args).keys_dir)


def cmd_delivery_outbox(args: argparse.Namespace) -> int:
    """The embedded outbox's notices (what an SMS or e-mail provider would have sent)."""
    import json as json_module

    from .db import Database
    from .delivery.channels import outbox

    config = _load(args)
    database = Database(config.data_dir / "control.sqlite3")
    try:
        rows = database.run_sync(lambda c: outbox(c, args.delivery))
    finally:
        database.close_sync()
    for row in rows:
        if args.json:
            print(json_module.dumps(row, ensure_ascii=False))
        else:
            # a party's delivery, or an attendance record sent to a company (education)
            about = (
                f"送达 {row['delivery_id']}"
                if row.get("delivery_id") is not None
                else f"学习记录发送 {row.get('edu_send_id')}"
            )
            print(
                f"#{row['id']} {about} {row['created_at']} "
                f"{row['channel']} -> {row['address']}\n  {row['text']}"
            )
    if not rows and not args.json:
        print("发件箱为空 / the outbox is empty")
    return 0


def cmd_delivery_calendar(args: argparse.Namespace) -> int:
    """Check a working-day calendar (and limits) file before a brigade uses it."""
    from pathlib import Path

    from .deadlines.calendar import CalendarError, load_calendar
    from .deadlines.limits import LimitsError, load_limits

    try:
        calendar = load_calendar(Path(args.file) if args.file else None)
        limits = load_limits(Path(args.limits) if args.limits else None)
    except (CalendarError, LimitsError) as exc:
        print(f"remotecase: {exc}", file=sys.stderr)
        return 1
    unconfirmed = sum(1 for d in calendar.days.values() if d.status == "expected")
    print(
        f"工作日历通过检查：{'、'.join(str(y) for y in sorted(calendar.years))} 年，"
        f"{len(calendar.days)} 个日期（{unconfirmed} 个待国务院通知确认），{len(limits)} 项期限 / "
        f"calendar OK: {len(calendar.days)} dates ({unconfirmed} expected, not yet confirmed), "
        f"{len(limits)} limits"
    )
    return 0


class _ChineseFirst(argparse.HelpFormatter):
    """argparse's help with its own headings in Chinese first."""

    def add_usage(
        self,
        usage: str | None,
        actions: Any,
        groups: Any,
        prefix: str | None = None,
    ) -> None:
        super().add_usage(usage, actions, groups, prefix or "用法 / usage: ")


def _help(parser: argparse.ArgumentParser) -> None:
    parser._optionals.title = "选项 / options"
    parser.add_argument(
        "-h", "--help", action="help", help="显示本帮助并退出 / show this help and exit"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remotecase", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (defaults are embedded)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="运行服务器 / run the server",
        description="运行服务器：参数覆盖配置文件和 REMOTECASE_* 环境变量中的值，并同样校验 / "
        "run the server: the flags override the configuration file's and the REMOTECASE_* "
        "variables' values and are checked the same way",
        formatter_class=_ChineseFirst,
        add_help=False,
    )
    _help(serve)
    serve.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="TOML 配置文件（未给出时使用内置默认值）/ TOML configuration file "
        "(defaults are embedded)",
    )
    serve.add_argument(
        "--host",
        metavar="ADDRESS",
        help="监听地址，覆盖 server.host（默认 127.0.0.1）/ address to listen on, overrides "
        "server.host (default 127.0.0.1)",
    )
    serve.add_argument(
        "--port",
        metavar="PORT",
        help="监听端口 0-65535，覆盖 server.port（默认 8080）/ TCP port 0-65535, overrides "
        "server.port (default 8080)",
    )
    serve.add_argument(
        "--dev",
        action="store_true",
        help="开发模式（auth.dev_join）：页面自行签发案件之外房间的令牌，仅限回环地址 / "
        "development mode (auth.dev_join): the page mints its own tokens "
        "for rooms outside every case; loopback binds only",
    )
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="mint a join token")
    token.add_argument("--room", required=True)
    token.add_argument("--participant", required=True)
    token.add_argument("--name")
    token.add_argument(
        "--role", default="party", choices=("party", "officer", "supervisor", "observer")
    )
    token.add_argument("--ttl", type=int, help="seconds (default: auth.token_ttl)")
    token.set_defaults(func=cmd_token)

    custody = sub.add_parser("custody", help="recordings and their chain of custody")
    custody_sub = custody.add_subparsers(dest="custody", required=True)
    verify = custody_sub.add_parser(
        "verify", help="check a stored recording or an export package offline"
    )
    verify.add_argument("path", help="a recording directory or an export package")
    verify.add_argument(
        "--public-key",
        action="append",
        help="the custody public key you "
        "trust (PEM; any key of the rotation chain; repeat for several); required",
    )
    verify.add_argument(
        "--custody",
        help="custody log directory of a stored recording (default: the data directory's)",
    )
    verify.add_argument("--kek", help="key-encryption key file, to decrypt and check media too")
    verify.add_argument(
        "--checkpoint",
        help="a trusted earlier tree head: a checkpoint file, or "
        "the published checkpoints directory (each one is checked)",
    )
    verify.add_argument(
        "--witness-key",
        help="the witness public key (PEM): every head from "
        "the first countersigned one on must carry its countersignature",
    )
    verify.set_defaults(func=cmd_custody_verify)
    export = custody_sub.add_parser("export", help="write a package for court")
    export.add_argument("recording", help="recording ID or directory")
    export.add_argument("--out", required=True, help="new directory for the package")
    export.add_argument(
        "--actor", default=os.environ.get("USER", "operator"), help="who exports (logged)"
    )
    export.add_argument("--reason", default="export for review", help="why (logged)")
    export.set_defaults(func=cmd_custody_export)

    case = sub.add_parser("case", help="卷宗 / the case file: export and verify offline")
    case_sub = case.add_subparsers(dest="case_command", required=True)
    case_export = case_sub.add_parser(
        "export", help="write the case package (timeline, documents, materials, recordings)"
    )
    case_export.add_argument("case", help="the case's number")
    case_export.add_argument("--out", required=True, help="new directory for the package")
    case_export.add_argument(
        "--actor", default=os.environ.get("USER", "operator"), help="who exports (logged)"
    )
    case_export.add_argument("--reason", default="卷宗归档 / case file", help="why (logged)")
    case_export.set_defaults(func=cmd_case_export)
    case_verify = case_sub.add_parser("verify", help="check a case package offline")
    case_verify.add_argument("path", help="the package directory")
    case_verify.add_argument(
        "--public-key",
        action="append",
        help="the custody public key you trust (PEM; repeat for several); required",
    )
    case_verify.add_argument(
        "--witness-key", help="the witness public key (PEM): the head must be countersigned"
    )
    case_verify.set_defaults(func=cmd_case_verify)

    keys = sub.add_parser("keys", help="the custody signing key and the key-encryption key")
    keys_sub = keys.add_subparsers(dest="keys", required=True)
    rotate = keys_sub.add_parser("rotate", help="start a new key (run with the server stopped)")
    which = rotate.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--signing",
        action="store_true",
        help="a new custody signing key, handed over in a log entry both sign",
    )
    which.add_argument(
        "--kek",
        action="store_true",
        help="a new key-encryption key: rewrap every data key, media untouched",
    )
    rotate.add_argument(
        "--actor", default=os.environ.get("USER", "operator"), help="who rotates (logged)"
    )
    rotate.add_argument("--reason", default="key rotation", help="why (logged)")
    rotate.set_defaults(func=cmd_keys_rotate)

    verifier = sub.add_parser("verifier", help="face verification")
    verifier_sub = verifier.add_subparsers(dest="verifier", required=True)
    evaluate = verifier_sub.add_parser("eval", help="accuracy and calibration on a labelled set")
    evaluate.add_argument("directory", help="images and pairs.csv (image_a,image_b,label)")
    evaluate.add_argument("--target-far", type=float, default=0.01)
    evaluate.add_argument("--plot", help="PNG of the score distributions and the ROC")
    evaluate.add_argument("--json", action="store_true", help="last line: one JSON object")
    evaluate.set_defaults(func=cmd_verifier_eval)
    enroll = verifier_sub.add_parser("enroll", help="store a party's reference photo")
    enroll.add_argument("--case", type=int, required=True)
    enroll.add_argument("--party", type=int, required=True)
    enroll.add_argument("--actor", default=os.environ.get("USER", "operator"))
    enroll.add_argument("photo")
    enroll.set_defaults(func=cmd_verifier_enroll)

    officer = sub.add_parser("officer", help="民警账号 / officer accounts")
    officer_sub = officer.add_subparsers(dest="officer", required=True)
    add = officer_sub.add_parser(
        "add",
        help="创建民警账号（密码从标准输入或 REMOTECASE_NEW_PASSWORD 读取）/ create an officer "
        "(password on stdin or REMOTECASE_NEW_PASSWORD)",
    )
    add.add_argument("--username", required=True, help="用户名 / user name")
    add.add_argument(
        "--role",
        choices=("officer", "supervisor", "observer"),
        default="officer",
        help="角色 / role",
    )
    add.add_argument("--brigade", required=True, help="所属大队 / brigade")
    add.set_defaults(func=cmd_officer_add)
    listing = officer_sub.add_parser("list", help="列出民警账号 / list officer accounts")
    listing.set_defaults(func=cmd_officer_list)
    disable = officer_sub.add_parser(
        "disable",
        help="停用民警账号并结束其登录（已记入审计）/ disable an officer and end its logins "
        "(audited)",
    )
    disable.add_argument("username", help="用户名 / user name")
    disable.set_defaults(func=cmd_officer_disable)

    docs_parser = sub.add_parser(
        "documents", help="legal documents: templates, numbers, signatures, offline verification"
    )
    from documents.cli import add_arguments as documents_arguments

    documents_arguments(docs_parser)
    docs_parser.set_defaults(func=cmd_documents)

    deliveries = sub.add_parser("delivery", help="electronic delivery: the outbox, the calendar")
    delivery_sub = deliveries.add_subparsers(dest="delivery_command", required=True)
    box = delivery_sub.add_parser("outbox", help="the notices in the embedded outbox")
    box.add_argument("--delivery", type=int, help="only this delivery's")
    box.add_argument("--json", action="store_true", help="one JSON object a line")
    box.set_defaults(func=cmd_delivery_outbox)
    cal = delivery_sub.add_parser("calendar", help="check a working-day calendar file")
    cal.add_argument("--file", help="the calendar (default: the one shipped)")
    cal.add_argument("--limits", help="the limits file (default: the one shipped)")
    cal.set_defaults(func=cmd_delivery_calendar)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    fwd = bench_sub.add_parser("forwarding", help="SFU CPU per forwarded packet")
    fwd.add_argument("--subscribers", type=int, default=10)
    fwd.add_argument("--seconds", type=float, default=10.0)
    fwd.add_argument("--bitrate", type=int, default=1_000_000, help="publisher video bits/s")
    fwd.add_argument("--record", action="store_true", help="record the room while measuring")
    fwd.add_argument(
        "--verify",
        action="store_true",
        help="the publisher shows an enrolled face, checked while measuring",
    )
    fwd.add_argument(
        "--face-video",
        action="store_true",
        help="the publisher shows a face (the baseline for --verify)",
    )
    fwd.add_argument("--json", action="store_true", help="last line: one JSON object")
    fwd.set_defaults(func=cmd_bench_forwarding)
    load = bench_sub.add_parser("load", help="rooms of real clients: latency, loss, capacity")
    from bench.load import add_arguments as load_arguments

    load_arguments(load)
    load.set_defaults(func=cmd_bench_load)
    janus = bench_sub.add_parser(
        "compare-janus",
        help="the same load against remotecase and Debian's Janus (VideoRoom), side by side",
    )
    load_arguments(janus, compare=True)
    janus.set_defaults(func=cmd_bench_compare_janus)
    rec = bench_sub.add_parser("recorder", help="recording cost: segment MB/s, CPU per stream")
    rec.add_argument("--seconds", type=float, default=10.0)
    rec.add_argument("--json", action="store_true", help="last line: one JSON object")
    rec.set_defaults(func=cmd_bench_recorder)
    ver = bench_sub.add_parser("verifier", help="face check cost and parties per core")
    ver.add_argument("--samples", type=int, default=30)
    ver.add_argument("--dev-set", help="a labelled directory with pairs.csv, for accuracy")
    ver.add_argument("--json", action="store_true", help="last line: one JSON object")
    ver.set_defaults(func=cmd_bench_verifier)
    edu = bench_sub.add_parser(
        "education", help="an education session: N viewers with face checks, CPU, verifier, loss"
    )
    edu.add_argument("--viewers", type=int, default=100)
    edu.add_argument("--seconds", type=float, default=60.0, help="the measured window")
    edu.add_argument("--warmup", type=float, default=10.0)
    edu.add_argument("--check-interval", type=float, default=20.0, help="education.check_interval")
    edu.add_argument("--check-window", type=float, default=10.0, help="education.check_window")
    edu.add_argument(
        "--sample-interval",
        type=float,
        default=5.0,
        help="education.sample_interval per viewer (from 3 s: keyframe sampling)",
    )
    edu.add_argument("--fps", type=int, default=5, help="the viewers' camera frame rate")
    edu.add_argument("--processes", type=int, default=4, help="worker processes of viewers")
    edu.add_argument(
        "--record",
        action="store_true",
        help="record the session as the product does (recording.sessions), with the "
        "recorder's figures in the report",
    )
    edu.add_argument("--json", action="store_true", help="last line: one JSON object")
    edu.set_defaults(func=cmd_bench_education)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
