"""``remotecase documents ...``: templates, rendering, numbers, the CA, signing, verification.

``control/cli.py`` only adds the ``documents`` parser (:func:`add_arguments`) and calls
:func:`run`; everything else is here, so the command works wherever the CLI lives.
Exit codes: 0 done (``verify``: every check passed), 1 a problem was found or refused, 2 bad use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="documents", required=True)

    t = sub.add_parser("templates", help="check the templates and list the kinds")
    t.add_argument("--dir", help="a brigade's template directory (default: the shipped ones)")

    r = sub.add_parser("render", help="make a PDF/A document from case data (JSON)")
    r.add_argument("kind")
    r.add_argument("data", nargs="?", help="case data JSON file (or --sample)")
    r.add_argument("--sample", action="store_true", help="use the built-in sample data")
    r.add_argument("--out", required=True, help="the PDF to write (must not exist)")
    r.add_argument("--dir", help="template directory")
    r.add_argument("--numbers", help="SQLite file of document numbers: take the next number")
    r.add_argument("--number", default="", help="a number already taken (printed as given)")
    r.add_argument("--year", type=int, default=datetime.now(UTC).year)

    n = sub.add_parser("number", help="document numbers")
    nsub = n.add_subparsers(dest="number_cmd", required=True)
    for name in ("list", "void"):
        p = nsub.add_parser(name)
        p.add_argument("--numbers", required=True, help="SQLite file of document numbers")
        p.add_argument("--brigade", required=True)
        p.add_argument("--kind", required=True)
        p.add_argument("--year", type=int, default=datetime.now(UTC).year)
        if name == "void":
            p.add_argument("--seq", type=int, required=True)
            p.add_argument("--reason", required=True)

    ca = sub.add_parser("ca", help="the deployment's certificate authority")
    ca.add_argument("--keys", help="keys directory (default: the configuration's keys.dir)")
    casub = ca.add_subparsers(dest="ca_cmd", required=True)
    root = casub.add_parser("root", help="print the root certificate (PEM): give it to courts")
    root.add_argument("--out", help="write it to this file instead")
    casub.add_parser("crl", help="write the current CRL to crl.der and print its path")
    rev = casub.add_parser("revoke", help="revoke a certificate by serial (hex)")
    rev.add_argument("serial")
    rev.add_argument("--reason", default="key_compromise")

    s = sub.add_parser("sign", help="sign as an officer or the department's seal (built-in CA)")
    s.add_argument("pdf")
    s.add_argument("--out", required=True)
    s.add_argument("--field", required=True, help="signature field from the manifest")
    s.add_argument("--role", choices=("officer", "seal"), required=True)
    s.add_argument("--officer-id", default="")
    s.add_argument("--name", default="")
    s.add_argument("--brigade", default="")
    s.add_argument("--department", required=True, help="the issuing department's name")
    s.add_argument("--seal-image", help="PNG of the registered seal (default: drawn)")
    s.add_argument(
        "--seal-name",
        help="the seal's name on the drawn image (default: the "
        "caption of the field, e.g. 交通事故处理专用章)",
    )
    s.add_argument("--keys", help="keys directory (default: the configuration's keys.dir)")
    s.add_argument("--tsa-url", help="an external RFC 3161 time-stamp authority")

    st = sub.add_parser("state", help="which required signatures are present and missing")
    st.add_argument("pdf")

    v = sub.add_parser("verify", help="validate every signature offline and name every problem")
    v.add_argument("pdf")
    v.add_argument(
        "--trust",
        action="append",
        default=[],
        help="root certificate (PEM) to trust; repeat for several",
    )
    v.add_argument(
        "--crl",
        action="append",
        default=[],
        help="a newer CRL (DER or PEM) than the one inside the document",
    )
    v.add_argument("--json", action="store_true", help="one JSON object on stdout")


def _err(msg: str) -> int:
    print(f"remotecase documents: {msg}", file=sys.stderr)
    return 1


def _keys(args: argparse.Namespace, default: Callable[[], Path] | None) -> Path:
    if args.keys:
        return Path(args.keys)
    if default is None:
        raise SystemExit(_err("请用 --keys 指定密钥目录 / give the keys directory with --keys"))
    return default()


def _write_new(path: Path, data: bytes) -> None:
    with path.open("xb") as f:
        f.write(data)


def run(args: argparse.Namespace, keys_dir: Callable[[], Path] | None = None) -> int:
    from .errors import DocumentError

    try:
        return _run(args, keys_dir)
    except DocumentError as exc:
        return _err(str(exc))
    except FileExistsError as exc:
        return _err(
            f"文件已存在，不覆盖：{exc.filename} / file exists, not overwritten: {exc.filename}"
        )
    except (OSError, json.JSONDecodeError) as exc:
        return _err(f"{exc}")


def _run(args: argparse.Namespace, keys_dir: Callable[[], Path] | None) -> int:
    cmd = args.documents
    if cmd == "templates":
        from .templates import load_templates

        templates = load_templates(Path(args.dir) if args.dir else None)
        for kind, t in sorted(templates.items()):
            signers = "、".join(s.label for s in t.signers)
            print(f"{kind}\t{t.title}\t{len(t.fields)} 个必填字段\t签名：{signers}")
        print(f"模板检查通过（{len(templates)} 种）/ templates OK ({len(templates)} kinds)")
        return 0
    if cmd == "render":
        return _render(args)
    if cmd == "number":
        from .numbering import NumberStore

        store = NumberStore(Path(args.numbers))
        try:
            if args.number_cmd == "void":
                n = store.void(args.brigade, args.kind, args.year, args.seq, args.reason)
                print(f"已作废 / voided: {n.text}（{n.void_reason}）")
                return 0
            for n in store.numbers(args.brigade, args.kind, args.year):
                extra = f"\t{n.void_reason}" if n.void_reason else ""
                print(f"{n.seq}\t{n.text}\t{n.status}\t{n.document_id or ''}{extra}")
            gaps = store.gaps(args.brigade, args.kind, args.year)
            if gaps:
                return _err(f"编号有缺口：{gaps} / numbers missing: {gaps}")
            return 0
        finally:
            store.close()
    if cmd == "ca":
        from .ca import DeploymentCA

        ca = DeploymentCA(_keys(args, keys_dir))
        if args.ca_cmd == "root":
            if args.out:
                _write_new(Path(args.out), ca.root_pem)
            else:
                sys.stdout.write(ca.root_pem.decode())
        elif args.ca_cmd == "crl":
            print(ca.publish_crl())
        else:
            ca.revoke(int(args.serial, 16), args.reason)
            print(
                f"已吊销 {args.serial}，CRL 已更新：{ca.dir / 'crl.der'} / revoked, CRL published"
            )
        return 0
    if cmd == "sign":
        return _sign(args, keys_dir)
    if cmd == "state":
        from .verify import document_state

        state = document_state(Path(args.pdf).read_bytes())
        print(json.dumps(state.as_json(), ensure_ascii=False, indent=1))
        return 0
    if cmd == "verify":
        return _verify(args)
    return 2


def _render(args: argparse.Namespace) -> int:
    from .numbering import NumberStore
    from .render import render
    from .samples import sample
    from .templates import load_templates

    templates = load_templates(Path(args.dir) if args.dir else None)
    template = templates.get(args.kind)
    if template is None:
        return _err(
            f"没有文书种类 {args.kind}（可用：{', '.join(sorted(templates))}）/ no kind {args.kind}"
        )
    if args.sample:
        data: dict[str, Any] = sample(args.kind)
    elif args.data:
        data = json.loads(Path(args.data).read_text("utf-8"))
    else:
        return _err("请给出数据文件或 --sample / give a data file or --sample")
    template.check(data)  # before a number is taken: a refused document uses no number
    out = Path(args.out)
    if out.exists():
        raise FileExistsError(0, "exists", str(out))
    number = args.number
    if not args.numbers:
        doc = render(template, data, number)
        _write_new(out, doc.pdf)
    else:
        store = NumberStore(Path(args.numbers))
        try:
            brigade = str(data["department"]["brigade"])
            taken = store.take(
                brigade,
                template.kind,
                args.year,
                template.short,
                str(data["department"].get("abbr", "")),
            )
            number = taken.text
            try:
                doc = render(template, data, number)
                _write_new(out, doc.pdf)
            except BaseException as exc:
                # taken but not used: recorded as voided, never given again, never a silent gap
                store.void(
                    brigade,
                    template.kind,
                    args.year,
                    taken.seq,
                    f"生成失败 / rendering failed: {exc}",
                )
                raise
        finally:
            store.close()
    print(f"{args.out}\t{template.title}\t{number}\t{doc.manifest['pages']} 页")
    for r in doc.required:
        print(
            f"  待签 / to sign: {r.field}\t{r.label} {r.name}\t第{r.page}页"
            + (f"\t{r.refused}" if r.refused else "")
        )
    return 0


def _sign(args: argparse.Namespace, keys_dir: Callable[[], Path] | None) -> int:
    from .appearance import name_card
    from .ca import DeploymentCA
    from .seal import draw_seal, load_seal
    from .signing import SigningSetup, builtin_signer, sign_document

    setup = SigningSetup(DeploymentCA(_keys(args, keys_dir)), tsa_url=args.tsa_url)
    pdf = Path(args.pdf).read_bytes()
    if args.role == "officer":
        if not args.officer_id or not args.name:
            return _err(
                "民警签名需要 --officer-id 和 --name / an officer needs --officer-id and --name"
            )
        signer = builtin_signer(
            setup, "officer", officer_id=args.officer_id, name=args.name, department=args.department
        )
        image = name_card([args.name, args.department])
    else:
        if not args.brigade:
            return _err("印章签名需要 --brigade / the seal needs --brigade")
        signer = builtin_signer(setup, "seal", brigade=args.brigade, department=args.department)
        seal_name = args.seal_name or _slot_label(pdf, args.field) or "交通事故处理专用章"
        image = (
            load_seal(Path(args.seal_image))
            if args.seal_image
            else draw_seal(args.department, seal_name)
        )
    out = sign_document(pdf, args.field, signer, setup, image)
    _write_new(Path(args.out), out)
    print(f"{args.out}: {args.field} 已签名 / signed")
    return 0


def _slot_label(pdf: bytes, field_name: str) -> str | None:
    import io

    from pyhanko.pdf_utils.reader import PdfFileReader

    from .manifest import read_manifest

    for slot in read_manifest(PdfFileReader(io.BytesIO(pdf)))["required_signatures"]:
        if slot["field"] == field_name:
            return str(slot["label"])
    return None


def _load_crl(path: Path) -> Any:
    from cryptography import x509

    raw = path.read_bytes()
    return x509.load_pem_x509_crl(raw) if raw.startswith(b"-----") else x509.load_der_x509_crl(raw)


def _verify(args: argparse.Namespace) -> int:
    from cryptography import x509

    from .verify import verify_pdf

    roots = []
    for p in args.trust:
        roots.extend(x509.load_pem_x509_certificates(Path(p).read_bytes()))
    crls = [_load_crl(Path(p)) for p in args.crl]
    report = verify_pdf(Path(args.pdf).read_bytes(), roots, crls)
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False))
        return 0 if report.ok else 1
    if report.state is not None:
        print(f"文书 / document: {report.state.kind} {report.state.number}")
    for s in report.signatures:
        mark = "通过 OK " if s.ok else "失败 BAD"
        when = s.signed_at.isoformat() if s.signed_at else "无时间戳 / no timestamp"
        print(f"  [{mark}] {s.field}\t{s.signer}\t{when}")
        if s.signing_event:
            ev = s.signing_event
            print(
                f"           人脸核验 / face verdict {ev.get('verdict_id')} "
                f"帧 / frame {str(ev.get('frame_sha256'))[:16]}…"
            )
    if report.state is not None:
        st = report.state
        print(
            f"  生效 / in effect: {'是 yes' if st.effective and report.ok else '否 no'}"
            + (f"；拒签 / refused: {', '.join(st.refused)}" if st.refused else "")
        )
    if report.ok:
        print(
            "验证通过：每个签名有效，所需签名齐全 / verified: every signature valid, none missing"
        )
        return 0
    print("发现问题 / problems:")
    for p in report.problems:
        print(f"  - {p}")
    return 1
